"""Validate and normalise subscriber addresses: email-validator's rules, at import speed.

`email_validator.validate_email` costs ~50 us per address here, most of it in checking
the domain (IDNA/UTS-46 character tables). An import of a million rows sees a few hundred
distinct domains, so the common case takes a fast path: an ASCII dot-atom local part
checked by a regular expression that accepts exactly what the library accepts for ASCII,
and the domain checked once by the library itself and cached. Anything unusual (quoted or
non-ASCII local parts, internationalised domains, over-long addresses) goes through the
library whole. tests/test_addresses.py proves both paths agree with the library.

An address with a non-ASCII character (`chloë@example.be`, `an@müller.de`) is valid and
kept as written (NFC). A non-ASCII domain goes out in its xn-- form, through any relay; a
non-ASCII local part only with SMTPUTF8 (RFC 6531), which most large mailbox providers and
relays offer but not every one; `needs_smtputf8` tells them apart, so an import can count
and name them.

Addresses are normalised to lower case entirely: local parts are case-insensitive in
practice everywhere, and an address must not be subscribed twice as An@ and an@.
"""

from __future__ import annotations

import re
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

__all__ = ["InvalidAddress", "needs_smtputf8", "normalise_address"]

# RFC 5322 atext, as email-validator's ATEXT; dot-atom: no leading, trailing or double dot.
_ATEXT = r"[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]"
_FAST_LOCAL = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
_FAST_DOMAIN = re.compile(r"[a-zA-Z0-9.-]+\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_LOCAL = 64
MAX_ADDRESS = 254


class InvalidAddress(ValueError):
    """The address is not acceptable; the message says why, in plain words."""


def _check(address: str) -> str:
    """The library's verdict: the normalised address, or InvalidAddress."""
    try:
        return validate_email(address, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from None


@lru_cache(maxsize=65536)
def _domain(domain: str) -> str | InvalidAddress:
    """The library's normalised domain, or the error it gives (cached per domain)."""
    try:
        return _check("a@" + domain).partition("@")[2]
    except InvalidAddress as exc:
        return exc


def normalise_address(raw: str) -> str:
    """The normalised (lower-case) address, or InvalidAddress with a plain reason."""
    value = raw.strip()
    if not value:
        raise InvalidAddress("the address is empty")
    if _CONTROL.search(value):
        raise InvalidAddress("the address contains a line break or control character")
    local, at, domain = value.rpartition("@")
    if (at and len(local) <= MAX_LOCAL and len(value) <= MAX_ADDRESS
            and _FAST_LOCAL.match(local) and _FAST_DOMAIN.match(domain)):
        checked = _domain(domain)
        if isinstance(checked, InvalidAddress):
            raise InvalidAddress(str(checked))
        return f"{local}@{checked}".lower()
    return _check(value)


def needs_smtputf8(address: str) -> bool:
    """Whether a (normalised) address goes out only through a relay that offers SMTPUTF8:
    a character outside ASCII in the local part (`chloë@`). A domain outside ASCII
    (`an@müller.de`) needs no SMTPUTF8: the sender writes it in its xn-- form."""
    return not address.rpartition("@")[0].isascii()
