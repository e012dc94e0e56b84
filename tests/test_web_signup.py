"""Sign-up (form and JSON) and double opt-in confirmation over real HTTP against uvicorn,
the confirmation mail caught by the test SMTP server, the database checked at each step;
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import tomllib
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from html import unescape
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from mailer.audience.selfservice import sign_up
from mailer.models import MailingList
from mailer.project import Project
from mailer.tokens import Purpose
from mailer.web.app import create_app
from mailer.web.texts import page_texts
from tests.support.notices import NOTICE, set_notices
from tests.support.smtpserver import SmtpServer
from tests.support.waiting import wait_for
from tests.support.webserver import WebServer

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def smtp():  # noqa: ANN201
    with SmtpServer() as server:
        yield server


@pytest.fixture
def site(run, project: Path, smtp: SmtpServer, monkeypatch):  # noqa: ANN001, ANN201
    monkeypatch.setenv("MAILER_DELIVERY__TRANSPORT", f"smtp://127.0.0.1:{smtp.port}?tls=none")
    monkeypatch.setenv("MAILER_PUBLIC_URL", "https://nieuws.example.be")
    monkeypatch.setenv("MAILER_WEB__SIGNUPS_PER_IP", "8")
    app_project = Project.load()
    with WebServer(create_app(app_project)) as web:
        web.project = app_project  # type: ignore[attr-defined]
        yield web
    app_project.close()


def signup(site: WebServer, email: str, **extra: str):  # noqa: ANN201
    fields = {"email": email, "first_name": "Lotte", "language": "nl", "consent": "yes",
              "consent_version": "2026-11", "website": "", **extra}
    return site.request("POST", "/subscribe/nieuwsbrief", body=urlencode(fields).encode(),
                        headers=FORM)


def membership(project: Project, email: str) -> str | None:
    with project.engine.connect() as conn:
        return conn.execute(text(
            "SELECT m.status FROM subscription m JOIN subscriber s ON s.id = m.subscriber_id "
            "WHERE s.email = :e"), {"e": email}).scalar()


def consent_events(project: Project, email: str) -> list[tuple]:
    with project.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT e.action, e.consent, e.confirmed, e.ip, e.user_agent FROM consent_event e "
            "JOIN subscriber s ON s.id = e.subscriber_id WHERE s.email = :e ORDER BY e.id"),
            {"e": email})]


def mails_to(smtp: SmtpServer, to: str) -> list:
    return [m for m in smtp.messages() if to in m.recipients]


def wait_for_mail(smtp: SmtpServer, to: str, count: int = 1) -> list:
    def enough() -> list | None:
        mails = mails_to(smtp, to)
        return mails if len(mails) >= count else None

    return wait_for(enough, f"{count} mail(s) for {to}",
                    state=lambda: f"{len(mails_to(smtp, to))} arrived")


def notice_states(project: Project, email: str | None = None) -> list[str]:
    """The states of the confirmation and welcome mails queued (for `email`, or all)."""
    sql = f"SELECT n.state FROM {NOTICE} n JOIN subscriber s ON s.id = n.subscriber_id"
    if email is not None:
        sql += " WHERE s.email = :e"
    with project.engine.connect() as conn:
        return list(conn.execute(text(sql + " ORDER BY n.id"), {"e": email}).scalars())


def wait_until_notices_settled(project: Project) -> list[str]:
    """Wait until the web app's sender is done with every mail queued so far (none
    queued, being sent or deferred); the states then. A mail is queued in the sign-up's
    own transaction, so after this none arrives without a new request."""
    def settled() -> list[str] | None:
        states = notice_states(project)
        return states if states and not {"queued", "sending", "deferred"} & set(states) \
            else None

    return wait_for(settled, "the queued mails to be sent",
                    state=lambda: f"states {notice_states(project)}")


def queue_sign_ups(*emails: str) -> Project:
    """Sign up to nieuwsbrief as the web app does (mails queued, not sent): the project."""
    app_project = Project.load()
    with Session(app_project.engine) as session:
        ml = session.exec(select(MailingList)).one()
        for email in emails:
            sign_up(session, app_project.hash_key, email=email, mailing_list=ml,
                    consent="test")
        session.commit()
    return app_project


def confirm_link(raw: bytes) -> str:
    message = message_from_bytes(raw)
    html = next(p for p in message.walk() if p.get_content_type() == "text/html")
    body = html.get_payload(decode=True).decode()
    return re.search(r'href="(https://nieuws\.example\.be/c/[^"]+)"', body).group(1)


def test_the_form_is_in_the_house_style_with_the_lists_consent_text(site):
    page = site.request("GET", "/subscribe/nieuwsbrief")
    assert page.status == 200 and 'lang="nl"' in page.text
    assert "Inschrijven op Nieuwsbrief" in page.text
    assert "Ja, ik wil de nieuwsbrief van Voorbeeld vzw ontvangen" in page.text
    assert 'name="website"' in page.text and 'class="hp"' in page.text
    assert '<link rel="stylesheet" href="/static/site.css">' in page.text
    english = site.request("GET", "/subscribe/nieuwsbrief", headers={"Accept-Language": "en"})
    assert "Subscribe to Nieuwsbrief" in english.text
    assert site.request("GET", "/subscribe/no-such-list").status == 404


def test_double_opt_in_from_form_to_confirmed_with_the_consent_recorded(site, smtp):
    project, email = site.project, "lotte@example.be"
    response = signup(site, email)
    assert response.status == 200 and "Kijk in je mailbox" in response.text
    assert membership(project, email) == "pending"
    [mail] = wait_for_mail(smtp, email)
    parsed = message_from_bytes(mail.data)
    assert parsed["Subject"] == "Bevestig je inschrijving op Nieuwsbrief"
    link = confirm_link(mail.data)
    path = urlsplit(link).path
    page = site.request("GET", path)  # a mail scanner or the person: nothing changes yet
    assert page.status == 200 and f'action="{path}"' in page.text
    assert membership(project, email) == "pending"
    done = site.request("POST", path, headers={"User-Agent": "Firefox/140"})
    assert done.status == 200 and "Je inschrijving is bevestigd" in done.text
    assert membership(project, email) == "confirmed"
    again = site.request("POST", path)  # idempotent
    assert again.status == 200 and membership(project, email) == "confirmed"
    events = consent_events(project, email)
    assert [e[0] for e in events] == ["subscribe", "confirm"]
    consent = "2026-11: Ja, ik wil de nieuwsbrief van Voorbeeld vzw ontvangen."
    assert events[0][1].startswith(consent) and events[1][1] == events[0][1]
    assert events[1][2] in (True, 1) and events[1][3] == "127.0.0.1"
    assert events[1][4] == "Firefox/140"


def test_the_answer_never_tells_whether_an_address_was_subscribed(site, smtp, run):
    assert run("subscribers", "add", "known@example.be", "--list", "nieuwsbrief",
               "--consent", "test", "--confirmed").exit_code == 0
    known, new = signup(site, "known@example.be"), signup(site, "new@example.be")
    assert known.status == new.status == 200
    strip = re.compile(r"\s+")
    assert strip.sub(" ", known.text) == strip.sub(" ", new.text)
    wait_for_mail(smtp, "new@example.be")
    assert wait_until_notices_settled(site.project) == ["sent"]  # new@'s: none for known@
    assert notice_states(site.project, "known@example.be") == []
    assert not mails_to(smtp, "known@example.be")
    assert membership(site.project, "known@example.be") == "confirmed"


def test_a_bot_filling_the_honeypot_gets_the_same_answer_and_nothing_happens(site, smtp):
    response = signup(site, "bot@example.be", website="http://spam.example")
    assert response.status == 200 and "Kijk in je mailbox" in response.text
    assert membership(site.project, "bot@example.be") is None


def test_consent_is_required_and_a_bad_address_is_explained(site):
    response = signup(site, "lotte@example.be", consent="")
    assert response.status == 400 and "Vink het vakje aan" in response.text
    assert 'value="lotte@example.be"' in response.text  # kept in the form
    bad = signup(site, "not-an-address")
    assert bad.status == 400 and "Dit e-mailadres klopt niet" in bad.text
    assert membership(site.project, "lotte@example.be") is None


def test_sign_ups_are_limited_per_client_and_per_address(site, smtp):
    for _ in range(5):
        assert signup(site, "same@example.be").status == 200
    # three a day for one address: the fourth and fifth did nothing (and said nothing)
    assert len(consent_events(site.project, "same@example.be")) == 3
    # one confirmation row per person and list: a sign-up while the mail is still queued
    # is answered by that mail, one after it was sent queues it again (notices.py); the
    # mails are queued with the answers, so once the row is settled no other can come
    assert wait_until_notices_settled(site.project) == ["sent"]
    assert 1 <= len(mails_to(smtp, "same@example.be")) <= 3
    statuses = [signup(site, f"p{i}@example.be").status for i in range(4)]
    assert statuses == [200, 200, 200, 429]  # eight per client address (set for the test)


def test_the_json_endpoint_signs_up_too(site, smtp):
    body = json.dumps({"email": "json@example.be", "consent": True, "language": "en"})
    response = site.request("POST", "/api/subscribe/nieuwsbrief", body=body.encode(),
                            headers={"Content-Type": "application/json",
                                     "Origin": "https://www.example.be"})
    assert response.status == 202 and json.loads(response.body) == {
        "status": page_texts("en")["check_mail_text"], "code": "check_mail",
        "language": "en"}
    assert response.headers["access-control-allow-origin"] == "*"
    [mail] = wait_for_mail(smtp, "json@example.be")
    assert message_from_bytes(mail.data)["Subject"] == (
        "Please confirm your subscription to Nieuwsbrief")
    no_consent = site.request("POST", "/api/subscribe/nieuwsbrief",
                              body=b'{"email": "x@example.be"}',
                              headers={"Content-Type": "application/json"})
    assert no_consent.status == 400 and "error" in json.loads(no_consent.body)
    assert site.request("POST", "/api/subscribe/nieuwsbrief", body=b"[1",
                        headers={"Content-Type": "application/json"}).status == 400


@pytest.mark.parametrize(("accept", "language"), [("nl-BE,nl;q=0.9,en;q=0.5", "nl"),
                                                  ("en-GB,en;q=0.9", "en")])
def test_the_json_endpoint_answers_in_one_language_like_the_pages(site, smtp, accept,
                                                                   language):
    """Without a `language` field, the caller's Accept-Language decides, as for the
    form: every answer (accepted, no consent, a bad address, not JSON, no such list) is
    in that language, and so is the confirmation mail."""
    t = page_texts(language)
    other = page_texts("en" if language == "nl" else "nl")
    api = "/api/subscribe/nieuwsbrief"
    cases = [
        (api, {"email": f"{language}@example.be", "consent": True}, 202, "check_mail",
         "check_mail_text"),
        (api, {"email": "x@example.be"}, 400, "consent", "need_consent"),
        (api, {"email": "geen-apenstaartje", "consent": True}, 400, "invalid",
         "address_no_at"),
        (api, "[1", 400, "not_json", "api_not_json"),
        ("/api/subscribe/bestaat-niet", {"email": "x@example.be", "consent": True}, 404,
         "no_list", "api_no_list"),
    ]
    for path, fields, status, code, key in cases:
        body = fields.encode() if isinstance(fields, str) else json.dumps(fields).encode()
        response = site.request("POST", path, body=body, headers={
            "Content-Type": "application/json", "Accept-Language": accept})
        answer = json.loads(response.body)
        expected = t["bad_address"].format(reason=t[key]) if code == "invalid" else t[key]
        assert response.status == status, answer
        assert answer == {"status" if status < 400 else "error": expected, "code": code,
                          "language": language}
        assert expected != (other["bad_address"].format(reason=other[key])
                            if code == "invalid" else other[key])
    [mail] = wait_for_mail(smtp, f"{language}@example.be")
    assert message_from_bytes(mail.data)["Subject"] == {
        "nl": "Bevestig je inschrijving op Nieuwsbrief",
        "en": "Please confirm your subscription to Nieuwsbrief"}[language]


def test_an_expired_confirmation_link_explains_how_to_sign_up_again(site):
    project = site.project
    assert signup(site, "late@example.be").status == 200
    with project.engine.connect() as conn:
        sid, lid = conn.execute(text(
            "SELECT m.subscriber_id, m.list_id FROM subscription m JOIN subscriber s "
            "ON s.id = m.subscriber_id WHERE s.email = 'late@example.be'")).one()
    old = project.signer.make(Purpose.CONFIRM, sid, lid,
                              now=datetime.now(UTC) - timedelta(days=8))
    for method in ("GET", "POST"):
        page = site.request(method, f"/c/{old}")
        assert page.status == 410 and "Deze link is verlopen" in page.text
        assert 'href="/subscribe/nieuwsbrief"' in page.text
    assert membership(project, "late@example.be") == "pending"
    assert site.request("POST", f"/c/{old[:-2]}").status == 404


def test_an_old_confirmation_link_does_not_bring_back_who_unsubscribed(site, smtp, run):
    project = site.project
    assert signup(site, "gone@example.be").status == 200
    path = urlsplit(confirm_link(wait_for_mail(smtp, "gone@example.be")[0].data)).path
    assert site.request("POST", path).status == 200
    with project.engine.connect() as conn:
        sid, lid = conn.execute(text(
            "SELECT m.subscriber_id, m.list_id FROM subscription m JOIN subscriber s "
            "ON s.id = m.subscriber_id WHERE s.email = 'gone@example.be'")).one()
    old = project.signer.make(Purpose.CONFIRM, sid, lid,
                              now=datetime.now(UTC) - timedelta(minutes=3))
    assert run("subscribers", "remove", "gone@example.be", "--list",
               "nieuwsbrief").exit_code == 0
    page = site.request("POST", f"/c/{old}")
    assert page.status == 200 and "intussen uitgeschreven" in page.text
    assert membership(project, "gone@example.be") == "unsubscribed"


def test_a_stranger_cannot_undo_an_unsubscribe_only_the_mailbox_can(site, smtp, run):
    project = site.project
    assert run("subscribers", "add", "left@example.be", "--list", "nieuwsbrief",
               "--consent", "test", "--confirmed").exit_code == 0
    assert run("subscribers", "remove", "left@example.be", "--list",
               "nieuwsbrief").exit_code == 0
    # someone signs the address up again: nothing changes but a mail to the address
    assert signup(site, "left@example.be").status == 200
    assert membership(project, "left@example.be") == "unsubscribed"
    assert run("subscribers", "add", "left@example.be", "--list", "nieuwsbrief",
               "--consent", "test", "--confirmed").exit_code == 1  # still theirs alone
    # the owner of the mailbox clicks: subscribed again, with the consent recorded
    path = urlsplit(confirm_link(wait_for_mail(smtp, "left@example.be")[0].data)).path
    assert "Ja, schrijf me in" in site.request("GET", path).text
    assert site.request("POST", path).status == 200
    assert membership(project, "left@example.be") == "confirmed"
    assert [e[0] for e in consent_events(project, "left@example.be")][-2:] == [
        "subscribe", "confirm"]


def test_errors_never_depend_on_whether_an_address_is_known(site, run):
    assert run("subscribers", "add", "known@example.be", "--list", "nieuwsbrief",
               "--consent", "test", "--confirmed").exit_code == 0
    for name in ("a\tb", "x\x01", "ok"):
        known = signup(site, "known@example.be", first_name=name)
        new = signup(site, "unknown@example.be", first_name=name)
        assert (known.status, known.text.replace("known@", "")) == (
            new.status, new.text.replace("unknown@", "")), name
    assert membership(site.project, "known@example.be") == "confirmed"


def test_the_consent_recorded_is_the_text_that_was_shown(site):
    page = site.request("GET", "/subscribe/nieuwsbrief")
    version = re.search(r'name="consent_version" value="([^"]+)"', page.text).group(1)
    assert signup(site, "old@example.be", consent_version="2025-01").status == 400
    assert membership(site.project, "old@example.be") is None
    assert signup(site, "now@example.be", consent_version=version).status == 200
    assert consent_events(site.project, "now@example.be")[0][1].startswith(f"{version}: Ja,")


def test_mailer_run_sends_the_confirmations_the_web_app_left(run, project, smtp, monkeypatch):
    """Queued with the sign-up, in the same transaction: if the web app stops before it
    sends, the next `mailer run` does."""
    monkeypatch.setenv("MAILER_DELIVERY__TRANSPORT", f"smtp://127.0.0.1:{smtp.port}?tls=none")
    app_project = queue_sign_ups("queued@example.be")
    result = run("run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["notices"] == {"sent": 1, "deferred": 0, "failed": 0,
                                                    "skipped": 0, "unknown": 0}
    assert [m.recipients for m in smtp.messages()] == [("queued@example.be",)]
    assert notice_states(app_project) == ["sent"]
    assert json.loads(run("run", "--json").stdout)["notices"]["sent"] == 0


def test_a_single_opt_in_list_confirms_at_once_and_sends_the_welcome(run, project, smtp,
                                                                    monkeypatch):
    (project / "lists" / "activiteiten.toml").write_text(
        'name = "Activiteiten"\nlanguage = "nl"\noptin = "single"\n'
        'from_name = "Voorbeeld vzw"\nfrom_address = "nieuws@example.be"\npublic = true\n')
    assert run("lists", "sync").exit_code == 0
    monkeypatch.setenv("MAILER_DELIVERY__TRANSPORT", f"smtp://127.0.0.1:{smtp.port}?tls=none")
    app_project = Project.load()
    with WebServer(create_app(app_project)) as web:
        fields = {"email": "solo@example.be", "consent": "yes", "language": "nl"}
        response = web.request("POST", "/subscribe/activiteiten",
                               body=urlencode(fields).encode(), headers=FORM)
        assert response.status == 200
        [mail] = wait_for_mail(smtp, "solo@example.be")
    assert message_from_bytes(mail.data)["Subject"] == "Welkom bij Activiteiten"
    assert membership(app_project, "solo@example.be") == "confirmed"
    assert [e[:3] for e in consent_events(app_project, "solo@example.be")] == [
        ("subscribe", "1: Ja, ik wil Activiteiten ontvangen. Ik kan me altijd uitschrijven. "
                      "Mijn gegevens worden alleen hiervoor gebruikt.", True)]
    app_project.close()


def test_a_confirmation_left_in_flight_by_a_sender_that_died_is_never_sent_twice(
        run, project, smtp, monkeypatch):
    """A notice is a delivery: one still "sending" when its sender died may have arrived,
    so the next run records it "unknown" and does not send it, whatever its age (the
    notices' own claim of ten minutes, after which it went again, is gone); only
    --retry-unknown sends it again, as for a campaign's delivery."""
    monkeypatch.setenv("MAILER_DELIVERY__TRANSPORT", f"smtp://127.0.0.1:{smtp.port}?tls=none")
    app_project = queue_sign_ups("limbo@example.be")
    set_notices(app_project.engine, state="sending", attempts=1,  # claimed, then killed
                updated_at=datetime.now(UTC) - timedelta(hours=5))
    result = json.loads(run("run", "--json").stdout)["notices"]
    assert result["sent"] == 0 and notice_states(app_project) == ["unknown"]
    assert json.loads(run("run", "--json").stdout)["notices"]["sent"] == 0
    assert smtp.messages() == []
    assert json.loads(run("run", "--retry-unknown", "--json").stdout)["notices"]["sent"] == 1
    assert [m.recipients for m in smtp.messages()] == [("limbo@example.be",)]
    app_project.close()


def test_a_queued_mail_is_checked_again_when_it_goes(run, project, smtp, monkeypatch):
    """Suppressed (a bounce, a complaint) between the sign-up and the send: not sent."""
    monkeypatch.setenv("MAILER_DELIVERY__TRANSPORT", f"smtp://127.0.0.1:{smtp.port}?tls=none")
    app_project = queue_sign_ups("bounced@example.be", "fine@example.be")
    assert run("suppression", "add", "bounced@example.be", "--reason",
               "hard_bounce").exit_code == 0
    result = json.loads(run("run", "--json").stdout)["notices"]
    assert result == {"sent": 1, "deferred": 0, "failed": 0, "skipped": 1, "unknown": 0}
    assert [m.recipients for m in smtp.messages()] == [("fine@example.be",)]
    assert set(notice_states(app_project)) == {"sent", "skipped"}
    app_project.close()


# -- one language per page (issue 12, point 7) ----------------------------------------------

def _visible(html: str) -> str:
    """What a reader sees: the text between the tags, and the values of the form."""
    html = re.sub(r"<(style|script)\b.*?</\1>", " ", html, flags=re.S)
    values = " ".join(re.findall(r'\bvalue="([^"]*)"', html))
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html) + " " + values).split())


