"""The `mailer` command line. Thin: parse, call a service, print.

Exit codes: 0 ok, 1 error, 2 usage. Errors are one line on stderr (plus a hint), never a
traceback; set MAILER_DEBUG=1 to see one for an unexpected error.

Start-up: this module imports only click. The commands are registered by name in
COMMANDS and their module is imported when the command runs (or its --help is asked), so
`mailer --version` and `mailer --help` load neither SQLAlchemy nor the project loader
(tests/test_startup.py keeps it so; figures in docs/performance.md).

In the `mailer` process itself (main()), what a command's module imported is then frozen
(gc.freeze): modules, classes and functions live until the process ends, so neither the
collections during a long send nor the ones at exit walk them again (~0.2 s less at the
end of a campaign send). A program that imports `cli` keeps its collector as it is.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from collections.abc import Iterator, MutableMapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

import click

from mailer import __version__
from mailer.errors import MailerError

if TYPE_CHECKING:
    from mailer.project import Project

__all__ = ["COMMANDS", "cli", "main"]

# name -> ("module:attribute", the first sentence of its help, as `mailer --help` lists
# it). tests/test_startup.py checks each line against the command it names.
COMMANDS: dict[str, tuple[str, str]] = {
    "audit": ("mailer.cli.auditcmd:audit",
              "The audit trail: who did what and when (no personal data in it)."),
    "bounces": ("mailer.cli.bouncescmd:command",
                "What comes back: bounces, complaints, auto-replies and mail unsubscribes."),
    "campaign": ("mailer.cli.campaigncmd:command",
                 "Campaigns: create one, test it, send it, follow it."),
    "config": ("mailer.cli.configcmd:command", "The project's settings."),
    "db": ("mailer.cli.dbcmd:command",
           "The database: see where its schema stands, apply migrations, back it up and "
           "restore it (docs/backups.md)."),
    "dkim": ("mailer.cli.dkimcmd:command", "DKIM keys for signing outgoing mail."),
    "doctor": ("mailer.cli.doctorcmd:command",
               "Will the mail land? Checks DNS, keys, the relay and the templates against "
               "what Gmail, Yahoo and Microsoft demand of bulk senders, and says for each "
               "problem what they answer and the exact record to publish."),
    "gdpr": ("mailer.cli.gdprcmd:command",
             "A person's rights (AVG/GDPR): a copy of their data, and erasure "
             "(docs/privacy.md)."),
    "incidents": ("mailer.cli.auditcmd:incidents",
                  "The breach register: every personal-data breach, reported or not (art."),
    "init": ("mailer.cli.initcmd:command",
             "Create a new project: mailer.toml, a 0600 secrets file, lists/, templates/ "
             "and a migrated SQLite database."),
    "lists": ("mailer.cli.listscmd:command",
              "Mailing lists, defined as files in lists/<slug>.toml."),
    "preview": ("mailer.cli.templatescmd:preview",
                "Write the exact message one subscriber would get: the .eml as sent "
                "(signed when a DKIM key is configured), its HTML part and its text part."),
    "run": ("mailer.cli.runcmd:run",
            "The cron entry point: make the due occurrences of recurring campaigns, start "
            "scheduled campaigns that are due, send what is due (retries included), stop "
            "before the next minute."),
    "sequences": ("mailer.cli.sequencescmd:command",
                  "Drip sequences: the mails a list sends by itself, one after the other, "
                  "from the day someone confirms ([[sequence]] in lists/<slug>.toml; "
                  "docs/sequences.md)."),
    "serve": ("mailer.cli.servecmd:command",
              "Serve the pages subscribers reach from their mail, and the providers' "
              "webhooks."),
    "subscribers": ("mailer.cli.subscriberscmd:command",
                    "Subscribers: import, add, show, edit, list and remove."),
    "suppression": ("mailer.cli.suppressioncmd:command",
                    "The global suppression list: addresses no list may ever mail (stored "
                    "hashed)."),
    "templates": ("mailer.cli.templatescmd:command",
                  "Mail templates: check them before a campaign uses them."),
    "worker": ("mailer.cli.workercmd:worker",
               "Send what is due, beside other workers: the confirmation, welcome and "
               "export mails and sequence steps first, then every sending campaign, round "
               "after round, until nothing is left or --max-seconds is up."),
}


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


class LazyCommands(MutableMapping[str, click.Command]):
    """A group's commands: those added, plus those named in a table and imported on first
    use. Iterating gives the names without importing anything; `commands[name]` (and so
    click's get_command) imports that one command's module only."""

    def __init__(self, table: dict[str, tuple[str, str]]) -> None:
        self.table = table
        self.loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self.loaded:
            if name not in self.table:
                raise KeyError(name)
            module, _, attribute = self.table[name][0].partition(":")
            self.loaded[name] = getattr(importlib.import_module(module), attribute)
            if _FREEZE_IMPORTS:
                gc.freeze()
        return self.loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self.loaded[name] = command

    def __delitem__(self, name: str) -> None:
        self.table = {key: value for key, value in self.table.items() if key != name}
        self.loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self.table, *self.loaded]))

    def __len__(self) -> int:
        return len(set(self.table) | set(self.loaded))

    def short_help(self, name: str, limit: int) -> str | None:
        """The line `--help` lists for a command not imported yet (None once it is):
        click's own shortening, applied to the table's sentence."""
        if name in self.loaded or name not in self.table:
            return None
        return click.Command(name, help=self.table[name][1]).get_short_help_str(limit)


class MailerGroup(click.Group):
    """The root group: turns every error into a one-line message, and imports a command's
    module only when that command is used (COMMANDS)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: LazyCommands = LazyCommands(COMMANDS)  # type: ignore[assignment]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but from the table for the commands not imported yet."""
        rows = []
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(name) for name in names), default=0)
        for name in names:
            text = self.commands.short_help(name, limit)
            if text is None:
                command = self.get_command(ctx, name)
                if command is None or command.hidden:
                    continue
                text = command.get_short_help_str(limit)
            rows.append((name, text))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MailerError as exc:
            raise UserError(str(exc), exc.hint, exc.exit_code) from None
        except Exception as exc:
            error = _user_error(exc)
            if error is None or os.environ.get("MAILER_DEBUG"):
                raise
            raise error from None


def _user_error(exc: Exception) -> UserError | None:
    """A database or file error as one line, or None for anything else. SQLAlchemy is
    looked at only when a command has imported it (no command, no import)."""
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None and isinstance(exc, sa_exc.OperationalError):
        reason = str(exc.orig).splitlines()[0] if exc.orig else str(exc)
        hint = ("Another mailer process holds the database; try again."
                if "locked" in reason else None)
        return UserError(f"Database error: {reason}", hint)
    if sa_exc is not None and isinstance(exc, sa_exc.SQLAlchemyError):
        return UserError(f"Database error: {exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0]}")
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return UserError(f"{exc.strerror or exc}{where}")
    return None


class State:
    """Per-invocation state: the --config option and the lazily loaded project."""

    def __init__(self, config: str | None) -> None:
        self.config = config

    @cached_property
    def project(self) -> Project:
        from mailer.project import Project

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
    from mailer.dbtypes import current_actor
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


_FREEZE_IMPORTS = False  # main() sets it: only the `mailer` process freezes its imports


def main() -> None:
    global _FREEZE_IMPORTS
    _FREEZE_IMPORTS = True
    cli(prog_name="mailer")
