"""The web app's grouped writer: many changes, one transaction; a failing change fails
alone; a request that went away does not stop the writer."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future

from sqlalchemy import text

from mailer.db import make_engine
from mailer.web import writes
from mailer.web.writes import Writer
from tests.support.waiting import TIMEOUT, until


def test_changes_are_grouped_a_failure_stays_alone_and_cancelled_ones_are_skipped(
        db_url, monkeypatch):
    handed: list[Future] = []  # the writer's future of each change, in the order handed

    class Recorded(Future):
        def __init__(self) -> None:
            super().__init__()
            handed.append(self)

    monkeypatch.setattr(writes, "Future", Recorded)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (v INTEGER UNIQUE)")
    writer = Writer(engine)
    gate, entered = threading.Event(), threading.Event()

    def insert(v: int):  # noqa: ANN202
        def change(session):  # noqa: ANN001, ANN202
            if v == 0:
                entered.set()
                assert gate.wait(TIMEOUT)  # holds the writer while the others queue up
            session.connection().execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": v})
            return v
        return change

    async def main() -> list[object]:
        first = asyncio.ensure_future(writer(insert(0)))
        assert await asyncio.to_thread(entered.wait, TIMEOUT)  # the writer is in change 0
        gone = asyncio.ensure_future(writer(insert(99)))  # its request is cancelled
        others = [asyncio.ensure_future(writer(insert(v))) for v in (1, 2, 1, 3)]
        await until(lambda: len(handed) == 6, "the five changes handed to the writer",
                    state=lambda: f"{len(handed)} handed")
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
        await until(handed[1].cancelled, "the cancel to reach the writer's future")
        gate.set()
        results = await asyncio.wait_for(
            asyncio.gather(first, *others, return_exceptions=True), TIMEOUT)
        after = await asyncio.wait_for(writer(insert(4)), TIMEOUT)  # the writer still works
        return [*results, after]

    results = asyncio.run(main())
    writer.close()
    assert results[:3] == [0, 1, 2] and isinstance(results[3], Exception)  # 1 twice
    assert results[4:] == [3, 4]
    with engine.connect() as conn:
        assert sorted(conn.execute(text("SELECT v FROM t")).scalars()) == [0, 1, 2, 3, 4]
    engine.dispose()
