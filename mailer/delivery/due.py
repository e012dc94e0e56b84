"""Whether `mailer run` has anything to do, in a few queries, without the models or the
sending side (issue 17, point 5: cron starts `mailer run` every minute, and most minutes
nothing is due). Conservative: anything it is not sure of counts as work, and then
`run_due` (runner.py) does the real thing, with its own queries.

Work is: a return source to read, the daily retention purge, an occurrence of an active
recurring campaign, a scheduled campaign whose time has come, a sending campaign (of kind
"campaign"), a delivery of the engine's own campaigns (notices: confirmation, welcome,
export; sequence steps) queued, or deferred until a time now past. These are the
conditions of runner.run_due, recurring.materialize, outbox.urgent_due and
retention.due; tests/test_startup.py checks each one makes a run take the full path.

The same queries answer an idle run that has neither SQLAlchemy nor the settings loaded:
`mailer run` compiles them (idle_queries) into its run cache (mailer/runcache.py), and
the next run executes that SQL on the driver. They are defined here only.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import Engine

from mailer.dbtypes import Timestamp

__all__ = ["IDLE_SUMMARY", "idle_queries", "nothing_due"]

# What `mailer run --json` prints when nothing was due: runner.RunSummary's fields, as
# run_due leaves them when there was nothing (the notices counted, all zero).
IDLE_SUMMARY: dict[str, object] = {
    "started": [], "not_started": {}, "campaigns": {}, "finished": [], "stopped": None,
    "interrupted": None, "waiting": 0,
    "notices": {"sent": 0, "deferred": 0, "failed": 0, "skipped": 0, "unknown": 0},
    "returns": {}, "returns_error": None, "purged": {}, "recurring": [],
    "steps": {"queued": 0, "waiting": 0, "stopped": 0},
}

_NOW = sa.bindparam("now", type_=Timestamp())
_c = sa.column
_WORK = [
    sa.select(sa.literal(1)).select_from(sa.table("campaign")).where(
        ((_c("state") == "sending") & (_c("kind") == "campaign"))
        | ((_c("state") == "scheduled") & (_c("scheduled_at") <= _NOW))),
    sa.select(sa.literal(1)).select_from(sa.table("recurring_campaign")).where(
        (_c("state") == "active") & (_c("next_at") <= _NOW)),
    # a sequence step due (automation/sequences.queue_due: the index on next_at)
    sa.select(sa.literal(1)).select_from(sa.table("sequence_progress")).where(
        _c("next_at") <= _NOW),
    # the engine's own campaigns (notices, steps) are always "sending": their due rows.
    # The state spelt out as its own condition, so the (campaign, state) index finds the
    # open rows: with only the OR, SQLite read every step and notice ever sent (2.5
    # million rows, 0.2 s: bench/sequence_bench.py)
    sa.select(sa.literal(1)).select_from(sa.table("delivery")).where(
        _c("campaign_id").in_(sa.select(_c("id")).select_from(sa.table("campaign")).where(
            (_c("kind") != "campaign") & (_c("state") == "sending")).scalar_subquery()),
        (_c("state") == "queued") | (_c("state") == "deferred"),
        (_c("state") == "queued") | (_c("next_attempt_at") <= _NOW)),
]
# The daily purge is due unless one was recorded less than a day before now.
_PURGED = sa.select(sa.literal(1)).select_from(sa.table("audit_log")).where(
    (_c("action") == "gdpr.purge")
    & (_c("at") > sa.bindparam("day_ago", type_=Timestamp()))).limit(1)


def idle_queries() -> tuple[sa.Select, list[sa.Select]]:
    """The purge query, then one query per kind of work (each a row when there is some);
    parameters `day_ago` and `now`."""
    return _PURGED, [query.limit(1) for query in _WORK]


def nothing_due(engine: Engine, *, feedback_sources: bool, now: datetime) -> bool:
    """True when a run at `now` would find nothing to do (see the module's doc)."""
    if feedback_sources:
        return False
    purged, work = idle_queries()
    with engine.connect() as conn:
        if conn.execute(purged, {"day_ago": now - timedelta(days=1)}).first() is None:
            return False
        return not any(conn.execute(query, {"now": now}).first() for query in work)
