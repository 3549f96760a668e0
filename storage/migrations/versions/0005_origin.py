"""run origin

Revision ID: 0005_origin
Revises: 0004_turns

A run records where it came from (`workflow_runs.origin`, JSON: via, platform, conversation,
thread, person), so approvals, posts and notices can default to it. Nullable: runs from before
this revision have none.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_origin"
down_revision: str | Sequence[str] | None = "0004_turns"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workflow_runs") as batch:
        batch.add_column(sa.Column("origin", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workflow_runs") as batch:
        batch.drop_column("origin")
