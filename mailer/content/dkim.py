"""DKIM signatures (RFC 6376), relaxed/relaxed, ed25519-sha256 (RFC 8463) or rsa-sha256.

Signing runs on OpenSSL through `cryptography`: dkimpy's pure-Python RSA costs ~7 ms a
message, OpenSSL ~0.3 ms; dkimpy stays the reference verifier in the tests.

A message can carry several signatures, one per configured key: RFC 8463 (section 4)
advises signing with an RSA key beside an ed25519 one, because many verifiers (Debian 12's
Mail::DKIM, older milters) cannot check ed25519 and would see no valid signature at all.
`sign()` hashes the body and canonicalises the headers once for all keys; each key adds
only its own signature.

The signed header list is explicit and includes List-Unsubscribe and
List-Unsubscribe-Post, which RFC 8058 requires to be signed (dkimpy's default list leaves
the latter out). Every name in it is signed once more than it occurs ("over-signing",
RFC 6376 section 8.15), an absent one once: nobody can add a Reply-To, a second From, a
Cc or a Content-Type without breaking the signature.

Key files must be readable by their owner only (like an SSH key): `load_key` refuses
one that its group or others can read.
"""

from __future__ import annotations

import base64
import hashlib
import re
import stat
import time
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from mailer.errors import MailerError

__all__ = ["SIGNED_HEADERS", "Signer", "generate_key", "load_key", "sign", "txt_record",
           "txt_strings"]

SIGNED_HEADERS = ("from", "sender", "reply-to", "to", "cc", "subject", "date", "message-id",
                  "in-reply-to", "references", "list-id", "list-unsubscribe",
                  "list-unsubscribe-post", "feedback-id", "mime-version", "content-type",
                  "content-transfer-encoding")
_SIGNED = tuple((name, name.encode()) for name in SIGNED_HEADERS)

_WSP = re.compile(rb"[ \t]+")
_FOLD = re.compile(rb"\r\n(?=[ \t])")
_TRAILING_WSP = re.compile(rb"[ \t]+\r\n")

PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def _relaxed_header(name: bytes, value: bytes) -> bytes:
    if b"\r\n" in value or b"\t" in value or b"  " in value:  # else nothing to collapse
        value = _WSP.sub(b" ", _FOLD.sub(b"", value))
    value = value.strip()
    return name.strip().lower() + b":" + value


def _collapsible(body: bytes) -> bool:
    """Whether relaxed body canonicalisation has anything to change but trailing lines:
    a tab, two spaces in a row, or a space at a line end. Base64 bodies hold spaces only
    in their few part headers, so each space is looked at (memchr) instead of scanning
    the whole body for two-byte patterns (~10 us each on 12 KB)."""
    if b"\t" in body:
        return True
    position = body.find(b" ")
    for _ in range(64):
        if position == -1:
            return False
        if body[position + 1:position + 2] in (b" ", b"\r", b""):
            return True
        position = body.find(b" ", position + 1)
    return True  # a body full of spaces: let the regular expressions decide


def _relaxed_body(body: bytes) -> bytes:
    if _collapsible(body):
        body = _TRAILING_WSP.sub(b"\r\n", _WSP.sub(b" ", body))
        if body.endswith(b" "):
            body = body.rstrip(b" ")
    while body.endswith(b"\r\n"):
        body = body[:-2]
    return body + b"\r\n" if body else b""


