"""rate_state and rate_bucket: one rate for all senders over PostgreSQL (issue 17, point 2)

The global rate and burst, the per-domain limits and the hourly and daily quotas hold for
all senders of a database together (mailer/delivery/sharedrate.py): a GCRA row per pace
(`rate_state`: the global one, one per limited domain; its `tat` is the theoretical
arrival time of the next message, seconds of the database's clock; a domain's `recent`
its last `burst` slots), a row per quota
window with the count in it (`total`) and that count in buckets (`rate_bucket`: 1 s for
the hour, 24 s for the day, as the in-process limiter keeps them). One function,
`mailer_rate_claim`, takes up to N slots in one round trip: every claim of every sender
goes through the 'rate' row's lock, so the pace is one schedule.

The quota windows start with the sends of the last day (the delivery rows' sent_at, as
the in-process limiter's history counted them), so the upgrade loses no count.

SQLite gets the same tables (one sender there: its limiter stays in the process), unused.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

# revision identifiers, used by Alembic.
revision: str = '0015'
down_revision: Union[str, Sequence[str], None] = '0014'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# A frozen copy: a later change to the claim is a migration of its own.
CLAIM = """
CREATE FUNCTION mailer_rate_claim(
    p_want integer,
    p_interval double precision, p_tolerance double precision,
    p_domain text, p_domain_interval double precision, p_domain_tolerance double precision,
    p_hourly integer, p_daily integer,
    p_refund_at double precision[], p_refund_n integer[],
    OUT slots double precision[], OUT now_at double precision,
    OUT resume_at double precision, OUT quota_name text, OUT quota_limit integer,
    OUT domain_at double precision)
LANGUAGE plpgsql AS $$
DECLARE
    g_tat double precision;
    d_tat double precision;
    d_recent double precision[];
    d_burst integer;
    d_window double precision;
    lead double precision;
    base double precision;
    last double precision;
    n integer := p_want;
    used bigint;
    resume double precision;
    q record;
