"""The consent log: every subscribe, confirm, unsubscribe, import and preference change.

Append-only. An event says what happened, when, through which source (`cli`, `import
people.csv`, `web form`), the consent text or version the person agreed to, whether it
states confirmed (opt-in) consent, and optionally the IP and user agent.

Someone pending on a double opt-in list is asked by a confirmation mail: a delivery of
the list's confirmation notices (delivery/notices.py), sent through the outbox.
`ask_to_confirm` queues one unless they were asked already.
"""

from __future__ import annotations

from sqlmodel import Session

from mailer.models import ConsentAction, ConsentEvent, NoticeKind, utcnow

__all__ = ["ask_to_confirm", "record_consent"]

def record_consent(
    session: Session,
    subscriber_id: int,
    action: ConsentAction,
    *,
    list_id: int | None = None,
    source: str = "",
    consent: str | None = None,
    confirmed: bool = False,
    ip: str | None = None,
    user_agent: str | None = None,
) -> ConsentEvent:
    event = ConsentEvent(
        subscriber_id=subscriber_id, list_id=list_id, action=action, at=utcnow(),
        source=source[:200], consent=consent, confirmed=confirmed, ip=ip,
        user_agent=(user_agent or None) and user_agent[:400],
    )
    session.add(event)
    return event


def ask_to_confirm(session: Session, subscriber_id: int, list_id: int) -> bool:
    """Queue the confirmation mail for a pending member, unless one is already queued or
    was sent; True when one was queued."""
    from mailer.delivery.notices import queue

    queued, _ = queue(session.connection(), NoticeKind.CONFIRM, list_id, [subscriber_id],
                      again=False)
    return bool(queued)
