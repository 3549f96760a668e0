"""Webhook delivery ids: the durable memory that makes one delivery start one run."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.inserts import insert_or_ignore
from storage.members import WORKSPACE_ID
from storage.models import WebhookDelivery, Workflow, WorkflowVersion


async def target(session: AsyncSession, name: str) -> tuple[Workflow, dict[str, Any]] | None:
    """The workflow called `name` with its active definition, in one query whether or not it
    exists (a hook's answer time should not tell which names do)."""
    row = (
        await session.execute(
            select(Workflow, WorkflowVersion.definition)
            .join(WorkflowVersion, (WorkflowVersion.workflow_id == Workflow.id) & (WorkflowVersion.version == Workflow.active_version))
            .where(Workflow.workspace_id == WORKSPACE_ID, Workflow.name == name)
        )
    ).first()
    return (row[0], dict(row[1])) if row else None


async def delivered_run(session: AsyncSession, workflow_id: int, delivery_id: str) -> str | None:
    """The run a delivery id of this workflow already started, if any."""
    return (
        await session.execute(
            select(WebhookDelivery.run_id).where(WebhookDelivery.workflow_id == workflow_id, WebhookDelivery.delivery_id == delivery_id)
        )
    ).scalar_one_or_none()


async def record_delivery(session: AsyncSession, workflow_id: int, delivery_id: str, run_id: str) -> bool:
    """Remember that `delivery_id` started `run_id`, in the caller's transaction (the one that
    creates the run). False when a concurrent request recorded the same delivery first: the
    caller must then roll back its own run and answer with the winner's."""
    return await insert_or_ignore(session, WebhookDelivery, {"workflow_id": workflow_id, "delivery_id": delivery_id, "run_id": run_id})
