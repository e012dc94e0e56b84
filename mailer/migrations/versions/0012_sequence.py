"""sequence, sequence_step, sequence_progress: drip sequences as files, each step a
campaign of kind "step", each subscriber's place in a sequence one row found by next_at
(issue 15, points 2 and 3)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

from mailer.dbtypes import Timestamp

# revision identifiers, used by Alembic.
revision: str = '0012'
down_revision: Union[str, Sequence[str], None] = '0011'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('sequence',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=48), nullable=False),
    sa.Column('list_id', sa.Integer(), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('created_at', Timestamp(), nullable=False),
    sa.Column('updated_at', Timestamp(), nullable=False),
    sa.ForeignKeyConstraint(['list_id'], ['mailing_list.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('sequence_step',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sequence_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=400), nullable=False),
    sa.Column('position', sa.Integer(), nullable=True),
    sa.Column('after_seconds', sa.Integer(), nullable=False),
    sa.Column('window', sa.String(length=11), nullable=True),
    sa.Column('weekdays', sa.String(length=40), nullable=True),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('created_at', Timestamp(), nullable=False),
    sa.Column('updated_at', Timestamp(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['sequence_id'], ['sequence.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sequence_id', 'key')
    )
    op.create_table('sequence_progress',
    sa.Column('sequence_id', sa.Integer(), nullable=False),
    sa.Column('subscriber_id', sa.Integer(), nullable=False),
    sa.Column('list_id', sa.Integer(), nullable=False),
    sa.Column('started_at', Timestamp(), nullable=False),
    sa.Column('passed_after', sa.Integer(), nullable=False),
    sa.Column('last_step_id', sa.Integer(), nullable=True),
    sa.Column('next_step_id', sa.Integer(), nullable=True),
    sa.Column('next_at', Timestamp(), nullable=True),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('note', sa.String(length=200), nullable=True),
    sa.Column('updated_at', Timestamp(), nullable=False),
    sa.ForeignKeyConstraint(['last_step_id'], ['sequence_step.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['list_id'], ['mailing_list.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['next_step_id'], ['sequence_step.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['sequence_id'], ['sequence.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscriber.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sequence_id', 'subscriber_id'),
    sqlite_with_rowid=False
    )
    with op.batch_alter_table('sequence_progress', schema=None) as batch_op:
        batch_op.create_index('ix_sequence_progress_due', ['next_at'], unique=False)
        batch_op.create_index('ix_sequence_progress_subscriber', ['subscriber_id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('sequence_progress', schema=None) as batch_op:
        batch_op.drop_index('ix_sequence_progress_subscriber')
        batch_op.drop_index('ix_sequence_progress_due')
    op.drop_table('sequence_progress')
    op.drop_table('sequence_step')
    op.drop_table('sequence')
