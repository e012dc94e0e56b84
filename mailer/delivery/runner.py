"""Putting a project's pieces together to send: `campaign send`, `campaign test`,
`mailer run` (the cron entry point)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from mailer.automation.recurring import campaign_date, materialize
from mailer.automation.sequences import queue_due
from mailer.content.mailing import CampaignInfo, Mailing
from mailer.content.tracking import tracked_sources
from mailer.db import session_scope
from mailer.dbtypes import Timestamp
from mailer.delivery.campaigns import get_campaign, snapshot_sources, start_campaign, transition
from mailer.delivery.claims import Claims
from mailer.delivery.lock import send_lock, start_lock
from mailer.delivery.notices import system_renderer
from mailer.delivery.outbox import Outbox
from mailer.delivery.ratelimit import Limits, RateLimiter
from mailer.delivery.rendering import (
    InlineRenderer,
    MailingRecipe,
    ProcessRenderer,
    Renderer,
    recipe_from,
)
from mailer.delivery.sender import Sender, SendReport, stop_signals, urgent_summary
from mailer.delivery.stopping import Interrupt
from mailer.delivery.transports import Outcome, Transport, default_helo_name, make_transport
from mailer.errors import InvalidInput, MailerError
from mailer.messages import checked_mailing, list_info, recipient, stand_in
from mailer.models import (
    Campaign,
    CampaignKind,
    CampaignState,
    Delivery,
    DeliveryState,
    MailingList,
    utcnow,
)
from mailer.project import Project

PROCESS_THRESHOLD = 2000  # open deliveries from which helper processes render (automatic)
NOTICE_COUNTS = ("sent", "deferred", "failed", "skipped", "unknown")  # RunSummary.notices

log = logging.getLogger("mailer.delivery")

__all__ = ["RunSummary", "claims_for", "limiter_for", "mailings_for", "prepare_start",
           "reopen_for_unknown", "run_due", "send_campaign", "send_notices", "send_test",
           "transport_for"]


def claims_for(project: Project) -> Claims | None:
    """The sender's lease and claims on PostgreSQL, where several senders share the
    outbox (delivery/claims.py); None on SQLite (one sender: the run lock)."""
    if project.engine.dialect.name != "postgresql":
        return None
    return Claims(project.engine, lease=project.settings.delivery.lease_seconds)


def transport_for(project: Project) -> Transport:
    settings = project.settings
    delivery = settings.delivery
    password = settings.secrets.smtp_password
    return make_transport(delivery.transport, root=settings.root,
                          password=password.get_secret_value() if password else None,
                          connections=delivery.connections,
                          per_connection=delivery.messages_per_connection,
                          timeout=delivery.timeout,
                          helo_name=settings.sending.helo_name
                          or default_helo_name(settings.sending.domain))


def _limits(project: Project) -> Limits:
    d = project.settings.delivery
    return Limits(rate=d.rate or None, burst=d.burst or default_burst(d.rate),
                  hourly=d.hourly or None, daily=d.daily or None,
                  per_domain={k.lower(): (float(v[0]), int(v[1] if len(v) > 1 else
                                                          math.ceil(v[0])))
                              for k, v in d.per_domain.items()})


def default_burst(rate: float) -> int | None:
    """The burst when none is set: a tenth above the rate (at least one message). With
    none above it, every late wake-up of the sender would be time lost for good and the
    pace would fall short of the rate."""
    return max(math.ceil(rate * 1.1), math.ceil(rate) + 1) if rate else None


def limiter_for(project: Project) -> RateLimiter:
    """The project's rate limits: on PostgreSQL for every sender of the database together
    (their state in it, delivery/sharedrate.py); on SQLite (one sender) in this process,
    with the last day's sends for the quotas. No limit at all: nothing to share, and no
    round trip a message."""
    limits = _limits(project)
    if project.engine.dialect.name == "postgresql" and (
            limits.rate or limits.hourly or limits.daily or limits.per_domain):
        from mailer.delivery.sharedrate import SharedRateLimiter

        return SharedRateLimiter(limits, project.engine)
    return RateLimiter(limits, history=_history(project))


def _history(project: Project) -> list[float]:
    """Send times of the last day, for the sliding hourly and daily quotas."""
    d = project.settings.delivery
    if not (d.hourly or d.daily):
        return []
    since = utcnow() - timedelta(days=1)
    table = Delivery.__table__  # type: ignore[attr-defined]  # every kind of mail
    with project.engine.connect() as conn:
        return sorted(s.timestamp() for s in conn.execute(sa.select(table.c.sent_at).where(
            table.c.state == DeliveryState.SENT, table.c.sent_at >= since)).scalars())


def prepare_start(project: Project, session: Session, campaign: Campaign) -> int:
    """Freeze and fill the outbox (draft or scheduled -> sending). The template passes
    `templates check` against the audience first, so a template that would fail anyone
    stops here, before any delivery row exists."""
    mailing = checked_mailing(project, session, campaign)
    return start_campaign(session, campaign,
                          tracked_sources(project, session, campaign, mailing.sources))


def reopen_for_unknown(project: Project, slug: str) -> int:
    """A sent campaign whose deliveries include "unknown" ones (in flight when a sender
    died) sends again, for those only, when asked with --retry-unknown. Returns how many
    unknown deliveries there are."""
    with session_scope(project.engine) as session:
        campaign = get_campaign(session, slug)
        table = Delivery.__table__  # type: ignore[attr-defined]
        unknown = session.connection().execute(sa.select(sa.func.count()).where(
            table.c.campaign_id == campaign.id,
            table.c.state == DeliveryState.UNKNOWN)).scalar_one()
        if unknown and campaign.state == CampaignState.SENT:
            campaign.state = CampaignState.SENDING  # the one way back from sent
            campaign.finished_at = None
            session.add(campaign)
        return int(unknown)


def recipe_for(project: Project, campaign: Campaign) -> MailingRecipe:
    """What it takes to make the campaign's messages, from its frozen snapshot."""
    with session_scope(project.engine) as session:
        lists = [list_info(ml) for ml in session.exec(select(MailingList).where(
            MailingList.id.in_(campaign.list_ids)))]  # type: ignore[union-attr]
        day = campaign_date(session, campaign)  # campaign.date in the templates
    return recipe_from(project.settings, sources=snapshot_sources(campaign),
                       subject=(campaign.snapshot or {}).get("subject", campaign.subject),
                       campaign=CampaignInfo(campaign.id or 0, campaign.slug, campaign.title,
                                             day),
                       lists=lists)


