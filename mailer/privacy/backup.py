"""Backups of the database, and restoring them (docs/backups.md).

SQLite: SQLite's online backup API copies the database page by page while a send goes on.
The copy is taken inside one read transaction on the source, so every page comes from the
same snapshot: a concurrent writer neither restarts the copy nor is held up by it (in WAL
mode a reader never blocks the writer), and the row counts read in that transaction are
exactly what the copy must hold. The copy is switched to a rollback journal (one
self-contained file), checked with `PRAGMA integrity_check`, counted, and only then moved
to its name.

PostgreSQL: `pg_dump --format=custom` from a snapshot exported by a REPEATABLE READ
transaction in which the rows are counted; the archive is then read back in full with
`pg_restore` (its table of contents, then every row of data counted against the snapshot).
The password travels in PGPASSWORD, never on a command line (where `ps` shows it).

Either way the file is created 0600 before a byte is in it, the folder made for it 0700,
and the audit trail records the counts (never a path: a file name can hold a name).

Restoring goes into a new folder or an empty database, never over a live one unless
asked (`force`), and checks the result: integrity, the row counts against the backup, and
where the schema stands against the code (`mailer db status`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from mailer.db import BUSY_TIMEOUT_MS, make_engine, schema_status
from mailer.delivery.lock import run_lock
from mailer.errors import DatabaseError, InvalidInput, MailerError
from mailer.models import AuditLog, utcnow
from mailer.privacy.private import mask_password, open_private, private_dir

__all__ = ["BackupReport", "RestoreReport", "backup_database", "backup_kind",
           "restore_database"]

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_MAGIC = b"PGDMP"
STEP_PAGES = 4096  # pages copied per backup step (32 MiB at mailer's 8 KiB pages)
SQLITE_NAME = "mailer.db"  # the file a restore makes in its folder
_NOTHING_KEPT = "Nothing was kept; try again."


@dataclass
class BackupReport:
    backend: str  # sqlite | postgresql
    file: Path
    bytes: int
    tables: dict[str, int]  # rows per table, at the backup's snapshot
    revision: str | None  # the schema revision in the copy
    head: str  # the revision this code needs
    seconds: float
    checks: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "file": str(self.file), "bytes": self.bytes,
                "tables": self.tables, "rows": sum(self.tables.values()),
                "revision": self.revision, "head": self.head,
                "up_to_date": self.revision == self.head, "checks": self.checks,
                "seconds": round(self.seconds, 2)}


@dataclass
class RestoreReport:
    backend: str
    url: str  # the restored database's URL, password masked
    file: Path | None  # SQLite: the restored file
    tables: dict[str, int]
    revision: str | None
    head: str
    pending: list[str]
    in_flight: int  # deliveries "sending" in the backup: "unknown" once a send resumes
    seconds: float
    checks: list[str] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        return self.revision == self.head

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "url": self.url,
                "file": str(self.file) if self.file else None, "tables": self.tables,
                "rows": sum(self.tables.values()), "revision": self.revision,
                "head": self.head, "pending": self.pending, "up_to_date": self.up_to_date,
                "in_flight": self.in_flight, "checks": self.checks,
                "seconds": round(self.seconds, 2)}


# -- backing up ----------------------------------------------------------------------------

def backup_database(engine: Engine, target: str | Path, *, actor: str,
                    force: bool = False) -> BackupReport:
    """Back the database up to `target`, verified: a file, or a folder to name one in
    (one that exists, or a path ending in /)."""
    started = time.monotonic()
    backend = engine.dialect.name
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseError(f"Backups of {backend} databases are not supported.")
    head = schema_status(engine).head  # also: the database can be opened
    folder = str(target).endswith(("/", os.sep))
    target = Path(target).expanduser()
    if folder or target.is_dir():
        stamp = datetime.now().strftime("%Y-%m-%d-%H%M%S")
        target = target / f"mailer-{stamp}.{'db' if backend == 'sqlite' else 'dump'}"
    if target.exists() and not force:
        raise InvalidInput(f"{target} exists.",
                           hint="Choose a new name, or add --force to replace it.")
    private_dir(target.parent)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    os.close(open_private(partial, exclusive=True))  # 0600 before the first byte
    try:
        if backend == "sqlite":
            tables, revision, checks = _sqlite_backup(engine, partial)
        else:
            tables, revision, checks = _pg_backup(engine, partial)
        _sync(partial)
        os.replace(partial, target)
        _sync(target.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    report = BackupReport(backend, target, target.stat().st_size, tables, revision, head,
                          time.monotonic() - started, checks)
    _audit(engine, actor, "db.backup", {
        "backend": backend, "tables": tables, "rows": sum(tables.values()),
        "bytes": report.bytes, "revision": revision})
    return report


def _sqlite_backup(engine: Engine, partial: Path) -> tuple[dict[str, int], str | None,
                                                           list[str]]:
    database = engine.url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        raise DatabaseError("Only a SQLite database in a file can be backed up.")
    try:
        source = sqlite3.connect(database, isolation_level=None,
                                 timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise DatabaseError(f"Cannot open the database: {exc}") from None
    try:
        source.execute("BEGIN")  # one snapshot for the counts and every page copied
        tables = _sqlite_counts(source)  # the first read fixes the snapshot
        if not tables:
            raise DatabaseError("The database has no tables: there is nothing to back up.",
                                hint="Is database_url right? See `mailer config show`.")
        revision = _sqlite_revision(source)
        copy = sqlite3.connect(partial, isolation_level=None)
        try:
            source.backup(copy, pages=STEP_PAGES)
            copy.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
        finally:
            copy.close()
        source.execute("COMMIT")
    except sqlite3.Error as exc:
        raise DatabaseError(f"The backup failed: {exc}",
                            hint="Is there room on the disk? Try again.") from None
    finally:
        source.close()
    _verify_sqlite(partial, tables, against="the database at the moment of the backup")
    return tables, revision, ["integrity_check", "row counts"]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sqlite_counts(conn: sqlite3.Connection) -> dict[str, int]:
    names = [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    return {name: conn.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()[0]
            for name in names}


def _sqlite_revision(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:  # no such table
        return None
    return row[0] if row else None


def _verify_sqlite(path: Path, expected: dict[str, int], *, against: str) -> dict[str, int]:
    """Integrity check, then the rows per table compared with `expected`."""
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                raise DatabaseError(f"The copy fails its integrity check: {problems[0]}",
                                    hint=_NOTHING_KEPT)
            counts = _sqlite_counts(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise DatabaseError(f"The copy cannot be read back: {exc}") from None
    _compare(counts, expected, against)
    return counts


def _compare(counts: dict[str, int], expected: dict[str, int], against: str) -> None:
    for name, rows in expected.items():
        if counts.get(name) != rows:
            got = "no" if name not in counts else f"{counts[name]:,}"
            raise DatabaseError(f"The copy does not match: table {name} has {got} rows, "
                                f"{against} had {rows:,}.", hint=_NOTHING_KEPT)


def _pg_backup(engine: Engine, partial: Path) -> tuple[dict[str, int], str | None,
                                                       list[str]]:
    pg_dump, pg_restore = _pg_tool("pg_dump"), _pg_tool("pg_restore")
    conninfo, env = _libpq(engine.url)
    raw = engine.raw_connection()
    conn: Any = raw.driver_connection
    try:
        raw.rollback()  # the pool's ping may have opened a transaction
        conn.autocommit = True
        with _psycopg_errors("The backup failed"):
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
            tables = _pg_counts(conn)
            if not tables:
                raise DatabaseError("The database has no tables: there is nothing to back "
                                    "up.", hint="Is database_url right? See "
                                    "`mailer config show`.")
            revision = _pg_revision(conn)
            _run([pg_dump, "--format=custom", f"--file={partial}", f"--snapshot={snapshot}",
                  "--no-password", f"--dbname={conninfo}"], env, hint=_NOTHING_KEPT)
    finally:
        with contextlib.suppress(Exception):  # read only: nothing to keep
            conn.execute("ROLLBACK")
            conn.autocommit = False
        raw.close()
    _run([pg_restore, "--list", str(partial)], env, hint=_NOTHING_KEPT)  # the contents
    _compare(_archive_counts(pg_restore, partial), tables,
             "the database at the moment of the backup")
    return tables, revision, ["pg_restore --list", "row counts"]


@contextlib.contextmanager
def _psycopg_errors(what: str) -> Iterator[None]:
    """A driver error on a raw psycopg connection, as one line."""
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DatabaseError(f"{what}: {mask_password(reason)}") from None


def _pg_counts(conn: Any) -> dict[str, int]:
    """Rows per table (public's by name, others as schema.table), on a psycopg connection."""
    from psycopg import sql

    names = conn.execute(
        "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN "
        "('pg_catalog', 'information_schema') ORDER BY 1, 2").fetchall()
    return {(table if schema == "public" else f"{schema}.{table}"): conn.execute(
        sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema),
                                                     sql.Identifier(table))).fetchone()[0]
            for schema, table in names}


