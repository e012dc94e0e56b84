"""One pace for every sender of a PostgreSQL database: the rate and burst, the per-domain
limits and the hourly and daily quotas of `Limits` hold for all of them together.

    limiter = SharedRateLimiter(limits, engine)  # what runner.limiter_for gives on PostgreSQL
    await limiter.acquire("an@example.org")      # as RateLimiter: returns at the message's turn

The state is in the database (migration 0015), the clock is the database's, and a claim is
one round trip: `mailer_rate_claim(...)`, a PL/pgSQL function that holds the 'rate' row's
lock (every claim of every sender, so one schedule), expires and counts the quota buckets
and takes up to N slots of the GCRA schedule (`rate_state.tat`, the theoretical arrival
time of the next message): the i-th slot is i intervals after the later of the schedule
and now, up to the tolerance (the burst above the rate) ahead of it, never before now. So
over any span the slots are the rate's, and no window of 1 s + WINDOW_GUARD holds more
than the burst (the guard taken off the tolerance), whichever sender holds which slot.

Round trips. A sender claims what its waiting acquire() calls need, and more ahead for
the next ones while it uses all it takes: twice as many each time they ran out, up to
`batch` (about 50 ms of the rate, CLAIM_AHEAD; UNPACED with quotas and no rate). A slot
nobody here takes before it is `grace` past (an interval, at most WINDOW_GUARD; or the
guard taken off the tolerance, when larger) is dropped rather than sent late, where it
could bunch with the next, and the claims take half as many ahead. A dropped slot, and
those a sender holds when it is closed (`close()`, or when collected or at exit), are
given back to the quotas (with the next claim); the rate they stood for is lost
(`wasted`). Measured in bench/pacing_bench.py --shared (docs/performance.md). With no
limit at all the runner does not use this class (nothing to share, no round trip).

Clocks. Slots are database times; each sender maps them onto its monotonic clock with the
offset of the quickest of its last OFFSETS round trips (the server's clock read half-way),
so senders on several machines need no synchronised clocks, only a short round trip.

Per domain. A message to a domain with a limit of its own claims one slot for the domain
and the global pace together, only once the domain's turn has come (on the database's
clock); before, the claim takes nothing and says when the turn comes, and acquire() waits
that long and asks again. The domain's pace is RateLimiter's: a GCRA, on which a message
that goes behind the global schedule keeps its place by up to an interval (else the
domain would lose the global queue's length at every message: 2.7/s instead of 5 beside
a busy 50/s), and its last `burst` slots, so that none is within 1 s + a guard of the
burst-th last. `domain_wait` (the sender's lanes) answers from the domain's
schedule as this sender last saw it: the other senders' messages to that domain since are
not in it, so a message may now and then wait a moment in acquire() for another sender's.

Quotas. Every slot is counted when it is claimed, in 1-second (hour) and 24-second (day)
buckets, whether a quota is set or not, and no longer once given back; a claim that would
exceed a quota takes fewer slots, none when it is used up: then acquire() raises
`QuotaExhausted` with the time the next message will be allowed, in every sender. So a
message counts from its turn, sent or not (the in-process limiter's history counts the
sent ones only). The counts are rows: they survive restarts, and the upgrade seeded them
from the last day's sent mail.

`since` is not needed here: the schedule is the database's, and a late wake-up in one
sender moves its message, not the slots after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from mailer.delivery.ratelimit import (
    WINDOW_GUARD,
    Limits,
    QuotaExhausted,
    RateLimiter,
    domain_key,
)
from mailer.errors import DatabaseError

__all__ = ["SharedRateLimiter"]

CLAIM_AHEAD = 0.05  # the most a claim takes at once: this many seconds of the rate
UNPACED = 1  # with quotas and no rate: slots taken ahead are "now", and held by one
# sender they could stop the others short of the quota (measured: 25 of 30 with 16)
OFFSETS = 16  # round trips whose quickest gives the clock offset
CLAIM = "SELECT * FROM mailer_rate_claim(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"


@dataclass(frozen=True)
class _Slot:
    at: float  # when the message may go, on this sender's monotonic clock
    counted: float  # the database time the quotas counted it at (for a refund)
    got: float  # when the claim that took it returned (this sender's clock)


@dataclass(frozen=True)
class _Claimed:
    slots: list[_Slot]
    resume_at: float | None  # a quota is used up until then (database wall clock)
    quota: str | None
    limit: int | None
    domain_at: float | None  # the domain's next turn, this sender's clock


class SharedRateLimiter(RateLimiter):
    """`RateLimiter`'s interface, its state in the database; see the module docstring.

    `batch`: the most slots a claim takes ahead of the acquire() calls waiting (default:
    CLAIM_AHEAD seconds of the rate). `claims`, `claim_seconds` (round trips, and the time
    spent in them) and `wasted` (slots dropped unused) are counted for the benchmark."""

    def __init__(self, limits: Limits, engine: Engine, *, batch: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(limits, clock=clock)
        self._engine = engine
        rate = limits.rate
        self.batch = batch or (max(1, math.ceil(rate * CLAIM_AHEAD)) if rate else UNPACED)
        self._ahead = 1  # slots the next claim takes at least: grows to `batch` while
        # they are all used, halves when one is dropped
        self._interval = 1.0 / rate if rate else None
        # How far ahead of the even schedule a slot may be: the burst above the rate, less
        # a guard (as RateLimiter keeps its burst over 1 + WINDOW_GUARD seconds), so that
        # the small differences in how long messages take to reach the receiver cannot
        # put more than `burst` into one of its seconds.
        tolerance = (limits.burst - rate) / rate if rate and limits.burst else 0.0
        guard = min(WINDOW_GUARD, tolerance / 2)
        self._tolerance = tolerance - guard
        # A slot may be used this late: an interval (as RateLimiter keeps a late message's
        # place), or the guard, which keeps a late one within the burst.
        self.grace = max(min(self._interval or WINDOW_GUARD, WINDOW_GUARD), guard)
        self._spare: deque[_Slot] = deque()  # slots taken, for the next acquire() calls
        self._refunds: dict[float, int] = {}  # slots dropped: counted at -> how many
        # what closing needs (without this object: it runs when it is collected)
        self._state: dict[str, Any] = {"conn": None, "spare": self._spare,
                                       "refunds": self._refunds}
        self._claim: asyncio.Future[None] | None = None
        self._wanting = 0
        self._domain_at: dict[str, float] = {}  # domain -> its next turn (our clock)
        self._offsets: deque[tuple[float, float]] = deque(maxlen=OFFSETS)  # (rtt, offset)
        self.claims = 0
        self.claim_seconds = 0.0
        self.wasted = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailer-rate")
        self._closer = weakref.finalize(self, _close, self._pool, self._state)

    def close(self) -> None:
        """Give the slots taken and not used back to the quotas, close the connection and
        the claim thread: when garbage collected or at exit, if not before."""
        self._closer()

    async def acquire(self, domain: str, *, since: float | None = None) -> None:
        """Wait until one message to `domain` may go, for every sender together, and count
        it. Raises QuotaExhausted when a quota is used up."""
        key = domain_key(domain)
        pair = self.limits.per_domain.get(key)
        slot = await (self._domain_slot(key, pair) if pair else self._global_slot())
        if self._started is None:
            self._started = self._clock()
        self._granted += 1
        delay = slot.at - self._clock()
        if delay <= 0:
            return
        try:
            await self._sleep(delay)
        except asyncio.CancelledError:
            self._granted -= 1
            if pair is None:  # a global slot can still serve the next acquire()
                spare = sorted([slot, *self._spare], key=lambda s: s.at)
                self._spare.clear()
                self._spare.extend(spare)
            else:
                self._refund(slot)
            raise

    def domain_wait(self, domain: str, ahead: int = 0) -> float:
        """As RateLimiter.domain_wait, from the domain's schedule as this sender last saw
        it (its own claims and refusals)."""
        key = domain_key(domain)
        pair = self.limits.per_domain.get(key)
        at = self._domain_at.get(key)
        if pair is None or at is None:
            return 0.0
        return max(0.0, at + ahead / pair[0] - self._clock())

    async def _global_slot(self) -> _Slot:
        self._wanting += 1
        try:
            while True:
                slot = self._take_spare()
                if slot is not None:
                    return slot
                loop = asyncio.get_running_loop()
                if (self._claim is None or self._claim.done()
                        or self._claim.get_loop() is not loop):
                    # All taken and someone still waits: the next claim takes more ahead.
                    self._ahead = min(self.batch, self._ahead * 2) if self.claims else 1
                    self._claim = loop.create_task(self._claim_global(
                        max(self._ahead, self._wanting)))
                await asyncio.shield(self._claim)
        finally:
            self._wanting -= 1

    async def _claim_global(self, want: int) -> None:
        claimed = await self._run(want, None, None)
        self._spare.extend(claimed.slots)
        if not claimed.slots:
            raise self._exhausted(claimed)

    async def _domain_slot(self, key: str, pair: tuple[float, int]) -> _Slot:
        while True:
            claimed = await self._run(1, key, pair)
            if claimed.domain_at is not None:
                self._domain_at[key] = claimed.domain_at
            if claimed.slots:
                return claimed.slots[0]
            if claimed.resume_at is not None:
                raise self._exhausted(claimed)
            assert claimed.domain_at is not None
            await self._sleep(max(claimed.domain_at - self._clock(), 0.001))

    def _exhausted(self, claimed: _Claimed) -> QuotaExhausted:
        return QuotaExhausted(claimed.resume_at or time.time(),
                              quota=claimed.quota or "sending", limit=claimed.limit)

    def _take_spare(self) -> _Slot | None:
        """The next slot taken ahead, unless its time is more than `grace` past and it was
        here then (one the claim brought late still goes): such a one is dropped (sent
        now it could bunch with the next), given back to the quotas with the next claim,
        and the claims take fewer ahead."""
        now = self._clock()
        while self._spare and max(self._spare[0].at, self._spare[0].got) < now - self.grace:
            self._refund(self._spare.popleft())
            self.wasted += 1
            self._ahead = max(1, self._ahead // 2)
        return self._spare.popleft() if self._spare else None

    def _refund(self, slot: _Slot) -> None:
        self._refunds[slot.counted] = self._refunds.get(slot.counted, 0) + 1

    async def _run(self, want: int, key: str | None,
                   pair: tuple[float, int] | None) -> _Claimed:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._claim_now, want, key, pair)

    def _claim_now(self, want: int, key: str | None,
                   pair: tuple[float, int] | None) -> _Claimed:
        """One round trip (in the claim thread), with the refunds due so far."""
        conn = self._state["conn"]
        if conn is None:  # its own connection, outside the pool: autocommit, one trip
            cargs, cparams = self._engine.dialect.create_connect_args(self._engine.url)
            try:
                conn = self._engine.dialect.connect(*cargs, **cparams)
            except Exception as exc:
                raise DatabaseError("The shared rate limit could not be read from the "
                                    f"database: {' '.join(str(exc).split())}") from exc
            conn.autocommit = True
            self._state["conn"] = conn
        domain_interval = domain_tolerance = None
        if pair is not None:
            domain_interval = 1.0 / pair[0]
            domain_tolerance = (pair[1] - pair[0]) / pair[0]
        refunds = dict(self._refunds)
        self._refunds.clear()
        limits = self.limits
        params = (want, self._interval, self._tolerance if self._interval else None,
                  f"domain:{key}" if key else None, domain_interval, domain_tolerance,
                  limits.hourly, limits.daily, *_refund_params(refunds))
        start = self._clock()
        try:
            slots, now_at, resume_at, quota, limit, domain_at = conn.execute(
                CLAIM, params).fetchone()
        except Exception as exc:
            # A MailerError: the sender puts the message back in the queue and stops,
            # instead of recording it as failed. The next claim connects again.
            self._state["conn"] = None
            conn.close()
            raise DatabaseError("The shared rate limit could not be read from the "
                                f"database: {' '.join(str(exc).split())}") from exc
        end = self._clock()
        self.claims += 1
        self.claim_seconds += end - start
        self._offsets.append((end - start, (start + end) / 2 - now_at))
        offset = min(self._offsets)[1]
        counted = slots[-1] if slots else 0.0
        return _Claimed([_Slot(s + offset, counted, end) for s in slots or ()], resume_at, quota,
                        limit, None if domain_at is None else domain_at + offset)


def _refund_params(refunds: dict[float, int]) -> tuple[list | None, list | None]:
    return (list(refunds) or None, list(refunds.values()) or None)


def _close(pool: ThreadPoolExecutor, state: dict[str, Any]) -> None:
    """The slots held and not used back to the quotas (counted a little too much if the
    database cannot be reached, never too little), then the connection and the thread."""
    pool.shutdown(wait=True)
    conn, state["conn"] = state["conn"], None
    if conn is None:
        return
    refunds: dict[float, int] = state["refunds"]
    for slot in state["spare"]:
        refunds[slot.counted] = refunds.get(slot.counted, 0) + 1
    state["spare"].clear()
    with contextlib.suppress(Exception), conn:
        if refunds:
            conn.execute(CLAIM, (0, None, None, None, None, None, None, None,
                                 *_refund_params(refunds)))
