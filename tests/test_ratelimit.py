"""The rate limiter, on virtual time: what a receiving server would measure.

Every test but one runs the limiter on a fake clock: either a `FakeTime` (a clock whose
sleep just moves it on, for one acquire() at a time) or a `VirtualTimeLoop`, an asyncio
event loop whose clock jumps to the next timer whenever every task waits, so hundreds of
concurrent acquire() calls run through a 20-second schedule in milliseconds, exactly and
the same way every time. The checks are on the times acquire() returned: no 1-second window
(any window, not just whole seconds) holds more than the burst, the average rate stays
within its bound, and no message waits longer than the limits make it.
"""

from __future__ import annotations

import asyncio
import math
import random
import selectors
from collections.abc import Callable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.delivery.ratelimit import (
    WINDOW_GUARD,
    Limits,
    QuotaExhausted,
    RateLimiter,
    domain_key,
)
from mailer.errors import MailerError

START = 1_000.0  # the fake monotonic clock at the start of a test
EPOCH = 1_800_000_000.0  # the fake wall clock at START (a whole hour, a whole day: 2027)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: when no task can run, the clock jumps to the next
    timer instead of waiting for it."""

    def __init__(self) -> None:
        self.now = START
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self.now


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self.loop = loop

    def select(self, timeout: float | None = None) -> list:
        if timeout is None:
            raise RuntimeError("deadlock: every task waits and no timer is set")
        if timeout > 0:
            self.loop.now += timeout
        return super().select(0)


class Run:
    """The outcome of `simulate`: when each acquire() returned, or what it raised, and in
    which order the acquire() calls were made."""

    def __init__(self, arrivals: list[tuple[float, str]], results: list,
                 limiter: RateLimiter, sleeps: list[float], order: list[int]) -> None:
        self.arrivals, self.results, self.limiter, self.sleeps, self.order = (
            arrivals, results, limiter, sleeps, order)

    def times(self, domain: str | None = None) -> list[float]:
        return sorted(r for (_, d), r in zip(self.arrivals, self.results, strict=True)
                      if isinstance(r, float) and (domain is None or d == domain))

    def errors(self) -> list[BaseException]:
        return [r for r in self.results if isinstance(r, BaseException)]


def simulate(limits: Limits, arrivals: Sequence[tuple[float, str]], *,
             history: Sequence[float] = (), late: Callable[[], float] | None = None,
             cancel: Sequence[int] = ()) -> Run:
    """Call acquire(domain) for each (arrival, domain), arrival in seconds after START, all
    concurrently on virtual time. `late` adds to every sleep of the limiter (a busy loop);
    the calls numbered in `cancel` are cancelled 1 ms after they arrive."""
    arrivals = list(arrivals)

    async def main() -> Run:
        loop = asyncio.get_running_loop()
        sleeps: list[float] = []
        order: list[int] = []

        async def sleep(delay: float) -> None:  # the fake sleep: moves the virtual clock
            sleeps.append(delay)
            await asyncio.sleep(delay + (late() if late else 0.0))

        limiter = RateLimiter(limits, history=history, clock=loop.time,
                              wall=lambda: loop.time() - START + EPOCH, sleep=sleep)

        async def one(i: int, at: float, domain: str) -> float:
            if at > 0:
                await asyncio.sleep(at)
            order.append(i)
            await limiter.acquire(domain)
            return loop.time()

        tasks = [asyncio.ensure_future(one(i, at, d)) for i, (at, d) in enumerate(arrivals)]
        for i in cancel:
            loop.call_at(START + arrivals[i][0] + 0.001, tasks[i].cancel)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return Run(arrivals, results, limiter, sleeps, order)

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main())


class FakeTime:
    """A clock for one acquire() at a time: sleeping moves it on by the delay."""

    def __init__(self) -> None:
        self.now = START
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now - START + EPOCH

    async def sleep(self, delay: float) -> None:
        self.slept.append(delay)
        self.now += delay

    def limiter(self, limits: Limits, history: Sequence[float] = ()) -> RateLimiter:
        return RateLimiter(limits, history=history, clock=self.clock, wall=self.wall,
                           sleep=self.sleep)


def at_once(count: int, domain: str = "example.org") -> list[tuple[float, str]]:
    return [(0.0, domain)] * count


def most_in_one_second(times: list[float]) -> int:
    """The most times in any window [t, t + 1), by two pointers over the sorted times."""
    most, first = 0, 0
    for last, t in enumerate(times):
        while times[first] + 1.0 <= t:
            first += 1
        most = max(most, last - first + 1)
    return most


def most_ahead(times: list[float], rate: float) -> float:
    """The largest (j - i) - rate * (t_j - t_i) over i < j: how many messages more than
    the rate went in any stretch. The limits allow (burst - rate) + 1: the burst, and one
    message that went late but kept its place in the schedule."""
    worst, low = 0.0, math.inf
    for j, t in enumerate(times):
        if low < math.inf:
            worst = max(worst, (j - rate * t) - low)
        low = min(low, j - rate * t)
    return worst


def allowed_ahead(rate: float, burst: int) -> float:
    return (burst - rate) + 1 + 1e-6


# The global rate and burst


def test_50_a_second_for_20_seconds_is_even_and_exact():
    run = simulate(Limits(rate=50), at_once(1100))
    times = run.times()
    assert times[0] == START
    in_20s = [t for t in times if t < START + 19.99]
    assert len(in_20s) == 1000  # 50/s, not 2 % more, not 2 % less
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) == pytest.approx(0.02, abs=1e-9)  # burst == rate: strictly even
    assert max(gaps) == pytest.approx(0.02, abs=1e-9)
    assert most_in_one_second(times) == 50
    assert abs(run.limiter.achieved() / 50 - 1) < 0.02
    assert run.limiter.granted == 1100


def test_a_burst_goes_ahead_then_the_pace_is_even():
    run = simulate(Limits(rate=50, burst=60), at_once(1100))
    times = run.times()
    assert sum(t < START + 0.001 for t in times) == 11  # burst - rate ahead, and one
    assert most_in_one_second(times) == 60
    assert most_ahead(times, 50) <= allowed_ahead(50, 60)
    in_20s = sum(t < START + 19.99 for t in times)
    assert 1000 <= in_20s <= 1020  # within 2 % of 50/s


def test_messages_arriving_slower_than_the_rate_go_at_once():
    arrivals = [(i * 0.1, "example.org") for i in range(50)]  # 10/s, limit 20/s
    run = simulate(Limits(rate=20), arrivals)
    assert run.times() == pytest.approx([START + a for a, _ in arrivals])
    assert run.sleeps == []


def test_late_timers_keep_the_rate_and_never_break_the_window():
    jitter = random.Random(7)
    run = simulate(Limits(rate=50), at_once(1000),
                   late=lambda: jitter.uniform(0, 0.002))  # a busy loop: up to 2 ms late
    times = run.times()
    assert most_in_one_second(times) <= 50
    assert most_ahead(times, 50) <= allowed_ahead(50, 50)
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert 0.98 * 50 <= achieved <= 1.02 * 50


def test_concurrent_acquires_get_distinct_slots_in_arrival_order():
    run = simulate(Limits(rate=4, burst=4), at_once(9))
    assert run.results == pytest.approx([START + i * 0.25 for i in range(9)])


def test_the_limiter_sleeps_exactly_until_the_next_slot():
    fake = FakeTime()
    limiter = fake.limiter(Limits(rate=5))

    async def send(count: int) -> list[float]:
        times = []
        for _ in range(count):
            await limiter.acquire("example.org")
            times.append(fake.now)
        return times

    times = asyncio.run(send(20))
    assert times == pytest.approx([START + i * 0.2 for i in range(20)])
    assert fake.slept == pytest.approx([0.2] * 19)  # one sleep a message, never more


def test_unlimited_passes_at_once_without_sleeping():
    fake = FakeTime()
    limiter = fake.limiter(Limits())

    async def main() -> None:
        for _ in range(1000):
            step = limiter.acquire("example.org").__await__()
            with pytest.raises(StopIteration):  # finished without suspending once
                next(step)

    asyncio.run(main())
    assert fake.slept == [] and limiter.granted == 1000
    assert limiter.achieved() == 0.0  # no time passed


def test_a_cancelled_acquire_gives_its_turn_up():
    run = simulate(Limits(rate=1), at_once(3), cancel=[1])
    assert isinstance(run.results[1], asyncio.CancelledError)
    assert run.results[0] == START and run.results[2] == START + 1
    assert run.limiter.granted == 2


def test_when_every_waiting_acquire_is_cancelled_the_timer_goes_too():
    run = simulate(Limits(rate=0.01), at_once(3), cancel=[1, 2])  # the next slot: 100 s
    assert run.results[0] == START and run.limiter.granted == 1
    assert run.limiter._timer is None


def test_a_broken_sleep_fails_the_waiting_acquires_instead_of_hanging():
    async def broken(delay: float) -> None:
        raise OSError("no timers today")

    async def main() -> list:
        limiter = RateLimiter(Limits(rate=1), sleep=broken)
        return await asyncio.gather(*(limiter.acquire("example.org") for _ in range(3)),
                                    return_exceptions=True)

    first, *rest = asyncio.run(main())
    assert first is None
    assert [type(e) for e in rest] == [OSError, OSError]


def test_a_history_of_the_last_second_paces_the_first_messages():
    history = [EPOCH - 0.5, EPOCH - 0.4]  # the last run's last two, 2 a second
    run = simulate(Limits(rate=2), at_once(3), history=history)
    assert run.times() == pytest.approx([START + 0.5, START + 1.0, START + 1.5])


def test_acquire_works_with_the_real_clock_and_sleep():
    limiter = RateLimiter(Limits(rate=200, per_domain={"gmail.com": (100, 100)}))

    async def main() -> None:
        await asyncio.gather(*(limiter.acquire(d) for d in ["a@gmail.com", "b.org"] * 5))

    asyncio.run(main())  # 10 messages at 200/s: ~45 ms; nothing about time is asserted
    assert limiter.granted == 10


# Per-domain limits


def test_a_slow_domain_does_not_hold_up_the_others():
    gmail = [(0.0, "gmail.com")] * 100  # queued first: 20 s of gmail at 5/s
    others = [(0.0, "example.org")] * 600
    run = simulate(Limits(rate=50, per_domain={"gmail.com": (5, 5)}), gmail + others)
    g, o, everything = run.times("gmail.com"), run.times("example.org"), run.times()
    assert most_in_one_second(g) == 5 and most_ahead(g, 5) <= allowed_ahead(5, 5)
    assert most_in_one_second(everything) <= 50
    assert o[0] <= START + 0.02  # not behind gmail's backlog
    in_10s = sum(t < START + 9.99 for t in everything)
    assert abs(in_10s / 500 - 1) < 0.02  # together they reach the global rate
    assert abs(sum(t < START + 9.99 for t in g) / 50 - 1) < 0.02  # and gmail gets its 5/s


def test_domain_wait_says_when_a_limited_domain_has_its_turn():
    """What the sender asks before it gives a message to a limited domain a connection:
    the domain's own limit only, counting the ones already given out ("ahead")."""
    fake = FakeTime()
    limiter = fake.limiter(Limits(rate=100, per_domain={"gmail.com": (2, 2)}))

    async def main() -> None:
        assert limiter.domain_wait("an@gmail.com") == 0.0
        await limiter.acquire("an@gmail.com")
        assert limiter.domain_wait("GMail.com") == pytest.approx(0.5)  # 2/s: evenly
        assert limiter.domain_wait("gmail.com", ahead=2) == pytest.approx(1.5)
        assert limiter.domain_wait("example.org", ahead=5) == 0.0  # no limit of its own
        fake.now += 0.2
        assert limiter.domain_wait("gmail.com") == pytest.approx(0.3)
        fake.now += 0.3
        assert limiter.domain_wait("gmail.com") == 0.0
    asyncio.run(main())


