"""What subscribers do themselves, through the links in their mail and the web pages.

The people are named by the ids inside a verified token, never by an address typed in a
form. Every change is a consent event with where it came from, the IP and user agent.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from mailer.audience.subscribers import unsubscribe_member
from mailer.models import MailingList, Subscriber, Subscription

__all__ = ["Member", "find_member", "unsubscribe_member"]


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
