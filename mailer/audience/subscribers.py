"""Subscribers: add, show, edit, list and remove, each change logged as consent.

Every function takes a session; the caller owns the transaction, so a refused change
leaves nothing half-written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, null, or_
from sqlmodel import Session, col, select

from mailer.audience.addresses import InvalidAddress, normalise_address
from mailer.audience.consent import ask_to_confirm, record_consent
from mailer.audience.lists import get_list
from mailer.audience.names import full_name
from mailer.audience.suppression import is_suppressed
from mailer.dbtypes import placeholder, stamp
from mailer.errors import InvalidInput, NotFound
from mailer.models import (
    ConsentAction,
    ConsentEvent,
    GlobalStatus,
    MailingList,
    OptIn,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)

__all__ = [
    "LANGUAGES",
    "SORTS",
    "add_subscriber",
    "clean_name",
    "edit_subscriber",
    "get_subscriber",
    "iter_subscribers",
    "parse_attributes",
    "remove_subscriber",
    "subscriber_details",
    "unsubscribe",
    "unsubscribe_member",
    "validate_address",
]

LANGUAGES = ("nl", "en")
SORTS = ("added", "name")


def validate_address(raw: str) -> str:
    try:
        return normalise_address(raw)
    except InvalidAddress as exc:
        raise InvalidInput(f"{raw.strip()!r} is not a valid address: {exc}") from None


def clean_name(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidInput(f"The {what} may not contain line breaks or control characters.")
    return value.strip()[:200] or None


def _check_language(language: str | None) -> str | None:
    if language is not None and language not in LANGUAGES:
        raise InvalidInput(f"Language must be one of {', '.join(LANGUAGES)}, not {language!r}.")
    return language


def parse_attributes(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """`key=value` pairs; a value that parses as JSON (number, true, list…) is kept typed."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidInput(f"Attribute {pair!r} must look like key=value.")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def get_subscriber(session: Session, email: str) -> Subscriber:
    address = validate_address(email)
    row = session.exec(select(Subscriber).where(Subscriber.email == address)).first()
    if row is None:
        raise NotFound(f"No subscriber with address {address}.")
    return row


def add_subscriber(
    session: Session,
    hash_key: bytes,
    email: str,
    lists: list[str],
    *,
    consent: str,
    source: str = "cli",
    confirmed: bool = False,
    first_name: str | None = None,
    infix: str | None = None,
    last_name: str | None = None,
    language: str | None = None,
    attributes: dict[str, Any] | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    send_confirmation: bool = False,
) -> tuple[Subscriber, dict[str, str], list[str]]:
    """Add (or extend) a subscriber; returns it, the resulting status per list and the
    lists whose confirmation mail was queued.

    Double opt-in lists give a pending membership unless `confirmed` states that the
    person already confirmed (recorded as such); `send_confirmation` queues the
    confirmation mail for each pending one (unless already asked). Suppressed,
    blocklisted and unsubscribed addresses are refused: only the person can subscribe
    again, through the sign-up form.
    """
    if not consent or not consent.strip():
        raise InvalidInput("Say which consent this rests on: --consent \"webform 2026-03\".")
    if send_confirmation and confirmed:
        raise InvalidInput("--send-confirmation asks to confirm, --confirmed says it was "
                           "done already: give one of the two.")
    address = validate_address(email)
    if is_suppressed(session, hash_key, address):
        raise InvalidInput(f"{address} is on the suppression list and cannot be added.")
    mailing_lists = [get_list(session, slug) for slug in lists]
    if not mailing_lists:
        raise InvalidInput("Name at least one list: --list SLUG.")
    if send_confirmation and all(ml.optin != OptIn.DOUBLE for ml in mailing_lists):
        raise InvalidInput("Only a double opt-in list has a confirmation mail to send.",
                           hint="Leave out --send-confirmation.")
    sub = session.exec(select(Subscriber).where(Subscriber.email == address)).first()
    if sub is None:
        sub = Subscriber(email=address, first_name=clean_name(first_name, "first name"),
                         infix=clean_name(infix, "infix"),
                         last_name=clean_name(last_name, "last name"),
                         language=_check_language(language), attributes=attributes or {})
        session.add(sub)
        session.flush()
    elif sub.status == GlobalStatus.BLOCKLISTED:
        raise InvalidInput(f"{address} is blocklisted and cannot be added to a list.")
    assert sub.id is not None
    result: dict[str, str] = {}
    asked: list[str] = []
    now = utcnow()
    for ml in mailing_lists:
        assert ml.id is not None
        membership = session.get(Subscription, (sub.id, ml.id))
        if membership is not None and membership.status == SubscriptionStatus.UNSUBSCRIBED:
            raise InvalidInput(
                f"{address} unsubscribed from {ml.slug!r}; only they can subscribe again.")
        if membership is not None and (membership.status == SubscriptionStatus.CONFIRMED
                                       or not confirmed):
            result[ml.slug] = membership.status
            continue
        is_confirmed = confirmed or ml.optin == OptIn.SINGLE
        status = SubscriptionStatus.CONFIRMED if is_confirmed else SubscriptionStatus.PENDING
        if membership is None:
            membership = Subscription(subscriber_id=sub.id, list_id=ml.id, status=status,
                                      source=source[:200], created_at=now, updated_at=now)
            session.add(membership)
        membership.status = status
        membership.updated_at = now
        if is_confirmed:
            membership.confirmed_at = now
            from mailer.automation.sequences import start_members  # drip sequences start

            session.flush()
            start_members(session.connection(), ml.id, [sub.id], now)
        record_consent(session, sub.id, ConsentAction.SUBSCRIBE, list_id=ml.id, source=source,
                       consent=consent, confirmed=is_confirmed, ip=ip, user_agent=user_agent)
        result[ml.slug] = status
    for ml in mailing_lists:
        if (send_confirmation and result[ml.slug] == SubscriptionStatus.PENDING
                and ask_to_confirm(session, sub.id, ml.id)):  # type: ignore[arg-type]
            asked.append(ml.slug)
    session.flush()
    return sub, result, asked


