"""The tables. Alembic migrations in mailer/migrations/ create and change them.

Designed for erasure (GDPR/AVG): an address in clear text lives in exactly one column,
`subscriber.email`. Suppression keeps only a keyed hash of the address, consent events and
the audit log point at a subscriber by id, so erasing a person is deleting one row (with
its cascades) and adding a hash to the suppression list.

Timestamps are timezone-aware UTC (`utcnow()`), stored by `dbtypes.Timestamp`.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from mailer.dbtypes import (  # noqa: F401 - TEST_CLOCK: for the tests
    TEST_CLOCK,
    Timestamp,
    current_actor,
    utcnow,
)

__all__ = [
    "AuditLog",
    "Campaign",
    "CampaignKind",
    "CampaignState",
    "Delivery",
    "DeliveryState",
    "FeedbackEvent",
    "FeedbackKind",
    "Incident",
    "LinkClick",
    "RecurringCampaign",
    "RecurringOccurrence",
    "Sequence",
    "SequenceProgress",
    "SequenceStep",
    "ConsentAction",
    "ConsentEvent",
    "GlobalStatus",
    "MailingList",
    "OptIn",
    "Subscriber",
    "Subscription",
    "SenderLease",
    "SubscriptionStatus",
    "Suppression",
    "SuppressionReason",
    "current_actor",
    "utcnow",
]

# JSON on SQLite, JSONB (indexable, comparable) on PostgreSQL.
JsonType = JSON().with_variant(JSONB(), "postgresql")


def _stamp(*, nullable: bool = False) -> Column[Any]:
    return Column(Timestamp(), nullable=nullable)


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
    SOFT_BOUNCES = "soft_bounces"  # N soft bounces within M days ([feedback] policy)
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
    created_at: datetime = Field(default_factory=utcnow, sa_column=_stamp())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_stamp())


class Subscriber(SQLModel, table=True):
    """A person. `email` is the only place the address is stored in clear."""

    __tablename__ = "subscriber"

    # Links and tokens never show this id in clear: they carry it encrypted and signed
    # (tokens.py), so no subscriber can be enumerated and no extra indexed column is needed.
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(sa_column=Column(String(254), unique=True, nullable=False))
    first_name: str | None = Field(default=None, sa_column=Column(String(200)))
    # The Dutch tussenvoegsel ("van der"): "Jan van der Berg", sorted under B (names.py).
    infix: str | None = Field(default=None, sa_column=Column(String(200)))
    last_name: str | None = Field(default=None, sa_column=Column(String(200)))
    language: str | None = Field(default=None, sa_column=Column(String(8)))
    attributes: dict[str, Any] = Field(default_factory=dict,
                                       sa_column=Column(JsonType, nullable=False))
    status: str = Field(default=GlobalStatus.ACTIVE,
                        sa_column=Column(String(16), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_stamp())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_stamp())


class Subscription(SQLModel, table=True):
    """Membership of one subscriber in one list."""

    __tablename__ = "subscription"
    # WITHOUT ROWID on SQLite: the primary key is the table, one B-tree fewer per member.
    __table_args__ = (Index("ix_subscription_list_status", "list_id", "status"),
                      {"sqlite_with_rowid": False})

    subscriber_id: int = Field(sa_column=Column(
        Integer, ForeignKey("subscriber.id", ondelete="CASCADE"), primary_key=True))
    list_id: int = Field(sa_column=Column(
        Integer, ForeignKey("mailing_list.id", ondelete="CASCADE"), primary_key=True))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    source: str = Field(default="", sa_column=Column(String(200), nullable=False, default=""))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_stamp())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_stamp())
    confirmed_at: datetime | None = Field(default=None, sa_column=_stamp(nullable=True))
    unsubscribed_at: datetime | None = Field(default=None,
                                             sa_column=_stamp(nullable=True))


class ConsentEvent(SQLModel, table=True):
    """Append-only record of what a person agreed to or withdrew, when and how."""

    __tablename__ = "consent_event"

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(sa_column=Column(
        Integer, ForeignKey("subscriber.id", ondelete="CASCADE"), nullable=False, index=True))
    list_id: int | None = Field(default=None, sa_column=Column(
        Integer, ForeignKey("mailing_list.id", ondelete="SET NULL")))
    action: str = Field(sa_column=Column(String(16), nullable=False))
    at: datetime = Field(default_factory=utcnow, sa_column=_stamp())
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
    created_at: datetime = Field(default_factory=utcnow, sa_column=_stamp())


class AuditLog(SQLModel, table=True):
    """Who did what, for the privacy officer. Never holds an address or a name."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_column=_stamp())
    actor: str = Field(sa_column=Column(String(100), nullable=False))
    action: str = Field(sa_column=Column(String(64), nullable=False))
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JsonType,
                                                                          nullable=False))


