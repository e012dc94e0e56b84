"""What subscribers do themselves, through the links in their mail and the web pages.

The people are named by the ids inside a verified token, never by an address typed in a
form. Every change is a consent event with where it came from, the IP and user agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from mailer.audience.consent import record_consent
from mailer.audience.subscribers import (
    LANGUAGES,
    clean_name,
    unsubscribe_member,
    validate_address,
)
from mailer.audience.suppression import is_suppressed
from mailer.delivery.notices import queue
from mailer.models import (
    ConsentAction,
    ConsentEvent,
    GlobalStatus,
    MailingList,
    NoticeKind,
    OptIn,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)

__all__ = ["ListChoice", "Member", "Preferences", "SignUp", "confirm_member", "find_member",
           "preferences", "sign_up", "unsubscribe_member", "update_preferences"]


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
    """A sign-up from the web form or the JSON endpoint.

    - New to the list of a double opt-in list: pending, a confirmation mail queued.
    - New to a single opt-in list: confirmed at once, a welcome mail queued.
    - Unsubscribed from the list before: nothing changes until the person confirms by
      mail (a stranger must not undo someone's unsubscribe), whatever the list's opt-in.
    - Already confirmed, suppressed or blocklisted: nothing changes, nothing is sent.
    Every input is checked before the address is looked up (InvalidInput), so an error
    never depends on whether the address is known."""
    address = validate_address(email)
    name = clean_name(first_name, "first name")
    assert mailing_list.id is not None
    if is_suppressed(session, hash_key, address):
        return SignUp(None, None)
    sub = session.exec(select(Subscriber).where(Subscriber.email == address)).first()
    if sub is None:
        sub = Subscriber(email=address, first_name=name,
                         language=language if language in LANGUAGES else None)
        session.add(sub)
        session.flush()
    elif sub.status == GlobalStatus.BLOCKLISTED:
        return SignUp(sub.id, None)
    assert sub.id is not None
    membership = session.get(Subscription, (sub.id, mailing_list.id))
    if membership is not None and membership.status == SubscriptionStatus.CONFIRMED:
        return SignUp(sub.id, None)
    returning = membership is not None and membership.status == SubscriptionStatus.UNSUBSCRIBED
    single = mailing_list.optin == OptIn.SINGLE and not returning
    now = utcnow()
    if membership is None:
        membership = Subscription(subscriber_id=sub.id, list_id=mailing_list.id,
                                  status=SubscriptionStatus.PENDING, source="web form",
                                  created_at=now, updated_at=now)
    if not returning:
        membership.status = (SubscriptionStatus.CONFIRMED if single
                             else SubscriptionStatus.PENDING)
        membership.updated_at = now
        if single:
            membership.confirmed_at = now
        session.add(membership)
    record_consent(session, sub.id, ConsentAction.SUBSCRIBE, list_id=mailing_list.id,
                   source="web form", consent=consent, confirmed=single, ip=ip,
                   user_agent=user_agent)
    if single:  # confirmed now: the list's drip sequences start
        from mailer.automation.sequences import start_members

        session.flush()
        start_members(session.connection(), mailing_list.id, [sub.id], now)
    kind = NoticeKind.WELCOME if single else NoticeKind.CONFIRM
    session.flush()
    # asked again (signed up again): the earlier mail's row is queued once more, unless
    # it is still on its way (delivery/notices.py)
    queue(session.connection(), kind, mailing_list.id, [sub.id], again=True)
    return SignUp(sub.id, kind)


def confirm_member(session: Session, subscriber_id: int, list_id: int, *,
                   issued_at: datetime, ip: str | None = None,
                   user_agent: str | None = None) -> str | None:
    """Confirm a membership from a confirmation link issued at `issued_at`, recording the
    consent event (with the consent text the person agreed to when signing up, or the
    one an import with `--send-confirmation` recorded).

    Pending: confirmed. Unsubscribed: confirmed only by a link issued after the
    unsubscribe (the person signed up again); an older link does not bring them back.
    Returns the status afterwards ("confirmed" also when it already was: a second click
    is harmless), None when the person or the membership is gone."""
    membership = session.get(Subscription, (subscriber_id, list_id))
    if membership is None:
        return None
    if membership.status == SubscriptionStatus.UNSUBSCRIBED:
        left = membership.unsubscribed_at
        # tokens carry the minute they were issued in: a link of the same minute counts
        if left is None or issued_at + timedelta(minutes=1) <= left:
            return membership.status
    elif membership.status != SubscriptionStatus.PENDING:
        return membership.status
    now = utcnow()
    membership.status = SubscriptionStatus.CONFIRMED
    membership.unsubscribed_at = None
    membership.confirmed_at = membership.updated_at = now
    session.add(membership)
    agreed = session.exec(
        select(ConsentEvent.consent).where(
            ConsentEvent.subscriber_id == subscriber_id, ConsentEvent.list_id == list_id,
            col(ConsentEvent.action).in_([ConsentAction.SUBSCRIBE, ConsentAction.IMPORT]))
        .order_by(col(ConsentEvent.id).desc())).first()
    record_consent(session, subscriber_id, ConsentAction.CONFIRM, list_id=list_id,
                   source="confirmation link", consent=agreed, confirmed=True, ip=ip,
                   user_agent=user_agent)
    session.flush()
    from mailer.automation.sequences import start_members  # the list's drip sequences

    start_members(session.connection(), list_id, [subscriber_id], now)
    return SubscriptionStatus.CONFIRMED


@dataclass(frozen=True)
class ListChoice:
    list_id: int
    slug: str
    name: str
    description: str
    subscribed: bool  # confirmed (or pending: asked, not yet confirmed)


@dataclass(frozen=True)
class Preferences:
    subscriber_id: int
    first_name: str | None
    last_name: str | None
    language: str | None
    lists: list[ListChoice]
    infix: str | None = None  # the Dutch tussenvoegsel: "van der"


def preferences(session: Session, subscriber_id: int) -> Preferences | None:
    """What the preferences page shows: name, language, and the lists one can be on (the
    public ones and any one is or was on). None when the person is gone."""
    sub = session.get(Subscriber, subscriber_id)
    if sub is None:
        return None
    memberships = {m.list_id: m.status for m in session.exec(
        select(Subscription).where(Subscription.subscriber_id == subscriber_id))}
    lists = session.exec(select(MailingList).order_by(col(MailingList.name))).all()
    choices = [ListChoice(ml.id, ml.slug, ml.name, ml.description,  # type: ignore[arg-type]
                          memberships.get(ml.id) in (SubscriptionStatus.CONFIRMED,
                                                     SubscriptionStatus.PENDING))
               for ml in lists if ml.public or ml.id in memberships]
    return Preferences(subscriber_id, sub.first_name, sub.last_name, sub.language, choices,
                       infix=sub.infix)


def update_preferences(session: Session, subscriber_id: int, *, first_name: str | None,
                       last_name: str | None, language: str | None, wanted: set[int],
                       consents: dict[int, str] | None = None, ip: str | None = None,
                       user_agent: str | None = None, infix: str | None = None) -> bool:
    """Apply the preferences form: names and language, then each list shown: ticked and
    not on it → subscribed (confirmed: the link came to this mailbox), unticked and on it
    → unsubscribed; each change a consent event, with the list's consent text as shown
    (`consents`, by list id). An `infix` of None is left as it is (a page copied into
    a project before it had the field does not send it); "" removes it. False when the
    person is gone."""
    current = preferences(session, subscriber_id)
    sub = session.get(Subscriber, subscriber_id)
    if current is None or sub is None:
        return False
    changed = []
    for field, value in (("first_name", clean_name(first_name, "first name")),
                         ("infix", sub.infix if infix is None else clean_name(infix, "infix")),
                         ("last_name", clean_name(last_name, "last name")),
                         ("language", language if language in LANGUAGES else sub.language)):
        if getattr(sub, field) != value:
            setattr(sub, field, value)
            changed.append(field)
    if changed:
        sub.updated_at = utcnow()
        session.add(sub)
        record_consent(session, subscriber_id, ConsentAction.PREFERENCE,
                       source=f"preferences page: {', '.join(changed)}", ip=ip,
                       user_agent=user_agent)
    now = utcnow()
    for choice in current.lists:
        if choice.list_id in wanted and not choice.subscribed:
            membership = session.get(Subscription, (subscriber_id, choice.list_id))
            if membership is None:
                membership = Subscription(subscriber_id=subscriber_id, list_id=choice.list_id,
                                          status=SubscriptionStatus.CONFIRMED,
                                          source="preferences page", created_at=now,
                                          updated_at=now)
            membership.status = SubscriptionStatus.CONFIRMED
            membership.confirmed_at = membership.updated_at = now
            membership.unsubscribed_at = None
            session.add(membership)
            record_consent(session, subscriber_id, ConsentAction.SUBSCRIBE,
                           list_id=choice.list_id, source="preferences page",
                           consent=(consents or {}).get(choice.list_id,
                                                        "ticked on the preferences page"),
                           confirmed=True, ip=ip,
                           user_agent=user_agent)
        elif choice.list_id not in wanted and choice.subscribed:
            unsubscribe_member(session, subscriber_id, choice.list_id,
                               source="preferences page", ip=ip, user_agent=user_agent)
    session.flush()
    return True
