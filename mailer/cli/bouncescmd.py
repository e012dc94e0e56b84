"""`mailer bounces process|ls|explain`: what comes back."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from mailer.cli import State, pass_state
from mailer.cli.output import day, err, print_json, stream_json, table
from mailer.errors import MailerError

# The exit code a mail server understands as "try again later" (EX_TEMPFAIL).
EX_TEMPFAIL = 75


@click.group("bounces")
def command() -> None:
    """What comes back: bounces, complaints, auto-replies and mail unsubscribes.

    \b
    Example:
        mailer bounces process
        mailer bounces ls --campaign dec-2026 --kind hard
        mailer bounces explain returned.eml
    """


@command.command("process")
@click.option("--source", "sources", multiple=True, metavar="URL",
              help="A return mailbox instead of [feedback] sources: maildir:PATH, mbox:PATH, "
                   "imaps://user@host/INBOX, pop3s://user@host, or - for one message on "
                   "standard input (an MTA pipe: exit 0 taken, 75 try again later).")
@click.option("--keep", is_flag=True, help="Leave processed messages where they are.")
@click.option("--dry-run", is_flag=True,
              help="Read and classify, change nothing (implies --keep).")
@click.option("--max-seconds", type=float, default=None,
              help="Stop after this many seconds (the rest is read next time).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", is_flag=True, help="Print nothing unless something is wrong.")
@pass_state
def process(state: State, sources: tuple[str, ...], keep: bool, dry_run: bool,
            max_seconds: float | None, as_json: bool, quiet: bool) -> None:
    """Read the return mailbox(es) and act on what came back: hard bounces and complaints
    suppress, soft bounces count, mail unsubscribes unsubscribe (docs/feedback.md).

    \b
    Example:
        mailer bounces process
        mailer bounces process --source maildir:/var/mail/bounces --keep
        mailer bounces process --source mbox:returns.mbox --dry-run
    \b
    As a Postfix pipe (master.cf), one message per call:
        mailer-returns unix - n n - - pipe
          flags=Rq user=mailer argv=/usr/local/bin/mailer --config /srv/news/mailer.toml
          bounces process --source - --quiet
    """
    stdin = sources == ("-",)
    try:
        report = _process(state, list(sources), keep=keep, dry_run=dry_run,
                          max_seconds=max_seconds)
    except MailerError as exc:
        if stdin:  # the MTA keeps the message and offers it again later
            click.echo(f"Error: {exc}", err=True)
            raise SystemExit(EX_TEMPFAIL) from None
        raise
    except Exception as exc:
        if stdin:
            click.echo(f"Error: {exc.__class__.__name__}: {exc}", err=True)
            raise SystemExit(EX_TEMPFAIL) from None
        raise
    if as_json:
        print_json(report.as_dict())
    elif not quiet or report.problems:
        _print_summary(report, dry_run=dry_run)


def _process(state: State, sources: list[str], *, keep: bool, dry_run: bool,
             max_seconds: float | None) -> Any:
    from mailer.feedback.runner import intake

    return intake(state.project, sources or None, keep=keep, dry_run=dry_run,
                  max_seconds=max_seconds)


def _print_summary(report: Any, *, dry_run: bool) -> None:
    console = err()
    if not report.read and not report.aside:
        console.print("No messages waiting.")
    else:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(report.kinds.items()))
        line = f"Read {report.read} message{'s' * (report.read != 1)}"
        if kinds:
            line += f": {kinds}"
        if report.duplicates:
            line += f"; {report.duplicates} already processed"
        console.print(line + ".", highlight=False)
        if report.actions:
            what = ", ".join(f"{kind} {n}" for kind, n in sorted(report.actions.items()))
            console.print(f"{'Would do' if dry_run else 'Done'}: {what}.", highlight=False)
    for problem in report.problems:
        console.print(f"Moved aside: {problem}", highlight=False)
    if report.out_of_time:
        console.print("Out of time: the rest is read next time.")


@command.command("ls")
@click.option("--campaign", "campaign", metavar="SLUG", help="Only this campaign's.")
@click.option("--kind", type=click.Choice(["hard", "soft", "sender", "delayed", "complaint",
                                           "auto-reply", "unsubscribe", "other"]),
              help="hard and soft bounces, sender-side rejections, or another kind.")
@click.option("--since", metavar="DATE", help="Only from this date on (YYYY-MM-DD).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def ls(state: State, campaign: str | None, kind: str | None, since: str | None,
       limit: int | None, as_json: bool) -> None:
    """List what came back, newest first, with the reason and what was done.

    \b
    Example:
        mailer bounces ls --campaign dec-2026 --kind hard
        mailer bounces ls --since 2026-12-01 --json
    """
    from mailer.feedback.queries import list_events

    rows = list_events(state.project.engine, campaign=campaign, kind=kind,
                       since=day(since), limit=limit)
    if as_json:
        stream_json(rows)
        return
    table(rows, ["at", "kind", "reason", "hard", "email", "domain", "campaign", "status",
                 "action"], title="What came back", empty="Nothing came back (yet).")


@command.command("explain")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def explain(ctx: click.Context, file: str, as_json: bool) -> None:
    """Show what the engine reads in one returned message, and why: the kind, each
    recipient's status and reason, whom it is about and what the policy would do. Works
    without a project too (then nothing is attributed). Changes nothing.

    \b
    Example:
        mailer bounces explain returned.eml
        mailer bounces explain returned.eml --json
    """
    from mailer.feedback.processing import explain as explain_report
    from mailer.feedback.reports import Unreadable, read_report

    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        raise MailerError(f"Cannot read {file}: {exc.strerror or exc}") from None
    try:
        report = read_report(data)
    except Unreadable as exc:
        raise MailerError(f"{file} is not a mail message: {exc}.") from None
    attribution = _attribute(ctx.find_object(State), report)
    result = explain_report(report, attribution)
    if as_json:
        print_json(result)
        return
    _print_explanation(result)


def _attribute(state: State | None, report: Any) -> Any:
    """Attribution with the project's database, when there is a project here."""
    from mailer.config import find_config

    if state is None or (state.config is None and find_config(None) is None):
        return None
    from mailer.feedback.processing import attribute

    project = state.project
    with project.engine.connect() as conn:
        return attribute(conn, project.signer, report)


def _print_explanation(result: dict[str, Any]) -> None:
    console = err()
    console.print(f"Kind: {result['kind']}", highlight=False)
    if result["subject"]:
        console.print(f"Subject: {result['subject']}", highlight=False)
    for r in result["recipients"]:
        verdict = "hard" if r["hard"] else "soft"
        if r["sender_side"]:
            verdict += ", about our sending (not the address)"
        console.print(f"- {r['address'] or '(address not given)'}: {r['reason']} ({verdict}); "
                      f"action {r['action'] or '-'}, status {r['status'] or '-'}, "
                      f"reply {r['reply_code'] or '-'}", highlight=False)
        if r["diagnostic"]:
            console.print(f"  {r['diagnostic']}", highlight=False)
    attributed = result["attributed"]
    if attributed:
        console.print(f"About: subscriber {attributed['subscriber']}, campaign "
                      f"{attributed['campaign'] or '-'} (found by {attributed['by']})",
                      highlight=False)
    else:
        console.print("About: nobody known (not attributed)")
    console.print(f"Policy: {result['action']}", highlight=False)
