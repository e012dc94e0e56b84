"""Benchmark: `mailer run` finding and queueing the due steps of a drip sequence (issue 15).

A SQLite project with a list of N people (default 1,000,000), all confirmed, all in the
five-step sequence "welkom" (0m, 3d, 10d, 17d, 24d), spread over its steps: a sixth done
with it, the others waiting for step 1 to 5, each with the deliveries of the steps they
had (about 1.7 mails a person, all sent). --due of them (default 10,000; every
N/due-th person, over all five steps) are due now; everyone else's next step is due
from a day to a week later.

Measured, as whole processes in the project (as cron runs them), --repeat times each:

  due    `python -m mailer run --json --max-seconds 0.001` with the --due steps due: the
         run queues each into its step's outbox and moves the person on (checked: the
         JSON's steps.queued equals --due), then its senders meet the time limit and send
         nothing (what is timed is finding and queueing, not sending). The same state is
         made again before each repeat (the queued deliveries deleted, the people put back).
  idle   `python -m mailer run --json` with nothing due: the run cache's fast path
         (mailer/runcache.py, delivery/due.py's queries on the driver), which asks the
         index on sequence_progress.next_at for one due row.

with the wall seconds, the CPU seconds (user + system) and the peak resident memory of
the process, both from wait4, and the load average. The query plans of the due query
(automation/sequences._due_query) and of the idle check are printed.
Targets: due under 5 s, idle under 0.5 s.

    .venv/bin/python bench/sequence_bench.py --keep /tmp/mailer-sequence-bench
    .venv/bin/python bench/sequence_bench.py --people 100000 --due 1000 --repeat 1

The processes import `mailer` as this interpreter does: to measure a commit apart from a
working tree others are editing, unpack it (`git archive COMMIT | tar -x -C DIR`) and
run DIR/bench/sequence_bench.py with PYTHONPATH=DIR.

The rows go in with INSERT ... SELECT over a recursive counter in SQL (no Python row
loop), one transaction per table, secondary indexes built afterwards. A build kept in
--keep is reused for 12 hours (its times are relative to when it was built).
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

LAYOUT = 1  # bump when the generated database changes: older builds are rebuilt
SEQUENCE = "welkom"
AFTER = [0, 3 * 86400, 10 * 86400, 17 * 86400, 24 * 86400]  # the steps' `after`, seconds
STEPS = [("welkom", "0m", "Welkom, {{ subscriber.first_name | default('lezer') }}"),
         ("tips-1", "3d", "Drie tips om te starten"), ("tips-2", "10d", "Nog een tip"),
         ("tips-3", "17d", "Een laatste tip"), ("vraag", "24d", "Wat vind je ervan?")]
STEPS_TOML = '\n[[sequence]]\nname = "welkom"\nsteps = [\n' + "".join(
    f'  {{ id = "{key}", after = "{after}", template = "templates/welcome.html.j2", '
    f'subject = "{subject}" }},\n' for key, after, subject in STEPS) + "]\n"
SECOND = 1_000_000  # timestamps on SQLite: integer microseconds since 1970
REUSE = 12 * 3600  # a build is reused this many seconds: later, its "future" has come


def counter(n: int) -> str:
    """The numbers 1..n as a recursive CTE (SQLite has no generate_series built in)."""
    return f"WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {n}) "


def microseconds(at: datetime) -> int:
    return int((at - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))


def progress_insert(steps: list[tuple[int, int, int]], list_id: int, sequence_id: int,
                    now: int, every: int, where: str = "") -> str:
    """INSERT … SELECT of the people's places in the sequence, from the subscribers
    (`where` limits which). Person i is due now when i % every = 0 (k: their next step,
    over all five); the others wait for step i % 6 (5: done) from a day to a week on."""
    ids = [s[0] for s in steps]

    def pick(values: list[Any], k: str, default: str = "NULL") -> str:
        return "CASE " + " ".join(f"WHEN {k} = {j} THEN {v}" for j, v in enumerate(values)) \
            + f" ELSE {default} END"

    due = f"(id % {every} = 0)"
    k = f"(CASE WHEN {due} THEN (id / {every}) % 5 ELSE id % 6 END)"
    next_at = (f"(CASE WHEN {due} THEN {now} - (1 + id % 3600) * {SECOND} "
               f"ELSE {now} + (86400 + id % 518400) * {SECOND} END)")
    return (
        "INSERT INTO sequence_progress (sequence_id, subscriber_id, list_id, started_at, "
        "passed_after, last_step_id, next_step_id, next_at, state, updated_at) "
        f"SELECT {sequence_id}, id, {list_id}, "
        f"CASE WHEN k = 5 THEN {now} - (30 * 86400 + id % 86400) * {SECOND} "
        f"ELSE n - {pick(AFTER, 'k')} * {SECOND} END, "
        f"{pick([-1, *AFTER[:-1]], 'k', str(AFTER[-1]))}, "
        f"{pick(['NULL', *ids[:-1]], 'k', str(ids[-1]))}, "
        f"{pick(ids, 'k')}, CASE WHEN k = 5 THEN NULL ELSE n END, "
        f"CASE WHEN k = 5 THEN 'done' ELSE 'active' END, {now} "
        f"FROM (SELECT id, {k} AS k, {next_at} AS n FROM subscriber {where}) ORDER BY id")


def fill(db: Path, n: int, every: int, now: int) -> dict[str, Any]:
    """People, memberships, their places in the sequence, the mails of the steps they had."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")  # a bench file: no journal while filling
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")  # the index builds sort in memory
    conn.execute("PRAGMA temp_store=MEMORY")
    news = conn.execute("SELECT id FROM mailing_list WHERE slug = 'nieuwsbrief'").fetchone()[0]
    sequence_id = conn.execute("SELECT id FROM sequence WHERE name = ?",
                               (SEQUENCE,)).fetchone()[0]
    steps = conn.execute("SELECT id, after_seconds, campaign_id FROM sequence_step WHERE "
                         "sequence_id = ? ORDER BY position", (sequence_id,)).fetchall()
    assert [s[1] for s in steps] == AFTER, steps
    indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND "
                           "sql IS NOT NULL AND tbl_name IN ('delivery', 'subscription', "
                           "'sequence_progress')").fetchall()
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    step = time.perf_counter()

    def done(what: str) -> None:
        nonlocal step
        print(f"  {what:<44}{time.perf_counter() - step:>7.1f} s", flush=True)
        step = time.perf_counter()

    joined = now - 60 * 86400 * SECOND
    conn.execute("BEGIN")
    conn.execute(counter(n) + "INSERT INTO subscriber (id, email, first_name, language, "
                 "attributes, status, created_at, updated_at) SELECT i, 'p' || i || "
                 "'@domain' || (i % 500) || '.example.be', 'Persoon', 'nl', '{}', 'active', "
                 "?1, ?1 FROM c", (joined,))
    conn.execute("INSERT INTO subscription (subscriber_id, list_id, status, source, "
                 "created_at, updated_at, confirmed_at) SELECT id, ?1, 'confirmed', "
                 "'import', ?2, ?2, ?2 FROM subscriber ORDER BY id", (news, joined))
    conn.execute("COMMIT")
    done(f"{n:,} people and memberships")
    conn.execute("BEGIN")
    conn.execute(progress_insert(steps, news, sequence_id, now, every))
    conn.execute("COMMIT")
    done("their places in the sequence")
    conn.execute("BEGIN")
    for (_, after, campaign), _j in zip(steps, range(len(steps)), strict=True):
        conn.execute(
            "INSERT INTO delivery (campaign_id, subscriber_id, list_id, state, attempts, "
            "last_reply, message_id, queued_at, sent_at, updated_at) SELECT ?1, "
            "subscriber_id, ?2, 'sent', 1, '250 2.0.0 Ok', lower(hex(randomblob(16))) || "
            "'@example.be', started_at + ?3, started_at + ?3 + 60000000, started_at + ?3 "
            "FROM sequence_progress WHERE passed_after >= ?4 ORDER BY subscriber_id",
            (campaign, news, after * SECOND, after))
    conn.execute("COMMIT")
    done("the mails of the steps they had")
    for _, sql in indexes:
        conn.execute(sql)
    done("secondary indexes")
    conn.execute("PRAGMA journal_mode=WAL")
    counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("subscriber", "sequence_progress", "delivery")}
    counts["due"] = conn.execute("SELECT count(*) FROM sequence_progress WHERE next_at <= ?",
                                 (now,)).fetchone()[0]
    conn.close()
    return {"counts": counts, "steps": steps, "list": news, "sequence": sequence_id}


