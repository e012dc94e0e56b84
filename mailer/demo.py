"""`make demo`: the main job on the embedded defaults, narrated.

Creates a fresh project in ./demo (SQLite), syncs the example list, imports the example
subscribers (a Dutch Excel export with a duplicate and a broken address) and shows the
result. Nothing is sent to anyone.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from rich.console import Console

from mailer.cli import cli

FOLDER = Path("demo")


def _step(console: Console, title: str, *args: str) -> None:
    console.rule(f"[bold]{title}")
    console.print(f"[dim]$ mailer {' '.join(args)}[/]", highlight=False)
    try:
        cli.main(list(args), prog_name="mailer", standalone_mode=False)
    except SystemExit as exc:  # `check`-style commands exit non-zero on purpose
        if exc.code not in (0, None):
            raise


def main() -> None:
    console = Console(stderr=True)
    if FOLDER.exists():
        shutil.rmtree(FOLDER)
    for name in [n for n in os.environ if n.startswith("MAILER_")]:
        del os.environ[name]  # the demo runs on the embedded defaults only
    _step(console, "1. A new project", "init", str(FOLDER))
    os.chdir(FOLDER)
    _step(console, "2. Lists from lists/*.toml", "lists", "sync")
    _step(console, "3. Import consented subscribers", "subscribers", "import",
          "lists/nieuwsbrief.example.csv", "--list", "nieuwsbrief",
          "--consent", "demo: example data, not real people")
    _step(console, "4. The lists", "lists", "ls")
    _step(console, "5. Who is on the list", "subscribers", "ls", "--list", "nieuwsbrief")
    _step(console, "6. One subscriber, with the consent history", "subscribers", "show",
          "an.peeters@example.be")
    console.rule()
    console.print(f"The demo project is in {Path.cwd()}; try `cd {FOLDER}` and "
                  "`../.venv/bin/mailer --help`.")


if __name__ == "__main__":
    sys.exit(main())
