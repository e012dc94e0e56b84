"""Stopping a send with a signal (issue 12, point 1), against a real `mailer` process, the
test SMTP server and each database: Ctrl-C (SIGINT) and SIGTERM stop claiming, the
messages in flight finish, every state is written, exit 130 with one line that says what
went, what waits and the command that continues; that command sends the rest, nobody
twice. A second signal stops at once: the messages in flight become "unknown"."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from mailer.delivery.sender import MARK_AHEAD
from tests import test_delivery
from tests.support.notices import NOTICE
from tests.support.smtpserver import SmtpServer
from tests.support.waiting import wait_for
from tests.test_delivery import alive, configure, create, living_children, outbox_states, people
from tests.test_privacy import _age

smtp, database = test_delivery.smtp, test_delivery.database  # the fixtures

LINE = re.compile(r"Interrupted \((SIGINT|SIGTERM)\): (\d+) sent, (\d+) waiting"
                  r"(?:, (\d+) cut off in flight \(unknown[^)]*\))?; `([^`]+)` continues\.")


def start(*args: str) -> subprocess.Popen[bytes]:
    """`mailer ARGS` in a session of its own: the signal goes to its process group, as
    Ctrl-C at a terminal does (the render helpers get it too)."""
    return subprocess.Popen([sys.executable, "-m", "mailer", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def status(pid: int, field: str) -> int:
    """A signal mask of /proc/PID/status (SigIgn, ShdPnd, SigPnd) as a number."""
    for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no {field} for {pid}")


def delivered(pid: int) -> bool:
    """No signal is pending for the process any more: its handler has run (it wrote the
    signal to the event loop's wake-up pipe, which the loop reads in order)."""
    return not (status(pid, "ShdPnd") or status(pid, "SigPnd"))


def in_flight(proc: subprocess.Popen[bytes], smtp: SmtpServer, database, n: int) -> int:  # noqa: ANN001
    """Wait until `n` messages are held unanswered at the server, and as many more are
    marked sending and wait for their connections (sender.MARK_AHEAD), with some sent
    before and some still queued; returns how many were sent before."""
    wait_for(lambda: alive(proc) and smtp.held == n
             and outbox_states(database)["sending"] == n * MARK_AHEAD,
             f"{n} deliveries in flight", state=lambda: f"{smtp.held} held, "
             f"{outbox_states(database)}")
    before = len(smtp.messages())
    assert outbox_states(database)["queued"] > 0
    assert before == 3  # the three let through (a fast sender ran on past a late hold)
    return before


def finish(proc: subprocess.Popen[bytes]) -> tuple[str, re.Match[str]]:
    """Exit 130, no traceback, the interrupt line as the last line of stderr."""
    out, err = proc.communicate(timeout=180)
    text = err.decode(errors="replace")
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "Aborted" not in text, text
    last = text.strip().splitlines()[-1]
    match = LINE.fullmatch(last)
    assert match, text
    return text, match


@pytest.mark.parametrize("helpers", [0, 2])
def test_ctrl_c_lets_the_messages_in_flight_finish_and_says_how_to_go_on(
        run, project, smtp, monkeypatch, database, helpers):
    configure(monkeypatch, smtp, rate=200, connections=2, render_processes=helpers)
    addresses = people(run, project, 40)
    create(run)
    smtp.hold_data()
    smtp.release_data(3)  # three go through, then each message waits at the server
    sender = start("campaign", "send", "dec", "--yes")
    wait_for(lambda: alive(sender) and len(smtp.messages()) >= 3, "3 messages at the server")
    if helpers:  # Ctrl-C reaches the helpers too: they ignore it (and the sender ends them)
        wait_for(lambda: len(ready := [p for p in living_children(sender.pid)
                                       if status(p, "SigIgn") & (1 << (signal.SIGINT - 1))])
                 >= helpers and ready, "render helpers that ignore SIGINT",
                 state=lambda: living_children(sender.pid))
    before = in_flight(sender, smtp, database, 2)
    os.killpg(sender.pid, signal.SIGINT)
    wait_for(lambda: delivered(sender.pid), "SIGINT delivered")
    smtp.release_data()  # the two in flight get their 250 and are recorded as sent
    _, line = finish(sender)
    states = outbox_states(database)
    got = len(smtp.messages())
    assert got >= before + 2 and states["sent"] == got  # the two in flight went, recorded
    assert set(states) == {"sent", "queued"} and states["queued"] > 0
    assert line.groups()[:4] == ("SIGINT", str(got), str(states["queued"]), None)
    assert line[5] == "mailer campaign send dec"
    result = run(*shlex.split(line[5])[1:])  # the command it gave
    assert result.exit_code == 0, result.output
    received = Counter(r for m in smtp.messages() for r in m.recipients)
    assert sorted(received) == sorted(addresses) and set(received.values()) == {1}
    assert outbox_states(database) == {"sent": 40}


def test_sigterm_stops_mailer_run_the_same_way(run, project, smtp, monkeypatch, database):
    configure(monkeypatch, smtp, rate=200, connections=2)
    addresses = people(run, project, 40)
    create(run)
    # started, nothing sent yet: the campaign is "sending", for `mailer run` to continue
    result = run("campaign", "send", "dec", "--yes", "--max-seconds", "0.001", "--json")
    assert result.exit_code == 0, result.output
    assert outbox_states(database) == {"queued": 40}
    smtp.hold_data()
    smtp.release_data(3)  # three go through, then each message waits at the server
    runner = start("run", "--max-seconds", "600")
    wait_for(lambda: alive(runner) and len(smtp.messages()) >= 3, "3 messages at the server")
    before = in_flight(runner, smtp, database, 2)
    runner.send_signal(signal.SIGTERM)  # as systemd stops a unit
    wait_for(lambda: delivered(runner.pid), "SIGTERM delivered")
    smtp.release_data()
    _, line = finish(runner)
    states = outbox_states(database)
    got = len(smtp.messages())
    assert got >= before + 2 and states["sent"] == got
    assert set(states) == {"sent", "queued"}
    assert line.groups() == ("SIGTERM", str(got), str(states["queued"]), None, "mailer run")
    result = run("run", "--json")
    assert result.exit_code == 0, result.output
    received = Counter(r for m in smtp.messages() for r in m.recipients)
    assert sorted(received) == sorted(addresses) and set(received.values()) == {1}


def test_a_second_ctrl_c_stops_at_once_and_the_messages_in_flight_are_unknown(
        run, project, smtp, monkeypatch, database):
    configure(monkeypatch, smtp, rate=200, connections=2)
    addresses = people(run, project, 30)
    create(run)
    smtp.hold_data()
    smtp.release_data(3)  # three go through, then each message waits at the server
    sender = start("campaign", "send", "dec", "--yes", "--json")
    wait_for(lambda: alive(sender) and len(smtp.messages()) >= 3, "3 messages at the server")
    before = in_flight(sender, smtp, database, 2)
    os.killpg(sender.pid, signal.SIGINT)
    wait_for(lambda: delivered(sender.pid), "the first SIGINT delivered")
    os.killpg(sender.pid, signal.SIGINT)  # the held messages are never answered
    out, err = sender.communicate(timeout=180)
    assert sender.returncode == 130, err
    assert b"Traceback" not in err
    report = json.loads(out)  # --json: the report still, on stdout
    assert report["interrupted"] == "SIGINT" and report["unknown"] == 2
    states = outbox_states(database)
    assert states["unknown"] == 2 and states["sent"] == before == len(smtp.messages())
    assert set(states) == {"sent", "unknown", "queued"}
    assert report["sent"] == before and report["open_left"] == states["queued"]
    smtp.release_data()
    result = run("campaign", "send", "dec")  # the rest, not the two unknown ones
    assert result.exit_code == 0, result.output
    assert outbox_states(database) == {"sent": 28, "unknown": 2}
    received = Counter(r for m in smtp.messages() for r in m.recipients)
    assert set(received.values()) == {1} and len(set(addresses) - set(received)) <= 2


def notice_states(engine) -> Counter[str]:  # noqa: ANN001
    """How many confirmation (and other) mails are in each state now."""
    with engine.connect() as conn:
        return Counter(dict(conn.exec_driver_sql(
            f"SELECT state, count(*) FROM {NOTICE} n GROUP BY state").all()))


def before_the_sends(run, project, smtp, monkeypatch, database) -> list[str]:  # noqa: ANN001
    """A campaign started with nothing sent yet (40 confirmed), and 5 confirmation mails
    queued for 5 people imported pending: `mailer run` sends the mails first."""
    configure(monkeypatch, smtp, rate=200, connections=2)
    addresses = people(run, project, 40)
    create(run)
    result = run("campaign", "send", "dec", "--yes", "--max-seconds", "0.001", "--json")
    assert result.exit_code == 0, result.output
    csv = project / "nieuw.csv"
    csv.write_text("email\n" + "".join(f"n{i}@example.nl\n" for i in range(5)))
    result = run("subscribers", "import", str(csv), "--list", "nieuwsbrief", "--consent",
                 "ledenlijst 2026", "--send-confirmation")
    assert result.exit_code == 0, result.output
    assert outbox_states(database) == {"queued": 40} and notice_states(database) == {
        "queued": 5}
    return addresses


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_before_the_sends_stops_mailer_run_after_the_mail_in_flight(
        run, project, smtp, monkeypatch, database, sig):
    """Outside a campaign's send (here: the confirmation mails `mailer run` sends first),
    the signal lets the mail in flight finish, and the run goes no further: no campaign
    starts sending, exit 130 with the one line; `mailer run` then does the rest."""
    addresses = before_the_sends(run, project, smtp, monkeypatch, database)
    smtp.hold_data()
    runner = start("run", "--max-seconds", "600")
    # the confirmation mails go through the campaigns' sender: one per connection, and
    # one more marked for each, waiting for it (put back at the signal: never started)
    wait_for(lambda: alive(runner) and smtp.held == 2
             and notice_states(database)["sending"] == 2 * MARK_AHEAD,
             "2 confirmation mails in flight",
             state=lambda: f"{smtp.held} held, {notice_states(database)}")
    if sig == "SIGINT":
        os.killpg(runner.pid, signal.SIGINT)  # Ctrl-C: the whole process group
    else:
        runner.send_signal(signal.SIGTERM)
    wait_for(lambda: delivered(runner.pid), f"{sig} delivered")
    smtp.release_data()  # the ones in flight get their 250
    _, line = finish(runner)
    # the line counts every kind of mail: the confirmations sent, the 3 others and the
    # campaign's 40 waiting
    assert line.groups() == (sig, "2", "43", None, "mailer run")
    assert len(smtp.messages()) == 2  # the ones in flight, and nothing after them
    assert notice_states(database) == {"sent": 2, "queued": 3}
    assert outbox_states(database) == {"queued": 40}
    result = run("run", "--json")  # the command it gave: the rest, nobody twice
    assert result.exit_code == 0, result.output
    received = Counter(r for m in smtp.messages() for r in m.recipients)
    assert set(received.values()) == {1}
    assert sorted(received) == sorted(addresses + [f"n{i}@example.nl" for i in range(5)])


def test_a_second_ctrl_c_before_the_sends_stops_mailer_run_at_once(
        run, project, smtp, monkeypatch, database):
    before_the_sends(run, project, smtp, monkeypatch, database)
    smtp.hold_data()
    runner = start("run", "--max-seconds", "600")
    # the confirmation mails go through the campaigns' sender: one per connection, and
    # one more marked for each, waiting for it (put back at the signal: never started)
    wait_for(lambda: alive(runner) and smtp.held == 2
             and notice_states(database)["sending"] == 2 * MARK_AHEAD,
             "2 confirmation mails in flight",
             state=lambda: f"{smtp.held} held, {notice_states(database)}")
    os.killpg(runner.pid, signal.SIGINT)
    wait_for(lambda: delivered(runner.pid), "the first SIGINT delivered")
    os.killpg(runner.pid, signal.SIGINT)  # the held mail is never answered
    _, line = finish(runner)
    # the confirmation mails go through the same sender as a campaign: those in flight
    # are cut off and "unknown" (they may have arrived: never sent again), the rest waits
    assert line.groups() == ("SIGINT", "0", "43", "2", "mailer run")
    assert notice_states(database) == {"unknown": 2, "queued": 3}
    assert outbox_states(database) == {"queued": 40}
    smtp.release_data()


def test_sigterm_while_mailer_run_reads_returns_stops_after_the_batch_in_hand(
        run, project, smtp, monkeypatch, database):
    """A big return mailbox holds `mailer run` in its first phase: SIGTERM there stops the
    reading after what it has read (committed, moved), and the run sends nothing."""
    configure(monkeypatch, smtp, rate=200, connections=2)
    people(run, project, 40)
    create(run)
    result = run("campaign", "send", "dec", "--yes", "--max-seconds", "0.001", "--json")
    assert result.exit_code == 0, result.output
    box = project / "returns"
    for part in ("tmp", "new", "cur"):
        (box / part).mkdir(parents=True)
    total = 3000
    for i in range(total):  # replies that are no return: read, recorded, moved
        (box / "new" / f"{1700000000 + i}.M{i}P1.host").write_bytes(
            f"From: lezer{i}@example.org\nTo: nieuws@example.be\nSubject: Re: nieuws\n"
            f"Message-ID: <r{i}@example.org>\n\nDank je!\n".encode())
    monkeypatch.setenv("MAILER_FEEDBACK__SOURCES", f"maildir:{box}")

    def unread() -> int:
        return len(os.listdir(box / "new"))

    runner = start("run", "--max-seconds", "600")
    wait_for(lambda: alive(runner) and unread() < total, "the returns being read",
             state=lambda: f"{unread()} unread")
    runner.send_signal(signal.SIGTERM)
    wait_for(lambda: delivered(runner.pid), "SIGTERM delivered")
    _, line = finish(runner)
    assert line.groups() == ("SIGTERM", "0", "40", None, "mailer run")
    assert 0 < unread() < total  # it stopped reading: the rest waits for the next run
    assert smtp.messages() == [] and outbox_states(database) == {"queued": 40}


class WritesHeld:
    """The test holding the database's writes while it looks (SQLite: the one writer's
    lock, BEGIN IMMEDIATE, waiting for a gap between the other side's transactions;
    PostgreSQL: no row of `table` written, LOCK TABLE); `release()` lets them go."""

    def __init__(self, engine, table: str = "subscriber") -> None:  # noqa: ANN001
        if engine.dialect.name == "sqlite":
            self._sqlite = sqlite3.connect(engine.url.database, timeout=120,
                                           isolation_level=None)
            self._sqlite.execute("BEGIN IMMEDIATE")
        else:
            self._sqlite = None
            self._conn = engine.connect()
            self._conn.exec_driver_sql(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")

    def scalar(self, sql: str) -> int:
        if self._sqlite is not None:
            return self._sqlite.execute(sql).fetchone()[0]
        return self._conn.exec_driver_sql(sql).scalar_one()

    def release(self) -> None:
        if self._sqlite is not None:
            self._sqlite.execute("ROLLBACK")
            self._sqlite.close()
        else:
            self._conn.rollback()
            self._conn.close()


PENDING = "SELECT count(*) FROM subscription WHERE status = 'pending'"


def test_sigterm_during_mailer_runs_purge_stops_it_between_batches(
        run, project, smtp, monkeypatch, database, db_url):
    """The daily purge (3,000 sign-ups never confirmed, in batches of 100 beside a sending
    campaign) stops after the batch in hand, not at its end: exit 130 with the one line,
    the trail says the purge was stopped, and the next `mailer run` does the rest."""
    configure(monkeypatch, smtp, rate=200, connections=2)
    addresses = people(run, project, 40)
    create(run)
    result = run("campaign", "send", "dec", "--yes", "--max-seconds", "0.001", "--json")
    assert result.exit_code == 0, result.output  # sending: the purge goes gently
    total = 3000
    csv = project / "nooit.csv"
    csv.write_text("email\n" + "".join(f"nooit{i}@example.nl\n" for i in range(total)))
    result = run("subscribers", "import", str(csv), "--list", "nieuwsbrief", "--consent",
                 "beurs 2025")
    assert result.exit_code == 0, result.output
    _age(db_url, "subscriber", "created_at", 40, "email LIKE 'nooit%'")
    _age(db_url, "subscription", "created_at", 40, "status = 'pending'")
    runner = start("run", "--max-seconds", "600")
    seen: list[int] = []

    def mid_purge() -> WritesHeld | None:
        """The writes held at a moment some of the purge is done and some is not."""
        alive(runner)
        held = WritesHeld(database)
        seen.append(held.scalar(PENDING))
        if 0 < seen[-1] < total:
            return held
        held.release()
        assert seen[-1] == total, "the purge ended before the test could stop it"
        return None

    held = wait_for(mid_purge, "the purge under way", state=lambda: seen[-3:])
    try:
        runner.send_signal(signal.SIGTERM)
        wait_for(lambda: delivered(runner.pid), "SIGTERM delivered")
    finally:
        held.release()
    _, line = finish(runner)
    assert line.groups() == ("SIGTERM", "0", "40", None, "mailer run")
    left = WritesHeld(database)
    try:
        remaining = left.scalar(PENDING)
    finally:
        left.release()
    assert 0 < remaining < total  # stopped between its batches, each whole
    assert remaining <= seen[-1]
    audit = json.loads(run("audit", "ls", "--action", "gdpr", "--json").stdout)
    assert audit[0]["action"] == "gdpr.purge.stopped"
    assert audit[0]["detail"]["never_confirmed_people"] == total - remaining
    assert smtp.messages() == [] and outbox_states(database) == {"queued": 40}
    result = run("run", "--json")  # the command it gave: the rest of the purge, the send
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["purged"]["never_confirmed_people"] == remaining
    assert outbox_states(database) == {"sent": 40}
    received = Counter(r for m in smtp.messages() for r in m.recipients)
    assert sorted(received) == sorted(addresses) and set(received.values()) == {1}


def waits_for_the_database(engine, pid: int) -> bool:  # noqa: ANN001
    """`pid` holds the run lock and its writes wait for the test's (WritesHeld): on
    PostgreSQL a statement of its waits for a lock; on SQLite (one writer: nothing to see
    from outside) it took the run lock, and cannot write past it."""
    if engine.dialect.name == "sqlite":
        lock = Path(engine.url.database + ".run-lock")
        return lock.exists() and lock.read_text().strip() == str(pid)
    with engine.connect() as conn:
        return bool(conn.exec_driver_sql(
            "SELECT count(*) FROM pg_locks WHERE NOT granted").scalar_one())


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_while_campaign_send_takes_its_snapshot_changes_nothing(
        run, project, smtp, monkeypatch, database, sig):
    """Before the sender starts (the snapshot of 40 people, here held up by the test's
    own write), the signal is the command's already: exit 130 with one line, the
    snapshot rolled back, the campaign still a draft; the command it names sends it."""
    configure(monkeypatch, smtp, rate=200, connections=2)
    addresses = people(run, project, 40)
    create(run)
    held = WritesHeld(database, "delivery")
    try:
        sender = start("campaign", "send", "dec", "--yes")
        wait_for(lambda: alive(sender) and waits_for_the_database(database, sender.pid),
                 "campaign send waiting to write its snapshot")
        if sig == "SIGINT":
            os.killpg(sender.pid, signal.SIGINT)  # Ctrl-C: the whole process group
        else:
            sender.send_signal(signal.SIGTERM)
        wait_for(lambda: delivered(sender.pid), f"{sig} delivered")
    finally:
        held.release()
    out, err = sender.communicate(timeout=180)
    text = err.decode(errors="replace")
    assert sender.returncode == 130, text
    assert "Traceback" not in text and "Aborted" not in text, text
    assert text.strip().splitlines()[-1] == (
        f"Interrupted ({sig}) before sending: nothing sent; `mailer campaign send dec` "
        "starts it again.")
    assert outbox_states(database) == {} and smtp.messages() == []
    assert json.loads(run("campaign", "show", "dec", "--json").stdout)["state"] == "draft"
    result = wait_for(lambda: (r := run("campaign", "send", "dec", "--yes")).exit_code == 0
                      and r, "the command it names to send it",
                      state=lambda: run("campaign", "show", "dec").output)
    assert "40 deliveries queued" in result.output
    received = Counter(r for m in smtp.messages() for r in m.recipients)
    assert sorted(received) == sorted(addresses) and set(received.values()) == {1}

