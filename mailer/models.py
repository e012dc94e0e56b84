"""The tables. Alembic migrations in mailer/migrations/ create and change them.

Designed for erasure (GDPR/AVG): an address in clear text lives in exactly one column,
`subscriber.email`. Suppression keeps only a keyed hash of the address, consent events and
the audit log point at a subscriber by id, so erasing a person is deleting one row (with
its cascades) and adding a hash to the suppression list.

Timestamps are timezone-aware UTC (`utcnow()`); SQLModel's UTCDateTime stores them so on
SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import base64
import enum
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

__all__ = [
    "AuditLog",
    "ConsentAction",
    "ConsentEvent",
    "GlobalStatus",
    "MailingList",
    "OptIn",
    "Subscriber",
    "Subscription",
    "SubscriptionStatus",
    "Suppression",
    "SuppressionReason",
    "new_uid",
    "new_uids",
    "utcnow",
]

# JSON on SQLite, JSONB (indexable, comparable) on PostgreSQL.
JsonType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """Now, in UTC, timezone-aware: what every timestamp column stores."""
    return datetime.now(UTC)


def new_uid() -> str:
    """A public id for tokens, never the enumerable row id: see new_uids()."""
    return new_uids(1)[0]


def new_uids(count: int) -> list[str]:
    """`count` public ids: 48 bits of milliseconds then 96 random bits, URL-safe (24 chars).

    96 random bits cannot be guessed; the time prefix makes new ids land at the end of the
    unique index instead of at random pages, which keeps bulk imports fast (as UUIDv7).
    18 bytes encode to exactly 24 base64 characters, so one encoding serves the batch.
    """
    prefix = int(time.time() * 1000).to_bytes(6, "big")
    random = secrets.token_bytes(12 * count)
    raw = b"".join(prefix + random[i:i + 12] for i in range(0, 12 * count, 12))
    text = base64.urlsafe_b64encode(raw).decode()
    return [text[i:i + 24] for i in range(0, 24 * count, 24)]


class OptIn(enum.StrEnum):
    SINGLE = "single"
    DOUBLE = "double"


class SubscriptionStatus(enum.StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"


class GlobalStatus(enum.StrEnum):
    ACTIVE = "active"
    BLOCKLISTED = "blocklisted"


class SuppressionReason(enum.StrEnum):
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    ERASED = "erased"
    MANUAL = "manual"


class ConsentAction(enum.StrEnum):
    SUBSCRIBE = "subscribe"
    CONFIRM = "confirm"
    UNSUBSCRIBE = "unsubscribe"
    IMPORT = "import"
    PREFERENCE = "preference"


class MailingList(SQLModel, table=True):
    """A list, defined by lists/<slug>.toml and synced into the database."""

    __tablename__ = "mailing_list"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    language: str = Field(default="nl", sa_column=Column(String(8), nullable=False))
    optin: str = Field(default=OptIn.DOUBLE, sa_column=Column(String(16), nullable=False))
    from_name: str = Field(sa_column=Column(String(200), nullable=False))
    from_address: str = Field(sa_column=Column(String(254), nullable=False))
    reply_to: str | None = Field(default=None, sa_column=Column(String(254)))
    public: bool = Field(default=False)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Subscriber(SQLModel, table=True):
    """A person. `email` is the only place the address is stored in clear."""

    __tablename__ = "subscriber"

    id: int | None = Field(default=None, primary_key=True)
    uid: str = Field(default_factory=new_uid, sa_column=Column(String(32), unique=True,
                                                                nullable=False))
    email: str = Field(sa_column=Column(String(254), unique=True, nullable=False))
    first_name: str | None = Field(default=None, sa_column=Column(String(200)))
    last_name: str | None = Field(default=None, sa_column=Column(String(200)))
    language: str | None = Field(default=None, sa_column=Column(String(8)))
    attributes: dict[str, Any] = Field(default_factory=dict,
                                       sa_column=Column(JsonType, nullable=False))
    status: str = Field(default=GlobalStatus.ACTIVE,
                        sa_column=Column(String(16), nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Subscription(SQLModel, table=True):
    """Membership of one subscriber in one list."""

    __tablename__ = "subscription"
    __table_args__ = (Index("ix_subscription_list_status", "list_id", "status"),)

    subscriber_id: int = Field(sa_column=Column(
        Integer, ForeignKey("subscriber.id", ondelete="CASCADE"), primary_key=True))
    list_id: int = Field(sa_column=Column(
        Integer, ForeignKey("mailing_list.id", ondelete="CASCADE"), primary_key=True))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    source: str = Field(default="", sa_column=Column(String(200), nullable=False, default=""))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    confirmed_at: datetime | None = None
    unsubscribed_at: datetime | None = None


class ConsentEvent(SQLModel, table=True):
    """Append-only record of what a person agreed to or withdrew, when and how."""

    __tablename__ = "consent_event"

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(sa_column=Column(
        Integer, ForeignKey("subscriber.id", ondelete="CASCADE"), nullable=False, index=True))
    list_id: int | None = Field(default=None, sa_column=Column(
        Integer, ForeignKey("mailing_list.id", ondelete="SET NULL")))
    action: str = Field(sa_column=Column(String(16), nullable=False))
    at: datetime = Field(default_factory=utcnow)
    source: str = Field(default="", sa_column=Column(String(200), nullable=False, default=""))
    consent: str | None = Field(default=None, sa_column=Column(Text))
    confirmed: bool = False  # True when the event states confirmed (opt-in) consent
    ip: str | None = Field(default=None, sa_column=Column(String(64)))
    user_agent: str | None = Field(default=None, sa_column=Column(String(400)))


class Suppression(SQLModel, table=True):
    """Addresses no list may ever mail, kept as a keyed hash (HMAC-SHA256), never in clear."""

    __tablename__ = "suppression"

    id: int | None = Field(default=None, primary_key=True)
    email_hash: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    reason: str = Field(sa_column=Column(String(32), nullable=False))
    note: str = Field(default="", sa_column=Column(String(400), nullable=False, default=""))
    created_at: datetime = Field(default_factory=utcnow)


class AuditLog(SQLModel, table=True):
    """Who did what, for the privacy officer. Never holds an address or a name."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow)
    actor: str = Field(sa_column=Column(String(100), nullable=False))
    action: str = Field(sa_column=Column(String(64), nullable=False))
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JsonType,
                                                                          nullable=False))
