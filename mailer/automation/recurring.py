"""Recurring campaigns: `campaign create NAME --every CRON --tz ZONE`, and `mailer run`
making one dated campaign per occurrence (`materialize`).

A recurring campaign is a definition (list, template, subject, segment, schedule), never
sent itself. When an occurrence is due, `materialize` creates the campaign NAME-DATE
(NAME-DATE-HHMM when the schedule fires more than once a day), scheduled at the
occurrence's time, and `mailer run` starts it by the rules every scheduled campaign
follows (delivery/campaigns.py): one path through a send.

Time. croniter reads the schedule (no cron parser of our own), over *wall times* in the
campaign's zone; zoneinfo turns a wall time into the instant it is due. A wall time the
spring change skips (02:30 on the last Sunday of March in Brussels) is due when the clock
has jumped past it (03:30 summer time): late, but once. One the autumn change repeats is
due the first time (summer time), once. An occurrence is keyed by its wall time
(`recurring_occurrence`, primary key (campaign, wall time)): two overlapping runs cannot
both make it, and the DST changes neither skip nor double it.

Missed occurrences. One found more than `GRACE` after its time (the machine was down) is
handled by `[delivery] missed`: "send-late" sends it, late, with a warning; "skip" skips
it, with a warning. When several were missed, only the latest can be sent: the earlier
ones are skipped as superseded (three weekly letters on one morning help nobody).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from mailer.db import session_scope
from mailer.delivery.campaigns import create_campaign, transition
from mailer.errors import InvalidInput, MailerError
from mailer.models import (
    AuditLog,
    Campaign,
    CampaignState,
    MailingList,
    RecurringCampaign,
    RecurringOccurrence,
    current_actor,
    utcnow,
)
from mailer.project import Project

__all__ = ["ACTIVE", "CANCELLED", "GRACE", "PAUSED", "Occurrence", "Schedule",
           "campaign_date", "create_recurring", "find_recurring", "listing", "materialize",
           "set_state", "summary"]

GRACE = timedelta(hours=1)  # later than this after its time, an occurrence was missed
ACTIVE, PAUSED, CANCELLED = "active", "paused", "cancelled"
_WALL = "%Y-%m-%dT%H:%M"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,47}$")


@dataclass(frozen=True)
class Schedule:
    """A cron expression in a time zone, stepped over wall times."""

    cron: str
    zone: ZoneInfo

    @classmethod
    def parse(cls, cron: str, timezone: str) -> Schedule:
        """The schedule, or InvalidInput saying what is wrong with it."""
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(f"Unknown time zone {timezone!r}.",
                               hint="e.g. Europe/Brussels, Europe/Amsterdam, UTC.") from None
        cron = " ".join(cron.split())
        fields = cron.split(" ")
        if not cron.startswith("@") and len(fields) != 5:
            raise InvalidInput(f"The schedule {cron!r} is not a cron expression of five "
                               "fields (minute hour day month weekday).",
                               hint='e.g. --every "0 9 * * MON" (Mondays at 9:00).')
        try:
            croniter(cron, datetime(2000, 1, 1)).get_next(datetime)
        except (CroniterBadCronError, CroniterBadDateError, CroniterError, ValueError) as exc:
            raise InvalidInput(f"The schedule {cron!r} cannot be used: {exc}",
                               hint='e.g. --every "0 9 * * MON" (Mondays at 9:00).') from None
        return cls(cron, zone)

    def after(self, wall: datetime) -> datetime:
        """The first wall time of the schedule after the wall time `wall` (naive)."""
        return croniter(self.cron, wall).get_next(datetime)

    def first_after(self, now: datetime) -> datetime:
        """The first occurrence (a wall time) due after the instant `now`. The search
        starts three hours of wall time back: around a DST change the wall time now
        says little (at 03:20 summer time, 02:30 of that night is still to come)."""
        wall = self.after(now.astimezone(self.zone).replace(tzinfo=None)
                          - timedelta(hours=3))
        while self.due(wall) <= now:
            wall = self.after(wall)
        return wall

    def due(self, wall: datetime) -> datetime:
        """The instant (UTC) the wall time `wall` is due. fold=0: a repeated wall time is
        due the first time; one that does not exist takes the offset from before the
        change, so it is due as many minutes after the jump as it was after the hour."""
        return wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)

    @property
    def several_a_day(self) -> bool:
        minutes, hours = croniter(self.cron).expanded[:2]
        return "*" in minutes or "*" in hours or len(minutes) * len(hours) > 1

    def slug(self, name: str, wall: datetime) -> str:
        """The dated campaign's name: weekly-2026-12-07 (or weekly-2026-12-07-0930)."""
        return f"{name}-{wall:%Y-%m-%d}" + (f"-{wall:%H%M}" if self.several_a_day else "")


