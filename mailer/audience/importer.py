"""CSV import that marketing can trust.

Streaming: rows are read, checked and written in batches, so memory stays flat however big
the file is. In-file duplicates are found through a temporary table, not a Python set.
Addresses are validated in worker processes for big files (validation is the dominant
cost), while this process reads the file and writes the database.

The whole import is one transaction: a file that turns out to be unreadable half-way
(wrong encoding, broken quoting) leaves the database exactly as it was. Rows that are
rejected (invalid, duplicate, suppressed, blocklisted, unsubscribed) are reported with
their line number and reason and written to a rejects CSV; they never stop the import.

Nobody who unsubscribed or is suppressed is ever subscribed again by an import.

Into a double opt-in list, people are pending until they confirm. `send_confirmation`
queues the confirmation mail for each of them (new members and those already pending who
were never asked), as deliveries of the list's confirmation notices in the same
transaction (delivery/notices.py): `mailer run` (and `mailer serve`) sends them through
the outbox at the configured pace, before any campaign, exactly as for a sign-up on the
web form. Nobody is asked twice: only a confirmation that never reached the person
(failed, bounced, skipped) is queued again.
"""

from __future__ import annotations

import bisect
import csv
import json
import multiprocessing
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, bindparam, text, update
from sqlmodel import Session

from mailer.audience.addresses import needs_smtputf8
from mailer.audience.bulk import Insert, SelectIn, processor
from mailer.audience.csvrows import (
    FATAL,
    CheckedRow,
    ColumnPlan,
    CsvReader,
    check_block,
    parse_block,
)
from mailer.audience.lists import get_list
from mailer.errors import ImportFailed, InvalidInput
from mailer.models import (
    AuditLog,
    ConsentAction,
    ConsentEvent,
    GlobalStatus,
    NoticeKind,
    OptIn,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
    utcnow,
)
from mailer.privacy.private import open_private

__all__ = ["ImportOptions", "ImportReport", "import_csv"]

BLOCK_BYTES = 256 * 1024  # about 3,000 rows of a typical subscriber file
PARALLEL_FROM_BYTES = 2_000_000  # below this, worker start-up costs more than it saves
SHOWN_REJECTS = 20

SUB = Subscriber.__table__  # type: ignore[attr-defined]
MEMBER = Subscription.__table__  # type: ignore[attr-defined]
EVENT = ConsentEvent.__table__  # type: ignore[attr-defined]
SUPPRESSED = Suppression.__table__  # type: ignore[attr-defined]


@dataclass
class ImportOptions:
    list_slug: str
    consent: str
    confirmed: bool = False
    send_confirmation: bool = False  # queue the double opt-in mail for the pending ones
    start_sequences: bool = False  # the confirmed ones start the list's drip sequences
    update: bool = False
    dry_run: bool = False
    mapping: dict[str, str] = field(default_factory=dict)
    delimiter: str | None = None
    encoding: str = "utf-8"
    default_language: str | None = None
    rejects_path: Path | None = None
    workers: int | None = None  # validation processes; 0: none; None: decided by file size
    actor: str = "cli"


@dataclass
class ImportReport:
    file: str
    list: str
    rows: int = 0
    added: int = 0  # new subscribers
    subscribed: int = 0  # new memberships of this list (new and existing subscribers)
    confirmed: int = 0  # pending memberships confirmed by an import with --confirmed
    updated: int = 0  # existing subscribers whose data changed (--update)
    unchanged: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    first_rejects: list[dict[str, Any]] = field(default_factory=list)
    rejects_file: str | None = None
    dry_run: bool = False
    seconds: float = 0.0
    status: str = "pending"  # membership status given to new members
    # Accepted addresses that need a relay with SMTPUTF8 (non-ASCII: chloë@…), and the
    # lines of the first SHOWN_REJECTS of them.
    smtputf8: int = 0
    smtputf8_lines: list[int] = field(default_factory=list)
    send_confirmation: bool = False
    confirmations_queued: int = 0  # confirmation mails queued (--send-confirmation)
    already_asked: int = 0  # pending people with a confirmation already queued or sent

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file, "list": self.list, "dry_run": self.dry_run, "rows": self.rows,
            "added": self.added, "subscribed": self.subscribed, "status": self.status,
            "confirmed": self.confirmed, "updated": self.updated, "unchanged": self.unchanged,
            "rejected": sum(self.rejected.values()), "rejected_by_reason": dict(self.rejected),
            "first_rejects": self.first_rejects, "rejects_file": self.rejects_file,
            "smtputf8": self.smtputf8, "smtputf8_lines": self.smtputf8_lines,
            "send_confirmation": self.send_confirmation,
            "confirmations_queued": self.confirmations_queued,
            "already_asked": self.already_asked,
            "seconds": round(self.seconds, 3),
        }