class CampaignState(enum.StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    SENT = "sent"
    CANCELLED = "cancelled"


class DeliveryState(enum.StrEnum):
    QUEUED = "queued"  # waiting for its turn
    SENDING = "sending"  # committed just before the SMTP transaction; after a crash: unknown
    SENT = "sent"  # the relay answered 250 to DATA
    DEFERRED = "deferred"  # a 4xx or a connection fault; retried at next_attempt_at
    FAILED = "failed"  # deferred too often, or refused for a reason that is not the address
    BOUNCED = "bounced"  # 5xx at RCPT or DATA: the address does not take mail
    SKIPPED = "skipped"  # unsubscribed, suppressed or blocklisted by the time it was its turn
    UNKNOWN = "unknown"  # was in flight when the sender died: not resent unless asked


class CampaignKind(enum.StrEnum):
    CAMPAIGN = "campaign"  # a mailing a person made (`campaign create`): listed, reported
    NOTICE = "notice"  # the engine's own: confirmation, welcome and export mails of a list
    STEP = "step"  # one step of a list's sequence (the autoresponder)


class Campaign(SQLModel, table=True):
    """A mailing to one or more lists. Template, subject and audience are frozen
    (`snapshot`, and the delivery rows) when sending starts."""

    __tablename__ = "campaign"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    title: str = Field(sa_column=Column(String(200), nullable=False))
    template: str = Field(sa_column=Column(String(400), nullable=False))
    subject: str = Field(sa_column=Column(Text, nullable=False))
    list_ids: list[int] = Field(default_factory=list, sa_column=Column(JsonType,
                                                                       nullable=False))
    segment: list[str] = Field(default_factory=list, sa_column=Column(JsonType,
                                                                      nullable=False))
    state: str = Field(default=CampaignState.DRAFT,
                       sa_column=Column(String(16), nullable=False))
    # Notices and sequence steps are campaigns too, so every mail goes through the one
    # outbox (`delivery`); they stay open ("sending") and are not listed as campaigns.
    kind: str = Field(default=CampaignKind.CAMPAIGN, sa_column=Column(
        String(16), nullable=False, server_default=CampaignKind.CAMPAIGN.value))
    scheduled_at: datetime | None = Field(default=None, sa_column=_stamp(nullable=True))
    started_at: datetime | None = Field(default=None, sa_column=_stamp(nullable=True))
    finished_at: datetime | None = Field(default=None, sa_column=_stamp(nullable=True))
    # The prepared template (flattened, inlined HTML and text sources) and subject, taken
    # when sending starts: editing the files afterwards changes nothing for this campaign.
    snapshot: dict[str, Any] | None = Field(default=None, sa_column=Column(JsonType))
    pause_reason: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_stamp())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_stamp())


