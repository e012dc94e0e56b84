"""Campaigns: their life cycle, the frozen snapshot, the outbox fill, and their figures.

    draft ──▶ scheduled ──▶ sending ⇄ paused
      │           │            │        │
      └───────────┴────────────┴────────┴──▶ cancelled          sending ──▶ sent

Starting to send freezes the campaign: the template is prepared (flattened, inlined, text
derived) and stored with the subject in `snapshot`, and the audience becomes the outbox:
one `delivery` row per member, unique per (campaign, subscriber), filled by one INSERT …
SELECT (or, with a segment, checked in Python and inserted in bulk). Editing the template
or the lists afterwards changes nothing for this campaign. Who unsubscribes or is
suppressed after that is still skipped: the sender checks again at send time.

The rules for starting are here, once, for `campaign send` and `mailer run` alike
(`plan_start`, `start_campaign`), and for scheduling (`schedule_campaign`): a paused
campaign is resumed, not restarted; nobody to send to is an error, never an empty
send; a time in the past is refused unless the caller says so (`mailer run` would
start it at once).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from mailer.audience.lists import get_list
from mailer.content.mailing import TemplateSources
from mailer.dbtypes import Timestamp
from mailer.delivery.segments import matches, parse_segment
from mailer.errors import InvalidInput, NotFound
from mailer.models import (
    AuditLog,
    Campaign,
    CampaignState,
    Delivery,
    DeliveryState,
    GlobalStatus,
    MailingList,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    current_actor,
    utcnow,
)

__all__ = ["ALLOWED", "CampaignFigures", "InThePast", "StartPlan", "audience_count",
           "audience_groups", "audience_members", "campaign_figures", "create_campaign",
           "deliveries",
           "empty_audience", "get_campaign", "plan_start", "schedule_campaign",
           "snapshot_sources", "start_campaign", "transition"]

S = CampaignState
ALLOWED: dict[str, set[str]] = {
    S.DRAFT: {S.SCHEDULED, S.SENDING, S.CANCELLED},
    S.SCHEDULED: {S.DRAFT, S.SENDING, S.CANCELLED},
    S.SENDING: {S.PAUSED, S.SENT, S.CANCELLED},
    S.PAUSED: {S.SENDING, S.CANCELLED},
    S.SENT: set(),
    S.CANCELLED: set(),
}
_VERBS = {S.SCHEDULED: "schedule", S.SENDING: "send", S.PAUSED: "pause",
          S.CANCELLED: "cancel", S.DRAFT: "unschedule", S.SENT: "finish"}
_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
FINAL = (DeliveryState.SENT, DeliveryState.FAILED, DeliveryState.BOUNCED,
         DeliveryState.SKIPPED, DeliveryState.UNKNOWN)


class InThePast(InvalidInput):
    """A schedule whose time has passed: `mailer run` would start the campaign at once."""


@dataclass(frozen=True)
class StartPlan:
    """What starting a draft or scheduled campaign would do: the facts to confirm."""

    slug: str
    people: int
    lists: list[str]
    segment: list[str]
    senders: list[str]  # "Name <address>" of each list

    def question(self, through: str) -> str:
        return (f"Send {self.slug} to {self.people:,} people on {', '.join(self.lists)}"
                + (f" (where {' and '.join(self.segment)})" if self.segment else "")
                + f", from {', '.join(self.senders)}, through {through}?")


def plan_start(session: Session, campaign: Campaign) -> StartPlan | None:
    """The rules for starting to send. None for a campaign that is sending (it goes
    on); for a draft or scheduled one, what starting it would do; InvalidInput, with
    the reason and the way out, for a paused, sent or cancelled one, or when nobody
    would get it."""
    if campaign.state == S.SENDING:
        return None
    if campaign.state == S.PAUSED:
        raise InvalidInput(f"Campaign {campaign.slug} is paused"
                           + (f" ({campaign.pause_reason})" if campaign.pause_reason else "")
                           + ".", hint=f"Resume it: mailer campaign resume {campaign.slug}")
    if campaign.state not in (S.DRAFT, S.SCHEDULED):
        transition(campaign, S.SENDING)  # raises, saying why
    people = audience_count(session, campaign)
    if people == 0:
        raise _nobody(session, campaign)
    lists = session.exec(select(MailingList).where(
        MailingList.id.in_(campaign.list_ids))).all()  # type: ignore[union-attr]
    return StartPlan(slug=campaign.slug, people=people, lists=[ml.slug for ml in lists],
                     segment=list(campaign.segment),
                     senders=[f"{ml.from_name} <{ml.from_address}>" for ml in lists])


def _nobody(session: Session, campaign: Campaign) -> InvalidInput:
    why, hint = empty_audience(session, campaign)
    return InvalidInput(f"Nobody would get {campaign.slug}: {why}", hint=hint)


def empty_audience(session: Session, campaign: Campaign) -> tuple[str, str | None]:
    """Why a campaign reaches nobody, and the way out: the one explanation that `campaign
    create`, `send` and `mailer run` give (issue 12, point 3). Members still pending
    confirmation get no mail until they confirm, and nothing asks them unless told to."""
    sub, person = Subscription.__table__, Subscriber.__table__  # type: ignore[attr-defined]
    rows = session.connection().execute(
        sa.select(sub.c.status, sa.func.count(sa.distinct(sub.c.subscriber_id)))
        .select_from(sub.join(person, person.c.id == sub.c.subscriber_id))
        .where(sub.c.list_id.in_(campaign.list_ids), person.c.status == GlobalStatus.ACTIVE)
        .group_by(sub.c.status)).all()
    counts = {str(status): int(n) for status, n in rows}
    pending, confirmed = counts.get(SubscriptionStatus.PENDING, 0), counts.get(
        SubscriptionStatus.CONFIRMED, 0)
    lists = ", ".join(session.exec(select(MailingList.slug).where(
        MailingList.id.in_(campaign.list_ids))).all())  # type: ignore[union-attr]
    if confirmed and campaign.segment:
        return (f"{confirmed:,} confirmed on {lists}, none matching the segment "
                f"({' and '.join(campaign.segment)}).", "Change or drop --where.")
    if pending:
        people = "person is" if pending == 1 else "people are"
        return (f"{pending:,} {people} pending confirmation on {lists}; 0 confirmed.",
                f"Ask them: mailer subscribers import FILE --list {lists.split(', ')[0]} "
                "--send-confirmation (mails the confirmation link, once; nobody is asked "
                "twice), or --confirmed instead if they confirmed elsewhere. They get "
                "campaigns once they confirm.")
    return f"no confirmed members on {lists}.", None


def schedule_campaign(campaign: Campaign, when: datetime, *, past_ok: bool = False) -> None:
    """Schedule `campaign` (a draft, or move a scheduled one) for `when`, an aware
    time. A time that has passed raises InThePast unless `past_ok`."""
    if campaign.state != S.SCHEDULED and S.SCHEDULED not in ALLOWED[campaign.state]:
        transition(campaign, S.SCHEDULED)  # raises, saying why
    if when <= utcnow() and not past_ok:
        raise InThePast(f"{when:%Y-%m-%d %H:%M %Z} is in the past: the next `mailer run` "
                        f"would start {campaign.slug} at once.",
                        hint="Give a later time; or add --yes to have `mailer run` start it "
                             f"now (or: mailer campaign send {campaign.slug}).")
    if campaign.state != S.SCHEDULED:
        transition(campaign, S.SCHEDULED)
    campaign.scheduled_at = when


def get_campaign(session: Session, slug: str) -> Campaign:
    row = session.exec(select(Campaign).where(Campaign.slug == slug)).first()
    if row is None:
        known = ", ".join(session.exec(select(Campaign.slug).order_by(Campaign.id)).all())
        raise NotFound(f"No campaign called {slug!r} (known: {known or 'none yet'}).",
                       hint="Create one with `mailer campaign create`.")
    return row


def create_campaign(session: Session, *, slug: str, title: str | None, template: str,
                    subject: str, list_slugs: list[str] | tuple[str, ...],
                    segment: list[str] | tuple[str, ...] = ()) -> Campaign:
    if not _SLUG.match(slug):
        raise InvalidInput(f"The campaign name {slug!r} is not usable: lower-case letters, "
                           "digits, '.', '-' and '_', at most 64.")
    if session.exec(select(Campaign.id).where(Campaign.slug == slug)).first() is not None:
        raise InvalidInput(f"A campaign called {slug!r} exists already.")
    if not list_slugs:
        raise InvalidInput("A campaign needs at least one list (--list).")
    if not subject.strip():
        raise InvalidInput("The subject is empty.")
    lists = [get_list(session, s) for s in dict.fromkeys(list_slugs)]
    conditions = parse_segment(list(segment))
    campaign = Campaign(slug=slug, title=title or lists[0].name, template=template,
                        subject=subject, list_ids=[ml.id for ml in lists],
                        segment=[str(c) for c in conditions])
    session.add(campaign)
    session.flush()
    return campaign


def transition(campaign: Campaign, to: str, *, reason: str | None = None) -> None:
    """Move `campaign` to state `to`, or InvalidInput saying why not."""
    if to not in ALLOWED[campaign.state]:
        if campaign.state == to:
            raise InvalidInput(f"Campaign {campaign.slug} is {to} already.")
        raise InvalidInput(f"Campaign {campaign.slug} is {campaign.state}: it cannot "
                           f"{_VERBS.get(to, to)} now.", hint=_hint(campaign.state))
    now = utcnow()
    campaign.state = to
    campaign.updated_at = now
    campaign.pause_reason = reason if to == S.PAUSED else None
    if to == S.SENDING and campaign.started_at is None:
        campaign.started_at = now
    if to in (S.SENT, S.CANCELLED):
        campaign.finished_at = now


def _hint(state: str) -> str | None:
    return {S.SENT: "A sent campaign is done; create a new one to send again.",
            S.CANCELLED: "A cancelled campaign stays cancelled; create a new one.",
            S.PAUSED: "Resume it with `mailer campaign resume`.",
            S.SENDING: "Pause it with `mailer campaign pause`."}.get(state)


def _audience_select(campaign: Campaign) -> sa.Select[Any]:
    """Confirmed members of the campaign's lists who are active: one row per person,
    through the first of their lists."""
    sub, person = Subscription.__table__, Subscriber.__table__  # type: ignore[attr-defined]
    return (sa.select(sub.c.subscriber_id, sa.func.min(sub.c.list_id).label("list_id"))
            .select_from(sub.join(person, person.c.id == sub.c.subscriber_id))
            .where(sub.c.list_id.in_(campaign.list_ids),
                   sub.c.status == SubscriptionStatus.CONFIRMED,
                   person.c.status == GlobalStatus.ACTIVE)
            .group_by(sub.c.subscriber_id))


def _segment_members(session: Session, campaign: Campaign) -> Iterator[tuple[int, int]]:
    for subscriber_id, list_id, _ in audience_members(session, campaign):
        yield subscriber_id, list_id


def audience_members(session: Session, campaign: Campaign
                     ) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(subscriber id, list id, fields) of each person the campaign would reach now, the
    segment applied: what the template check judges the template against."""
    conditions = parse_segment(campaign.segment)
    members = _audience_select(campaign).subquery()
    person = Subscriber.__table__  # type: ignore[attr-defined]
    query = (sa.select(members.c.subscriber_id, members.c.list_id, person.c.email,
                       person.c.first_name, person.c.infix, person.c.last_name,
                       person.c.language, person.c.attributes)
             .join(person, person.c.id == members.c.subscriber_id)
             .order_by(members.c.subscriber_id))
    for row in session.connection().execute(query).yield_per(5000):
        data = {"email": row.email, "first_name": row.first_name, "infix": row.infix,
                "last_name": row.last_name, "language": row.language,
                "attributes": row.attributes or {}}
        if matches(conditions, data):
            yield row.subscriber_id, row.list_id, data


