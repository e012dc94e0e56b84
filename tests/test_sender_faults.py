"""Issue 13's sender faults that are not about the pace (that is tests/test_pacing.py),
against the real SMTP server of tests/support, on SQLite and PostgreSQL: the automatic
pause as the docs say it."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.support.members import import_members
from tests.support.smtpserver import SmtpServer
from tests.test_delivery import configure, create, states


@pytest.fixture
def smtp():  # noqa: ANN201
    with SmtpServer() as server:
        yield server


# -- the automatic pause: "more than pause_failure_rate of its last 200" -----------------------

def test_the_pause_quotes_the_failing_reply_never_a_250(run, project, smtp, monkeypatch):
    """45 blocked, then 30 that go out, one at a time: more than 20 % of 200 (41) have
    failed at the 41st failure, and the pause says so with that failure's reply. (It
    fired at the 50th delivery, a success, and quoted "250 OK" as the reason.)"""
    configure(monkeypatch, smtp, connections=1, pause_failure_rate=0.2)
    import_members(run, project, [f"p{i}@blocked.example" for i in range(45)]
                  + [f"q{i}@example.be" for i in range(30)])
    smtp.reply_to_rcpt("@blocked.example", 550, "5.7.1 Service unavailable, client blocked")
    create(run)
    result = run("campaign", "send", "dec", "--yes", "--json")
    assert result.exit_code == 0, result.output
    reason = json.loads(result.stdout)["paused_reason"]
    assert reason == ("41 of the last 41 deliveries did not go out (the last: 550 5.7.1 "
                      "Service unavailable, client blocked)")
    shown = json.loads(run("campaign", "show", "dec", "--json").stdout)
    assert shown["state"] == "paused" and shown["pause_reason"] == reason
    assert shown["counts"] == {"failed": 41, "queued": 34} and smtp.messages() == []


def test_eleven_bad_addresses_in_the_first_fifty_do_not_pause(run, project, smtp,
                                                              monkeypatch):
    """The docs' window is 200: 11 unknown addresses among 60 are 22 % of the first 50
    (which paused the campaign) but 11 of 200, far from the 41 that pause it."""
    configure(monkeypatch, smtp, connections=1, pause_failure_rate=0.2)
    bad = [f"gone{i}@example.be" for i in range(11)]
    good = [f"p{i}@example.be" for i in range(49)]
    import_members(run, project, bad + good)
    for address in bad:
        smtp.reply_to_rcpt(address, 550, "5.1.1 No such user")
    create(run)
    result = run("campaign", "send", "dec", "--yes", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["paused_reason"] is None and report["finished"]
    assert Counter(states(run).values()) == {"sent": 49, "bounced": 11}
    assert sorted(r for m in smtp.messages() for r in m.recipients) == sorted(good)

