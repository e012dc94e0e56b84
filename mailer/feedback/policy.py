"""What is done about what came back: one place for the rules, used by every source (the
return mailbox, the SMTP replies the sender sees, the providers' webhooks).

    hard bounce (userunknown, hostunknown, hasmoved, notaccept 5xx)  suppress at once
    soft bounce                    counted; the `soft_bounce_limit`-th in a row within
                                   `soft_bounce_days` suppresses (a delivery in between
                                   that did not bounce starts the count again)
    sender-side rejection          nothing to the subscriber: a warning for the operator
    (5.7.1 block lists, DMARC, our reputation, our content; `campaign show` names them)
    delayed, auto-reply, other     recorded, nothing else
    complaint                      unsubscribed from every list, and suppressed
    mail to unsub+TOKEN@           unsubscribed from the one list the token names

Every action is written with the event that caused it (`feedback_event.action`) and, for
memberships, as a consent event (source `mail` or `complaint`), so `subscribers show`
tells the whole story.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import sqlalchemy as sa
from sqlmodel import Session

from mailer.audience.subscribers import unsubscribe_member
from mailer.audience.suppression import suppress
from mailer.dbtypes import Timestamp
from mailer.models import (
    Delivery,
    FeedbackEvent,
    FeedbackKind,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    SuppressionReason,
)

__all__ = ["Event", "Policy", "Target", "apply", "planned"]

E = FeedbackEvent.__table__  # type: ignore[attr-defined]
D = Delivery.__table__  # type: ignore[attr-defined]
P = Subscriber.__table__  # type: ignore[attr-defined]
S = Subscription.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Policy:
    soft_bounce_limit: int = 3
    soft_bounce_days: int = 30


@dataclass(frozen=True, slots=True)
class Target:
    """Whom an event is about, once attributed."""

    subscriber_id: int
    list_id: int | None
    campaign_id: int | None
    delivery_id: int | None


def planned(kind: str, *, hard: bool, sender_side: bool) -> str:
    """What the policy does for an event, before looking at the database (for `explain`)."""
    if kind == FeedbackKind.BOUNCE:
        if sender_side:
            return "warn-operator"
        return "suppress" if hard else "count-soft-bounce"
    if kind == FeedbackKind.COMPLAINT:
        return "unsubscribe-all-and-suppress"
    if kind == FeedbackKind.UNSUBSCRIBE:
        return "unsubscribe-list"
    return "record"


class Event(Protocol):
    """What the policy reads of an event (a FeedbackEvent, or its row as written)."""

    kind: str
    reason: str | None
    hard: bool
    sender_side: bool
    status: str | None
    diagnostic: str | None


def apply(session: Session, hash_key: bytes, policy: Policy, event: Event,
          target: Target | None, *, now: datetime) -> str:
    """Act on one event (already written in the session's transaction) and return what
    was done."""
    plan = planned(event.kind, hard=event.hard, sender_side=event.sender_side)
    if target is None:
        return {"record": "recorded", "warn-operator": "warned operator"}.get(
            plan, "not attributed")
    if plan == "warn-operator":
        _unblame(session, target)
        return "warned operator"
    if plan == "record":
        return "recorded"
    conn = session.connection()
    email = conn.execute(_EMAIL, {"sid": target.subscriber_id}).scalar_one_or_none()
    if email is None:
        return "none (erased)"
    if plan == "unsubscribe-list":
        if target.list_id is None or not target.list_id:
            return "none (no list in token)"
        changed = unsubscribe_member(session, target.subscriber_id, target.list_id,
                                     source="mail (unsub+ address)")
        return "unsubscribed" if changed else "already unsubscribed"
    if plan == "unsubscribe-all-and-suppress":
        lists = conn.execute(_MEMBER_OF, {"sid": target.subscriber_id}).scalars().all()
        for list_id in lists:
            unsubscribe_member(session, target.subscriber_id, list_id,
                               source="complaint (marked as spam)")
        suppress(session, hash_key, email, SuppressionReason.COMPLAINT,
                 note="complaint (feedback report)")
        return "unsubscribed from all, suppressed"
    if plan == "suppress":
        _mark_bounced(session, target, f"returned later: {event.diagnostic or event.reason}")
        added = suppress(session, hash_key, email, SuppressionReason.HARD_BOUNCE,
                         note=f"{event.reason} {event.status or ''}".strip())
        return "suppressed" if added else "already suppressed"
    # A soft bounce: the last `limit` deliveries' bounces, in a row, within the window.
    count = _soft_streak(session, target, policy, now)
    if count >= policy.soft_bounce_limit:
        added = suppress(session, hash_key, email, SuppressionReason.SOFT_BOUNCES,
                         note=f"{count} soft bounces in {policy.soft_bounce_days} days")
        return f"suppressed ({count} soft bounces)" if added else "already suppressed"
    return f"soft bounce {count} of {policy.soft_bounce_limit}"


def _unblame(session: Session, target: Target) -> None:
    """A 5xx at RCPT/DATA that is about our sending is not the address's fault: the
    delivery failed, it did not bounce."""
    if target.delivery_id is None:
        return
    session.connection().execute(_UNBLAME, {"did": target.delivery_id})


def _mark_bounced(session: Session, target: Target, reply: str) -> None:
    """A delivery the relay took (250) and the recipient's side then returned: bounced,
    with the returned reason as its last reply."""
    if target.delivery_id is None:
        return
    session.connection().execute(_MARK_BOUNCED, {"did": target.delivery_id,
                                                 "reply": reply[:500]})


def _soft_streak(session: Session, target: Target, policy: Policy, now: datetime) -> int:
    """Soft bounces of this subscriber within the window, counted back from the newest
    until a message that was delivered without bouncing (the reset).

    Counted per delivery, not per report: one message deferred and then expired gives
    several reports but is one bounce. A delivery that was sent after the newest bounced
    one and has not bounced (yet) does not reset the count: its bounce may still come."""
    session.flush()
    conn = session.connection()
    window = {"sid": target.subscriber_id,
              "since": now - timedelta(days=policy.soft_bounce_days)}
    bounced = conn.execute(_SOFT_BOUNCED, window).all()
    if not bounced:
        return 0
    unattributed = sum(1 for delivery_id, _ in bounced if delivery_id is None)
    ids = {delivery_id for delivery_id, _ in bounced if delivery_id is not None}
    if not ids:
        return unattributed
    sent = conn.execute(_SENT_SINCE, window).all()
    newest_bounced = next((i for i, (delivery_id, _) in enumerate(sent)
                           if delivery_id in ids), None)
    streak = 0
    for delivery_id, _ in sent[newest_bounced or 0:]:
        if delivery_id not in ids:
            break
        streak += 1
    # Bounced deliveries outside the sent list (a 5xx at RCPT: never sent) count too.
    sent_ids = {delivery_id for delivery_id, _ in sent}
    return streak + len(ids - sent_ids) + unattributed


# The statements, built once (building them cost more than running them).
_EMAIL = sa.select(P.c.email).where(P.c.id == sa.bindparam("sid"))
_MEMBER_OF = sa.select(S.c.list_id).where(S.c.subscriber_id == sa.bindparam("sid"),
                                          S.c.status != SubscriptionStatus.UNSUBSCRIBED)
_UNBLAME = D.update().where(D.c.id == sa.bindparam("did"), D.c.state == "bounced").values(
    state="failed")
_MARK_BOUNCED = D.update().where(D.c.id == sa.bindparam("did"), D.c.state == "sent").values(
    state="bounced", last_reply=sa.bindparam("reply"))
_SOFT_BOUNCED = (
    sa.select(E.c.delivery_id, sa.func.max(E.c.at))
    .where(E.c.subscriber_id == sa.bindparam("sid"), E.c.kind == FeedbackKind.BOUNCE,
           E.c.hard.is_(False), E.c.sender_side.is_(False),
           E.c.at >= sa.bindparam("since", type_=Timestamp()))
    .group_by(E.c.delivery_id))
_SENT_SINCE = (
    sa.select(D.c.id, D.c.sent_at)
    .where(D.c.subscriber_id == sa.bindparam("sid"), D.c.sent_at.is_not(None),
           D.c.sent_at >= sa.bindparam("since", type_=Timestamp()))
    .order_by(D.c.sent_at.desc(), D.c.id.desc()))