class _Rejects:
    """Writes rejected rows (with line, reason, detail and the original cells) as CSV."""

    def __init__(self, path: Path | None, header: tuple[str, ...], delimiter: str,
                 report: ImportReport) -> None:
        self.path, self.header, self.delimiter, self.report = path, header, delimiter, report
        self._fh: Any = None
        self._writer: Any = None

    def add(self, line: int, reason: str, detail: str, raw: list[str]) -> None:
        self.report.rejected[reason] += 1
        if len(self.report.first_rejects) < SHOWN_REJECTS:
            self.report.first_rejects.append({"line": line, "reason": reason, "detail": detail})
        if self.path is None:
            return
        if self._writer is None:
            # 0600, also when it replaces an older one: the file holds addresses.
            self._fh = open(open_private(self.path), "w", encoding="utf-8",  # noqa: SIM115
                            newline="")
            self._writer = csv.writer(self._fh, delimiter=self.delimiter)
            self._writer.writerow(["line", "reason", "detail", *self.header])
        self._writer.writerow([line, reason, detail, *raw])

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self.report.rejects_file = str(self.path)


class _Block:
    """One block of the file: its bytes, and its rows' cells parsed only when needed."""

    def __init__(self, first_line: int, data: bytes, reader: CsvReader) -> None:
        self.first_line, self.data, self._reader = first_line, data, reader
        self._cells: dict[int, list[str]] | None = None

    def cells(self, line: int) -> list[str]:
        """The original cells of a row (for the rejects file; rejects are few)."""
        if self._cells is None:
            self._cells = dict(parse_block(self.data, self.first_line,
                                           self._reader.encoding, self._reader.delimiter))
        return self._cells.get(line, [])


def _checked(reader: CsvReader, plan: ColumnPlan, hash_key: bytes, workers: int
             ) -> Iterator[tuple[_Block, list[CheckedRow]]]:
    """Blocks with their check results, in file order; checked in parallel if workers>1.

    At most a few blocks are in flight, so a huge file is never read ahead into memory
    (Pool.imap would read the whole input eagerly).
    """
    args = (plan, hash_key, reader.encoding, reader.delimiter)

    def result(block: _Block, checked: list[CheckedRow]) -> tuple[_Block, list[CheckedRow]]:
        if checked and checked[0].error == FATAL:
            message, _, hint = checked[0].detail.partition("\n")
            raise ImportFailed(message, hint=hint or None)
        return block, checked

    blocks = (_Block(first, data, reader) for first, data in reader.blocks(BLOCK_BYTES))
    if workers == 0:
        for block in blocks:
            yield result(block, check_block(block.data, block.first_line, *args))
        return
    ctx = multiprocessing.get_context("spawn")  # no fork: this process holds DB handles
    with ctx.Pool(workers) as pool:
        pending: deque[tuple[_Block, Any]] = deque()
        for block in blocks:
            pending.append((block, pool.apply_async(
                check_block, (block.data, block.first_line, *args))))
            if len(pending) >= 3 * workers:
                done, future = pending.popleft()
                yield result(done, future.get())
        while pending:
            done, future = pending.popleft()
            yield result(done, future.get())


class _IdRanges:
    """The subscriber ids this import created, as merged [low, high] ranges.

    Ids come from one sequence, so a quiet database gives one range for the whole import:
    memory stays flat however many people are added, yet membership is exact.
    """

    def __init__(self) -> None:
        self._lows: list[int] = []
        self._highs: list[int] = []

    def add(self, ids: list[int]) -> None:
        for i in sorted(ids):
            if self._highs and i == self._highs[-1] + 1:
                self._highs[-1] = i
            elif not self._highs or i > self._highs[-1]:
                self._lows.append(i)
                self._highs.append(i)
            else:  # out of order (concurrent writers on PostgreSQL): insert in place
                at = bisect.bisect_left(self._lows, i)
                self._lows.insert(at, i)
                self._highs.insert(at, i)

    def __contains__(self, i: int) -> bool:
        at = bisect.bisect_right(self._lows, i) - 1
        return at >= 0 and i <= self._highs[at]


