"""The campaign report as one self-contained HTML file: figures, tables and inline SVG
charts, in Dutch or English, readable at phone width. No script, no style sheet, font or
image from anywhere else (a Content-Security-Policy in the page says so to the browser)."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from mailer.reports import charts

__all__ = ["render_report"]

TEXTS: dict[str, dict[str, str]] = {
    "nl": {
        "title": "Verslag", "subject": "Onderwerp", "state": "Status", "started": "Gestart",
        "finished": "Klaar", "deliveries": "Verzendingen", "sent": "verzonden",
        "deferred": "uitgesteld", "failed": "mislukt", "bounced": "gebounced",
        "skipped": "overgeslagen", "unknown": "onbekend", "queued": "in de wachtrij",
        "sending": "bezig",
        "timeline": "Verzonden per minuut", "minute": "minuut na de start",
        "per_minute": "berichten per minuut", "rate": "ingesteld tempo",
        "returns": "Wat terugkwam", "hard": "harde bounces", "soft": "zachte bounces",
        "sender_side": "geweigerd om onze verzending", "delayed": "vertraagd",
        "complaints": "klachten (spam)", "auto_replies": "automatische antwoorden",
        "reasons": "Bounces per reden", "domains": "Bounces per domein",
        "unsubscribes": "Uitschrijvingen", "one_click": "met één klik",
        "page": "via de voorkeurenpagina", "mail": "per mail", "complaint": "door een klacht",
        "other": "anders", "warnings": "Geweigerd om onze verzending (niet het adres)",
        "slow": "Trage en moeilijke domeinen", "domain": "domein", "problems": "problemen",
        "reply": "laatste antwoord", "retried": "opnieuw geprobeerd", "none": "Geen.",
        "generated": "Gemaakt door mailer", "clicks": "Klikken per link", "link": "link",
        "clicked": "klikken", "clicks_note": "Geteld per link, voor iedereen samen: nooit wie "
                                          "er klikte.",
    },
    "en": {
        "title": "Report", "subject": "Subject", "state": "State", "started": "Started",
        "finished": "Finished", "deliveries": "Deliveries", "sent": "sent",
        "deferred": "deferred", "failed": "failed", "bounced": "bounced",
        "skipped": "skipped", "unknown": "unknown", "queued": "queued", "sending": "sending",
        "timeline": "Sent per minute", "minute": "minutes since the start",
        "per_minute": "messages per minute", "rate": "configured rate",
        "returns": "What came back", "hard": "hard bounces", "soft": "soft bounces",
        "sender_side": "refused because of our sending", "delayed": "delayed",
        "complaints": "complaints (spam)", "auto_replies": "auto-replies",
        "reasons": "Bounces by reason", "domains": "Bounces by domain",
        "unsubscribes": "Unsubscribes", "one_click": "one click", "page": "preferences page",
        "mail": "by mail", "complaint": "by complaint", "other": "other",
        "warnings": "Refused because of our sending (not the address)",
        "slow": "Slow and difficult domains", "domain": "domain", "problems": "problems",
        "reply": "last reply", "retried": "retried", "none": "None.",
        "generated": "Made by mailer", "clicks": "Clicks per link", "link": "link",
        "clicked": "clicks", "clicks_note": "Counted per link, for everyone together: never "
                                            "who clicked.",
    },
}
_STATES = ("sent", "deferred", "failed", "bounced", "skipped", "unknown", "queued", "sending")


def render_report(report: dict[str, Any], language: str = "nl") -> str:
    t = TEXTS.get(language, TEXTS["en"])
    env = Environment(loader=PackageLoader("mailer.reports", "."),
                      autoescape=select_autoescape(["html", "j2"]))
    returns = report["returns"]
    svg: dict[str, Markup] = {}
    if report["timeline"]:
        svg["timeline"] = Markup(charts.timeline(
            [p["minute"] for p in report["timeline"]], [p["sent"] for p in report["timeline"]],
            report["rate_per_minute"], xlabel=t["minute"], ylabel=t["per_minute"],
            rate_label=t["rate"]))
    if returns["reasons"]:
        svg["reasons"] = Markup(charts.bars(
            [r["reason"] for r in returns["reasons"]], [r["count"] for r in returns["reasons"]],
            colours=[charts.INK if r["hard"] else charts.ACCENT for r in returns["reasons"]],
            name="reasons"))
    if returns["domains"]:
        svg["domains"] = Markup(charts.bars(
            [d["domain"] or "?" for d in returns["domains"]],
            [d["count"] for d in returns["domains"]], name="domains"))
    states = [(t.get(s, s), report["states"][s]) for s in _STATES if report["states"].get(s)]
    return env.get_template("report.html.j2").render(
        r=report, t=t, lang=language, svg=svg, states=states,
        returns_counts=[(t[k], returns[k]) for k in ("hard", "soft", "sender_side", "delayed",
                                                      "complaints", "auto_replies")],
        unsubscribes=[(t[k], n) for k, n in report["unsubscribes"].items()])
