"""feedback_event: bounces, complaints, auto-replies and mail unsubscribes; the
delivery's Message-ID indexed, for attributing a returned original

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

from mailer.dbtypes import Timestamp

# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('feedback_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('message_key', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('at', Timestamp(), nullable=False),
    sa.Column('source', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=24), nullable=True),
    sa.Column('hard', sa.Boolean(), nullable=False),
    sa.Column('sender_side', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=True),
    sa.Column('reply_code', sa.Integer(), nullable=True),
    sa.Column('diagnostic', sa.Text(), nullable=True),
    sa.Column('domain', sa.String(length=253), nullable=True),
    sa.Column('attributed_by', sa.String(length=16), nullable=True),
    sa.Column('subscriber_id', sa.Integer(), nullable=True),
    sa.Column('campaign_id', sa.Integer(), nullable=True),
    sa.Column('list_id', sa.Integer(), nullable=True),
    sa.Column('delivery_id', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscriber.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['list_id'], ['mailing_list.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['delivery_id'], ['delivery.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('message_key', 'seq'),
    )
    with op.batch_alter_table('feedback_event', schema=None) as batch_op:
        batch_op.create_index('ix_feedback_event_campaign', ['campaign_id', 'kind'],
                              unique=False)
        batch_op.create_index('ix_feedback_event_subscriber', ['subscriber_id', 'at'],
                              unique=False)
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.create_index('ix_delivery_message_id', ['message_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.drop_index('ix_delivery_message_id')
    with op.batch_alter_table('feedback_event', schema=None) as batch_op:
        batch_op.drop_index('ix_feedback_event_subscriber')
        batch_op.drop_index('ix_feedback_event_campaign')
    op.drop_table('feedback_event')
