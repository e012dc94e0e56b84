"""The subscriber's privacy rights on the preferences page, over real HTTP against uvicorn
on SQLite and PostgreSQL: a copy of their data mailed to them (through the notice path,
at most once a day, made when sent), erasure after a confirmation, and a run of forged
links recorded once in the breach register."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import urlencode

import pytest
from sqlalchemy import text

from mailer.project import Project
from mailer.web.app import create_app
from mailer.web.forgery import TITLE, ForgedLinks
from tests.support import notices
from tests.support.notices import NOTICE
from tests.support.smtpserver import SmtpServer
from tests.support.waiting import wait_for
from tests.support.webserver import WebServer

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ADDRESS = "griet@example.be"


@pytest.fixture
def site(run, project: Path, monkeypatch):  # noqa: ANN001, ANN201
    """The web app, mailing through the test SMTP server (`site.smtp`), and Griet, on
    nieuwsbrief, with the token of her mails (`site.token`)."""
    assert run("subscribers", "add", ADDRESS, "--list", "nieuwsbrief", "--consent", "test",
               "--confirmed", "--first-name", "Griet").exit_code == 0
    with SmtpServer() as smtp:
        monkeypatch.setenv("MAILER_DELIVERY__TRANSPORT",
                           f"smtp://127.0.0.1:{smtp.port}?tls=none")
        app_project = Project.load()
        with WebServer(create_app(app_project)) as web:
            web.project, web.smtp = app_project, smtp  # type: ignore[attr-defined]
            with app_project.engine.connect() as conn:
                web.griet, list_id = conn.execute(text(  # type: ignore[attr-defined]
                    "SELECT s.id, m.list_id FROM subscriber s JOIN subscription m "
                    "ON m.subscriber_id = s.id")).one()
            web.token = app_project.signer.message_token(  # type: ignore[attr-defined]
                web.griet, list_id, 3).link  # type: ignore[attr-defined]
            yield web
        app_project.close()


def post(site: WebServer, fields: dict[str, str], **headers: str):  # noqa: ANN201
    return site.request("POST", f"/p/{site.token}", body=urlencode(fields).encode(),  # type: ignore[attr-defined]
                        headers={**FORM, **headers})


def sql(site: WebServer, query: str) -> list[tuple]:
    with site.project.engine.connect() as conn:  # type: ignore[attr-defined]
        return [tuple(r) for r in conn.execute(text(query))]


def audit(site: WebServer, action: str) -> list[tuple]:
    return [(actor, detail if isinstance(detail, dict) else json.loads(detail))
            for actor, detail in sql(site, "SELECT actor, detail FROM audit_log WHERE "
                                           f"action = '{action}' ORDER BY id")]


def set_notices(site: WebServer, **values: object) -> None:
    notices.set_notices(site.project.engine, **values)  # type: ignore[attr-defined]


def export_mails(smtp: SmtpServer) -> list:
    return [m for m in smtp.messages()
            if message_from_bytes(m.data)["Subject"].startswith("Je gegevens")]


def test_a_copy_of_the_data_is_mailed_to_the_person_alone(site):
    smtp = site.smtp
    response = post(site, {"action": "export"})
    assert response.status == 303
    assert response.headers["location"] == f"/p/{site.token}?export=sent"
    page = site.request("GET", response.headers["location"])
    assert "We sturen je een kopie van je gegevens" in page.text
    [mail] = wait_for(lambda: export_mails(smtp), "the export mail")
    assert mail.recipients == (ADDRESS,)  # their own address, nobody else
    message = message_from_bytes(mail.data, policy=policy.default)
    assert message["Subject"] == "Je gegevens bij Voorbeeld vzw"
    assert message["To"] == f"Griet <{ADDRESS}>" and message["Cc"] is None
    body = message.get_body(("plain",)).get_content()
    assert "Wat we over je bewaren" in body and f"email: {ADDRESS}" in body
    [attachment] = message.iter_attachments()
    assert attachment.get_filename() == "gegevens.json"
    document = json.loads(attachment.get_content())
    assert document["schema"] == "mailer.export/1"
    assert document["subscriber"]["email"] == ADDRESS
    assert document["subscriber"]["first_name"] == "Griet"
    assert [m["list"] for m in document["lists"]] == ["nieuwsbrief"]
    assert audit(site, "gdpr.export") == [("web", {"subscriber": site.griet,
                                                   "source": "web"})]
    wait_for(lambda: sql(site, f"SELECT state FROM {NOTICE} n") == [("sent",)],
             "the export notice to be recorded as sent")


def test_a_second_request_the_same_day_queues_nothing(site):
    smtp = site.smtp
    assert post(site, {"action": "export"}).status == 303
    again = post(site, {"action": "export"})
    assert again.status == 303
    assert again.headers["location"] == f"/p/{site.token}?export=today"
    page = site.request("GET", again.headers["location"])
    assert "Je vroeg vandaag al een kopie" in page.text
    wait_for(lambda: sql(site, f"SELECT state FROM {NOTICE} n") == [("sent",)],
             "the one export mail to be sent",
             state=lambda: sql(site, f"SELECT state FROM {NOTICE} n"))
    assert len(export_mails(smtp)) == 1 and len(audit(site, "gdpr.export")) == 1
    set_notices(site, queued_at=datetime.now(UTC) - timedelta(days=1, minutes=1))
    # a day later, another may go
    assert post(site, {"action": "export"}).headers["location"].endswith("?export=sent")


def test_the_export_is_made_when_it_is_sent_not_when_asked(site, run):
    smtp = site.smtp
    smtp.reply_to_data(451, "4.3.0 Try again later", times=1)
    assert post(site, {"action": "export"}).status == 303
    wait_for(lambda: sql(site, f"SELECT state FROM {NOTICE} n") == [("deferred",)],
             "the first attempt to be deferred")
    site.__exit__(None, None, None)  # the web app stops; `mailer run` sends what is left
    assert run("subscribers", "edit", ADDRESS, "--first-name", "Margriet").exit_code == 0
    set_notices(site, next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
    result = run("run", "--json")
    assert json.loads(result.stdout)["notices"]["sent"] == 1, result.output
    [mail] = export_mails(smtp)
    message = message_from_bytes(mail.data, policy=policy.default)
    document = json.loads(next(message.iter_attachments()).get_content())
    assert document["subscriber"]["first_name"] == "Margriet"


def test_a_post_from_another_site_exports_and_erases_nothing(site):
    for action in ({"action": "export"}, {"action": "erase", "confirm": "yes"}):
        assert post(site, action, Origin="https://evil.example").status == 403
        assert post(site, action, **{"Sec-Fetch-Site": "cross-site"}).status == 403
    assert sql(site, f"SELECT kind FROM {NOTICE} n") == []
    assert sql(site, "SELECT email FROM subscriber") == [(ADDRESS,)]


def test_erasing_asks_first_then_forgets_the_person(site, run):
    ask = post(site, {"action": "erase"})
    assert ask.status == 200 and "Al je gegevens wissen?" in ask.text
    assert 'name="confirm" value="yes"' in ask.text
    assert f'href="/p/{site.token}"' in ask.text  # the way back
    assert run("subscribers", "show", ADDRESS).exit_code == 0  # nothing happened yet
    done = post(site, {"action": "erase", "confirm": "yes"},
                Origin=f"http://127.0.0.1:{site.port}")
    assert done.status == 200 and "Je gegevens zijn gewist" in done.text
    assert ADDRESS not in done.text and "Griet" not in done.text
    assert run("subscribers", "show", ADDRESS).exit_code == 1
    assert run("suppression", "check", ADDRESS).exit_code == 0
    [(actor, detail)] = audit(site, "gdpr.erase")
    assert actor == "web" and detail["source"] == "web"
    assert detail["subscriber"] == site.griet
    for path in (f"/p/{site.token}", f"/u/{site.token}"):  # her links: valid for nobody
        gone = site.request("GET", path)
        assert gone.status == 404 and "Deze link werkt niet" in gone.text
    again = post(site, {"action": "erase", "confirm": "yes"})
    assert again.status == 404


def test_a_run_of_forged_links_is_one_incident_an_hour(run, project, monkeypatch, caplog):
    monkeypatch.setenv("MAILER_WEB__FORGED_TOKENS_ALERT", "5")
    app_project = Project.load()
    real = app_project.signer.message_token(1, 1, 1).link
    forged = [f"/p/{real[:-3]}abc", f"/u/{real[:-3]}abd", f"/c/{real[:-3]}abe", "/p/short"]

    def incidents() -> list[dict]:
        result = run("incidents", "ls", "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    with caplog.at_level(logging.WARNING, logger="mailer"):
        with WebServer(create_app(app_project)) as web:
            for i in range(5):
                assert web.request("GET", forged[i % 4]).status == 404
            assert incidents() == []  # five is not more than five
            assert web.request("POST", forged[0], body=b"action=save",
                               headers=FORM).status == 404
            [incident] = wait_for(incidents, "the incident")
            for i in range(20):
                assert web.request("GET", forged[i % 4]).status == 404
        worker = Project.load()
        with WebServer(create_app(worker)) as other:  # another worker, the same hour
            for i in range(7):
                assert other.request("GET", forged[i % 4]).status == 404
        worker.close()
    assert incidents() == [incident]
    assert incident["title"] == TITLE and incident["source"] == "engine"
    assert "6 requests" in incident["facts"] and "1 client address" in incident["facts"]
    assert "127.0.0.1" not in json.dumps(incident)
    assert any(r.levelno == logging.WARNING and "breach register" in r.getMessage()
               for r in caplog.records)
    app_project.close()


def test_forged_links_are_counted_in_a_sliding_window():
    watch = ForgedLinks(3, 10, quiet=3600)  # more than 3 in 10 minutes
    assert [watch.count("a", now=t) for t in (0, 60, 120, 700, 710)] == [None] * 5
    run = watch.count("b", now=715)  # 0 and 60 have left the window: 120, 700, 710, 715
    assert run is not None and (run.requests, run.clients, run.most_from_one) == (4, 2, 3)
    assert watch.count("c", now=720) is None  # reported: quiet for an hour
    later = [watch.count("d", now=4400 + t) for t in range(5)]  # an hour after the report
    assert [r.requests if r else None for r in later] == [None, None, None, 4, None]
