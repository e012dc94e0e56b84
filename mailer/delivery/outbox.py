"""The sender's side of the outbox table: what is due, and writing what happened.

The methods are synchronous and run on the sender's database thread, but one:
`apply()` writes a group of state changes in one transaction (the "sending" marks that
must be committed before their SMTP transactions start, and the results of finished
ones), and the sender's status writer calls it as `apply_async()`, on its event loop: on
PostgreSQL the round then goes to the server from the event loop itself.

Every mail the engine sends is a delivery row: a campaign's (`campaign.kind` "campaign"),
and those of its own campaigns, always "sending": notices (confirmation, welcome, export;
delivery/notices.py) and sequence steps ("step"). An Outbox reads one campaign's due rows
in id order (`due`), and the due rows of the engine's own campaigns (`urgent_due`), which
the sender puts before the campaign's (sender.py). The send-time checks depend on the
kind (`send_check`).

On PostgreSQL with `claims` (delivery/claims.py) several senders share the outbox: `due`
and `urgent_due` first claim the rows they return (FOR UPDATE SKIP LOCKED), passing over
those of other live senders, and `recover` settles only the rows in flight of senders
whose lease ran out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import ARRAY

from mailer.audience.hashing import address_hash
from mailer.content.mailing import Recipient
from mailer.db import durable_begin
from mailer.dbtypes import Timestamp, placeholder, stamp
from mailer.delivery.claims import IN_FLIGHT, Claims, no_live_claim
from mailer.delivery.rendering import Due
from mailer.delivery.transports import Outcome
from mailer.models import (
    Campaign,
    CampaignKind,
    CampaignState,
    Delivery,
    DeliveryState,
    GlobalStatus,
    NoticeKind,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
    utcnow,
)

__all__ = ["Due", "Outbox", "Result", "send_check"]

log = logging.getLogger("mailer.delivery")

MAX_BACKOFF = timedelta(hours=6)
D = Delivery.__table__  # type: ignore[attr-defined]
P = Subscriber.__table__  # type: ignore[attr-defined]
S = Subscription.__table__  # type: ignore[attr-defined]
C = Campaign.__table__  # type: ignore[attr-defined]
OPEN = (DeliveryState.QUEUED, DeliveryState.DEFERRED, DeliveryState.SENDING)


@dataclass(frozen=True)
class Result:
    id: int
    outcome: Outcome
    attempts: int  # after this attempt
    message_id: str | None = None


def send_check(rule: str, *, erased: bool, person_status: str | None,
               member_status: str | None, suppressed: bool, list_gone: bool = False
               ) -> str | None:
    """Why a delivery must not go now, or None. `rule` is the mail's kind: a campaign's
    or a sequence step's ("campaign", "step") and a welcome go to confirmed members; a
    confirmation to a member not confirmed yet (pending, or unsubscribed and signed up
    again: the link brings them back); none of these to a suppressed address. An export
    goes to the person whatever their memberships and the suppression list say (they
    asked for it). Nothing to an erased or blocklisted person."""
    if erased:
        return "the subscriber was erased"
    if person_status != GlobalStatus.ACTIVE:
        return f"the subscriber is {person_status}"
    if list_gone:
        return "the list is gone"
    if rule == NoticeKind.EXPORT:
        return None
    if rule == NoticeKind.CONFIRM:
        if member_status is None:
            return "no longer a member (removed)"
        if member_status == SubscriptionStatus.CONFIRMED:
            return "confirmed meanwhile"
    elif member_status != SubscriptionStatus.CONFIRMED:
        return f"no longer subscribed ({member_status or 'removed'})"
    if suppressed:
        return "the address is on the suppression list"
    return None


def _people(deliveries: sa.FromClause) -> sa.Select[Any]:
    """The deliveries of `deliveries` (the table, or a claim's RETURNING) with what
    sending and its checks need of the person and of their subscription, in id order."""
    d = deliveries.c
    return (sa.select(d.id, d.campaign_id, d.list_id, d.attempts, d.subscriber_id,
                      P.c.email, P.c.first_name, P.c.infix, P.c.last_name, P.c.language,
                      P.c.attributes, P.c.status.label("person_status"),
                      S.c.status.label("member_status"))
            .select_from(deliveries.outerjoin(P, P.c.id == d.subscriber_id).outerjoin(
                S, sa.and_(S.c.subscriber_id == d.subscriber_id, S.c.list_id == d.list_id)))
            .order_by(d.id))


def _rule(kind: str, slug: str) -> str:
    """The send-time rule of a campaign (send_check)."""
    from mailer.delivery.notices import notice_kind

    if kind == CampaignKind.NOTICE:
        return notice_kind(slug) or kind
    return kind


class Outbox:
    def __init__(self, engine: Engine, campaign_id: int | None, hash_key: bytes, *,
                 max_attempts: int, retry_after: float,
                 on_rejected: Callable[[list[tuple[int, str]]], None] | None = None,
                 recover_system: bool = False, claims: Claims | None = None) -> None:
        """`campaign_id`: the campaign whose deliveries `due` reads (None: none, only the
        engine's own mails). `on_rejected` gets (delivery id, reply) of every 5xx at RCPT
        or DATA once it is committed: the return path classifies it and applies its
        policy (suppress, count, or warn when the rejection is about our sending).
        `recover_system`: `recover` also settles the engine's own deliveries left
        "sending" (only a sender holding the run lock may: `mailer run`). `claims`
        (PostgreSQL): this sender's lease; it reads only rows it claimed, and recovers
        only those of dead senders (of its own campaigns too, then)."""
        self.on_rejected = on_rejected
        self.engine = engine
        self.campaign_id = campaign_id
        self.hash_key = hash_key
        self.max_attempts = max_attempts
        self.retry_after = retry_after
        self.recover_system = recover_system or claims is not None
        self.claims = claims
        self._span: tuple[int, int] | None = None  # the campaign's ids (claims: `due`)
        if claims is not None and campaign_id is not None:
            claims.holds(campaign_id)

    def _system_ids(self, conn: sa.Connection) -> dict[int, str]:
        """The engine's own campaigns (notices, steps): id -> send-time rule."""
        return {row.id: _rule(row.kind, row.slug) for row in conn.execute(
            sa.select(C.c.id, C.c.kind, C.c.slug).where(
                C.c.kind != CampaignKind.CAMPAIGN.value,
                C.c.state == CampaignState.SENDING.value))}

    def _scopes(self, conn: sa.Connection, *, system: bool) -> list[sa.ColumnElement[bool]]:
        scopes = []
        if self.campaign_id is not None:
            scopes.append(D.c.campaign_id == self.campaign_id)
        if system:
            ids = list(self._system_ids(conn))
            if ids:
                scopes.append(D.c.campaign_id.in_(ids))
        return scopes

    def recover(self, *, retry_unknown: bool) -> tuple[int, int]:
        """After a crash: deliveries left "sending" were in flight and may have arrived.
        They become "unknown" (or queued again with `retry_unknown`). Returns (unknown
        found now, unknown queued again)."""
        now = sa.literal(utcnow(), Timestamp())
        found = requeued = 0
        with self.engine.begin() as conn:
            for scope in self._scopes(conn, system=self.recover_system):
                # with claims, only the rows of senders whose lease ran out: another
                # sender's messages in flight are its own business
                dead = () if self.claims is None else (no_live_claim(D.c.claimed_by),)
                found += conn.execute(D.update().where(
                    scope, D.c.state == DeliveryState.SENDING, *dead)
                    .values(state=DeliveryState.UNKNOWN, updated_at=now,
                            last_reply=IN_FLIGHT)).rowcount
                if retry_unknown:
                    requeued += conn.execute(D.update().where(
                        scope, D.c.state == DeliveryState.UNKNOWN)
                        .values(state=DeliveryState.QUEUED, updated_at=now)).rowcount
        return int(found), int(requeued)

    def due(self, after_id: int, limit: int, now: datetime) -> list[Due]:
        """The campaign's next deliveries to send, in id order, with the checks of send
        time (`send_check`): erased, blocklisted, unsubscribed from the list, or
        suppressed: skipped."""
        if self.campaign_id is None:
            return []
        where = [D.c.campaign_id == self.campaign_id, D.c.id > after_id]
        if self.claims is not None:
            # The claim walks the primary key (claims.Claims.claim): from the cursor, and
            # within the campaign's ids. From 0 each pass began by walking every older
            # campaign's rows, and the pass that finds nothing walked the whole table
            # (112 ms a pass at 600,000 rows, growing with the table). The walk is the
            # only way the planner is given: `campaign_id + 0` is in no index. Given
            # (campaign_id, state), with statistics taken before the campaign's rows
            # existed (a big table, autoanalyze not yet round) it fetched every queued
            # row of the campaign and sorted them, at each claim: quadratic.
            if after_id == 0 or self._span is None:
                self._span = self._id_span()
            if self._span is None:
                return []
            first, last = self._span
            where = [D.c.campaign_id + sa.literal_column("0") == self.campaign_id,
                     D.c.id > max(after_id, first - 1), D.c.id <= last]
        return self._claimed(where, limit, now,
                             rules={self.campaign_id: CampaignKind.CAMPAIGN.value})

    def _id_span(self) -> tuple[int, int] | None:
        """The lowest and highest id of the campaign's deliveries (None: it has none),
        from its rows in (campaign_id, state): `id + 0`, so that PostgreSQL does not
        look for the extremes by walking the primary key through other campaigns."""
        with self.engine.connect() as conn:
            first, last = conn.execute(
                sa.select(sa.func.min(D.c.id + 0), sa.func.max(D.c.id + 0))
                .where(D.c.campaign_id == self.campaign_id)).one()
        return None if first is None else (int(first), int(last))

    def urgent_due(self, limit: int, now: datetime, exclude: Collection[int] = ()
                   ) -> list[Due]:
        """The due deliveries of the engine's own campaigns (notices, sequence steps), in
        id order, but those in `exclude` (the sender has them in hand), each checked by
        its kind's rule."""
        with self.engine.connect() as conn:
            rules = self._system_ids(conn)
        if not rules:
            return []
        where = [D.c.campaign_id.in_(list(rules))]
        if exclude:
            where.append(D.c.id.not_in(list(exclude)))
        if self.claims is not None:
            for campaign_id in rules:
                self.claims.holds(campaign_id)
        return self._claimed(where, limit, now, rules=rules)

    def _claimed(self, where: list[sa.ColumnElement[bool]], limit: int, now: datetime,
                 rules: dict[int, str]) -> list[Due]:
        """Without claims: `_read`. With claims: the rows of `where` this sender claimed
        now, up to `limit`, queued or deferred and due, read in the claim's own statement
        (its UPDATE ... RETURNING joined to the people): one transaction of one claim,
        one read and the suppression list, where claiming, then reading back took two
        and 9 round trips, on the thread that also commits the marks. (PostgreSQL walks
        the primary key from the cursor and stops after `limit`, the only way `due`
        leaves it, so the OR costs nothing here;
        the two reads of `_read` are for SQLite's planner.)"""
        if self.claims is None:
            return self._read(*where, limit=limit, now=now, rules=rules)
        due = sa.or_(D.c.state == DeliveryState.QUEUED, sa.and_(
            D.c.state == DeliveryState.DEFERRED,
            D.c.next_attempt_at <= sa.literal(now, Timestamp())))
        with self.engine.connect() as conn:
            rows = self.claims.claim(conn, *where, due, limit=limit, read=_people)
            hashes, suppressed = self._suppressed(conn, rows)
            conn.commit()
        return self._checked(rows, hashes, suppressed, rules)

    def _read(self, *where: sa.ColumnElement[bool], limit: int, now: datetime,
              rules: dict[int, str]) -> list[Due]:
        base = _people(D).where(*where).limit(limit)
        # Queued and due deferred rows are read apart and merged: each query then walks the
        # (campaign, state, id) index in order and stops after `limit` rows. One query with
        # OR made SQLite collect and sort every open row at each call: quadratic in the
        # campaign's size (a million-recipient send slowed to a crawl).
        queued = base.where(D.c.state == DeliveryState.QUEUED)
        deferred = base.where(D.c.state == DeliveryState.DEFERRED,
                              D.c.next_attempt_at <= sa.literal(now, Timestamp()))
        with self.engine.connect() as conn:
            rows = sorted([*conn.execute(queued).all(), *conn.execute(deferred).all()],
                          key=lambda row: row.id)[:limit]
            hashes, suppressed = self._suppressed(conn, rows)
        return self._checked(rows, hashes, suppressed, rules)

    def _suppressed(self, conn: sa.Connection, rows: list[sa.Row[Any]]
                    ) -> tuple[dict[int, str], set[str]]:
        """The rows' address hashes (by delivery id), and those on the suppression list."""
        hashes = {row.id: address_hash(self.hash_key, row.email) for row in rows if row.email}
        if not hashes:
            return hashes, set()
        if conn.dialect.name == "postgresql":  # one statement text whatever the count
            listed = Suppression.email_hash == sa.any_(sa.bindparam(
                "hashes", list(hashes.values()), type_=ARRAY(sa.String)))
        else:
            listed = Suppression.email_hash.in_(list(hashes.values()))
        return hashes, set(conn.execute(sa.select(Suppression.email_hash).where(listed))
                           .scalars())

    @staticmethod
    def _checked(rows: list[sa.Row[Any]], hashes: dict[int, str], suppressed: set[str],
                 rules: dict[int, str]) -> list[Due]:
        """The rows as deliveries, each with the checks of send time (`send_check`)."""
        out = []
        for row in rows:
            reason = send_check(
                rules.get(row.campaign_id, CampaignKind.CAMPAIGN.value),
                erased=row.email is None, person_status=row.person_status,
                member_status=row.member_status, list_gone=row.list_id is None,
                suppressed=row.email is not None and hashes[row.id] in suppressed)
            recipient = None if reason else Recipient(
                subscriber_id=row.subscriber_id, email=row.email, first_name=row.first_name,
                last_name=row.last_name, language=row.language,
                attributes=dict(row.attributes or {}), infix=row.infix)
            out.append(Due(row.id, row.list_id or 0, row.attempts, recipient, reason,
                           campaign_id=row.campaign_id))
        return out

    def open_count(self) -> int:
        """Deliveries not in a final state (the campaign's; else the engine's own)."""
        with self.engine.connect() as conn:
            scopes = self._scopes(conn, system=self.campaign_id is None)
            if not scopes:
                return 0
            return int(conn.execute(sa.select(sa.func.count()).where(
                sa.or_(*scopes), D.c.state.in_(OPEN))).scalar_one())

    def next_state(self, outcome: Outcome, attempts: int) -> tuple[str, datetime | None]:
        if outcome.kind != DeliveryState.DEFERRED:
            return outcome.kind, None
        if attempts >= self.max_attempts:
            return DeliveryState.FAILED, None
        delay = timedelta(seconds=self.retry_after * 2 ** max(attempts - 1, 0))
        return DeliveryState.DEFERRED, utcnow() + min(delay, MAX_BACKOFF)

    def apply(self, sending: list[int], results: list[Result],
              skipped: list[tuple[int, str]], released: list[int] = ()) -> set[int]:
        """One transaction: mark `sending` (attempts + 1), record `results` and skips,
        and put `released` rows (marked, then not sent) back.
        Returns the ids actually marked: only rows still queued or deferred are, so a
        delivery cancelled meanwhile (or taken by another sender) is not sent.

        This runs for every few messages of a send, so it is plain SQL on the driver,
        without building SQLAlchemy statements. On SQLite each kind of change is one
        statement (an in-process call each); on PostgreSQL, where each statement is a
        round trip to the server and runs there, all of them are one statement
        (`_round_statement`), unless a delivery appears twice in the round. On SQLite,
        on the connection the sender holds (`hold_connection`), the statements and the
        commit on the driver alone; on PostgreSQL the held connection is
        `apply_async`'s."""
        marked = self._write(self.changes(sending, results, skipped, released))
        self._tell_rejected(results)
        return marked

    async def apply_async(self, sending: list[int], results: list[Result],
                          skipped: list[tuple[int, str]], released: list[int] = (), *,
                          db: Executor | None = None) -> set[int]:
        """`apply` for the sender's status writer, awaited on its event loop.

        PostgreSQL, once `hold_connection` was called: the round's one statement on the
        writer's own connection, opened on the event loop (psycopg's asyncio connection,
        `_AsyncRounds`): one round trip, and no thread between the event loop and the
        server. Through the database thread, a round waited for the thread to be free
        (the claims run there), for Python's lock on its way there and back, and for the
        event loop to see it done: 3.4 ms a round of ~11 marks where the statement
        takes 1.5, in a 30,000-recipient send (docs/performance.md). Otherwise (SQLite,
        a delivery twice in the round): `apply` on the database thread `db`.

        A round, once begun, is written whole even when the caller is cancelled meanwhile
        (a web app stopping its sender, the event loop closing): the cancellation waits
        for it. Cut off, its results would be lost (sent messages "unknown", resent by
        --retry-unknown) and its releases too. The 5xx replies among the results go to
        `on_rejected` on the database thread after the commit, queued there at once and
        not waited for (the marks are not held up by the return path's work)."""
        updates = self.changes(sending, results, skipped, released)
        loop = asyncio.get_running_loop()
        if self._rounds is None or not updates.distinct():
            marked = await _whole(loop.run_in_executor(db, self._write, updates))
        else:
            marked = await _whole(loop.create_task(self._rounds.apply(updates)))
        if self.on_rejected is not None and _rejected(results):
            loop.run_in_executor(db, self._tell_rejected, results).add_done_callback(
                _logged)
        return marked

    def _write(self, updates: _Updates) -> set[int]:
        if self._held is not None and updates.distinct():
            return self._held.apply(updates)
        with durable_begin(self.engine) as conn:  # a lost mark would mean a resend
            if self.engine.dialect.name == "postgresql" and updates.distinct():
                return _apply_round(conn, updates)
            return _apply_each(conn, updates, placeholder(self.engine.dialect))

    def _tell_rejected(self, results: list[Result]) -> None:
        rejected = _rejected(results)
        if rejected and self.on_rejected is not None:
            self.on_rejected(rejected)

    _held: _HeldConnection | None = None  # SQLite, from hold_connection() on
    _rounds: _AsyncRounds | None = None  # PostgreSQL, from hold_connection() on

    def hold_connection(self) -> None:
        """From now on until `release_connection`, rounds are written on a connection of
        their own: the sender's status writer, a round every few messages, holds one for
        its run (SQLite: `apply`'s, on the database thread; PostgreSQL: `apply_async`'s,
        opened by its first round on the event loop)."""
        if self.engine.dialect.name == "postgresql":
            if self._rounds is None:
                self._rounds = _AsyncRounds(self.engine)
        elif self._held is None:
            self._held = _HeldConnection(self.engine)

    def release_connection(self) -> None:
        """SQLite's held connection closed (PostgreSQL's: `release_connection_async`)."""
        if self._held is not None:
            self._held.close()
            self._held = None

    async def release_connection_async(self, db: Executor | None = None) -> None:
        """The held connection closed, either kind (SQLite's on the database thread)."""
        if self._rounds is not None:
            rounds, self._rounds = self._rounds, None
            await rounds.close()
        await asyncio.get_running_loop().run_in_executor(db, self.release_connection)

    def changes(self, sending: list[int], results: list[Result],
                skipped: list[tuple[int, str]], released: list[int]) -> _Updates:
        """A round's changes as the driver takes them, stamped now."""
        dialect = self.engine.dialect
        sent: list[tuple[int, str | None, str]] = []
        others: list[tuple[int, str, object, str, str | None]] = []
        for r in results:
            if r.outcome.kind == DeliveryState.SENT:
                sent.append((r.id, r.message_id, r.outcome.reply[:500]))
            else:
                state, retry_at = self.next_state(r.outcome, r.attempts)
                others.append((r.id, str(state), stamp(retry_at, dialect),
                               r.outcome.reply[:500], r.message_id))
        return _Updates(at=stamp(utcnow(), dialect), sending=list(sending), sent=sent,
                        others=others, skipped=[(i, why[:500]) for i, why in skipped],
                        released=list(released),
                        claimer=self.claims.id if self.claims is not None else None)


async def _whole(future: asyncio.Future[set[int]]) -> set[int]:
    """`future`'s result; cancelled meanwhile, it is waited for all the same (shielded),
    then the cancellation goes on."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise


def _logged(future: asyncio.Future[None]) -> None:
    """A job left to run by itself: its error said in one line, not lost."""
    if not future.cancelled() and future.exception() is not None:
        log.warning("the replies refused at sending could not be handed on: %s",
                    " ".join(str(future.exception()).split()))


def _rejected(results: list[Result]) -> list[tuple[int, str]]:
    """(delivery id, reply) of the round's 5xx at RCPT or DATA: the return path's, once
    committed (`Outbox.on_rejected`)."""
    return [(r.id, r.outcome.reply) for r in results if r.outcome.kind == DeliveryState.BOUNCED]


@dataclass(frozen=True)
class _Updates:
    """The changes of one status-writer round, as the driver takes them."""
    at: object  # the time stamped on every row (driver value)
    sending: list[int]
    sent: list[tuple[int, str | None, str]]  # id, message id, reply
    others: list[tuple[int, str, object, str, str | None]]  # id, state, retry at, reply, mid
    skipped: list[tuple[int, str]]  # id, reason
    released: list[int]
    # with claims (PostgreSQL): this sender's id. A mark then also needs the row to be
    # claimed by it still: one whose lease ran out, and whose rows another took, marks
    # none of them, however late its round reaches the database
    claimer: int | None = None

    def distinct(self) -> bool:
        """No delivery twice in the round (always so in the sender: a result is recorded
        after its mark's commit, a release instead of a result)."""
        ids = [*self.sending, *(u[0] for u in self.sent), *(u[0] for u in self.others),
               *(u[0] for u in self.skipped), *self.released]
        return len(ids) == len(set(ids))


def _apply_each(conn: sa.Connection | Callable[[str, Any], Iterable[Any]], u: _Updates,
                q: str) -> set[int]:
    """The round as one statement per kind of change, in order (executemany for the
    results and skips), on a connection or through `run(sql, parameters)`."""
    run = conn.exec_driver_sql if isinstance(conn, sa.Connection) else conn
    at = u.at
    marked: set[int] = set()
    if u.sending:
        fence = "" if u.claimer is None else f"AND claimed_by = {q} "
        marked = {row[0] for row in run(
            f"UPDATE delivery SET state = 'sending', attempts = attempts + 1, "
            f"updated_at = {q} WHERE id IN ({', '.join([q] * len(u.sending))}) "
            f"AND state IN ('queued', 'deferred') {fence}RETURNING id",
            (at, *u.sending, *(() if u.claimer is None else (u.claimer,))))}
    if u.sent:
        run(f"UPDATE delivery SET state = 'sent', message_id = {q}, last_reply = {q}, "
            f"sent_at = {q}, updated_at = {q}, next_attempt_at = NULL WHERE id = {q}",
            [(mid, reply, at, at, i) for i, mid, reply in u.sent])
    if u.others:
        run(f"UPDATE delivery SET state = {q}, next_attempt_at = {q}, last_reply = {q}, "
            f"message_id = {q}, updated_at = {q} WHERE id = {q}",
            [(state, retry_at, reply, mid, at, i)
             for i, state, retry_at, reply, mid in u.others])
    if u.skipped:
        run(f"UPDATE delivery SET state = 'skipped', last_reply = {q}, updated_at = {q} "
            f"WHERE id = {q}", [(why, at, i) for i, why in u.skipped])
    if u.released:  # marked, then not sent (the run stopped): as they were
        run(f"UPDATE delivery SET state = CASE WHEN attempts > 1 THEN 'deferred' "
            f"ELSE 'queued' END, attempts = attempts - 1, updated_at = {q} "
            f"WHERE id IN ({', '.join([q] * len(u.released))}) AND state = 'sending'",
            (at, *u.released))
    return marked


# PostgreSQL: each kind of change of a round is a data-modifying CTE of one statement,
# its rows passed as arrays (unnest), so a round is one statement whatever its size:
# one round trip, one parse and plan (psycopg prepares the few shapes that recur). The
# CTEs see the same snapshot and must not touch a row twice (`_Updates.distinct`); each
# keeps the condition its own statement had (the marks: still queued or deferred, and
# with claims still claimed by this sender: "sending_fenced"). The
# arrays go in binary (%(...)b): psycopg escapes each string of a text array in Python,
# ten times slower (5 against 35-60 us for 16 replies).
_ROUND_PARTS = {
    "sending": "UPDATE delivery SET state = 'sending', attempts = attempts + 1, "
               "updated_at = %(at)s WHERE id = ANY(%(sending)b::int[]) "
               "AND state IN ('queued', 'deferred') RETURNING id",
    "sent": "UPDATE delivery AS d SET state = 'sent', message_id = v.mid, "
            "last_reply = v.reply, sent_at = %(at)s, updated_at = %(at)s, "
            "next_attempt_at = NULL FROM unnest(%(sent_id)b::int[], %(sent_mid)b::text[], "
            "%(sent_reply)b::text[]) AS v(id, mid, reply) WHERE d.id = v.id",
    "others": "UPDATE delivery AS d SET state = v.state, next_attempt_at = v.retry_at, "
              "last_reply = v.reply, message_id = v.mid, updated_at = %(at)s "
              "FROM unnest(%(other_id)b::int[], %(other_state)b::text[], "
              "%(other_retry)b::timestamptz[], %(other_reply)b::text[], "
              "%(other_mid)b::text[]) AS v(id, state, retry_at, reply, mid) "
              "WHERE d.id = v.id",
    "skipped": "UPDATE delivery AS d SET state = 'skipped', last_reply = v.reply, "
               "updated_at = %(at)s FROM unnest(%(skip_id)b::int[], %(skip_reply)b::text[]) "
               "AS v(id, reply) WHERE d.id = v.id",
    "released": "UPDATE delivery SET state = CASE WHEN attempts > 1 THEN 'deferred' "
                "ELSE 'queued' END, attempts = attempts - 1, updated_at = %(at)s "
                "WHERE id = ANY(%(released)b::int[]) AND state = 'sending'",
}


_ROUND_PARTS["sending_fenced"] = _ROUND_PARTS["sending"].replace(
    " RETURNING id", " AND claimed_by = %(claimer)s RETURNING id")


def _round_statement(kinds: tuple[str, ...]) -> str:
    """The one statement of a round that has changes of `kinds`: the ids it marked, and
    one row more (id NULL) that makes its own commit durable, `synchronous_commit` on
    for this transaction alone, whatever the server's default. Said in the statement,
    not with a SET on the session: through PgBouncer in transaction mode a session's
    SET lands on some server connection, not necessarily the next statement's."""
    ctes = ",\n".join(f"{kind.removesuffix('_fenced')} AS ({_ROUND_PARTS[kind]})"
                      for kind in kinds)
    durable = "SELECT NULL::int AS id, set_config('synchronous_commit', 'on', true)"
    marks = ("\nUNION ALL SELECT id, NULL FROM sending"
             if {"sending", "sending_fenced"} & set(kinds) else "")
    return f"WITH {ctes}\n{durable}{marks}"


def _round_parameters(u: _Updates) -> tuple[str, dict[str, object]] | None:
    """The round's statement and its parameters (None: nothing to write)."""
    params: dict[str, object] = {"at": u.at}
    if u.sending:
        params["sending"] = u.sending
        if u.claimer is not None:
            params["claimer"] = u.claimer
    if u.released:
        params["released"] = u.released
    for prefix, rows, names in (("sent", u.sent, ("id", "mid", "reply")),
                                ("other", u.others, ("id", "state", "retry", "reply", "mid")),
                                ("skip", u.skipped, ("id", "reply"))):
        if rows:
            params.update({f"{prefix}_{name}": list(column)
                           for name, column in zip(names, zip(*rows, strict=True),
                                                   strict=True)})
    marking = "sending" if u.claimer is None else "sending_fenced"
    kinds = tuple(kind for kind, rows in ((marking, u.sending), ("sent", u.sent),
                                          ("others", u.others), ("skipped", u.skipped),
                                          ("released", u.released)) if rows)
    return (_round_statement(kinds), params) if kinds else None


def _apply_round(conn: sa.Connection, u: _Updates) -> set[int]:
    statement = _round_parameters(u)
    if statement is None:
        return set()
    return {row[0] for row in conn.exec_driver_sql(*statement) if row[0] is not None}


class _HeldConnection:
    """SQLite: the status writer's own connection, held for a run, on the database
    thread. It is at `synchronous=FULL` for its session (durable, as `durable_begin`
    sets it for one transaction), and a round is its statements and the commit on the
    driver: through the pool and SQLAlchemy it was eight calls more (the checkout, the
    level set and set back, each with a commit, the reset on return), ~0.2 ms of the
    database thread's CPU a round, which the event loop waited for (one lock for
    Python's threads).

    After an error it is closed (its transaction rolled back), and the next round opens
    another; it never goes back to the pool with its settings."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: sa.Connection | None = None

    def _open(self) -> sa.Connection:
        from mailer import db

        conn = self.engine.connect()
        # no transaction is open: the level can change
        conn.connection.driver_connection.execute(f"PRAGMA synchronous={db.DURABLE}")
        self._conn = conn
        return conn

    def apply(self, u: _Updates) -> set[int]:
        conn = self._conn if self._conn is not None else self._open()
        try:
            driver = conn.connection.driver_connection
            cursor = driver.cursor()

            def run(sql: str, params: Any) -> Iterable[Any]:
                if isinstance(params, list):
                    return cursor.executemany(sql, params)
                return cursor.execute(sql, params).fetchall()

            error = self.engine.dialect.loaded_dbapi.Error
            try:
                marked = _apply_each(run, u, "?")  # the first UPDATE began it
                driver.commit()
            except error as exc:  # as SQLAlchemy's, which the CLI says in one line
                # Its write lock goes now: closed with a statement of the cursor still
                # alive (held by the error's traceback, which an event loop keeps for a
                # while), the connection would stay open underneath, holding it.
                driver.rollback()
                raise sa.exc.DBAPIError.instance(None, None, exc, error) from None
            finally:
                cursor.close()
            return marked
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.invalidate()  # closed, not handed out again by the pool with its settings
            conn.close()


class _AsyncRounds:
    """PostgreSQL: the status writer's own connection, held for a run, on the sender's
    event loop (psycopg's asyncio connection, made from the engine's URL as the engine
    makes its own). A round is one round trip: its one statement (`_round_statement`),
    where through the pool it was five (the pool's ping, which begins a transaction;
    SET LOCAL; the statement; COMMIT), and where through the database thread it also
    waited for that thread, and for Python's lock twice (`Outbox.apply_async`).

    The connection is in autocommit mode, so the round's one statement is a transaction
    of its own, whole or not at all, and the statement turns `synchronous_commit` on for
    itself: every commit on it is durable, as `durable_begin` makes the marks elsewhere.
    Its statements take a generic plan (`plan_cache_mode`, for the session): a round's
    few shapes, prepared by psycopg, are planned once, where a custom plan for each
    round cost the server ~105 us (17 us a message, a third of its work for the round).

    After an error (or a cancellation mid-round) it is closed, the error raised as
    SQLAlchemy's (which the CLI says in one line); the next round opens another."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Any = None  # psycopg.AsyncConnection

    async def _open(self) -> Any:
        import psycopg

        args, options = self.engine.dialect.create_connect_args(self.engine.url)
        conn = await psycopg.AsyncConnection.connect(*args, **options, autocommit=True)
        try:
            await conn.execute("SET plan_cache_mode = force_generic_plan")
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return conn

    async def apply(self, u: _Updates) -> set[int]:
        import psycopg

        statement = _round_parameters(u)
        if statement is None:
            return set()
        try:
            conn = self._conn if self._conn is not None else await self._open()
            cursor = await conn.execute(*statement)
            rows = await cursor.fetchall()
        except psycopg.Error as exc:
            await self.close()
            raise sa.exc.DBAPIError.instance(None, None, exc, psycopg.Error) from None
        except BaseException:
            await self.close()
            raise
        return {row[0] for row in rows if row[0] is not None}

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()
