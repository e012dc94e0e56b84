"""The web app's grouped writer: many changes, one transaction; a failing change fails
alone; a request that went away does not stop the writer."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from sqlalchemy import text

from mailer.db import make_engine
from mailer.web.writes import Writer


def test_changes_are_grouped_a_failure_stays_alone_and_cancelled_ones_are_skipped(db_url):
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (v INTEGER UNIQUE)")
    writer = Writer(engine)
    gate, entered = threading.Event(), threading.Event()

    def insert(v: int):  # noqa: ANN202
        def change(session):  # noqa: ANN001, ANN202
            if v == 0:
                entered.set()
                gate.wait(5)  # holds the writer while the others queue up
            session.connection().execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": v})
            return v
        return change

    async def main() -> list[object]:
        first = asyncio.ensure_future(writer(insert(0)))
        assert await asyncio.to_thread(entered.wait, 5)  # the writer is inside change 0
        gone = asyncio.ensure_future(writer(insert(99)))  # its request is cancelled
        others = [asyncio.ensure_future(writer(insert(v))) for v in (1, 2, 1, 3)]
        await asyncio.sleep(0.05)
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
        await asyncio.sleep(0.01)  # the cancel reaches the writer's future via a callback
        gate.set()
        results = await asyncio.wait_for(
            asyncio.gather(first, *others, return_exceptions=True), 5)
        after = await asyncio.wait_for(writer(insert(4)), 5)  # the writer still works
        return [*results, after]

    results = asyncio.run(main())
    writer.close()
    assert results[:3] == [0, 1, 2] and isinstance(results[3], Exception)  # 1 twice
    assert results[4:] == [3, 4]
    with engine.connect() as conn:
        assert sorted(conn.execute(text("SELECT v FROM t")).scalars()) == [0, 1, 2, 3, 4]
    engine.dispose()
