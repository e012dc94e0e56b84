"""`mailer config show`."""

from __future__ import annotations

import click

from mailer.cli import State, pass_state
from mailer.cli.output import out, print_json
from mailer.config import SECRET_NAMES


@click.group("config")
def command() -> None:
    """The project's settings.

    \b
    Example:
        mailer config show
    """


@command.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def show(state: State, as_json: bool) -> None:
    """Show the settings in force (file plus MAILER_* overrides). Secrets are masked:
    only whether each is set, and where from.

    \b
    Example:
        MAILER_ORGANISATION__NAME="Andere vzw" mailer config show
    """
    settings = state.project.settings
    data = settings.model_dump(mode="json", by_alias=True)
    data["config_file"] = str(settings.config_path)
    data["secrets"] = {
        name: ("********" + f" (from {settings.secrets.sources[name]})"
               if name in settings.secrets.sources else "not set")
        for name in SECRET_NAMES
    }
    if as_json:
        print_json(data)
        return
    console = out()
    for key, value in data.items():
        if isinstance(value, dict):
            console.print(f"[bold]\\[{key}][/]")
            for sub, sub_value in value.items():
                console.print(f"  {sub} = {sub_value!r}", highlight=False)
        else:
            console.print(f"{key} = {value!r}", highlight=False)