def edit_subscriber(
    session: Session,
    email: str,
    *,
    first_name: str | None = None,
    infix: str | None = None,
    last_name: str | None = None,
    language: str | None = None,
    status: str | None = None,
    set_attributes: dict[str, Any] | None = None,
    unset_attributes: tuple[str, ...] = (),
    source: str = "cli",
) -> Subscriber:
    """Change name, language, attributes or global status; logged as a preference event.
    An empty infix ("") removes it (a name is changed, never emptied, by the others)."""
    sub = get_subscriber(session, email)
    changed: list[str] = []
    if infix is not None and sub.infix != (value := clean_name(infix, "infix")):
        sub.infix = value
        changed.append("infix")
    for field, value in (("first_name", clean_name(first_name, "first name")),
                         ("last_name", clean_name(last_name, "last name")),
                         ("language", _check_language(language))):
        if value is not None and getattr(sub, field) != value:
            setattr(sub, field, value)
            changed.append(field)
    if status is not None:
        if status not in {s.value for s in GlobalStatus}:
            raise InvalidInput(f"Status must be active or blocklisted, not {status!r}.")
        if sub.status != status:
            sub.status = status
            changed.append("status")
    if set_attributes or unset_attributes:
        attrs = dict(sub.attributes)
        attrs.update(set_attributes or {})
        for key in unset_attributes:
            attrs.pop(key, None)
        if attrs != sub.attributes:
            sub.attributes = attrs
            changed.append("attributes")
    if changed:
        sub.updated_at = utcnow()
        assert sub.id is not None
        # The log names the fields, not their values: it must hold no personal data.
        record_consent(session, sub.id, ConsentAction.PREFERENCE,
                       source=f"{source}: {', '.join(changed)}")
        session.flush()
    return sub


def unsubscribe(session: Session, email: str, slug: str, *, source: str = "cli") -> bool:
    """Unsubscribe from one list; False if not a member or already unsubscribed."""
    sub = get_subscriber(session, email)
    ml = get_list(session, slug)
    assert sub.id is not None and ml.id is not None
    changed = unsubscribe_member(session, sub.id, ml.id, source=source)
    session.flush()
    return changed


def unsubscribe_member(session: Session, subscriber_id: int, list_id: int, *, source: str,
                       ip: str | None = None, user_agent: str | None = None) -> bool:
    """Unsubscribe a member from one list, logged as consent. False when there was nothing
    to do (not a member, already unsubscribed): a second click changes nothing.

    Plain SQL on the session's connection: this is what every one-click POST does, many
    a second (and the ORM cost five times as much). Changes the session holds are flushed
    first, so the consent log keeps the order things happened in."""
    session.flush()
    conn = session.connection()
    dialect = conn.dialect
    q, now = placeholder(dialect), stamp(utcnow(), dialect)
    changed = conn.exec_driver_sql(
        f"UPDATE subscription SET status = 'unsubscribed', unsubscribed_at = {q}, "
        f"updated_at = {q} WHERE subscriber_id = {q} AND list_id = {q} "
        f"AND status <> 'unsubscribed'", (now, now, subscriber_id, list_id)).rowcount
    if not changed:
        return False
    conn.exec_driver_sql(
        f"INSERT INTO consent_event (subscriber_id, list_id, action, at, source, confirmed, "
        f"ip, user_agent) VALUES ({q}, {q}, 'unsubscribe', {q}, {q}, {q}, {q}, {q})",
        (subscriber_id, list_id, now, source[:200], False, ip,
         (user_agent or None) and user_agent[:400]))
    return True


