"""Terminal and pipe output: rich tables for people, JSON for scripts, quiet for cron."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # rich is imported when something is printed through it (start-up)
    from rich.console import Console

__all__ = ["day", "err", "out", "print_json", "progress_bar", "stream_json", "table"]


def day(value: str | None) -> datetime | None:
    """A YYYY-MM-DD option as midnight UTC, or a one-line InvalidInput."""
    if value is None:
        return None
    from mailer.errors import InvalidInput

    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInput(f"{value!r} is not a date like 2026-12-01.") from None


def out() -> Console:
    """The console for results (stdout); wide in a pipe, so tables are never cut short."""
    from rich.console import Console

    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 250)


def err() -> Console:
    """The console for messages and progress (stderr), so stdout stays parseable."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=_default))


def stream_json(items: Iterable[Any]) -> int:
    """Print a JSON array one element at a time (flat memory for long listings)."""
    count = 0
    click.echo("[", nl=False)
    for item in items:
        click.echo(("," if count else "") + "\n  " + json.dumps(item, ensure_ascii=False,
                                                              default=_default), nl=False)
        count += 1
    click.echo("\n]" if count else "]")
    return count


def table(rows: Iterable[dict[str, Any]], columns: Sequence[str], *, title: str | None = None,
          empty: str = "Nothing to show.") -> int:
    """Print rows as a rich table; returns the number of rows."""
    from rich.table import Table

    grid = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        grid.add_column(column.replace("_", " "))
    count = 0
    for row in rows:
        grid.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
        count += 1
    if count:
        out().print(grid)
    else:
        err().print(empty)
    return count


class _NullProgress:
    """Stands in for a progress bar in a pipe or in cron: every call does nothing."""

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass


@contextmanager
def progress_bar(description: str, total: int | None, *, quiet: bool = False) -> Iterator[Any]:
    """A byte-based progress bar on a terminal; a null object otherwise."""
    if quiet or not sys.stderr.isatty():
        yield _NullProgress()
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TextColumn("{task.fields[rows]} rows"), TimeRemainingColumn())
    with Progress(*columns, console=err(), transient=True) as bar:
        task = bar.add_task(description, total=total, rows=0)

        class _Task:
            def update(self, *, completed: int, rows: int) -> None:
                bar.update(task, completed=completed, rows=f"{rows:,}")

        yield _Task()
