"""The notices (confirmation, welcome and export mails) as the tests look at them: the
delivery rows of the campaigns of kind "notice" (mailer/delivery/notices.py), with the
notice kind read from the campaign's slug (`notice:KIND:LIST_ID`)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

__all__ = ["NOTICE", "notice_rows", "set_notices"]

# A subquery with the columns the notice table had: use as `FROM {NOTICE} n`.
NOTICE = ("(SELECT d.id, d.campaign_id, d.subscriber_id, d.list_id, d.state, d.attempts, "
          "d.next_attempt_at, d.last_reply, d.message_id, d.queued_at, d.sent_at, "
          "CASE substr(c.slug, 1, 15) WHEN 'notice:confirm:' THEN 'confirm' "
          "WHEN 'notice:welcome:' THEN 'welcome' ELSE substr(c.slug, 8, 6) END AS kind "
          "FROM delivery d JOIN campaign c ON c.id = d.campaign_id WHERE c.kind = 'notice')")


def notice_rows(engine: sa.Engine, columns: str = "kind, state") -> list[tuple[Any, ...]]:
    """`columns` of every notice, in id order."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            f"SELECT {columns} FROM {NOTICE} n ORDER BY n.id"))]


def set_notices(engine: sa.Engine, **values: object) -> None:
    """Change every notice's row (e.g. its queued_at or next_attempt_at)."""
    from mailer.models import Campaign, Delivery

    D, C = Delivery.__table__, Campaign.__table__  # type: ignore[attr-defined]  # noqa: N806
    with engine.begin() as conn:
        conn.execute(D.update().where(D.c.campaign_id.in_(
            sa.select(C.c.id).where(C.c.kind == "notice"))).values(**values))