def _schedule(row: RecurringCampaign) -> Schedule:
    return Schedule.parse(row.cron, row.timezone)


def find_recurring(session: Session, name: str) -> RecurringCampaign | None:
    return session.exec(select(RecurringCampaign).where(
        RecurringCampaign.slug == name)).first()


def create_recurring(session: Session, *, name: str, every: str, timezone: str,
                     title: str | None, template: str, subject: str,
                     list_slugs: list[str] | tuple[str, ...],
                     segment: list[str] | tuple[str, ...] = ()) -> tuple[RecurringCampaign,
                                                                        Campaign]:
    """The recurring campaign NAME, first occurrence after now. Returns it and its
    campaign as it would be for an occurrence, not saved (for `templates check`: the
    caller checks the template against the audience before the transaction commits)."""
    if not _NAME.match(name):
        raise InvalidInput(f"The name {name!r} is not usable for a recurring campaign: "
                           "lower-case letters, digits, '.', '-' and '_', at most 48 (the "
                           "date is added for each occurrence).")
    if find_recurring(session, name) is not None or session.exec(select(Campaign.id).where(
            Campaign.slug == name)).first() is not None:
        raise InvalidInput(f"A campaign called {name!r} exists already.")
    schedule = Schedule.parse(every, timezone)
    # The checks of `campaign create` (lists, segment, subject), one set of rules: the
    # campaign it makes is only a probe, deleted again in the same transaction.
    probe = create_campaign(session, slug=name, title=title, template=template,
                            subject=subject, list_slugs=list_slugs, segment=segment)
    values = {k: getattr(probe, k) for k in ("title", "template", "subject", "list_ids",
                                             "segment")}
    session.delete(probe)
    session.flush()
    now = utcnow()
    wall = schedule.first_after(now)
    row = RecurringCampaign(slug=name, cron=schedule.cron, timezone=timezone,
                            next_local=wall.strftime(_WALL), next_at=schedule.due(wall),
                            **values)
    session.add(row)
    session.add(AuditLog(actor=current_actor(), action="recurring.create", detail={
        "recurring": name, "every": schedule.cron, "tz": timezone}))
    session.flush()
    return row, Campaign(slug=schedule.slug(name, wall), **values)


def set_state(session: Session, name: str, to: str) -> RecurringCampaign:
    """Pause, resume or cancel the recurring campaign NAME (future occurrences only:
    dated campaigns already made are campaigns of their own). Resuming starts again
    from the next occurrence after now: what passed while paused is not sent."""
    row = find_recurring(session, name)
    assert row is not None
    allowed = {PAUSED: {ACTIVE}, ACTIVE: {PAUSED}, CANCELLED: {ACTIVE, PAUSED}}
    if row.state not in allowed[to]:
        verb = {PAUSED: "pause", ACTIVE: "resume", CANCELLED: "cancel"}[to]
        raise InvalidInput(f"The recurring campaign {name} is {row.state}: it cannot "
                           f"{verb} now." if row.state != to else
                           f"The recurring campaign {name} is {to} already.")
    row.state = to
    row.updated_at = utcnow()
    if to == ACTIVE:
        schedule = _schedule(row)
        wall = schedule.first_after(utcnow())
        row.next_local, row.next_at = wall.strftime(_WALL), schedule.due(wall)
    else:
        row.next_local = row.next_at = None
    session.add(row)
    session.add(AuditLog(actor=current_actor(), action=f"recurring.{to}",
                         detail={"recurring": name}))
    return row


