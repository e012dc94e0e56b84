"""Benchmark: what a claim costs a sender's reads of the outbox on PostgreSQL (issue 17,
point 1; mailer/delivery/claims.py).

A throwaway PostgreSQL server (tests/support/pgserver.py) with one sending campaign of
--rows queued deliveries. `Outbox.due` reads the campaign in batches of CLAIM_BATCH (128)
from the start, once without claims (one sender, as before) and once with (the sender's
lease registered: each batch first claimed with UPDATE … WHERE id IN (SELECT … FOR UPDATE
SKIP LOCKED)), alternated --rounds times so the machine's load falls on both alike.
Printed: microseconds per row of each, and of the claim statement alone.

    PYTHONPATH=. .venv/bin/python bench/claims_bench.py
    PYTHONPATH=. .venv/bin/python bench/claims_bench.py --rows 1000000 --batches 200
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime

from mailer.db import make_engine, upgrade
from mailer.delivery.claims import Claims
from mailer.delivery.outbox import D, Outbox
from mailer.delivery.sender import CLAIM_BATCH
from tests.support.pgserver import start_postgres

FILL = [
    "INSERT INTO mailing_list (slug, name, description, language, optin, from_name, "
    "from_address, public, created_at, updated_at) VALUES ('l', 'l', '', 'nl', 'single', "
    "'x', 'x@example.be', true, now(), now())",
    "INSERT INTO campaign (slug, title, template, subject, list_ids, segment, state, kind, "
    "created_at, updated_at) VALUES ('c', 'c', 't', 's', '[1]', '[]', 'sending', "
    "'campaign', now(), now())",
    "INSERT INTO subscriber (email, language, attributes, status, created_at, updated_at) "
    "SELECT 'p' || g || '@example.be', 'nl', '{{}}', 'active', now(), now() "
    "FROM generate_series(1, {rows}) g",
    "INSERT INTO subscription (subscriber_id, list_id, status, source, created_at, "
    "updated_at) SELECT id, 1, 'confirmed', 't', now(), now() FROM subscriber",
    "INSERT INTO delivery (campaign_id, subscriber_id, list_id, state, attempts, queued_at, "
    "updated_at) SELECT 1, id, 1, 'queued', 0, now(), now() FROM subscriber",
    "ANALYZE",
]


def read_all(outbox: Outbox, batches: int) -> float:
    """Seconds per row to read `batches` batches from the start."""
    cursor, rows = 0, 0
    started = time.perf_counter()
    for _ in range(batches):
        batch = outbox.due(cursor, CLAIM_BATCH, datetime.now(UTC))
        cursor, rows = batch[-1].id, rows + len(batch)
    return (time.perf_counter() - started) / rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    server = start_postgres()
    try:
        engine = make_engine(server.create_database("bench"))
        upgrade(engine)
        with engine.begin() as conn:
            for sql in FILL:
                conn.exec_driver_sql(sql.format(rows=args.rows))
        key = os.urandom(32)
        claims = Claims(engine, lease=60)
        plain = Outbox(engine, 1, key, max_attempts=3, retry_after=1)
        claimed = Outbox(engine, 1, key, max_attempts=3, retry_after=1, claims=claims)
        figures: dict[str, list[float]] = {"without claims": [], "with claims": [],
                                           "the claim alone": []}
        with claims:
            for _ in range(args.rounds):
                figures["without claims"].append(read_all(plain, args.batches))
                figures["with claims"].append(read_all(claimed, args.batches))
                started = time.perf_counter()
                with engine.connect() as conn:
                    for i in range(args.batches):
                        claims.claim(conn, D.c.campaign_id == 1,
                                     D.c.id > i * CLAIM_BATCH, D.c.state == "queued",
                                     limit=CLAIM_BATCH)
                        conn.commit()
                figures["the claim alone"].append(
                    (time.perf_counter() - started) / (args.batches * CLAIM_BATCH))
        print(f"{args.rows:,} queued deliveries, {args.batches} batches of {CLAIM_BATCH}, "
              f"{args.rounds} rounds alternated; load average {os.getloadavg()[0]:.1f}")
        for name, values in figures.items():
            print(f"  {name:16} median {statistics.median(values) * 1e6:6.1f} us/row "
                  f"(min {min(values) * 1e6:.1f}, max {max(values) * 1e6:.1f})")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