def mailings_for(project: Project, campaign: Campaign) -> Callable[[int], Mailing]:
    """One Mailing per list of the campaign, from the frozen snapshot."""
    return recipe_for(project, campaign).mailing_for()


def _renderer(project: Project, campaign: Campaign, outbox: Outbox) -> Renderer:
    """Helper processes for a large send on a machine with cores to spare, else inline:
    the cores but one, or as many as cores when signing with RSA (~300 us a message:
    then the helpers are the slow part, and the sender waits for them)."""
    wanted = project.settings.delivery.render_processes
    recipe = recipe_for(project, campaign)
    if wanted < 0:  # automatic
        cores = os.cpu_count() or 1
        wanted = (cores if recipe.dkim_rsa else cores - 1) \
            if cores > 1 and outbox.open_count() >= PROCESS_THRESHOLD else 0
    if wanted == 0:
        return InlineRenderer(recipe.mailing_for())
    return ProcessRenderer(recipe, processes=wanted)


def _campaign_state(project: Project, campaign_id: int) -> Callable[[], str]:
    def state() -> str:
        with project.engine.connect() as conn:
            return str(conn.execute(sa.select(Campaign.state).where(
                Campaign.id == campaign_id)).scalar_one())
    return state


class _Pauser:
    """The sender pausing its campaign (too many deliveries failing): called on the
    event loop, it hands the write to a thread of its own, so the loop goes on with the
    messages in flight (the sender stops itself meanwhile); `wait()` after the run."""

    def __init__(self, project: Project, campaign_id: int) -> None:
        self._project, self._campaign_id = project, campaign_id
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailer-pause")
        self._writes: list[Future[None]] = []

    def __call__(self, reason: str) -> None:
        self._writes.append(self._pool.submit(self._pause, reason))

    def _pause(self, reason: str) -> None:
        with session_scope(self._project.engine) as session:
            row = session.get(Campaign, self._campaign_id)
            if row is not None and row.state == CampaignState.SENDING:
                transition(row, CampaignState.PAUSED, reason=reason)

    def wait(self) -> None:
        """Every pause written (or its error raised)."""
        self._pool.shutdown(wait=True)
        for write in self._writes:
            write.result()


