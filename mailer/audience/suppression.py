"""The global suppression list: keyed hashes of addresses that must never be mailed.

The hash is a keyed BLAKE2b with the project's `hash_key` over the normalised address
(hashing.py), so the table proves "this address is suppressed" without holding the address,
and an erased person stays unmailable without being identifiable. It is keyed (not a bare
hash) so a leaked database cannot be checked against a list of known addresses.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlmodel import Session, select

from mailer.audience.hashing import address_hash
from mailer.models import Suppression, SuppressionReason, utcnow

__all__ = ["address_hash", "is_suppressed", "suppress", "suppressed_hashes", "unsuppress"]


def is_suppressed(session: Session, hash_key: bytes, email: str) -> bool:
    digest = address_hash(hash_key, email)
    query = select(Suppression.id).where(Suppression.email_hash == digest)
    return session.exec(query).first() is not None


def suppressed_hashes(session: Session, digests: Iterable[str]) -> set[str]:
    """The subset of `digests` that is suppressed (one query)."""
    digests = list(digests)
    if not digests:
        return set()
    rows = session.exec(select(Suppression.email_hash).where(Suppression.email_hash.in_(digests)))
    return set(rows)


def suppress(session: Session, hash_key: bytes, email: str, reason: SuppressionReason,
             note: str = "") -> bool:
    """Add an address; False if it was already suppressed (the first reason stays).

    Core statements on the session's connection (what the session holds is flushed
    first): the return path suppresses for many messages a second, and the ORM's unit of
    work cost more than the rest of such a message."""
    digest = address_hash(hash_key, email)
    session.flush()
    conn = session.connection()
    if conn.execute(_SUPPRESSED, {"digest": digest}).first() is not None:
        return False
    conn.execute(_ADD, {"email_hash": digest, "reason": reason, "note": note,
                        "created_at": utcnow()})
    return True


_T = Suppression.__table__  # type: ignore[attr-defined]
_SUPPRESSED = sa.select(_T.c.id).where(_T.c.email_hash == sa.bindparam("digest"))
_ADD = _T.insert()


def unsuppress(session: Session, hash_key: bytes, email: str) -> bool:
    """Remove an address from the list (manual, audited by the caller)."""
    digest = address_hash(hash_key, email)
    row = session.exec(select(Suppression).where(Suppression.email_hash == digest)).first()
    if row is None:
        return False
    session.delete(row)
    return True