def audience_groups(session: Session, campaign: Campaign) -> list[tuple[int, int]] | None:
    """The campaign's audience counted by the database in groups of members whose
    templates see the same names: one (count, first member's id) per language, which of
    first name, infix and last name they have, and their attributes' names, in the order
    of the groups' first members. What the template check needs of a big audience,
    without reading it member by member (content/lint.group_audience merges these by
    their shape). None for a campaign with a segment: `--where` is evaluated in Python."""
    if campaign.segment:
        return None
    person = Subscriber.__table__  # type: ignore[attr-defined]
    members = _audience_select(campaign).subquery()
    if session.get_bind().dialect.name == "sqlite":
        names = sa.literal_column("(SELECT group_concat(key, char(31)) "
                        "FROM json_each(subscriber.attributes))")
    else:
        names = sa.literal_column("(SELECT string_agg(k, chr(31)) "
                        "FROM jsonb_object_keys(subscriber.attributes) AS k)")
    key = [person.c.language, names.label("names"), *(
        sa.and_(column.is_not(None), column != "").label(column.name)
        for column in (person.c.first_name, person.c.infix, person.c.last_name))]
    first = sa.func.min(person.c.id).label("first")
    rows = session.connection().execute(
        sa.select(sa.func.count(), first, *key)
        .select_from(members.join(person, person.c.id == members.c.subscriber_id))
        .group_by(*key).order_by(first)).all()
    return [(int(count), int(first_id)) for count, first_id, *_ in rows]


