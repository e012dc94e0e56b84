"""recurring_campaign, recurring_occurrence: campaigns sent again on a cron schedule
(`campaign create --every`, issue 15, point 4)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

from mailer.dbtypes import Timestamp

# revision identifiers, used by Alembic.
revision: str = '0010'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('recurring_campaign',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('slug', sa.String(length=48), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('template', sa.String(length=400), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('list_ids', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=False),
    sa.Column('segment', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=False),
    sa.Column('cron', sa.String(length=100), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('next_local', sa.String(length=16), nullable=True),
    sa.Column('next_at', Timestamp(), nullable=True),
    sa.Column('created_at', Timestamp(), nullable=False),
    sa.Column('updated_at', Timestamp(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('slug')
    )
    with op.batch_alter_table('recurring_campaign', schema=None) as batch_op:
        batch_op.create_index('ix_recurring_campaign_due', ['state', 'next_at'], unique=False)

    op.create_table('recurring_occurrence',
    sa.Column('recurring_id', sa.Integer(), nullable=False),
    sa.Column('local_time', sa.String(length=16), nullable=False),
    sa.Column('due_at', Timestamp(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_at', Timestamp(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['recurring_id'], ['recurring_campaign.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('recurring_id', 'local_time')
    )
    with op.batch_alter_table('recurring_occurrence', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recurring_occurrence_campaign_id'), ['campaign_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('recurring_occurrence', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recurring_occurrence_campaign_id'))
    op.drop_table('recurring_occurrence')
    with op.batch_alter_table('recurring_campaign', schema=None) as batch_op:
        batch_op.drop_index('ix_recurring_campaign_due')
    op.drop_table('recurring_campaign')
