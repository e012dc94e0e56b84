"""The consent log: every subscribe, confirm, unsubscribe, import and preference change.

Append-only. An event says what happened, when, through which source (`cli`, `import
people.csv`, `web form`), the consent text or version the person agreed to, whether it
states confirmed (opt-in) consent, and optionally the IP and user agent.
"""

from __future__ import annotations

from sqlmodel import Session

from mailer.models import ConsentAction, ConsentEvent, utcnow

__all__ = ["record_consent"]


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