def test_a_message_waiting_since_before_its_turn_keeps_its_place():
    """The sender takes a limited domain's message when its turn comes, then marks it and
    opens a connection: it asks 50 ms late. With `since` the schedule keeps its 0.2 s
    steps; without, each such delay is lost for good (5/s became 4/s)."""
    for since, due in ((True, 0.15), (False, 0.2)):
        fake = FakeTime()
        limiter = fake.limiter(Limits(rate=100, per_domain={"gmail.com": (5, 5)}))

        async def main(since: bool = since, fake: FakeTime = fake,
                       limiter: RateLimiter = limiter) -> float:
            await limiter.acquire("gmail.com")
            fake.now += 0.25  # its turn was at +0.2; it was waiting (in the sender) at +0.1
            await limiter.acquire("gmail.com", since=START + 0.1 if since else None)
            assert fake.now == START + 0.25  # it goes at once
            return limiter.domain_wait("gmail.com")
        assert asyncio.run(main()) == pytest.approx(due)


def test_without_a_global_rate_other_domains_pass_at_once():
    arrivals = [(0.0, "An@GMail.com"), (0.0, "x@Other.org")] * 10
    run = simulate(Limits(per_domain={"gmail.com": (2, 2)}), arrivals)
    gmail = [r for (_, d), r in zip(arrivals, run.results, strict=True) if "GMail" in d]
    other = [r for (_, d), r in zip(arrivals, run.results, strict=True) if "Other" in d]
    assert other == [START] * 10
    assert gmail == pytest.approx([START + i * 0.5 for i in range(10)])


