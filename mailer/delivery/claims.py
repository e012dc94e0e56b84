"""Several senders over one PostgreSQL database: leases and claims (issue 17, point 1).

Each sender (`mailer worker`, `mailer run`, `campaign send`, the web app's notices) that
sends on PostgreSQL registers a `sender` row and holds a lease on it: `lease_until`, in the
database's clock, renewed every third of `[delivery] lease_seconds` by a thread of its own
while the process lives. The deliveries it takes from the outbox carry its id:

    UPDATE delivery SET claimed_by = :me WHERE id IN (
        SELECT id FROM delivery WHERE <due, in id order>
          AND <claimed by nobody, by me, or by a sender whose lease ran out>
        ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED) RETURNING ...

(the outbox reads the rows it claimed, with their people, in the same statement) so any
number of senders split the due rows between them without waiting for each other.
What the claims promise, and what keeps each promise:

- **No recipient twice.** A claim only shares the work out. What makes a send exclusive
  is still the mark: "sending" is written, committed, before the SMTP transaction, only
  where the row is still queued or deferred (`Outbox.apply`); PostgreSQL's row locks let
  one of two senders mark it. A sender also stops marking once its lease is no longer
  surely its own (`fresh`: the last renewal began more than two thirds of a lease ago, or
  the renewal found the row gone): a sender stalled past its lease (a frozen VM) does not
  send what another has taken since. And its marks are fenced: a mark also needs the row
  to be claimed by it still (`claimed_by = me` in the same UPDATE), so a round that
  reaches the database late marks nothing another sender has claimed meanwhile.
- **None skipped.** A dead sender's claims name a sender whose lease has run out (or whose
  row is gone): its queued and deferred rows are due again for everyone after at most one
  lease. A sender that ends in order hands its claims back at once (`release`). And a
  sender on the same machine (the same boot and pid namespace: `machine`) sees at once
  that another's process is gone and removes its row (as it registers, and at each
  renewal): after a crash, the restarted worker or the next cron run goes on at once.
- **In flight means unknown, decided safely.** A dead sender's "sending" rows may have
  arrived: they become "unknown" (`reap`, by any live sender: each renewal, and each
  send's start), never resent silently. Only rows whose claim names no live sender, by the
  database's clock: a live sender's in-flight rows are never touched, whatever the
  machines' clocks say. Rows "sending" without a claim (left before migration 0014) count
  as a dead sender's.

SQLite keeps one sender per project (the run lock, lock.py): there `claims_for` is None.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mailer.models import Campaign, Delivery, DeliveryState, SenderLease

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["Claims", "live_senders"]

log = logging.getLogger("mailer.delivery")
D = Delivery.__table__  # type: ignore[attr-defined]
W = SenderLease.__table__  # type: ignore[attr-defined]
C = Campaign.__table__  # type: ignore[attr-defined]
RATE_WINDOW = 60.0  # seconds: the rate a sender shows is its sends over the last minute
IN_FLIGHT = "in flight when the sender stopped: it may have arrived"


def machine() -> str | None:
    """Where this process's pid means something: the kernel's boot and its pid namespace
    (None where /proc does not say). Two senders with the same one see each other's
    processes; different containers on one host, or hosts, never share it."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        space = os.stat("/proc/self/ns/pid")
    except OSError:
        return None
    return hashlib.sha256(f"{boot}:{space.st_dev}:{space.st_ino}".encode()).hexdigest()[:32]


def _gone(pid: int) -> bool:
    """Whether no process has this pid (in this pid namespace). A process of another
    user, or a zombie, counts as there: its lease decides."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _until(seconds: float) -> sa.ColumnElement[object]:
    """now() + seconds, in the database's clock."""
    return sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds)


def no_live_claim(column: sa.ColumnElement[int | None]) -> sa.ColumnElement[bool]:
    """True where a claim names no sender whose lease still runs (none, gone, expired)."""
    return ~sa.exists().where(W.c.id == column, W.c.lease_until > sa.func.now())


