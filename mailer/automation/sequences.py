"""Drip sequences (the autoresponder): `[[sequence]]` in a list's file, copied in by
`lists sync` (`sync_sequences`), started for a member when they confirm (`start_members`),
and `mailer run` queueing the steps that are due (`queue_due`) before it sends.

Every step is a campaign of kind "step" (its frozen template and subject, kept
"sending"), and a subscriber's step is a `delivery` row of that campaign: the outbox's
UNIQUE(campaign, subscriber) makes "each step exactly once" a database guarantee, and
the sender gives it its claims, pacing, retries, kill safety and send-time checks.

Where a person is: one `sequence_progress` row per (sequence, subscriber): the start
(confirmation), `passed_after` (the time after the start of the last step queued for
them, -1 before the first), the next step and when it is due (`next_at`, indexed). A
run reads only the rows due (`next_at <= now`), in batches; a batch's deliveries and its
progress move on in one transaction.

Steps. A step's identity is its `id` in the file, else its template path; the steps of
a sequence go in order of time (`after`), strictly. Adding one: it reaches whoever has
not passed its time yet (passed_after < its after). Removing one: nobody gets it any
more. Changing `after` moves it for whoever has not had it; nobody gets a step twice
(the delivery row of the step's campaign says who had it). A changed template or
subject is frozen again at the sync: future sends use it.

Time. A step is due `after` its start; with a `window` ("09:00-17:00") and `weekdays`
("mon-fri") it waits for the next moment inside them, read in the subscriber's zone
(the attribute `timezone`, e.g. "Europe/Amsterdam") or else the list's (`timezone` in its
file, default Europe/Brussels), by zoneinfo: DST-correct. A step is queued only once the
one before it is out of the outbox (sent, failed, bounced, skipped or unknown), so the
steps arrive in order. Whoever is no longer a confirmed member, is blocklisted or is
suppressed by the time a step is due stops: no step of that sequence any more.
"""

from __future__ import annotations

import hashlib
import shlex
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlmodel import Session, select

from mailer.audience.hashing import address_hash
from mailer.audience.lists import (
    ListDefinition,
    SequenceDefinition,
    StepDefinition,
    parse_weekdays,
)
from mailer.db import session_scope
from mailer.dbtypes import Timestamp
from mailer.errors import InvalidInput, MailerError, NotFound
from mailer.models import (
    AuditLog,
    Campaign,
    CampaignKind,
    CampaignState,
    Delivery,
    DeliveryState,
    GlobalStatus,
    MailingList,
    Sequence,
    SequenceProgress,
    SequenceStep,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
    current_actor,
    utcnow,
)
from mailer.project import Project

__all__ = ["ACTIVE", "DONE", "REMOVED", "STOPPED", "BATCH", "QueueReport", "describe_after",
           "get_sequence", "listing", "next_window", "queue_due", "render_step",
           "sequence_figures", "start_members", "sync_sequences"]

ACTIVE, DONE, STOPPED, REMOVED = "active", "done", "stopped", "removed"
BATCH = 2000  # due progress rows read, queued and moved on per transaction
WAIT = timedelta(minutes=5)  # the step before is still in the outbox: look again then
QP = SequenceProgress.__table__  # type: ignore[attr-defined]
ST = SequenceStep.__table__  # type: ignore[attr-defined]
SQ = Sequence.__table__  # type: ignore[attr-defined]
D = Delivery.__table__  # type: ignore[attr-defined]
P = Subscriber.__table__  # type: ignore[attr-defined]
M = Subscription.__table__  # type: ignore[attr-defined]
C = Campaign.__table__  # type: ignore[attr-defined]
OPEN = (DeliveryState.QUEUED.value, DeliveryState.DEFERRED.value,
        DeliveryState.SENDING.value)


