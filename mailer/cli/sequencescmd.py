"""`mailer sequences ls|show|preview`."""

from __future__ import annotations

import click

from mailer.cli import State, pass_state
from mailer.cli.output import err, out, print_json, table
from mailer.db import session_scope


@click.group("sequences")
def command() -> None:
    """Drip sequences: the mails a list sends by itself, one after the other, from the
    day someone confirms ([[sequence]] in lists/<slug>.toml; docs/sequences.md).

    \b
    Example:
        mailer lists sync --dry-run     # what a change to a sequence will do
        mailer sequences show welkom
    """


@command.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def ls(state: State, as_json: bool) -> None:
    """Every sequence: its list, steps, how many people are in it, done or stopped, and
    when the next step is due.

    \b
    Example:
        mailer sequences ls
    """
    from mailer.automation.sequences import listing

    with session_scope(state.project.engine) as session:
        rows = listing(session)
    if as_json:
        print_json(rows)
        return
    table(rows, ["sequence", "list", "state", "steps", "active", "done", "stopped",
                 "next_due"], title="Sequences",
          empty="No sequences yet: add [[sequence]] to lists/<slug>.toml and run `mailer "
                "lists sync` (docs/sequences.md).")


@command.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def show(state: State, name: str, as_json: bool) -> None:
    """A sequence's steps in order, who is waiting for which step and when the next is
    due, and what each step's mails did (sent, queued, skipped...).

    \b
    Example:
        mailer sequences show welkom --json
    """
    from mailer.automation.sequences import get_sequence, sequence_figures

    with session_scope(state.project.engine) as session:
        figures = sequence_figures(session, get_sequence(session, name))
    if as_json:
        print_json(figures)
        return
    people = figures["people"]
    err().print(f"{figures['sequence']} on {figures['list']} ({figures['state']}, windows "
                f"in {figures['timezone']} unless a subscriber has a timezone attribute): "
                f"{people['active']:,} in it, {people['done']:,} done, "
                f"{people['stopped']:,} stopped", highlight=False)
    rows = [{**s, "step": s["step"] or "removed",
             "sent": s["deliveries"].get("sent", 0),
             "other": ", ".join(f"{k} {v:,}" for k, v in sorted(s["deliveries"].items())
                                if k != "sent")} for s in figures["steps"]]
    table(rows, ["step", "key", "after", "window", "weekdays", "subject", "waiting",
                 "next_due", "sent", "other"], title=None)


@command.command("preview")
@click.argument("name")
@click.option("--step", "number", type=click.IntRange(min=1), required=True,
              help="The step, counted from 1 in the order of the file.")
@click.option("--subscriber", "email", metavar="EMAIL", required=True,
              help="The subscriber to render for.")
@click.option("--html", "as_html", is_flag=True, help="Print the HTML part, not the text.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def preview(state: State, name: str, number: int, email: str, as_html: bool,
            as_json: bool) -> None:
    """Print the mail one subscriber would get at a step, as it would be sent now (its
    frozen template and subject). Nothing is sent.

    \b
    Example:
        mailer sequences preview welkom --step 2 --subscriber an@example.be
    """
    from mailer.automation.sequences import render_step

    rendered = render_step(state.project, name, number, email)
    if as_json:
        print_json(rendered)
        return
    err().print(f"To {rendered['to']}: “{rendered['subject']}” (step {number}, "
                f"{rendered['key']})", highlight=False)
    out().print(rendered["html" if as_html else "text"], highlight=False, markup=False)
