"""Reading subscriber CSV files: encoding, delimiter, column mapping and per-row checks.

Pure functions, no database: `check_rows` runs in worker processes during a large import,
so it must be picklable and cheap. Dutch Excel writes `;`-separated files, often with a
UTF-8 byte-order mark; both are handled.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, NamedTuple

from mailer.audience.addresses import normalise_address
from mailer.audience.hashing import address_hash
from mailer.errors import ImportFailed, InvalidInput

__all__ = [
    "FIELDS",
    "CheckedRow",
    "ColumnPlan",
    "CsvReader",
    "check_block",
    "parse_block",
    "parse_mapping",
]

FIELDS = ("email", "first_name", "infix", "last_name", "language")

# Header names recognised without a --map, lower-cased, spaces/dashes/underscores removed.
ALIASES = {
    "email": "email", "emailaddress": "email", "mail": "email", "emailadres": "email",
    "mailadres": "email", "address": "email", "adres": "email",
    "firstname": "first_name", "voornaam": "first_name", "givenname": "first_name",
    "lastname": "last_name", "achternaam": "last_name", "familienaam": "last_name",
    "surname": "last_name", "naam": "last_name",
    # the Dutch tussenvoegsel ("van der"): its own field, see audience/names.py
    "tussenvoegsel": "infix", "tussenvoegsels": "infix", "voorvoegsel": "infix",
    "voorvoegsels": "infix", "infix": "infix", "prefix": "infix",
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
    infix: int | None = None

    @classmethod
    def from_header(cls, header: list[str], mapping: dict[str, str],
                    default_language: str | None = None,
                    delimiter: str | None = None) -> ColumnPlan:
        """`delimiter`: the separator the header was split on, named in the error when no
        address column is found (a wrong separator is the usual cause)."""
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
            split = ""
            if delimiter is not None:
                split = f", split on {DELIMITER_NAMES.get(delimiter, repr(delimiter))}"
            raise InvalidInput(
                f"No address column found (columns: {', '.join(header)}{split}).",
                hint='Name it "email", or map it: --map "E-mailadres=email"; if the columns '
                     'are split wrongly, give the separator: --delimiter ";" (or ",", tab, '
                     '"|").')
        return cls(tuple(header), slots["email"], slots.get("first_name"),
                   slots.get("last_name"), slots.get("language"), tuple(attributes),
                   default_language, slots.get("infix"))


class CheckedRow(NamedTuple):
    """One data row after checking. `error` is set for a row that is rejected.

    A tuple, because batches of these travel back from the worker processes: it pickles
    small and fast. `attributes` is already JSON text, as stored.
    """

    line: int
    email: str | None = None
    email_hash: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    language: str | None = None
    attributes: str | None = None
    error: str | None = None
    detail: str = ""
    infix: str | None = None


FATAL = "fatal"  # CheckedRow.error of a batch that cannot be read at all (encoding, quoting)


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


def _check_row(line: int, raw: list[str], plan: ColumnPlan, width: int,
               key: bytes) -> CheckedRow:
    if len(raw) > width and any(cell.strip() for cell in raw[width:]):
        return CheckedRow(line, error="invalid",
                          detail=f"{len(raw)} fields where the header has {width}")
    address = raw[plan.email] if plan.email < len(raw) else ""
    if not address.strip():
        return CheckedRow(line, error="invalid", detail="no address")
    try:
        email = normalise_address(address)
        first_name = _cell(raw, plan.first_name)
        infix = _cell(raw, plan.infix)
        last_name = _cell(raw, plan.last_name)
        language = _language(_cell(raw, plan.language), plan.default_language)
    except ValueError as exc:  # InvalidAddress is a ValueError too
        return CheckedRow(line, error="invalid", detail=str(exc))
    attributes = {name: raw[i].strip() for i, name in plan.attributes
                  if i < len(raw) and raw[i].strip()}
    return CheckedRow(line, email, address_hash(key, email), first_name, last_name, language,
                      _to_json(attributes), infix=infix)


_to_json = json.JSONEncoder(ensure_ascii=True).encode  # = json.dumps, without its wrapper


def parse_block(block: bytes, first_line: int, encoding: str,
                delimiter: str) -> list[tuple[int, list[str]]]:
    """Decode and split a block of whole CSV records: (line number, cells) per record."""
    try:
        text = block.decode(encoding)
    except UnicodeDecodeError as exc:
        for offset, raw in enumerate(block.splitlines(keepends=True)):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError:
                raise ImportFailed(
                    f"Line {first_line + offset} is not valid {encoding} ({exc.reason}); "
                    "nothing was imported.",
                    hint="Save the file as CSV UTF-8, or pass --encoding (e.g. cp1252)."
                ) from None
        raise
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    out: list[tuple[int, list[str]]] = []
    line = first_line
    try:
        for cells in reader:
            start, line = line, first_line + reader.line_num
            if cells and (len(cells) > 1 or cells[0].strip()):
                out.append((start, cells))
    except csv.Error as exc:
        raise ImportFailed(f"Line {line} cannot be read as CSV: {exc}; "
                           "nothing was imported.") from None
    return out


def check_block(block: bytes, first_line: int, plan: ColumnPlan, key: bytes,
                encoding: str, delimiter: str) -> list[CheckedRow]:
    """Parse and check one block (runs in a worker process for big files).

    A block that cannot be read comes back as a single FATAL row whose detail is the
    message, so no exception has to cross the process boundary.
    """
    try:
        rows = parse_block(block, first_line, encoding, delimiter)
    except ImportFailed as exc:
        return [CheckedRow(first_line, error=FATAL, detail=f"{exc}\n{exc.hint or ''}")]
    width = len(plan.header)
    return [_check_row(line, raw, plan, width, key) for line, raw in rows]


DELIMITERS = ";,\t|"
DELIMITER_NAMES = {";": "semicolons (;)", ",": "commas (,)", "\t": "tabs", "|": "bars (|)"}


def sniff_delimiter(header: str, lines: list[str]) -> str:
    """The separator of a CSV file from its header and first lines: the one that splits
    the header into the most columns and every following line into as many (Dutch Excel
    writes `;`, English `,`, exports from databases often tab or `|`). Counting on the
    header alone is fooled by a name like "Naam, voornaam" in a `;` file."""
    lines = [line for line in lines if line.strip()]

    def score(candidate: str) -> tuple[bool, int, int]:
        width = len(next(csv.reader([header], delimiter=candidate)))
        same = sum(1 for row in csv.reader(lines, delimiter=candidate) if len(row) == width)
        return width > 1 and same == len(lines), width, header.count(candidate)

    return max(DELIMITERS, key=score)


class CsvReader:
    """Reads a CSV file with a header row as blocks of whole records (bytes).

    The delimiter is sniffed from the header and the first lines (`;`, `,`, tab or `|`)
    unless given (`sniff_delimiter`). Blocks
    end on record boundaries (a line with an odd number of quotes opens or closes a quoted
    field that spans lines), so worker processes can decode, split and check them on their
    own; this process only cuts the file into blocks. Encodings must be ASCII-compatible
    (UTF-8, cp1252, latin-1…); a UTF-16 file is recognised by its byte-order mark.
    """

    MAX_OPEN_BYTES = 8 << 20  # a stray quote must not make one endless record

    def __init__(self, binary: IO[bytes], *, delimiter: str | None = None,
                 encoding: str = "utf-8") -> None:
        self.encoding = codecs.lookup(encoding).name  # LookupError for an unknown one
        self._binary = binary
        head = binary.peek(4)[:4] if hasattr(binary, "peek") else b""
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise ImportFailed("The file is UTF-16 (Excel's \"Unicode text\").",
                               hint="Save it as \"CSV UTF-8\" and import again.")
        raw = binary.readline()
        try:
            first = raw.decode(self.encoding)
        except UnicodeDecodeError as exc:
            raise ImportFailed(f"Line 1 is not valid {self.encoding} ({exc.reason}).",
                               hint="Save the file as CSV UTF-8, or pass --encoding.") from None
        if first.startswith("\ufeff"):
            first = first[1:]  # byte-order mark of Excel's "CSV UTF-8"
        if not first.strip():
            raise ImportFailed("The file is empty: it needs a header row with the column names.")
        following = binary.peek(1 << 16).split(b"\n")[:20] if hasattr(binary, "peek") else []
        self.delimiter = delimiter or sniff_delimiter(
            first, [line.decode(self.encoding, "replace") for line in following[:-1]])
        self.header = next(csv.reader([first], delimiter=self.delimiter))

    @property
    def bytes_read(self) -> int:
        """Bytes consumed from the file so far (for a progress bar)."""
        return self._binary.tell()

    def blocks(self, size: int = 1 << 18) -> Iterator[tuple[int, bytes]]:
        """(first line number, bytes) blocks of about `size` bytes of whole records.

        A block ends after a newline where the block holds an even number of quotes, so
        no quoted field that spans lines is cut in two. Counting is done on whole chunks
        (C speed): this process never looks at single rows.
        """
        first = 2
        carry = b""
        while chunk := self._binary.read(size):
            data = carry + chunk
            cut = _record_boundary(data, force=len(data) > self.MAX_OPEN_BYTES)
            if cut == 0:
                carry = data  # one record longer than the chunk: read on
                continue
            block, carry = data[:cut], data[cut:]
            yield first, block
            first += block.count(b"\n")
        if carry:
            yield first, carry


def _record_boundary(data: bytes, *, force: bool) -> int:
    """The end of the last whole record in `data` (0: none). With `force`, the last
    newline, even inside quotes: a stray quote must not make the whole file one record."""
    cut = data.rfind(b"\n") + 1
    while cut and data.count(b'"', 0, cut) % 2 and not force:
        cut = data.rfind(b"\n", 0, cut - 1) + 1
    return cut
