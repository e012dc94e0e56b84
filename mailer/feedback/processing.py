"""From a returned message to events and actions: attribution, idempotency, a savepoint
per message in a transaction per batch.

Attribution, strongest evidence first (one `by` per event):
    token       the signed VERP token in the address the report was sent to
                (`bounces+TOKEN@`, `unsub+TOKEN@` in Delivered-To / X-Original-To / To)
    headers     a token in the returned original (its Return-Path, List-Unsubscribe)
    message-id  the returned original's (or an auto-reply's In-Reply-To) Message-ID,
                looked up in the outbox (indexed: every mail, notices included)
    address     the failed recipient's address, looked up among the subscribers
A token that does not verify (forged, mangled, another project's) attributes nothing; the
next kind of evidence is tried.

Idempotency: the key of a message is the SHA-256 of its bytes; its events are unique on
(key, seq), and written in the transaction that acts on the message (`bounces process`
records messages in batches, a transaction each, a savepoint per message: see Batch).
A message read again (a crash between processing and deleting it, a second
`bounces process` at the same time) finds its events and changes nothing; two processes
racing on it: the second one's insert fails on the unique key and it rolls back.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

from mailer.feedback.policy import Policy, Target, apply, planned
from mailer.feedback.reasons import extract_codes
from mailer.feedback.reports import Original, Report, failed_recipient, read_report
from mailer.models import (
    Delivery,
    FeedbackEvent,
    FeedbackKind,
    Subscriber,
    utcnow,
)
from mailer.tokens import Purpose, Signer, TokenError

__all__ = ["Attribution", "Batch", "Outcome", "Processor", "explain", "message_key"]

log = logging.getLogger("mailer.feedback")
E = FeedbackEvent.__table__  # type: ignore[attr-defined]
D = Delivery.__table__  # type: ignore[attr-defined]
P = Subscriber.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Attribution:
    by: str  # token | headers | message-id | address
    subscriber_id: int
    campaign_id: int | None
    list_id: int | None
    delivery_id: int | None

    def target(self) -> Target:
        return Target(self.subscriber_id, self.list_id, self.campaign_id, self.delivery_id)

    def as_dict(self) -> dict[str, object]:
        return {"by": self.by, "subscriber": self.subscriber_id, "campaign": self.campaign_id,
                "list": self.list_id, "delivery": self.delivery_id}


@dataclass
class Outcome:
    """What processing one message did."""

    key: str
    report: Report
    attribution: Attribution | None
    actions: list[str] = field(default_factory=list)
    duplicate: bool = False


def message_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Processor:
    """Processes returned messages for one project."""

    def __init__(self, engine: Engine, signer: Signer, hash_key: bytes,
                 policy: Policy | None = None) -> None:
        self.engine = engine
        self.signer = signer
        self.hash_key = hash_key
        self.policy = policy or Policy()

    def process(self, data: bytes, *, source: str, dry_run: bool = False,
                now: datetime | None = None) -> Outcome:
        """Read, attribute, record and act on one message, in one transaction. Raises
        reports.Unreadable for bytes that are not a message."""
        report = read_report(data)
        return self.record(report, message_key(data), source=source, dry_run=dry_run,
                           now=now)

    def record_rejection(self, delivery_id: int, reply: str) -> Outcome | None:
        """A 5xx the relay answered at RCPT or DATA, classified and acted on like a
        returned bounce (None when the delivery's person is gone)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(D.c.subscriber_id, D.c.campaign_id, D.c.list_id, P.c.email)
                .select_from(D.join(P, P.c.id == D.c.subscriber_id))
                .where(D.c.id == delivery_id)).first()
        if row is None:
            return None
        code, status = extract_codes(reply)
        report = Report("bounce", (failed_recipient(row.email, "failed", status, code,
                                                    reply),),
                        Original(), (), None, "")
        attribution = Attribution("smtp", row.subscriber_id, row.campaign_id, row.list_id,
                                  delivery_id)
        return self.record(report, f"smtp:{delivery_id}", source="smtp",
                           attribution=attribution)

    def record(self, report: Report, key: str, *, source: str, dry_run: bool = False,
               now: datetime | None = None,
               attribution: Attribution | None = None) -> Outcome:
        """Record and act on a report (from a message, or built by a webhook), in a
        transaction of its own; `attribution` when the caller knows whom it is about."""
        with self.batch(dry_run=dry_run) as batch:
            outcome = batch.record(report, key, source=source, now=now,
                                   attribution=attribution)
            batch.commit()
        return outcome

    def batch(self, *, dry_run: bool = False) -> Batch:
        """Several messages in one transaction (`bounces process`: the commit cost more
        than the rest of a message's database work)."""
        return Batch(self, dry_run=dry_run)


