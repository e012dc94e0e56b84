"""The `mailer` command line. Thin: parse, call a service, print.

Exit codes: 0 ok, 1 error, 2 usage. Errors are one line on stderr (plus a hint), never a
traceback; set MAILER_DEBUG=1 to see one for an unexpected error.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any

import click
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from mailer import __version__
from mailer.errors import MailerError
from mailer.project import Project

__all__ = ["cli", "main"]


class UserError(click.ClickException):
    """A MailerError on its way to the terminal: message, optional hint, exit code."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message)
        self.hint = hint
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.secho(f"Error: {self.message}", err=True, fg="red")
        if self.hint:
            click.echo(f"  {self.hint}", err=True)


class MailerGroup(click.Group):
    """The root group: turns every error into a one-line message."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MailerError as exc:
            raise UserError(str(exc), exc.hint, exc.exit_code) from None
        except OperationalError as exc:
            if os.environ.get("MAILER_DEBUG"):
                raise
            reason = str(exc.orig).splitlines()[0] if exc.orig else str(exc)
            hint = ("Another mailer process holds the database; try again."
                    if "locked" in reason else None)
            raise UserError(f"Database error: {reason}", hint) from None
        except SQLAlchemyError as exc:
            if os.environ.get("MAILER_DEBUG"):
                raise
            raise UserError(f"Database error: {exc.__class__.__name__}: "
                            f"{str(exc).splitlines()[0]}") from None
        except OSError as exc:
            if os.environ.get("MAILER_DEBUG"):
                raise
            where = f": {exc.filename}" if exc.filename else ""
            raise UserError(f"{exc.strerror or exc}{where}") from None


class State:
    """Per-invocation state: the --config option and the lazily loaded project."""

    def __init__(self, config: str | None) -> None:
        self.config = config

    @cached_property
    def project(self) -> Project:
        project = Project.load(self.config)
        ctx = click.get_current_context()
        ctx.call_on_close(project.close)
        ctx.call_on_close(lambda: _record_config(project, ctx.command_path))  # runs first
        return project


def _record_config(project: Project, command: str) -> None:
    """A command that used the database records a changed mailer.toml, secret or key
    file in the audit trail (privacy/audit.py); the trail never fails the command."""
    if "engine" not in project.__dict__:
        return
    from mailer.models import current_actor
    from mailer.privacy.audit import record_config_change

    try:
        record_config_change(project.engine, project.settings, actor=current_actor(),
                             command=command)
    except Exception as exc:  # noqa: BLE001 - said, and tried again by the next command
        click.echo(f"Warning: the configuration change could not be recorded in the "
                   f"audit trail: {str(exc).splitlines()[0]}", err=True)


pass_state = click.make_pass_decorator(State)


@click.group(cls=MailerGroup, context_settings={"help_option_names": ["-h", "--help"],
                                                 "max_content_width": 100})
@click.option("--config", "config", envvar="MAILER_CONFIG", metavar="PATH",
              help="The project's mailer.toml (default: ./mailer.toml, or $MAILER_CONFIG).")
@click.version_option(__version__, prog_name="mailer")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """mailer: consent-first newsletters from the command line and cron.

    \b
    Example:
        mailer init my-news && cd my-news
        mailer lists sync
        mailer subscribers import people.csv --list nieuwsbrief --consent "webform 2026-03"
    """
    ctx.obj = State(config)


def main() -> None:
    cli(prog_name="mailer")


def _register() -> None:
    from mailer.cli import (
        auditcmd,
        bouncescmd,
        campaigncmd,
        configcmd,
        dbcmd,
        dkimcmd,
        doctorcmd,
        gdprcmd,
        initcmd,
        listscmd,
        servecmd,
        subscriberscmd,
        suppressioncmd,
        templatescmd,
    )

    for module in (initcmd, dbcmd, configcmd, listscmd, subscriberscmd, suppressioncmd,
                   templatescmd, campaigncmd, bouncescmd, gdprcmd, dkimcmd, servecmd):
        cli.add_command(module.command)
    cli.add_command(auditcmd.audit)
    cli.add_command(auditcmd.incidents)
    cli.add_command(templatescmd.preview)
    cli.add_command(campaigncmd.run)
    cli.add_command(doctorcmd.command)


_register()
