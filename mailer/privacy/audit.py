"""The audit trail (art. 5(2)): who did what, when, with counts; never an address or a
name (a subscriber is named by id)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from mailer.models import AuditLog

__all__ = ["list_audit"]

A = AuditLog.__table__  # type: ignore[attr-defined]


def list_audit(engine: Engine, *, since: datetime | None = None, action: str | None = None,
               limit: int | None = None, batch: int = 1000) -> Iterator[dict[str, Any]]:
    """Entries newest first, streamed."""
    query = sa.select(A)
    if since is not None:
        query = query.where(A.c.at >= sa.literal(since, A.c.at.type))
    if action:
        query = query.where(A.c.action.startswith(action, autoescape=True))
    with engine.connect() as conn:
        last: int | None = None
        remaining = limit
        while remaining is None or remaining > 0:
            size = batch if remaining is None else min(batch, remaining)
            page = query if last is None else query.where(A.c.id < last)
            rows = conn.execute(page.order_by(A.c.id.desc()).limit(size)).all()
            if not rows:
                return
            for row in rows:
                yield {"at": row.at.replace(microsecond=0).isoformat(), "actor": row.actor,
                       "action": row.action, "detail": row.detail}
            last = rows[-1].id
            if remaining is not None:
                remaining -= len(rows)
