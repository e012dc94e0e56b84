"""What a message must be before a byte of it goes out over SMTP (`check`), and its
envelope addresses as written on the wire (`envelope`).

Apart from the SMTP session (no aiosmtplib here) so that a render helper can check
the messages it builds (`checked`): the check costs ~20 us a message, which the
sender's event loop, the one thread every message passes through, no longer pays
(smtpsession.Session checks a message that was not checked where it was built).
"""

from __future__ import annotations

import dataclasses
import re

from mailer.content.compose import ascii_address
from mailer.content.mailing import Message

__all__ = ["MAX_LINE", "Unsendable", "check", "checked", "dot_stuffed", "envelope"]


class Unsendable(ValueError):
    """This message cannot go out as it is (a fault of the message, not of the
    recipient's address being unknown): nothing of it was written."""


MAX_LINE = 998  # octets in a line, CRLF not counted (RFC 5322 2.1.1, RFC 5321 4.5.3.1.6)
_BAD_IN_ADDRESS = re.compile(r"[\x00-\x20\x7f<>]")
_LONG_LINE = re.compile(rb"[^\r\n]{%d}" % (MAX_LINE + 1))
_HEADER_LINE = re.compile(rb"[!-9;-~]+:|[ \t]")  # a field, or the fold of the one before


def check(message: Message) -> None:
    """What the envelope and the message must be before a byte of them is written: the
    addresses one token each (no CR, LF, space or control character: written raw they
    would be commands of their own), the header lines whole (no CR or LF alone, a field
    name or a fold at the start of each) and no line over 998 octets (a strict server
    refuses the message; the recipient is not to blame). Raises `Unsendable`."""
    for role, address in (("sender", message.envelope_from),
                          ("recipient", message.recipient)):
        if _BAD_IN_ADDRESS.search(address) or "@" not in address:
            raise Unsendable(f"the {role} address {address!r} is not a valid address "
                             "(a line break, space, control character or no @)")
        if not message.smtputf8 and not envelope(message, address).isascii():
            raise Unsendable(f"the {role} address {address!r} is not ASCII and the "
                             "message does not ask for SMTPUTF8")
    data = message.data
    end = data.find(b"\r\n\r\n")
    head = data[:end] if end >= 0 else data
    if b"\0" in head:
        raise Unsendable("a header holds a NUL character")
    lines = head.split(b"\r\n")
    for line in lines:
        if b"\r" in line or b"\n" in line:
            raise Unsendable("a header value holds a line break: "
                             f"{line[:60].decode('utf-8', 'replace')!r}")
        if not _HEADER_LINE.match(line):
            raise Unsendable("a header line is neither a field nor a fold (a line break "
                             f"in a header value?): {line[:60].decode('utf-8', 'replace')!r}")
    # The regex alone tries every offset and scans on to the next line break from each:
    # ~3 ms for a 15 KB message, more than building and signing it. A line of 999 or more
    # octets between CR/LF is inside a LF-split piece at least that long: look only then.
    long = None
    if len(data) > MAX_LINE and max(map(len, data.split(b"\n"))) > MAX_LINE:
        long = _LONG_LINE.search(data)
    if long is not None:
        start = data.rfind(b"\n", 0, long.start()) + 1
        stop = data.find(b"\r\n", long.start())
        length = (stop if stop >= 0 else len(data)) - start
        where = "in the body"
        if end < 0 or start < end:
            field = next((line.split(b":", 1)[0] for line in reversed(
                data[:long.end()].split(b"\r\n")) if line[:1] not in (b" ", b"\t")), b"")
            where = f"in the header {field.decode('ascii', 'replace')}"
        raise Unsendable(f"a line {where} is {length:,} characters long, over SMTP's "
                         f"{MAX_LINE} (too long a value in the template's data?): the "
                         "message is at fault, not the address")


def envelope(message: Message, address: str) -> str:
    """An envelope address as written on the wire: with SMTPUTF8 as it is, else with its
    domain as A-labels (an@bücher.example as an@xn--bcher-kva.example, the same mailbox)."""
    return address if message.smtputf8 else ascii_address(address)


def dot_stuffed(data: bytes) -> bytes:
    """The message as DATA sends it: a line starting with "." gets another, and the
    message ends with CRLF (RFC 5321 4.5.2). The same object when nothing changes."""
    if data.startswith(b"."):
        data = b"." + data
    if b"\n." in data:
        data = data.replace(b"\n.", b"\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def checked(message: Message) -> Message:
    """The message, checked (`check`: raises `Unsendable`) and marked so; `plain` when
    its data needs no dot-stuffing for DATA (RFC 5321 4.5.2): almost every message
    (headers, base64 and MIME boundaries never begin a line with a dot)."""
    check(message)
    return dataclasses.replace(message, checked=True,
                               plain=dot_stuffed(message.data) is message.data)
