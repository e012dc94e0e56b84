"""Several senders over one PostgreSQL database (issue 17, points 1, 4 and 6): `mailer
worker` processes against a real SMTP server (tests/support/smtpserver.py) share one
campaign through claims and leases (delivery/claims.py); every recipient exactly once,
a killed worker's share finished by the others, its messages in flight "unknown". On
SQLite one sender at a time, and a second one says so in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from mailer.db import make_engine, session_scope
from mailer.delivery.campaigns import get_campaign
from mailer.delivery.runner import prepare_start
from mailer.delivery.sender import CLAIM_BATCH, MARK_AHEAD
from mailer.project import Project
from tests.support.smtpserver import SmtpServer
from tests.support.waiting import wait_for
from tests.test_delivery import alive, configure, create, mailer, outbox_states, people

POSTGRESQL = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
LEASE = "2"  # seconds: a killed worker's share comes back this soon


@pytest.fixture
def smtp():  # noqa: ANN201
    with SmtpServer() as server:
        yield server


@pytest.fixture
def database(project):  # noqa: ANN001, ANN201
    engine = make_engine(os.environ["MAILER_DATABASE_URL"])
    yield engine
    engine.dispose()


def start(name: str = "dec") -> None:
    """Start the campaign (queue its deliveries) without sending: the workers send."""
    project = Project.load(None)
    try:
        with session_scope(project.engine) as session:
            prepare_start(project, session, get_campaign(session, name))
    finally:
        project.close()


def claimers(engine) -> Counter[int]:  # noqa: ANN001
    """Deliveries in flight ("sending") per live sender's pid."""
    with engine.connect() as conn:
        return Counter(dict(conn.exec_driver_sql(
            "SELECT s.pid, count(*) FROM delivery d JOIN sender s ON s.id = d.claimed_by "
            "WHERE d.state = 'sending' GROUP BY s.pid").all()))


def received(smtp: SmtpServer) -> Counter[str]:
    return Counter(r for m in smtp.messages() for r in m.recipients)


def finish(procs: list[subprocess.Popen[bytes]]) -> list[tuple[bytes, bytes]]:
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), outputs
    return outputs


@POSTGRESQL
def test_three_workers_send_one_campaign_with_every_recipient_exactly_once(
        run, project, smtp, monkeypatch, database):
    """Three `mailer worker` processes, each with messages in flight at once (held at the
    server until all three are), finish one campaign: every recipient once, the campaign
    sent, no claim left; `campaign show` lists the three while they send."""
    configure(monkeypatch, smtp, rate=1000, connections=2)
    monkeypatch.setenv("MAILER_DELIVERY__LEASE_SECONDS", LEASE)
    # more than two workers can hold before a message goes (two claims each, the second
    # read while the first is rendered), so the third has its share to send
    addresses = people(run, project, 5 * CLAIM_BATCH)
    create(run)
    start()
    smtp.hold_data()
    procs = [mailer("worker", "--max-seconds", "300") for _ in range(3)]
    wait_for(lambda: all(alive(p) for p in procs) and len(claimers(database)) == 3
             and smtp.held == 6, "three workers with two messages in flight each",
             state=lambda: f"{smtp.held} held, in flight per pid {claimers(database)}")
    shown = json.loads(run("campaign", "show", "dec", "--json").stdout)
    assert sorted(s["pid"] for s in shown["senders"]) == sorted(p.pid for p in procs)
    text = run("campaign", "show", "dec").output
    assert sorted(int(line.split(" pid ")[1].split()[0]) for line in text.splitlines()
                  if line.strip().startswith("sending: ")) == sorted(p.pid for p in procs)
    smtp.release_data()
    finish(procs)
    got = received(smtp)
    assert sorted(got) == sorted(addresses) and set(got.values()) == {1}
    assert outbox_states(database) == {"sent": len(addresses)}
    assert json.loads(run("campaign", "show", "dec", "--json").stdout)["state"] == "sent"
    with database.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM sender").scalar_one() == 0