# --- time ---------------------------------------------------------------------------------


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def next_window(now: datetime, zone: ZoneInfo, window: str | None,
                weekdays: str | None) -> datetime | None:
    """None when `now` is inside the window on an allowed weekday (in `zone`); else the
    instant (UTC) the next window opens. zoneinfo makes a window's start a real instant
    on the days the clocks change."""
    start, end = (0, 24 * 60) if not window else map(_minutes, window.split("-"))
    days = parse_weekdays(weekdays) if weekdays else frozenset(range(7))
    local = now.astimezone(zone)
    minute = local.hour * 60 + local.minute
    if local.weekday() in days and start <= minute < end:
        return None
    opens = clock(start // 60, start % 60)
    for ahead in range(8):
        day: date = local.date() + timedelta(days=ahead)
        if day.weekday() not in days or (ahead == 0 and minute >= start):
            continue
        at = datetime.combine(day, opens, tzinfo=zone).astimezone(UTC)
        if at > now:
            return at
    raise AssertionError("a week always has an allowed day")  # parse_weekdays: not empty


def _zone(name: object, fallback: ZoneInfo) -> ZoneInfo:
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return fallback


def describe_after(seconds: int) -> str:
    """259200 -> "3d", 90000 -> "1d1h", 0 -> "0m"."""
    out = ""
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and not (unit == "w" and seconds % size):
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out or "0m"


def _plus(conn: Connection, column: Any, seconds: int) -> Any:
    """SQL: the Timestamp `column` plus `seconds` (integer microseconds on SQLite)."""
    if conn.dialect.name == "sqlite":
        return sa.type_coerce(sa.type_coerce(column, sa.BigInteger) + seconds * 1_000_000,
                              Timestamp())
    return column + sa.literal_column("interval '1 second'") * seconds


# --- starting people ---------------------------------------------------------------------


def start_members(conn: Connection, list_id: int, subscriber_ids: Iterable[int],
                  at: datetime) -> int:
    """Put these members of the list at the start of each of its active sequences, timed
    from `at` (their confirmation); someone who is in a sequence already stays where they
    are. Called in the transaction that confirms them. Returns the rows added."""
    firsts = conn.execute(
        sa.select(SQ.c.id, ST.c.id.label("step"), ST.c.after_seconds)
        .select_from(SQ.join(ST, ST.c.sequence_id == SQ.c.id))
        .where(SQ.c.list_id == list_id, SQ.c.state == ACTIVE, ST.c.position.is_not(None))
        .order_by(SQ.c.id, ST.c.after_seconds)).all()
    first: dict[int, tuple[int, int]] = {}
    for sequence_id, step_id, after in firsts:
        first.setdefault(sequence_id, (step_id, after))
    ids = list(dict.fromkeys(subscriber_ids))
    if not first or not ids:
        return 0
    added = 0
    for sequence_id, (step_id, after) in first.items():
        rows = [{"sequence_id": sequence_id, "subscriber_id": sid, "list_id": list_id,
                 "started_at": at, "passed_after": -1, "next_step_id": step_id,
                 "next_at": at + timedelta(seconds=after), "state": ACTIVE,
                 "updated_at": at} for sid in ids]
        for begin in range(0, len(rows), 5000):
            result = conn.execute(_insert_ignoring(conn, QP, ["sequence_id",
                                                              "subscriber_id"]),
                                  rows[begin:begin + 5000])
            added += max(result.rowcount, 0)
    return added


def _insert_ignoring(conn: Connection, table: sa.Table, keys: list[str]) -> Any:
    """INSERT … ON CONFLICT (keys) DO NOTHING, in the dialect's words."""
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    return insert(table).on_conflict_do_nothing(index_elements=keys)


# --- queueing what is due ----------------------------------------------------------------


@dataclass
class QueueReport:
    queued: int = 0  # deliveries added to step campaigns
    waiting: int = 0  # moved to their window, or waiting for the step before to go out
    stopped: int = 0  # no longer members (or suppressed): no further step
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"queued": self.queued, "waiting": self.waiting, "stopped": self.stopped}


