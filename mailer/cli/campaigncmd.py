"""`mailer campaign create|ls|show|test|send|schedule|pause|resume|cancel|deliveries`
(`mailer run` is runcmd.py, which uses _line, _interrupted and _watch from here)."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
from sqlmodel import select

from mailer.cli import State, pass_state
from mailer.cli import recurring as recurring_cli
from mailer.cli.output import err, print_json, stream_json, table
from mailer.db import session_scope
from mailer.delivery.campaigns import (
    InThePast,
    audience_count,
    campaign_figures,
    create_campaign,
    deliveries,
    empty_audience,
    get_campaign,
    plan_start,
    schedule_campaign,
    transition,
)
from mailer.delivery.lock import send_lock, start_lock
from mailer.delivery.runner import (
    prepare_start,
    reopen_for_unknown,
    send_campaign,
    send_test,
    transport_for,
)
from mailer.delivery.sender import SendReport, summary
from mailer.delivery.stopping import Interrupt, interrupted_line, stop_signals
from mailer.errors import InvalidInput
from mailer.messages import checked_mailing, resolve_template
from mailer.models import (
    AuditLog,
    Campaign,
    CampaignKind,
    CampaignState,
    DeliveryState,
    current_actor,
)

_json = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
_STATES = [s.value for s in DeliveryState]


@click.group("campaign")
def command() -> None:
    """Campaigns: create one, test it, send it, follow it.

    \b
    Example:
        mailer campaign create dec-2026 --list nieuwsbrief \\
            --template templates/newsletter.html.j2 --subject "Ons nieuws van december"
        mailer campaign test dec-2026 --to me@example.be
        mailer campaign send dec-2026
    """


@command.command("create")
@click.argument("name")
@click.option("--list", "lists", multiple=True, required=True,
              help="A list to send to (repeatable); each person gets it once.")
@click.option("--template", required=True, help="e.g. templates/newsletter.html.j2")
@click.option("--subject", required=True,
              help="The subject; a template: \"{{ subscriber.first_name | default('Beste "
                   "lezer') }}, ons nieuws\".")
@click.option("--title", help="The campaign's title, shown in the mail (default: the list "
                              "name).")
@click.option("--where", "segment", multiple=True, metavar="CONDITION",
              help="Only members for whom this holds (repeatable, all must): "
                   "\"language = en\", \"Gemeente = Gent\", \"email ends with @x.be\".")
@click.option("--every", metavar="CRON",
              help="Send it again and again on this cron schedule, \"0 9 * * MON\" "
                   "(Mondays at 9:00): `mailer run` makes a dated campaign of each "
                   "occurrence (NAME-2026-12-07) and sends it.")
@click.option("--tz", metavar="ZONE", help="The time zone of --every (default "
                                           "Europe/Brussels).")
@_json
@pass_state
def create(state: State, name: str, lists: tuple[str, ...], template: str, subject: str,
           title: str | None, segment: tuple[str, ...], every: str | None, tz: str | None,
           as_json: bool) -> None:
    """Create a draft campaign. Nothing is sent until `mailer campaign send`. The
    template and subject must pass `mailer templates check` for this audience (the rules
    `campaign test` and `send` apply again); what fails is not created.

    \b
    Example:
        mailer campaign create dec-2026 --list nieuwsbrief \\
            --template templates/newsletter.html.j2 \\
            --subject "{{ subscriber.first_name | default('Beste lezer') }}, ons nieuws" \\
            --where "language = nl"
        mailer campaign create weekly --list nieuwsbrief \\
            --template templates/newsletter.html.j2 \\
            --subject "Week {{ campaign.date | date('%V') }}" \\
            --every "0 9 * * MON" --tz Europe/Brussels
    """
    project = state.project
    if recurring_cli.create(project, name=name, every=every, tz=tz, title=title,
                            template=template, subject=subject, lists=lists,
                            segment=segment, as_json=as_json):
        return
    with session_scope(project.engine) as session:
        campaign = create_campaign(session, slug=name, title=title, template=template,
                                   subject=subject, list_slugs=lists, segment=segment)
        checked_mailing(project, session, campaign, new=True)
        people = audience_count(session, campaign)
        empty = empty_audience(session, campaign) if not people else None
    if as_json:
        print_json({"campaign": name, "state": "draft", "audience": people}
                   | ({"audience_empty": empty[0], "hint": empty[1]} if empty else {}))
        return
    if empty:
        err().print(f"Campaign {name} created (draft), but nobody would get it now: "
                    f"{empty[0]}" + (f"\n{empty[1]}" if empty[1] else ""),
                    highlight=False, markup=False)
        return
    err().print(f"Campaign {name} created (draft): {people:,} people would get it now.\n"
                f"Next: mailer campaign test {name} --to you@example.be", highlight=False)


@command.command("ls")
@_json
@pass_state
def ls(state: State, as_json: bool) -> None:
    """All campaigns with their state and counts; a recurring one with its next
    occurrence.

    \b
    Example:
        mailer campaign ls
    """
    project = state.project
    with session_scope(project.engine) as session:
        rows = []
        for campaign in session.exec(select(Campaign).where(
                Campaign.kind == CampaignKind.CAMPAIGN).order_by(Campaign.id)).all():
            figures = campaign_figures(session, campaign)
            rows.append({"campaign": campaign.slug, "state": campaign.state,
                         "lists": ", ".join(figures.lists), "total": figures.total,
                         "sent": figures.counts.get("sent", 0),
                         "open": figures.remaining, "scheduled_at": campaign.scheduled_at,
                         "started_at": campaign.started_at})
        rows += recurring_cli.ls_rows(session)  # scheduled_at: the next occurrence
    if as_json:
        print_json(rows)
    else:
        table(rows, ["campaign", "state", "lists", "total", "sent", "open", "scheduled_at",
                     "started_at"], empty="No campaigns yet.")


@command.command("show")
@click.argument("name")
@_json
@pass_state
def show(state: State, name: str, as_json: bool) -> None:
    """A campaign's state, counts per delivery state, rate, ETA and last errors, and
    (PostgreSQL) the workers sending it now: host, process, since when, rate.

    \b
    Example:
        mailer campaign show dec-2026
    """
    project = state.project
    if recurring_cli.show(project, name, as_json):
        return
    with session_scope(project.engine) as session:
        campaign = get_campaign(session, name)
        figures = campaign_figures(session, campaign, rate=project.settings.delivery.rate)
        if campaign.state in (CampaignState.DRAFT, CampaignState.SCHEDULED):
            audience = audience_count(session, campaign)
        else:
            audience = None
    from mailer.feedback.queries import campaign_feedback

    data: dict[str, Any] = {k: v for k, v in vars(figures).items()}
    data["audience_now"] = audience
    assert campaign.id is not None
    data["feedback"] = returns = campaign_feedback(project.engine, campaign.id)
    from mailer.delivery.claims import live_senders

    data["senders"] = senders = live_senders(project.engine, campaign.id)
    if as_json:
        print_json(data)
        return
    console = err()
    console.print(f"[bold]{figures.slug}[/] — {figures.state}"
                  + (f" ({figures.pause_reason})" if figures.pause_reason else ""),
                  highlight=False)
    console.print(f"  lists {', '.join(figures.lists)}"
                  + (f", where {' and '.join(figures.segment)}" if figures.segment else ""),
                  highlight=False)
    console.print(f"  template {figures.template}; subject {figures.subject}",
                  highlight=False, markup=False)
    for label, value in (("scheduled", figures.scheduled_at), ("started", figures.started_at),
                         ("finished", figures.finished_at)):
        if value:
            console.print(f"  {label} {local_time(value)}", highlight=False)
    if audience is not None:
        console.print(f"  audience now: {audience:,} people")
    if figures.total:
        table([{"state": s, "deliveries": f"{n:,}"} for s, n in sorted(
            figures.counts.items(), key=lambda kv: _STATES.index(kv[0]))],
            ["state", "deliveries"])
        console.print(f"  sent in the last minute: {figures.sent_last_minute:,}"
                      + (f"; about {_duration(figures.eta_seconds)} to go"
                         if figures.eta_seconds else ""), highlight=False)
    for sender in senders:
        console.print(f"  sending: {sender['host']} pid {sender['pid']} since "
                      f"{local_time(sender['started_at'])}, {sender['sent']:,} sent, "
                      f"{sender['rate']:,.1f} messages/s", highlight=False, markup=False)
    if figures.state == CampaignState.PAUSED:
        console.print(f"  Paused: nothing goes out until `mailer campaign resume "
                      f"{figures.slug}`.", highlight=False)
    if figures.next_retry_at and figures.state == CampaignState.SENDING:
        console.print(f"  next retry of the deferred deliveries: "
                      f"{local_time(figures.next_retry_at)}", highlight=False)
    for error in figures.last_errors:
        console.print(f"  {error['count']:,} × {error['state']}: {error['reply']}",
                      highlight=False, markup=False)
    _print_returns(returns)


def _print_returns(returns: dict[str, Any]) -> None:
    """Bounces by reason and domain; rejections of our own sending as warnings."""
    console = err()
    counts = [f"{returns[k]:,} {one if returns[k] == 1 else many}" for k, one, many in (
        ("hard", "hard bounce", "hard bounces"), ("soft", "soft bounce", "soft bounces"),
        ("delayed", "delayed", "delayed"), ("complaints", "complaint", "complaints"),
        ("unsubscribes", "unsubscribed by mail", "unsubscribed by mail"),
        ("auto_replies", "auto-reply", "auto-replies")) if returns[k]]
    if not counts and not returns["warnings"]:
        return
    if counts:
        console.print("  came back: " + ", ".join(counts), highlight=False)
    if returns["reasons"]:
        console.print("  bounces by reason: " + ", ".join(
            f"{r['reason']} {r['count']:,}" for r in returns["reasons"]), highlight=False)
    if returns["domains"]:
        console.print("  bounces by domain: " + ", ".join(
            f"{d['domain'] or '?'} {d['count']:,}" for d in returns["domains"]),
            highlight=False)
    for w in returns["warnings"]:
        console.print(f"  [yellow]Warning:[/] {w['count']:,} rejected by {w['domain'] or '?'} "
                      f"because of our sending ({w['reason']}), not the addresses: "
                      f"{w['example'] or ''}", highlight=False)


@command.command("report")
@click.argument("name")
@click.option("--out", "out_path", metavar="PATH",
              help="Write one self-contained HTML file (charts inside, nothing fetched).")
@click.option("--lang", type=click.Choice(["nl", "en"]), default=None,
              help="The report's language (default: the list's).")
@_json
@pass_state
def report(state: State, name: str, out_path: str | None, lang: str | None,
           as_json: bool) -> None:
    """How a campaign went: deliveries by state, sends per minute against the rate, bounces
    by reason and domain, complaints, unsubscribes by channel, the slowest domains, and
    clicks per link when they are counted ([tracking] clicks = "aggregate").

    \b
    Example:
        mailer campaign report dec-2026 --out report.html
        mailer campaign report dec-2026 --json
    """
    from mailer.reports.figures import campaign_report

    project = state.project
    figures = campaign_report(project.engine, name, rate=project.settings.delivery.rate)
    if as_json or not out_path:
        if not as_json:
            raise InvalidInput("Say where the report goes (--out report.html), or ask --json.")
        print_json(figures)
        return
    from mailer.reports.page import render_report

    html = render_report(figures, lang or figures["campaign"]["language"] or "nl")
    from mailer.privacy.private import write_private

    try:  # 0600: a server's reply in it can quote an address
        write_private(Path(out_path), html)
    except OSError as exc:
        raise InvalidInput(f"Cannot write {out_path}: {exc.strerror}") from None
    err().print(f"Report of {name} written to {out_path}.", highlight=False)


@command.command("deliveries")
@click.argument("name")
@click.option("--state", "state_filter", type=click.Choice(_STATES),
              help="Only deliveries in this state.")
@click.option("--limit", type=int, help="At most this many.")
@_json
@pass_state
def deliveries_cmd(state: State, name: str, state_filter: str | None, limit: int | None,
                   as_json: bool) -> None:
    """The per-recipient record of a campaign: state, attempts, last SMTP reply.

    \b
    Example:
        mailer campaign deliveries dec-2026 --state failed
    """
    project = state.project
    with session_scope(project.engine) as session:
        campaign = get_campaign(session, name)
        rows = deliveries(session, campaign, state=state_filter, limit=limit)
        if as_json:
            stream_json(rows)
        else:
            table(rows, ["email", "state", "attempts", "last_reply", "sent_at",
                         "next_attempt_at"], empty="No deliveries match.")


@command.command("test")
@click.argument("name")
@click.option("--to", "addresses", multiple=True,
              help="Test address (repeatable; default: [delivery] test_addresses).")
@_json
@pass_state
def test(state: State, name: str, addresses: tuple[str, ...], as_json: bool) -> None:
    """Send the campaign as it stands to test addresses: real mail, subject marked
    [TEST], not counted, nothing recorded for the audience.

    \b
    Example:
        mailer campaign test dec-2026 --to me@example.be
    """
    project = state.project
    targets = list(addresses) or project.settings.delivery.test_addresses
    if not targets:
        raise InvalidInput("No test address.", hint="Give --to you@example.be, or set "
                                                    "[delivery] test_addresses.")
    results = send_test(project, name, targets)
    if as_json:
        print_json([{"to": to, "result": o.kind, "reply": o.reply} for to, o in results])
    else:
        for to, outcome in results:
            err().print(f"{to}: {outcome.kind} ({outcome.reply})", highlight=False,
                        markup=False)
    if any(not o.ok for _, o in results):
        sys.exit(1)


@command.command("send")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (scripts).")
@click.option("--max-seconds", type=float, help="Stop starting new messages after this "
                                                 "long; the rest waits for `mailer run`.")
@click.option("--retry-unknown", is_flag=True,
              help="Resend deliveries that were in flight when a sender died (they may "
                   "have arrived: a duplicate is possible).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_json
@pass_state
def send(state: State, name: str, yes: bool, max_seconds: float | None, retry_unknown: bool,
         quiet: bool, as_json: bool) -> None:
    """Send a campaign now: shows who and how many and asks first (--yes for scripts).
    A campaign that is already sending continues where it was. Ctrl-C (or SIGTERM)
    stops it after the messages in flight: exit 130, with how many went, how many wait
    and the command that continues; a second Ctrl-C stops at once.

    \b
    Example:
        mailer campaign send dec-2026
    """
    # The signals are ours from the start (delivery/stopping.py): until the send is
    # started, one stops at once (what was being written rolls back); then it lets the
    # sender begin and stop after the messages in flight.
    command = f"mailer campaign send {name}"
    signals = Interrupt(command, at_once=f"Interrupted ({{name}}) before sending: nothing "
                                         f"sent; `{command}` starts it again.")
    with stop_signals(signals):
        project = state.project
        transport = transport_for(project)
        # SQLite: one sender, under the run lock; PostgreSQL: the start under the start
        # lock, the send beside any other senders (delivery/claims.py)
        with send_lock(project.engine):
            with start_lock(project.engine):
                if retry_unknown:
                    reopen_for_unknown(project, name)
                if not _start_or_continue(project, name, yes=yes, as_json=as_json,
                                          describe=transport.describe(), signals=signals):
                    return
            with _progress(name, quiet or as_json) as bar:
                report, done = send_campaign(project, name, deadline=_deadline(max_seconds),
                                             retry_unknown=retry_unknown, progress=bar,
                                             transport=transport,
                                             interrupted=lambda: signals.name)
        report.interrupted = report.interrupted or signals.name  # came after the sender
        _watch(project, [name] if done else [])
        _report(name, report, done, as_json)


def _start_or_continue(project: Any, name: str, *, yes: bool, as_json: bool,
                       describe: str, signals: Interrupt) -> bool:
    """Start a draft or scheduled campaign after confirmation (the rules: plan_start);
    False if declined. A signal before the start is committed stops at once and rolls
    it back (`signals.at_once`); from the commit on, it is noted for the sender."""
    with session_scope(project.engine) as session:
        campaign = get_campaign(session, name)
        plan = plan_start(session, campaign)
        if plan is None:  # sending: it goes on
            signals.at_once = None
            return True
        question = plan.question(describe)
        if not yes:
            if not sys.stdin.isatty():
                raise InvalidInput(question.replace("Send", "Would send", 1),
                                   hint="Add --yes to send without asking.")
            if not click.confirm(question, default=False, err=True):
                err().print("Nothing sent.")
                return False
        queued = prepare_start(project, session, campaign)
        signals.at_once = None  # committed as this block ends: the sender says the rest
        if not as_json:
            err().print(f"{queued:,} deliveries queued.")
    return True


@command.command("schedule")
@click.argument("name")
@click.option("--at", "at", required=True, help='Local date and time, "2026-12-18 09:00".')
@click.option("--tz", default="Europe/Brussels", show_default=True, help="Time zone of --at.")
@click.option("--yes", is_flag=True, help="A time in the past: do not ask, `mailer run` "
                                          "starts it at once (scripts).")
@_json
@pass_state
def schedule(state: State, name: str, at: str, tz: str, yes: bool, as_json: bool) -> None:
    """Schedule a campaign: `mailer run` (cron) starts it at that time. A time in the
    past is refused (asked, on a terminal) unless --yes.

    \b
    Example:
        mailer campaign schedule dec-2026 --at "2026-12-18 09:00" --tz Europe/Brussels
    """
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"Unknown time zone {tz!r}.",
                           hint="e.g. Europe/Brussels, Europe/Amsterdam, UTC.") from None
    try:
        when = datetime.fromisoformat(at).replace(tzinfo=zone)
    except ValueError:
        raise InvalidInput(f"Cannot read the time {at!r}.",
                           hint='Write it as "2026-12-18 09:00".') from None
    project = state.project
    with session_scope(project.engine) as session:
        campaign = get_campaign(session, name)
        resolve_template(project.settings, campaign.template)
        try:
            schedule_campaign(campaign, when, past_ok=yes)
        except InThePast as exc:
            if not sys.stdin.isatty():
                raise
            if not click.confirm(f"{exc} Schedule it anyway?", default=False, err=True):
                err().print("Nothing scheduled.")
                return
            schedule_campaign(campaign, when, past_ok=True)
        session.add(campaign)
    if as_json:
        print_json({"campaign": name, "state": "scheduled", "at": when})
    else:
        err().print(f"{name} is scheduled for {when:%Y-%m-%d %H:%M %Z}. `mailer run` starts "
                    "it then (run it every minute from cron).", highlight=False)


def _simple(verb: str, to: CampaignState, example: str, doc: str) -> None:
    @command.command(verb)
    @click.argument("name")
    @_json
    @pass_state
    def cmd(state: State, name: str, as_json: bool) -> None:
        project = state.project
        if recurring_cli.change(project, name, to, as_json):
            return
        with session_scope(project.engine) as session:
            campaign = get_campaign(session, name)
            transition(campaign, to, reason="paused by hand" if to == "paused" else None)
            if to == CampaignState.CANCELLED:
                _skip_open(session, campaign)
            session.add(campaign)
            session.add(AuditLog(actor=current_actor(), action=f"campaign.{verb}",
                                 detail={"campaign": campaign.id, "slug": campaign.slug}))
            new_state = campaign.state
        if as_json:
            print_json({"campaign": name, "state": new_state})
        elif to == CampaignState.PAUSED:
            err().print(f"{name} is paused: nothing goes out until `mailer campaign resume "
                        f"{name}`.", highlight=False)
        else:
            err().print(f"{name} is {new_state}.", highlight=False)
    cmd.help = f"{doc}\n\n\b\nExample:\n    {example}\n"


def _skip_open(session: Any, campaign: Campaign) -> None:

    from mailer.models import Delivery, utcnow
    table = Delivery.__table__  # type: ignore[attr-defined]
    session.connection().execute(table.update().where(
        table.c.campaign_id == campaign.id,
        table.c.state.in_([DeliveryState.QUEUED, DeliveryState.DEFERRED])).values(
        state=DeliveryState.SKIPPED, last_reply="campaign cancelled", updated_at=utcnow()))
    # Left "sending" by a sender that died (or still in flight: a live sender's result
    # overwrites this): they may have arrived. No run recovers them once cancelled.
    session.connection().execute(table.update().where(
        table.c.campaign_id == campaign.id, table.c.state == DeliveryState.SENDING).values(
        state=DeliveryState.UNKNOWN, updated_at=utcnow(),
        last_reply="in flight when the campaign was cancelled: it may have arrived"))


_simple("pause", CampaignState.PAUSED, "mailer campaign pause dec-2026",
        "Pause a sending campaign: messages in flight finish, nothing new starts, and "
        "`mailer run` leaves it alone until `mailer campaign resume`.")
_simple("resume", CampaignState.SENDING, "mailer campaign resume dec-2026",
        "Resume a paused campaign: `mailer run` (or `campaign send`) continues it.")
_simple("cancel", CampaignState.CANCELLED, "mailer campaign cancel dec-2026",
        "Cancel a campaign: whatever was not sent yet never will be. A recurring "
        "campaign makes no more occurrences (those made already are campaigns of their "
        "own).")


def _deadline(max_seconds: float | None) -> float | None:
    import time
    return time.monotonic() + max_seconds if max_seconds else None


def _line(figures: dict[str, Any]) -> str:
    parts = [f"{figures[k]:,} {k}" for k in ("sent", "deferred", "failed", "bounced",
                                             "skipped", "unknown") if figures.get(k)]
    return (", ".join(parts) or "nothing sent") + f" in {figures['seconds']:.0f} s"


def _duration(seconds: float | None) -> str:
    if not seconds:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s"


@contextmanager
def _progress(name: str, quiet: bool):  # noqa: ANN202
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.fields[detail]}"), TimeRemainingColumn())
    with Progress(*columns, console=err(), transient=True) as bar:
        task = bar.add_task(name, total=None, detail="")

        def update(report: SendReport) -> None:
            c = report.counts
            bar.update(task, completed=c["sent"], detail=(
                f"{c['sent']:,} sent, {c['deferred']:,} deferred, {c['failed']:,} failed, "
                f"{report.rate:,.1f}/s"))
        yield update


def local_time(value: datetime) -> str:
    """A timestamp in the operator's time zone, to the second."""
    return f"{value.astimezone().replace(microsecond=0):%Y-%m-%d %H:%M:%S %Z}"