def test_domains_match_exactly_and_case_insensitively():
    assert domain_key("Someone@GMail.COM") == "gmail.com"
    assert domain_key("gmail.com.") == "gmail.com"
    assert domain_key("an@bücher.de") == "xn--bcher-kva.de"
    assert domain_key("an@straße.de") == "xn--strae-oqa.de"  # IDNA 2008, as sent
    limits = Limits(per_domain={"GMail.com.": (1, 1), "bücher.de": (1, 1)})
    assert set(limits.per_domain) == {"gmail.com", "xn--bcher-kva.de"}
    arrivals = [(0.0, d) for d in ["a@gmail.com", "b@GMAIL.COM", "c@mx.gmail.com",
                                   "d@googlemail.com", "e@gmail.com.", "f@BÜCHER.de",
                                   "g@xn--bcher-kva.de"]]
    run = simulate(limits, arrivals)
    assert run.results == [START, START + 1, START, START, START + 2, START, START + 1]


# Quotas


def test_the_hourly_quota_counts_the_history_and_says_when_to_resume():
    fake = FakeTime()
    first, second = EPOCH - 3000.25, EPOCH - 1000.0
    limiter = fake.limiter(Limits(hourly=3), history=[first, second, EPOCH - 7200])

    async def main() -> None:
        await limiter.acquire("example.org")  # 2 in the last hour: a third may go
        with pytest.raises(QuotaExhausted) as stop:
            await limiter.acquire("example.org")
        assert stop.value.resume_at == first + 3600
        assert stop.value.quota == "hourly" and stop.value.limit == 3
        fake.now += stop.value.resume_at - fake.wall() - 0.01
        with pytest.raises(QuotaExhausted):
            await limiter.acquire("example.org")
        fake.now += 0.02
        await limiter.acquire("example.org")
        with pytest.raises(QuotaExhausted) as stop:
            await limiter.acquire("example.org")
        assert stop.value.resume_at == second + 3600

    asyncio.run(main())
    assert fake.slept == []  # a quota never sleeps


