"""Confirmed members of the project's list, imported through the CLI as a user would, for
tests that send to them.

    from tests.support.members import import_members

    import_members(run, project, ["an@example.be", "bo@example.org"])  # in outbox order
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["import_members"]


def import_members(run: Callable[..., Any], folder: Path, addresses: Sequence[str], *,
                   list_name: str = "nieuwsbrief") -> None:
    """Import `addresses` as confirmed members of `list_name`, in this order (the order of
    their deliveries in the outbox), with first names Naam0, Naam1, …"""
    csv = folder / "members.csv"
    csv.write_text("email,first_name\n" + "".join(f"{a},Naam{i}\n"
                                                 for i, a in enumerate(addresses)))
    result = run("subscribers", "import", str(csv), "--list", list_name, "--consent",
                 "test", "--confirmed")
    assert result.exit_code == 0, result.output