def _steps(conn: Connection) -> dict[int, list[tuple[int, int, int]]]:
    """Each active sequence's steps in order: (step id, after, campaign id)."""
    out: dict[int, list[tuple[int, int, int]]] = {}
    for row in conn.execute(sa.select(ST.c.sequence_id, ST.c.id, ST.c.after_seconds,
                                      ST.c.campaign_id)
                            .where(ST.c.position.is_not(None))
                            .order_by(ST.c.sequence_id, ST.c.after_seconds)):
        out.setdefault(row.sequence_id, []).append((row.id, row.after_seconds,
                                                    row.campaign_id))
    return out


def _due_query(now: datetime, limit: int) -> sa.Select[Any]:
    last = ST.alias("last_step")
    before = D.alias("before")
    return (sa.select(QP.c.sequence_id, QP.c.subscriber_id, QP.c.list_id, QP.c.started_at,
                      QP.c.next_step_id, ST.c.after_seconds, ST.c.window, ST.c.weekdays,
                      ST.c.campaign_id, SQ.c.timezone, SQ.c.state.label("sequence_state"),
                      P.c.email, P.c.status.label("person_status"), P.c.attributes,
                      M.c.status.label("member_status"), before.c.state.label("before"))
            .select_from(
                QP.join(ST, ST.c.id == QP.c.next_step_id)
                .join(SQ, SQ.c.id == QP.c.sequence_id)
                .join(P, P.c.id == QP.c.subscriber_id)
                .outerjoin(M, sa.and_(M.c.subscriber_id == QP.c.subscriber_id,
                                      M.c.list_id == QP.c.list_id))
                .outerjoin(last, last.c.id == QP.c.last_step_id)
                .outerjoin(before, sa.and_(before.c.campaign_id == last.c.campaign_id,
                                           before.c.subscriber_id == QP.c.subscriber_id)))
            .where(QP.c.next_at <= sa.literal(now, Timestamp()))
            .order_by(QP.c.next_at).limit(limit))


