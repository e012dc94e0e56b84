"""What the operator reads about a campaign tells the truth (issue 12, point 8): a paused
campaign has no ETA and says how to resume; with everything deferred `show` says when the
next retry is and `send` exits non-zero; `mailer run` prints one summary; times are local,
to the second."""

from __future__ import annotations

import json
import re

from tests.support.smtpserver import SmtpServer
from tests.test_feedback import people

TEMPLATE = "templates/newsletter.html.j2"


def test_deferred_paused_and_idle_campaigns_say_what_is_true(run, project, monkeypatch):
    addresses = people(run, project, 3)
    with SmtpServer() as smtp:
        for key, value in {"transport": f"smtp://127.0.0.1:{smtp.port}?tls=none",
                           "rate": 100, "retry_after": 3600, "max_attempts": 5}.items():
            monkeypatch.setenv(f"MAILER_DELIVERY__{key.upper()}", str(value))
        for address in addresses:
            smtp.reply_to_rcpt(address, 451, "4.7.1 Greylisted, try again later")
        assert run("campaign", "create", "dec", "--list", "nieuwsbrief", "--template",
                   TEMPLATE, "--subject", "Nieuws").exit_code == 0
        sent = run("campaign", "send", "dec", "--yes")
        assert sent.exit_code == 1, sent.output
        assert "the next retry is at" in sent.output
        shown = run("campaign", "show", "dec")
        assert "next retry of the deferred deliveries" in shown.output
        started = re.search(r"started (\S+ \S+)", shown.output)
        assert started and "." not in started.group(1)  # to the second
        data = json.loads(run("campaign", "show", "dec", "--json").stdout)
        assert data["next_retry_at"] is not None
        idle = run("run")
        assert idle.exit_code == 0 and idle.output.strip() == "Nothing to do."
        paused = run("campaign", "pause", "dec")
        assert "nothing goes out until `mailer campaign resume dec`" in paused.output
        shown = run("campaign", "show", "dec")
        assert "to go" not in shown.output and "campaign resume dec" in shown.output
        assert json.loads(run("campaign", "show", "dec", "--json").stdout)[
            "eta_seconds"] is None
