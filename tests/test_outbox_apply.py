"""The status writer's round (`Outbox.apply`) is one statement on PostgreSQL (issue 17,
point 3): proven here against the reference it replaces, one statement per kind of change
in order (`_apply_each`, still SQLite's way), on both back-ends. Two campaigns hold the
same rows; one gets the round through `apply`, the other through the reference; every
column of every row must come out the same.

The sender's status writer writes its rounds with `apply_async` on a connection it holds
for its run (`hold_connection`): SQLite's on the database thread, PostgreSQL's on the
event loop (psycopg's asyncio connection); the tests of the held connection go that way."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from mailer.clock import TEST_CLOCK
from mailer.db import durable_begin, make_engine
from mailer.dbtypes import placeholder
from mailer.delivery.outbox import Outbox, Result, _apply_each
from mailer.delivery.transports import Outcome
from mailer.models import Campaign, Delivery, utcnow
from tests.support.waiting import until

D = Delivery.__table__  # type: ignore[attr-defined]
COLUMNS = ("state", "attempts", "next_attempt_at", "last_reply", "message_id", "sent_at",
           "updated_at")

# name: (state, attempts) before the round
ROWS = {
    "to_mark": ("queued", 0), "to_mark_again": ("deferred", 1),
    "mark_cancelled": ("skipped", 0),  # asked to mark, no longer open: not marked
    "sent": ("sending", 1), "sent_no_id": ("sending", 1), "deferred": ("sending", 1),
    "deferred_too_often": ("sending", 3), "bounced": ("sending", 1),
    "unknown": ("sending", 2), "failed": ("sending", 1),
    "skip": ("queued", 0), "release_first": ("sending", 1),
    "release_retry": ("sending", 2), "release_gone": ("sent", 1),  # not sending: stays
}


def _round(ids: dict[str, int]) -> tuple[list[int], list[Result], list[tuple[int, str]],
                                          list[int]]:
    sending = [ids["to_mark"], ids["to_mark_again"], ids["mark_cancelled"]]
    results = [
        Result(ids["sent"], Outcome("sent", "250 2.0.0 Ok: queued as A1"), 1, "<a@x>"),
        Result(ids["sent_no_id"], Outcome("sent", "250 ok " + "x" * 600), 1),
        Result(ids["deferred"], Outcome("deferred", "451 4.7.1 try later"), 1, "<d@x>"),
        Result(ids["deferred_too_often"], Outcome("deferred", "421 busy"), 3, "<e@x>"),
        Result(ids["bounced"], Outcome("bounced", "550 5.1.1 no such user"), 1, "<b@x>"),
        Result(ids["unknown"], Outcome("unknown", "connection lost after DATA"), 2),
        Result(ids["failed"], Outcome("failed", "template: 'city' is undefined"), 3),
    ]
    skipped = [(ids["skip"], "no longer subscribed (unsubscribed) " + "y" * 600)]
    released = [ids["release_first"], ids["release_retry"], ids["release_gone"]]
    return sending, results, skipped, released


def _campaign(engine: sa.Engine, slug: str) -> dict[str, int]:
    """A campaign with one delivery per entry of ROWS: name -> delivery id."""
    with engine.begin() as conn:
        campaign = conn.execute(sa.insert(Campaign.__table__).values(  # type: ignore[attr-defined]
            slug=slug, title=slug, template="t.html.j2", subject="s", list_ids=[],
            segment=[], state="sending", kind="campaign", created_at=utcnow(),
            updated_at=utcnow()).returning(sa.column("id"))).scalar_one()
        return {name: conn.execute(sa.insert(D).values(
            campaign_id=campaign, state=state, attempts=attempts, queued_at=utcnow(),
            updated_at=utcnow()).returning(D.c.id)).scalar_one()
            for name, (state, attempts) in ROWS.items()}


def _rows(engine: sa.Engine, ids: dict[str, int]) -> dict[str, tuple[Any, ...]]:
    with engine.connect() as conn:
        return {name: tuple(conn.execute(sa.select(*(D.c[c] for c in COLUMNS)).where(
            D.c.id == i)).one()) for name, i in ids.items()}


def _held(outbox: Outbox, *rounds: tuple[Any, ...]) -> list[set[int]]:
    """`rounds` as the sender's status writer writes them: on the connection it holds,
    awaited on an event loop; what each marked."""
    async def write() -> list[set[int]]:
        return [await outbox.apply_async(*r) for r in rounds]
    return _holding(outbox, write)


def _holding(outbox: Outbox, scenario: Callable[[], Awaitable[Any]]) -> Any:
    """Run `scenario` on an event loop with `outbox` holding its connection."""
    async def run() -> Any:
        outbox.hold_connection()
        try:
            return await scenario()
        finally:
            await outbox.release_connection_async()
    return asyncio.run(run())


@pytest.fixture
def engine(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv(TEST_CLOCK, "2026-12-03T08:00:00+00:00")  # the same stamps twice
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def _outbox(engine: sa.Engine, rejected: list[tuple[int, str]]) -> Outbox:
    return Outbox(engine, None, b"k" * 32, max_attempts=3, retry_after=60,
                  on_rejected=rejected.extend)


@pytest.mark.parametrize("held", [False, True], ids=["pooled", "held"])
def test_a_round_writes_what_one_statement_per_change_writes(engine: sa.Engine,
                                                             held: bool) -> None:
    """Through the pool (durable_begin), and on the connection the sender's status
    writer holds for its run (PostgreSQL: autocommit, synchronous_commit on)."""
    mine, reference = _campaign(engine, "mine"), _campaign(engine, "reference")
    rejected: list[tuple[int, str]] = []
    outbox = _outbox(engine, rejected)
    marked = _held(outbox, _round(mine))[0] if held else outbox.apply(*_round(mine))

    sending, results, skipped, released = _round(reference)
    # the reference: the rows as Outbox.apply hands them to the driver, one kind at a time
    updates = _outbox(engine, []).changes(sending, results, skipped, released)
    with durable_begin(engine) as conn:
        expected = _apply_each(conn, updates, placeholder(engine.dialect))

    assert marked == {mine["to_mark"], mine["to_mark_again"]}
    assert expected == {reference["to_mark"], reference["to_mark_again"]}
    assert _rows(engine, mine) == _rows(engine, reference)
    got = _rows(engine, mine)
    assert got["sent"][0] == "sent" and got["sent_no_id"][3] == "250 ok " + "x" * 493
    assert got["deferred"][0] == "deferred" and got["deferred"][2] is not None
    assert got["deferred_too_often"][0] == "failed"
    assert got["release_first"][:2] == ("queued", 0)
    assert got["release_retry"][:2] == ("deferred", 1)
    assert got["release_gone"][:2] == ("sent", 1)
    assert got["mark_cancelled"][:2] == ("skipped", 0)
    assert rejected == [(mine["bounced"], "550 5.1.1 no such user")]


@pytest.mark.parametrize("held", [False, True], ids=["pooled", "held"])
def test_a_round_with_a_delivery_twice_is_written_in_order(engine: sa.Engine,
                                                          held: bool) -> None:
    """Never so in the sender, but then the kinds are written one after the other, as
    before: a release after a mark in the same round undoes it (on PostgreSQL one
    statement would write the row twice from one snapshot: the mark would stay)."""
    mine = _campaign(engine, "twice")
    round_ = ([mine["to_mark"]], [], [], [mine["to_mark"]])
    outbox = _outbox(engine, [])
    marked = _held(outbox, round_)[0] if held else outbox.apply(*round_)
    assert marked == {mine["to_mark"]}
    assert _rows(engine, mine)["to_mark"][:2] == ("queued", 0)


def test_a_round_begun_is_written_whole_when_the_writer_is_cancelled(
        engine: sa.Engine) -> None:
    """A round on its way when the run is cancelled (a web app stopping its sender, the
    event loop closing) is written all the same, its result included: cut off, a sent
    message would be "unknown" (and resent by --retry-unknown). PostgreSQL: the round's
    statement is running on the server (a trigger holds it there) when the cancel comes;
    SQLite: the round waits for the database thread (busy) when it comes."""
    mine = _campaign(engine, "cancelled")
    postgresql = engine.dialect.name == "postgresql"
    busy, submitted = threading.Event(), threading.Event()

    class Noting(ThreadPoolExecutor):  # says when the round is handed to the thread
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            future = super().submit(fn, *args, **kwargs)
            if fn != busy.wait:  # (a bound method is made anew at each look)
                submitted.set()
            return future

    db = Noting(max_workers=1)
    holder = engine.connect() if postgresql else None
    if postgresql:  # the round's statement waits on the server for a lock the test holds
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "PERFORM pg_advisory_xact_lock(4242); RETURN NEW; END $$")
            conn.exec_driver_sql(
                f"CREATE TRIGGER hold BEFORE UPDATE ON delivery FOR EACH ROW "
                f"WHEN (OLD.id = {mine['sent']}) EXECUTE FUNCTION hold()")
        holder.exec_driver_sql("SELECT pg_advisory_lock(4242)")  # type: ignore[union-attr]
    else:  # the round waits for the database thread, busy
        db.submit(busy.wait, 60)
    outbox = _outbox(engine, [])
    round_ = ([mine["to_mark"]], [Result(mine["sent"], Outcome("sent", "250 ok"), 1, "<c@x>")],
              [])

    def waiting_on_the_server() -> bool:
        with engine.connect() as conn:  # a transaction each: the statistics are snapshots
            return bool(conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                "'%%UPDATE delivery%%' AND wait_event = 'advisory'").scalar_one())

    async def cancelled() -> None:
        task = asyncio.get_running_loop().create_task(outbox.apply_async(*round_, db=db))
        if postgresql:
            await until(waiting_on_the_server, "the round's statement held on the server")
        else:
            await until(submitted.is_set, "the round queued for the database thread")
        assert not task.done()
        task.cancel()
        if holder is not None:
            # the round's own task (the statement's): cut off by the cancel, psycopg
            # would cancel the statement on the server, and it would end without the
            # lock; the lock goes once the cancel has reached the sender, and, had it
            # reached the statement, once the server has ended it
            statement = next(t for t in asyncio.all_tasks()
                             if t.get_coro().__qualname__ == "_AsyncRounds.apply")
            taken = asyncio.Event()
            asyncio.get_running_loop().call_soon(taken.set)  # after the cancel's step
            await taken.wait()
            await until(lambda: statement.done() or not statement.cancelling(),
                        "the round's statement ended, or not cut off")
            holder.exec_driver_sql("SELECT pg_advisory_unlock(4242)")
        busy.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        _holding(outbox, cancelled)
    finally:
        busy.set()
        if holder is not None:
            holder.close()
        db.shutdown(wait=True)
    got = _rows(engine, mine)
    assert got["sent"][:2] == ("sent", 1) and got["to_mark"][:2] == ("sending", 1)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_rounds_connection_is_made_as_the_engine_makes_its_own(db_url: str) -> None:
    """The status writer's asyncio connection takes the database URL's options (here
    application_name; sslmode and the like the same way), and a server that cannot be
    reached is SQLAlchemy's OperationalError, which the CLI says in one line; released,
    the connection is closed."""
    engine = make_engine(db_url + "?application_name=mailer-rounds")
    outbox = _outbox(engine, [])

    async def rounds() -> Any:
        assert await outbox.apply_async([], [], [(_campaign(engine, "named")["skip"],
                                                  "no longer subscribed")]) == set()
        conn = outbox._rounds._conn  # type: ignore[union-attr]
        cursor = await conn.execute("SHOW application_name")
        assert (await cursor.fetchone())[0] == "mailer-rounds"
        return conn

    try:
        assert _holding(outbox, rounds).closed
    finally:
        engine.dispose()
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    nowhere = make_engine(f"postgresql+psycopg://mailer@127.0.0.1:{port}/none")
    with pytest.raises(sa.exc.OperationalError):
        _held(_outbox(nowhere, []), ([1], [], []))


def test_a_round_of_final_outcomes_alone_is_written(engine: sa.Engine) -> None:
    """No retry time among them (an array of NULLs only), no marks."""
    mine = _campaign(engine, "final")
    assert _outbox(engine, []).apply([], [
        Result(mine["bounced"], Outcome("bounced", "550 no"), 1),
        Result(mine["unknown"], Outcome("unknown", "lost"), 2)], []) == set()
    got = _rows(engine, mine)
    assert got["bounced"][:3] == ("bounced", 1, None)
    assert got["unknown"][:3] == ("unknown", 2, None)


def test_the_held_connection_commits_durably_and_goes_back_to_no_pool(
        engine: sa.Engine) -> None:
    """Every round on it is its own transaction, committed durably: with
    synchronous_commit on (the test server's default is off), or SQLite's
    synchronous=FULL (the engine's default is NORMAL); once released, the pool hands
    out connections at the default.

    PostgreSQL: the round's statement turns synchronous_commit on for its own
    transaction, not the session (through PgBouncer in transaction mode a session's SET
    lands elsewhere): a deferred trigger, which runs at the commit, notes the level the
    commit runs at, for a round with marks and for one of results alone; the session
    itself stays at the server's default. Its connection is not the pool's: the engine
    hands out none while the rounds run."""
    mine = _campaign(engine, "held")
    postgresql = engine.dialect.name == "postgresql"
    if postgresql:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE commit_level (level text)")
            conn.exec_driver_sql(
                "CREATE FUNCTION note_level() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "INSERT INTO commit_level VALUES (current_setting('synchronous_commit')); "
                "RETURN NULL; END $$")
            conn.exec_driver_sql(
                "CREATE CONSTRAINT TRIGGER note_level AFTER UPDATE ON delivery "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION note_level()")
    outbox = _outbox(engine, [])
    checked_out = engine.pool.checkedout()
    made: list[Any] = []

    async def rounds() -> None:
        assert await outbox.apply_async([mine["to_mark"]], [], []) == {mine["to_mark"]}
        if postgresql:
            held = outbox._rounds._conn  # type: ignore[union-attr]
            made.append(held)
            for name, value in (("synchronous_commit", "off"),
                                ("plan_cache_mode", "force_generic_plan")):
                cursor = await held.execute(f"SHOW {name}")
                assert (await cursor.fetchone())[0] == value
            assert held.autocommit and engine.pool.checkedout() == checked_out
        else:
            driver = outbox._held._conn.connection.driver_connection  # type: ignore[union-attr]
            assert driver.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
            assert not driver.in_transaction  # committed, nothing held between rounds
        assert await outbox.apply_async([], [Result(mine["to_mark"], Outcome("sent", "250 ok"),
                                                    1, "<m@x>")], []) == set()

    _holding(outbox, rounds)
    assert outbox._rounds is None and outbox._held is None
    assert all(conn.closed for conn in made)  # released: closed, not only let go
    assert _rows(engine, mine)["to_mark"][:2] == ("sent", 1)
    if postgresql:
        with engine.begin() as conn:
            levels = conn.exec_driver_sql("SELECT level FROM commit_level").scalars().all()
            conn.exec_driver_sql("DROP TRIGGER note_level ON delivery")
        assert levels == ["on", "on"]  # the mark's commit, the result's
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "off"
            assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar_one() == "auto"
    else:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 1  # NORMAL


def test_rounds_past_the_driver_s_prepare_threshold_write_the_same(engine: sa.Engine) -> None:
    """The held connection plans a round's statement once (PostgreSQL: a generic plan,
    prepared by psycopg from the fifth round of a shape on): twelve rounds, each marking
    a row and recording the previous one's result, write what the pool's rounds write."""
    with engine.begin() as conn:
        campaigns = [conn.execute(sa.insert(Campaign.__table__).values(  # type: ignore[attr-defined]
            slug=slug, title=slug, template="t.html.j2", subject="s", list_ids=[],
            segment=[], state="sending", kind="campaign", created_at=utcnow(),
            updated_at=utcnow()).returning(sa.column("id"))).scalar_one()
            for slug in ("rounds", "pooled")]
        ids = [[conn.execute(sa.insert(D).values(
            campaign_id=campaign, state="queued", attempts=0, queued_at=utcnow(),
            updated_at=utcnow()).returning(D.c.id)).scalar_one() for _ in range(12)]
            for campaign in campaigns]

    def rounds(rows: list[int]) -> list[tuple[Any, ...]]:
        return [([i] if i is not None else [],
                 [Result(p, Outcome("sent", "250 ok"), 1, f"<{n - 1}@x>")
                  for p in ([rows[n - 1]] if n else [])], [])
                for n, i in enumerate([*rows, None])]

    held, pooled = _outbox(engine, []), _outbox(engine, [])
    assert _held(held, *rounds(ids[0])) == [set(r[0]) for r in rounds(ids[0])]
    assert [pooled.apply(*r) for r in rounds(ids[1])] == [set(r[0]) for r in rounds(ids[1])]
    got = [list(_rows(engine, dict(enumerate(rows))).values()) for rows in ids]
    assert got[0] == got[1]
    assert {row[:2] for row in got[0]} == {("sent", 1)}
    assert [row[4] for row in got[0]] == [f"<{k}@x>" for k in range(12)]


def test_a_round_that_fails_is_written_not_at_all_and_the_next_goes_on(
        engine: sa.Engine) -> None:
    """A round's marks and results are one transaction on the held connection: when one
    of its changes fails (here a trigger refuses a result), its mark is not written
    either; the error is SQLAlchemy's (the CLI says it in one line), the connection is
    dropped, and the next round opens another."""
    mine = _campaign(engine, "fails")
    refuse = mine["sent"]
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(
                f"CREATE TRIGGER refuse BEFORE UPDATE OF state ON delivery "
                f"WHEN OLD.id = {refuse} AND NEW.state = 'sent' "
                f"BEGIN SELECT RAISE(ABORT, 'refused'); END")
        else:
            conn.exec_driver_sql(
                f"CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF OLD.id = {refuse} AND NEW.state = 'sent' THEN "
                f"RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$")
            conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE UPDATE ON delivery "
                                 "FOR EACH ROW EXECUTE FUNCTION refuse()")
    outbox = _outbox(engine, [])
    round_ = ([mine["to_mark"]], [Result(refuse, Outcome("sent", "250 ok"), 1, "<r@x>")], [])

    async def rounds() -> set[int]:
        with pytest.raises(sa.exc.DBAPIError, match="refused"):
            await outbox.apply_async(*round_)
        assert _rows(engine, mine)["to_mark"][:2] == ("queued", 0)  # nothing of it
        held = outbox._rounds if engine.dialect.name == "postgresql" else outbox._held
        assert held is not None and held._conn is None  # dropped
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER refuse" if engine.dialect.name == "sqlite"
                                 else "DROP TRIGGER refuse ON delivery")
        return await outbox.apply_async(*round_)

    assert _holding(outbox, rounds) == {mine["to_mark"]}
    got = _rows(engine, mine)
    assert got["to_mark"][:2] == ("sending", 1) and got["sent"][:2] == ("sent", 1)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("path", ["held", "pooled", "kind by kind"])
def test_with_claims_a_sender_marks_only_the_rows_it_still_claims(engine: sa.Engine,
                                                                  path: str) -> None:
    """Several senders (PostgreSQL): a sender whose lease ran out while its round was on
    its way (a stall between its last look at the lease and the database) finds the
    rows it had read claimed by another since: its round marks none of those, only what
    is still its own. On each way a round is written: the held connection's statement,
    the pool's, and kind by kind (a round naming a delivery twice)."""
    from mailer.delivery.claims import Claims

    rows = _campaign(engine, "fenced")
    mine, other = Claims(engine, lease=30), Claims(engine, lease=30)
    with mine, other:
        with engine.begin() as conn:
            for name, sender in (("to_mark", mine), ("to_mark_again", other)):
                conn.execute(D.update().where(D.c.id == rows[name]).values(
                    claimed_by=sender.id))
        outbox = Outbox(engine, None, b"k" * 32, max_attempts=3, retry_after=60,
                        claims=mine)
        wanted = [rows["to_mark"], rows["to_mark_again"]]
        released = [rows["to_mark"]] if path == "kind by kind" else []
        if path == "held":
            assert _held(outbox, (wanted, [], [], released)) == [{rows["to_mark"]}]
        else:
            assert outbox.apply(wanted, [], [], released) == {rows["to_mark"]}
        got = _rows(engine, rows)
        assert got["to_mark_again"][:2] == ("deferred", 1)  # the other's: untouched
        assert got["to_mark"][:2] == (("queued", 0) if released else ("sending", 1))
