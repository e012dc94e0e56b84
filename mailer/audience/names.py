"""A person's name from its parts, the Dutch way: first name, infix, last name.

Dutch surnames often begin with a tussenvoegsel (infix: "van", "de", "van der", "'t"),
kept in its own field so that the name is written and sorted as the Taalunie rules say:

- after a first name (or initials) the infix is written in lower case:
  "Jan van der Berg", "Marieke de Vries";
- standing alone, its first letter is a capital, except an apostrophe word:
  "Van der Berg", "De Vries", "'t Hart" (as in "Beste meneer Van der Berg");
- in a sorted list the infix does not count: "Berg, Jan van der" comes under B
  (`subscribers ls --sort name`).

Belgian names are written as they are registered ("Van den Bossche"); they are best kept
whole in the last name, with no infix, and are then left exactly as given.

Pure functions, no database: the templates (content/mailing.py), the CLI and the import
use them alike.
"""

from __future__ import annotations

__all__ = ["family_name", "full_name"]


def _clean(value: str | None) -> str | None:
    """Whitespace collapsed; None when empty."""
    return (" ".join(value.split()) or None) if value else None


def _with_case(infix: str, *, capital: bool) -> str:
    if infix.startswith(("'", "\u2019")):  # 't, 's: lower case wherever they stand
        return infix
    return (infix[0].upper() if capital else infix[0].lower()) + infix[1:]


def full_name(first_name: str | None, infix: str | None, last_name: str | None) -> str:
    """The name as written in an address or a greeting: "Jan van der Berg"; without a
    first name "Van der Berg"; "" when nothing is known. An infix without a last name is
    left out (it means nothing on its own)."""
    first = _clean(first_name)
    if first is None:
        return family_name(infix, last_name)
    last, middle = _clean(last_name), _clean(infix)
    if last is None:
        return first
    if middle is None:
        return f"{first} {last}"
    return f"{first} {_with_case(middle, capital=False)} {last}"


def family_name(infix: str | None, last_name: str | None) -> str:
    """The surname standing alone, as after "meneer" or "mevrouw": "Van der Berg",
    "De Vries", "'t Hart"; "" without a last name."""
    last, middle = _clean(last_name), _clean(infix)
    if last is None:
        return ""
    return last if middle is None else f"{_with_case(middle, capital=True)} {last}"