def _finish_if_done(project: Project, campaign_id: int) -> bool:
    with session_scope(project.engine) as session:
        # the row locked (PostgreSQL): of several senders ending at once, one finishes it
        row = session.get(Campaign, campaign_id, with_for_update=True)
        assert row is not None
        table = Delivery.__table__  # type: ignore[attr-defined]
        open_rows = session.connection().execute(sa.select(sa.func.count()).where(
            table.c.campaign_id == campaign_id, table.c.state.in_(
                [DeliveryState.QUEUED, DeliveryState.DEFERRED,
                 DeliveryState.SENDING]))).scalar_one()
        if row.state == CampaignState.SENDING and not open_rows:
            transition(row, CampaignState.SENT)
            return True
        return row.state == CampaignState.SENT


def send_campaign(project: Project, slug: str, *, deadline: float | None = None,
                  retry_unknown: bool = False,
                  progress: Callable[[SendReport], None] | None = None,
                  limiter: RateLimiter | None = None,
                  transport: Transport | None = None,
                  interrupted: Callable[[], str | None] = lambda: None,
                  claims: Claims | None = None,
                  ) -> tuple[SendReport, bool]:
    """Send what is due for a campaign that is sending, through `transport` (default:
    the project's; the send closes it). Holds no lock itself: callers take `send_lock`.
    On PostgreSQL it sends what it claims (`claims`, default: a lease of its own).
    Returns the report and whether the campaign is now sent."""
    with session_scope(project.engine) as session:
        campaign = get_campaign(session, slug)
        if campaign.state != CampaignState.SENDING:
            raise InvalidInput(f"Campaign {slug} is {campaign.state}, not sending.")
        session.expunge(campaign)
    assert campaign.id is not None
    d = project.settings.delivery
    outbox = Outbox(project.engine, campaign.id, project.hash_key,
                    max_attempts=d.max_attempts, retry_after=d.retry_after,
                    on_rejected=_rejections(project),
                    claims=claims if claims is not None else claims_for(project))
    pause = _Pauser(project, campaign.id)
    sender = Sender(outbox=outbox, renderer=_renderer(project, campaign, outbox),
                    transport=transport or transport_for(project),
                    limiter=limiter or limiter_for(project),
                    connections=d.connections, deadline=deadline,
                    pause_failure_rate=d.pause_failure_rate,
                    campaign_state=_campaign_state(project, campaign.id),
                    pause=pause, progress=progress, urgent_renderer=system_renderer(project))
    try:
        report = asyncio.run(sender.run(retry_unknown=retry_unknown,
                                        interrupted=interrupted))
    finally:
        pause.wait()
    return report, _finish_if_done(project, campaign.id)


def notice_sender(project: Project, *, limiter: RateLimiter, transport: Transport,
                  deadline: float | None = None, recover: bool = True,
                  claims: Claims | None = None) -> Sender:
    """A sender of the engine's own mails only (notices, sequence steps), until none is
    due: `mailer run` before the campaigns, the web app's background sender. `recover`
    (only under the run lock): what a dead sender left "sending" becomes "unknown". On
    PostgreSQL it sends what it claims (`claims`, default: a lease of its own), and
    recovers only what dead senders left, whatever `recover` says."""
    d = project.settings.delivery
    outbox = Outbox(project.engine, None, project.hash_key, max_attempts=d.max_attempts,
                    retry_after=d.retry_after, on_rejected=_rejections(project),
                    recover_system=recover,
                    claims=claims if claims is not None else claims_for(project))
    return Sender(outbox=outbox, renderer=None, transport=transport, limiter=limiter,
                  connections=d.connections, deadline=deadline,
                  pause_failure_rate=d.pause_failure_rate,
                  urgent_renderer=system_renderer(project))


def send_notices(project: Project, *, limiter: RateLimiter, deadline: float | None = None,
                 retry_unknown: bool = False,
                 interrupted: Callable[[], str | None] = lambda: None,
                 claims: Claims | None = None) -> SendReport:
    """`mailer run`'s first sends: the due notices and steps, through the project's
    transport. Holds no lock itself: the caller holds `send_lock`."""
    sender = notice_sender(project, limiter=limiter, transport=transport_for(project),
                           deadline=deadline, claims=claims)
    return asyncio.run(sender.run(retry_unknown=retry_unknown, interrupted=interrupted))