class Batch:
    """Messages recorded in one transaction, each in a savepoint of its own: a message
    whose recording fails is rolled back alone, the others stay. Nothing is kept until
    `commit`; a caller moves or deletes the messages only after it, so a crash before it
    leaves them to be read again, and their keys (written in the same transaction) make
    that count once. A dry run rolls each message back, as if it were alone."""

    def __init__(self, processor: Processor, *, dry_run: bool = False) -> None:
        self.processor = processor
        self.dry_run = dry_run
        self.session = Session(processor.engine, expire_on_commit=False)
        self.size = 0
        self._conn: sa.Connection | None = None
        self._cursor: Any = None  # the driver's, for the savepoints

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._cursor is not None:
            self._cursor.close()
        self.session.close()  # rolls back what was not committed

    def _connection(self) -> sa.Connection:
        if self._conn is None:
            conn = self._conn = self.session.connection()
            # Python's sqlite3 begins a transaction at the first write only: a SAVEPOINT
            # before that would begin it, and its RELEASE commit it. Begun here instead,
            # IMMEDIATE: it reads before it writes, and a deferred one that another
            # connection wrote past meanwhile (the sender pausing its campaign) fails at
            # its first write with "database is locked" at once, the busy timeout unused.
            if conn.dialect.name == "sqlite":
                raw = conn.connection.dbapi_connection
                if raw is not None and not raw.in_transaction:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
            self._cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        return self._conn

    def process(self, data: bytes, *, source: str, now: datetime | None = None) -> Outcome:
        """Read, attribute, record and act on one message. Raises reports.Unreadable for
        bytes that are not a message (nothing written)."""
        report = read_report(data)
        return self.record(report, message_key(data), source=source, now=now)

    def record(self, report: Report, key: str, *, source: str, now: datetime | None = None,
               attribution: Attribution | None = None) -> Outcome:
        """The event rows are written with Core statements built once (the ORM's unit of
        work cost more than the rest of the message together); the policy's writes share
        the session's transaction. Any failure rolls this message back alone, then
        raises."""
        now = now or utcnow()
        conn = self._connection()
        self._savepoint("SAVEPOINT")
        try:
            outcome = self._record(conn, self.processor.signer, report, key, source, now,
                                   attribution)
        except BaseException:
            self._savepoint("ROLLBACK TO SAVEPOINT")
            self._savepoint("RELEASE SAVEPOINT")
            raise
        if outcome.duplicate or self.dry_run:
            self._savepoint("ROLLBACK TO SAVEPOINT")
        else:
            self.size += 1
        self._savepoint("RELEASE SAVEPOINT")
        return outcome

    def _savepoint(self, verb: str) -> None:
        """A plain savepoint statement on the driver's cursor: the session's nested
        transactions cost as much as the rest of a message's statements together, and the
        policy writes with Core statements only (the session's unit of work holds
        nothing). A failure is the database's (OperationalError): the batch stops."""
        statement = f"{verb} feedback_message"
        try:
            self._cursor.execute(statement)
        except Exception as exc:  # noqa: BLE001 - the driver's own error classes
            raise OperationalError(statement, None, exc) from exc

    def _record(self, conn: sa.Connection, signer: Signer, report: Report, key: str,
                source: str, now: datetime, attribution: Attribution | None) -> Outcome:
        processor, session = self.processor, self.session
        if conn.execute(_SEEN, {"key": key}).first() is not None:
            return Outcome(key, report, None, duplicate=True)
        attribution = attribution or attribute(conn, signer, report)
        outcome = Outcome(key, report, attribution)
        target = attribution.target() if attribution else None
        for row in _events(report, attribution, key, source, now):
            event = SimpleNamespace(**row)
            # A soft bounce counts itself among the subscriber's events: written first,
            # its action set after. Every other plan reads no events: the row is written
            # once, with its action (the same rows, one statement less).
            counted = target is not None and planned(
                event.kind, hard=event.hard, sender_side=event.sender_side
            ) == "count-soft-bounce"
            if not counted:
                row["action"] = apply(session, processor.hash_key, processor.policy, event,
                                      target, now=now)
            try:
                conn.execute(_INSERT, row)
            except IntegrityError:  # processed meanwhile by another process (the
                # savepoint is rolled back by the caller)
                return Outcome(key, report, attribution, duplicate=True)
            if counted:
                row["action"] = apply(session, processor.hash_key, processor.policy, event,
                                      target, now=now)
                conn.execute(_SET_ACTION, {"k": key, "n": row["seq"], "act": row["action"]})
            outcome.actions.append(row["action"])
        return outcome

    def commit(self) -> None:
        """Keep what was recorded since the last commit (a dry run: nothing)."""
        if self.dry_run:
            self.session.rollback()
        else:
            self.session.commit()
        if self._cursor is not None:
            self._cursor.close()
        self._conn = self._cursor = None
        self.size = 0


# The statements of every message, built once.
_SEEN = sa.select(E.c.id).where(E.c.message_key == sa.bindparam("key")).limit(1)
_INSERT = E.insert()
_SET_ACTION = E.update().where(E.c.message_key == sa.bindparam("k"),
                               E.c.seq == sa.bindparam("n")).values(
                                   action=sa.bindparam("act"))
