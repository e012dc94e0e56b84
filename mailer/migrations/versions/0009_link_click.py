"""link_click: clicks counted per campaign and link, never per person ([tracking] clicks
= "aggregate", issue 16)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('link_click',
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('link_index', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('clicks', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('campaign_id', 'link_index')
    )


def downgrade() -> None:
    op.drop_table('link_click')
