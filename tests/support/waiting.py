"""Waiting for a condition instead of sleeping and hoping, for tests that must pass on a
busy machine.

    from tests.support.waiting import wait_for

    wait_for(lambda: len(smtp.messages()) >= 10, "10 messages at the SMTP server",
             state=lambda: f"{len(smtp.messages())} arrived")

A sleep long enough on an idle machine is too short on a loaded one (a `python -m mailer`
takes 2 s to start here when idle, several times that beside other work). These poll the
condition until it holds and fail the test after a generous timeout, saying what did not
happen and, with `state`, where things stood then. The timeout only bounds a test that
is already failing: a passing test waits no longer than the condition takes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["TIMEOUT", "until", "wait_for"]

T = TypeVar("T")
TIMEOUT = 60.0  # seconds: minutes of margin for what takes milliseconds to seconds


def _failure(what: str, timeout: float, state: Callable[[], object] | None) -> AssertionError:
    message = f"waited {timeout:g} s for {what}, in vain"
    if state is not None:
        message += f" ({state()})"
    return AssertionError(message)


def wait_for(condition: Callable[[], T], what: str, *, timeout: float = TIMEOUT,
             state: Callable[[], object] | None = None, interval: float = 0.02) -> T:
    """Call `condition` until it returns something true, and return that; fail after
    `timeout` seconds with "waited … for `what`" (and `state()`, when given)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise _failure(what, timeout, state)
        time.sleep(interval)


async def until(condition: Callable[[], T], what: str, *, timeout: float = TIMEOUT,
                state: Callable[[], object] | None = None, interval: float = 0.005) -> T:
    """`wait_for` for a coroutine: the event loop runs while it waits."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise _failure(what, timeout, state)
        await asyncio.sleep(interval)
