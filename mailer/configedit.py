"""Small edits to the text of mailer.toml that keep everything else as the user wrote it:
comments, blank lines, order, quoting.

Only what commands need: `add_dkim_key` (for `mailer dkim keygen --configure`) adds a key
to `[sending] dkim_keys`, in whichever of TOML's two spellings the file already uses:

    [sending]
    dkim_keys = [
        { key = "dkim/mail2026.example.be.rsa.pem", selector = "mail2026" },
    ]

or `[[sending.dkim_keys]]` tables. The text is cut into logical lines (a line break inside
brackets or a multi-line string does not end one) and the new entry is put in by
position; the result is parsed again and must equal the old settings plus the new key,
or nothing is changed.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailer.errors import ConfigError

__all__ = ["add_dkim_key", "add_setting", "configured_selectors", "write_config"]

_HEADER = re.compile(r"\s*(\[\[?)\s*([^\]]*?)\s*\]\]?\s*(#.*)?$", re.DOTALL)
_KEY = re.compile(r"""\s*(?:dkim_keys|"dkim_keys"|'dkim_keys')\s*=""")
_LEGACY = re.compile(r"""\s*["']?dkim_(?:key|selector)["']?\s*=""")


@dataclass(frozen=True)
class _Line:
    """A logical line: `start` to `end` (the position of its line break, CR LF or LF, or
    the end of the text); `table` is the table it belongs to, `header` whether it names one."""

    start: int
    end: int
    text: str
    table: str
    header: str | None = None  # "[" or "[[" for a table header

    @property
    def blank(self) -> bool:
        return not self.text.strip()

    @property
    def comment(self) -> bool:
        return self.text.lstrip().startswith("#")

    @property
    def setting(self) -> bool:
        return not (self.blank or self.comment or self.header)


def _string_end(text: str, i: int) -> int:
    """The position after the TOML string that starts at `i` (or of the line break that
    cuts an unfinished one-line string short)."""
    quote = text[i]
    triple = text.startswith(quote * 3, i)
    j = i + (3 if triple else 1)
    while j < len(text):
        if quote == '"' and text[j] == "\\":
            j += 2
        elif triple and text.startswith(quote * 3, j):
            extra = 0  # one or two quotes before the closing three are content
            while extra < 2 and text.startswith(quote, j + 3 + extra):
                extra += 1
            return j + 3 + extra
        elif not triple and text[j] == quote:
            return j + 1
        elif not triple and text[j] == "\n":
            return j
        else:
            j += 1
    return j


def _logical_lines(text: str) -> list[_Line]:
    lines: list[_Line] = []
    start, depth, i, table = 0, 0, 0, ""
    while i <= len(text):
        char = text[i] if i < len(text) else "\n"
        if char in "\"'":
            i = _string_end(text, i)
            continue
        if char == "#":
            newline = text.find("\n", i)
            i = len(text) if newline == -1 else newline
            continue
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(depth - 1, 0)
        elif char == "\n" and (depth == 0 or i >= len(text)):
            end = i - 1 if text[start:i].endswith("\r") else min(i, len(text))
            piece = text[start:end]
            header = _HEADER.match(piece) if piece.lstrip().startswith("[") else None
            if header:
                table = _table_name(header.group(2))
            lines.append(_Line(start, end, piece, table, header.group(1) if header else None))
            start, depth = i + 1, 0
        i += 1
    return lines


def _table_name(name: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in name.split("."))


def _entry(key: str, selector: str) -> str:
    return f"{{ key = {json.dumps(key, ensure_ascii=False)}, selector = {json.dumps(selector)} }}"


def _array_close(text: str, start: int, end: int) -> tuple[int, int]:
    """In text[start:end] (a `dkim_keys = [...]` line): the position of the array's `[`
    and of its closing `]`."""
    i = text.index("=", start) + 1
    while text[i] in " \t":
        i += 1
    if text[i] != "[":
        raise ValueError("dkim_keys is not an array")
    opening, depth = i, 0
    while i < end:
        char = text[i]
        if char in "\"'":
            i = _string_end(text, i)
            continue
        if char == "#":
            i = text.find("\n", i)
            continue
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return opening, i
        i += 1
    raise ValueError("dkim_keys has no closing bracket")


def _last_significant(text: str, opening: int, closing: int) -> int:
    """The position of the last character inside the array that is neither white space
    nor part of a comment."""
    last, i = opening, opening + 1
    while i < closing:
        char = text[i]
        if char in "\"'":
            i = _string_end(text, i)
            last = i - 1
            continue
        if char == "#":
            i = text.find("\n", i)
            continue
        if not char.isspace():
            last = i
        i += 1
    return last


def _into_array(text: str, line: _Line, entry: str, nl: str) -> str:
    opening, closing = _array_close(text, line.start, line.end)
    last = _last_significant(text, opening, closing)
    comma = "" if text[last] in ",[" else ","
    line_start = text.rfind("\n", 0, closing) + 1
    if "\n" in text[opening:closing] and not text[line_start:closing].strip():
        # one entry a line, `]` on its own line: a new line before it
        first = re.search(r"\n([ \t]*)\S", text[opening:closing])
        indent = first.group(1) if first and first.group(1) else "    "
        return (text[:last + 1] + comma + text[last + 1:line_start] + indent + entry + ","
                + nl + text[line_start:])
    space = "" if text[last] == "[" else " "
    return text[:last + 1] + comma + space + entry + text[last + 1:]


def _table_body_end(lines: list[_Line], index: int) -> int:
    """For the header at lines[index]: the index of the line after which a new setting
    goes: the table's last setting or comment, leaving out the comments that stand
    directly above the next header (they belong to it)."""
    end = index + 1
    while end < len(lines) and not lines[end].header:
        end += 1
    body = list(range(index + 1, end))
    if end < len(lines):  # comments glued to the next header are its own
        while body and lines[body[-1]].comment:
            body.pop()
    while body and lines[body[-1]].blank:
        body.pop()
    return body[-1] if body else index


def configured_selectors(data: dict[str, Any]) -> list[str]:
    """The DKIM selectors a parsed mailer.toml configures."""
    sending = data.get("sending") or {}
    selectors = [str(e.get("selector", "")) for e in sending.get("dkim_keys") or []
                 if isinstance(e, dict)]
    if sending.get("dkim_key"):
        selectors.insert(0, str(sending.get("dkim_selector", "")))
    return selectors


def add_dkim_key(text: str, *, key: str, selector: str, where: str = "mailer.toml") -> str:
    """The text of mailer.toml with {key, selector} added to [sending] dkim_keys, beside
    any key already there; a ConfigError (nothing changed) when it cannot be done
    safely."""
    try:
        before = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    if selector.lower() in (s.lower() for s in configured_selectors(before)):
        raise ConfigError(f"The DKIM selector {selector!r} is in {where} already.",
                          hint="Pick another --selector: each key has its own.")
    nl = "\r\n" if "\r\n" in text else "\n"
    entry = _entry(key, selector)
    lines = _logical_lines(text)
    tables = [i for i, line in enumerate(lines) if line.header == "[" and line.table == "sending"]
    arrays = [i for i, line in enumerate(lines)
              if line.header == "[[" and line.table == "sending.dkim_keys"]
    listed = [line for line in lines if line.table == "sending" and not line.header
              and _KEY.match(line.text)]
    new = None
    try:
        if arrays:
            after = lines[_table_body_end(lines, arrays[-1])]
            new = (text[:after.end] + nl + nl + "[[sending.dkim_keys]]" + nl
                   + f"key = {json.dumps(key, ensure_ascii=False)}" + nl
                   + f"selector = {json.dumps(selector)}" + text[after.end:])
        elif listed:
            new = _into_array(text, listed[0], entry, nl)
        elif tables:
            index = tables[0]
            legacy = [i for i, line in enumerate(lines) if line.table == "sending"
                      and not line.header and _LEGACY.match(line.text)]
            after = lines[legacy[-1] if legacy else _table_body_end(lines, index)]
            new = (text[:after.end] + nl + "dkim_keys = [" + nl + f"    {entry},"
                   + nl + "]" + text[after.end:])
        elif "sending" not in before:
            body = text if not text or text.endswith(nl) else text + nl
            new = body + nl + "[sending]" + nl + f"dkim_keys = [{entry}]" + nl
    except ValueError:
        new = None
    expected = dict(before)
    sending = dict(expected.get("sending") or {})
    sending["dkim_keys"] = [*sending.get("dkim_keys", []), {"key": key, "selector": selector}]
    expected["sending"] = sending
    try:
        if new is not None and tomllib.loads(new) == expected:
            return new
    except tomllib.TOMLDecodeError:
        pass
    raise ConfigError(
        f"Cannot add the key to {where} safely; add it by hand under [sending]:",
        hint=f"dkim_keys = [{entry}]  (beside the keys there)")


def add_setting(text: str, *, table: str, key: str, value: str,
                where: str = "mailer.toml") -> str:
    """The text of mailer.toml with `key = "value"` added to [table] (as its first
    setting: `dkim keygen --configure` sets `[sending] domain`), for a key not set
    there yet; a ConfigError (nothing changed) when it cannot be done safely."""
    try:
        before = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    nl = "\r\n" if "\r\n" in text else "\n"
    line = f"{key} = {json.dumps(value, ensure_ascii=False)}"
    headers = [entry for entry in _logical_lines(text)
               if entry.header == "[" and entry.table == table]
    if headers:
        new = text[:headers[0].end] + nl + line + text[headers[0].end:]
    else:
        body = text if not text or text.endswith(nl) else text + nl
        new = body + nl + f"[{table}]" + nl + line + nl
    expected = dict(before)
    expected[table] = {**(before.get(table) or {}), key: value}
    try:
        if key not in (before.get(table) or {}) and tomllib.loads(new) == expected:
            return new
    except tomllib.TOMLDecodeError:
        pass
    raise ConfigError(f"Cannot set {key} in {where} safely; add it by hand:",
                      hint=f"[{table}] {line}")


def write_config(path: Path, text: str) -> None:
    """Replace the file's text in one step (a temporary file renamed over it), keeping
    its permissions."""
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
