"""The engine's clock, importable without SQLAlchemy (issue 17, point 5: an idle `mailer
run` asks it before it knows whether it needs a database layer at all). dbtypes.py
re-exports it, and stores a timestamp on SQLite as `micros`."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

__all__ = ["EPOCH", "MICROSECOND", "TEST_CLOCK", "micros", "utcnow"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)

TEST_CLOCK = "TEST_MAILER_NOW"  # tests only: see utcnow()


def utcnow() -> datetime:
    """Now, in UTC, timezone-aware: what every timestamp column stores.

    The one test hook on the clock: with TEST_MAILER_NOW set (an ISO 8601 time with its
    offset, "2027-03-28T01:00:00+00:00") the engine's now stands still at that time, so a
    test can walk a recurring campaign through months and DST changes in a few runs
    (tests/test_recurring.py). Never set it in production."""
    fake = os.environ.get(TEST_CLOCK)
    if fake:
        return datetime.fromisoformat(fake).astimezone(UTC)
    return datetime.now(UTC)


def micros(value: datetime) -> int:
    """A timezone-aware time as SQLite stores it: integer microseconds since 1970."""
    return (value - EPOCH) // MICROSECOND