def _pg_revision(conn: Any) -> str | None:
    exists = conn.execute("SELECT to_regclass('alembic_version')").fetchone()[0]
    if exists is None:
        return None
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def _archive_counts(pg_restore: str, path: Path) -> dict[str, int]:
    """Read the whole archive back: the rows of every table's data, counted."""
    counts: dict[str, int] = {}
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen([pg_restore, "--data-only", "--file=-", str(path)],
                                    stdout=subprocess.PIPE, stderr=errors)
        except OSError as exc:
            raise MailerError(f"Cannot run {pg_restore}: {exc.strerror}") from None
        assert proc.stdout is not None
        table: str | None = None
        with proc.stdout:
            for line in proc.stdout:  # COPY text format: one line per row
                if table is not None:
                    if line == b"\\.\n":
                        table = None
                    else:
                        counts[table] += 1
                elif line.startswith(b"COPY "):
                    table = _copy_table(line)
                    counts[table] = 0
        if proc.wait() != 0:
            errors.seek(0)
            raise DatabaseError(f"{path.name} cannot be read back: "
                                f"{_first_error(errors.read().decode(errors='replace'))}")
    return counts


def _copy_table(line: bytes) -> str:
    """`COPY public.delivery (id, …) FROM stdin;` -> delivery (other schemas: s.table)."""
    name = line[5:].decode(errors="replace").split(" (", 1)[0].split(" FROM ", 1)[0]
    schema, _, table = name.rpartition(".")
    schema, table = schema.strip('"'), table.strip('"')
    return table if schema in ("", "public") else f"{schema}.{table}"


