"""A subscriber's whole path in a real browser (headless Debian Chromium): sign up through
the form, confirm from the mail the test SMTP server caught, receive a newsletter,
unsubscribe from its link, come back through the preferences page, and have her data
erased; the database is checked after each step and every page is saved as a screenshot
under the test's temp dir (screenshots/)."""

from __future__ import annotations

import re
import subprocess
import sys
from email import message_from_bytes
from pathlib import Path

import pytest
from sqlalchemy import text

from mailer.project import Project
from mailer.web.app import create_app
from tests.support.browser import shot
from tests.support.smtpserver import SmtpServer
from tests.support.waiting import wait_for
from tests.support.webserver import WebServer, free_port


def status(project: Project, email: str) -> str | None:
    with project.engine.connect() as conn:
        return conn.execute(text(
            "SELECT m.status FROM subscription m JOIN subscriber s ON s.id = m.subscriber_id "
            "WHERE s.email = :e"), {"e": email}).scalar()


def mail_to(smtp: SmtpServer, address: str, subject: str) -> bytes:
    def arrived() -> bytes | None:
        return next((m.data for m in smtp.messages() if address in m.recipients
                     and message_from_bytes(m.data)["Subject"] == subject), None)

    return wait_for(arrived, f"the mail '{subject}' for {address}")


def html_link(raw: bytes, pattern: str) -> str:
    html = next(p for p in message_from_bytes(raw).walk()
                if p.get_content_type() == "text/html")
    return re.search(pattern, html.get_payload(decode=True).decode()).group(1)


@pytest.mark.parametrize("page_locale", ["nl-BE"])
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sign_up_confirm_receive_and_unsubscribe_in_a_browser(
        run, project: Path, page, screenshots: Path, monkeypatch, db_url):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with SmtpServer() as smtp:
        monkeypatch.setenv("MAILER_DELIVERY__TRANSPORT",
                           f"smtp://127.0.0.1:{smtp.port}?tls=none")
        monkeypatch.setenv("MAILER_PUBLIC_URL", base)
        app_project = Project.load()
        elsewhere: list[str] = []
        page.on("request", lambda r: None if r.url.startswith(base) else elsewhere.append(r.url))
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
                if r.status >= 400 else None)
        with WebServer(create_app(app_project), port=port):
            # 1. the form
            page.goto(f"{base}/subscribe/nieuwsbrief")
            assert page.title().startswith("Inschrijven op Nieuwsbrief")
            shot(page, screenshots, "1-form")
            page.get_by_label("E-mailadres").fill("lotte@example.be")
            page.get_by_label("Voornaam").fill("Lotte")
            page.get_by_label(re.compile("Ja, ik wil de nieuwsbrief")).check()
            page.get_by_role("button", name="Inschrijven").click()
            page.wait_for_url(f"{base}/subscribe/nieuwsbrief")
            assert page.get_by_role("heading").inner_text() == "Kijk in je mailbox"
            shot(page, screenshots, "2-check-your-mail")
            assert status(app_project, "lotte@example.be") == "pending"

            # 2. the confirmation mail, its link, the button
            confirm = html_link(mail_to(smtp, "lotte@example.be",
                                        "Bevestig je inschrijving op Nieuwsbrief"),
                                r'href="([^"]+/c/[^"]+)"')
            page.goto(confirm)
            shot(page, screenshots, "3-confirm")
            assert status(app_project, "lotte@example.be") == "pending"  # a GET changes nothing
            page.get_by_role("button", name="Ja, schrijf me in").click()
            page.get_by_text("Je inschrijving is bevestigd").wait_for()
            shot(page, screenshots, "4-confirmed")
            assert status(app_project, "lotte@example.be") == "confirmed"

            # 3. a newsletter, and its unsubscribe link
            # (in a process of its own: the test's thread has Playwright's loop running)
            for args in (["create", "dec", "--list", "nieuwsbrief", "--template",
                          "templates/newsletter.html.j2", "--subject", "Nieuws"],
                         ["send", "dec", "--yes"]):
                subprocess.run([sys.executable, "-m", "mailer", "campaign", *args],
                               check=True, capture_output=True)
            newsletter = mail_to(smtp, "lotte@example.be", "Nieuws")
            header = message_from_bytes(newsletter)["List-Unsubscribe"]
            unsubscribe = html_link(newsletter, r'href="([^"]+/u/[^"]+)"')
            assert f"<{unsubscribe}>" in header
            page.goto(unsubscribe)
            shot(page, screenshots, "5-unsubscribe")
            assert status(app_project, "lotte@example.be") == "confirmed"
            page.get_by_role("button", name="Ja, schrijf me uit").click()
            page.get_by_text("Je ontvangt geen e-mails van Nieuwsbrief meer").wait_for()
            shot(page, screenshots, "6-unsubscribed")
            assert status(app_project, "lotte@example.be") == "unsubscribed"

            # 4. changed her mind: the preferences page, from the same page
            page.get_by_role("link", name="Je voorkeuren aanpassen").click()
            page.get_by_label("Nieuwsbrief").check()
            page.get_by_label("Tussenvoegsel").fill("van")
            page.get_by_label("Achternaam").fill("Janssens")
            page.get_by_role("button", name="Bewaren").click()
            page.get_by_text("Je voorkeuren zijn bewaard.").wait_for()
            shot(page, screenshots, "7-preferences")
            assert status(app_project, "lotte@example.be") == "confirmed"
            with app_project.engine.connect() as conn:
                assert tuple(conn.execute(text(
                    "SELECT infix, last_name FROM subscriber WHERE email = :e"),
                    {"e": "lotte@example.be"}).one()) == ("van", "Janssens")

            # 5. she has her data erased: asked once more, then gone
            page.get_by_role("button", name="Wis al mijn gegevens").click()
            page.get_by_role("heading", name="Al je gegevens wissen?").wait_for()
            shot(page, screenshots, "8-erase")
            assert status(app_project, "lotte@example.be") == "confirmed"
            page.get_by_role("button", name="Ja, wis al mijn gegevens").click()
            page.get_by_text("Je gegevens zijn gewist").wait_for()
            shot(page, screenshots, "9-erased")
            assert status(app_project, "lotte@example.be") is None
        app_project.close()
    assert elsewhere == []  # no third-party request from any page
    assert problems == []  # no console errors: nothing the CSP had to block
    shots = sorted(p.name for p in screenshots.iterdir())
    assert len(shots) == 9 and all((screenshots / n).stat().st_size > 1000 for n in shots)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_pages_fit_a_phone_and_can_be_used_with_the_keyboard(run, project: Path, browser,
                                                                 screenshots: Path, db_url):
    app_project = Project.load()
    context = browser.new_context(viewport={"width": 360, "height": 740}, locale="en-GB",
                                  device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        with WebServer(create_app(app_project)) as web:
            page.goto(f"{web.url}/subscribe/nieuwsbrief")
            assert page.title().startswith("Subscribe to Nieuwsbrief")
            # nothing wider than the screen: no sideways scrolling on a phone
            assert page.evaluate("document.documentElement.scrollWidth") <= 360
            button = page.get_by_role("button", name="Subscribe").bounding_box()
            assert button is not None and button["height"] >= 44  # a finger's size
            shot(page, screenshots, "phone-form")
            # every field has its label, and the keyboard reaches them in order
            page.get_by_label("E-mail address").focus()
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.id") == "first_name"
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.id") == "language"
            page.keyboard.press("Tab")  # the honeypot is skipped (tabindex=-1)
            assert page.evaluate("document.activeElement.id") == "consent"
    finally:
        context.close()
        app_project.close()
