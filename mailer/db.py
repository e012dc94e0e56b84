"""Database engine, sessions and schema migrations (Alembic).

SQLite is the embedded default: WAL journal (readers never block the writer), a busy
timeout (a second `mailer` process waits instead of failing) and foreign keys on (SQLite
leaves them off per connection). The same code runs on PostgreSQL via `database_url`.

Durability: SQLite runs at `synchronous=NORMAL`, where a commit survives a crash of the
process but not a power loss (the WAL is synced at checkpoints, not at each commit).
That is right for most writes, not for the ones that stand between a message and a
duplicate: a "sending" mark lost to a power cut puts the delivery back in the queue,
and it is sent again after the restart. Those commits go through `durable_begin`, at
`synchronous=FULL`: the WAL is synced before the commit returns, with every commit
before it (bench/delivery_bench.py measures the cost). On PostgreSQL the same commits
run with `synchronous_commit` on, also where the server's default was turned off.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from mailer.errors import DatabaseBehind, DatabaseError

if TYPE_CHECKING:  # imported where used: an idle `mailer run` needs none of them
    from alembic.config import Config as AlembicConfig
    from sqlalchemy import Connection, Engine
    from sqlmodel import Session

__all__ = [
    "SchemaStatus",
    "check_schema",
    "durable_begin",
    "make_engine",
    "schema_status",
    "session_scope",
    "upgrade",
]

MIGRATIONS = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_MS = 10_000
SYNCHRONOUS = "NORMAL"  # every SQLite connection's level between durable commits
DURABLE = "FULL"  # durable_begin's (bench/delivery_bench.py --marks both sets it NORMAL)


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # Python's sqlite3 opens an implicit transaction lazily; autocommit off is right for
    # SQLAlchemy, but the pragmas must run outside one.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA page_size=8192")  # only takes effect on a new, empty database
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA synchronous={SYNCHRONOUS}")  # durable except on power loss
    # Deleted content is overwritten with zeros, so an erased person's address does not
    # linger in free space (privacy/erase.py); a memset per freed cell.
    cur.execute("PRAGMA secure_delete=ON")
    cur.close()


def _create_private(path: Path) -> None:
    """Create a new SQLite file as 0600: it holds personal data (WAL files inherit this)."""
    if path.exists():
        return
    if not path.parent.is_dir():
        raise DatabaseError(f"The folder for the database does not exist: {path.parent}")
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def make_engine(url: str, **kwargs: object) -> Engine:
    """An engine for `url`, with SQLite tuned as described above."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:" and not path.startswith("file:"):
                _create_private(Path(path))
            engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000},
                                   **kwargs)
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True, **kwargs)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise DatabaseError(f"Invalid database_url: {exc}") from None
    return engine


@contextmanager
def durable_begin(engine: Engine) -> Iterator[Connection]:
    """`engine.begin()` whose commit is on disk when the block ends, power loss included
    (SQLite: synchronous=FULL for this transaction; PostgreSQL: synchronous_commit on)."""
    with engine.connect() as conn:
        if conn.dialect.name != "sqlite":
            with conn.begin():
                # on even where the server's default was turned off; for this one only
                conn.exec_driver_sql("SET LOCAL synchronous_commit = on")
                yield conn
            return
        # The level can only change outside a transaction; the sqlite3 module opens one
        # at the first write, not for a PRAGMA. It goes back before the connection does.
        conn.exec_driver_sql(f"PRAGMA synchronous={DURABLE}")
        conn.commit()
        try:
            with conn.begin():
                yield conn
        finally:
            conn.exec_driver_sql(f"PRAGMA synchronous={SYNCHRONOUS}")
            conn.commit()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose transaction commits at the end of the block, or rolls back."""
    from sqlmodel import Session

    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def _alembic_config(engine: Engine) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


class SchemaStatus:
    """Where a database stands against the migrations the code ships."""

    def __init__(self, current: str | None, head: str, pending: list[str]) -> None:
        self.current = current
        self.head = head
        self.pending = pending

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def schema_status(engine: Engine) -> SchemaStatus:
    """Current revision, head revision and the revisions not yet applied (oldest first)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.exc import OperationalError

    script = ScriptDirectory.from_config(_alembic_config(engine))
    head = script.get_current_head()
    assert head is not None
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise DatabaseError(f"Cannot open the database: {exc.orig}") from None
    if current is not None and current not in {rev.revision for rev in script.walk_revisions()}:
        raise DatabaseError(
            f"The database was migrated by a newer mailer (revision {current}); this one "
            f"knows revisions up to {head}.",
            hint="Run the newer mailer, or restore a backup made with this version "
                 "(`mailer db restore`).")
    pending = [
        rev.revision for rev in script.iterate_revisions(head, current or "base")
    ]
    pending.reverse()
    return SchemaStatus(current, head, pending)


@cache
def _shipped_head() -> str | None:
    """The head revision of the migrations the code ships, read from their files without
    Alembic (~0.2 s of imports): the one revision no other names as its down_revision,
    or None when that is not one clear answer (then Alembic decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        revision = re.search(r"^revision\b[^=\n]*=\s*['\"]([^'\"]+)['\"]", text, re.M)
        down = re.search(r"^down_revision\b[^=\n]*=(.*)$", text, re.M)
        if revision is None or down is None:
            return None
        revisions.add(revision.group(1))
        parents.update(re.findall(r"['\"]([^'\"]+)['\"]", down.group(1)))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


VERSION_QUERY = "SELECT version_num FROM alembic_version"


def at_head(versions: list[str]) -> bool:
    """Whether the revisions VERSION_QUERY found are the shipped head, alone (False when
    it cannot tell: several rows, an unreadable head)."""
    head = _shipped_head()
    return head is not None and versions == [head]


def _at_head(engine: Engine) -> bool:
    """at_head for the database behind `engine` (False without a version table)."""
    import sqlalchemy as sa

    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(VERSION_QUERY)).all()
    except sa.exc.DBAPIError:  # no version table (or no database): Alembic says more
        return False
    return at_head([row[0] for row in rows])


def check_schema(engine: Engine) -> None:
    """Raise DatabaseBehind unless the database is at the code's head revision. The
    usual case (at the head) is one query; anything else goes to Alembic, which says
    what stands where."""
    if _at_head(engine):
        return
    status = schema_status(engine)
    if status.current is None:
        raise DatabaseBehind(
            "The database has no tables yet.", hint="Run `mailer db upgrade` first."
        )
    if not status.up_to_date:
        raise DatabaseBehind(
            f"The database is behind ({len(status.pending)} migration(s) to apply).",
            hint="Run `mailer db upgrade` (back up the database first).",
        )


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to `revision`."""
    from alembic import command
    from sqlalchemy.exc import OperationalError

    try:
        command.upgrade(_alembic_config(engine), revision)
    except OperationalError as exc:
        raise DatabaseError(f"Migration failed: {exc.orig}") from None