@dataclass
class RunSummary:
    started: list[str] = field(default_factory=list)
    not_started: dict[str, str] = field(default_factory=dict)  # due, but why it cannot start
    campaigns: dict[str, dict[str, Any]] = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)
    stopped: str | None = None
    interrupted: str | None = None  # SIGINT or SIGTERM stopped the run (sender.py)
    waiting: int = 0  # ... and this many deliveries (of every kind) are still to go
    # the engine's own mails (confirmation, welcome, export, sequence steps), sent before
    # the campaigns and between their rounds
    notices: dict[str, int] = field(default_factory=dict)
    returns: dict[str, Any] = field(default_factory=dict)  # what the return sources held
    returns_error: str | None = None  # a return source that could not be read
    purged: dict[str, int] = field(default_factory=dict)  # retention, once a day
    recurring: list[str] = field(default_factory=list)  # occurrences made (or missed)
    steps: dict[str, int] = field(default_factory=dict)  # sequence steps queued now

    @property
    def idle(self) -> bool:
        return not self.started and not self.not_started and not any(self.notices.values()) \
            and not self.returns.get("read") and not self.returns_error and not any(
            c["sent"] or c["deferred"] or c["failed"] or c["bounced"] or c["skipped"]
            for c in self.campaigns.values())


def run_due(project: Project, *, max_seconds: float | None = None,
            retry_unknown: bool = False,
            progress: Callable[[str, SendReport], None] | None = None,
            signals: Interrupt | None = None, housekeeping: bool = True,
            until_done: bool = False) -> RunSummary:
    """`mailer run`: start the scheduled campaigns that are due (with the rest of the
    `housekeeping`: returns, purge, recurring campaigns, sequence steps), then send for
    every sending campaign until done or the time limit. `mailer worker`: no
    housekeeping, and `until_done`: round after round, waiting while other senders hold
    what is left, until nothing is (or the time limit).

    On SQLite all of it under the run lock. On PostgreSQL the housekeeping takes the
    start lock (busy: another process does it now, and this one only sends) and the
    sends claim their deliveries (claims.py), so runs and workers on several machines
    share the work."""
    deadline = time.monotonic() + max_seconds if max_seconds else None
    result = RunSummary()
    # `signals`: the command's, installed when it started (runcmd.py); from here on a
    # first signal lets the unit of work in progress finish
    signals = signals or Interrupt("mailer run")
    signals.at_once = None

    def stopping() -> bool:
        """A stop signal came: the run goes no further (checked between its phases and
        its units of work; what is in progress finishes first)."""
        if signals.name is not None and result.interrupted is None:
            result.interrupted, result.stopped = signals.name, f"interrupted ({signals.name})"
        return result.interrupted is not None

    claims = claims_for(project)
    with send_lock(project.engine), stop_signals(signals), \
            claims if claims is not None else contextlib.nullcontext():
        if housekeeping:
            with start_lock(project.engine, busy_ok=True) as held:
                if held:
                    _housekeeping(project, result, deadline, stopping)
        # One rate limiter and one time budget for every kind of mail.
        limiter = limiter_for(project)
        result.notices = dict.fromkeys(NOTICE_COUNTS, 0)
        while True:
            worked, over = _send_round(project, result, limiter, deadline=deadline,
                                       retry_unknown=retry_unknown, progress=progress,
                                       signals=signals, stopping=stopping, claims=claims)
            if not until_done or over or stopping():
                break
            if deadline is not None and time.monotonic() >= deadline:
                result.stopped = "time limit reached"
                break
            if not worked:
                if not _open(project):
                    break
                # the rest is claimed by other senders, or in flight: if one of them
                # dies, its share comes back when its lease runs out
                _pause(WORK_POLL if claims is None else min(WORK_POLL, claims.lease / 3),
                       stopping, deadline)
        if stopping():
            result.waiting = _waiting(project)
    return result


WORK_POLL = 1.0  # seconds a worker waits, with nothing it may take, before it looks again


def _pause(seconds: float, stopping: Callable[[], bool], deadline: float | None) -> None:
    """Wait `seconds`, or less: until a stop signal or the deadline."""
    until = time.monotonic() + seconds
    if deadline is not None:
        until = min(until, deadline)
    while not stopping() and time.monotonic() < until:
        time.sleep(0.05)