class Delivery(SQLModel, table=True):
    """The outbox: one row per (campaign, subscriber), the unit of truth of a send."""

    __tablename__ = "delivery"
    __table_args__ = (UniqueConstraint("campaign_id", "subscriber_id"),
                      Index("ix_delivery_campaign_state", "campaign_id", "state"),
                      Index("ix_delivery_message_id", "message_id"),
                      Index("ix_delivery_subscriber", "subscriber_id"))

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(sa_column=Column(
        Integer, ForeignKey("campaign.id", ondelete="CASCADE"), nullable=False))
    # SET NULL: erasing a person keeps the campaign's counts, not who they were.
    subscriber_id: int | None = Field(default=None, sa_column=Column(
        Integer, ForeignKey("subscriber.id", ondelete="SET NULL")))
    list_id: int | None = Field(default=None, sa_column=Column(
        Integer, ForeignKey("mailing_list.id", ondelete="SET NULL")))
    state: str = Field(default=DeliveryState.QUEUED,
                       sa_column=Column(String(12), nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    next_attempt_at: datetime | None = Field(default=None, sa_column=_stamp(nullable=True))
    last_reply: str | None = Field(default=None, sa_column=Column(Text))
    message_id: str | None = Field(default=None, sa_column=Column(String(255)))
    queued_at: datetime = Field(default_factory=utcnow, sa_column=_stamp())
    sent_at: datetime | None = Field(default=None, sa_column=_stamp(nullable=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_stamp())
    # The sender that took it from the outbox (PostgreSQL, several senders: a claim that
    # holds while that sender's lease runs; delivery/claims.py). No foreign key: a
    # sender's row goes when it ends, and a claim naming no live sender is no claim.
    claimed_by: int | None = Field(default=None, sa_column=Column(Integer))


class SenderLease(SQLModel, table=True):
    """A sender at work (PostgreSQL: `mailer worker`, `mailer run`, `campaign send`, the
    web app's notices), holding a lease it renews while it lives (delivery/claims.py)."""

    __tablename__ = "sender"

    id: int | None = Field(default=None, primary_key=True)
    host: str = Field(sa_column=Column(String(255), nullable=False))
    pid: int = Field(sa_column=Column(Integer, nullable=False))
    started_at: datetime = Field(default_factory=utcnow, sa_column=_stamp())
    lease_until: datetime = Field(sa_column=_stamp())
    campaign_id: int | None = Field(default=None, sa_column=Column(Integer))
    sent: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    rate: float = Field(default=0.0, sa_column=Column(Float, nullable=False,
                                                      server_default="0"))
    # Where `pid` means something: the kernel's boot and the pid namespace
    # (claims.machine). A sender on the same one sees at once that this one's process
    # is gone. None: unknown (no /proc), its lease decides alone.
    machine: str | None = Field(default=None, sa_column=Column(String(64)))


class NoticeKind(enum.StrEnum):
    """The engine's own mails to one person (delivery/notices.py): each (kind, list) is a
    campaign of kind "notice", each mail a delivery of it."""

    CONFIRM = "confirm"  # the double opt-in mail with the confirmation link
    WELCOME = "welcome"  # after a single opt-in sign-up (or a confirmation, when wanted)
    EXPORT = "export"  # a copy of the person's data, asked for on the preferences page


class FeedbackKind(enum.StrEnum):
    BOUNCE = "bounce"  # a recipient failed (hard or soft: see `hard` and `reason`)
    DELAYED = "delayed"  # a DSN with Action: delayed; not a failure
    AUTO_REPLY = "auto-reply"  # out of office and other RFC 3834 replies; never a bounce
    COMPLAINT = "complaint"  # an ARF report (or a provider's webhook): the person said "spam"
    UNSUBSCRIBE = "unsubscribe"  # a mail to unsub+TOKEN@ (List-Unsubscribe mailto)
    OTHER = "other"  # anything else that reached the return address


class FeedbackEvent(SQLModel, table=True):
    """What came back for a message: one row per failed recipient of a report (or one for
    an auto-reply, complaint, unsubscribe or other message), with the classification, how
    it was attributed and what the policy did.

    `message_key` + `seq` is unique: the same returned message processed twice (a crash
    between processing and deleting it) is recognised and counts once. The diagnostic is
    kept with every address in it masked to its domain; erasing the subscriber deletes
    their events (CASCADE)."""

    __tablename__ = "feedback_event"
    __table_args__ = (UniqueConstraint("message_key", "seq"),
                      Index("ix_feedback_event_campaign", "campaign_id", "kind"),
                      Index("ix_feedback_event_subscriber", "subscriber_id", "at"))

    id: int | None = Field(default=None, primary_key=True)
    message_key: str = Field(sa_column=Column(String(64), nullable=False))
    seq: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    at: datetime = Field(default_factory=utcnow, sa_column=_stamp())
    source: str = Field(default="", sa_column=Column(String(200), nullable=False, default=""))
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(String(24)))
    hard: bool = False
    sender_side: bool = False  # a rejection of our own sending: warns, never suppresses
    status: str | None = Field(default=None, sa_column=Column(String(16)))
    reply_code: int | None = Field(default=None, sa_column=Column(Integer))
    diagnostic: str | None = Field(default=None, sa_column=Column(Text))
    domain: str | None = Field(default=None, sa_column=Column(String(253)))
    attributed_by: str | None = Field(default=None, sa_column=Column(String(16)))
    subscriber_id: int | None = Field(default=None, sa_column=Column(
        Integer, ForeignKey("subscriber.id", ondelete="CASCADE")))
    campaign_id: int | None = Field(default=None, sa_column=Column(
        Integer, ForeignKey("campaign.id", ondelete="SET NULL")))
    list_id: int | None = Field(default=None, sa_column=Column(
        Integer, ForeignKey("mailing_list.id", ondelete="SET NULL")))
    delivery_id: int | None = Field(default=None, sa_column=Column(
        Integer, ForeignKey("delivery.id", ondelete="SET NULL")))
    action: str = Field(default="", sa_column=Column(String(64), nullable=False, default=""))


class Incident(SQLModel, table=True):
    """The breach register (AVG/GDPR art. 33(5)): every personal-data breach, reported to
    the authority or not, with its facts, effects and remedy. Never names a person."""

    __tablename__ = "incident"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_column=_stamp())  # when recorded
    occurred_at: datetime | None = Field(default=None, sa_column=_stamp(nullable=True))
    title: str = Field(sa_column=Column(String(200), nullable=False))
    facts: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    effects: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    remedy: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    people: int | None = Field(default=None, sa_column=Column(Integer))  # how many affected
    reported_at: datetime | None = Field(default=None, sa_column=_stamp(nullable=True))
    source: str = Field(default="manual", sa_column=Column(String(16), nullable=False,
                                                             default="manual"))
    actor: str = Field(default="", sa_column=Column(String(100), nullable=False, default=""))


class LinkClick(SQLModel, table=True):
    """A link of a campaign's template and how often it was followed, with `[tracking]
    clicks = "aggregate"` (content/tracking.py): counted per campaign and link, never per
    person. The redirect of /l/TOKEN goes to `url`, never to an address in the request."""

    __tablename__ = "link_click"

    campaign_id: int = Field(sa_column=Column(
        Integer, ForeignKey("campaign.id", ondelete="CASCADE"), primary_key=True))
    link_index: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    url: str = Field(sa_column=Column(Text, nullable=False))
    clicks: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))


