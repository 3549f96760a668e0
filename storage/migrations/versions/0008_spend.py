"""spend: cost per LLM call, budgets, their per-period ledger and reservations, effect slots

Revision ID: 0008_spend
Revises: 0007_plans

`llm_usage.cost` is the call's price when it was made (`llm.prices`). A budget (`budgets`) is
a limit per scope (`workspace`, `member:ID`, `person:ID`, `person:default`; `effects:ID` for a
member's daily cap on external effects), seeded from the config file and changed by admins.
`budget_use` is the ledger, one row per scope and period: what was used, what calls in flight
have reserved, and whether the warning was given. `budget_reservations` are the calls in
flight (released when a process died holding one). `effect_slots`: one row per external
effect that took a slot of its member's daily cap, so a retried effect never takes two.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_spend"
down_revision: str | Sequence[str] | None = "0007_plans"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("llm_usage", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cost", sa.Float(), nullable=False, server_default="0"))
    op.create_table(
        "budgets",
        sa.Column("scope", sa.String(length=100), nullable=False),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("file_value", sa.JSON(), nullable=True),
        sa.Column("set_by", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", name=op.f("pk_budgets")),
    )
    op.create_table(
        "budget_use",
        sa.Column("scope", sa.String(length=100), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("cost", sa.Float(), nullable=False, server_default="0"),
        sa.Column("reserved_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("reserved_cost", sa.Float(), nullable=False, server_default="0"),
        sa.Column("count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("warned", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("scope", "period", name=op.f("pk_budget_use")),
    )
    op.create_table(
        "budget_reservations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("claims", sa.JSON(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_reservations")),
    )
    with op.batch_alter_table("budget_reservations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_budget_reservations_expires_at"), ["expires_at"], unique=False)
    op.create_table(
        "effect_slots",
        sa.Column("effect_id", sa.String(length=200), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("effect_id", name=op.f("pk_effect_slots")),
    )


def downgrade() -> None:
    op.drop_table("effect_slots")
    with op.batch_alter_table("budget_reservations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_budget_reservations_expires_at"))
    op.drop_table("budget_reservations")
    op.drop_table("budget_use")
    op.drop_table("budgets")
    with op.batch_alter_table("llm_usage", schema=None) as batch_op:
        batch_op.drop_column("cost")
