"""CLI conventions: help with an example everywhere, exit codes, no tracebacks."""

from __future__ import annotations

import re
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from mailer.cli import cli


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()):  # noqa: ANN201
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


COMMANDS = list(all_commands(cli))


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help_with_an_example(path, command):
    assert command.help and re.search(r"Examples?:", command.help)
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    examples = re.split(r"Examples?:", result.output, maxsplit=1)[1]
    assert "mailer " + path[0] in examples or path == ("init",)


@pytest.mark.parametrize("path, command", [(p, c) for p, c in COMMANDS
                                           if p[-1] in ("ls", "show") and p[0] != "config"
                                           or p == ("config", "show")])
def test_every_listing_has_json(path, command):
    assert any("--json" in param.opts for param in command.params)


def test_usage_error_exits_2():
    result = CliRunner().invoke(cli, ["subscribers", "import"])
    assert result.exit_code == 2


def test_no_project_gives_one_line_and_exit_1(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAILER_CONFIG", raising=False)
    result = CliRunner().invoke(cli, ["lists", "ls"], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: No mailer.toml in this folder.")
    assert "mailer init" in result.stderr


def test_python_dash_m_runs_the_cli(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mailer", "--help"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 0
    assert "subscribers" in proc.stdout


def test_console_script_is_installed(tmp_path):
    script = subprocess.run([sys.executable, "-c", "import shutil,sys; print(shutil.which("
                             "'mailer', path=__import__('os').path.dirname(sys.executable)))"],
                            capture_output=True, text=True)
    exe = script.stdout.strip()
    assert exe != "None"
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "mailer" in proc.stdout
