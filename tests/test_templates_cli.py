"""`mailer templates check` and `mailer preview` on a real project."""

from __future__ import annotations

import json
from email import policy
from email.parser import BytesParser
from pathlib import Path

import dkim

from mailer.content.dkim import load_key, txt_record
from mailer.tokens import Purpose, Signer

BAD = """{% extends "layout.html.j2" %}
{% block content %}
<link rel="stylesheet" href="https://cdn.example.com/x.css">
<script>track()</script>
<p>{{ subscriber.frist_name }} {{ subscriber.first_name }}</p>
<img src="https://www.example.be/x.png">
{% endblock %}
"""


def test_the_shipped_newsletter_passes_the_check(run):
    result = run("templates", "check", "templates/newsletter.html.j2")
    assert result.exit_code == 0, result.output
    assert "no problems found" in result.output


def test_check_reports_every_problem_and_exits_1(run, project):
    (project / "templates" / "bad.html.j2").write_text(BAD)
    result = run("templates", "check", "templates/bad.html.j2", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    messages = [f["message"] for f in report["findings"] if f["level"] == "error"]
    assert any("subscriber.frist_name is undefined" in m for m in messages)
    assert any("alt text" in m and "x.png" in m for m in messages)
    assert any("stylesheet https://cdn.example.com/x.css" in m for m in messages)
    assert any("<script>" in m for m in messages)
    warnings = [f["message"] for f in report["findings"] if f["level"] == "warning"]
    assert any(m.startswith("subscriber.first_name has no | default") for m in warnings)
    assert not report["ok"]


def test_check_wants_a_visible_unsubscribe_link_and_an_html_part_gmail_does_not_clip(
        run, project):
    (project / "templates" / "plain.html.j2").write_text("<p>Hallo</p>")
    result = run("templates", "check", "templates/plain.html.j2")
    assert result.exit_code == 1 and "No visible unsubscribe link" in result.output
    (project / "templates" / "huge.html.j2").write_text(
        '<a href="{{ urls.unsubscribe }}">weg</a>' + "<p>" + "x" * 110_000 + "</p>")
    result = run("templates", "check", "templates/huge.html.j2")
    assert result.exit_code == 1 and "Gmail clips" in result.output


def test_a_broken_template_is_one_line_and_exit_1(run, project):
    (project / "templates" / "broken.html.j2").write_text("<p>{% if %}</p>")
    result = run("templates", "check", "templates/broken.html.j2")
    assert result.exit_code == 1
    assert "broken.html.j2" in result.output and "Traceback" not in result.output
    result = run("templates", "check", "templates/missing.html.j2")
    assert result.exit_code == 1 and "not found" in result.output


def test_preview_writes_the_exact_message_for_a_subscriber(run, project, monkeypatch):
    assert run("subscribers", "add", "an@example.be", "--list", "nieuwsbrief",
               "--first-name", "Anneke", "--language", "en", "--consent", "test",
               "--confirmed").exit_code == 0
    key = project / "dkim" / "k.pem"
    assert run("dkim", "keygen", "--domain", "example.be", "--selector", "s1",
               "--algorithm", "ed25519", "--out", str(key)).exit_code == 0
    monkeypatch.setenv("MAILER_SENDING__DKIM_KEY", str(key))
    monkeypatch.setenv("MAILER_SENDING__DKIM_SELECTOR", "s1")
    monkeypatch.setenv("MAILER_SENDING__BOUNCE_DOMAIN", "bounce.example.be")
    result = run("preview", "--template", "templates/newsletter.html.j2", "--subscriber",
                 "an@example.be", "--out", "preview", "--subject",
                 "{{ subscriber.first_name }}, our news", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    eml = Path(summary["files"]["eml"]).read_bytes()
    msg = BytesParser(policy=policy.default).parsebytes(eml)
    assert msg["To"] == "Anneke <an@example.be>" and msg["Subject"] == "Anneke, our news"
    html = Path(summary["files"]["html"]).read_text()
    text = Path(summary["files"]["text"]).read_text()
    assert "Dear Anneke" in html and "Kind regards" in text  # the subscriber's language
    assert msg.get_body(("html",)).get_content().replace("\r\n", "\n") == html
    record = txt_record(load_key(key)).encode()
    assert dkim.verify(eml, dnsfunc=lambda name, timeout=5: record)
    assert summary["signed"] is True
    local = summary["envelope_from"].split("@")[0].removeprefix("bounces+")
    assert summary["envelope_from"].endswith("@bounce.example.be")
    secret = (project / "secrets.toml").read_text().split('secret_key = "')[1].split('"')[0]
    assert Signer(secret.encode()).read(local, Purpose.MESSAGE).list_id > 0


def test_preview_of_an_unknown_subscriber_is_a_clear_error(run):
    result = run("preview", "--template", "templates/newsletter.html.j2", "--subscriber",
                 "nobody@example.be", "--out", "p")
    assert result.exit_code == 1 and "No subscriber" in result.output
    assert not Path("p").exists()