def test_quota_buckets_keep_memory_small_and_are_never_early():
    # 200,000 sends over the last day, for a quota of a million: 3,600 buckets, not 200,000
    # floats.
    history = (EPOCH - 86_000 + i * 0.43 for i in range(200_000))
    limiter = FakeTime().limiter(Limits(hourly=1_000_000, daily=1_000_000), history)
    hourly, daily = limiter._quotas
    assert hourly.total == sum(EPOCH - 86_000 + i * 0.43 > EPOCH - 3600
                               for i in range(200_000))
    assert daily.total == 200_000
    assert len(hourly.buckets) <= 3601 and len(daily.buckets) <= 3601
    # 100 sends within one bucket count until the last of them is an hour old.
    times = [EPOCH - 1800 + k * 0.001 for k in range(100)]
    fake = FakeTime()
    limiter = fake.limiter(Limits(hourly=100), random.Random(1).sample(times, 100))

    async def main() -> None:
        with pytest.raises(QuotaExhausted) as stop:
            await limiter.acquire("example.org")
        assert stop.value.resume_at == max(times) + 3600
        assert 0 <= stop.value.resume_at - (min(times) + 3600) <= 1.0  # one bucket's width

    asyncio.run(main())


def test_the_daily_quota_stops_a_run_and_the_waiting_messages():
    run = simulate(Limits(rate=10, daily=5), at_once(8))
    assert run.times() == pytest.approx([START + i * 0.1 for i in range(5)])
    errors = run.errors()
    assert len(errors) == 3 and all(isinstance(e, QuotaExhausted) for e in errors)
    # The five went within one 24-second bucket: it counts until its latest is a day old.
    assert all(e.resume_at == pytest.approx(EPOCH + 86_400.4, abs=1e-3) for e in errors)
    assert all(e.quota == "daily" for e in errors)
    assert "daily quota of 5 messages is used up until" in str(errors[0])
    assert isinstance(errors[0], MailerError)
    assert len({id(e) for e in errors}) == 3  # one exception each, not one shared