class _Writer:
    """Applies checked batches to the database on one connection (one transaction)."""

    def __init__(self, conn: Connection, list_id: int, double_optin: bool,
                 options: ImportOptions, source: str, report: ImportReport,
                 rejects: _Rejects) -> None:
        self.conn, self.list_id, self.options = conn, list_id, options
        self.source, self.report, self.rejects = source, report, rejects
        self.confirmed = options.confirmed or not double_optin
        self.status = (SubscriptionStatus.CONFIRMED if self.confirmed
                       else SubscriptionStatus.PENDING).value
        report.status = self.status
        report.send_confirmation = self.ask = options.send_confirmation and not self.confirmed
        # Duplicates in the file. A person this import created is recognised by id
        # (`_created`); a person who existed before is remembered in a temporary table
        # keyed by id. Both keep memory flat, whatever the size of the file.
        self._created = _IdRanges()
        conn.execute(text("DROP TABLE IF EXISTS mailer_import_seen"))
        conn.execute(text("CREATE TEMPORARY TABLE mailer_import_seen "
                          "(id INTEGER PRIMARY KEY, line INTEGER NOT NULL)"))
        if conn.dialect.name == "sqlite":
            # The address index takes random inserts: a bigger page cache than
            # SQLite's 2 MB default keeps a large import from thrashing (reset in close()).
            conn.exec_driver_sql("PRAGMA cache_size=-65536")
        self._seen_before = SelectIn(conn, "SELECT id, line FROM mailer_import_seen "
                                            "WHERE id {IN}")
        self._seen = Insert(conn, "mailer_import_seen", ("id", "line"),
                             suffix=" ON CONFLICT DO NOTHING RETURNING id",
                             pg_types=("integer", "integer"))
        self._suppressed = SelectIn(conn, "SELECT email_hash FROM suppression "
                                           "WHERE email_hash {IN}")
        # A suppression list of ordinary size is read once; a huge one is asked per batch.
        self._all_suppressed: set[str] | None = None
        if conn.execute(text("SELECT count(*) FROM suppression")).scalar_one() <= 100_000:
            self._all_suppressed = set(conn.execute(
                text("SELECT email_hash FROM suppression")).scalars())
        self._existing = SelectIn(conn, "SELECT id, email, status, first_name, infix, "
                                         "last_name, language, attributes FROM subscriber "
                                         "WHERE email {IN}")
        self._members = SelectIn(conn, "SELECT subscriber_id, status FROM subscription "
                                        "WHERE list_id = ? AND subscriber_id {IN}")
        self._insert_people = Insert(conn, SUB, (
            "email", "first_name", "infix", "last_name", "language", "attributes", "status",
            "created_at", "updated_at"), serial="id")
        self._insert_members = Insert(conn, MEMBER, (
            "subscriber_id", "list_id", "status", "source", "created_at", "updated_at",
            "confirmed_at"))
        self._insert_events = Insert(conn, EVENT, (
            "subscriber_id", "list_id", "action", "at", "source", "consent", "confirmed"))
        self._timestamp = processor(conn, SUB.c.created_at)
        self._add_new = _NewPeople(conn, list_id, self.status, self.confirmed, source,
                                   options.consent) \
            if conn.dialect.name == "postgresql" else None

    def close(self) -> None:
        self.conn.execute(text("DROP TABLE IF EXISTS mailer_import_seen"))
        if self._add_new is not None:
            self._add_new.close()
        if self.conn.dialect.name == "sqlite":
            self.conn.exec_driver_sql("PRAGMA cache_size=-2000")

    def apply(self, block: _Block, checked: list[CheckedRow]) -> None:
        report = self.report
        report.rows += len(checked)

        def reject(line: int, reason: str, detail: str) -> None:
            self.rejects.add(line, reason, detail, block.cells(line))

        in_batch: dict[str, int] = {}
        rows: list[CheckedRow] = []
        for row in checked:
            if row.error:
                reject(row.line, row.error, row.detail)
            elif row.email in in_batch:
                reject(row.line, "duplicate", f"same address as line {in_batch[row.email]}")
            else:
                in_batch[row.email] = row.line  # type: ignore[index]
                rows.append(row)
        if not rows:
            return
        emails = list(in_batch)
        if self._all_suppressed is not None:
            suppressed = self._all_suppressed
        else:
            suppressed = {h for (h,) in self._suppressed([r.email_hash for r in rows])}
        now = utcnow()
        stamp = self._timestamp(now)
        created: list[int] = []
        if self._add_new is not None:
            # PostgreSQL: the people not in the database yet go in now, with their
            # membership and consent event; only the others are read
            created, taken = self._add_new(
                [r for r in rows if r.email_hash not in suppressed], stamp)
            existing = {r.email: r for r in self._existing(taken)}
        else:
            existing = {r.email: r for r in self._existing(emails)}
        # People who existed before this import and are met for the first time in it.
        known = {old.id: in_batch[email] for email, old in existing.items()
                 if old.id not in self._created}
        first = {i for (i,) in self._seen(list(known.items()))} if known else set()
        earlier = dict(self._seen_before([i for i in known if i not in first])) \
            if len(first) < len(known) else {}
        members = dict(self._members(list(first), self.list_id))

        new_people: list[CheckedRow] = []
        join_ids: list[int] = []
        confirm_ids: list[int] = []
        pending_ids: list[int] = []  # already pending on this list before this import
        updates: list[dict[str, Any]] = []
        for row in rows:
            old = existing.get(row.email)
            if row.email_hash in suppressed:
                reject(row.line, "suppressed", "on the suppression list")
                continue
            if old is None:
                new_people.append(row)
            elif old.id in self._created:
                reject(row.line, "duplicate", "same address as an earlier line")
                continue
            elif old.id in earlier:
                reject(row.line, "duplicate", f"same address as line {earlier[old.id]}")
                continue
            elif old.status == GlobalStatus.BLOCKLISTED:
                reject(row.line, "blocklisted", "the subscriber is blocklisted")
                continue
            elif (status := members.get(old.id)) == SubscriptionStatus.UNSUBSCRIBED:
                reject(row.line, "unsubscribed", "unsubscribed from this list earlier")
                continue
            else:
                joined = status is None
                upgraded = status == SubscriptionStatus.PENDING and self.confirmed
                if joined:
                    join_ids.append(old.id)
                elif upgraded:
                    confirm_ids.append(old.id)
                elif status == SubscriptionStatus.PENDING:
                    pending_ids.append(old.id)
                change = self._changes(old, row) if self.options.update else None
                if change:
                    updates.append(change)
                elif not joined and not upgraded:
                    report.unchanged += 1
            if needs_smtputf8(row.email):  # type: ignore[arg-type]
                report.smtputf8 += 1
                if len(report.smtputf8_lines) < SHOWN_REJECTS:
                    report.smtputf8_lines.append(row.line)
        unwritten = join_ids  # joiners whose membership and consent event are to write
        if new_people:
            if self._add_new is not None:  # in already, with membership and event
                ids = created
                unwritten = list(join_ids)
            else:
                active = GlobalStatus.ACTIVE.value
                # The new ids, in any order: each new subscriber gets the same membership.
                ids = [i for (i,) in self._insert_people([
                    (r.email, r.first_name, r.infix, r.last_name, r.language, r.attributes,
                     active, stamp, stamp) for r in new_people])]
            report.added += len(ids)
            self._created.add(ids)
            join_ids.extend(ids)
        if join_ids:
            confirmed_at = stamp if self.confirmed else None
            self._insert_members([
                (sid, self.list_id, self.status, self.source, stamp, stamp, confirmed_at)
                for sid in unwritten])
            report.subscribed += len(join_ids)
        if confirm_ids:
            self.conn.execute(update(MEMBER).where(
                MEMBER.c.list_id == self.list_id,
                MEMBER.c.subscriber_id == bindparam("sid")).values(
                status=SubscriptionStatus.CONFIRMED.value, confirmed_at=now, updated_at=now),
                [{"sid": sid} for sid in confirm_ids])
            report.confirmed += len(confirm_ids)
        if join_ids or confirm_ids:
            action, consent = ConsentAction.IMPORT.value, self.options.consent
            self._insert_events([
                (sid, self.list_id, action, stamp, self.source, consent, self.confirmed)
                for sid in (*unwritten, *confirm_ids)])
            if self.options.start_sequences and self.confirmed:
                from mailer.automation.sequences import start_members

                start_members(self.conn, self.list_id, [*join_ids, *confirm_ids], now)
        if updates:
            self._update_people(updates, now)
            report.updated += len(updates)
        if self.ask:
            self._ask([*join_ids, *pending_ids])

    def _ask(self, pending: list[int]) -> None:
        """Queue the confirmation mail for these pending members, unless one is already
        queued or was sent."""
        from mailer.delivery.notices import queue

        ask, asked = queue(self.conn, NoticeKind.CONFIRM, self.list_id, pending,
                           again=False)
        self.report.confirmations_queued += len(ask)
        self.report.already_asked += len(asked)

    def _update_people(self, updates: list[dict[str, Any]], now: Any) -> None:
        # One statement per set of changed columns, each run as executemany.
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for change in updates:
            sid = change.pop("sid")
            cols = tuple(sorted(change))
            params = {f"v_{k}": v for k, v in change.items()}
            groups.setdefault(cols, []).append({**params, "sid": sid, "v_updated_at": now})
        for cols, params in groups.items():
            stmt = update(SUB).where(SUB.c.id == bindparam("sid")).values(
                {c: bindparam(f"v_{c}") for c in (*cols, "updated_at")})
            self.conn.execute(stmt, params)

    @staticmethod
    def _changes(old: Any, row: CheckedRow) -> dict[str, Any] | None:
        """What --update changes: names and language when given, attributes merged."""
        change: dict[str, Any] = {}
        for name in ("first_name", "infix", "last_name", "language"):
            value = getattr(row, name)
            if value is not None and value != getattr(old, name):
                change[name] = value
        given = json.loads(row.attributes) if row.attributes else {}
        if given:
            current = old.attributes
            if isinstance(current, str | bytes):  # SQLite hands back the JSON text
                current = json.loads(current)
            merged = {**(current or {}), **given}
            if merged != current:
                change["attributes"] = merged
        if not change:
            return None
        change["sid"] = old.id
        return change