def queue_due(project: Project, now: datetime, *, batch: int = BATCH,
              stopping: Any = lambda: False) -> QueueReport:
    """Queue every step due at `now` into its campaign's outbox and move each person on,
    a batch per transaction, until none is due (or `stopping()`). The step campaigns
    that got deliveries are "sending" afterwards (a run may have finished one that had
    nothing open)."""
    report = QueueReport()
    began = time.perf_counter()
    engine = project.engine
    zones: dict[str, ZoneInfo] = {}
    while not stopping():
        with engine.begin() as conn:
            rows = conn.execute(_due_query(now, batch)).all()
            if not rows:
                break
            steps = _steps(conn)
            hashes = {row.subscriber_id: address_hash(project.hash_key, row.email)
                      for row in rows}
            suppressed = set(conn.execute(sa.select(Suppression.email_hash).where(
                Suppression.email_hash.in_(list(set(hashes.values()))))).scalars())
            deliveries: list[dict[str, Any]] = []
            moves: list[dict[str, Any]] = []
            for row in rows:
                zone = zones.get(row.timezone) or zones.setdefault(
                    row.timezone, _zone(row.timezone, ZoneInfo("UTC")))
                move = {"q": row.sequence_id, "s": row.subscriber_id,
                        "old": row.next_step_id, "passed": None, "last": None,
                        "next_step": row.next_step_id, "when": None, "to": ACTIVE,
                        "why": None}
                why = _stop_reason(row, hashes[row.subscriber_id] in suppressed)
                if why:
                    move.update(next_step=None, to=STOPPED, why=why)
                    report.stopped += 1
                elif row.before in OPEN:
                    move["when"] = now + WAIT
                    report.waiting += 1
                elif (opens := next_window(now, _zone((row.attributes or {}).get(
                        "timezone"), zone), row.window, row.weekdays)) is not None:
                    move["when"] = opens
                    report.waiting += 1
                else:
                    deliveries.append({"campaign_id": row.campaign_id,
                                       "subscriber_id": row.subscriber_id,
                                       "list_id": row.list_id, "state": "queued",
                                       "attempts": 0, "queued_at": now, "updated_at": now})
                    following = next((s for s in steps.get(row.sequence_id, [])
                                      if s[1] > row.after_seconds), None)
                    move.update(passed=row.after_seconds, last=row.next_step_id,
                                next_step=following[0] if following else None,
                                when=row.started_at + timedelta(seconds=following[1])
                                if following else None,
                                to=ACTIVE if following else DONE)
                moves.append(move)
            if deliveries:
                # a row there already (a run that read these before, a step had) stays;
                # RETURNING counts what was added (executemany's rowcount may not)
                report.queued += len(conn.execute(
                    _insert_ignoring(conn, D, ["campaign_id", "subscriber_id"])
                    .returning(D.c.id), deliveries).all())
                conn.execute(C.update().where(
                    C.c.id.in_({d["campaign_id"] for d in deliveries}),
                    C.c.state == CampaignState.SENT).values(
                    state=CampaignState.SENDING, finished_at=None, updated_at=now))
            conn.execute(QP.update().where(
                QP.c.sequence_id == sa.bindparam("q"), QP.c.subscriber_id == sa.bindparam("s"),
                QP.c.next_step_id == sa.bindparam("old")).values(
                passed_after=sa.func.coalesce(sa.bindparam("passed", type_=sa.Integer),
                                              QP.c.passed_after),
                last_step_id=sa.func.coalesce(sa.bindparam("last", type_=sa.Integer),
                                              QP.c.last_step_id),
                next_step_id=sa.bindparam("next_step"),
                next_at=sa.bindparam("when", type_=Timestamp()),
                state=sa.bindparam("to"), note=sa.bindparam("why"),
                updated_at=sa.literal(now, Timestamp())), moves)
        if len(rows) < batch:
            break
    report.seconds = time.perf_counter() - began
    return report


def _stop_reason(row: Any, suppressed: bool) -> str | None:
    if row.sequence_state != ACTIVE:
        return "the sequence was removed"
    if row.member_status != SubscriptionStatus.CONFIRMED:
        return f"no longer a member ({row.member_status or 'removed'})"
    if row.person_status != GlobalStatus.ACTIVE:
        return f"the subscriber is {row.person_status}"
    if suppressed:
        return "the address is on the suppression list"
    return None


# --- lists sync: what a change does, then doing it ---------------------------------------


@dataclass
class SequenceChange:
    sequence: str
    list: str
    lines: list[str] = field(default_factory=list)


def get_sequence(session: Session, name: str) -> Sequence:
    row = session.exec(select(Sequence).where(Sequence.name == name)).first()
    if row is None:
        known = ", ".join(session.exec(select(Sequence.name).order_by(Sequence.name)).all())
        raise NotFound(f"No sequence called {name!r} (known: {known or 'none yet'}).",
                       hint="Add [[sequence]] to lists/<slug>.toml and run `mailer lists "
                            "sync` (docs/sequences.md).")
    return row


def _count(conn: Connection, sequence_id: int, *where: Any) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(QP).where(
        QP.c.sequence_id == sequence_id, *where)).scalar_one())


def _people(n: int) -> str:
    return f"{n:,} {'person' if n == 1 else 'people'}"


