"""Benchmark: GDPR export, erasure and retention on a large database, beside a paced send.

On a SQLite database of N subscribers (default 1,000,000) and M deliveries (default
10,000,000, over ~10 campaigns), with memberships, consent events, confirmation mails and
returns (bounces, unattributed mail), each run measures:

  person   export: `mailer gdpr export ADDRESS --out FILE` for --people random people, as whole
           processes (wall), and `export_person` in-process (the work without start-up);
           erase: `mailer gdpr erase ADDRESS --yes` the same way, and `erase_person` in-process
           (its transaction and its WAL checkpoint apart);
  purge    `mailer gdpr purge --json` on a fresh copy with the --expired oldest deliveries
           (default 1,000,000) dated 25 months back: total wall, and the longest time
           another writer had to wait for the database (a probe that takes SQLite's write
           lock every 5 ms);
  alone    a real `mailer campaign send` of --send recipients paced at --rate msgs/s into
           Postfix's smtp-sink: its pace (from the send's own sent_at stamps), its longest
           pause;
  beside   the same send on a fresh copy with `purge()` started in another process a few
           seconds in: its pace while the purge ran, its longest pause, the purge's
           statements, `Purged.longest_batch` and `Purged.paused` (with --control also a
           send beside a process that only burns a core as long: how much is CPU).

--steps picks some of person (export and erase), purge, alone, beside. Every figure comes
with its CPU seconds and the load average it was taken under.

    .venv/bin/python bench/privacy_bench.py                          # 1M / 10M, 2 runs
    .venv/bin/python bench/privacy_bench.py --subscribers 100000 --deliveries 1000000 \\
        --expired 100000 --runs 1                                    # a quick look
    .venv/bin/python bench/privacy_bench.py --rebuild                # fill the database anew
    .venv/bin/python bench/privacy_bench.py --keep /srv/bench --steps purge,beside

The filled database is kept under --keep DIR (default /tmp/mailer-privacy-bench) and reused
by later runs (filling 1M / 10M takes minutes); every run works on a fresh copy of it.
Rows go in with driver-level multi-row INSERTs (people, memberships, consent events,
notices) and INSERT ... SELECT (deliveries and returns, generated from the people in SQL),
in one transaction per table, with the secondary indexes built afterwards.

Needs /usr/sbin/smtp-sink (Debian package postfix) for the send; --skip-send without it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SINK = "/usr/sbin/smtp-sink"
LAYOUT = 2  # bump when the generated database changes: older caches are rebuilt

FIRST = ["An", "Jan", "Marie", "Sofie", "Lukas", "Els", "Jürgen", "Noor", "Pieter", "Lotte"]
LAST = ["Peeters", "Janssens", "Maes", "Jacobs", "Mertens", "Willems", "Claes", "Goossens"]
CITIES = ["Gent", "Antwerpen", "Brussel", "Leuven", "Brugge", "Hasselt", "Mechelen"]
AGENT = ("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
CONSENT = ("Ja, ik wil de nieuwsbrief van Voorbeeld vzw ontvangen. Ik kan me altijd "
           "uitschrijven. Mijn gegevens worden alleen hiervoor gebruikt.")
DAY_US = 86_400 * 1_000_000
MONTH_US = 30 * DAY_US
# A delivery's Message-ID: in send order, as the engine writes it since eecf80b (the epoch
# second, then the token; here campaign, then person), or random, as it did before (the
# first 32 characters of the message's token; --message-ids random).
MESSAGE_ID = {False: "lower(hex(randomblob(16)))",
              True: "printf('%04x%08x.', ?1, id) || lower(hex(randomblob(10)))"}
SEND_LIST = "bench-send"  # the first --send people are members: the paced campaign's list

# Who is who, by subscriber id (deterministic, so a person's address is known from the id).
PENDING_EVERY = 200  # id % 200 == 7: signed up on the web more than 30 days ago, never confirmed
UNSUB_EVERY = 20  # id % 20 == 3: unsubscribed
WEB_EVERY = 3  # id % 3 == 0: came through the sign-up form (IP, user agent, confirm mail)


def email(i: int) -> str:
    return f"person.{i}@domain{i % 200}.example.be"


def pending(i: int) -> bool:
    return i % PENDING_EVERY == 7


def us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


# -- filling the database ---------------------------------------------------------------------

def insert_rows(conn: sqlite3.Connection, table: str, columns: list[str],
                rows: Any, per_statement: int = 100) -> int:
    """Multi-row INSERTs on the driver: `per_statement` rows a statement."""
    one = "(" + ", ".join("?" * len(columns)) + ")"
    head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
    full = head + ", ".join([one] * per_statement)
    batch: list[Any] = []
    count = 0

    def flush(values: list[Any], statement: str) -> None:
        conn.execute(statement, values)

    for row in rows:
        batch.extend(row)
        count += 1
        if count % per_statement == 0:
            flush(batch, full)
            batch = []
    if batch:
        flush(batch, head + ", ".join([one] * (len(batch) // len(columns))))
    return count


def fill(db: Path, n: int, m: int, expired: int, send: int, now: int,
         ordered: bool = False) -> dict[str, int]:
    """The people, their memberships, consent events and confirmation mails, ~10
    campaigns with their deliveries, returns, suppressions and audit entries."""
    rnd = random.Random(n)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")  # a bench file: no journal while filling
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")  # 1 GB: the index builds sort in memory
    conn.execute("PRAGMA temp_store=MEMORY")
    lists = dict(conn.execute("SELECT slug, id FROM mailing_list"))
    news, bench = lists["nieuwsbrief"], lists[SEND_LIST]
    # Secondary indexes go and come back when the rows are in (a sort instead of a
    # B-tree insert per row); the UNIQUE and primary keys stay (rows come in key order).
    indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND "
                           "sql IS NOT NULL AND tbl_name IN ('delivery', 'consent_event', "
                           "'subscription', 'feedback_event')").fetchall()
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    six_years = 6 * 365 * DAY_US
    step = time.perf_counter()

    def done(what: str, rows: int) -> None:
        nonlocal step
        print(f"  {what:<44}{rows:>12,} rows {time.perf_counter() - step:>7.1f} s",
              flush=True)
        step = time.perf_counter()

    def joined(i: int) -> int:  # when person i signed up: spread over six years
        return now - six_years + (i * six_years) // (n + 1) if not pending(i) else \
            now - 60 * DAY_US - (i % 300) * DAY_US

    conn.execute("BEGIN")
    counted = insert_rows(conn, "subscriber", [
        "id", "email", "first_name", "last_name", "language", "attributes", "status",
        "created_at", "updated_at"], (
        (i, email(i), rnd.choice(FIRST), rnd.choice(LAST), "en" if i % 10 == 1 else "nl",
         json.dumps({"city": rnd.choice(CITIES), "member_since": 2000 + i % 26}), "active",
         joined(i), joined(i)) for i in range(1, n + 1)))
    conn.execute("COMMIT")
    done("subscribers", counted)

    def memberships() -> Any:
        for i in range(1, n + 1):
            at = joined(i)
            if pending(i):
                yield (i, news, "pending", "web", at, at, None, None)
            elif i % UNSUB_EVERY == 3:
                yield (i, news, "unsubscribed", "web" if i % WEB_EVERY == 0 else "import",
                       at, at + 90 * DAY_US, at, at + 90 * DAY_US)
            else:
                yield (i, news, "confirmed", "web" if i % WEB_EVERY == 0 else "import", at,
                       at, at, None)
            if i <= send:
                yield (i, bench, "confirmed", "import", at, at, at, None)

    conn.execute("BEGIN")
    counted = insert_rows(conn, "subscription", [
        "subscriber_id", "list_id", "status", "source", "created_at", "updated_at",
        "confirmed_at", "unsubscribed_at"], memberships())
    conn.execute("COMMIT")
    done("memberships", counted)

    def consent() -> Any:
        for i in range(1, n + 1):
            at = joined(i)
            if i % WEB_EVERY == 0 or pending(i):
                ip = f"198.51.{i % 256}.{(i // 256) % 256}"
                yield (i, news, "subscribe", at, "web", CONSENT, 0, ip, AGENT)
                if not pending(i):
                    yield (i, news, "confirm", at + 3_600_000_000, "web", CONSENT, 1, ip,
                           AGENT)
            else:
                yield (i, news, "import", at, "import:leden.csv", CONSENT, 1, None, None)
            if i % UNSUB_EVERY == 3 and not pending(i):
                yield (i, news, "unsubscribe", at + 90 * DAY_US, "one-click", None, 0, None,
                       None)
            if i <= send:
                yield (i, bench, "import", at, "import:bench.csv", CONSENT, 1, None, None)

    conn.execute("BEGIN")
    counted = insert_rows(conn, "consent_event", [
        "subscriber_id", "list_id", "action", "at", "source", "consent", "confirmed", "ip",
        "user_agent"], consent())
    conn.execute("COMMIT")
    done("consent events", counted)


    # Campaigns: enough that nobody gets the same one twice, about monthly, the last one
    # a month ago; each to a run of the people (rotating), pending ones left out.
    eligible = n - n // PENDING_EVERY
    campaigns = max(10, -(-m // eligible))
    per = m // campaigns
    conn.execute("BEGIN")
    for c in range(1, campaigns + 1):
        sent = now - (1 + (campaigns - c) * 21 // max(campaigns - 1, 1)) * MONTH_US
        conn.execute(
            "INSERT INTO campaign (id, slug, title, template, subject, list_ids, segment, "
            "state, started_at, finished_at, created_at, updated_at) VALUES "
            "(?, ?, 'Nieuwsbrief', 'templates/newsletter.html.j2', ?, ?, '[]', 'sent', ?, "
            "?, ?, ?)", (c, f"nieuwsbrief-{c:02d}", f"Ons nieuws, nummer {c}",
                         json.dumps([news]), sent, sent + 3_600_000_000, sent - DAY_US,
                         sent + 3_600_000_000))
        span = min(n, per * PENDING_EVERY // (PENDING_EVERY - 1) + 1)
        start = ((c - 1) * n // campaigns) % n
        ranges = [(start + 1, min(n, start + span))]
        if start + span > n:
            ranges.append((1, start + span - n))
        for lo, hi in ranges:
            # Reply and Message-ID as the engine writes them; 1 in 100 a soft bounce
            # quoting the address, 1 in 500 skipped (unsubscribed before its turn).
            conn.execute(
                "INSERT INTO delivery (campaign_id, subscriber_id, list_id, state, attempts, "
                "last_reply, message_id, queued_at, sent_at, updated_at) "
                "SELECT ?1, id, ?2, CASE WHEN (id * 7 + ?1) % 100 = 0 THEN 'bounced' "
                "WHEN (id * 3 + ?1) % 500 = 0 THEN 'skipped' ELSE 'sent' END, 1, "
                "CASE WHEN (id * 7 + ?1) % 100 = 0 THEN '452 4.2.2 <' || email || "
                "'>: Mailbox full' WHEN (id * 3 + ?1) % 500 = 0 THEN 'unsubscribed' "
                "ELSE '250 2.0.0 Ok: queued as ' || upper(hex(randomblob(5))) END, "
                f"{MESSAGE_ID[ordered]} || '@example.be', ?3, ?3 + (id % 7200) * "
                "1000000, ?3 + (id % 7200) * 1000000 FROM subscriber "
                f"WHERE id BETWEEN ?4 AND ?5 AND id % {PENDING_EVERY} != 7 ORDER BY id",
                (c, news, sent, lo, hi))
    conn.execute("COMMIT")
    deliveries = conn.execute("SELECT max(id) FROM delivery").fetchone()[0]
    done(f"deliveries ({campaigns} campaigns)", deliveries)

    conn.execute("BEGIN")  # the oldest `expired` deliveries: 25 months back and more
    conn.execute("UPDATE delivery SET queued_at = ?1 - (?2 - id) * 1000, "
                 "sent_at = ?1 - (?2 - id) * 1000 + 1000000, "
                 "updated_at = ?1 - (?2 - id) * 1000 + 1000000 WHERE id <= ?2",
                 (now - 25 * MONTH_US, expired))
    conn.execute("COMMIT")
    done("deliveries aged 25 months", min(expired, deliveries))

    # the confirmation mail of every web sign-up: deliveries of the list's confirmation
    # notices' campaign (delivery/notices.py; an id above the newsletters' own), after theirs: the
    # oldest `expired` deliveries above are the newsletters'
    notice_campaign = 1_000_000

    def notices() -> Any:
        for i in range(1, n + 1):
            if i % WEB_EVERY == 0 or pending(i):
                at = joined(i)
                yield (notice_campaign, i, news, "sent", 1,
                       f"250 2.0.0 Ok: queued as N{i:X}",
                       f"{rnd.getrandbits(128):032x}@example.be", at, at + 2_000_000,
                       at + 2_000_000)

    conn.execute("BEGIN")
    conn.execute(
        "INSERT INTO campaign (id, slug, title, template, subject, list_ids, segment, "
        "state, kind, started_at, created_at, updated_at) VALUES (?, ?, 'confirm', "
        "'confirm.html.j2', 'confirm', ?, '[]', 'sending', 'notice', ?, ?, ?)",
        (notice_campaign, f"notice:confirm:{news}", json.dumps([news]), now - six_years,
         now - six_years, now - six_years))
    counted = insert_rows(conn, "delivery", [
        "campaign_id", "subscriber_id", "list_id", "state", "attempts", "last_reply",
        "message_id", "queued_at", "sent_at", "updated_at"], notices())
    conn.execute("COMMIT")
    done("confirmation mails (notice deliveries)", counted)

    conn.execute("BEGIN")  # returns: a bounce per bounced delivery, masked diagnostic
    conn.execute(
        "INSERT INTO feedback_event (message_key, seq, at, source, kind, reason, hard, "
        "sender_side, status, reply_code, diagnostic, domain, attributed_by, subscriber_id, "
        "campaign_id, list_id, delivery_id, action) SELECT lower(hex(randomblob(16))), 0, "
        "d.sent_at + 600000000, 'imap', 'bounce', 'mailbox_full', 0, 0, '4.2.2', 452, "
        "'smtp; 452 4.2.2 <***@domain' || (d.subscriber_id % 200) || '.example.be>: "
        "Mailbox full', 'domain' || (d.subscriber_id % 200) || '.example.be', 'token', "
        "d.subscriber_id, d.campaign_id, d.list_id, d.id, 'soft bounce counted' "
        "FROM delivery d WHERE d.state = 'bounced' ORDER BY d.id")
    unattributed = max(1000, m // 2000)
    insert_rows(conn, "feedback_event", [
        "message_key", "seq", "at", "source", "kind", "hard", "sender_side", "diagnostic",
        "action"], ((f"{rnd.getrandbits(128):032x}", 0,
                     now - (i % 700) * DAY_US, "imap", "other", 0, 0,
                     "Out of office until Monday", "kept") for i in range(unattributed)))
    conn.execute("COMMIT")
    done("returns (feedback_event)",
         conn.execute("SELECT count(*) FROM feedback_event").fetchone()[0])

    conn.execute("BEGIN")
    insert_rows(conn, "suppression", ["email_hash", "reason", "note", "created_at"], (
        (f"{rnd.getrandbits(256):064x}", "unsubscribe", "", now - (i % 2000) * DAY_US)
        for i in range(n // 100)))
    insert_rows(conn, "audit_log", ["at", "actor", "action", "detail"], (
        (now - (i % 2400) * DAY_US, "bench", "subscribers.import", '{"rows": 1000}')
        for i in range(5000)))
    conn.execute("COMMIT")
    done("suppressions and audit entries", n // 100 + 5000)

    for name, sql in indexes:
        conn.execute(sql)
        done(f"index {name}", 0)
    conn.execute("PRAGMA journal_mode=WAL")
    counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in (
        "subscriber", "subscription", "consent_event", "campaign", "delivery",
        "feedback_event", "suppression", "audit_log")}
    counts["expired_deliveries"] = conn.execute(
        "SELECT count(*) FROM delivery WHERE queued_at < ?",
        (now - 24 * MONTH_US,)).fetchone()[0]
    conn.close()
    return counts


def build(cache: Path, n: int, m: int, expired: int, send: int,
          ordered: bool = False) -> dict[str, Any]:
    """The project and its filled database in `cache`, made anew."""
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    project = cache / "project"
    db = cache / "pristine.db"
    env = project_env(project, db)
    mailer = [sys.executable, "-m", "mailer"]
    subprocess.run([*mailer, "init", str(project)], check=True, env=env,
                   capture_output=True)
    (project / "lists" / f"{SEND_LIST}.toml").write_text(
        'name = "Bench send"\nlanguage = "nl"\noptin = "single"\nfrom_name = "Voorbeeld vzw"'
        '\nfrom_address = "nieuws@example.be"\npublic = false\n'
        f'consent_text = "{CONSENT}"\nconsent_version = "2026-11"\n')
    run = {"cwd": project, "env": env, "check": True, "capture_output": True}
    subprocess.run([*mailer, "db", "upgrade"], **run)
    subprocess.run([*mailer, "lists", "sync"], **run)
    now = us(datetime.now(UTC))
    print(f"filling {db} ({n:,} people, ~{m:,} deliveries); progress per table:",
          flush=True)
    started = time.perf_counter()
    counts = fill(db, n, m, expired, send, now, ordered)
    meta = {"layout": LAYOUT, "built": now, "seconds": round(time.perf_counter() - started),
            "bytes": db.stat().st_size, "counts": counts}
    (cache / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def project_env(project: Path, db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["MAILER_DATABASE_URL"] = f"sqlite:///{db}"
    return env


def fresh_copy(cache: Path) -> Path:
    """A working copy of the filled database (its figures must not leak between runs)."""
    work = cache / "work.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(cache / "pristine.db", work)
    os.chmod(work, 0o600)
    return work


# -- measuring ---------------------------------------------------------------------------------

def wall(cmd: list[str], **kwargs: Any) -> tuple[float, str, float]:
    """Run `cmd`: its wall seconds, its standard output, its CPU seconds (from wait4: on a
    busy machine the wall time is mostly waiting for a core, the CPU time is the work)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, **kwargs)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[2:5])} failed:\n{stderr[-2000:]}")
    return elapsed, stdout, usage.ru_utime + usage.ru_stime


