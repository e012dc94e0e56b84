"""notice(subscriber_id) indexed: deleting a person (erasure, retention of never-confirmed
sign-ups) looks up their notices through ON DELETE CASCADE, which without an index is a
scan of the whole table per person (327 ms each at 336,666 notices, 1.3 ms with it:
bench/privacy_bench.py); the export reads them too

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

"""
from typing import Sequence, Union

from alembic import op

# revision identifiers, used by Alembic.
revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('notice', schema=None) as batch_op:
        batch_op.create_index('ix_notice_subscriber', ['subscriber_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('notice', schema=None) as batch_op:
        batch_op.drop_index('ix_notice_subscriber')
