"""The campaign report: its figures from a real send with faults and returns, and the HTML
page in a real browser (no request anywhere, no console error, fits a phone)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.support.browser import shot
from tests.support.smtpserver import SmtpServer
from tests.test_feedback import arf, dsn, people, process, returns

TEMPLATE = "templates/newsletter.html.j2"


def _campaign(run, project: Path, monkeypatch) -> None:  # noqa: ANN001
    """Ten people: one hard bounce returned later, one refused at RCPT, one blocked as
    spam (our fault), one complaint, one unsubscribe by mail; the rest delivered."""
    addresses = people(run, project, 10)
    with SmtpServer() as smtp:
        for key, value in {"transport": f"smtp://127.0.0.1:{smtp.port}?tls=none",
                           "rate": 50, "retry_after": 0, "pause_failure_rate": 0.9}.items():
            monkeypatch.setenv(f"MAILER_DELIVERY__{key.upper()}", str(value))
        smtp.reply_to_rcpt(addresses[1], 550, "5.1.1 No such user here")
        smtp.reply_to_rcpt(addresses[2], 554, "5.7.1 Service unavailable; Client host "
                                              "[192.0.2.1] blocked using zen.spamhaus.org")
        assert run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
                   TEMPLATE, "--subject", "Nieuws").exit_code == 0
        assert run("campaign", "send", "dec", "--yes").exit_code == 0
        sent = {m.recipients[0]: f"Return-Path: <{m.envelope_from}>\n".encode()
                + m.data.replace(b"\r\n", b"\n") for m in smtp.messages()}
    unsub = [line for line in sent[addresses[4]].split(b"\n")
             if b"mailto:unsub+" in line][0].decode().split("mailto:")[1].split("?")[0]
    mail = f"From: {addresses[4]}\nTo: {unsub}\nSubject: stop\n\nstop\n".encode()
    process(run, returns(project, dsn(sent[addresses[0]], addresses[0], status="5.1.1",
                                      diagnostic="550 5.1.1 user unknown"),
                         arf(sent[addresses[3]]), mail))


def test_the_report_counts_states_returns_and_unsubscribes(run, project, monkeypatch):
    _campaign(run, project, monkeypatch)
    result = run("campaign", "report", "dec", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["deliveries"] == 10
    assert report["states"] == {"sent": 7, "bounced": 2, "failed": 1}
    assert sum(p["sent"] for p in report["timeline"]) == 8  # the relay took eight
    assert report["rate_per_minute"] == 3000
    r = report["returns"]
    assert (r["hard"], r["sender_side"], r["complaints"]) == (2, 1, 1)
    assert {x["reason"] for x in r["reasons"]} == {"userunknown"}
    assert r["warnings"][0]["reason"] == "blocked"
    assert report["unsubscribes"]["mail"] == 1 and report["unsubscribes"]["complaint"] == 1
    assert report["slow_domains"][0]["domain"] == "example.org"
    missing = run("campaign", "report", "nope", "--json")
    assert missing.exit_code == 1 and "No campaign" in missing.output
    nowhere = run("campaign", "report", "dec")
    assert nowhere.exit_code == 1 and "--out" in nowhere.output


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_html_report_is_self_contained_in_a_browser(run, project, monkeypatch, chromium,
                                                         screenshots, db_url):
    _campaign(run, project, monkeypatch)  # before the browser: the send runs asyncio
    with chromium.lend() as browser:
        context = browser.new_context(locale="en-US", service_workers="block")
        try:
            _look(run, project, context.new_page(), screenshots)
        finally:
            context.close()


def _look(run, project: Path, page, screenshots: Path) -> None:  # noqa: ANN001
    path = project / "report.html"
    result = run("campaign", "report", "dec", "--out", str(path), "--lang", "en")
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # replies may quote addresses
    html = path.read_text()
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")
    assert html.count("<svg") == 3  # timeline, reasons, domains
    requests: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: None if r.url == path.as_uri() else requests.append(r.url))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.set_viewport_size({"width": 360, "height": 800})
    page.goto(path.as_uri())
    assert page.get_by_role("heading", level=1).inner_text().startswith("Report: ")
    assert page.get_by_role("heading", name="Refused because of our sending").is_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the page is {width} px wide on a 360 px phone"
    shot(page, screenshots, "report-phone")
    assert requests == [] and problems == []
