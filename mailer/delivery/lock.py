"""The run lock.

On SQLite, one sender per project at a time: `mailer run` from cron every minute, a
`mailer campaign send` in a terminal, `mailer worker`, a second `mailer run` that starts
while the first is still busy: only one of them sends. The lock is an advisory file lock
(flock) beside the database file (`send_lock`, held for the whole command).

On PostgreSQL any number of senders share the outbox through claims (claims.py), so only
the start of campaigns (and the rest of `mailer run`'s housekeeping: returns, purge,
recurring campaigns, sequence steps) is one process's at a time: a session advisory lock
(`start_lock`), which also holds between machines. `run_lock` is both.

Either lock is released by the operating system or the server when the process dies, even
by SIGKILL.
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

__all__ = ["LockBusy", "run_lock", "send_lock", "sqlite_lock", "start_lock"]


class LockBusy(MailerError):
    """Another mailer process holds the run lock."""


@contextlib.contextmanager
def run_lock(engine: Engine) -> Iterator[None]:
    """Both locks: to start campaigns and send them (`campaign send`, `mailer run`'s
    question whether anything is due)."""
    with send_lock(engine), start_lock(engine):
        yield


@contextlib.contextmanager
def send_lock(engine: Engine) -> Iterator[None]:
    """What a sender holds while it sends: on SQLite the run lock (one sender); on
    PostgreSQL nothing (the claims share the outbox out)."""
    if engine.dialect.name == "sqlite":
        with sqlite_lock(engine.url.database or ""):
            yield
    else:
        yield


@contextlib.contextmanager
def start_lock(engine: Engine, *, busy_ok: bool = False) -> Iterator[bool]:
    """What starting campaigns takes: on PostgreSQL the advisory lock (LockBusy when
    another process holds it, or with `busy_ok` False yielded: do without); on SQLite
    nothing more (the sender holds `send_lock`). Yields whether it is held."""
    if engine.dialect.name == "sqlite":
        yield True
        return
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(_advisory_lock(engine))
        except LockBusy:
            if not busy_ok:
                raise
            yield False
            return
        yield True


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
            # one line (issue 17, point 1): who holds it, and why there is only one
            raise LockBusy(f"Another mailer process (pid {holder or '?'}) is sending for "
                           "this project. On SQLite one sender works at a time; several "
                           "workers need PostgreSQL (docs/scale-out.md).") from None
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
            raise LockBusy("Another mailer process is starting campaigns for this "
                           "project.", hint="Wait for it, or look at `mailer campaign show`.")
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()
