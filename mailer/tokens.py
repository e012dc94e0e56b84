"""Signed, encrypted, URL-safe tokens for links and bounce addresses.

A token names a purpose (unsubscribe, confirm, preferences, bounce), a subscriber, and
where it matters a list and a campaign, plus the minute it was issued. Nobody can make
one without the project's secret, change one without it failing, or read the ids inside:

    header  = version/purpose (1 byte) | key id (1 byte)
    fields  = subscriber id (8) | list id (4) | campaign id (4) | issued minute (4)
    tag     = HMAC-SHA256(mac key, header | fields)[:12]
    token   = header | tag | fields XOR HMAC-SHA256(encryption key, header | tag)[:20]

This is SIV-style deterministic authenticated encryption with HMAC as the PRF: the tag
both authenticates and serves as the IV, so the same inputs give the same token (a link
can be rebuilt at any time) and the row ids stay hidden (no subscriber can be enumerated).
Tags are compared in constant time.

Key rotation: every key has a one-byte id (from its hash). Tokens are made with the current
key and read with the current or any previous key (`previous_secret_keys`), so old
unsubscribe links keep working through a grace period; drop the old key to end it.

Two spellings: base64url (46 characters) for links, and lower-case base32 (55 characters)
for the VERP bounce address, whose local part some mail servers lower-case.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum

from mailer.errors import MailerError

__all__ = ["MessageToken", "Purpose", "Signer", "TokenData", "TokenError"]

VERSION = 1
_FIELDS = struct.Struct(">QIII")
_TAG = 12
_HEAD = 2
_SIZE = _HEAD + _TAG + _FIELDS.size  # 34 bytes
_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
_B64_LEN = 46
_B32_LEN = 55


class Purpose(IntEnum):
    UNSUBSCRIBE = 1
    CONFIRM = 2
    PREFERENCES = 3
    BOUNCE = 4
    # The one token a sent message carries, for its unsubscribe and preferences links
    # (base64url) and its bounce and mailto-unsubscribe addresses (base32): whoever holds
    # the message holds all of them anyway, and one token per message is one HMAC pair.
    MESSAGE = 5
    # A link of a campaign, counted by `mailer serve` ([tracking] clicks = "aggregate"):
    # names the campaign and the link's number (list id field), never a person (0).
    CLICK = 6


@dataclass(frozen=True)
class MessageToken:
    """One message's token in its two spellings."""

    link: str  # base64url, 46 characters: /u/LINK, /p/LINK
    address: str  # lower-case base32, 55 characters: bounces+ADDRESS@, unsub+ADDRESS@


class TokenError(MailerError):
    """Not a valid token for this purpose (forged, truncated, altered, unknown key),
    or `expired`."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class TokenData:
    purpose: Purpose
    subscriber_id: int
    list_id: int
    campaign_id: int
    issued_at: datetime


class _Key:
    def __init__(self, secret: bytes) -> None:
        self.id = hashlib.sha256(b"mailer key id\0" + secret).digest()[0]
        mac = hmac.new(secret, b"mailer token mac", hashlib.sha256).digest()
        enc = hmac.new(secret, b"mailer token enc", hashlib.sha256).digest()
        # Keyed once; copying a keyed HMAC spares re-deriving its pads for every token.
        self._mac = hmac.new(mac, digestmod=hashlib.sha256)
        self._enc = hmac.new(enc, digestmod=hashlib.sha256)

    def tag(self, header: bytes, fields: bytes) -> bytes:
        h = self._mac.copy()
        h.update(header + fields)
        return h.digest()[:_TAG]

    def stream(self, header: bytes, tag: bytes) -> bytes:
        h = self._enc.copy()
        h.update(header + tag)
        return h.digest()[:_FIELDS.size]


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a) ^ int.from_bytes(b)).to_bytes(len(a))


class Signer:
    """Makes and reads tokens with the project's secret key (and previous keys)."""

    def __init__(self, secret: bytes, previous: Sequence[bytes] = ()) -> None:
        if len(secret) < 16:
            raise MailerError("The secret key is too short (at least 16 characters).")
        self._current = _Key(secret)
        self._keys = [self._current, *(_Key(k) for k in previous if k and k != secret)]

    def make(self, purpose: Purpose, subscriber_id: int, list_id: int = 0,
             campaign_id: int = 0, *, now: datetime | None = None,
             lowercase: bool = False) -> str:
        """A token; `lowercase` for the VERP local part (base32), else base64url."""
        raw = self._raw(purpose, subscriber_id, list_id, campaign_id, now)
        return _base32(raw) if lowercase else _base64url(raw)

    def message_token(self, subscriber_id: int, list_id: int, campaign_id: int, *,
                      now: datetime | None = None) -> MessageToken:
        """The token of one sent message (Purpose.MESSAGE), in both spellings."""
        raw = self._raw(Purpose.MESSAGE, subscriber_id, list_id, campaign_id, now)
        return MessageToken(_base64url(raw), _base32(raw))

    def _raw(self, purpose: Purpose, subscriber_id: int, list_id: int, campaign_id: int,
             now: datetime | None) -> bytes:
        issued = ((now or datetime.now(UTC)) - _EPOCH) // timedelta(minutes=1)
        key = self._current
        header = bytes(((VERSION << 4) | int(purpose), key.id))
        fields = _FIELDS.pack(subscriber_id, list_id, campaign_id, issued)
        tag = key.tag(header, fields)
        return header + tag + _xor(fields, key.stream(header, tag))

    def read(self, token: str, purpose: Purpose, *, max_age: timedelta | None = None,
             now: datetime | None = None) -> TokenData:
        """The data in a token made for `purpose`, or TokenError."""
        raw = _decode(token)
        if raw is None or len(raw) != _SIZE or raw[0] != (VERSION << 4) | int(purpose):
            raise TokenError("This link is not valid.")
        header, tag, sealed = raw[:_HEAD], raw[_HEAD:_HEAD + _TAG], raw[_HEAD + _TAG:]
        for key in self._keys:
            if key.id != header[1]:
                continue
            fields = _xor(sealed, key.stream(header, tag))
            if hmac.compare_digest(key.tag(header, fields), tag):
                break
        else:
            raise TokenError("This link is not valid.")
        subscriber_id, list_id, campaign_id, minute = _FIELDS.unpack(fields)
        issued_at = _EPOCH + timedelta(minutes=minute)
        if max_age is not None and (now or datetime.now(UTC)) - issued_at > max_age:
            raise TokenError("This link has expired.", expired=True)
        return TokenData(Purpose(purpose), subscriber_id, list_id, campaign_id, issued_at)


def _base64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _base32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=").lower()


def _decode(token: str) -> bytes | None:
    """The token's bytes, or None. Only the canonical spelling is accepted: base64 and
    base32 leave a few spare bits in the last character, and a token that differs only
    there must not count as the same token."""
    token = token.strip()
    try:
        if len(token) == _B64_LEN:
            raw = base64.b64decode(token + "==", altchars=b"-_", validate=True)
            canonical = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        elif len(token) == _B32_LEN:
            raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
            canonical = base64.b32encode(raw).decode().rstrip("=").lower()
            token = token.lower()
        else:
            return None
    except (binascii.Error, ValueError):
        return None
    return raw if hmac.compare_digest(canonical, token) else None