BEGIN
    -- Every claim of every sender holds this row's lock: one schedule for all. The clock
    -- is read under the lock, so the claims' times never go back.
    SELECT s.tat INTO g_tat FROM rate_state s WHERE s.key = 'rate' FOR UPDATE;
    now_at := extract(epoch FROM clock_timestamp());
    slots := '{}';
    -- Slots a sender took and did not use (their time passed, or it stopped): no longer
    -- counted, in the buckets they were counted in (if still in the windows).
    IF p_refund_n IS NOT NULL THEN
        FOR q IN SELECT v.name, v.win, r.at, r.n FROM (VALUES
                ('hourly', 3600.0::double precision),
                ('daily', 86400.0::double precision)) AS v(name, win),
                unnest(p_refund_at, p_refund_n) AS r(at, n) LOOP
            SELECT least(b.sent, q.n) INTO used FROM rate_bucket b
                WHERE b.quota = q.name AND b.bucket = floor(q.at / (q.win / 3600));
            IF used IS NOT NULL THEN
                UPDATE rate_bucket b SET sent = b.sent - used
                    WHERE b.quota = q.name AND b.bucket = floor(q.at / (q.win / 3600));
                UPDATE rate_state s SET total = s.total - used WHERE s.key = q.name;
            END IF;
        END LOOP;
    END IF;
    IF p_want = 0 THEN
        RETURN;
    END IF;
    IF p_domain IS NOT NULL THEN
        -- A domain's pace as RateLimiter's _Pace keeps it: a GCRA on the claims' times,
        -- and its last `burst` slots: the next slot (behind the global schedule, `lead`
        -- after now) at least a window (1 s and a guard) after the burst-th last.
        -- Its turn not come yet: nothing taken; domain_at says when it comes.
        d_burst := round((p_domain_tolerance + 1) / p_domain_interval);
        d_window := 1 + least(0.05, p_domain_tolerance / 2);
        INSERT INTO rate_state AS s (key, tat, total) VALUES (p_domain, 0, 0)
            ON CONFLICT (key) DO NOTHING;
        SELECT s.tat, coalesce(s.recent, '{}') INTO d_tat, d_recent
            FROM rate_state s WHERE s.key = p_domain;
        lead := CASE WHEN p_interval IS NULL THEN 0
                     ELSE greatest(greatest(g_tat, now_at) - p_tolerance - now_at, 0) END;
        domain_at := d_tat - p_domain_tolerance;
        IF cardinality(d_recent) >= d_burst THEN
            domain_at := greatest(domain_at, d_recent[cardinality(d_recent) - d_burst + 1]
                                             + d_window - lead);
        END IF;
        IF domain_at > now_at THEN
            RETURN;
        END IF;
        n := 1;
    END IF;
    -- Both windows count every send, limited or not: a quota set later counts the sends
    -- before it, as the delivery rows' history did.
    FOR q IN SELECT v.name, v.lim, v.win FROM (VALUES
            ('hourly', p_hourly, 3600.0::double precision),
            ('daily', p_daily, 86400.0::double precision)) AS v(name, lim, win) LOOP
        WITH gone AS (
            DELETE FROM rate_bucket b WHERE b.quota = q.name
                AND b.bucket <= floor((now_at - q.win) / (q.win / 3600))
                AND b.latest <= now_at - q.win
            RETURNING b.sent)
        UPDATE rate_state s SET total = s.total - (SELECT coalesce(sum(g.sent), 0) FROM gone g)
            WHERE s.key = q.name RETURNING s.total INTO used;
        IF q.lim IS NOT NULL AND used + 1 > q.lim THEN
            -- when enough of the oldest sends have left the window for one more
            SELECT r.latest + q.win INTO resume FROM (
                SELECT b.latest, sum(b.sent) OVER (ORDER BY b.bucket) AS running
                FROM rate_bucket b WHERE b.quota = q.name) r
            WHERE r.running >= used - q.lim + 1 ORDER BY r.running LIMIT 1;
            IF resume_at IS NULL OR resume > resume_at THEN
                resume_at := resume;
                quota_name := q.name;
                quota_limit := q.lim;
            END IF;
        END IF;
        IF q.lim IS NOT NULL THEN
            n := least(n, greatest(q.lim - used, 0));
        END IF;
    END LOOP;
    IF n = 0 THEN
        RETURN;
    END IF;
    resume_at := NULL;
    IF p_interval IS NULL THEN
        slots := array_fill(now_at, ARRAY[n]);
    ELSE
        -- GCRA: the i-th slot is due i intervals after the later of the schedule and now,
        -- up to the tolerance (the burst above the rate) ahead of it, never before now.
        base := greatest(g_tat, now_at);
        SELECT array_agg(greatest(base + i * p_interval - p_tolerance, now_at) ORDER BY i)
            INTO slots FROM generate_series(0, n - 1) AS i;
        UPDATE rate_state s SET tat = base + n * p_interval WHERE s.key = 'rate';
    END IF;
    last := slots[n];
    IF p_domain IS NOT NULL THEN
        -- Due an interval after its due time: a message claimed late (the sender marks it
        -- and opens a connection first) or behind the global schedule keeps the domain's
        -- place by up to an interval; the burst (d_recent) holds on the slots anyway.
        d_tat := greatest(d_tat, now_at - p_domain_interval, last - p_domain_interval)
                 + p_domain_interval;
        d_recent := (d_recent || last)[greatest(1, cardinality(d_recent) + 2 - d_burst):];
        UPDATE rate_state s SET tat = d_tat, recent = d_recent WHERE s.key = p_domain;
        domain_at := d_tat - p_domain_tolerance;
        IF cardinality(d_recent) >= d_burst THEN
            domain_at := greatest(domain_at, d_recent[1] + d_window - (last - now_at));
        END IF;
    END IF;
    FOR q IN SELECT v.name, v.win FROM (VALUES ('hourly', 3600.0::double precision),
                                              ('daily', 86400.0::double precision))
                                      AS v(name, win) LOOP
        INSERT INTO rate_bucket AS b (quota, bucket, sent, latest)
            VALUES (q.name, floor(last / (q.win / 3600)), n, last)
            ON CONFLICT (quota, bucket) DO UPDATE
            SET sent = b.sent + excluded.sent, latest = greatest(b.latest, excluded.latest);
        UPDATE rate_state s SET total = s.total + n WHERE s.key = q.name;
    END LOOP;
END
$$
"""

SEED = """
INSERT INTO rate_bucket (quota, bucket, sent, latest)
SELECT :name, floor(extract(epoch FROM sent_at) / :width), count(*),
       max(extract(epoch FROM sent_at))
FROM delivery
WHERE state = 'sent' AND sent_at > clock_timestamp() - make_interval(secs => :window)
GROUP BY 2
"""


def upgrade() -> None:
    op.create_table(
        'rate_state',
        sa.Column('key', sa.String(length=300), primary_key=True),
        sa.Column('tat', sa.Float(), nullable=False),
        sa.Column('total', sa.BigInteger(), nullable=False),
        sa.Column('recent', sa.Text().with_variant(ARRAY(sa.Float()), "postgresql"),
                  nullable=True))
    op.create_table(
        'rate_bucket',
        sa.Column('quota', sa.String(length=8), primary_key=True),
        sa.Column('bucket', sa.BigInteger(), primary_key=True),
        sa.Column('sent', sa.Integer(), nullable=False),
        sa.Column('latest', sa.Float(), nullable=False))
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    for name, window in (("hourly", 3600), ("daily", 86400)):
        conn.execute(sa.text(SEED), {"name": name, "width": window / 3600,
                                     "window": window})
    conn.execute(sa.text(
        "INSERT INTO rate_state (key, tat, total) VALUES ('rate', 0, 0), "
        "('hourly', 0, (SELECT coalesce(sum(sent), 0) FROM rate_bucket "
        "               WHERE quota = 'hourly')), "
        "('daily', 0, (SELECT coalesce(sum(sent), 0) FROM rate_bucket "
        "              WHERE quota = 'daily'))"))
    conn.exec_driver_sql(CLAIM)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION mailer_rate_claim")
    op.drop_table('rate_bucket')
    op.drop_table('rate_state')
