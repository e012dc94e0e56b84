"""The Dutch tussenvoegsel (subscriber.infix, issue 12 point 5) wherever a person's fields
are used: segments (`--where`), the template check's audience, the preferences page."""

from __future__ import annotations

import json
from email import policy
from email.parser import BytesParser
from pathlib import Path

NAMED = """{% extends "layout.html.j2" %}
{% block content %}
<p>Beste {{ subscriber.name }} ({{ subscriber.infix }}),</p>
{% endblock %}
"""


def _add(run, email: str, first: str, infix: str | None, last: str) -> None:  # noqa: ANN001
    args = ["subscribers", "add", email, "--list", "nieuwsbrief", "--consent", "test",
            "--confirmed", "--first-name", first, "--last-name", last]
    if infix is not None:
        args += ["--infix", infix]
    result = run(*args)
    assert result.exit_code == 0, result.output


def _people(run) -> None:  # noqa: ANN001
    _add(run, "jan@example.nl", "Jan", "van der", "Berg")
    _add(run, "piet@example.nl", "Piet", "van", "Dam")
    _add(run, "anna@example.nl", "Anna", None, "Jansen")


def _recipients(project: Path) -> set[str]:
    folder = project / "outbox" / "new"
    return {str(BytesParser(policy=policy.default).parsebytes(p.read_bytes())["To"])
            for p in folder.iterdir()} if folder.exists() else set()


def test_a_segment_can_pick_people_by_their_infix(run, project):
    _people(run)
    for slug, where in (("van", "infix = 'van'"), ("met", "infix is set"),
                        ("vander", 'infix starts with "van d"'), ("zonder", "infix is not set")):
        result = run("campaign", "create", slug, "--list", "nieuwsbrief", "--template",
                     "templates/newsletter.html.j2", "--subject", "Nieuws", "--where", where)
        assert result.exit_code == 0, result.output
    result = run("campaign", "send", "van", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sent"] == 1
    assert _recipients(project) == {"Piet van Dam <piet@example.nl>"}
    for slug, expected in (("met", 2), ("vander", 1), ("zonder", 1)):
        shown = run("templates", "check", "--campaign", slug, "--json")
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["recipients"] == expected, slug


def test_the_check_sees_the_infix_of_the_real_audience(run, project):
    (project / "templates" / "named.html.j2").write_text(NAMED)
    _add(run, "jan@example.nl", "Jan", "van der", "Berg")
    _add(run, "piet@example.nl", "Piet", "van", "Dam")
    result = run("templates", "check", "templates/named.html.j2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["findings"] == [] and report["recipients"] == 2
    # one person without an infix: missing for that one, not for everyone; and the way
    # out the message gives (--where "infix is set") works
    _add(run, "anna@example.nl", "Anna", None, "Jansen")
    result = run("templates", "check", "templates/named.html.j2", "--json")
    assert result.exit_code == 1
    (finding,) = json.loads(result.stdout)["findings"]
    assert finding["field"] == "subscriber.infix" and finding["lacking"] == 1
    assert '--where "infix is set"' in finding["message"]
    result = run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
                 "templates/named.html.j2", "--subject", "Nieuws", "--where", "infix is set")
    assert result.exit_code == 0, result.output
    result = run("campaign", "send", "dec", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sent"] == 2
    texts = [BytesParser(policy=policy.default).parsebytes(p.read_bytes())
             .get_body(("plain",)).get_content() for p in (project / "outbox" / "new").iterdir()]
    assert any("Beste Jan van der Berg (van der)," in t for t in texts), texts


# -- the preferences page (mailer serve): the infix between first and last name

def test_the_preferences_page_shows_and_saves_the_infix(run, project):
    from urllib.parse import urlencode

    from sqlalchemy import text

    from mailer.project import Project
    from mailer.web.app import create_app
    from tests.support.webserver import WebServer

    _add(run, "jan@example.nl", "Jan", "van der", "Berg")
    web_project = Project.load()

    def person() -> tuple:
        with web_project.engine.connect() as conn:
            return tuple(conn.execute(text(
                "SELECT first_name, infix, last_name FROM subscriber")).one())

    def save(fields: list[tuple[str, str]], language: str = "nl"):  # noqa: ANN202
        return web.request("POST", path, body=urlencode(
            [("action", "save"), ("consent_language", language), *fields]).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"})

    try:
        with WebServer(create_app(web_project)) as web:
            with web_project.engine.connect() as conn:
                jan = conn.execute(text("SELECT id FROM subscriber")).scalar_one()
                list_id = conn.execute(text("SELECT id FROM mailing_list WHERE slug = "
                                            "'nieuwsbrief'")).scalar_one()
            path = f"/p/{web_project.signer.message_token(jan, list_id, 1).link}"
            for language, label in (("nl", "Tussenvoegsel"), ("en", "Surname prefix")):
                page = web.request("GET", path, headers={"Accept-Language": language})
                assert page.status == 200 and f'lang="{language}"' in page.text
                assert f'<label for="infix">{label}' in page.text, page.text
                assert 'name="infix"' in page.text and 'value="van der"' in page.text
            assert save([("first_name", "Jan"), ("infix", "van den"),
                         ("last_name", "Bosch"), ("list", str(list_id))]).status == 303
            assert person() == ("Jan", "van den", "Bosch")
            assert 'value="van den"' in web.request("GET", path).text
            with web_project.engine.connect() as conn:
                source = conn.execute(text(
                    "SELECT source FROM consent_event WHERE action = 'preference'")).scalar()
            assert source == "preferences page: infix, last_name"
            # a line break is refused in the page's language, nothing half-written
            for language, said in (("nl", "Deze naam kunnen we niet bewaren"),
                                   ("en", "We cannot keep this name")):
                response = save([("first_name", "Jan"), ("infix", "van\nBcc: x"),
                                 ("last_name", "Berg")], language)
                assert response.status == 400 and said in response.text
            assert person() == ("Jan", "van den", "Bosch")
            # emptied: removed
            assert save([("first_name", "Jan"), ("infix", ""), ("last_name", "Bosch"),
                         ("list", str(list_id))]).status == 303
            assert person() == ("Jan", None, "Bosch")
            # a page copied into a project before the field existed sends no infix: kept
            assert save([("first_name", "Jan"), ("infix", "van"), ("last_name", "Bosch"),
                         ("list", str(list_id))]).status == 303
            assert save([("first_name", "Jan"), ("last_name", "Bosch"),
                         ("list", str(list_id))]).status == 303
            assert person() == ("Jan", "van", "Bosch")
            # leaving everything keeps the name whole
            assert web.request("POST", path, body=b"action=unsubscribe-all", headers={
                "Content-Type": "application/x-www-form-urlencoded"}).status == 303
            assert person() == ("Jan", "van", "Bosch")
    finally:
        web_project.close()
