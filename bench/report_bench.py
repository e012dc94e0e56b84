"""Benchmark: `mailer campaign report` on a campaign of 1,000,000 deliveries (issue 16).

A SQLite project with N people (default 1,000,000) and one sent campaign to all of them,
shaped like a real send: deliveries in every state (0.5 % bounced at RCPT, 0.2 % failed,
0.3 % deferred, 0.2 % skipped, a few unknown, the rest sent), 2 % retried, sends spread
over the run at 50 a second; the people at Gmail, Hotmail, Outlook, Yahoo, Belgian
providers and 500 small domains; what came back (hard and soft bounces by reason and
domain, rejections of our sending, complaints, delays, auto-replies: about 2 % of the
deliveries), and the unsubscribes after the start by every channel, beside each person's
consent of when they joined. With --earlier K, K earlier campaigns to the same people
(the report then picks its million out of (K+1) million deliveries).

The rows go in with INSERT ... SELECT over a recursive counter in SQL (no Python row
loop), in one transaction per table, secondary indexes built afterwards; the build is kept
in --keep DIR and reused by later runs with the same sizes (--rebuild to make it anew).

Measured, as whole processes in the project (as a user runs them), --repeat times each:

    python -m mailer campaign report bench --json
    python -m mailer campaign report bench --out DIR/report.html

with the wall seconds, the CPU seconds (user + system, from wait4) and the peak resident
memory of the process, and as the baseline `python -m mailer --help` (the start-up every
command pays). Target: under 5 s and flat memory (the peak the same at 100,000 and at
1,000,000 deliveries). The load average is printed with every figure.

    .venv/bin/python bench/report_bench.py --keep /tmp/mailer-report-bench
    .venv/bin/python bench/report_bench.py --people 100000 --keep /tmp/mailer-report-100k
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = 1  # bump when the generated database changes: older builds are rebuilt
SLUG = "bench"
RATE = 50  # messages a second: the sends are spread as a paced send spreads them
DAY_US = 86_400 * 1_000_000

# The recipient's domain by a hash of the id (so it does not follow the state, which goes
# by id % 1000): big providers first, then 500 small domains.
_H = "(i * 7919 % 10007 % 100)"
DOMAIN = (f"CASE WHEN {_H} < 35 THEN 'gmail.com' WHEN {_H} < 47 THEN 'hotmail.com' "
          f"WHEN {_H} < 55 THEN 'outlook.com' WHEN {_H} < 60 THEN 'yahoo.com' "
          f"WHEN {_H} < 68 THEN 'telenet.be' WHEN {_H} < 74 THEN 'skynet.be' "
          f"WHEN {_H} < 78 THEN 'proximus.be' "
          "ELSE 'domain' || (i % 500) || '.example.be' END")
# A delivery's state by id % 1000 (the same person is in the same state in every campaign:
# the figures do not care).
STATE = ("CASE WHEN i % 1000 < 5 THEN 'bounced' WHEN i % 1000 < 7 THEN 'failed' "
         "WHEN i % 1000 < 10 THEN 'deferred' WHEN i % 1000 < 12 THEN 'skipped' "
         "WHEN i % 10000 = 12 THEN 'unknown' ELSE 'sent' END")
REPLY = ("CASE WHEN i % 1000 < 3 THEN '550 5.1.1 <p' || i || '@' || d || '>: "
         "Recipient address rejected: User unknown' "
         "WHEN i % 1000 < 5 THEN '554 5.7.1 Service unavailable; Client host blocked' "
         "WHEN i % 1000 < 7 THEN '421 4.7.0 Try again later, closing connection' "
         "WHEN i % 1000 < 10 THEN '451 4.7.1 Greylisted, please try again' "
         "WHEN i % 1000 < 12 THEN 'unsubscribed' WHEN i % 10000 = 12 THEN NULL "
         "ELSE '250 2.0.0 Ok: queued as ' || upper(hex(randomblob(5))) END")
# What came back, by id % 1000 of the delivered ones (about 2 %).
RETURNS = [  # (condition, kind, reason, hard, sender_side, status, code, diagnostic)
    ("i % 1000 < 3", "bounce", "userunknown", 1, 0, "5.1.1", 550,
     "smtp; 550 5.1.1 <***@' || d || '>: User unknown"),
    ("i % 1000 BETWEEN 20 AND 24", "bounce", "mailboxfull", 0, 0, "4.2.2", 452,
     "smtp; 452 4.2.2 <***@' || d || '>: Mailbox full"),
    ("i % 1000 BETWEEN 25 AND 26", "bounce", "hostunknown", 1, 0, "5.4.4", 550,
     "smtp; 550 5.4.4 Host or domain name not found"),
    ("i % 1000 = 27", "bounce", "blocked", 0, 1, "5.7.1", 554,
     "smtp; 554 5.7.1 Client host blocked using zen.spamhaus.org"),
    ("i % 2000 = 28", "complaint", "feedback", 0, 0, None, None, None),
    ("i % 1000 BETWEEN 30 AND 31", "delayed", "expired", 0, 0, "4.4.7", None,
     "smtp; 451 4.4.7 Delivery delayed"),
    ("i % 1000 BETWEEN 40 AND 49", "auto-reply", "vacation", 0, 0, None, None, None),
]
UNSUBSCRIBES = [  # (condition, source): the channels the report tells apart
    ("i % 1000 = 50", "one-click link"), ("i % 2000 = 51", "preferences page: nieuwsbrief"),
    ("i % 4000 = 52", "mail (unsub+ address)"), ("i % 2000 = 28", "complaint (marked as spam)"),
]


def counter(n: int) -> str:
    """The numbers 1..n as a recursive CTE (SQLite has no generate_series built in)."""
    return f"WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {n}) "


def fill(db: Path, n: int, earlier: int, now: int) -> dict[str, int]:
    """People, their consent, the campaigns, their deliveries, returns and unsubscribes."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")  # a bench file: no journal while filling
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")  # the index builds sort in memory
    conn.execute("PRAGMA temp_store=MEMORY")
    news = conn.execute("SELECT id FROM mailing_list WHERE slug = 'nieuwsbrief'").fetchone()[0]
    # Secondary indexes go and come back when the rows are in (a sort instead of a B-tree
    # insert per row); the primary and UNIQUE keys stay (rows come in key order).
    indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND "
                           "sql IS NOT NULL AND tbl_name IN ('delivery', 'consent_event', "
                           "'subscription', 'feedback_event')").fetchall()
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    step = time.perf_counter()

    def done(what: str) -> None:
        nonlocal step
        print(f"  {what:<44}{time.perf_counter() - step:>7.1f} s", flush=True)
        step = time.perf_counter()

    joined = now - 2 * 365 * DAY_US
    conn.execute("BEGIN")
    conn.execute(counter(n) + "INSERT INTO subscriber (id, email, first_name, language, "
                 f"attributes, status, created_at, updated_at) SELECT i, 'p' || i || '@' || "
                 f"{DOMAIN}, 'Persoon', 'nl', '{{}}', 'active', ?1, ?1 FROM c", (joined,))
    conn.execute("INSERT INTO subscription (subscriber_id, list_id, status, source, "
                 "created_at, updated_at, confirmed_at) SELECT id, ?1, 'confirmed', "
                 "'import', ?2, ?2, ?2 FROM subscriber ORDER BY id", (news, joined))
    conn.execute("INSERT INTO consent_event (subscriber_id, list_id, action, at, source, "
                 "consent, confirmed) SELECT id, ?1, 'import', ?2, 'import:leden.csv', "
                 "'Ja, ik wil de nieuwsbrief.', 1 FROM subscriber ORDER BY id", (news, joined))
    conn.execute("COMMIT")
    done(f"{n:,} people, memberships, consent")

    # The person's number i, their state and their domain d, for every row made below.
    people = (f"SELECT id AS i, {STATE.replace('i %', 'id %')} AS s, "
              "substr(email, instr(email, '@') + 1) AS d FROM subscriber")
    for k in range(earlier + 1):  # the earlier ones a month apart, the last a day ago
        started = now - DAY_US - (earlier - k) * 30 * DAY_US
        slug = SLUG if k == earlier else f"{SLUG}-{k + 1}"
        conn.execute("BEGIN")
        campaign = conn.execute(
            "INSERT INTO campaign (slug, title, template, subject, list_ids, segment, state, "
            "started_at, finished_at, created_at, updated_at) VALUES (?, 'Nieuwsbrief', "
            "'templates/newsletter.html.j2', 'Ons nieuws', ?, '[]', 'sent', ?, ?, ?, ?) "
            "RETURNING id", (slug, json.dumps([news]), started,
                             started + n * 1_000_000 // RATE, started - DAY_US,
                             started)).fetchone()[0]
        # sent_at: the i-th person's turn at RATE a second; none for the ones never sent.
        conn.execute(
            "INSERT INTO delivery (campaign_id, subscriber_id, list_id, state, attempts, "
            "next_attempt_at, last_reply, message_id, queued_at, sent_at, updated_at) "
            "SELECT ?1, i, ?2, s, CASE WHEN s = 'skipped' THEN 0 WHEN i % 50 = 1 OR "
            "s IN ('failed', 'deferred') THEN 2 + i % 3 ELSE 1 END, "
            "CASE WHEN s = 'deferred' THEN ?3 + ?4 * 1000000 END, "
            f"{REPLY}, lower(hex(randomblob(16))) || '@example.be', ?3, "
            "CASE WHEN s IN ('sent', 'bounced') THEN ?3 + i * (1000000 / ?5) END, ?3 "
            f"FROM ({people}) ORDER BY i", (campaign, news, started, n // RATE, RATE))
        first = conn.execute("SELECT min(id) FROM delivery WHERE campaign_id = ?",
                             (campaign,)).fetchone()[0]
        for condition, kind, reason, hard, side, status, code, diagnostic in RETURNS:
            quoted = f"'{diagnostic}'" if diagnostic else "NULL"  # an SQL expression of d
            conn.execute(
                "INSERT INTO feedback_event (message_key, seq, at, source, kind, reason, "
                "hard, sender_side, status, reply_code, diagnostic, domain, attributed_by, "
                "subscriber_id, campaign_id, list_id, delivery_id, action) "
                "SELECT lower(hex(randomblob(16))), 0, ?1 + i * (1000000 / ?2) + 600000000, "
                "'imap', ?3, ?4, ?5, ?6, ?7, ?8, "
                f"{quoted}, "
                "d, 'token', i, ?9, ?10, ?11 + i - 1, 'counted' "
                f"FROM ({people} WHERE {condition.replace('i %', 'id %')}) ORDER BY i",
                (started, RATE, kind, reason, hard, side, status, code, campaign, news,
                 first))
        conn.execute("COMMIT")
        done(f"campaign {slug}: deliveries and returns")
    conn.execute("BEGIN")
    for condition, source in UNSUBSCRIBES:
        conn.execute("INSERT INTO consent_event (subscriber_id, list_id, action, at, source, "
                     "confirmed) SELECT id, ?1, 'unsubscribe', ?2 + id * (1000000 / ?3) + "
                     f"3600000000, ?4, 0 FROM subscriber WHERE {condition.replace('i %', 'id %')}",
                     (news, started, RATE, source))
    conn.execute("COMMIT")
    done("unsubscribes after the start")
    for _, sql in indexes:
        conn.execute(sql)
    done("secondary indexes")
    conn.execute("PRAGMA journal_mode=WAL")
    counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in (
        "subscriber", "consent_event", "campaign", "delivery", "feedback_event")}
    conn.close()
    return counts


def build(keep: Path, n: int, earlier: int) -> dict[str, Any]:
    """The project and its filled database in `keep`, made anew."""
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True)
    project = keep / "project"
    env = project_env(keep)
    mailer = [sys.executable, "-m", "mailer"]
    subprocess.run([*mailer, "init", str(project)], check=True, env=env, capture_output=True)
    run = {"cwd": project, "env": env, "check": True, "capture_output": True}
    subprocess.run([*mailer, "db", "upgrade"], **run)
    subprocess.run([*mailer, "lists", "sync"], **run)
    now = int((datetime.now(UTC) - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
    print(f"filling {keep / 'report.db'} ({n:,} people, {earlier + 1} campaigns):", flush=True)
    started = time.perf_counter()
    counts = fill(keep / "report.db", n, earlier, now)
    meta = {"layout": LAYOUT, "people": n, "earlier": earlier,
            "seconds": round(time.perf_counter() - started),
            "bytes": (keep / "report.db").stat().st_size, "counts": counts}
    (keep / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def project_env(keep: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["MAILER_DATABASE_URL"] = f"sqlite:///{keep / 'report.db'}"
    env["MAILER_DELIVERY__RATE"] = str(RATE)
    return env


def timed(cmd: list[str], **kwargs: Any) -> tuple[float, float, float, str]:
    """Run `cmd`: wall seconds, CPU seconds (user + system, from wait4: on a busy machine
    the wall time is mostly waiting for a core, the CPU time is the work), peak resident
    MB, and its standard output."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, **kwargs)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{' '.join(cmd[2:])} failed:\n{err.read().decode()[-2000:]}")
        return (elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                out.read().decode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--people", type=int, default=1_000_000,
                        help="people, and deliveries of the reported campaign (1,000,000)")
    parser.add_argument("--earlier", type=int, default=1,
                        help="earlier campaigns to the same people (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (default 3)")
    parser.add_argument("--keep", type=Path, help="build here, and reuse the build later")
    parser.add_argument("--rebuild", action="store_true", help="fill --keep anew")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="report-bench-") as tmp:
        keep = args.keep or Path(tmp) / "build"
        meta_file = keep / "meta.json"
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        if args.build_only:
            build(keep, args.people, args.earlier)
            return
        if args.rebuild or {k: meta.get(k) for k in ("layout", "people", "earlier")} != {
                "layout": LAYOUT, "people": args.people, "earlier": args.earlier}:
            # In a process of its own: a child's peak memory (ru_maxrss) starts from its
            # parent's at fork, and filling takes a large SQLite cache.
            subprocess.run([sys.executable, __file__, "--build-only", "--keep", str(keep),
                            "--people", str(args.people), "--earlier", str(args.earlier)],
                           check=True)
            meta = json.loads(meta_file.read_text())
        env = project_env(keep)
        mailer = [sys.executable, "-m", "mailer"]
        # a build from before a later migration: brought up to date as a user would
        subprocess.run([*mailer, "db", "upgrade"], cwd=keep / "project", env=env, check=True,
                       capture_output=True)
        print(f"database: {meta['bytes'] / 2**20:,.0f} MB, {meta['counts']} "
              f"(built in {meta['seconds']} s)")
        commands = {"--help": [*mailer, "--help"],
                    "report --json": [*mailer, "campaign", "report", SLUG, "--json"],
                    "report --out": [*mailer, "campaign", "report", SLUG, "--out",
                                     str(Path(tmp) / "report.html")]}
        print(f"{'command':<16}{'load':>6}{'wall s':>9}{'cpu s':>8}{'peak MB':>9}")
        results: dict[str, list[tuple[float, float, float, float]]] = {}
        for _ in range(args.repeat):
            for name, cmd in commands.items():
                load = os.getloadavg()[0]
                wall, cpu, peak, out = timed(cmd, cwd=keep / "project", env=env)
                if name == "report --json":
                    figures = json.loads(out)
                    assert figures["deliveries"] == args.people, figures["deliveries"]
                results.setdefault(name, []).append((load, wall, cpu, peak))
                print(f"{name:<16}{load:>6.1f}{wall:>9.2f}{cpu:>8.2f}{peak:>9.0f}", flush=True)
        print("medians:")
        for name, rows in results.items():
            load, wall, cpu, peak = (statistics.median(c) for c in zip(*rows, strict=True))
            print(f"{name:<16}{load:>6.1f}{wall:>9.2f}{cpu:>8.2f}{peak:>9.0f}")


if __name__ == "__main__":
    main()