def _all_deferred(name: str) -> datetime | None:
    """When every open delivery of the campaign is deferred: the next retry's time."""
    state = click.get_current_context().find_object(State)
    assert state is not None
    with session_scope(state.project.engine) as session:
        figures = campaign_figures(session, get_campaign(session, name))
    open_states = {k: n for k, n in figures.counts.items()
                   if k in (DeliveryState.QUEUED, DeliveryState.SENDING, DeliveryState.DEFERRED)}
    if set(open_states) == {DeliveryState.DEFERRED} and figures.next_retry_at:
        return figures.next_retry_at
    return None


def _watch(project: Any, finished: list[str]) -> None:
    """A finished campaign that reached a list not confirmed at its start is recorded in
    the breach register, and said (privacy/incidents.py)."""
    from mailer.privacy.incidents import check_campaign_lists

    for slug in finished:
        warning = check_campaign_lists(project.engine, slug, actor=current_actor())
        if warning:
            err().print(f"[red]Warning:[/] {warning}", highlight=False)


def _interrupted(signal: str, sent: int, waiting: int, unknown: int, command: str) -> None:
    """A send stopped by SIGINT or SIGTERM: one line, exit 130 (as a shell reports Ctrl-C)."""
    err().print(interrupted_line(signal, sent, waiting, unknown, command), highlight=False,
                markup=False)
    raise SystemExit(130)


