"""`mailer init`."""

from __future__ import annotations

from pathlib import Path

import click

from mailer.cli.output import err
from mailer.scaffold import create_project


@click.command("init")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", help="Project name (default: the folder's name).")
def command(folder: Path, name: str | None) -> None:
    """Create a new project: mailer.toml, a 0600 secrets file, lists/, templates/ and a
    migrated SQLite database. The new project mails nobody real.

    \b
    Example:
        mailer init my-news && cd my-news
    """
    config = create_project(folder, name=name)
    console = err()
    console.print(f"[green]Created[/] {config.parent}")
    console.print("Next:\n"
                  f"  cd {folder}\n"
                  "  mailer lists sync\n"
                  "  mailer subscribers import lists/nieuwsbrief.example.csv "
                  "--list nieuwsbrief --consent \"example data\"")