def sync_sequences(project: Project, session: Session, definitions: list[ListDefinition],
                   now: datetime) -> list[SequenceChange]:
    """Make the database's sequences those of the files, saying for each change what it
    does (who gets what, when). The caller commits, or rolls back for a dry run."""
    lists = {ml.slug: ml for ml in session.exec(select(MailingList))}
    existing = {row.name: row for row in session.exec(select(Sequence))}
    wanted: dict[str, tuple[ListDefinition, SequenceDefinition]] = {}
    for d in definitions:
        for s in d.sequence:
            if s.name in wanted:
                raise InvalidInput(f"Two sequences are called {s.name!r} (lists/"
                                   f"{wanted[s.name][0].slug}.toml and lists/{d.slug}.toml): "
                                   "a sequence's name is unique.")
            wanted[s.name] = (d, s)
    changes: list[SequenceChange] = []
    conn = session.connection()
    for name, (d, s) in wanted.items():
        ml = lists[d.slug]
        assert ml.id is not None
        row = existing.pop(name, None)
        change = SequenceChange(name, d.slug)
        if row is not None and row.list_id != ml.id:
            raise InvalidInput(f"The sequence {name!r} belongs to another list; a sequence "
                               "cannot move: give it a new name.")
        if row is None:
            row = Sequence(name=name, list_id=ml.id, timezone=d.timezone)
            session.add(row)
            session.flush()
            change.lines.append(f"new, {len(s.steps)} step(s): starts for whoever "
                                "confirms from now on (or is imported with "
                                "--start-sequences); members before now are not in it")
        elif row.state != ACTIVE:
            row.state, row.updated_at = ACTIVE, now
            change.lines.append("back: starts again for whoever confirms from now on; "
                                "who was in it before stays stopped")
        if row.timezone != d.timezone:
            change.lines.append(f"time zone {row.timezone} -> {d.timezone}")
            row.timezone, row.updated_at = d.timezone, now
        session.add(row)
        if _sync_steps(project, session, conn, row, ml, s, now, change):
            _replan(conn, row, now)
        if change.lines:
            changes.append(change)
    for row in existing.values():
        if row.state == ACTIVE:
            assert row.id is not None
            waiting = _count(conn, row.id, QP.c.state == ACTIVE)
            conn.execute(QP.update().where(QP.c.sequence_id == row.id, QP.c.state == ACTIVE)
                         .values(state=STOPPED, next_step_id=None, next_at=None,
                                 note="the sequence was removed",
                                 updated_at=sa.literal(now, Timestamp())))
            row.state, row.updated_at = REMOVED, now
            session.add(row)
            ml = session.get(MailingList, row.list_id)
            changes.append(SequenceChange(row.name, ml.slug if ml else "?", [
                f"removed from its file: the {_people(waiting)} in it get no further step "
                "(kept, stopped)"]))
    if changes:
        session.add(AuditLog(actor=current_actor(), action="sequences.sync", detail={
            "sequences": [c.sequence for c in changes]}))
    session.flush()
    return changes


