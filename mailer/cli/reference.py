"""The CLI reference in docs/cli.md, generated from the commands' own --help.

    python -m mailer.cli.reference > docs/cli.md

tests/test_docs.py fails when docs/cli.md differs from what this prints, so the
reference cannot go stale.
"""

from __future__ import annotations

import click
from click.testing import CliRunner

from mailer.cli import cli


def _walk(group: click.Group, prefix: tuple[str, ...] = ()):  # noqa: ANN202
    for name in sorted(group.commands):
        command = group.commands[name]
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _walk(command, (*prefix, name))


def render() -> str:
    runner = CliRunner()
    parts = ["# Command reference", "",
             "Generated from `--help` by `python -m mailer.cli.reference > docs/cli.md`.", ""]
    for path in [(), *_walk(cli)]:
        title = " ".join(("mailer", *path))
        result = runner.invoke(cli, [*path, "--help"], terminal_width=100, prog_name="mailer",
                               env={"COLUMNS": "100"})
        parts += [f"## {title}", "", "```", result.output.rstrip(), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
