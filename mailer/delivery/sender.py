"""Sending one campaign: the outbox drained at a controlled pace, exactly once.

    producer ── due deliveries, in id order ──▶ lanes ──▶ N or 2 x N workers, each:
        render + sign ─▶ mark "sending" (committed) ─▶ wait for one of the N connections
        ─▶ wait for the rate limiter ─▶ SMTP ─▶ record the outcome (committed with the
        worker's next mark) ─▶ next

The promises, and what keeps them:

- **Never twice.** A delivery is marked "sending" in a committed transaction before its
  SMTP transaction starts, and only if it is still queued or deferred (the UPDATE checks,
  so a cancelled campaign or a second sender cannot mark it again). After a crash, the
  rows still "sending" are the only ones that may or may not have arrived: they become
  "unknown" and are not resent unless asked (`--retry-unknown`). A worker's result is
  written in the same transaction as its next mark, or an earlier one, so at most
  one row a worker can ever be "sending" (`worker_count`: `connections`, or twice that
  when marking ahead, below).
  The same holds when a relay's reply to the end of a message is lost (the connection
  drops, the relay falls silent): that delivery becomes "unknown" at once.
- **Never skipped.** A delivery leaves the outbox only with an outcome: sent, bounced,
  failed (after `max_attempts` deferrals), or skipped with the reason (unsubscribed,
  suppressed, erased) checked at send time. Stopping (pause, cancel, --max-seconds, a
  quota) leaves unsent rows queued for the next run.
- **Stopping on a signal.** While it runs, the sender takes SIGINT (Ctrl-C) and SIGTERM
  (systemd, a shutdown): the first stops it like a pause does (nothing new is marked, the
  messages in flight finish or time out, every state is written) and the report says
  `interrupted`; a second cuts the messages in flight off at once: those that had started
  their SMTP transaction become "unknown" (they may have arrived), the others go back to
  the queue. Render helpers ignore both signals and end with the sender (orphans.py).
- **Cheap commits.** Marks and results of all workers are written together, one
  transaction per round ("group commit"): on SQLite on the sender's database thread,
  on PostgreSQL from the event loop (one round trip, no thread in between).
- **Marked ahead.** When the pace keeps the connections busy (no rate, or over 50
  messages a second a connection: `worker_count`) there are MARK_AHEAD (2) workers per
  connection: while one worker's message is in its SMTP transaction, the other's mark
  is being committed, and it then waits for that connection (the transport's pool)
  with its delivery marked. A connection never waits for a commit, and a round commits
  the marks of more workers at once. The price: a crash can leave up to twice
  `connections` rows "sending", half of which had not started (they become "unknown"
  all the same: nothing says which). At a slower pace (the default 10 a second) a
  connection waits for its turn longer than a commit takes: one worker a connection.
  A stop, a time limit or a second Ctrl-C puts a marked delivery that had not started
  its SMTP transaction back in the queue.
- **Notices and steps first.** The engine's own mails (confirmation, welcome and export
  mails, sequence steps: delivery rows of campaigns of those kinds) go before a
  campaign's: every URGENT_POLL seconds while a campaign sends, their due rows are read
  (`Outbox.urgent_due`), rendered in this process (`urgent_renderer`: they need the
  project) and put at the head of the queue, so a welcome mail waits for the messages
  in flight, not for a big campaign to end. Same
  workers, connections, rate limiter, marks and records; counted apart
  (`SendReport.urgent`), and never a reason to pause the campaign. A sender with no
  campaign (`Outbox(campaign_id=None)`) sends only those, until none is due.
- **No head-of-line blocking.** A worker holds a connection, or waits for one: one
  that waited for a throttled domain's turn would hold it, and soon every worker did
  (with a fifth of the recipients at 5/s, everyone went at 25/s in all instead of the
  global 50). Deliveries to a domain with a limit of its own wait in a lane of their
  own, unmarked, and a worker takes one only once its domain's turn has come
  (`_Lanes`); the others use the rest of the rate.
- **Several senders (PostgreSQL).** With `Outbox.claims` the sender holds a lease for its
  run (delivery/claims.py): it reads only the rows it claimed, stops marking when its
  lease is no longer surely its own, and hands back what it claimed and did not send
  when it ends. Several senders, on several machines, then share a campaign.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mailer.content.mailing import Message
from mailer.delivery.outbox import Due, Outbox, Result
from mailer.delivery.ratelimit import QuotaExhausted, RateLimiter, domain_key
from mailer.delivery.rendering import Rendered, Renderer
from mailer.delivery.stopping import stop_signals  # also for runner.py
from mailer.delivery.transports import Outcome, Transport
from mailer.errors import MailerError
from mailer.models import DeliveryState

__all__ = ["SendReport", "Sender"]

log = logging.getLogger("mailer.delivery")

BATCH = 500  # deliveries read from the outbox at a time
# ... when claimed (PostgreSQL, several senders): fewer, so a sender holds little more
# than it has in hand (AHEAD chunks rendering, a lane of 4 a connection), and the last
# of a campaign is shared out too. 128 -> 256: each claim is a transaction on the
# thread that commits the marks (5 round trips): a 30,000-recipient send 3-6 % faster.
CLAIM_BATCH = 256
CHUNK = 64  # rendered together (one round trip to a helper process)
AHEAD = 3  # chunks being rendered ahead of the workers
HOLD_SECONDS = 30.0  # a limited domain's lane holds this many seconds of its own pace
HOLD_MOST = 1000  # ... and never more deliveries than this
URGENT_POLL = 1.0  # seconds between looks for due notices and steps while a campaign sends
# Workers per connection: one whose mark commits while the other's message is in SMTP.
# At 4 connections (20,000 recipients, a local relay) 1 -> 2 took the send from 11.9 s
# to 9.3 s (the connections waited for commits; docs/performance.md).
MARK_AHEAD = 2
# ... when the pace lets a connection send more often than every this many seconds (or
# there is no rate): slower, a connection waits for its turn longer than a commit takes,
# and marks ahead would only leave more deliveries "unknown" after a crash.
MARK_AHEAD_UNDER = 0.02
# The automatic pause: a campaign pauses itself when more than `pause_failure_rate` of
# FAILURE_WINDOW deliveries, among its last FAILURE_WINDOW, did not go out (41 at 0.2: a
# relay that refuses everything pauses it after 41 failures; 11 bad addresses among the
# first 50 do not).
FAILURE_WINDOW = 200


def worker_count(connections: int, rate: float | None) -> int:
    """The sender's workers: MARK_AHEAD a connection when commits would hold the
    connections up (no rate, or one over 50 messages a second a connection), else one.
    So also the most deliveries a crash can leave "sending"."""
    connections = max(1, connections)
    if rate is None or connections / rate < MARK_AHEAD_UNDER:
        return connections * MARK_AHEAD
    return connections


@dataclass
class SendReport:
    counts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    unknown_found: int = 0
    unknown_requeued: int = 0
    stopped: str | None = None  # why the run ended before the outbox was empty
    paused_reason: str | None = None  # the sender paused the campaign itself
    resume_at: float | None = None  # wall clock, when a quota allows the next message
    open_left: int = 0  # deliveries still queued or deferred
    interrupted: str | None = None  # the signal that stopped the run ("SIGINT", "SIGTERM")
    first_sent: float | None = None  # time.monotonic() of the first and last 250 reply
    last_sent: float | None = None
    # the engine's own mails sent meanwhile (notices, steps), by outcome: apart from
    # `counts`, which are the campaign's
    urgent: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        """Messages a second from the first sent to the last (start-up not counted)."""
        sent = self.counts[DeliveryState.SENT]
        if sent > 1 and self.first_sent is not None and self.last_sent is not None \
                and self.last_sent > self.first_sent:
            return (sent - 1) / (self.last_sent - self.first_sent)
        return sent / self.seconds if self.seconds else 0.0


class _NotSent(Exception):
    """The run stopped between marking a delivery and sending it."""


class _StatusWriter:
    """Group commit: marks and results wait for the next round's transaction, on a
    connection held for the run (`Outbox.hold_connection`): SQLite's on the database
    thread, PostgreSQL's on the event loop (`Outbox.apply_async`)."""

    def __init__(self, outbox: Outbox, db: ThreadPoolExecutor) -> None:
        self._outbox, self._db = outbox, db
        outbox.hold_connection()  # opened by the first round
        self._marks: list[tuple[int, asyncio.Future[bool]]] = []
        self._results: list[tuple[Result, None]] = []
        self._flushes: list[asyncio.Future[None]] = []
        self.failed: BaseException | None = None  # a transaction failed: nothing more
        self._skips: list[tuple[int, str, asyncio.Future[None]]] = []
        self._releases: list[tuple[int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def mark(self, delivery_id: int) -> bool:
        if self.failed is not None:
            raise self.failed
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._marks.append((delivery_id, future))
        self._wake.set()
        return await future

    def record(self, result: Result) -> None:
        """Queue a result for the next transaction, without waiting for it: the worker's
        next mark is committed in the same transaction or a later one, and a failed
        transaction fails every later mark (`failed`)."""
        self._results.append((result, None))
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushes.append(future)
        self._wake.set()
        await future

    async def release(self, delivery_id: int) -> None:
        """Undo a mark whose message was not sent after all (the run is stopping)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._releases.append((delivery_id, future))
        self._wake.set()
        await future

    def skip(self, delivery_id: int, reason: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._skips.append((delivery_id, reason, future))
        self._wake.set()
        return future

    async def _run(self) -> None:
        while True:
            if not self._closing:
                await self._wake.wait()
            self._wake.clear()
            marks, self._marks = self._marks, []
            results, self._results = self._results, []
            skips, self._skips = self._skips, []
            releases, self._releases = self._releases, []
            flushes, self._flushes = self._flushes, []
            if self.failed is not None or not (marks or results or skips or releases):
                for future in [*(f for _, f in marks), *(f for _, _, f in skips),
                               *(f for _, f in releases), *flushes]:
                    if self.failed is not None:
                        future.set_exception(self.failed)
                    else:
                        future.set_result(None)
                if self._closing:
                    return
                continue
            try:
                marked = await self._outbox.apply_async(
                    [i for i, _ in marks], [r for r, _ in results],
                    [(i, why) for i, why, _ in skips], [i for i, _ in releases], db=self._db)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting worker
                self.failed = exc
                for future in [*(f for _, f in marks), *(f for _, _, f in skips),
                               *(f for _, f in releases), *flushes]:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for future in [*(f for _, _, f in skips), *(f for _, f in releases), *flushes]:
                if not future.done():
                    future.set_result(None)
            for delivery_id, future in marks:
                if not future.done():
                    future.set_result(delivery_id in marked)

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        try:
            await self._task
        finally:
            await self._outbox.release_connection_async(self._db)


class _Lanes:
    """Between the producer and the workers: the deliveries to a domain with a limit of
    its own (`per_domain`) wait in a lane of that domain until its limit lets one go, so
    a worker, and its connection, is only given a delivery that can go now.

    - `reserve(due)`, before rendering: False when the delivery's domain has its lane full
      (HOLD_SECONDS of its pace, at least its burst): the producer leaves it queued in the
      outbox for its next pass. Deliveries to other domains always fit; `put` waits for
      room among them (`maxsize`).
    - `get()` gives a worker the first delivery, in outbox order, that may go now: the next
      to another domain, or the head of a lane whose domain's turn has come, counting the
      deliveries of that domain given out and not yet past the limiter
      (`RateLimiter.domain_wait`). Once the run stops every delivery may "go" (the workers
      skip them). None when closed and empty.
    - `since(due)`: when a delivery given out from a lane started waiting there, for the
      limiter (`acquire(since=)`): the moments between its turn and its acquire (the mark,
      the connection) do not slow its domain down.
    - `passed(due)` once its limiter turn has come (or it will not ask for one), `done(due)`
      when it is settled; `join()` waits until every delivery put is done,
      `given_out_done()` until all are but those waiting in the lanes, which a new pass
      leaves alone (`holds`), and `room(domains)` until one of those lanes is half empty.
    """

    def __init__(self, limiter: RateLimiter, maxsize: int,
                 stopping: Callable[[], bool]) -> None:
        self._limiter = limiter
        self._limits = limiter.limits.per_domain
        self._maxsize = maxsize
        self._stopping = stopping
        self._others: deque[Rendered] = deque()
        self._urgent: deque[Rendered] = deque()  # notices and steps: before all others
        self._lanes: dict[str, deque[Rendered]] = {}
        self._reserved: Counter[str] = Counter()  # places taken in each lane
        self._out: dict[int, str] = {}  # given out, not yet past the limiter: id -> domain
        self._ahead: Counter[str] = Counter()  # ... how many per domain
        self._entered: dict[int, float] = {}  # in a lane since (the limiter's clock)
        self._open: set[int] = set()  # put, not done
        self._waiting = 0  # in the lanes, not given out
        self._waiters: list[asyncio.Future[None]] = []
        self._unfinished = 0
        self._finished = asyncio.Event()
        self._finished.set()
        self._closed = False

    def key(self, due: Due) -> str | None:
        """The delivery's domain when it has a limit of its own, else None."""
        assert due.recipient is not None
        key = domain_key(due.recipient.email)
        return key if key in self._limits else None

    def _size(self, key: str) -> int:
        rate, burst = self._limits[key]
        return min(HOLD_MOST, max(burst, math.ceil(rate * HOLD_SECONDS)))

    def reserve(self, due: Due) -> bool:
        key = self.key(due)
        if key is None:
            return True
        if self._reserved[key] >= self._size(key):
            return False
        self._reserved[key] += 1
        return True

    def holds(self, due: Due) -> bool:
        """Whether the delivery was put and is not done yet (a new pass leaves it)."""
        return due.id in self._open

    async def put(self, item: Rendered) -> None:
        key = self.key(item[0])
        if key is None:
            while len(self._others) >= self._maxsize:
                await self._wait(None)
            self._others.append(item)
        else:
            self._lanes.setdefault(key, deque()).append(item)
            self._entered[item[0].id] = self._limiter.now()
            self._waiting += 1
        self._unfinished += 1
        self._open.add(item[0].id)
        self._finished.clear()
        self.wake()

    def put_first(self, item: Rendered) -> None:
        """A notice or step: given out before everything else (no lane, no room to wait
        for: the sender reads few of them at a time)."""
        self._urgent.append(item)
        self._unfinished += 1
        self._open.add(item[0].id)
        self._finished.clear()
        self.wake()

    async def get(self) -> Rendered | None:
        while True:
            if self._urgent:
                return self._urgent.popleft()
            item, delay = self._pick()
            if item is not None:
                return item
            if self._closed and not self._others and not any(self._lanes.values()):
                return None
            await self._wait(delay)

    def _pick(self) -> tuple[Rendered | None, float | None]:
        """The first delivery that may go now, taken out; else None and the seconds until
        one of the lanes' turn comes (None: only a put or close can help)."""
        best = self._others[0] if self._others else None
        best_key: str | None = None
        delay: float | None = None
        stopping = self._stopping()
        for key, lane in self._lanes.items():
            if not lane or (best is not None and lane[0][0].id > best[0].id):
                continue
            wait = 0.0 if stopping else self._limiter.domain_wait(key, self._ahead[key])
            if wait <= 0.0:
                best, best_key = lane[0], key
            else:
                delay = wait if delay is None else min(delay, wait)
        if best is None:
            return None, delay
        if best_key is None:
            self._others.popleft()
        else:
            self._lanes[best_key].popleft()
            self._waiting -= 1
            self._reserved[best_key] -= 1
            self._ahead[best_key] += 1
            self._out[best[0].id] = best_key
        self.wake()  # room for the producer
        return best, None

    def since(self, due: Due) -> float | None:
        return self._entered.get(due.id)

    def passed(self, due: Due) -> None:
        key = self._out.pop(due.id, None)
        if key is not None:
            self._ahead[key] -= 1
            self.wake()

    def done(self, due: Due) -> None:
        self.passed(due)
        self._entered.pop(due.id, None)
        self._open.discard(due.id)
        self._unfinished -= 1
        if self._unfinished == 0:
            self._finished.set()
        self.wake()

    async def join(self) -> None:
        await self._finished.wait()

    async def given_out_done(self) -> None:
        """Wait until everything put is done but what waits in the lanes."""
        while self._unfinished > self._waiting:
            await self._wait(None)

    async def room(self, keys: set[str]) -> None:
        """Wait until one of these domains' lanes is at most half full (or the run stops)."""
        while not self._stopping() and all(
                self._reserved[key] > self._size(key) // 2 for key in keys):
            await self._wait(None)

    def close(self) -> None:
        self._closed = True
        self.wake()

    def wake(self) -> None:
        """Let every waiting get() and put() look again (something changed)."""
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    async def _wait(self, timeout: float | None) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(future, timeout)


class Sender:
    """Drains one campaign's outbox through a transport, the engine's own mails first
    (with an `urgent_renderer`)."""

    def __init__(self, *, outbox: Outbox, renderer: Renderer | None, transport: Transport,
                 limiter: RateLimiter, connections: int,
                 deadline: float | None = None, pause_failure_rate: float = 0.2,
                 campaign_state: Callable[[], str] | None = None,
                 pause: Callable[[str], None] | None = None,
                 progress: Callable[[SendReport], None] | None = None,
                 urgent_renderer: Renderer | None = None) -> None:
        self.outbox = outbox
        self.renderer = renderer
        self.urgent_renderer = urgent_renderer
        self._urgent_ids: set[int] = set()  # notices and steps in hand: read, not done
        self.transport = transport
        self.limiter = limiter
        self.connections = max(1, connections)
        self.deadline = deadline  # time.monotonic() after which no new message starts
        self.pause_failure_rate = pause_failure_rate
        self.campaign_state = campaign_state
        self.pause = pause
        self.progress = progress
        self.report = SendReport()
        self._stop: str | None = None
        self._recent: deque[bool] = deque()  # the last FAILURE_WINDOW: True, not sent
        self._failures = 0  # ... how many of them are True
        self._lanes: _Lanes | None = None
        self._in_flight: set[asyncio.Future[Outcome]] = set()  # transport.send calls
        self._cut_off = False  # a second signal: the sends in flight are cancelled

    def stop(self, reason: str) -> None:
        if self._stop is None:
            self._stop = reason
            if self._lanes is not None:
                self._lanes.wake()  # a worker waiting for a domain's turn: skip it now

    def interrupt(self, name: str) -> None:
        """A stop signal: the first stops the run after the messages in flight, a second
        cuts those off."""
        if self.report.interrupted is None:
            self.report.interrupted = name
            self.stop(f"interrupted ({name})")
            return
        self._cut_off = True
        for send in list(self._in_flight):
            send.cancel()

    async def run(self, *, retry_unknown: bool = False,
                  interrupted: Callable[[], str | None] = lambda: None,
                  signals: bool = True) -> SendReport:
        """`interrupted`: a stop signal that came before this run took the signals over
        (`mailer run` between its phases): the run then stops as if it came now.
        `signals=False`: leave SIGINT and SIGTERM to the caller (the web app's server)."""
        with stop_signals(self.interrupt, asyncio.get_running_loop()) if signals \
                else contextlib.nullcontext():
            if (name := interrupted()) is not None:
                self.interrupt(name)
            claims = self.outbox.claims
            if claims is None:
                return await self._run(retry_unknown)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, claims.__enter__)  # registers, or nests
            try:
                return await self._run(retry_unknown)
            finally:
                await loop.run_in_executor(None, claims.__exit__, None, None, None)

    async def _run(self, retry_unknown: bool) -> SendReport:
        started = time.monotonic()
        db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailer-db")
        loop = asyncio.get_running_loop()
        try:
            if self.outbox.claims is not None:
                await loop.run_in_executor(db, self.outbox.claims.working_on,
                                           self.outbox.campaign_id)
            found, requeued = await loop.run_in_executor(
                db, lambda: self.outbox.recover(retry_unknown=retry_unknown))
            self.report.unknown_found, self.report.unknown_requeued = found, requeued
            writer = _StatusWriter(self.outbox, db)
            lanes = self._lanes = _Lanes(self.limiter, max(self.connections * 4, CHUNK),
                                         lambda: self._stop is not None)
            workers = [loop.create_task(self._worker(lanes, writer)) for _ in range(
                worker_count(self.connections, self.limiter.limits.rate))]
            watcher = loop.create_task(self._watch(db))
            urgent = None
            if self.urgent_renderer is not None:
                urgent = loop.create_task(self._feed_urgent(
                    lanes, writer, db, until_idle=self.outbox.campaign_id is None))
            try:
                if self.outbox.campaign_id is not None:
                    await self._while_workers_live(
                        loop.create_task(self._produce(lanes, writer, db)), workers)
                if urgent is not None:
                    if self.outbox.campaign_id is not None:
                        urgent.cancel()  # the campaign is done: `mailer run` looks again
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._while_workers_live(urgent, workers)
            finally:
                if urgent is not None and not urgent.done():
                    urgent.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await urgent
                lanes.close()
                await asyncio.gather(*workers, return_exceptions=True)
                watcher.cancel()
                await writer.close()
                for task in workers:
                    if not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                if writer.failed is not None:
                    raise writer.failed
            if self.outbox.claims is not None:  # what it took and did not send: to others
                await loop.run_in_executor(db, self.outbox.claims.release)
                await loop.run_in_executor(db, self.outbox.claims.working_on, None)
            self.report.open_left = await loop.run_in_executor(db, self.outbox.open_count)
        finally:
            await self.transport.close()
            if self.renderer is not None:
                self.renderer.close()
            db.shutdown(wait=True)
            self.report.seconds = time.monotonic() - started
            self.report.stopped = self._stop
        return self.report

    async def _while_workers_live(self, task: asyncio.Task[None],
                                  workers: list[asyncio.Task[None]]) -> None:
        """Await `task` (the producer, or the feed of the engine's own mails), but stop
        it when a worker ends with an error (the status writer lost its database, say):
        nobody would take what it gives out, and it would wait for them for ever, past
        any time limit. `_run` then raises the worker's error."""
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def ended(worker: asyncio.Task[None]) -> None:
            if not worker.cancelled() and worker.exception() is not None \
                    and not failed.done():
                failed.set_result(None)

        for worker in workers:
            worker.add_done_callback(ended)
            if worker.done():
                ended(worker)
        try:
            await asyncio.wait([task, failed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for worker in workers:
                worker.remove_done_callback(ended)
            if not task.done():
                self.stop("a worker ended with an error" if failed.done() else "cancelled")
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not task.cancelled():
            task.result()  # its own error, if it had one

    async def _produce(self, lanes: _Lanes, writer: _StatusWriter,
                       db: ThreadPoolExecutor) -> None:
        """Passes over the due deliveries in id order, rendering them in chunks a few
        chunks ahead of the workers. A pass that finds something is followed by another
        from the start (for deliveries deferred meanwhile and due again, or left because
        their domain's lane was full), once what the pass gave out is settled; a pass that
        finds nothing ends. (When only a limited domain's deliveries are left, a pass
        refills its lane each time half of it has gone.)"""
        loop = asyncio.get_running_loop()
        cursor = 0
        new = 0  # deliveries this pass gave to the lanes or skipped
        left: set[str] = set()  # domains whose lane was full: some of theirs wait
        held = 0  # deliveries this pass found still waiting in a lane
        skips: list[asyncio.Future[None]] = []
        ahead: deque[asyncio.Task[list[Rendered]]] = deque()

        async def settle(limit: int) -> None:
            while len(ahead) > limit:
                for item in await ahead.popleft():
                    if self._stop is not None:
                        return
                    await lanes.put(item)

        try:
            while self._stop is None:
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    self.stop("time limit reached")
                    break
                batch = await loop.run_in_executor(
                    db, self.outbox.due, cursor,
                    BATCH if self.outbox.claims is None else CLAIM_BATCH, datetime.now(UTC))
                if not batch:
                    if not (new or left or held):
                        break
                    await settle(0)
                    # Before the next pass reads, what this one gave out has its outcome
                    # (committed below). The lanes go on meanwhile: their deliveries are
                    # not marked yet, and the next pass passes over them.
                    if left:  # refill a lane once it is half empty, others or not
                        await lanes.room(left)
                    elif new:
                        await lanes.given_out_done()
                    else:
                        await lanes.join()  # only deliveries waiting in a lane were found
                    await asyncio.gather(*skips)
                    await writer.flush()
                    cursor, new, left, held, skips = 0, 0, set(), 0, []
                    continue
                cursor = batch[-1].id
                sendable = []
                for due in batch:
                    if lanes.holds(due):
                        held += 1
                    elif due.recipient is None:
                        skips.append(writer.skip(due.id, due.skip_reason or "skipped"))
                        self.report.counts[DeliveryState.SKIPPED] += 1
                        new += 1
                    elif lanes.reserve(due):
                        sendable.append(due)
                        new += 1
                    else:  # its domain's lane is full: a later pass
                        left.add(str(lanes.key(due)))
                for start in range(0, len(sendable), CHUNK):
                    ahead.append(loop.create_task(
                        self.renderer.render(sendable[start:start + CHUNK])))
                    await settle(AHEAD)
                    if self._stop is not None:
                        break
            await settle(0)
        finally:
            for task in ahead:
                task.cancel()
        await lanes.join()
        await asyncio.gather(*skips)

    async def _feed_urgent(self, lanes: _Lanes, writer: _StatusWriter,
                           db: ThreadPoolExecutor, *, until_idle: bool) -> None:
        """The engine's own due mails (notices, steps) to the head of the queue: every
        URGENT_POLL seconds while a campaign sends; with `until_idle`
        (no campaign), pass after pass until a pass finds none."""
        try:
            await self._feed_urgent_passes(lanes, writer, db, until_idle=until_idle)
        except Exception as exc:  # e.g. a list's sending identity refused: the run stops
            self.stop(str(exc))
            raise

    async def _feed_urgent_passes(self, lanes: _Lanes, writer: _StatusWriter,
                                  db: ThreadPoolExecutor, *, until_idle: bool) -> None:
        assert self.urgent_renderer is not None
        loop = asyncio.get_running_loop()
        while self._stop is None:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                self.stop("time limit reached")
                break
            batch = await loop.run_in_executor(
                db, self.outbox.urgent_due,
                BATCH if self.outbox.claims is None else CLAIM_BATCH, datetime.now(UTC),
                frozenset(self._urgent_ids))
            sendable = []
            for due in batch:
                self._urgent_ids.add(due.id)
                if due.recipient is None:
                    self.report.urgent[DeliveryState.SKIPPED] += 1
                    writer.skip(due.id, due.skip_reason or "skipped").add_done_callback(
                        lambda _f, i=due.id: self._urgent_ids.discard(i))
                else:
                    sendable.append(due)
            for start in range(0, len(sendable), CHUNK):
                if self._stop is not None:
                    break
                for item in await self.urgent_renderer.render(sendable[start:start + CHUNK]):
                    lanes.put_first(item)
            if until_idle:
                if not batch:
                    break
                await lanes.join()  # their outcomes, before the next pass reads
                await writer.flush()
                continue
            await asyncio.sleep(URGENT_POLL)  # cancelled when the campaign is done
        if until_idle:
            await lanes.join()

    async def _watch(self, db: ThreadPoolExecutor) -> None:
        """Notice a pause or cancel given from another process, and the time limit."""
        loop = asyncio.get_running_loop()
        while self._stop is None:
            await asyncio.sleep(0.5)
            if self.deadline is not None and time.monotonic() >= self.deadline:
                self.stop("time limit reached")
            if self.campaign_state is not None:
                try:
                    state = await loop.run_in_executor(db, self.campaign_state)
                except Exception as exc:  # noqa: BLE001 - a failed look (the database away
                    # for a moment) must not end the watch: the time limit is checked here
                    log.warning("could not read the campaign's state: %s",
                                " ".join(str(exc).split()))
                    continue
                if state != "sending":
                    self.stop(f"the campaign was set to {state}")
            if self.progress is not None:
                self.progress(self.report)

    async def _worker(self, lanes: _Lanes, writer: _StatusWriter) -> None:
        while (item := await lanes.get()) is not None:
            try:
                if self._stop is None:
                    await self._deliver(*item, writer, lanes)
            finally:
                lanes.done(item[0])
                self._urgent_ids.discard(item[0].id)

    async def _deliver(self, due: Due, message: Message | None, error: str | None,
                       writer: _StatusWriter, lanes: _Lanes) -> None:
        assert due.recipient is not None
        if message is None:
            # The same template renders for everyone else: this person's data breaks it
            # (the template fails, or makes a message the wire refuses: wire.check).
            if await writer.mark(due.id):
                writer.record(Result(due.id, Outcome("failed", error or "template"),
                                     self.outbox.max_attempts))
                self._count("failed", failed=True, reply=error or "template",
                            urgent=due.id in self._urgent_ids)
            return
        claims = self.outbox.claims
        self._stop_if_stalled()
        if self._stop is not None or not await writer.mark(due.id):
            return
        # The pace is taken after the mark is committed and once a connection is open,
        # right before the SMTP transaction: neither commit delays nor connection set-up
        # can then bunch messages up at the receiver.
        domain = due.recipient.email.rpartition("@")[2].lower()
        started = False  # the SMTP transaction began: cut off now, it may have arrived

        async def pace() -> None:
            nonlocal started
            try:
                await self.limiter.acquire(domain, since=lanes.since(due))
            except QuotaExhausted as exc:
                self.report.resume_at = exc.resume_at
                self.stop("the hourly or daily quota is used up")
            finally:
                lanes.passed(due)
            self._stop_if_stalled()  # marked ahead, then stalled: settled by another?
            if self._stop is not None:
                raise _NotSent
            started = True

        send = asyncio.ensure_future(self.transport.send(message, before=pace))
        self._in_flight.add(send)
        try:
            outcome = await send
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._cut_off or (task is not None and task.cancelling()):
                raise  # not ours: the worker itself is being cancelled
            if not started:
                await writer.release(due.id)  # cut off before its transaction began
                return
            outcome = Outcome(DeliveryState.UNKNOWN, "cut off by a second interrupt while "
                              "in flight: it may have arrived, so it is not resent")
        except _NotSent:
            await writer.release(due.id)  # marked but not sent: back in the queue
            return
        except MailerError as exc:  # e.g. an unreadable CA file: the run cannot go on
            await writer.release(due.id)
            self.stop(str(exc))
            raise
        except Exception as exc:  # noqa: BLE001 - one delivery's fault ends that one only
            # (a worker that died would hang the run, or leave its connection mid-
            # transaction for the next recipient)
            outcome = Outcome(DeliveryState.FAILED, f"not sent: internal error "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())})")
        finally:
            self._in_flight.discard(send)
        attempts = due.attempts + 1
        urgent = due.id in self._urgent_ids
        if outcome.kind == DeliveryState.SENT and claims is not None:
            claims.sent += 1
        if outcome.kind == DeliveryState.SENT and not urgent:
            self.report.last_sent = time.monotonic()
            if self.report.first_sent is None:
                self.report.first_sent = self.report.last_sent
        writer.record(Result(due.id, outcome, attempts, message.message_id))
        state, _ = self.outbox.next_state(outcome, attempts)
        self._count(state, failed=outcome.kind != DeliveryState.SENT, reply=outcome.reply,
                    urgent=urgent)

    def _stop_if_stalled(self) -> None:
        """Stop when this sender's lease is no longer surely its own (claims): stalled
        past it, another sender may have taken or settled its rows meanwhile."""
        claims = self.outbox.claims
        if claims is not None and not claims.fresh() and self._stop is None:
            self.stop("this sender's lease ran out (it was stalled); the others go on")

    def _count(self, state: str, *, failed: bool, reply: str = "",
               urgent: bool = False) -> None:
        """Count an outcome; pause the campaign when more than `pause_failure_rate` of
        FAILURE_WINDOW deliveries, among the last FAILURE_WINDOW, did not go out. Only a
        failure can tip it, so the reason quotes that failure's reply. The engine's own
        mails (`urgent`) are counted apart and do not count towards a pause."""
        if urgent:
            self.report.urgent[state] += 1
            return
        self.report.counts[state] += 1
        self._recent.append(failed)
        self._failures += failed
        if len(self._recent) > FAILURE_WINDOW:
            self._failures -= self._recent.popleft()
        if (failed and self._failures > self.pause_failure_rate * FAILURE_WINDOW
                and self.pause is not None and self._stop is None):
            reason = (f"{self._failures} of the last {len(self._recent)} deliveries did not "
                      f"go out (the last: {' '.join((reply or state).split())})")
            self.report.paused_reason = reason
            self.pause(reason)
            self.stop(f"paused: {reason}")


def summary(report: SendReport) -> dict[str, Any]:
    return {"sent": report.counts[DeliveryState.SENT],
            "deferred": report.counts[DeliveryState.DEFERRED],
            "failed": report.counts[DeliveryState.FAILED],
            "bounced": report.counts[DeliveryState.BOUNCED],
            "skipped": report.counts[DeliveryState.SKIPPED],
            "unknown": report.counts[DeliveryState.UNKNOWN],
            "unknown_found": report.unknown_found, "unknown_requeued": report.unknown_requeued,
            "seconds": round(report.seconds, 2), "rate": round(report.rate, 1),
            "stopped": report.stopped, "paused_reason": report.paused_reason,
            "interrupted": report.interrupted,
            "open_left": report.open_left}


def urgent_summary(report: SendReport) -> dict[str, int]:
    """The engine's own mails a send sent besides (notices, steps), as `mailer run`
    reports them: a bounce at send time is counted as failed."""
    counts = report.urgent
    return {"sent": counts[DeliveryState.SENT], "deferred": counts[DeliveryState.DEFERRED],
            "failed": counts[DeliveryState.FAILED] + counts[DeliveryState.BOUNCED],
            "skipped": counts[DeliveryState.SKIPPED],
            "unknown": counts[DeliveryState.UNKNOWN]}
