"""Reading subscriber CSV files: encoding, delimiter, column mapping and per-row checks.

Pure functions, no database: `check_rows` runs in worker processes during a large import,
so it must be picklable and cheap. Dutch Excel writes `;`-separated files, often with a
UTF-8 byte-order mark; both are handled.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import hmac
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from mailer.audience.addresses import InvalidAddress, normalise_address
from mailer.errors import ImportFailed, InvalidInput

__all__ = [
    "FIELDS",
    "CheckedRow",
    "ColumnPlan",
    "CsvReader",
    "check_rows",
    "parse_mapping",
]

FIELDS = ("email", "first_name", "last_name", "language")

# Header names recognised without a --map, lower-cased, spaces/dashes/underscores removed.
ALIASES = {
    "email": "email", "emailaddress": "email", "mail": "email", "emailadres": "email",
    "mailadres": "email", "address": "email", "adres": "email",
    "firstname": "first_name", "voornaam": "first_name", "givenname": "first_name",
    "lastname": "last_name", "achternaam": "last_name", "familienaam": "last_name",
    "surname": "last_name", "naam": "last_name",
    "language": "language", "taal": "language", "lang": "language",
}
IGNORE = "-"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _key(header: str) -> str:
    return "".join(ch for ch in header.lower() if ch not in " -_.")


def parse_mapping(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`--map "E-mailadres=email"` pairs as {csv column: field}; `=-` ignores a column."""
    out: dict[str, str] = {}
    for pair in pairs:
        column, sep, target = pair.rpartition("=")
        column, target = column.strip(), target.strip()
        if not sep or not column or not target:
            raise InvalidInput(f"--map {pair!r} must look like \"CSV column=field\".")
        if target != IGNORE and target not in FIELDS and not target.startswith("attr:"):
            raise InvalidInput(
                f"--map {pair!r}: the field must be one of {', '.join(FIELDS)}, "
                "attr:NAME, or - to ignore the column.")
        out[column] = target
    return out


@dataclass(frozen=True)
class ColumnPlan:
    """Which CSV column feeds which field; the rest become attributes."""

    header: tuple[str, ...]
    email: int
    first_name: int | None = None
    last_name: int | None = None
    language: int | None = None
    attributes: tuple[tuple[int, str], ...] = ()
    default_language: str | None = None

    @classmethod
    def from_header(cls, header: list[str], mapping: dict[str, str],
                    default_language: str | None = None) -> ColumnPlan:
        header = [h.strip() for h in header]
        unknown = set(mapping) - set(header)
        if unknown:
            raise InvalidInput(f"--map names a column the file does not have: "
                               f"{', '.join(sorted(unknown))} (columns: {', '.join(header)})")
        slots: dict[str, int] = {}
        attributes: list[tuple[int, str]] = []
        for index, name in enumerate(header):
            target = mapping.get(name) or ALIASES.get(_key(name)) or f"attr:{name}"
            if target == IGNORE or not name:
                continue
            if target.startswith("attr:"):
                attributes.append((index, target[5:]))
            elif target in slots:
                raise InvalidInput(f"Two columns map to {target}: "
                                   f"{header[slots[target]]!r} and {name!r}; use --map.")
            else:
                slots[target] = index
        if "email" not in slots:
            raise InvalidInput(
                f"No address column found (columns: {', '.join(header)}).",
                hint='Name it "email", or map it: --map "E-mailadres=email".')
        return cls(tuple(header), slots["email"], slots.get("first_name"),
                   slots.get("last_name"), slots.get("language"), tuple(attributes),
                   default_language)


@dataclass(slots=True)
class CheckedRow:
    """One data row after checking. `error` is set for a row that is rejected."""

    line: int
    email: str | None = None
    email_hash: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    language: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    detail: str = ""


def _cell(raw: list[str], index: int | None) -> str | None:
    if index is None or index >= len(raw):
        return None
    value = raw[index].strip()
    if not value:
        return None
    if _CONTROL.search(value):
        raise ValueError("line breaks or control characters in a name")
    return value[:200]