def _markers(language: str, other: str, project: Path) -> list[str]:
    """Sentences only `language` has: its page texts (up to the first blank to fill in),
    the list's description and consent text in it, and email-validator's own English."""
    mine, theirs = page_texts(language), page_texts(other)
    found = [value.split("{")[0].strip() for key, value in mine.items()
             if value != theirs.get(key)]
    data = tomllib.loads((project / "lists" / "nieuwsbrief.toml").read_text())
    texts = data if data["language"] == language else data.get(language, {})
    found += [texts.get("description", ""), texts.get("consent_text", "")]
    if language == "en":
        found += ["An email address must have an @-sign", "There must be something after",
                  "The part after the @-sign", "There must be something before"]
    return [m for m in found if len(m) >= 8]


@pytest.mark.parametrize("language, other", [("nl", "en"), ("en", "nl")])
def test_the_sign_up_page_speaks_one_language_also_when_the_address_is_refused(
        site, project, language, other):
    browser = {"Accept-Language": {"nl": "nl-BE,nl;q=0.9", "en": "en-GB,en;q=0.8"}[language]}
    pages = [site.request("GET", "/subscribe/nieuwsbrief", headers=browser)]
    for bad in ("lotte.example.be", "@example.be", "lotte@", "lotte@@example.be",
                "lotte@example", "lotte..de.vries@example.be", "lot te@example.be",
                "lotte@" + "x" * 64 + ".be"):
        fields = {"email": bad, "first_name": "Lotte", "language": language,
                  "consent": "yes", "consent_version": "2026-11",
                  "consent_language": language, "website": ""}
        response = site.request("POST", "/subscribe/nieuwsbrief", headers=FORM,
                                body=urlencode(fields).encode())
        assert response.status == 400, bad
        pages.append(response)
    foreign, own = _markers(other, language, project), _markers(language, other, project)
    assert any("@-sign" in m for m in foreign + own)  # the check would see the library's
    for page in pages:
        assert f'lang="{language}"' in page.text
        seen = _visible(page.text)
        assert [m for m in foreign if m in seen] == []
        assert any(m in seen for m in own)
    reasons = {_visible(p.text).split(page_texts(language)["bad_address"].split("{")[0])[1]
               .split(".")[0] for p in pages[1:]}
    assert len(reasons) >= 5  # each problem said in its own words, not one vague line


def test_an_english_page_shows_the_lists_english_consent_and_records_that_text(site):
    english = site.request("GET", "/subscribe/nieuwsbrief", headers={"Accept-Language": "en"})
    assert "Yes, I want to receive the newsletter of Voorbeeld vzw" in english.text
    assert "Our monthly news" in english.text and "Ons maandelijks" not in english.text
    response = signup(site, "lotte@example.be", language="en", consent_language="en")
    assert response.status == 200
    (event,) = consent_events(site.project, "lotte@example.be")
    assert event[1] == ("2026-11: Yes, I want to receive the newsletter of Voorbeeld vzw. I "
                        "can unsubscribe at any time. My data is used for this only.")