class RecurringCampaign(SQLModel, table=True):
    """A campaign sent again on a cron schedule (`campaign create --every`, automation/
    recurring.py): `mailer run` makes one dated campaign of it per occurrence. `next_local`
    is the next occurrence as a wall time in `timezone`, `next_at` the instant it is due."""

    __tablename__ = "recurring_campaign"
    __table_args__ = (Index("ix_recurring_campaign_due", "state", "next_at"),)

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(sa_column=Column(String(48), unique=True, nullable=False))
    title: str = Field(sa_column=Column(String(200), nullable=False))
    template: str = Field(sa_column=Column(String(400), nullable=False))
    subject: str = Field(sa_column=Column(Text, nullable=False))
    list_ids: list[int] = Field(default_factory=list, sa_column=Column(JsonType,
                                                                       nullable=False))
    segment: list[str] = Field(default_factory=list, sa_column=Column(JsonType,
                                                                      nullable=False))
    cron: str = Field(sa_column=Column(String(100), nullable=False))
    timezone: str = Field(sa_column=Column(String(64), nullable=False))
    state: str = Field(default="active", sa_column=Column(String(16), nullable=False))
    next_local: str | None = Field(default=None, sa_column=Column(String(16)))
    next_at: datetime | None = Field(default=None, sa_column=_stamp(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_stamp())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_stamp())