@dataclass(frozen=True)
class Occurrence:
    """What `materialize` did with one occurrence."""

    recurring: str
    local_time: str  # the wall time, in `timezone`
    timezone: str
    due_at: datetime
    campaign: str | None  # the dated campaign made, or None when skipped
    late: timedelta | None  # found this long after its time (missed), else None
    note: str | None = None  # why it was skipped (or could not be made)
    failed: bool = False  # not made, not recorded: the next run tries again

    def describe(self) -> str:
        """One line for `mailer run` (missed or skipped ones only say more)."""
        when = f"{self.local_time.replace('T', ' ')} {self.timezone}"
        if self.failed:
            return f"Warning: {self.recurring}: the occurrence of {when} {self.note}."
        if self.campaign and not self.late:
            return f"{self.recurring}: {self.campaign} made for {when}"
        if self.campaign:
            return (f"Warning: {self.recurring}: the occurrence of {when} was missed "
                    f"(was the machine down?); {self.campaign} is sent "
                    f"{_duration(self.late)} late ([delivery] missed = \"send-late\").")
        return f"Warning: {self.recurring}: the occurrence of {when} is skipped: {self.note}."


def materialize(project: Project, now: datetime) -> list[Occurrence]:
    """Every occurrence of an active recurring campaign due at `now`: the dated
    campaign made and scheduled for its time (the caller then starts the due
    campaigns), or skipped by the rules for missed ones. Each occurrence in its own
    transaction with the campaign it makes; an occurrence another run made meanwhile
    is left to it (the primary key says so)."""
    policy = project.settings.delivery.missed
    with session_scope(project.engine) as session:
        due = session.exec(select(RecurringCampaign.id).where(
            RecurringCampaign.state == ACTIVE,
            RecurringCampaign.next_at <= now)  # type: ignore[operator]
            .order_by(RecurringCampaign.next_at, RecurringCampaign.id)).all()
    done: list[Occurrence] = []
    for recurring_id in due:
        try:
            for occurrence in _occurrences(project, recurring_id, now, policy):
                done.append(occurrence)
        except MailerError as exc:  # said, tried again next run; the others go on
            done.append(_failed(project, recurring_id, str(exc)))
    return done


def _failed(project: Project, recurring_id: int, why: str) -> Occurrence:
    with session_scope(project.engine) as session:
        row = session.get(RecurringCampaign, recurring_id)
        assert row is not None and row.next_at is not None
        return Occurrence(recurring=row.slug, local_time=row.next_local or "",
                          timezone=row.timezone, due_at=row.next_at, campaign=None,
                          late=None, failed=True,
                          note=f"cannot be made now ({why}); the next `mailer run` tries "
                               "again")


def _occurrences(project: Project, recurring_id: int, now: datetime,
                 policy: str) -> Iterator[Occurrence]:
    while True:
        attempt = None
        try:
            with session_scope(project.engine) as session:
                row = session.get(RecurringCampaign, recurring_id)
                if row is None or row.state != ACTIVE or row.next_at is None \
                        or row.next_at > now or row.next_local is None:
                    return
                attempt = row.next_local
                occurrence = _handle(session, row, now, policy)
        except (IntegrityError, InvalidInput):  # the key, or create_campaign's own check
            if attempt is None or not _step_over_taken(project, recurring_id, attempt):
                raise
            continue
        yield occurrence


def _handle(session: Session, row: RecurringCampaign, now: datetime,
            policy: str) -> Occurrence:
    """One occurrence of `row` (due): record it, make its campaign or skip it, and move
    `row` on to the next one; all in the caller's transaction."""
    assert row.next_local is not None and row.next_at is not None and row.id is not None
    schedule = _schedule(row)
    wall = datetime.strptime(row.next_local, _WALL)
    due_at = row.next_at
    following = schedule.after(wall)
    late = now - due_at if now - due_at > GRACE else None
    campaign: Campaign | None = None
    note = None
    if late and schedule.due(following) <= now:
        note = "a later occurrence was missed too; only the latest is sent"
    elif late and policy == "skip":
        note = f"it was missed by {_duration(late)} ([delivery] missed = \"skip\")"
    else:
        campaign = _make_campaign(session, row, schedule, wall, due_at)
        if campaign is None:
            note = f"a campaign called {schedule.slug(row.slug, wall)} exists already"
    session.add(RecurringOccurrence(
        recurring_id=row.id, local_time=row.next_local, due_at=due_at,
        campaign_id=campaign.id if campaign else None,
        outcome="created" if campaign else "skipped", note=note))
    session.add(AuditLog(actor=current_actor(), action="recurring.occurrence", detail={
        "recurring": row.slug, "local_time": row.next_local,
        "campaign": campaign.slug if campaign else None, "skipped": note,
        "late_seconds": int(late.total_seconds()) if late else 0}))
    result = Occurrence(recurring=row.slug, local_time=row.next_local,
                        timezone=row.timezone, due_at=due_at,
                        campaign=campaign.slug if campaign else None, late=late, note=note)
    row.next_local, row.next_at = following.strftime(_WALL), schedule.due(following)
    row.updated_at = utcnow()
    session.add(row)
    session.flush()  # the occurrence's key is checked here: a taken one raises now
    return result