def _language(value: str | None, default: str | None) -> str | None:
    if value is None:
        return default
    short = value.lower().replace("_", "-").split("-")[0]
    if short in ("nl", "en"):
        return short
    raise ValueError(f"language {value!r} is not nl or en")


def check_rows(rows: list[tuple[int, list[str]]], plan: ColumnPlan,
               hash_key: bytes) -> list[CheckedRow]:
    """Validate and normalise a batch of rows (runs in a worker process for big files)."""
    out: list[CheckedRow] = []
    width = len(plan.header)
    for line, raw in rows:
        row = CheckedRow(line)
        out.append(row)
        if len(raw) > width and any(cell.strip() for cell in raw[width:]):
            row.error, row.detail = "invalid", f"{len(raw)} fields where the header has {width}"
            continue
        address = raw[plan.email] if plan.email < len(raw) else ""
        if not address.strip():
            row.error, row.detail = "invalid", "no address"
            continue
        try:
            row.email = normalise_address(address)
        except InvalidAddress as exc:
            row.error, row.detail = "invalid", str(exc)
            continue
        try:
            row.first_name = _cell(raw, plan.first_name)
            row.last_name = _cell(raw, plan.last_name)
            row.language = _language(_cell(raw, plan.language), plan.default_language)
        except ValueError as exc:
            row.error, row.detail = "invalid", str(exc)
            continue
        row.email_hash = hmac.new(hash_key, row.email.encode(), hashlib.sha256).hexdigest()
        row.attributes = {name: raw[i].strip() for i, name in plan.attributes
                          if i < len(raw) and raw[i].strip()}
    return out


class CsvReader:
    """Streams (line number, cells) from a CSV file with a header row.

    The delimiter is sniffed from the header line (`;`, `,` or tab) unless given. Lines are
    decoded one by one, so a wrongly saved file is reported with the exact line, and the
    import stops before anything is committed. Encodings must be ASCII-compatible (UTF-8,
    cp1252, latin-1…); a UTF-16 file is recognised by its byte-order mark and refused.
    """

    def __init__(self, binary: IO[bytes], *, delimiter: str | None = None,
                 encoding: str = "utf-8") -> None:
        self.encoding = codecs.lookup(encoding).name  # LookupError for an unknown one
        self._binary = binary
        head = binary.peek(4)[:4] if hasattr(binary, "peek") else b""
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise ImportFailed("The file is UTF-16 (Excel's \"Unicode text\").",
                               hint="Save it as \"CSV UTF-8\" and import again.")
        first = self._decode(binary.readline(), 1)
        if first.startswith("\ufeff"):
            first = first[1:]  # byte-order mark of Excel's "CSV UTF-8"
        if not first.strip():
            raise ImportFailed("The file is empty: it needs a header row with the column names.")
        self.delimiter = delimiter or max(";,\t", key=first.count)
        self.header = next(csv.reader([first], delimiter=self.delimiter))

    def _decode(self, raw: bytes, line: int) -> str:
        try:
            return raw.decode(self.encoding)
        except UnicodeDecodeError as exc:
            raise ImportFailed(
                f"Line {line} is not valid {self.encoding} ({exc.reason}); "
                "nothing was imported.",
                hint="Save the file as CSV UTF-8, or pass --encoding (e.g. cp1252).") from None

    @property
    def bytes_read(self) -> int:
        """Bytes consumed from the file so far (for a progress bar)."""
        return self._binary.tell()

    def _lines(self) -> Iterator[str]:
        decode = self._decode
        for number, raw in enumerate(self._binary, start=2):
            yield decode(raw, number)

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        reader = csv.reader(self._lines(), delimiter=self.delimiter, strict=True)
        line = 1
        try:
            for cells in reader:
                start = line + 1
                line = reader.line_num + 1
                if not cells or (len(cells) == 1 and not cells[0].strip()):
                    continue  # blank line
                yield start, cells
        except csv.Error as exc:
            raise ImportFailed(f"Line {line + 1} cannot be read as CSV: {exc}; "
                               "nothing was imported.") from None