class _NewPeople:
    """PostgreSQL: the people of a batch not in the database yet, written in one
    statement with their membership and consent event; those already there are left
    alone and named.

    Each person costs three rows, their indexes and four foreign-key checks on the
    server, whatever the client does; what the client can save is its own work and the
    waits between. The batch is copied (COPY, formatted by psycopg's C code: as array
    parameters psycopg escaped every string in Python, 40 us a row) into a temporary
    table, and one statement adds the new people, their memberships and consent events
    from it: no look-up before, no ids drawn first, no round trip between the three
    tables. The new ids follow the file's order, as they do on SQLite."""

    TABLE = "mailer_import_batch"
    COLUMNS = ("line", "email", "first_name", "infix", "last_name", "language", "attributes")
    SQL = f"""
WITH added AS (
    INSERT INTO subscriber (email, first_name, infix, last_name, language, attributes,
                            status, created_at, updated_at)
    SELECT email, first_name, infix, last_name, language, attributes, %(active)s, %(at)s,
           %(at)s
    FROM {TABLE} ORDER BY line
    ON CONFLICT (email) DO NOTHING
    RETURNING id, email),
members AS (
    INSERT INTO subscription (subscriber_id, list_id, status, source, created_at,
                              updated_at, confirmed_at)
    SELECT id, %(list_id)s, %(status)s, %(source)s, %(at)s, %(at)s, %(confirmed_at)s
    FROM added),
events AS (
    INSERT INTO consent_event (subscriber_id, list_id, action, at, source, consent,
                               confirmed)
    SELECT id, %(list_id)s, %(action)s, %(at)s, %(source)s, %(consent)s, %(confirmed)s
    FROM added)
SELECT ARRAY(SELECT id FROM added ORDER BY id),
       ARRAY(SELECT email FROM {TABLE} WHERE email NOT IN (SELECT email FROM added))"""

    def __init__(self, conn: Connection, list_id: int, status: str, confirmed: bool,
                 source: str, consent: str) -> None:
        self.conn = conn
        self.fixed = {"list_id": list_id, "status": status, "source": source,
                      "consent": consent, "confirmed": confirmed,
                      "active": GlobalStatus.ACTIVE.value,
                      "action": ConsentAction.IMPORT.value}
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self.TABLE}")
        conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {self.TABLE} (line integer, "
                             "email text, first_name text, infix text, last_name text, "
                             "language text, attributes jsonb)")

    def __call__(self, rows: list[CheckedRow], at: Any) -> tuple[list[int], list[str]]:
        """(the new people's ids, the addresses already in the database)."""
        if not rows:
            return [], []
        self.conn.exec_driver_sql(f"TRUNCATE {self.TABLE}")
        raw = self.conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cursor, cursor.copy(
                f"COPY {self.TABLE} ({', '.join(self.COLUMNS)}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row((r.line, r.email, r.first_name, r.infix, r.last_name,
                                r.language, r.attributes))
        confirmed_at = at if self.fixed["confirmed"] else None
        ids, taken = self.conn.exec_driver_sql(self.SQL, {
            **self.fixed, "at": at, "confirmed_at": confirmed_at}).one()
        return ids, taken

    def close(self) -> None:
        self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self.TABLE}")


