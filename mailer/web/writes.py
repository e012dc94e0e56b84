"""The web app's database writes: one thread, many requests per transaction.

Every click of an unsubscribe link is a write. Left to the request threads, fifty of them
at once would queue on SQLite's single writer lock, whose busy handler sleeps in steps of
up to 100 ms: the tail latency would be the lock's, not the work's. Instead each request
hands its change to this writer and awaits it; the writer runs everything that is waiting
in one transaction and commits once. If a change fails, the group is rolled back and
each of its changes runs again in a transaction of its own, so only the failing request
gets the error. (Not savepoints: Python's sqlite3 lets the first RELEASE commit.) On
PostgreSQL the same shape saves a commit per request.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlmodel import Session

__all__ = ["Writer"]

T = TypeVar("T")
MAX_GROUP = 256  # changes in one transaction


class Writer:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._queue: queue.SimpleQueue[tuple[Callable[[Session], Any], Future[Any]] | None] = (
            queue.SimpleQueue())
        self._thread = threading.Thread(target=self._run, name="mailer-web-writes",
                                        daemon=True)
        self._thread.start()

    async def __call__(self, change: Callable[[Session], T]) -> T:
        """Run `change(session)` in the next transaction; its result once committed."""
        future: Future[T] = Future()
        self._queue.put((change, future))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            group = [item]
            while len(group) < MAX_GROUP:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this group
                    break
                group.append(more)
            self._apply(group)

    def _apply(self, group: list[tuple[Callable[[Session], Any], Future[Any]]]) -> None:
        # A request that went away meanwhile (its task cancelled) is dropped, not run:
        # setting a cancelled future's result would kill this thread.
        group = [(change, future) for change, future in group
                 if future.set_running_or_notify_cancel()]
        if not group:
            return
        if len(group) > 1:
            try:
                with Session(self.engine, expire_on_commit=False) as session:
                    results = [change(session) for change, _ in group]
                    session.commit()
            except Exception:  # noqa: BLE001 - find the failing one: one at a time
                pass
            else:
                for (_, future), result in zip(group, results, strict=True):
                    future.set_result(result)
                return
        for change, future in group:
            try:
                with Session(self.engine, expire_on_commit=False) as session:
                    result = change(session)
                    session.commit()
            except Exception as exc:  # noqa: BLE001 - handed to the waiting request
                future.set_exception(exc)
            else:
                future.set_result(result)