def _housekeeping(project: Project, result: RunSummary, deadline: float | None,
                  stopping: Callable[[], bool]) -> None:
    """`mailer run`'s work besides sending, one process at a time (the start lock)."""
    # What came back first: a hard bounce or a complaint read now spares a send.
    if project.settings.feedback.sources:
        _read_returns(project, result, deadline, stopping)
    if not stopping():
        _purge_daily(project, result, stopping)
    if not stopping():
        # Recurring campaigns: the dated campaign of each due occurrence, scheduled
        # now for its time, so the start rules below start it like any scheduled one.
        result.recurring = [o.describe() for o in materialize(project, utcnow())]
        _start_due(project, result, stopping)
    if not stopping():
        # Drip sequences: the steps due now join their step campaigns' outboxes, to be
        # sent below like every mail (automation/sequences.py).
        result.steps = queue_due(project, utcnow(), stopping=stopping).as_dict()


def _send_round(project: Project, result: RunSummary, limiter: RateLimiter, *,
                deadline: float | None, retry_unknown: bool,
                progress: Callable[[str, SendReport], None] | None, signals: Interrupt,
                stopping: Callable[[], bool], claims: Claims | None) -> tuple[bool, bool]:
    """The engine's own mails (notices, sequence steps) first, then each sending
    campaign, whose sender puts the notices and steps that become due meanwhile before
    its own next messages, then once more those queued or due since (a big campaign
    never starves a welcome). Returns (whether anything was done, whether the run must
    go no further: a signal, a quota)."""
    from mailer.delivery.sender import summary

    with session_scope(project.engine) as session:
        sending = [c.slug for c in session.exec(select(Campaign).where(
            Campaign.state == CampaignState.SENDING,
            Campaign.kind == CampaignKind.CAMPAIGN).order_by(Campaign.id)).all()]
    worked = False

    def sent(report: SendReport) -> bool:
        """Count the notices a send sent; True when the run must go no further."""
        nonlocal worked
        worked = worked or bool(sum(report.counts.values()) or sum(report.urgent.values())
                                or report.unknown_found)
        for key, n in urgent_summary(report).items():
            result.notices[key] += n
        if report.interrupted:  # the other campaigns wait too
            signals.name = signals.name or report.interrupted  # another: at once
            result.stopped, result.interrupted = report.stopped, report.interrupted
            return True
        if report.stopped and (report.stopped.startswith("the hourly")
                               or report.stopped.startswith("this sender's lease")):
            result.stopped = report.stopped
            return True
        return False

    def notices() -> bool:
        return sent(send_notices(project, limiter=limiter, deadline=deadline,
                                 retry_unknown=retry_unknown,
                                 interrupted=lambda: signals.name, claims=claims))

    over = stopping() or notices()
    for slug in sending:
        if over or stopping():
            break
        if deadline is not None and time.monotonic() >= deadline:
            result.stopped = "time limit reached"
            over = True
            break
        report, done = send_campaign(
            project, slug, deadline=deadline, retry_unknown=retry_unknown,
            progress=(lambda r, s=slug: progress(s, r)) if progress else None,
            limiter=limiter, interrupted=lambda: signals.name, claims=claims)
        _add(result.campaigns, slug, summary(report))
        if done and slug not in result.finished:
            result.finished.append(slug)
        over = sent(report)
    if sending and not over and not stopping() and (
            deadline is None or time.monotonic() < deadline):
        over = notices()
    return worked, over


def _add(campaigns: dict[str, dict[str, Any]], slug: str, figures: dict[str, Any]) -> None:
    """A send's figures, added to those of the run's earlier sends of the campaign."""
    before = campaigns.get(slug)
    if before is not None:
        for key in ("sent", "deferred", "failed", "bounced", "skipped", "unknown",
                    "unknown_found", "unknown_requeued", "seconds"):
            figures[key] += before[key]
    campaigns[slug] = figures


def _open(project: Project) -> bool:
    """Whether any sending campaign (of every kind) has a delivery queued, due for a
    retry, or in flight: work for some sender now."""
    table = Delivery.__table__  # type: ignore[attr-defined]
    now = sa.literal(utcnow(), Timestamp())
    with project.engine.connect() as conn:
        return conn.execute(sa.select(table.c.id).where(
            table.c.campaign_id.in_(sa.select(Campaign.id).where(
                Campaign.state == CampaignState.SENDING)),
            sa.or_(table.c.state.in_([DeliveryState.QUEUED, DeliveryState.SENDING]),
                   sa.and_(table.c.state == DeliveryState.DEFERRED,
                           table.c.next_attempt_at <= now))).limit(1)).first() is not None