@POSTGRESQL
def test_a_killed_worker_s_share_is_sent_by_the_others_after_its_lease(
        run, project, smtp, monkeypatch, database):
    """SIGKILL of one of three workers while each has two messages in flight (and two
    more marked, waiting for its connections): the other two send everything it had
    claimed and not sent, once its lease ran out; its four marked become "unknown"
    (received at most once, never resent); everyone else is received exactly once."""
    configure(monkeypatch, smtp, rate=1000, connections=2)
    monkeypatch.setenv("MAILER_DELIVERY__LEASE_SECONDS", LEASE)
    addresses = people(run, project, 5 * CLAIM_BATCH)  # a share for each of three
    create(run)
    start()
    smtp.hold_data()
    procs = [mailer("worker", "--max-seconds", "300") for _ in range(3)]
    wait_for(lambda: all(alive(p) for p in procs) and smtp.held == 6
             and claimers(database) == {p.pid: 2 * MARK_AHEAD for p in procs},
             "three workers with two messages in flight each, and two more marked",
             state=lambda: f"{smtp.held} held, marked per pid {claimers(database)}")
    victim = procs[0]
    with database.connect() as conn:
        mine = dict(conn.exec_driver_sql(
            "SELECT d.id, d.state FROM delivery d JOIN sender s ON s.id = d.claimed_by "
            "WHERE s.pid = %s", (victim.pid,)).all())
    in_flight = {i for i, state in mine.items() if state == "sending"}
    assert len(in_flight) == 2 * MARK_AHEAD
    assert "queued" in mine.values()  # it had claimed more than it had in flight
    victim.kill()
    victim.wait(timeout=60)
    smtp.release_data()
    finish(procs[1:])
    got = received(smtp)
    states = outbox_states(database)
    assert states == {"sent": len(addresses) - len(in_flight), "unknown": len(in_flight)}
    assert set(got.values()) == {1}  # nobody twice
    with database.connect() as conn:
        unknown = dict(conn.exec_driver_sql(
            "SELECT d.id, p.email FROM delivery d JOIN subscriber p "
            "ON p.id = d.subscriber_id WHERE d.state = 'unknown'").all())
    assert set(unknown) == in_flight  # the killed one's in flight, no other
    assert set(addresses) - set(unknown.values()) <= set(got)  # everyone else received
    assert json.loads(run("campaign", "show", "dec", "--json").stdout)["state"] == "sent"


@POSTGRESQL
def test_a_worker_killed_on_this_machine_is_taken_over_at_once_not_a_lease_later(
        run, project, smtp, monkeypatch, database):
    """The one worker SIGKILLed with messages in flight, its lease ten minutes long: the
    worker started after it on the same machine sees its process gone (same boot, same
    pid namespace), ends its lease and sends everything it had claimed and not sent,
    at once; the killed one's marked become "unknown". A worker that waited for the
    lease would still be waiting when its time budget (60 s) ran out."""
    configure(monkeypatch, smtp, rate=1000, connections=2)
    monkeypatch.setenv("MAILER_DELIVERY__LEASE_SECONDS", "600")
    addresses = people(run, project, 300)
    create(run)
    start()
    smtp.hold_data()
    victim = mailer("worker", "--max-seconds", "300")
    wait_for(lambda: alive(victim) and smtp.held == 2
             and claimers(database) == {victim.pid: 2 * MARK_AHEAD},
             "the worker with two messages in flight, and two more marked",
             state=lambda: f"{smtp.held} held, marked per pid {claimers(database)}")
    with database.connect() as conn:
        in_flight = set(conn.exec_driver_sql(
            "SELECT id FROM delivery WHERE state = 'sending'").scalars())
        claimed = conn.exec_driver_sql(
            "SELECT count(*) FROM delivery WHERE state = 'queued' AND claimed_by IS NOT "
            "NULL").scalar_one()
    assert len(in_flight) == 2 * MARK_AHEAD and claimed > 0  # more claimed than in flight
    victim.kill()
    victim.wait(timeout=60)
    smtp.release_data()
    finish([mailer("worker", "--max-seconds", "60")])
    assert outbox_states(database) == {"sent": len(addresses) - len(in_flight),
                                       "unknown": len(in_flight)}
    with database.connect() as conn:
        assert set(conn.exec_driver_sql(
            "SELECT id FROM delivery WHERE state = 'unknown'").scalars()) == in_flight
        assert conn.exec_driver_sql("SELECT count(*) FROM sender").scalar_one() == 0
    got = received(smtp)
    assert set(got.values()) == {1} and len(got) >= len(addresses) - len(in_flight)
    assert json.loads(run("campaign", "show", "dec", "--json").stdout)["state"] == "sent"


