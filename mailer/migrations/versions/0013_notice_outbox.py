"""notices into the one outbox: each (notice kind, list) becomes a campaign of kind
"notice", each notice a delivery row of it; the notice table goes (issue 15, point 1)

A person with several notices of one kind and list (the outbox holds one row per
campaign and person) keeps the latest. A notice left "sending" (claimed by a sender
that may have died) becomes "unknown", as a campaign's delivery would: it is never sent
a second time.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02

"""
from datetime import UTC, datetime
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from mailer.dbtypes import Timestamp

# revision identifiers, used by Alembic.
revision: str = '0013'
down_revision: Union[str, Sequence[str], None] = '0012'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
SUBJECTS = {"confirm": "{{ t.confirm_subject | replace('{list}', list.name) }}",
            "welcome": "{{ t.welcome_subject | replace('{list}', list.name) }}",
            "export": "{{ t.export_subject | replace('{org}', org.name) }}"}
CAMPAIGN = sa.table(
    "campaign", sa.column("id", sa.Integer), sa.column("slug", sa.String),
    sa.column("title", sa.String), sa.column("template", sa.String),
    sa.column("subject", sa.Text), sa.column("list_ids", JSON), sa.column("segment", JSON),
    sa.column("state", sa.String), sa.column("kind", sa.String),
    sa.column("started_at", Timestamp()), sa.column("created_at", Timestamp()),
    sa.column("updated_at", Timestamp()))
COLUMNS = ("subscriber_id", "list_id", "state", "attempts", "next_attempt_at", "last_reply",
           "message_id", "queued_at", "sent_at")


def _notice_columns() -> list[sa.Column]:
    """The notice table's columns as 0003 and 0007 made it."""
    return [
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('subscriber_id', sa.Integer(), nullable=False),
        sa.Column('list_id', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=12), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', Timestamp(), nullable=True),
        sa.Column('last_reply', sa.Text(), nullable=True),
        sa.Column('message_id', sa.String(length=255), nullable=True),
        sa.Column('queued_at', Timestamp(), nullable=False),
        sa.Column('sent_at', Timestamp(), nullable=True)]


def _notice_table() -> sa.Table:
    return sa.Table('notice', sa.MetaData(), *_notice_columns())


def _delivery_table() -> sa.Table:
    return sa.Table(
        'delivery', sa.MetaData(),
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('campaign_id', sa.Integer()),
        *(sa.Column(name, Timestamp() if name.endswith("_at") else sa.String())
          for name in COLUMNS if name not in ("subscriber_id", "list_id", "attempts")),
        sa.Column('subscriber_id', sa.Integer()), sa.Column('list_id', sa.Integer()),
        sa.Column('attempts', sa.Integer()), sa.Column('updated_at', Timestamp()))


def upgrade() -> None:
    conn = op.get_bind()
    notice, delivery = _notice_table(), _delivery_table()
    now = datetime.now(UTC)
    pairs = conn.execute(sa.select(notice.c.kind, notice.c.list_id).distinct()).all()
    for kind, list_id in pairs:
        slug = f"notice:{kind}:{list_id}"
        campaign_id = conn.execute(sa.select(CAMPAIGN.c.id).where(
            CAMPAIGN.c.slug == slug)).scalar()
        if campaign_id is None:
            conn.execute(CAMPAIGN.insert().values(
                slug=slug, title=kind, template=f"{kind}.html.j2",
                subject=SUBJECTS.get(kind, kind), list_ids=[list_id], segment=[],
                state="sending", kind="notice", started_at=now, created_at=now,
                updated_at=now))
            campaign_id = conn.execute(sa.select(CAMPAIGN.c.id).where(
                CAMPAIGN.c.slug == slug)).scalar_one()
        latest = (sa.select(sa.func.max(notice.c.id)).where(
            notice.c.kind == kind, notice.c.list_id == list_id)
            .group_by(notice.c.subscriber_id))
        state = sa.case((notice.c.state == "sending", sa.literal("unknown")),
                        else_=notice.c.state)
        conn.execute(delivery.insert().from_select(
            ["campaign_id", *COLUMNS, "updated_at"],
            sa.select(sa.literal(campaign_id), notice.c.subscriber_id, notice.c.list_id,
                      state, notice.c.attempts,
                      sa.case((notice.c.state == "deferred", notice.c.next_attempt_at),
                              else_=sa.null()),
                      sa.case((notice.c.state == "sending", sa.literal(
                          "in flight when the sender stopped: it may have arrived")),
                          else_=notice.c.last_reply),
                      notice.c.message_id, notice.c.queued_at, notice.c.sent_at,
                      sa.func.coalesce(notice.c.sent_at, notice.c.queued_at))
            .where(notice.c.id.in_(latest))))
    with op.batch_alter_table('notice', schema=None) as batch_op:
        batch_op.drop_index('ix_notice_subscriber')
        batch_op.drop_index('ix_notice_state')
    op.drop_table('notice')


def downgrade() -> None:
    op.create_table(
        'notice', *_notice_columns(),
        sa.ForeignKeyConstraint(['list_id'], ['mailing_list.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['subscriber_id'], ['subscriber.id'], ondelete='CASCADE'))
    with op.batch_alter_table('notice', schema=None) as batch_op:
        batch_op.create_index('ix_notice_state', ['state', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_notice_subscriber', ['subscriber_id'], unique=False)
    conn = op.get_bind()
    notice, delivery = _notice_table(), _delivery_table()
    campaigns = conn.execute(sa.select(CAMPAIGN.c.id, CAMPAIGN.c.slug).where(
        CAMPAIGN.c.kind == "notice")).all()
    for campaign_id, slug in campaigns:
        kind = slug.split(":")[1]
        conn.execute(notice.insert().from_select(
            ["kind", *COLUMNS],
            sa.select(sa.literal(kind), *(delivery.c[name] for name in COLUMNS)).where(
                delivery.c.campaign_id == campaign_id,
                delivery.c.subscriber_id.is_not(None), delivery.c.list_id.is_not(None))))
        conn.execute(delivery.delete().where(delivery.c.campaign_id == campaign_id))
        conn.execute(CAMPAIGN.delete().where(CAMPAIGN.c.id == campaign_id))
