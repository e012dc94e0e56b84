"""The preferences page over real HTTP against uvicorn: names, language, lists, leaving
everything; changes logged as consent; CSRF refused; on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest
from sqlalchemy import text

from mailer.project import Project
from mailer.web.app import create_app
from tests.support.webserver import WebServer

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def site(run, project: Path):  # noqa: ANN001, ANN201
    (project / "lists" / "activiteiten.toml").write_text(
        'name = "Activiteiten"\ndescription = "Uitnodigingen voor onze activiteiten."\n'
        'language = "nl"\noptin = "double"\nfrom_name = "Voorbeeld vzw"\n'
        'from_address = "nieuws@example.be"\npublic = true\n')
    assert run("lists", "sync").exit_code == 0
    assert run("subscribers", "add", "an@example.be", "--list", "nieuwsbrief", "--consent",
               "test", "--confirmed", "--first-name", "An").exit_code == 0
    app_project = Project.load()
    with WebServer(create_app(app_project)) as web:
        web.project = app_project  # type: ignore[attr-defined]
        with app_project.engine.connect() as conn:
            web.ids = dict(conn.execute(text("SELECT slug, id FROM mailing_list")).all())  # type: ignore[attr-defined]
            web.an = conn.execute(text("SELECT id FROM subscriber")).scalar_one()  # type: ignore[attr-defined]
        web.token = app_project.signer.message_token(  # type: ignore[attr-defined]
            web.an, web.ids["nieuwsbrief"], 3).link  # type: ignore[attr-defined]
        yield web
    app_project.close()


def memberships(site: WebServer) -> dict[str, str]:
    with site.project.engine.connect() as conn:  # type: ignore[attr-defined]
        return dict(conn.execute(text(
            "SELECT l.slug, m.status FROM subscription m JOIN mailing_list l "
            "ON l.id = m.list_id")).all())


def person(site: WebServer) -> tuple:
    with site.project.engine.connect() as conn:  # type: ignore[attr-defined]
        return tuple(conn.execute(text(
            "SELECT first_name, last_name, language FROM subscriber")).one())


def post(site: WebServer, fields: list[tuple[str, str]], **headers: str):  # noqa: ANN201
    return site.request("POST", f"/p/{site.token}", body=urlencode(fields).encode(),  # type: ignore[attr-defined]
                        headers={**FORM, **headers})


def test_the_page_shows_name_language_and_the_lists(site):
    page = site.request("GET", f"/p/{site.token}")
    assert page.status == 200 and "Je voorkeuren" in page.text
    assert 'value="An"' in page.text
    assert f'name="list" value="{site.ids["nieuwsbrief"]}" checked' in page.text
    assert f'name="list" value="{site.ids["activiteiten"]}">' in page.text  # not ticked
    assert "Ja, ik wil Activiteiten ontvangen." in page.text  # what ticking it agrees to
    assert "Je gegevens" in page.text and "info@example.be" in page.text


def test_saving_changes_names_language_and_lists_with_consent_events(site):
    response = post(site, [("action", "save"), ("first_name", "Anneke"),
                           ("last_name", "Peeters"), ("language", "en"),
                           ("list", str(site.ids["activiteiten"]))])
    assert response.status == 303
    assert response.headers["location"] == f"/p/{site.token}?saved=1"
    assert person(site) == ("Anneke", "Peeters", "en")
    assert memberships(site) == {"nieuwsbrief": "unsubscribed", "activiteiten": "confirmed"}
    with site.project.engine.connect() as conn:
        actions = [tuple(r) for r in conn.execute(text(
            "SELECT action, source FROM consent_event WHERE source LIKE 'preferences%' "
            "ORDER BY id"))]
    assert actions == [("preference", "preferences page: first_name, last_name, language"),
                       ("subscribe", "preferences page"), ("unsubscribe", "preferences page")]
    with site.project.engine.connect() as conn:
        consent = conn.execute(text("SELECT consent FROM consent_event WHERE action = "
                                    "'subscribe' AND source = 'preferences page'")).scalar()
    assert consent == "1: Ja, ik wil Activiteiten ontvangen. Ik kan me altijd uitschrijven. " \
                      "Mijn gegevens worden alleen hiervoor gebruikt."  # as the page showed it
    after = site.request("GET", f"/p/{site.token}?saved=1")
    assert "Your preferences are saved." in after.text and 'lang="en"' in after.text


def test_unsubscribe_from_everything(site):
    post(site, [("action", "save"), ("list", str(site.ids["nieuwsbrief"])),
                ("list", str(site.ids["activiteiten"])), ("first_name", "An")])
    assert memberships(site) == {"nieuwsbrief": "confirmed", "activiteiten": "confirmed"}
    assert post(site, [("action", "unsubscribe-all")]).status == 303
    assert memberships(site) == {"nieuwsbrief": "unsubscribed",
                                 "activiteiten": "unsubscribed"}
    assert person(site)[0] == "An"  # names and language are kept


def test_a_post_from_another_site_is_refused(site):
    response = post(site, [("action", "unsubscribe-all")], Origin="https://evil.example")
    assert response.status == 403
    response = post(site, [("action", "unsubscribe-all")], **{"Sec-Fetch-Site": "cross-site"})
    assert response.status == 403
    response = post(site, [("action", "unsubscribe-all")],
                    **{"Origin": "null", "Sec-Fetch-Site": "cross-site"})
    assert response.status == 403
    assert memberships(site) == {"nieuwsbrief": "confirmed"}
    ok = post(site, [("action", "save"), ("first_name", "An")],
              Origin=f"http://127.0.0.1:{site.port}")
    assert ok.status == 303


def test_bad_tokens_and_ids_get_the_404_page(site):
    assert site.request("GET", f"/p/{site.token[:-1]}").status == 404
    assert post(site, [("action", "save"), ("list", "99999"), ("list", "x")]).status == 303
    assert memberships(site) == {"nieuwsbrief": "unsubscribed"}  # unknown ids: ignored


def test_a_refused_name_or_form_is_answered_in_the_pages_language(site):
    """One language per page (issue 12, point 7): not the name checker's English."""
    for language, said, foreign in (("nl", "Deze naam kunnen we niet bewaren", "We cannot"),
                                    ("en", "We cannot keep this name", "Deze naam")):
        response = post(site, [("action", "save"), ("first_name", "An\nBcc: x"),
                               ("consent_language", language)])
        assert response.status == 400 and f'lang="{language}"' in response.text
        assert said in response.text and foreign not in response.text
        assert "control characters" not in response.text
    response = post(site, [("action", "save")], Origin="https://evil.example",
                    **{"Accept-Language": "nl"})
    assert response.status == 403 and "Dit formulier kan alleen" in response.text
    assert person(site)[0] == "An"