def remove_subscriber(session: Session, email: str) -> None:
    """Delete a subscriber, memberships and consent log. Not erasure: not suppressed."""
    sub = get_subscriber(session, email)
    session.delete(sub)
    session.flush()


def subscriber_details(session: Session, sub: Subscriber) -> dict[str, Any]:
    """Everything about one subscriber as plain data (for `show` and `--json`)."""
    memberships = session.exec(
        select(Subscription, MailingList.slug)
        .join(MailingList, col(MailingList.id) == Subscription.list_id)
        .where(Subscription.subscriber_id == sub.id)
        .order_by(MailingList.slug)
    ).all()
    slugs = {ml.id: ml.slug for ml in session.exec(select(MailingList))}
    events = session.exec(select(ConsentEvent).where(ConsentEvent.subscriber_id == sub.id)
                          .order_by(col(ConsentEvent.id))).all()
    return {
        "email": sub.email, "first_name": sub.first_name, "infix": sub.infix,
        "last_name": sub.last_name, "name": full_name(sub.first_name, sub.infix, sub.last_name),
        "language": sub.language, "status": sub.status, "attributes": sub.attributes,
        "created_at": sub.created_at.isoformat(), "updated_at": sub.updated_at.isoformat(),
        "lists": [{"list": slug, "status": m.status, "source": m.source,
                   "created_at": m.created_at.isoformat(),
                   "confirmed_at": m.confirmed_at and m.confirmed_at.isoformat(),
                   "unsubscribed_at": m.unsubscribed_at and m.unsubscribed_at.isoformat()}
                  for m, slug in memberships],
        "consent": [{"at": e.at.isoformat(), "action": e.action,
                     "list": slugs.get(e.list_id) if e.list_id else None,
                     "source": e.source, "consent": e.consent, "confirmed": e.confirmed,
                     "ip": e.ip, "user_agent": e.user_agent} for e in events],
    }


def iter_subscribers(
    session: Session,
    *,
    list_slug: str | None = None,
    status: str | None = None,
    global_status: str | None = None,
    search: str | None = None,
    limit: int | None = None,
    sort: str = "added",
    batch: int = 1000,
) -> Iterator[dict[str, Any]]:
    """Subscribers matching the filters, streamed in batches (flat memory): in the order
    they were added, or (`sort="name"`) by last name, first name and infix, ignoring case
    ("van der Berg" under B; those without a last name at the end).
    With a list, each carries `list_status`: the membership's status on that list
    (pending, confirmed, unsubscribed), beside the global `status`."""
    if status is not None and list_slug is None:
        raise InvalidInput("--status needs --list (membership status is per list).")
    if status is not None and status not in {s.value for s in SubscriptionStatus}:
        raise InvalidInput(f"Status must be pending, confirmed or unsubscribed, not {status!r}.")
    if sort not in SORTS:
        raise InvalidInput(f"Sort by {' or '.join(SORTS)}, not {sort!r}.")
    person = col(Subscriber.id)
    keys: list[Any] = [person] if sort == "added" else [
        col(Subscriber.last_name).is_(None), *(func.lower(func.coalesce(column, "")) for column
                                               in (col(Subscriber.last_name),
                                                   col(Subscriber.first_name),
                                                   col(Subscriber.infix))), person]
    query: Any = select(Subscriber, null())
    if list_slug is not None:
        ml = get_list(session, list_slug)
        query = select(Subscriber, Subscription.status).join(
            Subscription, col(Subscription.subscriber_id) == Subscriber.id).where(
            Subscription.list_id == ml.id)
        if status is not None:
            query = query.where(Subscription.status == status)
    if global_status is not None:
        query = query.where(Subscriber.status == global_status)
    if search:
        pattern = f"%{search.lower()}%"
        surname = col(Subscriber.infix) + " " + col(Subscriber.last_name)  # "de vries"
        query = query.where(or_(col(Subscriber.email).like(pattern),
                                *(func.lower(c).like(pattern) for c in (
                                    col(Subscriber.first_name), col(Subscriber.infix),
                                    col(Subscriber.last_name), surname))))
    # One query, read in partitions (a server-side cursor on PostgreSQL): a page-by-page
    # walk would sort the whole table again for every page when sorted by name.
    query = query.order_by(*keys).limit(limit).execution_options(yield_per=batch)
    for part in session.execute(query).partitions():
        for sub, member in part:
            item = {"email": sub.email, "first_name": sub.first_name, "infix": sub.infix,
                    "last_name": sub.last_name, "language": sub.language}
            if list_slug is not None:
                item["list_status"] = member
            yield {**item, "status": sub.status, "attributes": sub.attributes,
                   "created_at": sub.created_at.isoformat()}
        session.expunge_all()
