"""Retention (AVG/GDPR art. 5(1)(e)): personal data is kept no longer than needed.

    sign-ups never confirmed     after `pending_days` (30): the pending membership goes;
                                 a person with nothing else (never confirmed anywhere, never
                                 unsubscribed) goes with it. Not suppressed: they did not
                                 object, they just never said yes.
    delivery details             after `delivery_months` (24): who got which mail is cut
                                 (subscriber, reply, Message-ID cleared); the counts stay
    the text of returns          after `returns_days` (90): diagnostics cleared; returns
                                 nobody could be matched to are deleted
    the audit trail              after `audit_years` (5)

Each rule walks its table once, in windows of `WINDOW` keys: the rows due in a window are
read (a read never holds up a writer), then changed in batches of at most `BATCH` rows, one
short write transaction each, whose statement checks the rule again (a person who
confirms between the read and the write stays). So a send running at the same time waits
at most one batch for the database (SQLite has one writer), and no step re-reads what an
earlier one passed: 1,000,000 old deliveries in a 10,000,000-row outbox are one pass over
it (bench/privacy_bench.py, docs/performance.md). A dry run counts and changes nothing.

While a campaign is sending (looked at again every window), the batches are a fifth the
size and each is followed by a pause as long as it took: a sender commits a round of marks
before each message goes out, and a purge that takes the lock back the moment it lets go
halves its pace (measured: 97 msgs/s outside the purge, 45 during it); this way the lock
is free at least half the time, in gaps a waiting writer gets into.

`stop()` is asked before every window and every batch (`mailer run` passes its stop
signal, SIGINT or SIGTERM): a purge told to stop ends after the batch in hand, each batch
being whole and committed. The audit trail then says `gdpr.purge.stopped` with what went,
and the next `mailer run` purges again (its rules find only what is left).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from mailer.config import Privacy
from mailer.models import (
    AuditLog,
    Campaign,
    CampaignState,
    Delivery,
    FeedbackEvent,
    Subscriber,
    Subscription,
    utcnow,
)

__all__ = ["BATCH", "WINDOW", "Purged", "due", "purge"]

BATCH = 500  # rows changed in one write transaction (~0.1 s for deliveries: see below)
GENTLE = 5  # while a campaign is sending: batches of BATCH // GENTLE, each then a pause
WINDOW = 50_000  # keys looked at in one read
P = Subscriber.__table__  # type: ignore[attr-defined]
S = Subscription.__table__  # type: ignore[attr-defined]
D = Delivery.__table__  # type: ignore[attr-defined]
E = FeedbackEvent.__table__  # type: ignore[attr-defined]
A = AuditLog.__table__  # type: ignore[attr-defined]
FINAL = ("sent", "failed", "bounced", "skipped", "unknown")


@dataclass
class Purged:
    counts: dict[str, int] = field(default_factory=dict)
    longest_batch: float = 0.0  # seconds: the longest single write transaction
    paused: float = 0.0  # seconds left to other writers (while a campaign was sending)
    stopped: bool = False  # told to stop: the rules after the batch in hand were not done


def _at(value: datetime) -> sa.BindParameter[datetime]:
    return sa.literal(value, P.c.created_at.type)


def _rules(settings: Privacy, now: datetime) -> dict[str, tuple[Any, Any, Any, Any]]:
    """name: (table, key column, condition, change: None to delete, else the new values).
    A membership is keyed by its subscriber (the first column of its primary key)."""
    pending = now - timedelta(days=settings.pending_days)
    deliveries = now - timedelta(days=30 * settings.delivery_months)
    returns = now - timedelta(days=settings.returns_days)
    audit = now - timedelta(days=365 * settings.audit_years)
    return {
        # A person all of whose memberships are pending and old: they never said yes.
        "never_confirmed_people": (
            P, P.c.id, sa.and_(
                P.c.created_at < _at(pending),
                sa.exists().where(S.c.subscriber_id == P.c.id),
                ~sa.exists().where(S.c.subscriber_id == P.c.id,
                                   sa.or_(S.c.status != "pending",
                                          S.c.created_at >= _at(pending)))), None),
        "pending_memberships": (
            S, S.c.subscriber_id, sa.and_(S.c.status == "pending",
                                          S.c.created_at < _at(pending)), None),
        "delivery_details": (
            D, D.c.id, sa.and_(D.c.queued_at < _at(deliveries), D.c.state.in_(FINAL),
                               sa.or_(D.c.subscriber_id.is_not(None),
                                      D.c.last_reply.is_not(None))),
            {"subscriber_id": None, "last_reply": None, "message_id": None}),
        "unattributed_returns": (
            E, E.c.id, sa.and_(E.c.at < _at(returns), E.c.subscriber_id.is_(None)), None),
        "return_texts": (
            E, E.c.id, sa.and_(E.c.at < _at(returns), E.c.diagnostic.is_not(None)),
            {"diagnostic": None}),
        "audit_entries": (A, A.c.id, A.c.at < _at(audit), None),
    }


def purge(engine: Engine, settings: Privacy, *, actor: str, dry_run: bool = False,
          now: datetime | None = None, stop: Callable[[], bool] = lambda: False) -> Purged:
    """Apply every retention rule; returns the rows affected per rule. Ends early, between
    two batches, once `stop()` says so (`stopped`)."""
    now = now or utcnow()
    result = Purged()
    for name, (table, key, condition, change) in _rules(settings, now).items():
        if result.stopped or stop():
            result.stopped = True
            break
        if dry_run:
            with engine.connect() as conn:
                result.counts[name] = int(conn.execute(
                    sa.select(sa.func.count()).select_from(table).where(condition))
                    .scalar_one())
            continue
        with engine.connect() as conn:
            low, high = conn.execute(sa.select(sa.func.min(key), sa.func.max(key))).one()
        total = 0
        while low is not None and low <= high and not result.stopped:
            if stop():
                result.stopped = True
                break
            with engine.connect() as conn:  # a read: the keys due in this window
                keys = conn.execute(sa.select(key).distinct().where(
                    key >= low, key < low + WINDOW, condition).order_by(key)) \
                    .scalars().all()
                gentle = bool(keys) and _sending(conn)
            low += WINDOW
            size = max(1, BATCH // GENTLE) if gentle else BATCH
            for start in range(0, len(keys), size):
                if start and stop():
                    result.stopped = True
                    break
                batch = keys[start:start + size]
                statement = (table.update().values(**change) if change is not None
                             else table.delete()).where(key.in_(batch), condition)
                began = time.monotonic()
                with engine.begin() as conn:
                    total += conn.execute(statement).rowcount
                took = time.monotonic() - began
                result.longest_batch = max(result.longest_batch, took)
                if gentle:
                    time.sleep(took)
                    result.paused += took
        result.counts[name] = total
    if not dry_run:
        with engine.begin() as conn:  # a stopped purge is not the day's: due() stays true
            conn.execute(A.insert().values(
                at=now, actor=actor[:100],
                action="gdpr.purge.stopped" if result.stopped else "gdpr.purge",
                detail=result.counts))
    return result


def _sending(conn: sa.Connection) -> bool:
    C = Campaign.__table__  # type: ignore[attr-defined]  # noqa: N806
    return conn.execute(sa.select(C.c.id).where(  # notices' campaigns are always sending
        C.c.state == CampaignState.SENDING, C.c.kind == "campaign").limit(1)).first() \
        is not None


def due(engine: Engine, *, now: datetime | None = None) -> bool:
    """Whether a day has passed since the last purge (for `mailer run`)."""
    now = now or utcnow()
    with engine.connect() as conn:
        last = conn.execute(sa.select(sa.func.max(A.c.at)).where(
            A.c.action == "gdpr.purge")).scalar_one_or_none()
    return last is None or now - last >= timedelta(days=1)