def _waiting(project: Project) -> int:
    """Deliveries of sending campaigns still to go: queued or deferred."""
    table = Delivery.__table__  # type: ignore[attr-defined]
    with project.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table.join(
            Campaign.__table__, Campaign.id == table.c.campaign_id)).where(  # type: ignore[attr-defined]
            Campaign.state == CampaignState.SENDING,
            table.c.state.in_([DeliveryState.QUEUED, DeliveryState.DEFERRED]))).scalar_one())


def _start_due(project: Project, result: RunSummary,
               stopping: Callable[[], bool] = lambda: False) -> None:
    """Start the scheduled campaigns whose time has come, each in its own transaction:
    one that cannot start (a template error, nobody to send to) is reported, stays
    scheduled, and the others start; until `stopping()` (a stop signal) says so."""
    with session_scope(project.engine) as session:
        due = session.exec(select(Campaign.slug).where(
            Campaign.state == CampaignState.SCHEDULED,
            Campaign.scheduled_at <= utcnow()).order_by(Campaign.id)).all()  # type: ignore[operator]
    for slug in due:
        if stopping():
            break
        try:
            with session_scope(project.engine) as session:
                prepare_start(project, session, get_campaign(session, slug))
        except MailerError as exc:
            result.not_started[slug] = str(exc)
        else:
            result.started.append(slug)


def _rejections(project: Project) -> Callable[[list[tuple[int, str]]], None]:
    """The 5xx replies the sender sees go through the return path's classifier and
    policy, like a bounce that comes back later."""
    from mailer.feedback.runner import processor

    feedback = processor(project)

    def record(rejected: list[tuple[int, str]]) -> None:
        for delivery_id, reply in rejected:
            try:
                feedback.record_rejection(delivery_id, reply)
            except Exception:  # noqa: BLE001 - the send goes on; the reply stays recorded
                log.exception("delivery %s: the rejection could not be classified",
                              delivery_id)

    return record


def _purge_daily(project: Project, result: RunSummary,
                 stopping: Callable[[], bool]) -> None:
    """The retention periods, applied once a day (in short batches: a send running
    meanwhile waits at most one batch), until `stopping()` (a stop signal): then after
    the batch in hand, and the next run goes on."""
    from mailer.privacy.retention import due, purge

    if due(project.engine):
        result.purged = purge(project.engine, project.settings.privacy,
                              actor="mailer run", stop=stopping).counts


def _read_returns(project: Project, result: RunSummary, deadline: float | None,
                  stopping: Callable[[], bool]) -> None:
    """The configured return sources, within [feedback] max_seconds and the run's
    deadline, until `stopping()`. A source that cannot be read is reported, and the
    sending goes on."""
    from mailer.feedback.runner import intake

    budget = project.settings.feedback.max_seconds
    if deadline is not None:
        budget = min(budget, max(0.0, deadline - time.monotonic()) / 2)
    try:
        result.returns = intake(project, max_seconds=budget, stop=stopping).as_dict()
    except MailerError as exc:
        result.returns_error = str(exc)


def send_test(project: Project, slug: str, addresses: list[str]) -> list[tuple[str, Outcome]]:
    """Send the campaign as it stands to test addresses: real mail through the transport,
    subject marked [TEST], not counted, no outbox row. A subscriber's own data is used
    when the address is one."""
    from mailer.audience.subscribers import validate_address
    from mailer.models import Subscriber

    with session_scope(project.engine) as session:
        campaign = get_campaign(session, slug)
        first = session.get(MailingList, campaign.list_ids[0])
        assert first is not None
        mailing = checked_mailing(project, session, campaign,
                                  subject="[TEST] " + campaign.subject)
        people = []
        for raw in addresses:
            address = validate_address(raw)
            row = session.exec(select(Subscriber).where(Subscriber.email == address)).first()
            people.append(recipient(row) if row else stand_in(address, first.language))
    messages = [mailing.message(p) for p in people]

    async def go() -> list[Outcome]:
        transport = transport_for(project)
        try:
            return [await transport.send(m) for m in messages]
        finally:
            await transport.close()
    return list(zip([m.recipient for m in messages], asyncio.run(go()), strict=True))
