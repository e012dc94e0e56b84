"""`mailer config show`."""

from __future__ import annotations

from typing import Any

import click

from mailer.cli import State, pass_state
from mailer.cli.output import out, print_json
from mailer.config import SECRET_NAMES
from mailer.privacy.private import mask_password


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
    only whether each is set, and where from; so is a password written into a URL
    (database_url, transports, sources: postgresql://user:****@host/db).

    \b
    Example:
        MAILER_ORGANISATION__NAME="Andere vzw" mailer config show
    """
    settings = state.project.settings
    data = _masked(settings.model_dump(mode="json", by_alias=True))
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


def _masked(value: Any) -> Any:
    """Every string in the settings with a URL's password replaced by ****."""
    if isinstance(value, str):
        return mask_password(value)
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    return value
