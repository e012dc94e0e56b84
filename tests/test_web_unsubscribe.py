"""One-click unsubscribe (RFC 8058) and its page, over real HTTP against uvicorn, with the
database checked after each step, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from mailer.project import Project
from mailer.tokens import Purpose, Signer
from mailer.web.app import create_app
from tests.support.webserver import WebServer

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ONE_CLICK = b"List-Unsubscribe=One-Click"


@pytest.fixture
def members(run, project: Path) -> dict[str, int]:
    """Three confirmed members of nieuwsbrief (an, bo in English, cas); address -> id."""
    csv = project / "people.csv"
    csv.write_text("email,first_name,language\nan@example.be,An,nl\nbo@example.be,Bo,en\n"
                   "cas@example.be,Cas,\n")
    result = run("subscribers", "import", str(csv), "--list", "nieuwsbrief", "--consent",
                 "test", "--confirmed")
    assert result.exit_code == 0, result.output
    with Project.load().engine.connect() as conn:
        return dict(conn.execute(text("SELECT email, id FROM subscriber")).all())


@pytest.fixture
def site(project: Path, members: dict[str, int]):  # noqa: ANN201
    app_project = Project.load()
    with WebServer(create_app(app_project)) as web:
        web.project = app_project  # type: ignore[attr-defined]
        yield web
    app_project.close()


def list_id(project: Project) -> int:
    with project.engine.connect() as conn:
        return conn.execute(text("SELECT id FROM mailing_list WHERE slug = 'nieuwsbrief'")
                            ).scalar_one()


def token_for(project: Project, subscriber_id: int, campaign_id: int = 7) -> str:
    return project.signer.message_token(subscriber_id, list_id(project), campaign_id).link


def status(project: Project, subscriber_id: int) -> str:
    with project.engine.connect() as conn:
        return conn.execute(text("SELECT status FROM subscription WHERE subscriber_id = :s"),
                            {"s": subscriber_id}).scalar_one()


def events(project: Project, subscriber_id: int) -> list[tuple[str, str, str | None]]:
    with project.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(
            "SELECT action, source, ip FROM consent_event WHERE subscriber_id = :s "
            "AND action = 'unsubscribe' ORDER BY id"), {"s": subscriber_id})]


def multipart(fields: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    boundary = "----mailer-test-boundary"
    body = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n"
                   f"{v}\r\n" for k, v in fields.items()) + f"--{boundary}--\r\n"
    return body.encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_one_click_post_unsubscribes_at_once_and_is_idempotent(site, members):
    project, an = site.project, members["an@example.be"]
    token = token_for(project, an)
    first = site.request("POST", f"/u/{token}", body=ONE_CLICK, headers=FORM)
    assert first.status == 200 and "location" not in first.headers
    assert "Je bent uitgeschreven" in first.text
    assert status(project, an) == "unsubscribed"
    assert status(project, members["bo@example.be"]) == "confirmed"  # only that person
    again = site.request("POST", f"/u/{token}", body=ONE_CLICK, headers=FORM)
    assert again.status == 200 and "Je bent uitgeschreven" in again.text
    assert events(project, an) == [("unsubscribe", "one-click link", "127.0.0.1")]


def test_multipart_one_click_works_too_without_cookies_or_auth(site, members):
    project, bo = site.project, members["bo@example.be"]
    body, headers = multipart({"List-Unsubscribe": "One-Click"})
    response = site.request("POST", f"/u/{token_for(project, bo)}", body=body,
                            headers=headers)
    assert response.status == 200 and "You are unsubscribed" in response.text
    assert "set-cookie" not in response.headers
    assert status(project, bo) == "unsubscribed"


def test_a_get_never_changes_anything_and_offers_a_button(site, members):
    project, an = site.project, members["an@example.be"]
    token = token_for(project, an)
    for _ in range(3):  # a mail scanner prefetching the link, several times
        page = site.request("GET", f"/u/{token}")
        assert page.status == 200
    assert status(project, an) == "confirmed" and events(project, an) == []
    assert f'<form method="post" action="/u/{token}">' in page.text
    assert 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert f'href="/p/{token}"' in page.text and "Ja, schrijf me uit" in page.text
    # the page's own button posts exactly what RFC 8058 asks
    assert site.request("POST", f"/u/{token}", body=ONE_CLICK, headers=FORM).status == 200
    assert status(project, an) == "unsubscribed"
    after = site.request("GET", f"/u/{token}")
    assert "Je bent uitgeschreven" in after.text and "<form" not in after.text


def test_the_page_speaks_the_subscribers_language_then_the_browsers(site, members):
    project = site.project
    english = site.request("GET", f"/u/{token_for(project, members['bo@example.be'])}",
                           headers={"Accept-Language": "nl-BE,nl;q=0.9"})
    assert 'lang="en"' in english.text and "Yes, unsubscribe me" in english.text
    # imported without a language: the project's default (nl), whatever the browser says
    cas = token_for(project, members["cas@example.be"])
    assert "Ja, schrijf me uit" in site.request(
        "GET", f"/u/{cas}", headers={"Accept-Language": "en"}).text
    # a page for nobody in particular follows the browser, then Dutch
    assert "This link does not work" in site.request(
        "GET", "/u/nothing", headers={"Accept-Language": "fr;q=1, en-GB;q=0.8"}).text
    assert "Deze link werkt niet" in site.request(
        "GET", "/u/nothing", headers={"Accept-Language": "fr, de"}).text


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_forged_truncated_or_altered_tokens_get_a_plain_404_page(site, members, method):
    project, an = site.project, members["an@example.be"]
    token = token_for(project, an)
    altered = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    foreign = Signer(b"another project's secret key!!").message_token(
        an, list_id(project), 7).link
    for bad in (altered, token[:-1], token + "A", foreign, "x" * 46, "../../etc/passwd"):
        response = site.request(method, f"/u/{bad}", body=ONE_CLICK if method == "POST"
                                else None, headers=FORM if method == "POST" else {})
        assert response.status == 404, bad
        assert "Deze link werkt niet" in response.text
        assert "Traceback" not in response.text and "mailer." not in response.text
    assert status(project, an) == "confirmed"


def test_a_post_without_the_one_click_body_changes_nothing(site, members):
    project, an = site.project, members["an@example.be"]
    token = token_for(project, an)
    for body, headers in ((b"", FORM), (b"List-Unsubscribe=Yes", FORM),
                          (ONE_CLICK, {"Content-Type": "text/plain"})):
        assert site.request("POST", f"/u/{token}", body=body, headers=headers).status == 400
    assert status(project, an) == "confirmed"


def test_every_response_carries_the_security_headers(site, members):
    token = token_for(site.project, members["an@example.be"])
    for response in (site.request("GET", f"/u/{token}"), site.request("GET", "/nope"),
                     site.request("POST", f"/u/{token}", body=ONE_CLICK, headers=FORM)):
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "script-src" not in csp and "form-action 'self'" in csp
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert "server" not in response.headers
    css = site.request("GET", "/static/site.css")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    assert "#1f5f8b" in css.text  # the organisation's colour


def test_oversized_requests_are_refused_before_they_are_read(site, members):
    import http.client

    token = token_for(site.project, members["an@example.be"])
    big = ONE_CLICK + b"&pad=" + b"x" * 70_000
    assert site.request("POST", f"/u/{token}", body=big, headers=FORM).status == 413
    chunks = iter([big[i:i + 8192] for i in range(0, len(big), 8192)])
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10)
    conn.request("POST", f"/u/{token}", body=chunks, headers=FORM, encode_chunked=True)
    assert conn.getresponse().status == 413  # chunked: no length said, counted
    conn.close()
    assert status(site.project, members["an@example.be"]) == "confirmed"


def test_links_signed_before_a_key_rotation_keep_working(project, members, monkeypatch):
    old = Project.load()
    token = token_for(old, members["cas@example.be"])
    old_key = old.settings.secrets.secret_key.get_secret_value()  # type: ignore[union-attr]
    monkeypatch.setenv("MAILER_SECRET_KEY", "a-brand-new-secret-key-0123456789")
    monkeypatch.setenv("MAILER_PREVIOUS_SECRET_KEYS", old_key)
    rotated = Project.load()
    assert token_for(rotated, members["cas@example.be"]) != token
    with WebServer(create_app(rotated)) as web:
        response = web.request("POST", f"/u/{token}", body=ONE_CLICK, headers=FORM)
    assert response.status == 200 and status(rotated, members["cas@example.be"]) == \
        "unsubscribed"
    monkeypatch.delenv("MAILER_PREVIOUS_SECRET_KEYS")  # the grace period is over
    with WebServer(create_app(Project.load())) as web:
        assert web.request("GET", f"/u/{token}").status == 404


def test_an_unsubscribe_takes_effect_in_a_campaign_not_yet_sent(site, members, run):
    project, an = site.project, members["an@example.be"]
    result = run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
                 "templates/newsletter.html.j2", "--subject", "Nieuws")
    assert result.exit_code == 0, result.output
    assert site.request("POST", f"/u/{token_for(project, an)}", body=ONE_CLICK,
                        headers=FORM).status == 200
    result = run("campaign", "send", "dec", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sent"] == 2


def test_a_token_of_someone_erased_finds_nothing_to_change(site, members, run):
    project = site.project
    token = token_for(project, 999_999)
    gone = site.request("GET", f"/u/{token}")  # the page of a link not valid (any more)
    assert gone.status == 404 and "Deze link werkt niet" in gone.text
    done = site.request("POST", f"/u/{token}", body=ONE_CLICK, headers=FORM)
    assert done.status == 200  # nothing left to unsubscribe: the same answer


def test_only_the_message_and_unsubscribe_purposes_unsubscribe(site, members):
    project, an = site.project, members["an@example.be"]
    confirm = project.signer.make(Purpose.CONFIRM, an, list_id(project))
    assert site.request("POST", f"/u/{confirm}", body=ONE_CLICK, headers=FORM).status == 404
    assert status(project, an) == "confirmed"



@pytest.mark.parametrize("trusted", [True, False], ids=["trusted-proxy", "untrusted"])
def test_the_visitors_address_comes_from_a_trusted_proxy_only(project, members, trusted):
    app_project = Project.load()
    proxies = ["127.0.0.1"] if trusted else ["10.9.9.9"]
    with WebServer(create_app(app_project), forwarded_allow_ips=proxies) as web:
        response = web.request("POST", f"/u/{token_for(app_project, members['an@example.be'])}",
                               body=ONE_CLICK, headers={**FORM,
                                                        "X-Forwarded-For": "203.0.113.7"})
    assert response.status == 200
    expected = "203.0.113.7" if trusted else "127.0.0.1"
    assert events(app_project, members["an@example.be"]) == [
        ("unsubscribe", "one-click link", expected)]
    app_project.close()


def test_odd_input_gets_a_4xx_never_a_500(site, members):
    token = token_for(site.project, members["an@example.be"])
    many = "&".join(f"a={i}" for i in range(30)).encode()
    assert site.request("POST", f"/u/{token}", body=many, headers=FORM).status == 400
    assert site.request("POST", "/api/subscribe/nieuwsbrief", body=b"[" * 50_000,
                        headers={"Content-Type": "application/json"}).status == 400
    for fields in ("action=save&first_name=a%09b", "action=save&list=%C2%B2",
                   "action=sav&list=1", "action=save&list=99999999999999999999"):
        response = site.request("POST", f"/p/{token}", body=fields.encode(), headers=FORM)
        assert response.status in (303, 400), fields
    # the bounce-address spelling of a message token, or a padded one, opens nothing
    address = site.project.signer.message_token(members["an@example.be"],
                                                list_id(site.project), 7).address
    for bad in (address, f"%20{token}", f"{token}%0A"):
        assert site.request("GET", f"/p/{bad}").status == 404
        assert site.request("POST", f"/u/{bad}", body=ONE_CLICK,
                            headers=FORM).status == 404


def test_a_broken_database_is_a_page_with_the_headers_not_a_trace(project, members):
    app_project = Project.load()
    token = token_for(app_project, members["an@example.be"])
    with WebServer(create_app(app_project)) as web:
        with app_project.engine.begin() as conn:
            conn.execute(text("DROP TABLE consent_event"))
        response = web.request("POST", f"/u/{token}", body=ONE_CLICK, headers=FORM)
    assert response.status == 500 and "Er ging iets mis" in response.text
    assert "Traceback" not in response.text and "consent_event" not in response.text
    assert "default-src 'none'" in response.headers["content-security-policy"]
    app_project.close()
