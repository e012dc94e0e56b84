"""Forgetting a person (AVG/GDPR art. 17): one transaction, then the bytes off the disk.

In the transaction: the subscriber row is deleted, and with it (ON DELETE CASCADE) their
memberships, consent events (with IP and user agent), confirmation mails and feedback
events; their deliveries stay for the campaigns' counts, cut loose (subscriber NULL) with
the last reply (which may quote the address) and the Message-ID (derived from their token)
cleared. The keyed hash of the address joins the suppression list (`erased`), so a later
import or sign-up cannot add them again silently; an explicit new sign-up with fresh
consent can. A delivery still queued for them is skipped at send time ("the subscriber was
erased"); one already in flight cannot be called back.

Off the disk: SQLite keeps deleted content in free space and old pages in the WAL. Every
connection runs with `secure_delete` on (db.py: deleted content is overwritten with
zeros, at the cost of a memset per freed cell), and after the commit the WAL is
checkpointed and truncated, so once `gdpr erase` returns neither the database file nor its
WAL holds the address or the name. A reader holding an old snapshot can keep the
checkpoint from finishing: then `disk_clean` is False and the caller says so (the next
checkpoint completes it). PostgreSQL: no row holds them; dead tuples go at the next
(auto)vacuum.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import Engine

from mailer.audience.hashing import address_hash
from mailer.models import (
    AuditLog,
    ConsentEvent,
    Delivery,
    FeedbackEvent,
    SequenceProgress,
    Subscriber,
    Subscription,
    Suppression,
    SuppressionReason,
    utcnow,
)

__all__ = ["Erased", "checkpoint", "erase_person"]

P = Subscriber.__table__  # type: ignore[attr-defined]
D = Delivery.__table__  # type: ignore[attr-defined]
X = Suppression.__table__  # type: ignore[attr-defined]
A = AuditLog.__table__  # type: ignore[attr-defined]
_COUNTED = {"memberships": Subscription.__table__,  # type: ignore[attr-defined]
            "consent_events": ConsentEvent.__table__,  # type: ignore[attr-defined]
            "sequences": SequenceProgress.__table__,  # type: ignore[attr-defined]
            "feedback_events": FeedbackEvent.__table__}  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Erased:
    subscriber_id: int | None  # None: there was nobody to erase (only the hash is added)
    removed: dict[str, int]  # rows deleted or cut loose, per kind
    newly_suppressed: bool
    disk_clean: bool  # SQLite: the WAL was checkpointed and truncated


def erase_person(engine: Engine, hash_key: bytes, email: str, *, actor: str,
                 dry_run: bool = False, source: str | None = None) -> Erased:
    """Erase the subscriber with this normalised address. An address nobody holds is
    still suppressed (a person may ask not to be mailed before they are imported).
    `source` (e.g. "web": the person, on their preferences page) goes in the audit trail."""
    digest = address_hash(hash_key, email)
    now = utcnow()
    with engine.connect() as conn, conn.begin() as transaction:
        subscriber_id = conn.execute(sa.select(P.c.id).where(P.c.email == email)) \
            .scalar_one_or_none()
        known = conn.execute(sa.select(X.c.id).where(X.c.email_hash == digest)).first()
        if subscriber_id is None and known is not None:
            return Erased(None, {}, False, True)  # erased (or suppressed) before
        removed: dict[str, int] = {}
        if subscriber_id is not None:
            for name, table in _COUNTED.items():
                removed[name] = int(conn.execute(sa.select(sa.func.count()).where(
                    table.c.subscriber_id == subscriber_id)).scalar_one())
            # Not yet sent: skipped now. The sender claims a row only while it is queued
            # or deferred, so one it already read (and rendered) is not sent either.
            conn.execute(D.update().where(D.c.subscriber_id == subscriber_id,
                                          D.c.state.in_(("queued", "deferred")))
                         .values(state="skipped", updated_at=now,
                                 last_reply="the subscriber was erased"))
            removed["deliveries"] = int(conn.execute(
                D.update().where(D.c.subscriber_id == subscriber_id)
                .values(subscriber_id=None, message_id=None, last_reply=sa.case(
                    (D.c.state == "skipped", D.c.last_reply),
                    (D.c.last_reply.is_(None), None), else_="(erased)"))).rowcount)
            conn.execute(P.delete().where(P.c.id == subscriber_id))
        newly = known is None
        if newly:
            conn.execute(X.insert().values(email_hash=digest, reason=SuppressionReason.ERASED,
                                           note="gdpr erase", created_at=now))
        conn.execute(A.insert().values(at=now, actor=actor[:100], action="gdpr.erase",
                                       detail={"subscriber": subscriber_id, **removed,
                                               "dry_run": dry_run,
                                               **({"source": source} if source else {})}))
        if dry_run:
            transaction.rollback()
    clean = True if dry_run else checkpoint(engine)
    return Erased(subscriber_id, removed, newly, clean)


def checkpoint(engine: Engine) -> bool:
    """SQLite: copy the WAL into the database and truncate it (its frames hold old page
    images). True when done (always on PostgreSQL)."""
    if engine.dialect.name != "sqlite":
        return True
    with engine.connect() as conn:
        busy, _, _ = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
    return not busy