@POSTGRESQL
def test_a_worker_whose_database_goes_away_mid_send_ends_at_once_with_one_line(
        run, project, smtp, monkeypatch, database):
    """The database ends the worker's connections while it has messages in flight (a
    failover, an administrator): the status writer cannot record their outcomes, and
    the worker ends, exit 1 with one line naming the database, instead of its producer
    waiting for workers that were gone (it did: past --max-seconds, for ever). What it
    had in flight stays "sending", for the next sender to settle as unknown."""
    configure(monkeypatch, smtp, rate=1000, connections=2)
    people(run, project, 300)
    create(run)
    start()
    smtp.hold_data()
    proc = mailer("worker", "--max-seconds", "600")
    try:
        wait_for(lambda: alive(proc) and smtp.held == 2
                 and sum(claimers(database).values()) == 2 * MARK_AHEAD,
                 "the worker with two messages in flight, and two more marked",
                 state=lambda: f"{smtp.held} held, marked per pid {claimers(database)}")
        with database.connect() as conn:
            ended = conn.exec_driver_sql(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM "
                "pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")\
                .scalar_one()
        assert ended >= 1
        smtp.release_data()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = err.decode()
    assert proc.returncode == 1, text
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1, text
    assert "database" in text.lower(), text
    assert outbox_states(database)["sending"] >= 1  # unknown once another sender looks


@POSTGRESQL
def test_sigterm_lets_a_worker_finish_its_messages_in_flight_and_hand_back_its_claims(
        run, project, smtp, monkeypatch, database):
    """SIGTERM to a worker with messages in flight: they finish (sent), its other claims
    go back at once (no lease to wait for), exit 130 with the one line."""
    configure(monkeypatch, smtp, rate=1000, connections=2)
    people(run, project, 300)
    create(run)
    start()
    smtp.hold_data()
    proc = mailer("worker")
    wait_for(lambda: alive(proc) and smtp.held == 2
             and sum(claimers(database).values()) == 2 * MARK_AHEAD,
             "two messages in flight, two more marked", state=lambda: f"{smtp.held} held")
    proc.send_signal(signal.SIGTERM)
    smtp.release_data()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = err.decode().strip().splitlines()
    assert lines[0].startswith("Interrupted (SIGTERM): ") and lines[0].endswith(
        "`mailer worker` continues."), lines
    states = outbox_states(database)
    assert states["sent"] >= 2 and states["sending"] == 0
    with database.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM delivery WHERE claimed_by IS NOT "
                                    "NULL AND state = 'queued'").scalar_one() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM sender").scalar_one() == 0


@SQLITE
def test_a_second_worker_on_sqlite_says_in_one_line_that_one_sender_works_at_a_time(
        run, project, smtp, monkeypatch):
    configure(monkeypatch, smtp, rate=1000, connections=1)
    people(run, project, 20)
    create(run)
    start()
    smtp.hold_data()
    first = mailer("worker")
    wait_for(lambda: alive(first) and smtp.held == 1, "the first worker sending")
    second = subprocess.run([*first.args], capture_output=True, timeout=120)
    assert second.returncode == 1
    lines = second.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0] == (
        f"Error: Another mailer process (pid {first.pid}) is sending for this project. On "
        "SQLite one sender works at a time; several workers need PostgreSQL "
        "(docs/scale-out.md)."), lines
    smtp.release_data()
    finish([first])
    assert len(received(smtp)) == 20



