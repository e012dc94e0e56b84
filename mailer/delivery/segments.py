"""Segments: which members of the campaign's lists get it, as small conditions.

Each condition is `FIELD OPERATOR VALUE`; a campaign's conditions must all hold.

    language = en
    Gemeente = Gent                  an attribute (a column of your CSV)
    attributes.Gemeente != Gent      the same, spelled out
    email ends with @example.be
    first_name is set
    infix = van                      the Dutch tussenvoegsel ("van der" in Jan van der Berg)
    lid_sinds < 2020                 numbers compare as numbers
    interesses contains fietsen      text contains (case-insensitive), or list contains

Fields: email, first_name, infix, last_name, language, or any attribute. Operators: `=`,
`!=`, `<`, `<=`, `>`, `>=`, `contains`, `starts with`, `ends with`, `is set`, `is not set`.
Text comparisons ignore case. Conditions are parsed when the campaign is created (a typo
is an error then, not at send time) and evaluated in Python on each member: never SQL
from the user.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailer.errors import InvalidInput

__all__ = ["Condition", "matches", "parse_condition", "parse_segment"]

FIELDS = ("email", "first_name", "infix", "last_name", "language")
_OPERATORS = ("is not set", "is set", "starts with", "ends with", "contains", "!=", "<=",
              ">=", "=", "<", ">")
_PATTERN = re.compile(
    r"^\s*(?P<field>[\w.-]+)\s+(?P<op>is not set|is set|starts with|ends with|contains|"
    r"!=|<=|>=|=|<|>)\s*(?P<value>.*?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Condition:
    field: str  # "email" … or "attributes.X"
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.field} {self.op} {self.value}".strip()


def parse_condition(text: str) -> Condition:
    match = _PATTERN.match(text)
    if not match:
        raise InvalidInput(f"Cannot read the segment condition {text!r}.",
                           hint="Write FIELD OPERATOR VALUE, e.g. \"language = en\" or "
                                "\"Gemeente = Gent\".")
    field, op, value = match.group("field"), match.group("op").lower(), match.group("value")
    if field not in FIELDS and not field.startswith("attributes."):
        field = f"attributes.{field}"
    if op in ("is set", "is not set"):
        if value:
            raise InvalidInput(f"{text!r}: '{op}' takes no value.")
    elif not value:
        raise InvalidInput(f"{text!r}: a value is missing after '{op}'.")
    return Condition(field, op, value.strip("\"'"))


def parse_segment(conditions: list[str] | tuple[str, ...]) -> list[Condition]:
    return [parse_condition(c) for c in conditions]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).replace(",", "."))
    except ValueError:
        return None


def _compare(op: str) -> Callable[[Any, str], bool]:
    def test(actual: Any, expected: str) -> bool:
        a, b = _number(actual), _number(expected)
        if a is not None and b is not None:
            left, right = a, b
        else:
            left, right = str(actual).casefold(), expected.casefold()  # type: ignore[assignment]
        return {"<": left < right, "<=": left <= right, ">": left > right,
                ">=": left >= right, "=": left == right, "!=": left != right}[op]
    return test


def _test(condition: Condition, actual: Any) -> bool:
    op, expected = condition.op, condition.value
    present = actual is not None and actual != ""
    if op == "is set":
        return present
    if op == "is not set":
        return not present
    if not present:
        return op == "!="
    if op == "contains":
        if isinstance(actual, list):
            return any(str(item).casefold() == expected.casefold() for item in actual)
        return expected.casefold() in str(actual).casefold()
    if op == "starts with":
        return str(actual).casefold().startswith(expected.casefold())
    if op == "ends with":
        return str(actual).casefold().endswith(expected.casefold())
    return _compare(op)(actual, expected)


def matches(conditions: list[Condition], person: dict[str, Any]) -> bool:
    """Whether a member (email, first_name, infix, last_name, language, attributes) is
    in."""
    for condition in conditions:
        if condition.field.startswith("attributes."):
            actual = (person.get("attributes") or {}).get(condition.field[len("attributes."):])
        else:
            actual = person.get(condition.field)
        if not _test(condition, actual):
            return False
    return True
