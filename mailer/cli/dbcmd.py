"""`mailer db upgrade|status`."""

from __future__ import annotations

import click

from mailer.cli import State, pass_state
from mailer.cli.output import err, print_json
from mailer.db import schema_status, upgrade


@click.group("db")
def command() -> None:
    """The database schema: see where it stands, apply migrations.

    \b
    Example:
        mailer db status
    """


@command.command("upgrade")
@pass_state
def upgrade_cmd(state: State) -> None:
    """Apply the migrations the database does not have yet (back up first).

    \b
    Example:
        mailer db upgrade
    """
    engine = state.project.raw_engine
    before = schema_status(engine)
    if before.up_to_date:
        err().print(f"The database is up to date (revision {before.head}).")
        return
    upgrade(engine)
    err().print(f"[green]Upgraded[/] the database: applied {', '.join(before.pending)}.")


@command.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def status_cmd(state: State, as_json: bool) -> None:
    """Show the database's revision and the migrations still to apply.

    \b
    Example:
        mailer db status --json
    """
    status = schema_status(state.project.raw_engine)
    data = {"current": status.current, "head": status.head, "pending": status.pending,
            "up_to_date": status.up_to_date}
    if as_json:
        print_json(data)
    elif status.up_to_date:
        err().print(f"Up to date (revision {status.head}).")
    else:
        err().print(f"Behind: at {status.current or 'no tables'}, the code needs "
                    f"{status.head}. Run `mailer db upgrade`.")
    if not status.up_to_date:
        raise SystemExit(1)