def test_preload_counts_like_history():
    fake = FakeTime()
    limiter = fake.limiter(Limits(hourly=2, daily=2))
    limiter.preload([EPOCH - 86_500, EPOCH - 50_000])  # one too old for either window

    async def main() -> None:
        await limiter.acquire("example.org")  # hourly: 1 of 2, daily: 2 of 2
        with pytest.raises(QuotaExhausted) as stop:
            await limiter.acquire("example.org")
        assert stop.value.quota == "daily" and stop.value.resume_at == EPOCH + 36_400

    asyncio.run(main())


def test_both_quotas_used_up_resume_when_both_allow():
    fake = FakeTime()
    limiter = fake.limiter(Limits(hourly=1, daily=2), [EPOCH - 80_000])

    async def main() -> None:
        await limiter.acquire("example.org")
        with pytest.raises(QuotaExhausted) as stop:
            await limiter.acquire("example.org")
        assert stop.value.resume_at == EPOCH + 6_400 and stop.value.quota == "daily"

    asyncio.run(main())


# Limits


def test_burst_defaults_to_the_rate_rounded_up():
    assert Limits(rate=50).burst == 50
    assert Limits(rate=2.5).burst == 3
    assert Limits(rate=0.5).burst == 1
    assert Limits(per_domain={"a.org": (2.5, None)}).per_domain == {"a.org": (2.5, 3)}


