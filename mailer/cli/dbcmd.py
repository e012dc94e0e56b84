"""`mailer db upgrade|status|backup|restore`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mailer.cli import State, pass_state
from mailer.cli.output import err, print_json, table
from mailer.db import schema_status, upgrade
from mailer.models import current_actor

_ACTOR = click.option("--actor", default=None, metavar="NAME",
                      help="Who does this, for the audit trail (default: the OS user).")


@click.group("db")
def command() -> None:
    """The database: see where its schema stands, apply migrations, back it up and
    restore it (docs/backups.md).

    \b
    Example:
        mailer db status
        mailer db backup backups/
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


@command.command("backup")
@click.argument("path", type=click.Path())
@click.option("--force", is_flag=True, help="Replace PATH if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_ACTOR
@pass_state
def backup_cmd(state: State, path: str, force: bool, as_json: bool,
               actor: str | None) -> None:
    """Back the database up to PATH (a file, or a folder to name one in), consistent even
    while a campaign is sending, readable by you alone (0600). The copy is verified before
    it gets its name: SQLite's integrity check and the rows of every table counted against
    the database at the moment of the backup. PostgreSQL: pg_dump's custom format (the
    password goes through PGPASSWORD), read back in full with pg_restore.

    \b
    Example:
        mailer db backup backups/mailer-2026-12-02.db
        mailer db backup backups/            # names it mailer-DATE-TIME.db
        mailer db backup nightly.db --force --json
    """
    from mailer.privacy.backup import backup_database

    report = backup_database(state.project.raw_engine, path, actor=current_actor(actor),
                             force=force)
    if as_json:
        print_json(report.as_dict())
        return
    console = err()
    console.print(f"[green]Backed up[/] to {report.file} ({_size(report.bytes)}, "
                  f"{'SQLite' if report.backend == 'sqlite' else 'pg_dump custom format'}, "
                  f"readable by you alone) in {report.seconds:.1f} s.", highlight=False)
    console.print(_verified(report.checks, "the database at the moment of the backup"),
                  highlight=False)
    _holds(report.tables, report.revision, report.head,
           behind="a database restored from it needs `mailer db upgrade`")


@command.command("restore")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "to", required=True, metavar="FOLDER_OR_URL",
              help="A new folder (SQLite: FOLDER/mailer.db is made) or the URL of an empty "
                   "PostgreSQL database.")
@click.option("--force", is_flag=True,
              help="Replace a database that exists (a file, or a database with tables).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_ACTOR
def restore_cmd(path: Path, to: str, force: bool, as_json: bool, actor: str | None) -> None:
    """Restore a backup made by `mailer db backup` into a new folder or an empty database,
    never over a live one unless --force. Checks the result (integrity, the rows against
    the backup) and says where its schema stands. Needs no project: restore first, then
    point a project at it (database_url, or MAILER_DATABASE_URL).

    \b
    Example:
        mailer db restore backups/mailer-2026-12-02.db --to ./restored
        mailer db restore backups/mailer.dump --to postgresql://mailer@db.example.be/restored
    """
    from mailer.privacy.backup import restore_database

    report = restore_database(path, to, actor=current_actor(actor), force=force)
    if as_json:
        print_json(report.as_dict())
        return
    console = err()
    where = report.file if report.file is not None else report.url
    console.print(f"[green]Restored[/] {path} into {where}"
                  f"{' (readable by you alone)' if report.file else ''} in "
                  f"{report.seconds:.1f} s.", highlight=False)
    console.print(_verified(report.checks, "the backup"), highlight=False)
    _holds(report.tables, report.revision, report.head,
           behind="run `mailer db upgrade` on it (MAILER_DATABASE_URL as below) before use")
    if report.in_flight:
        console.print(f"[yellow]Note:[/] {report.in_flight} deliveries were being sent when "
                      "the backup was made. When sending resumes they become 'unknown' and "
                      "are not sent again (`mailer campaign deliveries CAMPAIGN` lists them; "
                      "`campaign send --retry-unknown` would send them, perhaps twice).",
                      highlight=False)
    console.print(f"Use it: database_url = \"{report.url}\" in mailer.toml, or "
                  f"MAILER_DATABASE_URL={report.url}"
                  + (" (with the password for ****)" if "****" in report.url else ""),
                  highlight=False, markup=False)


def _holds(tables: dict[str, int], revision: str | None, head: str, *, behind: str) -> None:
    """What a backup or a restored database holds: rows per table and the schema."""
    rows: list[dict[str, Any]] = [{"table": name, "rows": f"{count:,}"}
                                  for name, count in tables.items()]
    table(rows, ["table", "rows"], title=f"{sum(tables.values()):,} rows in "
                                        f"{len(tables)} tables")
    if revision == head:
        err().print(f"Schema revision {revision}: up to date with this mailer.")
    else:
        err().print(f"Schema revision {revision or 'none'}; this mailer needs {head}: "
                    f"{behind}.", highlight=False)


_CHECKS = {"integrity_check": "integrity check ok",
           "pg_restore --list": "pg_restore reads the archive back"}


def _verified(checks: list[str], against: str) -> str:
    done = [_CHECKS[check] for check in checks if check in _CHECKS]
    return "Verified: " + "; ".join([*done, f"the rows of every table match {against}"]) + "."


def _size(n: int) -> str:
    size = float(n)
    for unit in ("KB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            return f"{size:,.1f} {unit}"
    return f"{n:,} bytes"
