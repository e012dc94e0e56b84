"""sender and delivery.claimed_by: several senders over PostgreSQL (issue 17, point 1)

A sender registers a `sender` row and holds a lease on it (`lease_until`, renewed while it
lives); the due deliveries it takes from the outbox carry its id (`claimed_by`). Rows
claimed by a sender whose lease is still running are left to it; those of a sender whose
lease ran out go back to the queue, and what it had in flight ("sending") becomes
"unknown" (delivery/claims.py). No foreign key: a sender's row is deleted when it ends,
and a claim naming a sender that no longer exists is simply no claim.

SQLite gets the same schema (one sender at a time there: the run lock), unused.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

from mailer.dbtypes import Timestamp

# revision identifiers, used by Alembic.
revision: str = '0014'
down_revision: Union[str, Sequence[str], None] = '0013'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('sender',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', Timestamp(), nullable=False),
    sa.Column('lease_until', Timestamp(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=True),
    sa.Column('sent', sa.Integer(), nullable=False, server_default='0'),
    sa.Column('rate', sa.Float(), nullable=False, server_default='0'),
    sa.PrimaryKeyConstraint('id'))
    with op.batch_alter_table('delivery') as batch:
        batch.add_column(sa.Column('claimed_by', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('delivery') as batch:
        batch.drop_column('claimed_by')
    op.drop_table('sender')