def audience_count(session: Session, campaign: Campaign) -> int:
    """How many people the campaign would reach now (before send-time checks)."""
    if campaign.segment:
        return sum(1 for _ in _segment_members(session, campaign))
    query = sa.select(sa.func.count()).select_from(_audience_select(campaign).subquery())
    return int(session.connection().execute(query).scalar_one())


def start_campaign(session: Session, campaign: Campaign, sources: TemplateSources) -> int:
    """Freeze template and subject, fill the outbox, and set the campaign sending.
    Returns the number of deliveries queued. One transaction with the caller's, which
    must roll back on the InvalidInput raised when nobody would get it (`plan_start`'s
    rules, checked here too: `mailer run` starts without asking)."""
    if campaign.state not in (S.DRAFT, S.SCHEDULED):
        plan_start(session, campaign)  # raises, saying why
    transition(campaign, S.SENDING)
    campaign.snapshot = {"name": sources.name, "html": sources.html, "text": sources.text,
                         "subject": campaign.subject,
                         # where the files were: a render error names the user's line
                         "folder": str(sources.folder) if sources.folder else None}
    now = utcnow()
    table = Delivery.__table__  # type: ignore[attr-defined]
    conn = session.connection()
    if campaign.segment:
        rows = [{"campaign_id": campaign.id, "subscriber_id": sid, "list_id": lid,
                 "state": DeliveryState.QUEUED.value, "attempts": 0, "queued_at": now,
                 "updated_at": now} for sid, lid in _segment_members(session, campaign)]
        for start in range(0, len(rows), 5000):
            conn.execute(table.insert(), rows[start:start + 5000])
        queued = len(rows)
    else:
        members = _audience_select(campaign).subquery()
        stamp = sa.literal(now, Timestamp())
        insert = table.insert().from_select(
            ["campaign_id", "subscriber_id", "list_id", "state", "attempts", "queued_at",
             "updated_at"],
            sa.select(sa.literal(campaign.id), members.c.subscriber_id, members.c.list_id,
                      sa.literal(DeliveryState.QUEUED.value), sa.literal(0), stamp, stamp))
        queued = conn.execute(insert).rowcount
        if queued < 0:  # a driver that does not count INSERT … SELECT: ask
            queued = conn.execute(sa.select(sa.func.count()).where(
                table.c.campaign_id == campaign.id)).scalar_one()
    if not queued:
        raise _nobody(session, campaign)
    session.add(campaign)
    session.add(AuditLog(actor=current_actor(), action="campaign.start", detail={
        "campaign": campaign.id, "slug": campaign.slug, "lists": campaign.list_ids,
        "segment": campaign.segment, "queued": int(queued)}))
    session.flush()
    return int(queued)


