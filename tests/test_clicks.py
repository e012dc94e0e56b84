"""Clicks counted per campaign and link, never per person ([tracking] clicks = "aggregate",
issue 16 point 3): the rewriting of a template's links, and a real send whose signed
message is followed through the real web server (uvicorn) to the link's own address."""

from __future__ import annotations

import json
import re
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from click.testing import CliRunner
from jinja2 import Environment
from sqlalchemy import text

from mailer.cli import cli
from mailer.content.dkim import load_key, txt_record
from mailer.content.inline import inline_css
from mailer.content.tracking import find_links, rewrite_links
from mailer.project import Project
from mailer.tokens import Purpose
from mailer.web.app import create_app
from tests.support.webserver import WebServer, free_port
from tests.test_dkim import results
from tests.test_inline import same_document

SITE = "https://www.example.be/agenda?jaar=2026&maand=12"
SHOP = "https://winkel.example.be/"
TEMPLATE = f"""<html><head><style>a {{ color: #1f5f8b }} .button {{ font-weight: bold }}</style>
</head><body>
<p><a class="button" href="{SITE.replace('&', '&amp;')}">Agenda</a>
<a href='{SHOP}'>Winkel</a> <a href="{SITE.replace('&', '&amp;')}">nog eens</a></p>
<p><a href="https://www.example.be/{{{{ campaign.slug }}}}/">per persoon</a>
<a href="mailto:info@example.be">mail</a> <a href="#boven">boven</a>
<a href="PUBLIC/p/x">eigen pagina</a></p>
<p><a href="{{{{ urls.unsubscribe }}}}">Uitschrijven</a>
<a href="{{{{ urls.preferences }}}}">Voorkeuren</a></p>
</body></html>
"""


def test_only_fixed_links_of_the_template_are_rewritten_and_styles_stay():
    public = "https://nieuws.example.be"
    source = inline_css(TEMPLATE.replace("PUBLIC", public))
    assert find_links(source, public_url=public) == [SITE, SHOP]  # distinct, in order
    targets = {SITE: f"{public}/l/one", SHOP: f"{public}/l/two"}
    rewritten = rewrite_links(source, targets, public_url=public)
    assert rewritten.count(f'href="{public}/l/one"') == 2
    assert f'href="{public}/l/two"' in rewritten  # premailer writes double quotes
    assert rewrite_links("<a title=x href='https://a.example/?a=1&amp;b=2'>", {
        "https://a.example/?a=1&b=2": "https://n.example/l/T?x=1&y=2"}) == \
        "<a title=x href='https://n.example/l/T?x=1&amp;y=2'>"
    for untouched in ('href="https://www.example.be/{{ campaign.slug }}/"',
                      'href="mailto:info@example.be"', 'href="#boven"',
                      f'href="{public}/p/x"',
                      'href="{{ urls.unsubscribe }}"', 'href="{{ urls.preferences }}"'):
        assert untouched in rewritten, untouched
    data = {"campaign": {"slug": "dec"},
            "urls": {"unsubscribe": f"{public}/u/T", "preferences": f"{public}/p/T"}}
    env = Environment(autoescape=True)
    before = env.from_string(source).render(data)
    after = env.from_string(rewritten).render(data)
    # the same document apart from the two addresses: inline styles and all else as inlined
    expected = before.replace(SITE.replace("&", "&amp;"), f"{public}/l/one").replace(
        SHOP, f"{public}/l/two")
    assert same_document(after, expected) and after != before
    assert after.count("style=") == before.count("style=") > 0
    # not http(s), or not clean: never counted (a header or a redirect must not carry them)
    assert find_links('<a href="javascript:alert(1)">x</a> <a href="https://a.example/\tb">'
                      '<a href="ftp://a.example/">') == []


def _project(run, project: Path, port: int, *, clicks: str, monkeypatch) -> dict[str, bytes]:
    """A DKIM-signing project with the links template and three members; its public_url
    on `port`."""
    monkeypatch.setenv("MAILER_PUBLIC_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MAILER_TRACKING__CLICKS", clicks)
    (project / "templates" / "links.html.j2").write_text(
        TEMPLATE.replace("PUBLIC", f"http://127.0.0.1:{port}"))
    keygen = CliRunner().invoke(cli, ["dkim", "keygen", "--domain", "example.be",
                                      "--selector", "mail2026", "--configure", "--json"],
                                catch_exceptions=False)
    assert keygen.exit_code == 0, keygen.output
    record = txt_record(load_key(project / json.loads(keygen.stdout)["key_file"]))
    csv = project / "people.csv"
    csv.write_text("email\nan@example.org\nbo@example.org\ncas@example.org\n")
    assert run("subscribers", "import", str(csv), "--list", "nieuwsbrief", "--consent",
               "test", "--confirmed").exit_code == 0
    created = run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
                  "templates/links.html.j2", "--subject", "Nieuws")
    assert created.exit_code == 0, created.output
    sent = run("campaign", "send", "dec", "--yes")
    assert sent.exit_code == 0, sent.output
    messages = {}
    for path in (project / "outbox" / "new").glob("*"):
        data = path.read_bytes()
        messages[message_from_bytes(data)["To"].strip("<>")] = data
        assert results(data, {"mail2026": record.encode()}) == {"rsa": True}
    return messages


