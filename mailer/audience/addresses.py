"""Validate and normalise subscriber addresses (email-validator, no network)."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

__all__ = ["InvalidAddress", "normalise_address"]


class InvalidAddress(ValueError):
    """The address is not acceptable; the message says why, in plain words."""


def normalise_address(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise InvalidAddress("the address is empty")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidAddress("the address contains a line break or control character")
    try:
        return validate_email(value, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from None