def import_csv(session: Session, hash_key: bytes, path: Path, options: ImportOptions,
               progress: Callable[[int, int], None] | None = None) -> ImportReport:
    """Import `path` into a list inside the session's transaction; the caller commits.

    For a dry run the caller rolls back: everything is checked and counted exactly as for
    a real import, the rejects file is written, and the database keeps nothing.
    """
    started = time.perf_counter()
    if not options.consent or not options.consent.strip():
        raise InvalidInput('Say which consent these people gave: --consent "webform 2026-03".')
    mailing_list = get_list(session, options.list_slug)
    assert mailing_list.id is not None
    if options.send_confirmation and options.confirmed:
        raise InvalidInput("--send-confirmation asks people to confirm, --confirmed says "
                           "they already did: give one of the two.")
    if options.send_confirmation and mailing_list.optin != OptIn.DOUBLE:
        raise InvalidInput(f"{mailing_list.slug!r} is a single opt-in list: nobody there "
                           "confirms, so there is no confirmation mail to send.",
                           hint="Leave out --send-confirmation.")
    try:
        binary = path.open("rb")
    except OSError as exc:
        raise ImportFailed(f"Cannot open {path}: {exc.strerror}") from None
    report = ImportReport(file=path.name, list=mailing_list.slug, dry_run=options.dry_run)
    with binary:
        try:
            reader = CsvReader(binary, delimiter=options.delimiter, encoding=options.encoding)
        except LookupError:
            raise InvalidInput(f"Unknown encoding {options.encoding!r}.") from None
        except OSError as exc:
            raise ImportFailed(f"Cannot read {path}: {exc.strerror}") from None
        plan = ColumnPlan.from_header(reader.header, options.mapping,
                                      options.default_language, reader.delimiter)
        size = path.stat().st_size
        # This process writes the database; the other cores parse and check rows.
        workers = options.workers if options.workers is not None else (
            max(1, min((os.cpu_count() or 1) - 1, 4)) if size >= PARALLEL_FROM_BYTES else 0)
        rejects = _Rejects(options.rejects_path, plan.header, reader.delimiter, report)
        writer = _Writer(session.connection(), mailing_list.id,
                         mailing_list.optin == OptIn.DOUBLE, options,
                         f"import {path.name}", report, rejects)
        try:
            for block, checked in _checked(reader, plan, hash_key, workers):
                writer.apply(block, checked)
                if progress is not None:
                    progress(report.rows, reader.bytes_read)
        finally:
            rejects.close()
        writer.close()
    session.add(AuditLog(actor=options.actor, action="subscribers.import", detail={
        k: v for k, v in report.as_dict().items() if k not in ("first_rejects", "rejects_file")
    }))
    session.flush()
    report.seconds = time.perf_counter() - started
    return report
