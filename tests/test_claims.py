"""The claim (PostgreSQL, several senders: delivery/claims.py) as `Outbox.due` makes it:
one statement that claims and reads, planned the way a claim wants whatever the table's
statistics say, and a walk that stays within the campaign's own ids."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from mailer.db import make_engine
from mailer.delivery.claims import Claims, machine
from mailer.delivery.outbox import Outbox
from mailer.models import (
    Campaign,
    Delivery,
    MailingList,
    SenderLease,
    Subscriber,
    Subscription,
    utcnow,
)

D = Delivery.__table__  # type: ignore[attr-defined]
C = Campaign.__table__  # type: ignore[attr-defined]
P = Subscriber.__table__  # type: ignore[attr-defined]
L = MailingList.__table__  # type: ignore[attr-defined]
S = Subscription.__table__  # type: ignore[attr-defined]
W = SenderLease.__table__  # type: ignore[attr-defined]

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


@pytest.fixture
def engine(db_url: str) -> Any:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def _campaign(conn: sa.Connection, slug: str, states: list[str]) -> list[int]:
    """A sending campaign with one delivery in each of `states` (deferred ones due an
    hour ago), each to a person of its own, confirmed on the campaign's list: the
    delivery ids, in order."""
    mailing_list = conn.execute(L.insert().values(
        slug=slug, name=slug, language="nl", optin="single", from_name="Wij",
        from_address="wij@example.org",
        created_at=utcnow(), updated_at=utcnow()).returning(L.c.id)).scalar_one()
    campaign = conn.execute(C.insert().values(
        slug=slug, title=slug, template="t.html.j2", subject="s", list_ids=[], segment=[],
        state="sending", kind="campaign", created_at=utcnow(), updated_at=utcnow())
        .returning(C.c.id)).scalar_one()
    ids = []
    for i, state in enumerate(states):
        person = conn.execute(P.insert().values(
            email=f"{slug}{i}@example.org", status="active", language="nl", attributes={},
            created_at=utcnow(), updated_at=utcnow()).returning(P.c.id)).scalar_one()
        conn.execute(S.insert().values(subscriber_id=person, list_id=mailing_list,
                                       status="confirmed", created_at=utcnow(),
                                       updated_at=utcnow()))
        ids.append(conn.execute(D.insert().values(
            campaign_id=campaign, subscriber_id=person, list_id=mailing_list, state=state,
            attempts=0,
            next_attempt_at=utcnow() - timedelta(hours=1) if state == "deferred" else None,
            queued_at=utcnow(), updated_at=utcnow()).returning(D.c.id)).scalar_one())
    return ids


def _campaign_id(engine: sa.Engine, delivery_id: int) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(D.c.campaign_id).where(D.c.id == delivery_id))
                   .scalar_one())


def test_a_claim_reads_its_rows_in_its_own_statement_planned_for_a_claim(
        engine: sa.Engine) -> None:
    """The rows a claim takes come back with their people from the claim's statement
    (one transaction, no second read), and that statement runs without JIT compilation
    (its estimate is the whole primary key: over `jit_above_cost` on a big table, ~12 ms
    of compiling a claim), bitmap scans, or hash and merge joins (the claim's rows, at
    most its limit, are looked up one by one): settings of the claim's transaction
    alone, noted by a trigger as the claim's UPDATE runs."""
    with engine.begin() as conn:
        ours = _campaign(conn, "ours", ["queued", "queued", "sent", "deferred"])
        conn.exec_driver_sql("CREATE TABLE claim_settings (name text, setting text)")
        conn.exec_driver_sql(
            "CREATE FUNCTION note_settings() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO claim_settings SELECT name, setting FROM pg_settings WHERE name IN "
            "('jit', 'enable_bitmapscan', 'enable_seqscan', 'enable_hashjoin', "
            "'enable_mergejoin'); "
            "RETURN NULL; END $$")
        conn.exec_driver_sql(  # as rows are claimed (not as the claims are handed back)
            "CREATE TRIGGER note_settings AFTER UPDATE ON delivery FOR EACH ROW WHEN "
            "(NEW.claimed_by IS NOT NULL) EXECUTE FUNCTION note_settings()")
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda *args: statements.append(args[2]))
    claims = Claims(engine, lease=30)
    with claims:
        outbox = Outbox(engine, _campaign_id(engine, ours[0]), b"k" * 32, max_attempts=3,
                        retry_after=60, claims=claims)
        statements.clear()
        due = outbox.due(0, 10, utcnow())
    assert [d.id for d in due] == [ours[0], ours[1], ours[3]]
    assert [d.recipient.email for d in due if d.recipient] == ["ours0@example.org",
                                                               "ours1@example.org",
                                                               "ours3@example.org"]
    claiming = [s for s in statements if "claimed_by" in s and s.lstrip().startswith("WITH")]
    assert len(claiming) == 1 and "subscriber.email" in claiming[0]
    assert not [s for s in statements if s.lstrip().startswith("SELECT delivery.id")]
    with engine.begin() as conn:
        noted = conn.exec_driver_sql(
            "SELECT DISTINCT name, setting FROM claim_settings").all()
        conn.exec_driver_sql("DROP TRIGGER note_settings ON delivery")
        session = dict(conn.exec_driver_sql(
            "SELECT name, setting FROM pg_settings WHERE name IN ('jit', "
            "'enable_bitmapscan', 'enable_seqscan', 'enable_hashjoin', "
            "'enable_mergejoin')").all())
    assert sorted(noted) == [("enable_bitmapscan", "off"), ("enable_hashjoin", "off"),
                             ("enable_mergejoin", "off"), ("enable_seqscan", "off"),
                             ("jit", "off")]
    assert set(session.values()) == {"on"}  # the connections keep the server's settings
    with engine.connect() as conn:
        claimed = conn.execute(sa.select(D.c.id).where(D.c.claimed_by.is_not(None))
                               .order_by(D.c.id)).scalars().all()
    assert claimed == []  # handed back when the sender ended (`release`)