@pytest.mark.parametrize("kwargs, message", [
    ({"rate": 0}, "positive number"),
    ({"rate": -1}, "positive number"),
    ({"rate": math.nan}, "positive number"),
    ({"rate": math.inf}, "positive number"),
    ({"rate": True}, "positive number"),
    ({"rate": "50"}, "positive number"),
    ({"rate": 50, "burst": 49}, "at least the rate"),
    ({"rate": 2.5, "burst": 2}, "at least the rate"),
    ({"rate": 50, "burst": 60.0}, "whole number"),
    ({"rate": 50, "burst": 0}, "whole number"),
    ({"burst": 10}, "needs a rate"),
    ({"hourly": 0}, "hourly quota must be a whole number"),
    ({"daily": -5}, "daily quota must be a whole number"),
    ({"hourly": 1.5}, "whole number"),
    ({"per_domain": {"gmail.com": (20,)}}, "must be \\(rate, burst\\)"),
    ({"per_domain": {"gmail.com": 20}}, "must be \\(rate, burst\\)"),
    ({"per_domain": {"gmail.com": (20, 10)}}, "burst for gmail.com .* at least the rate"),
    ({"per_domain": {"gmail.com": (0, 10)}}, "rate for gmail.com must be a positive"),
    ({"per_domain": {"": (1, 1)}}, "domain names"),
    ({"per_domain": {"an@gmail.com": (1, 1)}}, "domain names"),
    ({"per_domain": {"gmail.com": (1, 1), "GMAIL.com": (2, 2)}}, "twice"),
])
def test_invalid_limits_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Limits(**kwargs)


# Properties, over random limits and arrival patterns


@st.composite
def scenarios(draw):
    rate = draw(st.sampled_from([0.5, 1, 2.5, 3, 7, 10, 33.3, 50, 120]))
    burst = math.ceil(rate) + draw(st.sampled_from([0, 0, 1, 2, 5, 17]))
    slow_rate = draw(st.sampled_from([0.5, 1, 2, 4.5, 8]))
    slow_burst = math.ceil(slow_rate) + draw(st.integers(0, 3))
    limits = Limits(rate=rate, burst=burst, per_domain=draw(st.sampled_from(
        [{}, {"slow.example": (slow_rate, slow_burst)}])))
    gaps = draw(st.lists(st.sampled_from([0.0, 0.0, 0.0, 0.001, 0.01, 0.05, 0.3, 1.0, 2.5]),
                         min_size=1, max_size=250))
    domains = draw(st.lists(st.sampled_from(["slow.example", "fast.example", "other.org"]),
                            min_size=len(gaps), max_size=len(gaps)))
    arrivals, at = [], 0.0
    for gap, domain in zip(gaps, domains, strict=True):
        at += gap
        arrivals.append((at, domain))
    late = draw(st.sampled_from([None, 0.0005, 0.003]))
    return limits, arrivals, late, draw(st.integers(0, 2**32))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_no_window_over_the_burst_and_no_stretch_over_the_rate(scenario):
    limits, arrivals, late, seed = scenario
    jitter = random.Random(seed)
    run = simulate(limits, arrivals,
                   late=(lambda: jitter.uniform(0, late)) if late else None)
    assert not run.errors()
    for (arrival, _), granted in zip(arrivals, run.results, strict=True):
        assert granted >= START + arrival - 1e-9
    groups = [(run.times(), limits.rate, limits.burst)]
    groups += [(run.times(d), r, b) for d, (r, b) in limits.per_domain.items()]
    for times, rate, burst in groups:
        if times:
            assert most_in_one_second(times) <= burst
            assert most_ahead(times, rate) <= allowed_ahead(rate, burst)


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_no_message_waits_longer_than_the_limits_make_it(scenario):
    """With one rate (no domain limit, no late timers) the messages go in the order they
    asked, each at the earliest moment the rules allow given the ones before it: a model of
    the rules, written out plainly, gives the same times."""
    limits, arrivals, _, _ = scenario
    limits = Limits(rate=limits.rate, burst=limits.burst)
    run = simulate(limits, arrivals)
    rate, burst = limits.rate, limits.burst
    interval, tolerance = 1 / rate, (burst - rate) / rate
    window = 1.0 + min(WINDOW_GUARD, tolerance / 2)  # a burst spans this
    expected: list[float] = []
    due = -math.inf  # when the next message is due on the even schedule
    for i in run.order:
        arrival = START + arrivals[i][0]
        t = max(arrival, due - tolerance, expected[-1] if expected else -math.inf)
        if len(expected) >= burst:
            t = max(t, expected[-burst] + window)
        due = max(due, arrival, t - interval) + interval
        expected.append(t)
    assert [run.results[i] for i in run.order] == pytest.approx(expected, abs=1e-9)
