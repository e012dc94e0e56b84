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

Each rule runs in batches of `BATCH` rows, one short transaction each, so a send running
at the same time waits at most one batch for the database (SQLite has one writer). A
dry run counts and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import Engine

from mailer.config import Privacy
from mailer.models import (
    AuditLog,
    Delivery,
    FeedbackEvent,
    Subscriber,
    Subscription,
    utcnow,
)

__all__ = ["BATCH", "Purged", "due", "purge"]

BATCH = 2000
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


def _at(value: datetime) -> sa.BindParameter[datetime]:
    return sa.literal(value, P.c.created_at.type)


def purge(engine: Engine, settings: Privacy, *, actor: str, dry_run: bool = False,
          now: datetime | None = None) -> Purged:
    """Apply every retention rule; returns the rows affected per rule."""
    import time

    now = now or utcnow()
    result = Purged()
    pending = now - timedelta(days=settings.pending_days)
    deliveries = now - timedelta(days=30 * settings.delivery_months)
    returns = now - timedelta(days=settings.returns_days)
    audit = now - timedelta(days=365 * settings.audit_years)
    rules = {
        # A person all of whose memberships are pending and old: they never said yes.
        "never_confirmed_people": (
            P, sa.select(P.c.id).where(
                P.c.created_at < _at(pending),
                sa.exists().where(S.c.subscriber_id == P.c.id),
                ~sa.exists().where(S.c.subscriber_id == P.c.id,
                                   sa.or_(S.c.status != "pending",
                                          S.c.created_at >= _at(pending)))), None),
        "pending_memberships": (
            S, None, sa.and_(S.c.status == "pending", S.c.created_at < _at(pending))),
        "delivery_details": (
            D, sa.select(D.c.id).where(D.c.queued_at < _at(deliveries),
                                       D.c.state.in_(FINAL),
                                       sa.or_(D.c.subscriber_id.is_not(None),
                                              D.c.last_reply.is_not(None))),
            {"subscriber_id": None, "last_reply": None, "message_id": None}),
        "unattributed_returns": (
            E, sa.select(E.c.id).where(E.c.at < _at(returns), E.c.subscriber_id.is_(None)),
            None),
        "return_texts": (
            E, sa.select(E.c.id).where(E.c.at < _at(returns), E.c.diagnostic.is_not(None)),
            {"diagnostic": None}),
        "audit_entries": (A, sa.select(A.c.id).where(A.c.at < _at(audit)), None),
    }
    for name, (table, ids, change) in rules.items():
        if dry_run:
            with engine.connect() as conn:
                counted = sa.select(sa.func.count()).select_from(
                    ids.subquery() if ids is not None else S).where(
                    sa.true() if ids is not None else change)
                result.counts[name] = int(conn.execute(counted).scalar_one())
            continue
        total = 0
        while True:
            started = time.monotonic()
            with engine.begin() as conn:
                if ids is None:  # a table without a single-column key: by its key pairs
                    keys = conn.execute(sa.select(S.c.subscriber_id, S.c.list_id)
                                        .where(change).limit(BATCH)).all()
                    if keys:
                        conn.execute(S.delete().where(sa.tuple_(
                            S.c.subscriber_id, S.c.list_id).in_([tuple(k) for k in keys])))
                    found = len(keys)
                else:
                    batch = conn.execute(ids.limit(BATCH)).scalars().all()
                    found = len(batch)
                    if batch:
                        statement = table.update().values(**change) if isinstance(
                            change, dict) else table.delete()
                        conn.execute(statement.where(table.c.id.in_(batch)))
            result.longest_batch = max(result.longest_batch, time.monotonic() - started)
            total += found
            if found < BATCH:
                break
        result.counts[name] = total
    if not dry_run:
        with engine.begin() as conn:
            conn.execute(A.insert().values(at=now, actor=actor[:100], action="gdpr.purge",
                                           detail=result.counts))
    return result


def due(engine: Engine, *, now: datetime | None = None) -> bool:
    """Whether a day has passed since the last purge (for `mailer run`)."""
    now = now or utcnow()
    with engine.connect() as conn:
        last = conn.execute(sa.select(sa.func.max(A.c.at)).where(
            A.c.action == "gdpr.purge")).scalar_one_or_none()
    return last is None or now - last >= timedelta(days=1)
