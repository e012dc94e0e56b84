"""Reading the feedback events back: listings, a campaign's summary, one person's."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from mailer.errors import NotFound
from mailer.models import Campaign, FeedbackEvent, Subscriber

__all__ = ["campaign_feedback", "list_events", "subscriber_events"]

E = FeedbackEvent.__table__  # type: ignore[attr-defined]
C = Campaign.__table__  # type: ignore[attr-defined]
P = Subscriber.__table__  # type: ignore[attr-defined]

_KINDS = {
    "hard": sa.and_(E.c.kind == "bounce", E.c.hard.is_(True)),
    "soft": sa.and_(E.c.kind == "bounce", E.c.hard.is_(False), E.c.sender_side.is_(False)),
    "sender": sa.and_(E.c.kind == "bounce", E.c.sender_side.is_(True)),
}


def list_events(engine: Engine, *, campaign: str | None = None, kind: str | None = None,
                since: datetime | None = None, limit: int | None = None,
                batch: int = 1000) -> Iterator[dict[str, Any]]:
    """Events, newest first, streamed."""
    query = (sa.select(E, P.c.email, C.c.slug.label("campaign"))
             .select_from(E.outerjoin(P, P.c.id == E.c.subscriber_id)
                          .outerjoin(C, C.c.id == E.c.campaign_id)))
    with engine.connect() as conn:
        if campaign is not None:
            campaign_id = conn.execute(sa.select(C.c.id).where(C.c.slug == campaign)) \
                .scalar_one_or_none()
            if campaign_id is None:
                raise NotFound(f"No campaign {campaign!r}.",
                               hint="See `mailer campaign ls`.")
            query = query.where(E.c.campaign_id == campaign_id)
        if kind is not None:
            query = query.where(_KINDS.get(kind, E.c.kind == kind))
        if since is not None:
            query = query.where(E.c.at >= sa.literal(since, E.c.at.type))
        last_id: int | None = None
        remaining = limit
        while remaining is None or remaining > 0:
            size = batch if remaining is None else min(batch, remaining)
            page = query if last_id is None else query.where(E.c.id < last_id)
            rows = conn.execute(page.order_by(E.c.id.desc()).limit(size)).all()
            if not rows:
                return
            for row in rows:
                yield _row(row)
            last_id = rows[-1].id
            if remaining is not None:
                remaining -= len(rows)


def _row(row: Any) -> dict[str, Any]:
    return {"at": row.at.replace(microsecond=0).isoformat(), "kind": row.kind,
            "reason": row.reason, "hard": row.hard, "sender_side": row.sender_side,
            "email": row.email, "domain": row.domain, "campaign": row.campaign,
            "status": row.status, "reply_code": row.reply_code,
            "diagnostic": row.diagnostic, "attributed_by": row.attributed_by,
            "action": row.action, "source": row.source}


def campaign_feedback(engine: Engine, campaign_id: int) -> dict[str, Any]:
    """A campaign's returns: counts by kind, bounces by reason and by domain, and the
    rejections that are about our sending (the operator's to fix)."""
    with engine.connect() as conn:
        where = E.c.campaign_id == campaign_id
        kinds = dict(conn.execute(sa.select(E.c.kind, sa.func.count()).where(where)
                                  .group_by(E.c.kind)).all())
        bounce = sa.and_(where, E.c.kind == "bounce")
        reasons = [{"reason": r, "hard": bool(h), "count": n} for r, h, n in conn.execute(
            sa.select(E.c.reason, E.c.hard, sa.func.count()).where(
                bounce, E.c.sender_side.is_(False))
            .group_by(E.c.reason, E.c.hard).order_by(sa.func.count().desc()))]
        domains = [{"domain": d, "count": n} for d, n in conn.execute(
            sa.select(E.c.domain, sa.func.count()).where(bounce)
            .group_by(E.c.domain).order_by(sa.func.count().desc()).limit(10))]
        warnings = [{"reason": r, "domain": d, "count": n, "example": x}
                    for r, d, n, x in conn.execute(
                        sa.select(E.c.reason, E.c.domain, sa.func.count(),
                                  sa.func.max(E.c.diagnostic))
                        .where(bounce, E.c.sender_side.is_(True))
                        .group_by(E.c.reason, E.c.domain)
                        .order_by(sa.func.count().desc()))]
    hard = sum(r["count"] for r in reasons if r["hard"])
    soft = sum(r["count"] for r in reasons if not r["hard"])
    return {"hard": hard, "soft": soft, "sender_side": sum(w["count"] for w in warnings),
            "delayed": kinds.get("delayed", 0), "complaints": kinds.get("complaint", 0),
            "auto_replies": kinds.get("auto-reply", 0),
            "unsubscribes": kinds.get("unsubscribe", 0), "reasons": reasons,
            "domains": domains, "warnings": warnings}


def subscriber_events(conn: sa.Connection, subscriber_id: int) -> list[dict[str, Any]]:
    """One person's events, oldest first (for `subscribers show`)."""
    rows = conn.execute(
        sa.select(E, P.c.email, C.c.slug.label("campaign"))
        .select_from(E.outerjoin(P, P.c.id == E.c.subscriber_id)
                     .outerjoin(C, C.c.id == E.c.campaign_id))
        .where(E.c.subscriber_id == subscriber_id).order_by(E.c.id)).all()
    return [_row(row) for row in rows]