def _sync_steps(project: Project, session: Session, conn: Connection, row: Sequence,
                ml: MailingList, s: SequenceDefinition, now: datetime,
                change: SequenceChange) -> bool:
    """Steps added, removed, moved or given a new template; True when who is due for
    which step must be worked out again."""
    assert row.id is not None
    known = {st.key: st for st in session.exec(select(SequenceStep).where(
        SequenceStep.sequence_id == row.id))}
    replan = False
    fresh = not known
    for position, step in enumerate(s.steps, start=1):
        st = known.pop(step.key, None)
        pending = QP.c.state.in_([ACTIVE, DONE]), QP.c.passed_after < step.seconds
        if st is None or st.position is None:
            st = _new_step(project, session, row, ml, step, st, now)
            replan = True
            if not fresh:
                n = _count(conn, row.id, *pending)
                due = _count(conn, row.id, *pending, _plus(conn, QP.c.started_at,
                                                           step.seconds)
                             <= sa.literal(now, Timestamp()))
                change.lines.append(
                    f"step {position} {step.key} added (after {step.after}): reaches the "
                    f"{_people(n)} who {'has' if n == 1 else 'have'} not passed {step.after}"
                    + (f"; {due:,} of them at the next `mailer run` (their {step.after} "
                       "has passed)" if due else ""))
        else:
            moved = (st.after_seconds, st.window, st.weekdays) != (
                step.seconds, step.window, step.weekdays)
            if moved:
                waiting = _count(conn, row.id, QP.c.next_step_id == st.id)
                change.lines.append(
                    f"step {position} {step.key}: after {describe_after(st.after_seconds)}"
                    f"{_when(st.window, st.weekdays)} -> after {step.after}"
                    f"{_when(step.window, step.weekdays)} ({_people(waiting)} waiting for "
                    "it; who had it does not get it again)")
                replan = replan or st.after_seconds != step.seconds
                st.after_seconds, st.window, st.weekdays = step.seconds, step.window, \
                    step.weekdays
            if st.position != position:
                replan = True
            if _refreeze(project, session, st, ml, step):
                n = _count(conn, row.id, *pending)
                change.lines.append(f"step {position} {step.key}: new template or subject: "
                                    f"the {_people(n)} still to get it "
                                    f"{'gets' if n == 1 else 'get'} the new one")
        if fresh:
            change.lines.append(f"  step {position} {step.key}: after {step.after}"
                                f"{_when(step.window, step.weekdays)}: “{step.subject}”")
        st.position, st.updated_at = position, now
        session.add(st)
    for st in known.values():
        if st.position is not None:
            assert st.id is not None
            n = _count(conn, row.id, QP.c.state.in_([ACTIVE, DONE]),
                       QP.c.passed_after < st.after_seconds)
            change.lines.append(f"step {st.key} removed: the {_people(n)} who had not had "
                                "it will not get it; who had it keeps it")
            st.position, st.updated_at = None, now
            session.add(st)
            replan = True
    session.flush()
    return replan and not fresh


def _when(window: str | None, weekdays: str | None) -> str:
    return (f", {window}" if window else "") + (f", {weekdays}" if weekdays else "")


def _step_slug(row: Sequence, key: str) -> str:
    return f"sequence-{row.id}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _new_step(project: Project, session: Session, row: Sequence, ml: MailingList,
              step: StepDefinition, old: SequenceStep | None, now: datetime) -> SequenceStep:
    """The step and its campaign (kind "step", sending, its template frozen); a step
    that was removed and comes back keeps its campaign, and so who had it."""
    if old is not None:
        old.after_seconds, old.window, old.weekdays = step.seconds, step.window, step.weekdays
        _refreeze(project, session, old, ml, step)
        return old
    campaign = Campaign(slug=_step_slug(row, step.key), title=f"{row.name}: {step.key}",
                        template=step.template, subject=step.subject, list_ids=[ml.id],
                        kind=CampaignKind.STEP, state=CampaignState.DRAFT)
    session.add(campaign)
    session.flush()
    _freeze(project, session, campaign)
    campaign.state, campaign.started_at = CampaignState.SENDING, now
    session.add(campaign)
    assert campaign.id is not None and row.id is not None
    st = SequenceStep(sequence_id=row.id, key=step.key, after_seconds=step.seconds,
                      window=step.window, weekdays=step.weekdays, campaign_id=campaign.id)
    session.add(st)
    session.flush()
    return st


def _digest(project: Project, ml: MailingList, template: str, subject: str) -> str:
    """What the step's frozen template was made from: the prepared sources and subject."""
    from mailer.content.mailing import CampaignInfo
    from mailer.messages import make_mailing

    sources = make_mailing(project, template=template, subject=subject, mailing_list=ml,
                           campaign=CampaignInfo(0, "sequence", ml.name)).sources
    return hashlib.sha256("\0".join([sources.html, sources.text, subject]).encode()
                          ).hexdigest()


