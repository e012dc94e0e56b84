"""Whether `mailer run` has anything to do, in a few queries, without the models or the
sending side (issue 17, point 5: cron starts `mailer run` every minute, and most minutes
nothing is due). Conservative: anything it is not sure of counts as work, and then
`run_due` (runner.py) does the real thing, with its own queries.

Work is: a return source to read, the daily retention purge, an occurrence of an active
recurring campaign, a scheduled campaign whose time has come, a sending campaign, a
notice (confirmation, welcome, export) queued, or deferred or claimed until a time now
past. These are the conditions of runner.run_due, recurring.materialize,
notices._claim and retention.due; tests/test_startup.py checks each one makes a run
take the full path.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import Engine

from mailer.dbtypes import Timestamp

__all__ = ["IDLE_SUMMARY", "nothing_due"]

# What `mailer run --json` prints when nothing was due: runner.RunSummary's fields, as
# run_due leaves them when there was nothing (the notices counted, all zero).
IDLE_SUMMARY: dict[str, object] = {
    "started": [], "not_started": {}, "campaigns": {}, "finished": [], "stopped": None,
    "interrupted": None, "waiting": 0,
    "notices": {"sent": 0, "deferred": 0, "failed": 0, "skipped": 0},
    "returns": {}, "returns_error": None, "purged": {}, "recurring": [],
}

_NOW = sa.bindparam("now", type_=Timestamp())
_c = sa.column
_WORK = [
    sa.select(sa.literal(1)).select_from(sa.table("campaign")).where(
        (_c("state") == "sending") | ((_c("state") == "scheduled") & (_c("scheduled_at") <= _NOW))),
    sa.select(sa.literal(1)).select_from(sa.table("recurring_campaign")).where(
        (_c("state") == "active") & (_c("next_at") <= _NOW)),
    sa.select(sa.literal(1)).select_from(sa.table("notice")).where(
        (_c("state") == "queued") | (_c("state").in_(["deferred", "sending"])
                                     & (_c("next_attempt_at") <= _NOW))),
]
_LAST_PURGE = sa.select(sa.func.max(_c("at", Timestamp()))).select_from(
    sa.table("audit_log")).where(_c("action") == "gdpr.purge")


def nothing_due(engine: Engine, *, feedback_sources: bool, now: datetime) -> bool:
    """True when a run at `now` would find nothing to do (see the module's doc)."""
    if feedback_sources:
        return False
    with engine.connect() as conn:
        last = conn.execute(_LAST_PURGE).scalar_one_or_none()
        if last is None or now - last >= timedelta(days=1):
            return False
        return not any(conn.execute(query.limit(1), {"now": now}).first()
                       for query in _WORK)