def helper(what: str, args: list[str]) -> dict[str, Any]:
    """Run in a separate process (`--helper`), in the project: the in-process figures."""
    from mailer.project import Project

    project = Project.load()
    engine = project.engine
    if what == "export":
        from mailer.privacy.export import export_person

        times, cpu = [], []
        for address in args:
            started, began = time.perf_counter(), time.process_time()
            document = export_person(engine, project.hash_key, address)
            json.dumps(document, ensure_ascii=False, indent=2)
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - began)
            assert document["subscriber"] and len(document["deliveries"]) >= 5, address
        return {"seconds": times, "cpu": cpu}
    if what == "erase":
        import mailer.privacy.erase as erase

        checkpoints: list[float] = []
        original = erase.checkpoint

        def timed(engine: Any) -> bool:
            started = time.perf_counter()
            try:
                return original(engine)
            finally:
                checkpoints.append(time.perf_counter() - started)

        erase.checkpoint = timed  # type: ignore[assignment]
        times, cpu = [], []
        for address in args:
            started, began = time.perf_counter(), time.process_time()
            result = erase.erase_person(engine, project.hash_key, address, actor="bench")
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - began)
            assert result.subscriber_id and result.disk_clean, (address, result)
        return {"seconds": times, "cpu": cpu, "checkpoint": checkpoints}
    if what == "purge":
        from sqlalchemy import event

        from mailer.privacy.retention import purge

        statements: dict[str, list[float]] = {}
        starts: list[float] = []

        @event.listens_for(engine, "before_cursor_execute")
        def before(*_: Any) -> None:
            starts.append(time.perf_counter())

        @event.listens_for(engine, "after_cursor_execute")
        def after(_conn: Any, _cursor: Any, statement: str, *__: Any) -> None:
            words = statement.replace("\n", " ").split()
            kind = words[0].upper()
            table = (words[words.index("FROM") + 1] if kind in ("SELECT", "DELETE")
                     else words[2] if kind == "INSERT" else words[1])
            statements.setdefault(f"{kind} {table}", []).append(
                time.perf_counter() - starts.pop())

        began, cpu = time.time(), time.process_time()
        started = time.perf_counter()
        purged = purge(engine, project.settings.privacy, actor="bench")
        return {"seconds": time.perf_counter() - started, "began": began, "ended": time.time(),
                "cpu": time.process_time() - cpu,
                "counts": purged.counts, "longest_batch": purged.longest_batch,
                "paused": purged.paused,
                "statements": {k: {"n": len(v), "total": sum(v), "max": max(v)}
                               for k, v in statements.items()}}
    raise SystemExit(f"unknown helper {what}")


