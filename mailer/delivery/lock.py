"""One sender per project at a time: the run lock.

`mailer run` from cron every minute, a `mailer campaign send` in a terminal, a second
`mailer run` that starts while the first is still busy: only one of them sends. On SQLite
the lock is an advisory file lock (flock) beside the database file; on PostgreSQL it is
a session advisory lock, so it also holds between machines. Either is released by the
operating system or the server when the process dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mailer.errors import MailerError

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["LockBusy", "run_lock", "sqlite_lock"]


class LockBusy(MailerError):
    """Another mailer process holds the run lock."""


@contextlib.contextmanager
def run_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "sqlite":
        with sqlite_lock(engine.url.database or ""):
            yield
    else:
        with _advisory_lock(engine):
            yield


@contextlib.contextmanager
def sqlite_lock(database: str) -> Iterator[None]:
    """The run lock of the SQLite database file `database` (none for one in memory),
    without SQLAlchemy (an idle `mailer run` takes it: issue 17, point 5)."""
    if database in ("", ":memory:"):
        yield
        return
    with _file_lock(Path(database).with_name(Path(database).name + ".run-lock")):
        yield


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise LockBusy(f"Another mailer process (pid {holder or '?'}) is sending for "
                           "this project.", hint="Wait for it, or look at `mailer campaign "
                                                 "show`.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def _advisory_lock(engine: Engine) -> Iterator[None]:
    import sqlalchemy as sa

    key = int.from_bytes(hashlib.sha256(b"mailer run lock").digest()[:8], "big", signed=True)
    with engine.connect() as conn:
        got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        conn.commit()
        if not got:
            raise LockBusy("Another mailer process is sending for this project.",
                           hint="Wait for it, or look at `mailer campaign show`.")
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()