def snapshot_sources(campaign: Campaign) -> TemplateSources:
    snap = campaign.snapshot or {}
    folder = snap.get("folder")
    return TemplateSources(snap["name"], snap["html"], snap["text"],
                           Path(folder) if folder else None)


@dataclass
class CampaignFigures:
    slug: str
    state: str
    title: str
    lists: list[str]
    segment: list[str]
    template: str
    subject: str
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    pause_reason: str | None
    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0
    sent_last_minute: int = 0
    eta_seconds: float | None = None  # only while sending: a paused campaign has none
    next_retry_at: datetime | None = None  # the earliest deferred delivery's next attempt
    last_errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return sum(self.counts.get(s, 0) for s in (DeliveryState.QUEUED,
                                                    DeliveryState.DEFERRED,
                                                    DeliveryState.SENDING))


def campaign_figures(session: Session, campaign: Campaign, *,
                     rate: float | None = None) -> CampaignFigures:
    table = Delivery.__table__  # type: ignore[attr-defined]
    conn = session.connection()
    counts = {state: int(n) for state, n in conn.execute(
        sa.select(table.c.state, sa.func.count()).where(table.c.campaign_id == campaign.id)
        .group_by(table.c.state))}
    minute_ago = utcnow() - timedelta(minutes=1)
    recent = conn.execute(sa.select(sa.func.count()).where(
        table.c.campaign_id == campaign.id, table.c.state == DeliveryState.SENT,
        table.c.sent_at >= sa.literal(minute_ago, Timestamp()))).scalar_one()
    errors = conn.execute(
        sa.select(table.c.state, table.c.last_reply, sa.func.count().label("n"))
        .where(table.c.campaign_id == campaign.id,
               table.c.state.in_([DeliveryState.FAILED, DeliveryState.DEFERRED,
                                  DeliveryState.BOUNCED]))
        .group_by(table.c.state, table.c.last_reply)
        .order_by(sa.desc("n")).limit(5)).all()
    names = session.exec(select(MailingList.slug).where(
        MailingList.id.in_(campaign.list_ids))).all()  # type: ignore[union-attr]
    figures = CampaignFigures(
        slug=campaign.slug, state=campaign.state, title=campaign.title, lists=list(names),
        segment=list(campaign.segment), template=campaign.template, subject=campaign.subject,
        scheduled_at=campaign.scheduled_at, started_at=campaign.started_at,
        finished_at=campaign.finished_at, pause_reason=campaign.pause_reason,
        counts=counts, total=sum(counts.values()), sent_last_minute=int(recent),
        last_errors=[{"state": e.state, "reply": e.last_reply, "count": int(e.n)}
                     for e in errors])
    if counts.get(DeliveryState.DEFERRED):
        figures.next_retry_at = conn.execute(sa.select(sa.func.min(table.c.next_attempt_at))
                                             .where(table.c.campaign_id == campaign.id,
                                                    table.c.state == DeliveryState.DEFERRED)
                                             ).scalar_one()
    pace = recent / 60 if recent else rate
    if campaign.state == CampaignState.SENDING and figures.remaining and pace:
        figures.eta_seconds = figures.remaining / pace
    return figures


def deliveries(session: Session, campaign: Campaign, *, state: str | None = None,
               limit: int | None = None) -> Iterator[dict[str, Any]]:
    table = Delivery.__table__  # type: ignore[attr-defined]
    person = Subscriber.__table__  # type: ignore[attr-defined]
    query = (sa.select(table.c.id, person.c.email, table.c.state, table.c.attempts,
                       table.c.next_attempt_at, table.c.last_reply, table.c.message_id,
                       table.c.sent_at, table.c.updated_at)
             .select_from(table.outerjoin(person, person.c.id == table.c.subscriber_id))
             .where(table.c.campaign_id == campaign.id).order_by(table.c.id))
    if state:
        query = query.where(table.c.state == state)
    if limit:
        query = query.limit(limit)
    for row in session.connection().execute(query).yield_per(1000):
        yield {"email": row.email or "(erased)", "state": row.state,
               "attempts": row.attempts, "next_attempt_at": row.next_attempt_at,
               "last_reply": row.last_reply, "message_id": row.message_id,
               "sent_at": row.sent_at, "updated_at": row.updated_at}
