"""turns of one conversation one at a time

Revision ID: 0004_turns
Revises: 0003_apply

A conversation carries the lease of the turn that is answering it (`turn_holder`,
`turn_lease_until`), so two workers never answer one conversation at once.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_turns"
down_revision: str | Sequence[str] | None = "0003_apply"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("turn_holder", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("turn_lease_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("turn_lease_until")
        batch.drop_column("turn_holder")