def project_env(keep: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["MAILER_DATABASE_URL"] = f"sqlite:///{keep / 'sequence.db'}"
    env["MAILER_DELIVERY__TRANSPORT"] = "maildir:outbox"  # accepts everything (not reached)
    return env


def build(keep: Path, n: int, due: int) -> dict[str, Any]:
    """The project (with the sequence synced) and its filled database in `keep`."""
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True)
    project = keep / "project"
    env = project_env(keep)
    mailer = [sys.executable, "-m", "mailer"]
    subprocess.run([*mailer, "init", str(project)], check=True, env=env, capture_output=True)
    with (project / "lists" / "nieuwsbrief.toml").open("a") as f:
        f.write(STEPS_TOML)
    run = {"cwd": project, "env": env, "check": True, "capture_output": True}
    subprocess.run([*mailer, "db", "upgrade"], **run)
    subprocess.run([*mailer, "lists", "sync"], **run)
    now = microseconds(datetime.now(UTC))
    print(f"filling {keep / 'sequence.db'} ({n:,} people, {due:,} due):", flush=True)
    started = time.perf_counter()
    filled = fill(keep / "sequence.db", n, n // due, now)
    meta = {"layout": LAYOUT, "people": n, "due": due, "now": now,
            "seconds": round(time.perf_counter() - started),
            "bytes": (keep / "sequence.db").stat().st_size, **filled}
    (keep / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def timed(cmd: list[str], **kwargs: Any) -> tuple[float, float, float, str]:
    """Run `cmd`: wall seconds, CPU seconds (user + system, from wait4), peak resident
    MB, and its standard output."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, **kwargs)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) not in (0, 1):
            raise SystemExit(f"{' '.join(cmd[2:])} failed:\n{err.read().decode()[-2000:]}")
        return (elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                out.read().decode())


class State:
    """Puts the database in the state a measurement needs, with plain SQL."""

    def __init__(self, keep: Path, meta: dict[str, Any]) -> None:
        self.meta = meta
        self.conn = sqlite3.connect(keep / "sequence.db", isolation_level=None, timeout=60)
        self.every = meta["people"] // meta["due"]
        self.campaigns = ",".join(str(s[2]) for s in meta["steps"])

    def purged(self) -> None:
        """The daily purge done a moment ago: neither run does it."""
        self.conn.execute("INSERT INTO audit_log (at, actor, action, detail) VALUES "
                          "(?, 'bench', 'gdpr.purge', '{}')",
                          (microseconds(datetime.now(UTC)),))

    def _forget_queued(self) -> None:
        """The deliveries a run queued (the build has only sent ones) go."""
        self.conn.execute(f"DELETE FROM delivery WHERE campaign_id IN ({self.campaigns}) "
                          "AND state <> 'sent'")

    def due(self) -> None:
        """The --due people at the build's places again: due now, nothing queued."""
        m = self.meta
        self.conn.execute("BEGIN")
        self._forget_queued()
        self.conn.execute(f"DELETE FROM sequence_progress WHERE subscriber_id % {self.every} "
                          "= 0")
        self.conn.execute(progress_insert(m["steps"], m["list"], m["sequence"], m["now"],
                                          self.every, f"WHERE id % {self.every} = 0"))
        self.conn.execute("COMMIT")

    def idle(self) -> None:
        """Nobody due: the --due people's next step a day on, nothing queued."""
        later = microseconds(datetime.now(UTC) + timedelta(days=1))
        self.conn.execute("BEGIN")
        self._forget_queued()
        self.conn.execute(f"UPDATE sequence_progress SET next_at = ? WHERE subscriber_id % "
                          f"{self.every} = 0 AND next_at IS NOT NULL", (later,))
        self.conn.execute("COMMIT")

    def plans(self) -> None:
        """The query plans of the due query and of the idle check, as the code builds them."""
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from sqlalchemy.dialects import sqlite

        from mailer.automation.sequences import _due_query
        from mailer.delivery.due import idle_queries

        now = datetime.now(UTC)
        queries = {"due query": _due_query(now, 2000),
                   **{f"idle check {i}": q for i, q in enumerate(idle_queries()[1])}}
        for name, query in queries.items():
            compiled = query.compile(dialect=sqlite.dialect(),
                                     compile_kwargs={"render_postcompile": True})
            params = [microseconds(now) if isinstance(v, datetime) else v
                      for v in (compiled.params[k] for k in compiled.positiontup or [])]
            print(f"{name}:")
            for row in self.conn.execute("EXPLAIN QUERY PLAN " + str(compiled), params):
                print(f"    {row[-1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--people", type=int, default=1_000_000, help="(1,000,000)")
    parser.add_argument("--due", type=int, default=10_000, help="steps due (10,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (default 3)")
    parser.add_argument("--keep", type=Path, help="build here, and reuse the build later")
    parser.add_argument("--rebuild", action="store_true", help="fill --keep anew")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plans-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plans_only:  # in a process of its own: this one imports SQLAlchemy and mailer
        State(args.keep, json.loads((args.keep / "meta.json").read_text())).plans()
        return
    with tempfile.TemporaryDirectory(prefix="sequence-bench-") as tmp:
        keep = args.keep or Path(tmp) / "build"
        meta_file = keep / "meta.json"
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        if args.build_only:
            build(keep, args.people, args.due)
            return
        fresh = microseconds(datetime.now(UTC)) - meta.get("now", 0) < REUSE * SECOND
        if args.rebuild or not fresh or {k: meta.get(k) for k in ("layout", "people", "due")} \
                != {"layout": LAYOUT, "people": args.people, "due": args.due}:
            # In a process of its own: a child's peak memory (ru_maxrss) starts from its
            # parent's at fork, and filling takes a large SQLite cache.
            subprocess.run([sys.executable, __file__, "--build-only", "--keep", str(keep),
                            "--people", str(args.people), "--due", str(args.due)],
                           check=True)
            meta = json.loads(meta_file.read_text())
        env = project_env(keep)
        cwd = keep / "project"
        mailer = [sys.executable, "-m", "mailer"]
        subprocess.run([*mailer, "db", "upgrade"], cwd=cwd, env=env, check=True,
                       capture_output=True)
        print(f"database: {meta['bytes'] / 2**20:,.0f} MB, {meta['counts']} "
              f"(built in {meta['seconds']} s)")
        state = State(keep, meta)
        state.purged()
        state.due()
        # A child's peak memory (ru_maxrss) counts its parent's at fork: this process
        # stays small (no SQLAlchemy, no mailer), the plans are printed by another.
        subprocess.run([sys.executable, __file__, "--plans-only", "--keep", str(keep)],
                       check=True)
        commands = {"due": [*mailer, "run", "--json", "--max-seconds", "0.001"],
                    "idle": [*mailer, "run", "--json"]}
        print(f"{'run':<8}{'load':>6}{'wall s':>9}{'cpu s':>8}{'peak MB':>9}  steps")
        results: dict[str, list[tuple[float, ...]]] = {}
        for _ in range(args.repeat):
            for name, cmd in commands.items():
                (state.due if name == "due" else state.idle)()
                load = os.getloadavg()[0]
                wall, cpu, peak, out = timed(cmd, cwd=cwd, env=env)
                steps = json.loads(out)["steps"]
                want = args.due if name == "due" else 0
                assert steps["queued"] == want, (name, steps, want)
                results.setdefault(name, []).append((load, wall, cpu, peak))
                print(f"{name:<8}{load:>6.1f}{wall:>9.2f}{cpu:>8.2f}{peak:>9.0f}  {steps}",
                      flush=True)
        print("medians:")
        for name, rows in results.items():
            load, wall, cpu, peak = (statistics.median(c) for c in zip(*rows, strict=True))
            print(f"{name:<8}{load:>6.1f}{wall:>9.2f}{cpu:>8.2f}{peak:>9.0f}")


if __name__ == "__main__":
    main()
