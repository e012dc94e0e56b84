"""subscriber.infix: the Dutch tussenvoegsel ("van der", "de") in a field of its own, so
"Jan van der Berg" is written, greeted and sorted by the Dutch rules (audience/names.py);
imported from a `tussenvoegsel`, `infix` or `prefix` column

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('subscriber', schema=None) as batch_op:
        batch_op.add_column(sa.Column('infix', sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('subscriber', schema=None) as batch_op:
        batch_op.drop_column('infix')