def _freeze(project: Project, session: Session, campaign: Campaign) -> None:
    """The campaign's template checked (as `campaign send` checks it) and frozen with
    its subject, links counted when tracking is on: what start_campaign freezes."""
    from mailer.content.tracking import tracked_sources
    from mailer.messages import checked_mailing

    ml = session.get(MailingList, campaign.list_ids[0])
    assert ml is not None
    try:
        mailing = checked_mailing(project, session, campaign)
    except MailerError as exc:
        # The sync is rolled back: the step's campaign will not exist, so the check's own
        # hint (`templates check --campaign SLUG`) would name nothing. Say which step.
        name, _, key = campaign.title.partition(": ")  # _new_step's title
        raise type(exc)(f"Sequence {name}, step {key}: {exc}", hint=(
            "See every problem: mailer templates check "
            f"{shlex.quote(campaign.template)} --list {ml.slug} --subject "
            f"{shlex.quote(campaign.subject)}") if exc.hint and "templates check" in exc.hint
            else exc.hint) from None
    sources = tracked_sources(project, session, campaign, mailing.sources)
    campaign.snapshot = {"name": sources.name, "html": sources.html, "text": sources.text,
                         "subject": campaign.subject,
                         "folder": str(sources.folder) if sources.folder else None,
                         "digest": _digest(project, ml, campaign.template, campaign.subject)}


def _refreeze(project: Project, session: Session, st: SequenceStep, ml: MailingList,
              step: StepDefinition) -> bool:
    """Freeze the step's template again when it (or the subject) changed. True if so."""
    campaign = session.get(Campaign, st.campaign_id)
    assert campaign is not None
    digest = _digest(project, ml, step.template, step.subject)
    if (campaign.snapshot or {}).get("digest") == digest \
            and (campaign.template, campaign.subject) == (step.template, step.subject):
        return False
    campaign.template, campaign.subject = step.template, step.subject
    _freeze(project, session, campaign)
    campaign.updated_at = utcnow()
    session.add(campaign)
    return True


def _replan(conn: Connection, row: Sequence, now: datetime) -> None:
    """Who is due for which step, again, after steps were added, removed or moved: for
    each person the first step after the last one they passed, at its time after their
    start (its window is applied when it is due). In SQL, a statement per step, writing
    only the rows that change: a step added at 12d to a sequence of a million people
    rewrote every row (and its next_at index entry), 8 s of a `lists sync --dry-run`
    (bench/sequence_bench.py's build)."""
    steps = [s for s in _steps(conn).get(row.id or 0, [])]
    stamp = sa.literal(now, Timestamp())
    open_ = QP.c.state.in_([ACTIVE, DONE])
    lower = -(2 ** 31)
    for step_id, after, _ in steps:
        at = _plus(conn, QP.c.started_at, after)
        conn.execute(QP.update().where(
            QP.c.sequence_id == row.id, open_, QP.c.passed_after >= lower,
            QP.c.passed_after < after,
            sa.or_(QP.c.next_step_id.is_distinct_from(step_id),
                   QP.c.next_at.is_distinct_from(at), QP.c.state != ACTIVE)).values(
            next_step_id=step_id, next_at=at, state=ACTIVE, updated_at=stamp))
        lower = after
    conn.execute(QP.update().where(
        QP.c.sequence_id == row.id, open_, QP.c.passed_after >= lower,
        sa.or_(QP.c.next_step_id.is_not(None), QP.c.next_at.is_not(None),
               QP.c.state != DONE)).values(
        next_step_id=None, next_at=None, state=DONE, updated_at=stamp))


# --- what `sequences ls` and `show` say ---------------------------------------------------


def listing(session: Session) -> list[dict[str, Any]]:
    conn = session.connection()
    counts: dict[int, dict[str, int]] = {}
    for sequence_id, state, n in conn.execute(
            sa.select(QP.c.sequence_id, QP.c.state, sa.func.count())
            .group_by(QP.c.sequence_id, QP.c.state)):
        counts.setdefault(sequence_id, {})[state] = int(n)
    out = []
    for row, slug in session.exec(select(Sequence, MailingList.slug).join(
            MailingList, MailingList.id == Sequence.list_id).order_by(Sequence.name)):
        per = counts.get(row.id or 0, {})
        steps = conn.execute(sa.select(sa.func.count()).where(
            ST.c.sequence_id == row.id, ST.c.position.is_not(None))).scalar_one()
        next_at = conn.execute(sa.select(sa.func.min(QP.c.next_at)).where(
            QP.c.sequence_id == row.id)).scalar_one()
        out.append({"sequence": row.name, "list": slug, "state": row.state,
                    "steps": int(steps), "active": per.get(ACTIVE, 0),
                    "done": per.get(DONE, 0), "stopped": per.get(STOPPED, 0),
                    "next_due": next_at, "timezone": row.timezone})
    return out


