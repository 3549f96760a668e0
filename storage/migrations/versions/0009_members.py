"""members: channels and time zone kept like the other settings, and who paused a member

Revision ID: 0009_members
Revises: 0008_spend

A member's `channels` (approvals, activity) and `timezone` are seeded from the file like its
role and persona, so an admin's change from chat (`/nova config`) wins until the file's own
value changes. `paused_by` / `paused_at`: a paused member (`status = 'paused'`) answers that it
is paused and by whom, and its workflows do not fire.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_members"
down_revision: str | Sequence[str] | None = "0008_spend"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.add_column(sa.Column("channels", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("timezone", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("paused_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.drop_column("paused_at")
        batch_op.drop_column("paused_by")
        batch_op.drop_column("timezone")
        batch_op.drop_column("channels")
