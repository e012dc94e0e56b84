"""One rate for all senders (issue 17, point 2): on PostgreSQL the rate limits hold for
every sender of the database together (mailer/delivery/sharedrate.py), measured at a real
SMTP server (tests/support/smtpserver.py) with three sender processes
(tests/support/paced.py) claiming their turns from a real PostgreSQL; on SQLite the
runner keeps the in-process limiter. The costs and the accuracy with one and three
processes are bench/pacing_bench.py --shared's, in docs/performance.md."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailer.db import make_engine
from mailer.delivery.ratelimit import RateLimiter
from mailer.delivery.runner import limiter_for
from mailer.delivery.sender import CLAIM_BATCH
from mailer.delivery.sharedrate import SharedRateLimiter
from mailer.project import Project
from tests.support.pgserver import PgServer
from tests.support.smtpserver import SmtpServer
from tests.support.waiting import wait_for
from tests.test_delivery import alive, configure, create, mailer, people
from tests.test_workers import claimers, finish, start

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def pg_url(pg_server: PgServer, pg_template: str) -> Iterator[str]:
    """A freshly migrated PostgreSQL database (the shared limiter has no SQLite side)."""
    name = "t_" + uuid.uuid4().hex[:16]
    yield pg_server.create_database(name, template=pg_template)
    pg_server.drop_database(name)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


def senders(url: str, smtp: SmtpServer, tags: str, **options: object) -> list[dict]:
    """Start one tests/support/paced.py process per tag, let them go together once all
    are ready, and return what each reports."""
    args = [f"--{k.replace('_', '-')}={v}" for k, v in options.items() if v is not None]
    procs = [subprocess.Popen([sys.executable, "-m", "tests.support.paced", "--url", url,
                               "--port", str(smtp.port), "--tag", tag, *args],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for tag in tags]
    try:
        for proc in procs:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line.strip() == "ready", proc.stderr.read()  # type: ignore[union-attr]
        for proc in procs:
            proc.stdin.write("go\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
        reports = []
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            reports.append(json.loads(out))
        return reports
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def fitted_rate(times: list[float]) -> float:
    """Messages a second: the least-squares slope of the arrival count over time, which a
    late first or last message moves far less than (n - 1) / span does."""
    times = sorted(times)
    n = len(times)
    mean_t, mean_i = sum(times) / n, (n - 1) / 2
    cov = sum((t - mean_t) * (i - mean_i) for i, t in enumerate(times))
    return cov / sum((t - mean_t) ** 2 for t in times)


def test_three_senders_share_one_rate_measured_at_the_server(pg_url, smtp):
    """Three processes, 40 messages each at a shared 20 a second (burst 20): 120 messages
    in 6 seconds at the server, 20 a second within 2 % over the span in which all three
    send (each alone would go as fast as the rate lets it: without the sharing, 60 a
    second)."""
    reports = senders(pg_url, smtp, "abc", rate=20, burst=20, count=40, connections=4)
    assert [r["sent"] for r in reports] == [40, 40, 40]
    assert [r["quota"] for r in reports] == [None, None, None]
    received = smtp.messages()
    assert Counter(r for m in received for r in m.recipients) == Counter(
        f"{tag}-{i}@example.org" for tag in "abc" for i in range(40))
    by_sender = {tag: [m.at for m in received if m.envelope_from == f"{tag}@sender.example"]
                 for tag in "abc"}
    start = max(min(times) for times in by_sender.values())
    end = min(max(times) for times in by_sender.values())
    together = [m.at for m in received if start <= m.at <= end]
    assert len(together) >= 90  # all three were sending for most of the run
    assert fitted_rate(together) == pytest.approx(20, rel=0.02)
    assert fitted_rate([m.at for m in received]) == pytest.approx(20, rel=0.02)


def test_a_quota_reached_by_three_senders_stops_them_all(pg_url, smtp):
    """An hourly quota of 30 and three processes that would send 20 each, as fast as they
    can: 30 arrive, every process stops on the quota, and a process started afterwards
    (the counts are rows, not memory) sends nothing."""
    reports = senders(pg_url, smtp, "abc", hourly=30, count=20, connections=4)
    assert sum(r["sent"] for r in reports) == 30
    assert [r["quota"] for r in reports] == ["hourly"] * 3
    assert len(smtp.messages()) == 30
    assert len({r for m in smtp.messages() for r in m.recipients}) == 30
    [late] = senders(pg_url, smtp, "d", hourly=30, count=5, connections=1)
    assert (late["sent"], late["quota"]) == (0, "hourly")
    assert len(smtp.messages()) == 30


def test_slots_a_sender_took_ahead_and_did_not_use_go_back_to_the_quota(pg_url, smtp):
    """An hourly quota of 5. A sender of 2 messages through one connection claims 1 slot,
    then 2 ahead (it used all it took), sends 2 and stops holding one: it gives that one
    back when it closes, so the next sender sends the other 3, not 2."""
    [first] = senders(pg_url, smtp, "a", rate=50, hourly=5, count=2, connections=1)
    assert (first["sent"], first["claims"]) == (2, 2)
    [second] = senders(pg_url, smtp, "b", rate=50, hourly=5, count=10, connections=1)
    assert (second["sent"], second["quota"]) == (3, "hourly")
    assert len(smtp.messages()) == 5


def test_a_limited_domain_keeps_its_own_rate_across_senders(pg_url, smtp):
    """Every second message to slow.example, which may have 4 a second (burst 4: evenly),
    the others at 40 a second in all: the three senders' 24 messages to slow.example
    together take at least the 5.5 s the limiter's bound allows at the server (over any
    L seconds at most rate * L + (burst - rate) + 2: a message claimed late keeps its
    place by up to an interval), not the 0.6 s of their share of the global rate. (The
    lanes that keep them from holding up the others are the engine's sender's,
    tests/test_pacing.py.)"""
    reports = senders(pg_url, smtp, "abc", rate=40, count=16, connections=3,
                      slow="slow.example", slow_rate=4, slow_burst=4, every=2)
    assert [r["sent"] for r in reports] == [16, 16, 16]
    received = smtp.messages()
    slow = sorted(m.at for m in received if m.recipients[0].endswith("@slow.example"))
    fast = sorted(m.at for m in received if not m.recipients[0].endswith("@slow.example"))
    assert len(slow) == len(fast) == 24
    assert slow[-1] - slow[0] >= (24 - 2) / 4 * 0.98  # 2 %: the way to the server


def test_the_runner_shares_the_rate_on_postgresql_only(project, monkeypatch):
    """`limiter_for` (mailer run, campaign send, mailer worker, the web app's sender): the
    shared limiter on PostgreSQL, the in-process one on SQLite (one sender there); with
    no limit at all the in-process one everywhere (nothing to share, no round trip a
    message)."""
    for rate, shared in (("10", project_is_postgresql()), ("0", False)):
        monkeypatch.setenv("MAILER_DELIVERY__RATE", rate)
        loaded = Project.load()
        try:
            limiter = limiter_for(loaded)
            assert isinstance(limiter, RateLimiter)
            assert isinstance(limiter, SharedRateLimiter) is shared, rate
            if shared:
                limiter.close()
        finally:
            loaded.close()


def project_is_postgresql() -> bool:
    return os.environ["MAILER_DATABASE_URL"].startswith("postgresql")


def test_the_upgrade_counts_the_last_hours_sends_towards_the_quota(run, project, smtp,
                                                                   monkeypatch, db_url):
    """Five messages sent, then (PostgreSQL) the migration that brought the shared counts
    undone and done again: it counts the five from the delivery rows, as the in-process
    limiter (SQLite) counts them from its history. With `hourly = 7` the next campaign,
    to the five and five more, sends two and stops on the quota."""
    from alembic import command

    from mailer.db import _alembic_config

    configure(monkeypatch, smtp, hourly=7)
    people(run, project, 5)
    create(run, "first")
    first = run("campaign", "send", "first", "--yes")
    assert first.exit_code == 0 and len(smtp.messages()) == 5, first.output
    gc.collect()  # the send's limiter closed (gives back what it held), as at its exit
    engine = make_engine(db_url)
    try:
        if engine.dialect.name == "postgresql":
            config = _alembic_config(engine)
            command.downgrade(config, "0014")
            command.upgrade(config, "head")
            with engine.connect() as conn:
                assert dict(conn.exec_driver_sql(
                    "SELECT key, total FROM rate_state").all()) == {
                    "rate": 0, "hourly": 5, "daily": 5}
    finally:
        engine.dispose()
    people(run, project, 5, start=5)
    create(run, "second")
    result = run("campaign", "send", "second", "--yes", "--json")
    assert len(smtp.messages()) == 7, result.output
    assert "quota" in result.output


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_three_workers_sending_one_campaign_keep_one_rate_at_the_server(
        run, project, smtp, monkeypatch):
    """End to end: three `mailer worker` processes share one campaign of 1,280 (claims,
    tests/test_workers.py) at `rate = 90` (burst 99), held at the server until each has
    four messages in flight: from then on the server receives 90 a second in all, within
    2 % (each alone would send 90: without the shared limiter, 270). (Its place
    is tests/test_workers.py, beside the other worker tests, once both have settled.)"""
    configure(monkeypatch, smtp, rate=90, connections=4)  # burst 99, the default
    # more than two workers can hold before a message goes (two claims each)
    addresses = people(run, project, 5 * CLAIM_BATCH)
    create(run)
    start()
    smtp.hold_data()  # until all three have messages in flight (tests/test_workers.py)
    procs = [mailer("worker", "--max-seconds", "300", "--json") for _ in range(3)]
    database = make_engine(os.environ["MAILER_DATABASE_URL"])
    try:
        wait_for(lambda: all(alive(p) for p in procs) and len(claimers(database)) == 3
                 and smtp.held == 12, "three workers with four messages in flight each",
                 state=lambda: f"{smtp.held} held, in flight per pid {claimers(database)}")
    finally:
        database.dispose()
    released = time.monotonic()
    smtp.release_data()
    outputs = finish(procs)
    shares = [json.loads(out)["campaigns"]["dec"]["sent"] for out, _ in outputs]
    assert sum(shares) == len(addresses) and min(shares) > 0, shares
    got = Counter(r for m in smtp.messages() for r in m.recipients)
    assert sorted(got) == sorted(addresses) and set(got.values()) == {1}
    times = sorted(m.at for m in smtp.messages())
    assert fitted_rate([t for t in times if t >= released + 1]) == pytest.approx(90, rel=0.02)