def _report(name: str, report: SendReport, done: bool, as_json: bool) -> None:
    data = summary(report)
    data["campaign"], data["finished"] = name, done
    if as_json:
        print_json(data)
        if report.interrupted:
            raise SystemExit(130)
        return
    if report.interrupted:
        _interrupted(report.interrupted, data["sent"], data["open_left"], data["unknown"],
                     f"mailer campaign send {name}")
    console = err()
    console.print(f"{name}: {_line(data)} ({data['rate']:,.1f} messages/s).", highlight=False)
    if report.unknown_found:
        console.print(f"{report.unknown_found:,} deliveries were in flight when an earlier "
                      "sender stopped: marked unknown (see `campaign deliveries --state "
                      "unknown`; --retry-unknown resends them).")
    if data["unknown"]:
        console.print(f"{data['unknown']:,} deliveries got no reply after the end of their "
                      "message: they may have arrived, and are marked unknown, not resent "
                      "(see `campaign deliveries --state unknown`; --retry-unknown resends "
                      "them).", highlight=False)
    if done:
        console.print(f"{name} is sent.")
    elif report.paused_reason:
        console.print(f"[red]Paused:[/] {report.paused_reason}", highlight=False)
    elif report.open_left:
        console.print(f"{report.open_left:,} deliveries are still open"
                      + (f" ({report.stopped})" if report.stopped else "")
                      + "; `mailer run` continues them.", highlight=False)
        retry = _all_deferred(name)
        if retry is not None:
            console.print(f"All of them wait to be retried; the next retry is at "
                          f"{local_time(retry)}.", highlight=False)
            raise SystemExit(1)