def sequence_figures(session: Session, row: Sequence) -> dict[str, Any]:
    """The steps (in order, then removed ones), how many are waiting for each and when
    the next is due, and what each step's campaign did."""
    conn = session.connection()
    waiting = {step: (int(n), first) for step, n, first in conn.execute(
        sa.select(QP.c.next_step_id, sa.func.count(), sa.func.min(QP.c.next_at))
        .where(QP.c.sequence_id == row.id, QP.c.state == ACTIVE)
        .group_by(QP.c.next_step_id))}
    states: dict[int, dict[str, int]] = {}
    steps = session.exec(select(SequenceStep).where(SequenceStep.sequence_id == row.id)
                         .order_by(SequenceStep.position.is_(None),  # type: ignore[union-attr]
                                   SequenceStep.after_seconds)).all()
    for campaign_id, state, n in conn.execute(
            sa.select(D.c.campaign_id, D.c.state, sa.func.count())
            .where(D.c.campaign_id.in_([s.campaign_id for s in steps]))
            .group_by(D.c.campaign_id, D.c.state)):
        states.setdefault(campaign_id, {})[state] = int(n)
    people = {state: int(n) for state, n in conn.execute(
        sa.select(QP.c.state, sa.func.count()).where(QP.c.sequence_id == row.id)
        .group_by(QP.c.state))}
    ml = session.get(MailingList, row.list_id)
    out_steps = []
    for st in steps:
        campaign = session.get(Campaign, st.campaign_id)
        n, first = waiting.get(st.id, (0, None))
        out_steps.append({
            "step": st.position, "key": st.key, "after": describe_after(st.after_seconds),
            "window": st.window, "weekdays": st.weekdays,
            "template": campaign.template if campaign else None,
            "subject": campaign.subject if campaign else None,
            "waiting": n, "next_due": first, "campaign": campaign.slug if campaign else None,
            "deliveries": states.get(st.campaign_id, {})})
    return {"sequence": row.name, "list": ml.slug if ml else None, "state": row.state,
            "timezone": row.timezone, "people": {s: people.get(s, 0)
                                                 for s in (ACTIVE, DONE, STOPPED)},
            "steps": out_steps}


def render_step(project: Project, name: str, number: int, email: str) -> dict[str, Any]:
    """The mail `email` would get at step `number` (1: the first of the file's order):
    from the step's frozen template, as the sender makes it."""
    from mailer.audience.subscribers import get_subscriber
    from mailer.delivery.runner import recipe_for
    from mailer.messages import recipient

    with session_scope(project.engine) as session:
        row = get_sequence(session, name)
        st = session.exec(select(SequenceStep).where(
            SequenceStep.sequence_id == row.id, SequenceStep.position == number)).first()
        if st is None:
            steps = session.exec(select(sa.func.count()).where(
                ST.c.sequence_id == row.id, ST.c.position.is_not(None))).one()
            raise InvalidInput(f"The sequence {name} has {steps} step(s); there is no step "
                               f"{number}.")
        person = recipient(get_subscriber(session, email))
        campaign = session.get(Campaign, st.campaign_id)
        assert campaign is not None
        session.expunge(campaign)
    mailing = recipe_for(project, campaign).mailing_for()(row.list_id)
    rendered = mailing.render(person, mailing.token(person))
    return {"sequence": name, "step": number, "key": st.key, "to": person.email,
            "subject": rendered.subject, "text": rendered.text, "html": rendered.html}