def run_helper(env: dict[str, str], project: Path, what: str, *args: str) -> dict[str, Any]:
    _, out, _ = wall([sys.executable, __file__, "--helper", what, *args], cwd=project,
                     env=env)
    return json.loads(out.splitlines()[-1])


class LockProbe:
    """Another writer: takes SQLite's write lock (BEGIN IMMEDIATE, no busy wait) every
    `every` seconds and records how long it could not."""

    def __init__(self, db: Path, every: float = 0.005) -> None:
        self.db, self.every = db, every
        self.waits: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LockProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        conn = sqlite3.connect(self.db, timeout=0, isolation_level=None)
        blocked: float | None = None
        while not self._stop.is_set():
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
                if blocked is not None:
                    self.waits.append(time.perf_counter() - blocked)
                    blocked = None
            except sqlite3.OperationalError:  # database is locked
                if blocked is None:
                    blocked = time.perf_counter()
            time.sleep(self.every)
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sink(port: int) -> subprocess.Popen[bytes]:
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen([SINK, *user, "-R", "/tmp", f"127.0.0.1:{port}", "2048"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return sink
        except OSError:
            time.sleep(0.05)
    raise SystemExit("smtp-sink did not start")


def paced_send(env: dict[str, str], project: Path, db: Path, name: str,
               purge_after: float | None, burn: float | None = None) -> dict[str, Any]:
    """`campaign send` of the bench-send list; with `purge_after`, the purge starts that
    many seconds in, in its own process (or, with `burn`, a process that only keeps a
    core busy for that many seconds: the control). Pace from the send's own sent_at
    stamps."""
    mailer = [sys.executable, "-m", "mailer"]
    run = {"cwd": project, "env": env, "check": True, "capture_output": True}
    subprocess.run([*mailer, "campaign", "create", name, "--list", SEND_LIST, "--template",
                    "templates/newsletter.html.j2", "--subject",
                    "{{ subscriber.first_name | default('Beste lezer') }}, ons nieuws"], **run)
    started = time.time()
    sender = subprocess.Popen([*mailer, "campaign", "send", name, "--yes", "--json", "-q"],
                              cwd=project, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    purged = None
    if purge_after is not None:
        time.sleep(purge_after)
        if burn is None:
            purged = run_helper(env, project, "purge")
        else:
            began = time.time()
            subprocess.run([sys.executable, "-c", "import time\nend = time.monotonic() + "
                            f"{burn}\nwhile time.monotonic() < end: pass"], check=True)
            purged = {"began": began, "ended": time.time()}
    out, err = sender.communicate()
    if sender.returncode != 0:
        raise SystemExit(f"campaign send failed:\n{err[-2000:]}")
    report = json.loads(out)
    conn = sqlite3.connect(db)
    stamps = [row[0] / 1e6 for row in conn.execute(
        "SELECT d.sent_at FROM delivery d JOIN campaign c ON c.id = d.campaign_id "
        "WHERE c.slug = ? AND d.state = 'sent' ORDER BY d.sent_at", (name,))]
    conn.close()
    result: dict[str, Any] = {"report": report, "sent": len(stamps), "started": started,
                              "first": stamps[0], "last": stamps[-1], "purge": purged}
    result["rate"] = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    result["max_gap"] = max(b - a for a, b in zip(stamps, stamps[1:], strict=False))
    if purged is not None:
        lo, hi = max(purged["began"], stamps[0]), min(purged["ended"], stamps[-1])
        inside = [s for s in stamps if lo <= s <= hi]
        result["overlap"] = hi - lo
        result["rate_during"] = len(inside) / (hi - lo) if hi > lo else None
        result["max_gap_during"] = max((b - a for a, b in zip(inside, inside[1:],
                                                               strict=False)), default=None)
        outside = [s for s in stamps if s < lo or s > hi]
        span = (stamps[-1] - stamps[0]) - (hi - lo)
        result["rate_outside"] = len(outside) / span if span > 1 else None
    return result


def load() -> str:
    """The 1-minute load average, for every figure: on a busy machine it says how busy."""
    return f"[load {os.getloadavg()[0]:.1f}]"


def spread(values: list[Any], unit: float = 1000.0) -> str:
    """median / max, in ms by default; of whole processes (wall, out, cpu): with CPU."""
    walls = [v[0] if isinstance(v, tuple) else v for v in values]
    text = f"median {statistics.median(walls) * unit:,.0f}, max {max(walls) * unit:,.0f}"
    if isinstance(values[0], tuple):
        cpus = [v[2] for v in values]
        text += (f" (CPU median {statistics.median(cpus) * unit:,.0f}, "
                 f"max {max(cpus) * unit:,.0f})")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--deliveries", type=int, default=10_000_000)
    parser.add_argument("--expired", type=int, default=1_000_000,
                        help="deliveries dated 25 months back (retention: 24)")
    parser.add_argument("--people", type=int, default=10, help="exported and erased per run")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--send", type=int, default=20_000, help="recipients of the paced send")
    parser.add_argument("--rate", type=float, default=100.0, help="its [delivery] rate")
    parser.add_argument("--message-ids", choices=["random", "ordered"], default="ordered",
                        help="deliveries' Message-IDs in send order, as the engine writes "
                             "them, or random, as it did before eecf80b")
    parser.add_argument("--purge-after", type=float, default=5.0,
                        help="seconds into the send before the purge starts")
    parser.add_argument("--skip-send", action="store_true", help="no send (no smtp-sink)")
    parser.add_argument("--steps", default="person,purge,alone,beside",
                        help="which measurements, comma-separated (default: all): person "
                             "(export and erase), purge, alone (the send), beside (the "
                             "send beside a purge)")
    parser.add_argument("--control", action="store_true",
                        help="also a send beside a process that only burns a core for as "
                             "long as the purge took: how much of the slowdown is CPU")
    parser.add_argument("--keep", "--cache", dest="keep", metavar="DIR", type=Path,
                        default=Path("/tmp/mailer-privacy-bench"),
                        help="where the filled database is kept and found again "
                             "(default %(default)s)")
    parser.add_argument("--rebuild", action="store_true", help="fill the database anew")
    args = parser.parse_args()
    n, m, send = args.subscribers, args.deliveries, min(args.send, args.subscribers)
    steps = set(args.steps.split(","))
    ordered = args.message_ids == "ordered"
    cache = args.keep / (f"s{n}-d{m}-e{args.expired}-x{send}"
                          + ("-ordered" if ordered else ""))
    meta_file = cache / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else None
    if args.rebuild or meta is None or meta.get("layout") != LAYOUT or not (
            cache / "pristine.db").exists():
        meta = build(cache, n, m, args.expired, send, ordered)
        print(f"filled in {meta['seconds']} s, {meta['bytes'] / 2**30:.1f} GiB\n", flush=True)
    # A migration newer than the cached database (an index, say): applied to it once.
    subprocess.run([sys.executable, "-m", "mailer", "db", "upgrade"], cwd=cache / "project",
                   env=project_env(cache / "project", cache / "pristine.db"), check=True,
                   capture_output=True)
    age = (us(datetime.now(UTC)) - meta["built"]) / DAY_US
    print(f"database {cache / 'pristine.db'} ({meta['bytes'] / 2**30:.1f} GiB, built "
          f"{age:.1f} days ago in {meta['seconds']} s): " + ", ".join(
              f"{k} {v:,}" for k, v in meta["counts"].items()), flush=True)
    if not args.skip_send and not Path(SINK).exists():
        raise SystemExit("smtp-sink not found: apt-get install postfix, or --skip-send")
    project = cache / "project"
    work = cache / "work.db"
    env = project_env(project, work)
    mailer = [sys.executable, "-m", "mailer"]
    people = [i for i in range(send + 1, n + 1) if not pending(i)]
    port = free_port()
    sink = None if args.skip_send else start_sink(port)
    env.update({"MAILER_DELIVERY__TRANSPORT": f"smtp://127.0.0.1:{port}?tls=none",
                "MAILER_DELIVERY__RATE": str(args.rate), "MAILER_DELIVERY__CONNECTIONS": "4"})
    try:
        for r in range(1, args.runs + 1):
            rnd = random.Random(1000 + r)
            chosen = [email(i) for i in rnd.sample(people, 4 * args.people)]
            cli_export, own_export, cli_erase, own_erase = (
                chosen[k * args.people:(k + 1) * args.people] for k in range(4))
            print(f"\nrun {r} of {args.runs} (load average "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)", flush=True)
            if "person" in steps:
                fresh_copy(cache)
                startup = [wall([*mailer, "gdpr", "export", "--help"], cwd=project, env=env)
                           for _ in range(3)]
                print(f"  start-up (`mailer gdpr export --help`) ms: {spread(startup)}")
                with tempfile.TemporaryDirectory() as tmp:
                    times = [wall([*mailer, "gdpr", "export", a, "--out", f"{tmp}/{k}.json"],
                                  cwd=project, env=env) for k, a in enumerate(cli_export)]
                print(f"  gdpr export, whole process ms:        {spread(times)}", flush=True)
                own = run_helper(env, project, "export", *own_export)
                print(f"  export_person in-process ms:          {spread(own['seconds'])} "
                      f"(CPU {spread(own['cpu'])})", flush=True)
                times = [wall([*mailer, "gdpr", "erase", a, "--yes"], cwd=project, env=env)
                         for a in cli_erase]
                print(f"  gdpr erase, whole process ms:         {spread(times)}", flush=True)
                own = run_helper(env, project, "erase", *own_erase)
                print(f"  erase_person in-process ms:           {spread(own['seconds'])} "
                      f"(CPU {spread(own['cpu'])}; of which the WAL checkpoint: "
                      f"{spread(own['checkpoint'])})", flush=True)

            if "purge" in steps:
                fresh_copy(cache)
                with LockProbe(work) as probe:
                    seconds, out, cpu = wall([*mailer, "gdpr", "purge", "--json"], cwd=project,
                                             env=env)
                counts = json.loads(out)
                print(f"  gdpr purge --json, whole process:     {seconds:,.1f} s "
                      f"(CPU {cpu:,.1f} s); "
                      + ", ".join(f"{k} {v:,}" for k, v in counts.items() if k != "dry_run")
                      + f" {load()}")
                print(f"  another writer's longest wait:        "
                      f"{max(probe.waits, default=0) * 1000:,.0f} ms "
                      f"({len(probe.waits):,} waits, probing every 5 ms)", flush=True)
            if "alone" in steps and not args.skip_send:
                if "purge" not in steps:  # else on the purged copy: the same outbox
                    fresh_copy(cache)
                alone = paced_send(env, project, work, f"alone-{r}", None)
                print(f"  send alone: {alone['sent']:,} at {alone['rate']:,.1f} msgs/s "
                      f"(its report: {alone['report']['rate']:,.1f}), longest pause "
                      f"{alone['max_gap'] * 1000:,.0f} ms {load()}", flush=True)
            if "beside" in steps and not args.skip_send:
                fresh_copy(cache)
                beside = paced_send(env, project, work, f"beside-{r}", args.purge_after)
                p = beside["purge"]
                print(f"  purge() beside the send:              {p['seconds']:,.1f} s "
                      f"(CPU {p['cpu']:,.1f} s; {p['paused']:,.1f} s of pauses), "
                      f"longest batch {p['longest_batch'] * 1000:,.0f} ms; " + ", ".join(
                          f"{k} {v['n']:,} in {v['total']:,.1f} s (max {v['max'] * 1000:,.0f} ms)"
                          for k, v in p["statements"].items()))
                during = beside.get("rate_during")
                print(f"  send beside it: {beside['sent']:,} at {beside['rate']:,.1f} msgs/s "
                      f"(its report: {beside['report']['rate']:,.1f}); during the purge "
                      f"({beside['overlap']:,.0f} s) "
                      + (f"{during:,.1f} msgs/s, longest pause "
                         f"{beside['max_gap_during'] * 1000:,.0f} ms" if during else "-")
                      + (f"; outside it {beside['rate_outside']:,.1f} msgs/s"
                         if beside.get("rate_outside") else "") + f" {load()}", flush=True)
                if args.control:
                    control = paced_send(env, project, work, f"control-{r}", args.purge_after,
                                         burn=p["seconds"])
                    print(f"  control, a send beside a busy loop of {p['seconds']:,.0f} s: "
                          f"{control['rate']:,.1f} msgs/s; during the loop "
                          f"{control['rate_during']:,.1f} msgs/s, longest pause "
                          f"{control['max_gap_during'] * 1000:,.0f} ms", flush=True)
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{work}{suffix}").unlink(missing_ok=True)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--helper":
        print(json.dumps(helper(sys.argv[2], sys.argv[3:])))
    else:
        main()
