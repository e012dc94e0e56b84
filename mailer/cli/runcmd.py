"""`mailer run`: the cron entry point.

Small on purpose (issue 17, point 5): cron starts it every minute, and most minutes
nothing is due. It first asks whether anything is: from the run cache a full run left
(mailer/runcache.py: the database file and due.py's queries, on the driver, without
pydantic or SQLAlchemy), else with the settings loaded (delivery/due.py: a few queries,
under the run lock, without the models); only when something is does it import the
sending side (delivery/runner.py) and the campaign commands' output helpers.
"""

from __future__ import annotations

from typing import Any

import click

from mailer.cli import State, pass_state

__all__ = ["run"]


@click.command("run")
@click.option("--max-seconds", type=float, default=55.0, show_default=True,
              help="Stop starting new messages after this long, before the next cron tick.")
@click.option("--retry-unknown", is_flag=True,
              help="Resend deliveries that were in flight when a sender died.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing when there was nothing to do.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def run(state: State, max_seconds: float, retry_unknown: bool, quiet: bool,
        as_json: bool) -> None:
    """The cron entry point: make the due occurrences of recurring campaigns, start
    scheduled campaigns that are due, send what is due (retries included), stop before
    the next minute. Exits 0 when there is nothing to
    do, and when another `mailer run` is still busy (SQLite; on PostgreSQL it sends
    beside the others, on any machine: docs/scale-out.md); 1 when a scheduled campaign
    that is due cannot start (it says why, and stays scheduled); 130 when SIGTERM
    (systemd) or Ctrl-C stopped it, at any point, after the work in progress (the
    messages in flight, the returns read so far), like `campaign send`.

    \b
    Example:
        * * * * *  cd /srv/nieuws && mailer run --quiet
    """
    from mailer.delivery.lock import LockBusy
    from mailer.delivery.stopping import Interrupt, stop_signals

    # SIGINT and SIGTERM are ours from the start: until the run begins its work, one
    # stops it at once (nothing is under way); then run_due lets that work finish first.
    signals = Interrupt("mailer run", at_once="Interrupted ({name}): nothing done; "
                                              "`mailer run` continues.")
    click.get_current_context().with_resource(stop_signals(signals))

    try:
        if not retry_unknown:
            from mailer.runcache import idle

            summary = idle(state.config)
            if summary is not None:
                _nothing(summary, quiet, as_json)
                return
        project = state.project
        if not retry_unknown and _idle(project, state.config):
            from mailer.delivery.due import IDLE_SUMMARY

            _nothing(IDLE_SUMMARY, quiet, as_json)
            return
        from mailer.delivery.runner import run_due

        result = run_due(project, max_seconds=max_seconds, retry_unknown=retry_unknown,
                         signals=signals)
    except LockBusy as exc:
        if not quiet:
            from mailer.cli.output import err

            err().print(str(exc), highlight=False)
        return
    _report(project, result, quiet, as_json)


def _idle(project: Any, config: str | None) -> bool:
    """Nothing due (delivery/due.py), checked under the send lock like a run itself, so
    a run that is busy on SQLite is reported as one (LockBusy; on PostgreSQL senders
    share the work). Leaves the run cache for the next."""
    from mailer.dbtypes import utcnow
    from mailer.delivery.due import nothing_due
    from mailer.delivery.lock import send_lock
    from mailer.runcache import remember

    remember(config, project.settings, project.engine.dialect)
    with send_lock(project.engine):
        return nothing_due(project.engine, now=utcnow(),
                           feedback_sources=bool(project.settings.feedback.sources))


def _nothing(summary: dict[str, Any], quiet: bool, as_json: bool) -> None:
    """What a run that found nothing to do prints: what run_due's empty result gives."""
    if as_json:
        from mailer.cli.output import print_json

        print_json(summary)
    elif not quiet:
        click.echo("Nothing to do.", err=True)


def _report(project: Any, result: Any, quiet: bool, as_json: bool,
            command: str = "mailer run") -> None:
    """What run_due did: JSON, or a line per thing done; the exit code says how it ended.
    `command`: the one that continues after a signal (`mailer worker` shares this)."""
    from mailer.cli.campaigncmd import _interrupted, _line, _watch
    from mailer.cli.output import err, print_json

    _watch(project, result.finished)
    if as_json:
        print_json(vars(result))
        if result.interrupted:
            raise SystemExit(130)
        if result.not_started:
            raise SystemExit(1)
        return
    if result.interrupted:
        n = result.notices  # every kind of mail: campaigns', notices and steps
        _interrupted(result.interrupted,
                     sum(c["sent"] for c in result.campaigns.values()) + n.get("sent", 0),
                     result.waiting,
                     sum(c["unknown"] for c in result.campaigns.values()) + n.get("unknown", 0),
                     command)
    lines: list[str] = []
    if any(result.notices.values()):
        n = result.notices
        lines.append(f"Confirmation, welcome and export mails: {n['sent']} sent, "
                     f"{n['deferred']} deferred, {n['failed']} failed, {n['skipped']} skipped"
                     + (f", {n['unknown']} unknown" if n.get("unknown") else "") + ".")
    lines += result.recurring
    lines += [f"{slug}: started (it was scheduled)" for slug in result.started]
    lines += [f"{slug}: not started: {why}" for slug, why in result.not_started.items()]
    for slug, figures in result.campaigns.items():
        if any(figures[k] for k in ("sent", "deferred", "failed", "bounced", "skipped")):
            lines.append(f"{slug}: {_line(figures)}"
                         + (" — finished" if slug in result.finished else ""))
        elif slug in result.finished:
            lines.append(f"{slug}: finished")
    if result.returns.get("read"):
        r = result.returns
        lines.append(f"Returns: {r['read']} read" + "".join(
            f", {n} {kind}" for kind, n in sorted(r["kinds"].items())))
    if any(result.purged.values()):
        lines.append("Retention: " + ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in
                                                result.purged.items() if n) + " removed.")
    if result.returns_error:
        lines.append(f"Returns not read: {result.returns_error}")
    if result.stopped:
        lines.append(f"Stopped: {result.stopped}.")
    if not lines and quiet:
        return
    console = err()
    for line in lines or ["Nothing to do."]:
        console.print(line, highlight=False, markup=False)
    if result.not_started:  # a scheduled campaign that cannot start: cron must notice
        raise SystemExit(1)