def test_the_walk_stays_within_the_campaign_s_ids_and_finds_every_due_row(
        engine: sa.Engine) -> None:
    """Claims walk the primary key from the sender's cursor: with the campaign's rows
    between an older and a newer campaign's, each pass starts at the campaign's first
    id and ends at its last (the pass that finds nothing does not walk the newer rows),
    and finds every due row of the campaign, in order, never another's; a row that
    became due again is found by the next pass."""
    with engine.begin() as conn:
        _campaign(conn, "older", ["queued"] * 3)
        ours = _campaign(conn, "ours", ["queued", "sent", "deferred", "queued", "queued"])
        _campaign(conn, "newer", ["queued"] * 3)
    bounds: list[tuple[int, int]] = []

    def note(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().startswith("WITH claimed"):  # id > %(id_1)s, <= %(id_2)s
            bounds.append((parameters["id_1"], parameters["id_2"]))
    sa.event.listen(engine, "before_cursor_execute", note)
    claims = Claims(engine, lease=30)
    with claims:
        outbox = Outbox(engine, _campaign_id(engine, ours[0]), b"k" * 32, max_attempts=3,
                        retry_after=60, claims=claims)
        now = utcnow()
        first = outbox.due(0, 2, now)
        second = outbox.due(first[-1].id, 2, now)
        assert [d.id for d in [*first, *second]] == [ours[0], ours[2], ours[3], ours[4]]
        assert outbox.due(second[-1].id, 2, now) == []
        with engine.begin() as conn:  # sent meanwhile, and one deferred due again
            conn.execute(D.update().where(D.c.id.in_([ours[0], ours[3], ours[4]]))
                         .values(state="sent"))
            conn.execute(D.update().where(D.c.id == ours[2]).values(
                state="deferred", next_attempt_at=now - timedelta(minutes=1)))
        assert [d.id for d in outbox.due(0, 2, now)] == [ours[2]]
        assert outbox.due(ours[2], 2, now) == []
    # every walk: from the campaign's first id (or the cursor) to its last, whatever the
    # ids of the campaigns before and after it
    assert bounds and all(ours[0] - 1 <= low and high == ours[-1] for low, high in bounds)


def test_a_sender_gone_from_this_machine_is_removed_and_no_other(engine: sa.Engine) -> None:
    """A starting sender removes the rows of senders on its machine (the same boot and
    pid namespace) whose process is gone, so their claims are due at once; a sender of
    another machine with the same pid, and a live process of this one, keep their lease
    (their pids are not this process's to look up, or are there)."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid names no process now
    here = machine()
    assert here is not None and len(here) == 32
    rows = {"gone here": (gone.pid, here), "gone elsewhere": (gone.pid, "another-machine"),
            "alive here": (os.getppid(), here), "unknown machine": (gone.pid, None)}
    with engine.begin() as conn:
        ids = {name: conn.execute(W.insert().values(
            host="h", pid=pid, machine=where, started_at=sa.func.now(),
            lease_until=sa.func.now() + sa.text("interval '10 minutes'"), sent=0, rate=0)
            .returning(W.c.id)).scalar_one() for name, (pid, where) in rows.items()}
    claims = Claims(engine, lease=30)
    with claims, engine.connect() as conn:
        left = set(conn.execute(sa.select(W.c.id)).scalars())
    assert left == {claims.id, ids["gone elsewhere"], ids["alive here"],
                    ids["unknown machine"]}


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _nodes(child))]


@pytest.mark.parametrize("analyzed", [5000, 10], ids=["big-table", "nearly-empty"])
def test_a_claim_walks_the_primary_key_whatever_the_statistics_say(engine: sa.Engine,
                                                                   analyzed: int) -> None:
    """The statistics PostgreSQL has of `delivery` were taken before the campaign's rows
    existed (a start, and autoanalyze a minute later) or mid-send: whatever they say,
    a claim takes its rows walking the primary key from its cursor within the
    campaign's ids, and stops at its limit. Estimating the new campaign at a row or
    two, the planner would rather fetch every queued row of it through
    (campaign_id, state) and sort them, at each claim: quadratic in the campaign. The
    claim's own plan, as EXPLAIN shows it for its statement and settings. Statistics
    of a nearly empty table (a new installation) made it read the whole table and
    sort it, at each claim."""
    with engine.begin() as conn:
        older = _campaign(conn, "older", ["sent"])
        ours = _campaign(conn, "ours", ["queued"])
        more = ("INSERT INTO delivery (campaign_id, state, attempts, queued_at, updated_at) "
                "SELECT campaign_id, state, 0, now(), now() FROM delivery, "
                "generate_series(1, {}) WHERE id = {}")
        conn.exec_driver_sql(more.format(analyzed, older[0]))
        conn.exec_driver_sql("ANALYZE delivery")  # ours: one row, as far as it knows
        conn.exec_driver_sql(more.format(5000, ours[0]))
    statements: list[tuple[str, Any]] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda _c, _k, statement, parameters, *_: statements.append(
                        (statement, parameters)))
    with Claims(engine, lease=30) as claims:
        outbox = Outbox(engine, _campaign_id(engine, ours[0]), b"k" * 32, max_attempts=3,
                        retry_after=60, claims=claims)
        statements.clear()
        assert len(outbox.due(0, 256, utcnow())) == 256
    settings, claim = next(
        (statements[i - 1], statement) for i, statement in enumerate(statements)
        if statement[0].lstrip().startswith("WITH claimed"))
    with engine.begin() as conn:
        conn.exec_driver_sql(*settings)
        plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + claim[0],
                                    claim[1]).scalar_one()[0]["Plan"]
    walk, = [node for node in _nodes(plan) if node["Node Type"] == "LockRows"]  # the claim
    assert [(node["Node Type"], node.get("Index Name")) for node in _nodes(walk)
            if node.get("Relation Name") == "delivery"] == \
        [("Index Scan", "delivery_pkey")], plan
    assert "Sort" not in [node["Node Type"] for node in _nodes(walk)], plan