# -- restoring -----------------------------------------------------------------------------

def backup_kind(path: Path) -> str:
    """sqlite or postgresql, from the file's first bytes."""
    try:
        with path.open("rb") as fh:
            start = fh.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise MailerError(f"Cannot read {path}: {exc.strerror}") from None
    if start.startswith(SQLITE_MAGIC):
        return "sqlite"
    if start.startswith(PG_MAGIC):
        return "postgresql"
    raise InvalidInput(f"{path} is not a mailer backup (neither a SQLite database nor a "
                       "pg_dump archive).", hint="Give a file made by `mailer db backup`.")


def restore_database(source: Path, to: str, *, actor: str,
                     force: bool = False) -> RestoreReport:
    """Restore the backup `source` into `to`: a folder (SQLite: FOLDER/mailer.db) or the
    URL of an empty PostgreSQL database. A live one (a file that exists, a database with
    tables) is replaced only with `force`."""
    started = time.monotonic()
    kind = backup_kind(source)
    if kind == "sqlite":
        report = _restore_sqlite(source, _sqlite_target(to), force=force, actor=actor)
    else:
        report = _restore_pg(source, _pg_target(to), force=force, actor=actor)
    report.seconds = time.monotonic() - started
    return report


def _sqlite_target(to: str) -> Path:
    if "://" in to:
        url = _parse_url(to)
        if url.get_backend_name() != "sqlite" or not url.database:
            raise InvalidInput(f"This is a SQLite backup: it restores into a folder, not "
                               f"into {mask_password(to)}.",
                               hint="--to ./restored (a new folder), or a sqlite:/// URL.")
        return Path(url.database).expanduser().resolve()
    path = Path(to).expanduser().resolve()
    return path if path.is_file() else path / SQLITE_NAME


def _pg_target(to: str) -> URL:
    url = _parse_url(to) if "://" in to else None
    if url is None or url.get_backend_name() != "postgresql":
        raise InvalidInput("This is a PostgreSQL backup (pg_dump): it restores into an "
                           "empty PostgreSQL database.",
                           hint="--to postgresql://USER@HOST/NEWDB (createdb NEWDB first).")
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def _parse_url(text: str) -> URL:
    try:
        return make_url(text)
    except ArgumentError:
        raise InvalidInput(f"Not a database URL: {mask_password(text)}") from None