@POSTGRESQL
def test_a_worker_stalled_past_its_lease_sends_nothing_new_and_nobody_twice(
        run, project, smtp, monkeypatch, database):
    """SIGSTOP of one of two workers with messages in flight (a frozen machine) for longer
    than its lease: the other settles its four marked (two in flight, two waiting for
    a connection) as unknown and sends the rest of its share. Woken (SIGCONT), the
    stalled one records the replies it then reads (its two in flight had arrived:
    sent), finds its lease gone and starts nothing more, not even the two it had marked
    ahead (they stay unknown): nobody twice."""
    configure(monkeypatch, smtp, rate=1000, connections=2)
    monkeypatch.setenv("MAILER_DELIVERY__LEASE_SECONDS", LEASE)
    addresses = people(run, project, 3 * CLAIM_BATCH)  # a share for each of two
    create(run)
    start()
    smtp.hold_data()
    procs = [mailer("worker", "--max-seconds", "300") for _ in range(2)]
    wait_for(lambda: all(alive(p) for p in procs) and smtp.held == 4
             and claimers(database) == {p.pid: 2 * MARK_AHEAD for p in procs},
             "two workers with two messages in flight each, and two more marked",
             state=lambda: f"{smtp.held} held, marked per pid {claimers(database)}")
    stalled, other = procs
    with database.connect() as conn:
        in_flight = dict(conn.exec_driver_sql(
            "SELECT d.id, p.email FROM delivery d JOIN sender s ON s.id = d.claimed_by "
            "JOIN subscriber p ON p.id = d.subscriber_id "
            "WHERE s.pid = %s AND d.state = 'sending'", (stalled.pid,)).all())
    assert len(in_flight) == 2 * MARK_AHEAD
    stalled.send_signal(signal.SIGSTOP)
    try:
        def settled() -> bool:
            with database.connect() as conn:
                return set(conn.exec_driver_sql(
                    "SELECT id FROM delivery WHERE state = 'unknown'").scalars()) == \
                    set(in_flight)
        wait_for(settled, "the stalled worker's four marked settled as unknown")
        smtp.release_data()
        finish([other])
    finally:
        stalled.send_signal(signal.SIGCONT)
    (_, err), = finish([stalled])
    assert b"lease ran out" in err, err
    got = received(smtp)
    assert set(got.values()) == {1}
    states = outbox_states(database)
    # the two in flight had arrived: their 250s
    assert states == {"sent": len(addresses) - 2, "unknown": 2}
    with database.connect() as conn:
        unknown = set(conn.exec_driver_sql(
            "SELECT id FROM delivery WHERE state = 'unknown'").scalars())
    assert unknown < set(in_flight)  # the two marked ahead, never started
    assert sorted(got) == sorted(set(addresses) - {in_flight[i] for i in unknown})


@POSTGRESQL
def test_mailer_run_that_finds_the_start_lock_taken_only_sends(run, project, smtp,
                                                               monkeypatch, database):
    """Another process starting campaigns (the start lock held, here by the test): a
    `mailer run` on PostgreSQL starts nothing, and still sends what is sending."""
    import hashlib

    configure(monkeypatch, smtp, rate=1000, connections=2)
    addresses = people(run, project, 20)
    create(run, "now")
    start("now")
    create(run, "later")
    assert run("campaign", "schedule", "later", "--at", "2020-01-01 09:00",
               "--yes").exit_code == 0
    key = int.from_bytes(hashlib.sha256(b"mailer run lock").digest()[:8], "big",
                         signed=True)
    with database.connect() as holder:
        assert holder.exec_driver_sql("SELECT pg_try_advisory_lock(%s)", (key,)).scalar()
        result = run("run", "--json")
        holder.exec_driver_sql("SELECT pg_advisory_unlock(%s)", (key,))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["started"] == [] and summary["finished"] == ["now"]
    assert sorted(received(smtp)) == sorted(addresses)
    assert json.loads(run("campaign", "show", "later", "--json").stdout)["state"] == \
        "scheduled"


@POSTGRESQL
def test_a_vacuum_that_holds_the_outbox_does_not_hold_up_a_start(run, project,
                                                                 database):
    """A vacuum's lock on the outbox (one against wraparound does not yield) does not
    hold a start up: it takes no lock a vacuum's conflicts with (a start analyzed the
    outbox once, and waited at most 2 s for that lock; claims no longer need it)."""
    people(run, project, 40)
    create(run)
    with database.connect() as holder, ThreadPoolExecutor(max_workers=1) as pool:
        holder.exec_driver_sql("LOCK TABLE delivery IN SHARE UPDATE EXCLUSIVE MODE")
        started = pool.submit(start)
        try:
            started.result(timeout=60)  # held up, it would wait for the holder
        finally:
            holder.rollback()
    assert outbox_states(database) == {"queued": 40}
    assert json.loads(run("campaign", "show", "dec", "--json").stdout)["state"] == "sending"
