"""approvals in threads: decisions, copies, reminders; clicks recorded before the ack

Revision ID: 0006_approvals
Revises: 0005_origin

An approval keeps every person's decision (a quorum counts them), every posted copy of its
request (all are updated after the outcome) and its reminder; `revision` guards concurrent
clicks. `inbound_actions` holds clicks and form submissions from the ack until a job has
handled them.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_approvals"
down_revision: str | Sequence[str] | None = "0005_origin"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("workflow", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("quorum", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("decisions", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("messages", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("remind_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="0"))
        batch.create_index(batch.f("ix_approvals_workflow"), ["workflow"], unique=False)
    op.create_table(
        "inbound_actions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("object_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("conversation", sa.String(length=64), nullable=True),
        sa.Column("message", sa.String(length=64), nullable=True),
        sa.Column("thread", sa.String(length=64), nullable=True),
        sa.Column("values", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_actions")),
        sa.UniqueConstraint("member_id", "platform", "key", name=op.f("uq_inbound_actions_member_id")),
    )
    with op.batch_alter_table("inbound_actions") as batch:
        batch.create_index(batch.f("ix_inbound_actions_status"), ["status"], unique=False)


def downgrade() -> None:
    op.drop_table("inbound_actions")
    with op.batch_alter_table("approvals") as batch:
        batch.drop_index(batch.f("ix_approvals_workflow"))
        for column in ("revision", "reminded_at", "remind_at", "messages", "decisions", "quorum", "workflow"):
            batch.drop_column(column)