class RecurringOccurrence(SQLModel, table=True):
    """One occurrence of a recurring campaign, handled: the dated campaign made for it, or
    why it was skipped. The key (recurring campaign, wall time) makes an occurrence happen
    once, whatever runs overlap; the wall time, not the instant, because a time skipped
    by the spring DST change still happens (an hour later) and one repeated in autumn
    happens once."""

    __tablename__ = "recurring_occurrence"

    recurring_id: int = Field(sa_column=Column(
        Integer, ForeignKey("recurring_campaign.id", ondelete="CASCADE"), primary_key=True))
    local_time: str = Field(sa_column=Column(String(16), primary_key=True))  # 2026-12-07T09:00
    due_at: datetime = Field(sa_column=_stamp())
    campaign_id: int | None = Field(default=None, sa_column=Column(
        Integer, ForeignKey("campaign.id", ondelete="SET NULL"), index=True))
    outcome: str = Field(sa_column=Column(String(16), nullable=False))  # created | skipped
    note: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_stamp())


class Sequence(SQLModel, table=True):
    """A drip sequence of a list (`[[sequence]]` in lists/<slug>.toml, automation/
    sequences.py), copied in by `lists sync`. `timezone` is the list's: a step's send
    window is read in it for a subscriber without a `timezone` attribute. A sequence
    whose definition is gone is kept, `removed` (who is in it gets nothing more)."""

    __tablename__ = "sequence"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(48), unique=True, nullable=False))
    list_id: int = Field(sa_column=Column(
        Integer, ForeignKey("mailing_list.id", ondelete="CASCADE"), nullable=False))
    timezone: str = Field(sa_column=Column(String(64), nullable=False))
    state: str = Field(default="active", sa_column=Column(String(16), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_stamp())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_stamp())


class SequenceStep(SQLModel, table=True):
    """One step of a sequence, by its stable `key` (the step's `id`, else its template
    path): its mail is the campaign `campaign_id`, of kind "step", whose delivery rows
    are who got it (one per person: the outbox's UNIQUE). `position` is its place in
    the file (NULL once removed from it); `after_seconds` its time after the start."""

    __tablename__ = "sequence_step"
    __table_args__ = (UniqueConstraint("sequence_id", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    sequence_id: int = Field(sa_column=Column(
        Integer, ForeignKey("sequence.id", ondelete="CASCADE"), nullable=False))
    key: str = Field(sa_column=Column(String(400), nullable=False))
    position: int | None = Field(default=None, sa_column=Column(Integer))
    after_seconds: int = Field(sa_column=Column(Integer, nullable=False))
    window: str | None = Field(default=None, sa_column=Column(String(11)))  # 09:00-17:00
    weekdays: str | None = Field(default=None, sa_column=Column(String(40)))  # mon-fri
    campaign_id: int = Field(sa_column=Column(
        Integer, ForeignKey("campaign.id", ondelete="CASCADE"), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_stamp())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_stamp())


class SequenceProgress(SQLModel, table=True):
    """Where one subscriber is in one sequence: started at confirmation (or by an
    import with --start-sequences); `passed_after` is the time (after the start) of the
    last step queued for them, -1 before the first; `next_step_id` and `next_at` the
    step due next and when (NULL when done or stopped). `mailer run` reads the due rows
    by the index on next_at, never the whole table."""

    __tablename__ = "sequence_progress"
    __table_args__ = (Index("ix_sequence_progress_due", "next_at"),
                      Index("ix_sequence_progress_subscriber", "subscriber_id"),
                      {"sqlite_with_rowid": False})

    sequence_id: int = Field(sa_column=Column(
        Integer, ForeignKey("sequence.id", ondelete="CASCADE"), primary_key=True))
    subscriber_id: int = Field(sa_column=Column(
        Integer, ForeignKey("subscriber.id", ondelete="CASCADE"), primary_key=True))
    list_id: int = Field(sa_column=Column(
        Integer, ForeignKey("mailing_list.id", ondelete="CASCADE"), nullable=False))
    started_at: datetime = Field(sa_column=_stamp())
    passed_after: int = Field(default=-1, sa_column=Column(Integer, nullable=False))
    last_step_id: int | None = Field(default=None, sa_column=Column(
        Integer, ForeignKey("sequence_step.id", ondelete="SET NULL")))
    next_step_id: int | None = Field(default=None, sa_column=Column(
        Integer, ForeignKey("sequence_step.id", ondelete="SET NULL")))
    next_at: datetime | None = Field(default=None, sa_column=_stamp(nullable=True))
    state: str = Field(default="active", sa_column=Column(String(12), nullable=False))
    note: str | None = Field(default=None, sa_column=Column(String(200)))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_stamp())