_PERSON_BY_ADDRESS = sa.select(P.c.id).where(P.c.email == sa.bindparam("email"))
# The person a token names, and the delivery of its campaign to them (None without one):
# one statement (a campaign id of 0, no campaign, matches no delivery).
_PERSON_AND_DELIVERY = (
    sa.select(P.c.id, D.c.id.label("delivery_id"))
    .select_from(P.outerjoin(D, sa.and_(D.c.subscriber_id == P.c.id,
                                        D.c.campaign_id == sa.bindparam("campaign"))))
    .where(P.c.id == sa.bindparam("id")).limit(1))
_DELIVERY_BY_ID = sa.select(D.c.id, D.c.campaign_id, D.c.subscriber_id, D.c.list_id).where(
    D.c.message_id == sa.bindparam("mid"))


def _events(report: Report, attribution: Attribution | None, key: str, source: str,
            now: datetime) -> list[dict[str, Any]]:
    """The feedback_event rows of a report, every column given (as the model's defaults)."""
    common = {"message_key": key, "at": now, "source": source[:200], "kind": report.kind,
              "attributed_by": attribution.by if attribution else None,
              "subscriber_id": attribution.subscriber_id if attribution else None,
              "campaign_id": attribution.campaign_id if attribution else None,
              "list_id": attribution.list_id if attribution else None,
              "delivery_id": attribution.delivery_id if attribution else None,
              "action": ""}
    if not report.recipients:
        reason = {FeedbackKind.AUTO_REPLY: "vacation"}.get(report.kind)
        return [{"seq": 0, "reason": reason, "hard": False, "sender_side": False,
                 "status": None, "reply_code": None, "diagnostic": None, "domain": None,
                 **common}]
    return [{"seq": seq, "reason": r.reason.value, "hard": r.hard,
             "sender_side": r.sender_side, "status": r.status, "reply_code": r.reply_code,
             "diagnostic": r.diagnostic or None,
             "domain": r.address.rpartition("@")[2] if r.address else None, **common}
            for seq, r in enumerate(report.recipients)]


# --- attribution ----------------------------------------------------------------------------

def attribute(conn: sa.Connection, signer: Signer, report: Report) -> Attribution | None:
    for by, tokens in (("token", report.envelope_tokens), ("headers", report.original.tokens)):
        for _, token in tokens:
            found = _from_token(conn, signer, token, by)
            if found is not None:
                return found
    for message_id in report.original.message_ids:
        found = _from_message_id(conn, message_id)
        if found is not None:
            return found
    addresses = [r.address for r in report.recipients if r.address]
    if report.kind in (FeedbackKind.AUTO_REPLY, FeedbackKind.OTHER) and report.sender:
        addresses.append(report.sender)
    addresses += list(report.original.to) if report.kind == FeedbackKind.COMPLAINT else []
    for address in addresses:
        subscriber_id = conn.execute(_PERSON_BY_ADDRESS, {"email": address.lower()}
                                     ).scalar_one_or_none()
        if subscriber_id is not None:
            return Attribution("address", subscriber_id, None, None, None)
    return None


def _from_token(conn: sa.Connection, signer: Signer, token: str,
                by: str) -> Attribution | None:
    try:
        data = signer.read(token, Purpose.MESSAGE)
    except TokenError:
        return None
    row = conn.execute(_PERSON_AND_DELIVERY, {"id": data.subscriber_id,
                                              "campaign": data.campaign_id or 0}).first()
    if row is None:
        return None  # erased since
    delivery_id = row.delivery_id if data.campaign_id else None
    return Attribution(by, data.subscriber_id, data.campaign_id or None,
                       data.list_id or None, delivery_id)


def _from_message_id(conn: sa.Connection, message_id: str) -> Attribution | None:
    row = conn.execute(_DELIVERY_BY_ID, {"mid": message_id}).first()
    if row is not None and row.subscriber_id is not None:
        return Attribution("message-id", row.subscriber_id, row.campaign_id, row.list_id,
                           row.id)
    return None


# --- explain --------------------------------------------------------------------------------

def explain(report: Report, attribution: Attribution | None,
            actions: list[str] | None = None) -> dict[str, object]:
    """The `bounces explain --json` object."""
    if actions:
        action: object = actions[0] if len(set(actions)) == 1 else actions
    else:
        plans = [planned(report.kind, hard=r.hard, sender_side=r.sender_side)
                 for r in report.recipients] or [planned(report.kind, hard=False,
                                                         sender_side=False)]
        action = plans[0] if len(set(plans)) == 1 else plans
    return {
        "kind": report.kind,
        "recipients": [{"address": r.address, "action": r.action, "status": r.status,
                        "reply_code": r.reply_code, "reason": r.reason.value, "hard": r.hard,
                        "sender_side": r.sender_side, "diagnostic": r.diagnostic,
                        "remote_mta": r.remote_mta} for r in report.recipients],
        "attributed": attribution.as_dict() if attribution else None,
        "action": action,
        "subject": report.subject,
        "feedback_type": report.feedback_type,
    }