def _restore_sqlite(source: Path, target: Path, *, force: bool,
                    actor: str) -> RestoreReport:
    if target.exists() and not force:
        raise InvalidInput(f"{target} exists: it may be a live database.",
                           hint="Restore into a new folder, or add --force to replace it "
                                "(stop the mailer processes that use it first).")
    try:
        backup = sqlite3.connect(source.absolute().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise DatabaseError(f"Cannot open the backup {source}: {exc}") from None
    created = False
    try:
        expected = _sqlite_counts(backup)
        if not expected:
            raise DatabaseError(f"The backup {source} holds no tables.")
        private_dir(target.parent)
        if not target.exists():
            os.close(open_private(target, exclusive=True))  # 0600 before the first byte
            created = True
        os.chmod(target, 0o600)
        engine = make_engine(f"sqlite:///{target}")
        try:
            with run_lock(engine):  # no `mailer run` sends from it meanwhile
                copy = sqlite3.connect(target, isolation_level=None,
                                       timeout=BUSY_TIMEOUT_MS / 1000)
                try:
                    backup.backup(copy, pages=STEP_PAGES)
                    copy.execute("PRAGMA journal_mode=WAL")  # as every mailer connection
                finally:
                    copy.close()
            tables = _verify_sqlite(target, expected, against="the backup")
            return _restored(engine, "sqlite", f"sqlite:///{target}", target, tables,
                             actor=actor, force=force)
        finally:
            engine.dispose()
    except BaseException as exc:
        if created:
            for suffix in ("", "-wal", "-shm", "-journal", ".run-lock"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
        if isinstance(exc, sqlite3.Error):
            raise DatabaseError(f"The restore failed: {exc}") from None
        raise
    finally:
        backup.close()


def _restore_pg(source: Path, url: URL, *, force: bool, actor: str) -> RestoreReport:
    pg_restore = _pg_tool("pg_restore")
    shown = mask_password(url.render_as_string(hide_password=False))
    expected = _archive_counts(pg_restore, source)  # the whole archive reads, before a write
    engine = make_engine(url.render_as_string(hide_password=False))
    try:
        try:
            with engine.connect() as conn:
                existing = int(conn.execute(sa.text(
                    "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN "
                    "('pg_catalog', 'information_schema')")).scalar_one())
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[-1] if exc.orig else str(exc)
            raise DatabaseError(f"Cannot connect to {shown}: {mask_password(reason)}",
                                hint="Create the database first (createdb NAME).") from None
        if existing and not force:
            raise InvalidInput(f"The database {shown} already has {existing} tables: it "
                               "may be a live one.", hint="Restore into an empty database "
                               "(createdb NAME), or add --force to replace its tables.")
        conninfo, env = _libpq(url)
        command = [pg_restore, "--no-owner", "--no-privileges", "--exit-on-error",
                   "--single-transaction", "--no-password", f"--dbname={conninfo}"]
        if existing:
            command += ["--clean", "--if-exists"]
        with run_lock(engine):
            _run([*command, str(source)], env, hint="Nothing was changed: the restore "
                 "is one transaction.")
        with engine.connect() as conn, _psycopg_errors("The restored database cannot "
                                                       "be read"):
            counts = _pg_counts(conn.connection.driver_connection)
        tables = {name: counts.get(name, 0) for name in expected}
        _compare(tables, expected, "the backup")
        return _restored(engine, "postgresql", shown, None, tables, actor=actor,
                         force=force, checks=["row counts"])
    finally:
        engine.dispose()


def _restored(engine: Engine, backend: str, url: str, file: Path | None,
              tables: dict[str, int], *, actor: str, force: bool,
              checks: list[str] | None = None) -> RestoreReport:
    """Where the restored schema stands, what was in flight; the audit entry."""
    status = schema_status(engine)
    if "sender" in tables:
        # The senders the backup names do not work on this copy: their leases end now,
        # so their claims are void and what they had in flight is "unknown" at the next
        # send (delivery/claims.py), not theirs for another lease.
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM sender"))
    in_flight = 0
    if "delivery" in tables:
        with engine.connect() as conn:
            in_flight = int(conn.execute(sa.text(
                "SELECT count(*) FROM delivery WHERE state = 'sending'")).scalar_one())
    _audit(engine, actor, "db.restore", {
        "backend": backend, "tables": tables, "rows": sum(tables.values()),
        "revision": status.current, "in_flight": in_flight, "force": force})
    return RestoreReport(backend, url, file, tables, status.current, status.head,
                         status.pending, in_flight, 0.0,
                         checks or ["integrity_check", "row counts"])


# -- shared --------------------------------------------------------------------------------

def _audit(engine: Engine, actor: str, action: str, detail: dict[str, Any]) -> None:
    """An audit entry, when the schema has the trail (a database from before it has not)."""
    if not sa.inspect(engine).has_table(AuditLog.__tablename__):
        return
    table = AuditLog.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(table.insert().values(at=utcnow(), actor=actor[:100], action=action,
                                           detail=detail))


def _sync(path: Path) -> None:
    """fsync a file or a folder: the backup is on the disk when we say it is done."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pg_tool(name: str) -> str:
    """pg_dump or pg_restore: from PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which(name)
    if found:
        return found

    def version(path: str) -> int:
        part = Path(path).parts[-3]
        return int(part) if part.isdigit() else 0

    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=version)
    if candidates:
        return candidates[-1]
    raise MailerError(f"{name} is not installed.",
                      hint="Install the PostgreSQL client tools of the server's version "
                           "(Debian: apt-get install postgresql-client-15).")


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq connection URI without the password, and the environment that carries it."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = URL.create("postgresql", username=url.username, host=url.host, port=url.port,
                       database=url.database, query=url.query)  # no password in it
    return plain.render_as_string(hide_password=False), env


def _run(command: list[str], env: dict[str, str], *, hint: str) -> None:
    tool = Path(command[0]).name
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise MailerError(f"Cannot run {tool}: {exc.strerror}") from None
    if done.returncode != 0:
        raise DatabaseError(f"{tool} failed: {mask_password(_first_error(done.stderr))}",
                            hint=hint)


def _first_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    return lines[-1] if lines else "no reason given"
