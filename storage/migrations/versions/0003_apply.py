"""run depth and workflow usage

A run's `depth`: how many handoffs and events lie between it and the run a trigger started
(0 for a schedule, manual or webhook run); a start deeper than `workflows.max_handoff_depth`
is refused. `llm_usage.workflow`: the workflow whose agent step made the call (its run id is
in `run_id`), so tokens are known per member, workflow and run.

Revision ID: 0003_apply
Revises: 0002_hooks
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003_apply'
down_revision: str | Sequence[str] | None = '0002_hooks'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('workflow_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('depth', sa.Integer(), server_default='0', nullable=False))
    with op.batch_alter_table('llm_usage', schema=None) as batch_op:
        batch_op.add_column(sa.Column('workflow', sa.String(length=100), nullable=True))
        batch_op.create_index(batch_op.f('ix_llm_usage_workflow'), ['workflow'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('llm_usage', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_llm_usage_workflow'))
        batch_op.drop_column('workflow')
    with op.batch_alter_table('workflow_runs', schema=None) as batch_op:
        batch_op.drop_column('depth')