def _split(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers as (name, raw value incl. folding) in order, and the body."""
    head, _, body = message.partition(b"\r\n\r\n")
    headers: list[tuple[bytes, bytes]] = []
    for line in re.split(rb"\r\n(?![ \t])", head):
        name, _, value = line.partition(b":")
        headers.append((name, value))
    return headers, body


class Signer:
    """Signs messages for one domain and selector with one private key."""

    def __init__(self, key: PrivateKey, *, domain: str, selector: str) -> None:
        self._key = key
        self.algorithm = "ed25519-sha256" if isinstance(key, ed25519.Ed25519PrivateKey) \
            else "rsa-sha256"
        self.domain, self.selector = domain, selector
        self._heads: dict[tuple[str, ...], tuple[str, bytes]] = {}

    def _sign(self, data: bytes) -> bytes:
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(hashlib.sha256(data).digest())  # RFC 8463: sign the hash
        return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def sign(self, message: bytes, *, now: int | None = None) -> bytes:
        """The message with this key's DKIM-Signature header in front."""
        return sign(message, (self,), now=now)

    def header(self, names: tuple[str, ...], signed: bytes, tail: str) -> bytes:
        """This key's DKIM-Signature header over the canonical `signed` header lines
        (each ending in CRLF) and the tags `tail` (t=, bh=, b=)."""
        head, canonical_head = self._head(names)
        signature = self._sign(signed + canonical_head + tail.encode("ascii"))
        return _with_signature(f"{head}\r\n{tail}", base64.b64encode(signature).decode())

    def _head(self, names: tuple[str, ...]) -> tuple[str, bytes]:
        """The tags that are the same for a whole mailing (all but t=, bh= and b=),
        folded, and in relaxed canonical form; made once per signed header list."""
        cached = self._heads.get(names)
        if cached is None:
            head = _fold(f"v=1; a={self.algorithm}; c=relaxed/relaxed; d={self.domain}; "
                         f"s={self.selector}; h={':'.join(names)};")
            cached = head, _relaxed_header(b"dkim-signature", head.encode().partition(b":")[2])
            if len(self._heads) < 64:
                self._heads[names] = cached
        return cached


def sign(message: bytes, signers: Iterable[Signer], *, now: int | None = None) -> bytes:
    """The message with one DKIM-Signature header per signer in front, the first signer's
    on top. The body hash and the signed header lines are computed once for all."""
    signers = tuple(signers)
    if not signers:
        return message
    headers, body = _split(message)
    body_hash = base64.b64encode(hashlib.sha256(_relaxed_body(body)).digest()).decode()
    present: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        present.setdefault(name.strip().lower(), []).append(value)
    names: list[str] = []
    signed: list[bytes] = []
    for name, raw_name in _SIGNED:
        values = present.get(raw_name, ())
        # RFC 6376 5.4.2: several instances are signed from the bottom up; one more
        # instance than there is (over-signing) is signed as empty.
        names.extend([name] * (len(values) + 1))
        for value in reversed(values):
            signed.append(_relaxed_header(raw_name, value) + b"\r\n")
    tail = f" t={now or int(time.time())}; bh={body_hash}; b="
    joined, key = b"".join(signed), tuple(names)
    return b"".join([*(s.header(key, joined, tail) for s in signers), message])


def _fold(tags: str) -> str:
    """The DKIM-Signature header up to `b=`, folded at spaces and after the colons of h=.

    The signature is computed over this folded form (relaxed canonicalisation turns each
    fold into one space), so what verifiers see is exactly what was signed.
    """
    tokens = re.split(r"(?<=[ :])", tags)
    lines = ["DKIM-Signature: "]
    for token in tokens:
        if len(lines[-1]) + len(token.rstrip()) > 78:
            lines[-1] = lines[-1].rstrip()
            lines.append(" ")
        lines[-1] += token
    return "\r\n".join(lines)


def _with_signature(folded: str, signature: str) -> bytes:
    """The folded header with the b= value appended in chunks (its white space is
    ignored by verifiers)."""
    room = max(78 - len(folded.rsplit("\r\n", 1)[-1]), 0)
    chunks = [signature[:room]] + [signature[i:i + 72]
                                   for i in range(room, len(signature), 72)]
    text = folded + chunks[0] + "".join("\r\n " + c for c in chunks[1:] if c)
    return (text + "\r\n").encode("ascii")


def generate_key(algorithm: str = "ed25519") -> PrivateKey:
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise MailerError(f"Unknown DKIM algorithm {algorithm!r}: use ed25519 or rsa.")


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_key(path: Path) -> PrivateKey:
    """The private key in `path`; a MailerError when the file is missing, unreadable,
    not a key, or readable by its group or others."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise MailerError(f"The DKIM key {path} can be read by other users "
                              f"(mode {mode:o}).", hint=f"Run: chmod 600 {path}")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise MailerError(f"Cannot read the DKIM key {path}: {exc.strerror or exc}") \
            from None
    except (ValueError, TypeError) as exc:
        raise MailerError(f"Cannot read the DKIM key {path}: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
        raise MailerError(f"{path} is not an ed25519 or RSA key.")
    return key


def txt_record(key: PrivateKey) -> str:
    """The DNS TXT value publishing the key's public half."""
    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    der = public.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def txt_strings(record: str, size: int = 255) -> list[str]:
    """The record cut into the character-strings of a TXT record: at most 255 bytes each
    (RFC 1035 3.3); verifiers join them without a separator (RFC 6376 3.6.2.2). The
    record is ASCII, so a character is a byte."""
    return [record[i:i + size] for i in range(0, len(record), size)] or [""]
