"""The pace of outgoing mail: a global rate with a burst, per-domain rates, and sliding hourly
and daily quotas, for an asyncio sender.

The sender calls `await limiter.acquire(domain)` right before each message; it returns when
that message may go out now, and counts it as sent:

    limits = Limits(rate=50, hourly=10_000, daily=50_000, per_domain={"gmail.com": (20, 20)})
    limiter = RateLimiter(limits, history=send_times_of_the_last_day)  # time.time() floats
    try:
        for message in outbox:
            await limiter.acquire(message.recipient)  # an address or just its domain
            await transport.send(message)
    except QuotaExhausted as stop:
        print(f"quota used up: run again after {stop.resume_at}")

Rate and burst. `rate` messages a second on average, and never more than `burst` messages
in any 1-second window: any window, not just whole seconds ([t, t + 1) for every t; checked
on the times acquire() returns). `burst` defaults to `ceil(rate)`. With `burst == rate` the
messages go strictly evenly, one every 1/rate seconds; a larger burst lets `burst - rate`
messages go ahead of that schedule after a pause (rate 50, burst 60: 11 at once, then one
every 20 ms, so the first second holds 60). Over any L seconds at most
`rate * L + (burst - rate) + 2` messages go: a 20 s run at 50/s, burst 50, sends 1,000.
The limiter does not fall short either: it computes the exact time the next message is
allowed and sleeps until then. A message that was already waiting when its turn came keeps
its place in the even schedule when it goes a little late (asyncio fires timers up to ~1 ms
late; a message to a limited domain may wait for the global pace), by up to one interval,
instead of pushing every later message back; the 1-second rule is checked on the actual
times, so lateness never breaks it.

Per domain. `per_domain={"gmail.com": (20, 20)}` is a (rate, burst) pair of its own for
messages to that domain, on top of the global one: such a message waits for both. While it
waits for its domain it holds nothing here: messages to other domains keep going at the
global pace. (A caller that holds something while it waits, like a connection, asks
`domain_wait()` first: the sender takes a message to a limited domain only when its turn
has come, see mailer/delivery/sender.py.) When several waiting messages may go at the
same moment, the one that has waited longest goes first: whose acquire() came first, or
whose `since` is earlier (so messages to gmail.com asked for after a flood to other
domains wait behind that flood, unless they were waiting for their turn before it).
Domains match exactly, case-insensitively, on the part after the last '@' (a trailing dot
dropped, international names in their xn-- form): "gmail.com" covers "An@GMail.com" but
not "googlemail.com" or "mx.gmail.com".

Quotas. `hourly` and `daily` count the messages in the last 3,600 and 86,400 seconds of the
wall clock (`time.time()`), this run's and the `history` of earlier runs (cron starts a new
process every minute). They are kept in 3,600 buckets per window (1 s for the hour, 24 s for
the day), whatever the quota: a bucket counts until its latest message leaves the window, so
a quota is never exceeded, and at worst a message counts one bucket width too long. When a
quota is used up, acquire() does not sleep for hours: it raises `QuotaExhausted` with
`resume_at`, the wall-clock time the next message will be allowed, and so do the messages
already waiting. The history also paces the first messages of a run: sends of the last
second or two count towards the rate and the 1-second window (they carry no domain).

A cancelled acquire() gives its turn up; one cancelled after its turn came counts as sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from mailer.content.compose import ascii_domain
from mailer.errors import InvalidInput, MailerError

__all__ = ["Limits", "QuotaExhausted", "RateLimiter", "domain_key"]

WINDOW_GUARD = 0.05  # seconds added to the burst's 1-second window (see _Pace)

BUCKETS = 3600  # per quota window: the hour in seconds, the day in 24-second steps


def domain_key(address_or_domain: str) -> str:
    """The domain as the per-domain limits name it: after the last '@', lower-case, no
    trailing dot, international names in their ASCII (xn--) form."""
    return _domain_key(address_or_domain.rpartition("@")[2])


@functools.lru_cache(maxsize=65536)  # a send asks ~3 times a message, of few domains
def _domain_key(domain: str) -> str:
    domain = domain.strip().rstrip(".").lower()
    with contextlib.suppress(ValueError):  # not a valid name: matched as written
        domain = ascii_domain(domain)  # as on the envelope (an@straße.de: not strasse.de)
    return domain


def _rate(name: str, value: object) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value <= 0):
        raise InvalidInput(f"{name} must be a positive number of messages a second, "
                           f"not {value!r}.")
    return float(value)


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{name} must be a whole number of messages, at least 1, "
                           f"not {value!r}.")
    return value


def _burst(name: str, rate: float, burst: object) -> int:
    if burst is None:
        return math.ceil(rate)
    burst = _count(name, burst)
    if burst < rate:
        raise InvalidInput(f"{name} ({burst}) must be at least the rate ({rate:g} a second): "
                           "it is the most messages in any 1-second window.")
    return burst


@dataclass(frozen=True)
class Limits:
    """What the limiter enforces; None is no limit. Invalid values raise ValueError
    (`InvalidInput`, which the CLI prints as one line)."""

    rate: float | None = None  # messages per second, None = unlimited
    burst: int | None = None  # most messages in any 1-second window; default ceil(rate)
    hourly: int | None = None  # most messages in any 3,600 s (wall clock)
    daily: int | None = None  # most messages in any 86,400 s (wall clock)
    # domain -> (rate, burst), exact domain, case-insensitive; burst None: ceil(rate)
    per_domain: dict[str, tuple[float, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rate is None:
            if self.burst is not None:
                raise InvalidInput(f"A burst ({self.burst!r}) needs a rate: for at most N "
                                   "messages in any second, set rate=N.")
        else:
            rate = _rate("The rate", self.rate)
            object.__setattr__(self, "rate", rate)
            object.__setattr__(self, "burst", _burst("The burst", rate, self.burst))
        for name in ("hourly", "daily"):
            if getattr(self, name) is not None:
                _count(f"The {name} quota", getattr(self, name))
        domains: dict[str, tuple[float, int]] = {}
        for name, pair in dict(self.per_domain).items():
            key = domain_key(name) if isinstance(name, str) else ""
            if not key or "@" in name:
                raise InvalidInput(f"per_domain needs domain names, like 'gmail.com', "
                                   f"not {name!r}.")
            if key in domains:
                raise InvalidInput(f"per_domain names {key!r} twice.")
            try:
                rate, burst = pair
            except (TypeError, ValueError):
                raise InvalidInput(f"per_domain[{name!r}] must be (rate, burst), "
                                   f"not {pair!r}.") from None
            rate = _rate(f"The rate for {key}", rate)
            domains[key] = (rate, _burst(f"The burst for {key}", rate, burst))
        object.__setattr__(self, "per_domain", domains)


class QuotaExhausted(MailerError):
    """The hourly or daily quota is used up: no message may go before `resume_at`."""

    def __init__(self, resume_at: float, *, quota: str = "sending",
                 limit: int | None = None) -> None:
        try:
            when = datetime.fromtimestamp(resume_at).astimezone().isoformat(timespec="seconds")
        except (OverflowError, OSError, ValueError):
            when = repr(resume_at)
        size = f" of {limit:,} messages" if limit is not None else ""
        super().__init__(f"The {quota} quota{size} is used up until {when}.")
        self.resume_at = resume_at  # time.time() when the next message would be allowed
        self.quota = quota  # "hourly" or "daily"
        self.limit = limit


class _Pace:
    """One rate and burst: a GCRA ("theoretical arrival time") for the average rate, and
    the last `burst` send times, so that a new one is at least 1 s after the burst-th last."""

    __slots__ = ("interval", "tolerance", "burst", "tat", "recent", "window")

    def __init__(self, rate: float, burst: int) -> None:
        self.interval = 1.0 / rate
        self.tolerance = (burst - rate) / rate  # how far ahead of the even schedule
        self.burst = burst
        self.tat = -math.inf  # when the next message is due on the even schedule
        self.recent: deque[float] = deque(maxlen=burst)
        # The burst is kept over a little more than a second, so the small differences in
        # how long messages take to reach the receiver (connection set-up, scheduling)
        # cannot put more than `burst` into one of *its* seconds. Only bursts feel it:
        # at the even pace the burst-th last message is older than this anyway.
        self.window = 1.0 + min(WINDOW_GUARD, self.tolerance / 2)

    def earliest(self) -> float:
        """The earliest time the next message may go."""
        allowed = self.tat - self.tolerance
        if len(self.recent) == self.burst:
            return max(allowed, self.recent[0] + self.window)
        return allowed

    def record(self, t: float, ready: float) -> None:
        """Count a message sent at `t`, which waited for this pace from `ready` on. The
        next one is due an interval after the later of its due time and `ready`: one that
        was waiting and went late (by up to an interval) does not push the schedule back."""
        self.tat = max(self.tat, ready, t - self.interval) + self.interval
        self.recent.append(t)


class _Quota:
    """A sliding-window count in at most BUCKETS + 1 buckets of [index, count, latest]."""

    __slots__ = ("name", "limit", "window", "width", "buckets", "total")

    def __init__(self, name: str, limit: int, window: float) -> None:
        self.name, self.limit, self.window = name, limit, window
        self.width = window / BUCKETS
        self.buckets: deque[list] = deque()
        self.total = 0

    def add(self, t: float) -> None:
        index = math.floor(t / self.width)
        last = self.buckets[-1] if self.buckets else None
        if last is not None and index <= last[0]:  # the same bucket, or the clock went back
            last[1] += 1
            last[2] = max(last[2], t)
        else:
            self.buckets.append([index, 1, t])
        self.total += 1

    def merge(self, times: dict[int, list]) -> None:
        """Add {index: [index, count, latest]} from a history, in any order."""
        for index, count, latest in self.buckets:
            mine = times.setdefault(index, [index, 0, latest])
            mine[1] += count
            mine[2] = max(mine[2], latest)
        self.buckets = deque(sorted(times.values()))
        self.total = sum(b[1] for b in self.buckets)

    def resume_at(self, now: float) -> float | None:
        """None if one more message may go at `now`, else when one may."""
        while self.buckets and self.buckets[0][2] + self.window <= now:
            self.total -= self.buckets.popleft()[1]
        excess = self.total - self.limit + 1
        if excess <= 0:
            return None
        for _, count, latest in self.buckets:
            excess -= count
            if excess <= 0:
                return latest + self.window
        raise AssertionError("unreachable: the buckets hold the total")


class _Waiter:
    __slots__ = ("seq", "arrival", "queue", "pace", "future")

    def __init__(self, seq: int, arrival: float, queue: deque[_Waiter], pace: _Pace | None,
                 future: asyncio.Future[None]) -> None:
        self.seq, self.arrival, self.queue, self.pace = seq, arrival, queue, pace
        self.future = future


def _head(queue: deque[_Waiter]) -> _Waiter | None:
    while queue and queue[0].future.done():  # cancelled
        queue.popleft()
    return queue[0] if queue else None


class RateLimiter:
    """Grants messages their turn under `Limits`; see the module docstring.

    `clock` paces (monotonic seconds), `wall` dates sends for the quotas and the history
    (time.time() seconds), `sleep` waits: all three can be replaced for tests."""

    def __init__(self, limits: Limits, *, history: Iterable[float] = (),
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.limits = limits
        self._clock, self._wall, self._sleep = clock, wall, sleep
        self._global = _Pace(limits.rate, limits.burst or 1) if limits.rate else None
        self._domains = {d: _Pace(r, b) for d, (r, b) in limits.per_domain.items()}
        self._quotas = [_Quota(name, limit, window) for name, limit, window in
                        (("hourly", limits.hourly, 3600.0), ("daily", limits.daily, 86400.0))
                        if limit is not None]
        # Waiting messages, first come first served: one queue per limited domain, one
        # for all the others.
        self._queues: dict[str | None, deque[_Waiter]] = {None: deque()}
        self._queues.update((d, deque()) for d in self._domains)
        self._seq = 0
        self._timer: asyncio.Task[None] | None = None
        self._timer_at = math.inf
        self._granted = 0
        self._started: float | None = None
        self.preload(history)

    @property
    def granted(self) -> int:
        """Messages granted so far (not counting the history)."""
        return self._granted

    def preload(self, times: Iterable[float]) -> None:
        """Count earlier sends (time.time() floats, any order) towards the quotas; those of
        the last second or two also towards the global rate and burst. Meant for the start
        of a run; only what the windows need is kept."""
        wall_now, mono_now = self._wall(), self._clock()
        staged: list[dict[int, list]] = [{} for _ in self._quotas]
        pace = self._global
        since = wall_now - (2.0 + pace.tolerance + pace.interval) if pace else math.inf
        recent: list[float] = []
        for t in times:
            t = float(t)
            if not math.isfinite(t):
                raise InvalidInput(f"A send time in the history is {t!r}, not a time.")
            for quota, stage in zip(self._quotas, staged, strict=True):
                if t + quota.window > wall_now:
                    index = math.floor(t / quota.width)
                    bucket = stage.get(index)
                    if bucket is None:
                        stage[index] = [index, 1, t]
                    else:
                        bucket[1] += 1
                        bucket[2] = max(bucket[2], t)
            if t > since:
                recent.append(t)
        for quota, stage in zip(self._quotas, staged, strict=True):
            quota.merge(stage)
        if pace is not None:
            for t in sorted(recent):
                mono = min(mono_now - (wall_now - t), mono_now)
                if not pace.recent or mono >= pace.recent[-1]:
                    pace.record(mono, mono)

    async def acquire(self, domain: str, *, since: float | None = None) -> None:
        """Wait until one message to `domain` (a domain or an address) may go, and count
        it. Raises QuotaExhausted, at once, when a quota is used up.

        `since`: when (in this limiter's clock) the caller's message started waiting for
        its turn, if before now. One that comes a little after its turn because the
        caller had things to do first (the sender marks it and opens a connection) then
        keeps its place in the even schedule, by up to one interval, as if it had
        waited here, instead of pushing every later message back."""
        self._refuse_over_quota(self._wall())
        now = self._clock()
        if self._started is None:
            self._started = now
        key = domain_key(domain)
        pace = self._domains.get(key)
        queue = self._queues[key if pace is not None else None]
        waiter = _Waiter(self._seq, now if since is None else min(now, since), queue, pace,
                         asyncio.get_running_loop().create_future())
        self._seq += 1
        queue.append(waiter)
        self._dispatch()
        if waiter.future.done():
            return waiter.future.result()
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter in queue:
                queue.remove(waiter)
            if self._timer is not None and not any(self._queues.values()):
                self._timer.cancel()
                self._timer = None
            raise

    def now(self) -> float:
        """This limiter's clock (for `since`)."""
        return self._clock()

    def domain_wait(self, domain: str, ahead: int = 0) -> float:
        """Seconds until a message to `domain` may go as far as its domain's own limit is
        concerned, with `ahead` others to that domain going first (one interval each);
        0.0 when it may go now or the domain has no limit. The global pace and the quotas
        are not counted: a sender uses this to pick a message that will not wait long for
        its domain, and so does not tie up a connection (see Sender)."""
        pace = self._domains.get(domain_key(domain))
        if pace is None:
            return 0.0
        return max(0.0, pace.earliest() + ahead * pace.interval - self._clock())

    def achieved(self) -> float:
        """Messages per second granted since the first acquire(); 0.0 before time passes."""
        if self._started is None:
            return 0.0
        elapsed = self._clock() - self._started
        return self._granted / elapsed if elapsed > 0 else 0.0

    def _over_quota(self, wall: float) -> QuotaExhausted | None:
        worst: tuple[float, _Quota] | None = None
        for quota in self._quotas:
            resume = quota.resume_at(wall)
            if resume is not None and (worst is None or resume > worst[0]):
                worst = (resume, quota)
        if worst is None:
            return None
        return QuotaExhausted(worst[0], quota=worst[1].name, limit=worst[1].limit)

    def _refuse_over_quota(self, wall: float) -> None:
        error = self._over_quota(wall)
        if error is not None:
            raise error

    def _dispatch(self) -> None:
        """Grant every waiting message that may go now, first come first served; then set
        the timer for the next moment one may."""
        now = self._clock()
        pace = self._global
        while pace is None or pace.earliest() <= now:
            best: _Waiter | None = None
            for queue in self._queues.values():
                head = _head(queue)
                if (head is not None and (best is None or (head.arrival, head.seq)
                                          < (best.arrival, best.seq))
                        and (head.pace is None or head.pace.earliest() <= now)):
                    best = head
            if best is None:
                break
            wall = self._wall()
            if self._over_quota(wall) is not None:
                self._fail_all(lambda wall=wall: self._over_quota(wall))
                return
            best.queue.popleft()
            ready = best.arrival  # ready for the global pace: when its domain allowed it
            if best.pace is not None:
                ready = max(ready, best.pace.earliest())
                best.pace.record(now, best.arrival)
            if pace is not None:
                pace.record(now, ready)
            for quota in self._quotas:
                quota.add(wall)
            self._granted += 1
            best.future.set_result(None)
        self._arm()

    def _arm(self) -> None:
        """Make sure a timer wakes the limiter when the next waiting message may go."""
        floor = self._global.earliest() if self._global is not None else -math.inf
        at = math.inf
        for queue in self._queues.values():
            head = _head(queue)
            if head is not None:
                at = min(at, max(floor, head.pace.earliest() if head.pace else -math.inf))
        if at == math.inf:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._timer is not None and not self._timer.done():
            if self._timer_at <= at:
                return  # it wakes first, and sets the next timer
            self._timer.cancel()
        self._timer_at = at
        self._timer = asyncio.get_running_loop().create_task(self._wake(at))

    async def _wake(self, at: float) -> None:
        try:
            delay = at - self._clock()
            if delay > 0:
                await self._sleep(delay)
            self._timer = None
            self._dispatch()
        except Exception as error:  # a broken clock or sleep: the waiting must not hang
            self._timer = None
            self._fail_all(lambda error=error: error)

    def _fail_all(self, make: Callable[[], Exception | None]) -> None:
        for queue in self._queues.values():
            while queue:
                waiter = queue.popleft()
                if not waiter.future.done():
                    waiter.future.set_exception(make() or RuntimeError("rate limiter"))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
