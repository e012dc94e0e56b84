"""A campaign's figures, counted by the database: delivery states, the timeline of sends,
what came back (by reason, by domain), unsubscribes by channel, the slowest domains.

Everything is a GROUP BY in SQL, so a campaign of a million deliveries is a handful of
index walks and a few hundred rows to Python, never a million (flat memory).

Unsubscribes: a consent event does not name the campaign, so the report counts the
unsubscribes, after the campaign started, of the people it was sent to, by the channel
(one-click link, preferences page, mail to unsub+, complaint). With campaigns a day apart
that is the campaign's; with two on the same day they share them.

Clicks (`[tracking] clicks = "aggregate"`): per link of the campaign's template, as
`mailer serve` counted them (link_click): never per person.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from mailer.feedback.queries import campaign_feedback
from mailer.models import Campaign, ConsentEvent, Delivery, LinkClick, MailingList, Subscriber

__all__ = ["campaign_report"]

D = Delivery.__table__  # type: ignore[attr-defined]
C = Campaign.__table__  # type: ignore[attr-defined]
P = Subscriber.__table__  # type: ignore[attr-defined]
CE = ConsentEvent.__table__  # type: ignore[attr-defined]
L = MailingList.__table__  # type: ignore[attr-defined]
LC = LinkClick.__table__  # type: ignore[attr-defined]

_CHANNELS = (("one-click link", "one_click"), ("preferences page", "page"),
             ("mail", "mail"), ("complaint", "complaint"))


def _minute(column: Any, dialect: str) -> Any:
    """The minute of a timestamp as a number: microseconds since 1970 on SQLite (our
    storage), epoch seconds on PostgreSQL."""
    if dialect == "sqlite":
        return sa.cast(sa.type_coerce(column, sa.Integer) / 60_000_000, sa.Integer)
    return sa.cast(sa.func.floor(sa.extract("epoch", column) / 60), sa.Integer)


def campaign_report(engine: Engine, slug: str, *, rate: float) -> dict[str, Any]:
    """Every figure of the report, as plain data (what `--json` prints)."""
    from mailer.errors import NotFound

    dialect = engine.dialect.name
    with engine.connect() as conn:
        campaign = conn.execute(sa.select(C).where(C.c.slug == slug)).first()
        if campaign is None:
            raise NotFound(f"No campaign {slug!r}.", hint="See `mailer campaign ls`.")
        where = D.c.campaign_id == campaign.id
        states = dict(conn.execute(sa.select(D.c.state, sa.func.count()).where(where)
                                   .group_by(D.c.state)).all())
        minute = _minute(D.c.sent_at, dialect)
        timeline = [(int(m), int(n)) for m, n in conn.execute(
            sa.select(minute, sa.func.count()).where(where, D.c.sent_at.is_not(None))
            .group_by(minute).order_by(minute)).all()]
        domain = sa.func.lower(sa.func.substr(P.c.email, sa.func.instr(P.c.email, "@") + 1)) \
            if dialect == "sqlite" else sa.func.lower(sa.func.split_part(P.c.email, "@", 2))
        slow = conn.execute(
            sa.select(domain.label("domain"), sa.func.count().label("count"),
                      sa.func.max(D.c.last_reply).label("reply"))
            .select_from(D.join(P, P.c.id == D.c.subscriber_id))
            .where(where, D.c.state.in_(("deferred", "failed", "bounced", "unknown")))
            .group_by(domain).order_by(sa.func.count().desc()).limit(10)).all()
        retried = conn.execute(
            sa.select(domain.label("domain"), sa.func.count().label("count"))
            .select_from(D.join(P, P.c.id == D.c.subscriber_id))
            .where(where, D.c.attempts > 1)
            .group_by(domain).order_by(sa.func.count().desc()).limit(10)).all()
        unsubscribes = _unsubscribes(conn, campaign)
        clicks = [{"link": i, "url": u, "clicks": n} for i, u, n in conn.execute(
            sa.select(LC.c.link_index, LC.c.url, LC.c.clicks)
            .where(LC.c.campaign_id == campaign.id).order_by(LC.c.link_index))]
        language = conn.execute(sa.select(L.c.language).where(
            L.c.id.in_(campaign.list_ids or [0])).limit(1)).scalar_one_or_none()
    returns = campaign_feedback(engine, campaign.id)
    total = sum(states.values())
    start = timeline[0][0] if timeline else None
    return {
        "campaign": {"slug": campaign.slug, "title": campaign.title,
                     "subject": campaign.subject, "state": campaign.state,
                     "started_at": _iso(campaign.started_at),
                     "finished_at": _iso(campaign.finished_at), "language": language},
        "deliveries": total,
        "states": states,
        "rate_per_minute": round(rate * 60, 1),
        "timeline": [{"minute": m - start, "at": _iso(datetime.fromtimestamp(m * 60).astimezone()),
                      "sent": n} for m, n in timeline] if start is not None else [],
        "returns": returns,
        "unsubscribes": unsubscribes,
        "slow_domains": [{"domain": r.domain, "problems": r.count, "reply": r.reply}
                         for r in slow],
        "retried_domains": [{"domain": r.domain, "retried": r.count} for r in retried],
        "clicks": clicks,
    }


def _unsubscribes(conn: sa.Connection, campaign: Any) -> dict[str, int]:
    counts = {name: 0 for _, name in _CHANNELS} | {"other": 0}
    if campaign.started_at is None:
        return counts
    since = sa.literal(campaign.started_at - timedelta(seconds=1), CE.c.at.type)
    # EXISTS, not IN: SQLite would build a temporary index of every recipient (a million
    # for a large campaign: 0.43 CPU-s) to test the few unsubscribes against; EXISTS looks
    # each one up in the outbox's (campaign, subscriber) key (0.06 s; bench/report_bench.py).
    sent_to = sa.exists().where(D.c.campaign_id == campaign.id,
                                D.c.subscriber_id == CE.c.subscriber_id)
    rows = conn.execute(
        sa.select(CE.c.source, sa.func.count())
        .where(CE.c.action == "unsubscribe", CE.c.at >= since, sent_to)
        .group_by(CE.c.source)).all()
    for source, n in rows:
        name = next((key for prefix, key in _CHANNELS if (source or "").startswith(prefix)),
                    "other")
        counts[name] += n
    return counts


def _iso(value: datetime | None) -> str | None:
    return value.replace(microsecond=0).isoformat() if value else None