class Claims:
    """One sender's lease and claims (PostgreSQL). A context manager, re-entrant: the
    first `with` registers the sender and starts renewing, the last one out hands the
    claims back and removes the sender's row. A `mailer worker` holds it for its whole
    run, so its sends (each entering it too) keep one lease and one row."""

    def __init__(self, engine: Engine, *, lease: float) -> None:
        self.engine = engine
        self.lease = lease
        self.id: int | None = None
        self.campaign_id: int | None = None  # what it sends now (campaign show)
        self.sent = 0  # messages sent (250) in this process, for the rate it shows
        self.lost = False  # the renewal found the lease gone: stop marking
        self._renewed = 0.0  # time.monotonic() when the last good renewal began
        self._depth = 0
        self._campaigns: set[int] = set()  # whose deliveries it may hold claims on
        self._samples: deque[tuple[float, int]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._machine = machine()

    # --- the lease ---------------------------------------------------------------------

    def __enter__(self) -> Claims:
        self._depth += 1
        if self._depth == 1:
            self._register()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.close()

    def _register(self) -> None:
        started = time.monotonic()
        with self.engine.begin() as conn:
            self.id = int(conn.execute(W.insert().values(
                host=socket.gethostname()[:255], pid=os.getpid(), started_at=sa.func.now(),
                lease_until=_until(self.lease), sent=0, rate=0.0, machine=self._machine)
                .returning(W.c.id)).scalar_one())
            self._end_gone_neighbours(conn)  # before this sender's first look at the rows
        self._renewed, self.lost = started, False
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name="mailer-lease",
                                        daemon=True)
        self._thread.start()

    def fresh(self) -> bool:
        """Whether the lease is surely still this sender's: renewed less than two thirds
        of a lease ago (by this machine's monotonic clock, counted from before the
        renewal's round trip), and not found gone."""
        return not self.lost and time.monotonic() - self._renewed < self.lease * 2 / 3

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                self.renew()
                self.reap()
            except Exception as exc:  # noqa: BLE001 - the next round tries again;
                # meanwhile fresh() runs out. One line, never a traceback on stderr.
                log.warning("renewing the sender's lease failed: %s", " ".join(str(exc).split()))

    def renew(self) -> bool:
        """Extend the lease by one `lease` from now, if it is still ours; with what the
        sender shows (`campaign show`): what it sends and its rate."""
        started = time.monotonic()
        self._samples.append((started, self.sent))
        while self._samples and started - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()
        first_at, first_sent = self._samples[0]
        rate = (self.sent - first_sent) / (started - first_at) if started > first_at else 0.0
        with self.engine.begin() as conn:
            renewed = conn.execute(W.update().where(
                W.c.id == self.id, W.c.lease_until > sa.func.now()).values(
                lease_until=_until(self.lease), campaign_id=self.campaign_id,
                sent=self.sent, rate=rate)).rowcount
        if renewed:
            self._renewed = started
        else:
            self.lost = True
            log.warning("sender %s lost its lease (it was stalled longer than %s s): it "
                        "stops sending", self.id, self.lease)
        return bool(renewed)

    def working_on(self, campaign_id: int | None) -> None:
        """Say what this sender sends now (shown at once by `campaign show`)."""
        self.campaign_id = campaign_id
        if campaign_id is not None:
            self._campaigns.add(campaign_id)
        with self.engine.begin() as conn:
            conn.execute(W.update().where(W.c.id == self.id).values(campaign_id=campaign_id))

    def close(self) -> None:
        """Stop renewing, hand the claims back and remove the sender's row."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            self.release()
            with self.engine.begin() as conn:
                conn.execute(W.delete().where(W.c.id == self.id))
        except Exception as exc:  # noqa: BLE001 - the lease runs out by itself
            log.warning("handing back the claims of sender %s failed: %s", self.id,
                        " ".join(str(exc).split()))

    # --- the claims --------------------------------------------------------------------

    def claim(self, conn: sa.Connection, *where: sa.ColumnElement[bool], limit: int,
              read: Callable[[sa.CTE], sa.Select[Any]] | None = None) -> list[sa.Row[Any]]:
        """Claim up to `limit` deliveries matching `where`, in id order, skipping rows
        another transaction holds and those of live senders, in the caller's
        transaction (the caller commits). Returns the claimed rows' ids, in order, or
        what `read(claimed)` selects from them: `claimed` is the claim's UPDATE ...
        RETURNING (every column of the row), so claiming and reading are one statement."""
        mine = sa.or_(D.c.claimed_by.is_(None), D.c.claimed_by == self.id,
                      no_live_claim(D.c.claimed_by))
        rows = sa.select(D.c.id).where(*where, mine).order_by(D.c.id).limit(limit) \
            .with_for_update(skip_locked=True).correlate(None)
        # The walk this statement wants: the primary key from the cursor, stopping after
        # `limit`. With statistics that miss the new campaign's rows, or that an
        # autoanalyze took mid-send, the planner would rather collect every queued row
        # of the campaign through (campaign_id, state) in a bitmap and sort them, at
        # each claim: quadratic in the campaign (the claims of a fourth 50,000-recipient
        # send in a database took 2.0 s of server CPU against 0.6 s). Not in this
        # transaction: a bitmap, nor a sequential scan (with statistics of a nearly
        # empty table it read the whole table and sorted, 24 ms a claim at 100,000
        # rows); and `Outbox.due` names the campaign as `campaign_id + 0`, which no
        # index has, so the walk is the one way. Nor JIT
        # compilation (on by default since PostgreSQL 12): the walk's estimate is the
        # whole index, over `jit_above_cost` once the table holds ~200,000 rows, and
        # each claim of 128 then spent ~12 ms compiling what runs in 0.5 ms. And what
        # `read` joins to the claimed rows (at most `limit`) is looked up row by row:
        # the planner cannot know how many a claim returns, and with a small or freshly
        # filled table it hashed all of it (a seq scan of 30,000 subscriptions, 2-5 ms,
        # at each claim).
        conn.execute(sa.select(*(sa.func.set_config(name, "off", True) for name in (
            "enable_bitmapscan", "enable_seqscan", "jit", "enable_hashjoin",
            "enable_mergejoin"))))
        claimed = D.update().where(D.c.id.in_(rows)).values(claimed_by=self.id) \
            .returning(*D.c).cte("claimed")
        query = read(claimed) if read is not None else \
            sa.select(claimed.c.id).order_by(claimed.c.id)
        return list(conn.execute(query).all())  # fetchall, not a fetch per row

    def holds(self, campaign_id: int) -> None:
        """It may hold claims on this campaign's deliveries (for `release`)."""
        self._campaigns.add(campaign_id)

    def release(self) -> int:
        """Hand back the claims on deliveries not sent: due again for every sender now."""
        if not self._campaigns:
            return 0
        with self.engine.begin() as conn:
            return int(conn.execute(D.update().where(
                D.c.campaign_id.in_(sorted(self._campaigns)), D.c.claimed_by == self.id,
                D.c.state.in_([DeliveryState.QUEUED, DeliveryState.DEFERRED]))
                .values(claimed_by=None)).rowcount)

    def reap(self) -> int:
        """A dead sender's deliveries in flight become "unknown" (they may have arrived),
        in the campaigns still sending or paused; its row goes. Returns how many. Dead:
        its lease ran out, or its process is gone from this machine (`machine`)."""
        with self.engine.begin() as conn:
            self._end_gone_neighbours(conn)
            found = conn.execute(D.update().where(
                D.c.campaign_id.in_(sa.select(C.c.id).where(
                    C.c.state.in_(["sending", "paused"]))),
                D.c.state == DeliveryState.SENDING, no_live_claim(D.c.claimed_by))
                .values(state=DeliveryState.UNKNOWN, last_reply=IN_FLIGHT,
                        updated_at=sa.func.now())).rowcount
            conn.execute(W.delete().where(W.c.lease_until < sa.func.now()))
        return int(found)

    def _end_gone_neighbours(self, conn: sa.Connection) -> None:
        """Remove every sender on this machine whose process is gone (a SIGKILL, the OOM
        killer, a crash): its claims are due again and its deliveries in flight settled
        (`reap`, `Outbox.recover`) at once, not a lease later. Only on the same boot and
        pid namespace, where its pid is this process's to look up; a live process, even
        stalled, keeps its lease."""
        if self._machine is None:
            return
        neighbours = conn.execute(sa.select(W.c.id, W.c.pid).where(
            W.c.machine == self._machine, W.c.id != self.id,
            W.c.lease_until > sa.func.now())).all()
        gone = [row.id for row in neighbours if row.pid != os.getpid() and _gone(row.pid)]
        if gone:  # a claim naming no sender is no claim (no_live_claim)
            conn.execute(W.delete().where(W.c.id.in_(gone), W.c.machine == self._machine))
            log.info("senders %s on this machine are gone: their claims are due again",
                     ", ".join(map(str, gone)))


def live_senders(engine: Engine, campaign_id: int | None = None) -> list[dict[str, object]]:
    """The senders whose lease runs (all, or those sending `campaign_id` now): host,
    pid, since, sent and rate (messages a second over their last minute)."""
    if engine.dialect.name != "postgresql":
        return []
    query = sa.select(W.c.id, W.c.host, W.c.pid, W.c.started_at, W.c.campaign_id, W.c.sent,
                      W.c.rate).where(W.c.lease_until > sa.func.now()).order_by(W.c.id)
    if campaign_id is not None:
        query = query.where(W.c.campaign_id == campaign_id)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]
