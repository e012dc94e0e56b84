"""sender.machine: which senders share this machine's process ids (issue 17, point 1)

A sender records where its pid means something: the kernel's boot and its pid namespace
(`claims.machine`). A sender that starts, or renews its lease, on the same one can then
see at once that another sender's process is gone (a SIGKILL, an OOM kill) and let its
lease end now, instead of waiting up to `lease_seconds` for its claims to come back.
Rows from before this migration have none: they wait for their lease as before.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '0016'
down_revision: Union[str, Sequence[str], None] = '0015'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('sender') as batch:
        batch.add_column(sa.Column('machine', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sender') as batch:
        batch.drop_column('machine')
