"""Start-up (issue 17, point 5): `mailer --help` and `--version` import no command and none
of the heavy libraries; every command is still listed and reachable. The time itself is
measured in bench/startup_bench.py (docs/performance.md), never asserted here."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mailer.cli import COMMANDS, LazyCommands, cli

# What a command may pull in, and `--help`/`--version` must not.
HEAVY = ("sqlalchemy", "sqlmodel", "alembic", "jinja2", "premailer", "aiosmtplib", "lxml",
         "rich", "pydantic", "mailer.project", "mailer.db", "mailer.models", "mailer.config")

PROBE = """
import atexit, json, sys
def loaded():
    names = [m for m in sys.modules if m in {heavy!r} or m.split(".")[0] in {heavy!r}
             or m.startswith("mailer.cli.")]
    print("LOADED " + json.dumps(sorted(names)), file=sys.stderr)
atexit.register(loaded)
sys.argv = ["mailer", *{args!r}]
from mailer.cli import cli, main
if {load_all!r}:
    for name in cli.commands:
        cli.commands[name]
main()
"""


def run_mailer(args: list[str], cwd: Path, load_all: bool = False) -> tuple[str, list[str]]:
    """`mailer ARGS` in a fresh interpreter: its output, and the watched modules it loaded."""
    env = {k: v for k, v in os.environ.items() if k != "MAILER_CONFIG"} | {"COLUMNS": "80"}
    code = PROBE.format(heavy=HEAVY, args=args, load_all=load_all)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = [x for x in proc.stderr.splitlines() if x.startswith("LOADED ")][-1]
    return proc.stdout, json.loads(line.removeprefix("LOADED "))


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["-h"]])
def test_help_and_version_import_nothing_heavy(args, tmp_path):
    output, loaded = run_mailer(args, tmp_path)
    assert output
    assert loaded == []


def test_a_command_imports_its_own_module_only(tmp_path):
    """The probe sees imports: `mailer dkim --help` loads the dkim module, not the others."""
    _, loaded = run_mailer(["dkim", "--help"], tmp_path)
    commands = [m for m in loaded if m.startswith("mailer.cli.") and m.endswith("cmd")]
    assert commands == ["mailer.cli.dkimcmd"]


def test_help_lists_what_the_commands_themselves_say(tmp_path):
    """The table's lines give the same `mailer --help` as the imported commands."""
    lazy, _ = run_mailer(["--help"], tmp_path)
    loaded, _ = run_mailer(["--help"], tmp_path, load_all=True)
    assert lazy == loaded
    for name in COMMANDS:
        assert f"\n  {name} " in lazy


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_is_reachable_and_its_table_line_is_true(name):
    command = cli.commands[name]
    assert isinstance(command, click.Command)
    assert command.name == name
    table = LazyCommands(COMMANDS)
    for limit in (20, 45, 63, 83, 200):
        assert table.short_help(name, limit) == command.get_short_help_str(limit)
    result = CliRunner().invoke(cli, [name, "--help"], prog_name="mailer")
    assert result.exit_code == 0, result.output
    assert f"Usage: mailer {name}" in result.output


def test_an_unknown_command_is_one_line_with_a_suggestion():
    result = CliRunner().invoke(cli, ["campaing"], prog_name="mailer")
    assert result.exit_code == 2
    assert "No such command 'campaing'. Did you mean 'campaign'?" in result.output


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MAILER_CONFIG"}
    return subprocess.run([sys.executable, "-m", "mailer", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def test_database_errors_are_still_one_line_without_sqlalchemy_imported_up_front(tmp_path):
    """The root recognises SQLAlchemy's errors through the modules a command loaded: an
    OperationalError as its reason alone, another SQLAlchemyError with its class."""
    from mailer.scaffold import create_project

    config = create_project(tmp_path / "news")
    (tmp_path / "news" / "mailer.db").write_bytes(b"not a database " * 1000)
    proc = run_cli(["--config", str(config), "lists", "ls"], tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: Database error: DatabaseError: ")
    assert "file is not a database" in proc.stderr and "Traceback" not in proc.stderr

    create_project(tmp_path / "other")  # a migrated database, then one table dropped
    (tmp_path / "news" / "mailer.db").write_bytes((tmp_path / "other" / "mailer.db").read_bytes())
    with closing(sqlite3.connect(tmp_path / "news" / "mailer.db")) as database:
        database.execute("DROP TABLE mailing_list")
        database.commit()
    proc = run_cli(["--config", str(config), "lists", "ls"], tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == "Error: Database error: no such table: mailing_list\n"


def test_an_idle_run_imports_neither_the_sending_side_nor_alembic(tmp_path):
    """`mailer run` with nothing due (cron, most minutes) answers from a few queries
    (delivery/due.py): no templates, SMTP, HTML inlining, Alembic or rich; its --json is
    the empty RunSummary that run_due would give."""
    from dataclasses import fields

    from mailer.delivery.due import IDLE_SUMMARY
    from mailer.delivery.runner import RunSummary
    from mailer.scaffold import create_project

    config = str(create_project(tmp_path / "news"))
    first, loaded = run_mailer(["--config", config, "run", "--json"], tmp_path)
    assert "aiosmtplib" in loaded  # the first run is not idle: the daily purge is due
    assert json.loads(first)["purged"] != {}
    output, loaded = run_mailer(["--config", config, "run", "--json"], tmp_path)
    assert json.loads(output) == IDLE_SUMMARY
    assert list(IDLE_SUMMARY) == [f.name for f in fields(RunSummary)]
    assert not {"jinja2", "aiosmtplib", "premailer", "lxml", "alembic", "rich", "sqlmodel",
                "mailer.models"} & set(loaded)
    assert "mailer.cli.campaigncmd" not in loaded
    lines, _ = run_mailer(["--config", config, "run"], tmp_path)
    assert lines == ""  # "Nothing to do." goes to stderr, as a run with work does


def test_the_schema_check_finds_the_head_without_alembic_as_alembic_does():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from mailer.db import MIGRATIONS, _shipped_head

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert _shipped_head() == ScriptDirectory.from_config(config).get_current_head()
