"""Sign-up limits per client address and per e-mail address, in this process's memory.

A sliding window per key: at most `limit` events in `window` seconds. Keys are kept only
while they have events in their window, so memory follows the traffic of the last day,
not all time. With several `mailer serve` workers each counts its own share: the limits
are a brake on abuse, not an exact quota.
"""

from __future__ import annotations

import time
from collections import deque

__all__ = ["Throttle"]


class Throttle:
    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._events: dict[str, deque[float]] = {}
        self._checked = time.monotonic()

    def allow(self, key: str, *, now: float | None = None) -> bool:
        """Count an event for `key`; False (and not counted) when over the limit."""
        now = time.monotonic() if now is None else now
        if now - self._checked > self.window:
            self._forget(now)
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(now)
        return True

    def _forget(self, now: float) -> None:
        self._checked = now
        for key in [k for k, v in self._events.items() if not v or v[-1] <= now - self.window]:
            del self._events[key]
