"""`mailer lists sync|ls`."""

from __future__ import annotations

import click

from mailer.audience.lists import list_counts, load_definitions, sync_lists
from mailer.cli import State, pass_state
from mailer.cli.output import err, print_json, table
from mailer.db import session_scope


@click.group("lists")
def command() -> None:
    """Mailing lists, defined as files in lists/<slug>.toml.

    \b
    Example:
        mailer lists sync && mailer lists ls
    """


@command.command("sync")
@click.option("--dry-run", is_flag=True,
              help="Say what would change (lists and sequences: who gets what, when), "
                   "change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def sync(state: State, dry_run: bool, as_json: bool) -> None:
    """Create or update the lists in the database from lists/*.toml, and their drip
    sequences ([[sequence]], docs/sequences.md): first it says what each change to a
    sequence will do (who gets which step, when), then it does it. Safe to repeat; a
    list whose file is gone is kept (and reported), never deleted.

    \b
    Example:
        mailer lists sync --dry-run
        mailer lists sync
    """
    from mailer.automation.sequences import sync_sequences
    from mailer.models import utcnow

    project = state.project
    definitions = load_definitions(project.settings.lists_path)
    with session_scope(project.engine) as session:
        result = sync_lists(session, definitions)
        changes = sync_sequences(project, session, definitions, utcnow())
        if dry_run:
            session.rollback()
    if as_json:
        print_json({**vars(result), "sequences": [vars(c) for c in changes],
                    "dry_run": dry_run})
        return
    console = err()
    for label, slugs in (("created", result.created), ("updated", result.updated),
                         ("unchanged", result.unchanged)):
        if slugs:
            console.print(f"{label}: {', '.join(slugs)}")
    if result.missing:
        console.print(f"[yellow]in the database but not in lists/:[/] "
                      f"{', '.join(result.missing)} (kept)")
    for change in changes:
        console.print(f"sequence {change.sequence} ({change.list}):", highlight=False)
        for line in change.lines:
            console.print(f"  {line}", highlight=False, markup=False)
    if not definitions:
        console.print("No list files in lists/.")
    if dry_run:
        console.print("Dry run: nothing was changed.")


@command.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def ls(state: State, as_json: bool) -> None:
    """Show every list with its members per status.

    \b
    Example:
        mailer lists ls --json
    """
    with session_scope(state.project.engine) as session:
        rows = list_counts(session)
    if as_json:
        print_json(rows)
    else:
        table(rows, ["slug", "name", "language", "optin", "pending", "confirmed",
                     "unsubscribed", "from"], title="Lists",
              empty="No lists yet: add lists/<slug>.toml and run `mailer lists sync`.")