def _html(data: bytes) -> str:
    message = message_from_bytes(data, policy=policy.default)
    return message.get_body(("html",)).get_content()  # type: ignore[union-attr]


def _clicks(project: Project) -> dict[str, int]:
    with project.engine.connect() as conn:
        return dict(conn.execute(text("SELECT url, clicks FROM link_click")).all())


def test_aggregate_links_redirect_through_the_server_and_count_per_link(
        run, project, monkeypatch):
    port = free_port()
    messages = _project(run, project, port, clicks="aggregate", monkeypatch=monkeypatch)
    assert len(messages) == 3
    pages = {address: _html(data) for address, data in messages.items()}
    links = {a: re.findall(r'href="(http://127\.0\.0\.1:\d+/l/[^"]+)"', h)
             for a, h in pages.items()}
    # the same addresses for everyone: no person in them
    assert len(set(map(tuple, links.values()))) == 1
    agenda, shop, again = links["an@example.org"]
    assert agenda == again != shop and SITE.replace("&", "&amp;") not in pages["an@example.org"]
    for page in pages.values():  # unsubscribe and preferences: the person's own, as ever
        assert re.search(r'href="http://127\.0\.0\.1:\d+/u/[^"]+"', page)
        assert re.search(r'href="http://127\.0\.0\.1:\d+/p/[^"]+"', page)
    app_project = Project.load()
    try:
        with WebServer(create_app(app_project), port=port) as web:
            path = agenda.split(str(port), 1)[1]
            first = web.request("GET", path)
            assert first.status == 302 and first.headers["location"] == SITE
            assert first.headers["cache-control"] == "no-store"
            # the target is the stored one: a URL in the request goes nowhere
            evil = web.request("GET", path + "?url=https://evil.example/&to=https://evil.example/")
            assert evil.status == 302 and evil.headers["location"] == SITE
            assert web.request("HEAD", path).status == 302  # a link checker: not counted
            assert web.request("GET", shop.split(str(port), 1)[1]).headers["location"] == SHOP
            token = path.rsplit("/", 1)[1]
            forged = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
            assert web.request("GET", f"/l/{forged}").status == 404
            message_token = re.search(r"/u/([^\"]+)\"", pages["an@example.org"]).group(1)
            assert web.request("GET", f"/l/{message_token}").status == 404  # not a link's
            campaign_id = app_project.signer.read(token, Purpose.CLICK).campaign_id
            unknown = app_project.signer.make(Purpose.CLICK, 0, 99, campaign_id)
            assert web.request("GET", f"/l/{unknown}").status == 404
    finally:
        app_project.close()
    assert _clicks(Project.load()) == {SITE: 2, SHOP: 1}
    report = run("campaign", "report", "dec", "--json")
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["clicks"] == [
        {"link": 1, "url": SITE, "clicks": 2}, {"link": 2, "url": SHOP, "clicks": 1}]
    page = run("campaign", "report", "dec", "--out", str(project / "report.html"))
    assert page.exit_code == 0, page.output
    html = (project / "report.html").read_text()
    assert "Klikken per link" in html and SITE.replace("&", "&amp;") in html
    assert "nooit wie er klikte" in html  # the list is Dutch; it says what is not counted


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_off_leaves_every_link_as_the_template_has_it(run, project, monkeypatch, db_url):
    messages = _project(run, project, free_port(), clicks="off", monkeypatch=monkeypatch)
    html = _html(messages["bo@example.org"])
    assert html.count(f'href="{SITE.replace("&", "&amp;")}"') == 2
    assert f'href="{SHOP}"' in html and "/l/" not in html
    assert _clicks(Project.load()) == {}
    report = run("campaign", "report", "dec", "--json")
    assert json.loads(report.stdout)["clicks"] == []


def test_an_unknown_clicks_mode_is_one_clear_line(run, project, monkeypatch):
    monkeypatch.setenv("MAILER_TRACKING__CLICKS", "per-person")
    result = run("campaign", "ls")
    assert result.exit_code != 0
    assert "tracking" in result.output and "Traceback" not in result.output