def _make_campaign(session: Session, row: RecurringCampaign, schedule: Schedule,
                   wall: datetime, due_at: datetime) -> Campaign | None:
    slug = schedule.slug(row.slug, wall)
    if session.exec(select(Campaign.id).where(Campaign.slug == slug)).first() is not None:
        return None
    lists = session.exec(select(MailingList.slug).where(
        MailingList.id.in_(row.list_ids))).all()  # type: ignore[union-attr]
    campaign = create_campaign(session, slug=slug, title=row.title, template=row.template,
                               subject=row.subject, list_slugs=list(lists),
                               segment=row.segment)
    transition(campaign, CampaignState.SCHEDULED)  # at its time, passed or not: due now
    campaign.scheduled_at = due_at
    session.add(campaign)
    session.flush()
    return campaign


def _step_over_taken(project: Project, recurring_id: int, local_time: str) -> bool:
    """The occurrence `local_time` could not be recorded: True when another run
    recorded it first (then the recurring campaign is moved past it, unless that run
    did so already), False when that is not why."""
    with session_scope(project.engine) as session:
        if session.get(RecurringOccurrence, (recurring_id, local_time)) is None:
            return False
        row = session.get(RecurringCampaign, recurring_id)
        if row is None or row.next_local != local_time:
            return True  # moved on already
        schedule = _schedule(row)
        following = schedule.after(datetime.strptime(local_time, _WALL))
        session.connection().execute(sa.update(RecurringCampaign).where(
            RecurringCampaign.id == recurring_id,
            RecurringCampaign.next_local == local_time).values(
            next_local=following.strftime(_WALL), next_at=schedule.due(following),
            updated_at=utcnow()))
        return True


def campaign_date(session: Session, campaign: Campaign) -> date:
    """`campaign.date` in templates: for an occurrence of a recurring campaign, the
    occurrence's date (in its zone); for any other campaign, the local date it is
    scheduled for, or started, or today."""
    if campaign.id is not None:
        local = session.exec(select(RecurringOccurrence.local_time).where(
            RecurringOccurrence.campaign_id == campaign.id)).first()
        if local:
            return datetime.strptime(local, _WALL).date()
    when = campaign.scheduled_at or campaign.started_at or utcnow()
    return when.astimezone().date()


def summary(row: RecurringCampaign) -> dict[str, object]:
    """The facts `campaign ls` and `show` print of a recurring campaign."""
    next_local = row.next_local.replace("T", " ") if row.next_local else None
    return {"campaign": row.slug, "state": f"recurring, {row.state}"
            if row.state != ACTIVE else "recurring", "every": row.cron, "tz": row.timezone,
            "next": f"{next_local} {row.timezone}" if next_local else None,
            "next_at": row.next_at, "template": row.template, "subject": row.subject,
            "segment": list(row.segment)}


def listing(session: Session) -> list[dict[str, object]]:
    """Every recurring campaign, with its last occurrences."""
    rows = []
    for row in session.exec(select(RecurringCampaign).order_by(RecurringCampaign.id)):
        lists = session.exec(select(MailingList.slug).where(
            MailingList.id.in_(row.list_ids))).all()  # type: ignore[union-attr]
        recent = session.exec(select(RecurringOccurrence).where(
            RecurringOccurrence.recurring_id == row.id)
            .order_by(sa.desc(RecurringOccurrence.local_time)).limit(5)).all()
        campaigns = dict(session.exec(select(Campaign.id, Campaign.slug).where(
            Campaign.id.in_([o.campaign_id for o in recent if o.campaign_id]))).all())  # type: ignore[union-attr]
        rows.append({**summary(row), "lists": ", ".join(lists), "occurrences": [
            {"local_time": o.local_time, "outcome": o.outcome,
             "campaign": campaigns.get(o.campaign_id), "note": o.note} for o in recent]})
    return rows


def _duration(delta: timedelta | None) -> str:
    minutes = int((delta or timedelta()).total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    return (f"{days} d {hours} h" if days else f"{hours} h {minutes} min" if hours
            else f"{minutes} min")
