"""What subscribers do themselves, through the links in their mail and the web pages.

The people are named by the ids inside a verified token, never by an address typed in a
form. Every change is a consent event with where it came from, the IP and user agent.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, select

from mailer.audience.consent import record_consent
from mailer.audience.subscribers import (
    LANGUAGES,
    clean_name,
    unsubscribe_member,
    validate_address,
)
from mailer.audience.suppression import is_suppressed
from mailer.models import (
    ConsentAction,
    ConsentEvent,
    GlobalStatus,
    MailingList,
    Notice,
    NoticeKind,
    OptIn,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)

__all__ = ["Member", "SignUp", "confirm_member", "find_member", "sign_up",
           "unsubscribe_member"]


@dataclass(frozen=True)
class Member:
    """A subscriber and one of their lists, as a page shows them."""

    subscriber_id: int
    list_id: int
    language: str | None
    list_name: str
    list_language: str
    status: str | None  # the membership's status; None: not (or no longer) a member


def find_member(session: Session, subscriber_id: int, list_id: int) -> Member | None:
    """None when the subscriber (erased) or the list no longer exists."""
    sub = session.get(Subscriber, subscriber_id)
    ml = session.get(MailingList, list_id)
    if sub is None or ml is None:
        return None
    membership = session.get(Subscription, (subscriber_id, list_id))
    return Member(subscriber_id, list_id, sub.language, ml.name, ml.language,
                  membership.status if membership is not None else None)


@dataclass(frozen=True)
class SignUp:
    """What a sign-up did. The page says the same whatever happened: it must not tell
    a stranger whether an address is on the list."""

    subscriber_id: int | None
    notice: str | None  # the mail queued: "confirm", "welcome", or None


def sign_up(session: Session, hash_key: bytes, *, email: str, mailing_list: MailingList,
            consent: str, first_name: str | None = None, language: str | None = None,
            ip: str | None = None, user_agent: str | None = None) -> SignUp:
    """A sign-up from the web form or the JSON endpoint: pending (double opt-in, a
    confirmation mail queued) or confirmed at once (single opt-in, a welcome mail).
    Someone already confirmed, suppressed or blocklisted: nothing changes, nothing is
    sent. Someone who unsubscribed may sign up again: it is their own request.
    InvalidInput for an address that cannot be valid."""
    address = validate_address(email)
    assert mailing_list.id is not None
    if is_suppressed(session, hash_key, address):
        return SignUp(None, None)
    sub = session.exec(select(Subscriber).where(Subscriber.email == address)).first()
    if sub is None:
        sub = Subscriber(email=address, first_name=clean_name(first_name, "first name"),
                         language=language if language in LANGUAGES else None)
        session.add(sub)
        session.flush()
    elif sub.status == GlobalStatus.BLOCKLISTED:
        return SignUp(sub.id, None)
    assert sub.id is not None
    membership = session.get(Subscription, (sub.id, mailing_list.id))
    if membership is not None and membership.status == SubscriptionStatus.CONFIRMED:
        return SignUp(sub.id, None)
    single = mailing_list.optin == OptIn.SINGLE
    now = utcnow()
    status = SubscriptionStatus.CONFIRMED if single else SubscriptionStatus.PENDING
    if membership is None:
        membership = Subscription(subscriber_id=sub.id, list_id=mailing_list.id,
                                  status=status, source="web form", created_at=now,
                                  updated_at=now)
    membership.status, membership.updated_at = status, now
    membership.unsubscribed_at = None
    if single:
        membership.confirmed_at = now
    session.add(membership)
    record_consent(session, sub.id, ConsentAction.SUBSCRIBE, list_id=mailing_list.id,
                   source="web form", consent=consent, confirmed=single, ip=ip,
                   user_agent=user_agent)
    kind = NoticeKind.WELCOME if single else NoticeKind.CONFIRM
    session.add(Notice(kind=kind, subscriber_id=sub.id, list_id=mailing_list.id))
    session.flush()
    return SignUp(sub.id, kind)


def confirm_member(session: Session, subscriber_id: int, list_id: int, *,
                   ip: str | None = None, user_agent: str | None = None) -> str | None:
    """Confirm a pending membership, recording the consent event (with the consent text
    the person agreed to when signing up). Returns the membership's status afterwards:
    "confirmed" also when it already was (a second click is harmless), "unsubscribed"
    when the person left meanwhile (an old link does not bring them back), None when
    the person or the membership is gone."""
    membership = session.get(Subscription, (subscriber_id, list_id))
    if membership is None:
        return None
    if membership.status != SubscriptionStatus.PENDING:
        return membership.status
    now = utcnow()
    membership.status = SubscriptionStatus.CONFIRMED
    membership.confirmed_at = membership.updated_at = now
    session.add(membership)
    agreed = session.exec(
        select(ConsentEvent.consent).where(
            ConsentEvent.subscriber_id == subscriber_id, ConsentEvent.list_id == list_id,
            ConsentEvent.action == ConsentAction.SUBSCRIBE)
        .order_by(col(ConsentEvent.id).desc())).first()
    record_consent(session, subscriber_id, ConsentAction.CONFIRM, list_id=list_id,
                   source="confirmation link", consent=agreed, confirmed=True, ip=ip,
                   user_agent=user_agent)
    session.flush()
    return SubscriptionStatus.CONFIRMED
