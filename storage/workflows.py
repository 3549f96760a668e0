"""Workflows, their immutable versions, runs and step records."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.ext.asyncio import AsyncSession

from storage.inserts import insert_or_ignore
from storage.members import WORKSPACE_ID
from storage.models import Approval, StepRun, Workflow, WorkflowRun, WorkflowVersion, utcnow

FINISHED_RUN = ("completed", "failed", "cancelled", "skipped")  # skipped: a schedule slot recorded, never run


async def apply(session: AsyncSession, document: dict[str, Any], created_by: str | None = None) -> tuple[Workflow, int, bool]:
    """Create the workflow or add a version when the definition changed. Returns the
    workflow, its active version and whether a new version was written."""
    name = document["name"]
    row = await by_name(session, name)
    if row is None:
        row = Workflow(
            workspace_id=WORKSPACE_ID, name=name, member_id=document["member"],
            description=document.get("description", ""), status="active", active_version=1, created_by=created_by,
        )
        session.add(row)
        await session.flush()
        session.add(WorkflowVersion(workflow_id=row.id, version=1, definition=document, created_by=created_by))
        await session.flush()
        return row, 1, True
    current = await definition(session, row.id, row.active_version)
    if current == document:
        return row, row.active_version, False
    earlier = (
        await session.execute(select(WorkflowVersion.version, WorkflowVersion.definition).where(WorkflowVersion.workflow_id == row.id))
    ).all()
    matching = [version for version, stored in earlier if stored == document]
    if matching:  # rolling back: the same definition as an older version re-activates it
        row.active_version = max(matching)
        row.member_id = document["member"]
        await session.flush()
        return row, row.active_version, True
    latest = (await session.execute(select(func.max(WorkflowVersion.version)).where(WorkflowVersion.workflow_id == row.id))).scalar_one()
    version = int(latest or 0) + 1
    session.add(WorkflowVersion(workflow_id=row.id, version=version, definition=document, created_by=created_by))
    row.active_version = version
    row.member_id = document["member"]
    row.description = document.get("description", "")
    await session.flush()
    return row, version, True


async def by_name(session: AsyncSession, name: str) -> Workflow | None:
    return (await session.execute(select(Workflow).where(Workflow.workspace_id == WORKSPACE_ID, Workflow.name == name))).scalar_one_or_none()


async def definition(session: AsyncSession, workflow_id: int, version: int) -> dict[str, Any]:
    row = (
        await session.execute(
            select(WorkflowVersion.definition).where(WorkflowVersion.workflow_id == workflow_id, WorkflowVersion.version == version)
        )
    ).scalar_one()
    return dict(row)


async def all_workflows(session: AsyncSession) -> list[Workflow]:
    return list((await session.execute(select(Workflow).order_by(Workflow.name))).scalars())


async def delete(session: AsyncSession, workflow_id: int) -> None:
    """The workflow, its versions, runs, their steps and approvals: gone together. Explicit
    deletes, child rows first, rather than relying on each database's foreign key cascade.
    A job still queued for one of these runs finds no run and ends."""
    run_ids = select(WorkflowRun.id).where(WorkflowRun.workflow_id == workflow_id).scalar_subquery()
    await session.execute(sql_delete(Approval).where(Approval.run_id.in_(run_ids)))
    await session.execute(sql_delete(StepRun).where(StepRun.run_id.in_(run_ids)))
    await session.execute(sql_delete(WorkflowRun).where(WorkflowRun.workflow_id == workflow_id))
    await session.execute(sql_delete(WorkflowVersion).where(WorkflowVersion.workflow_id == workflow_id))
    await session.execute(sql_delete(Workflow).where(Workflow.id == workflow_id))


async def set_status(session: AsyncSession, workflow_id: int, status: str) -> None:
    await session.execute(update(Workflow).where(Workflow.id == workflow_id).values(status=status))


async def create_run(
    session: AsyncSession, workflow: Workflow, trigger: str, run_input: dict[str, Any], slot: int | None = None,
    depth: int = 0, origin: dict[str, Any] | None = None,
) -> str | None:
    """A new run pinned to the active version; None when that schedule slot already ran.
    `depth`: handoffs and events between it and the run a trigger started. `origin`: where it
    came from (`Origin.to_json()`), stored as given."""
    run_id = uuid.uuid4().hex[:16]
    inserted = await insert_or_ignore(
        session,
        WorkflowRun,
        {"id": run_id, "workflow_id": workflow.id, "version": workflow.active_version, "status": "running",
         "trigger": trigger, "slot": slot, "input": run_input, "depth": depth, "origin": origin},
    )
    return run_id if inserted else None


# The statements a workflow step runs, built once: building a statement and its cache key
# costs more than SQLite takes to run it. Values go in as parameters (for an UPDATE, the
# parameters that name columns become its SET clause).
_RUN_TABLE = cast(Table, WorkflowRun.__table__)
_STEP_TABLE = cast(Table, StepRun.__table__)
_RUNS = _RUN_TABLE.c
_STEPS = _STEP_TABLE.c
_LOCK_RUN = (
    update(WorkflowRun).where(WorkflowRun.id == bindparam("b_run_id")).values(status=WorkflowRun.status)
    .returning(WorkflowRun).execution_options(populate_existing=True, synchronize_session=False)
)
_GET_RUN = select(WorkflowRun).where(WorkflowRun.id == bindparam("b_run_id")).execution_options(populate_existing=True)
_UPDATE_OPEN_RUN = update(_RUN_TABLE).where(_RUNS.id == bindparam("b_run_id"), _RUNS.status.not_in(FINISHED_RUN))
_STEP_ROWS = (
    select(StepRun).where(StepRun.run_id == bindparam("b_run_id")).order_by(StepRun.id)
    .execution_options(populate_existing=True)
)
_UPDATE_STEP = update(_STEP_TABLE).where(_STEPS.run_id == bindparam("b_run_id"), _STEPS.step_path == bindparam("b_path"))
_UPDATE_STEP_IF = _UPDATE_STEP.where(_STEPS.status.in_(bindparam("b_statuses", expanding=True)))
_UPDATE_STEP_IF_MINE = _UPDATE_STEP_IF.where(_STEPS.attempt == bindparam("b_attempt"))
_CLAIM_STEP = (
    _UPDATE_STEP.where((_STEPS.status == "queued") | ((_STEPS.status == "running") & (_STEPS.lease_until < bindparam("b_now"))))
    .values(status="running", attempt=_STEPS.attempt + 1)
    .returning(_STEPS.attempt)
)


async def run(session: AsyncSession, run_id: str, *, lock: bool = False) -> WorkflowRun | None:
    """The run; with `lock`, its row is locked for the rest of the transaction so that
    concurrent advances of one run take turns (a write takes SQLite's lock too). One
    statement either way: the no-op UPDATE takes the lock and RETURNING reads the row."""
    result = await session.execute(_LOCK_RUN if lock else _GET_RUN, {"b_run_id": run_id})
    return result.scalar_one_or_none()


async def finish_run(session: AsyncSession, run_id: str, status: str, output: Any = None, error: str | None = None) -> bool:
    result = await session.execute(
        _UPDATE_OPEN_RUN, {"b_run_id": run_id, "status": status, "output": output, "error": error, "finished_at": utcnow()}
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def set_run_status(session: AsyncSession, run_id: str, status: str) -> None:
    await session.execute(_UPDATE_OPEN_RUN, {"b_run_id": run_id, "status": status})


OPEN_STEP = ("pending", "queued", "running", "waiting", "retrying")


async def cancel_open_steps(session: AsyncSession, run_id: str, error: str) -> int:
    """Mark the run's unfinished steps `cancelled` (no lease, no timer): a queued job or a
    timer that fires later finds nothing to do, and a worker running one of them loses its
    lease at the next heartbeat and stops. Returns how many steps it marked."""
    result = await session.execute(
        update(_STEP_TABLE)
        .where(_STEPS.run_id == run_id, _STEPS.status.in_(OPEN_STEP))
        .values(status="cancelled", error=error, lease_until=None, wake_at=None, finished_at=utcnow())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def active_runs(session: AsyncSession, workflow_id: int) -> int:
    return int(
        (
            await session.execute(
                select(func.count()).select_from(WorkflowRun).where(
                    WorkflowRun.workflow_id == workflow_id, WorkflowRun.status.not_in(FINISHED_RUN)
                )
            )
        ).scalar_one()
    )


async def runs(session: AsyncSession, workflow_id: int | None = None, limit: int = 50) -> list[WorkflowRun]:
    query = select(WorkflowRun).order_by(WorkflowRun.started_at.desc(), WorkflowRun.id).limit(limit)
    if workflow_id is not None:
        query = query.where(WorkflowRun.workflow_id == workflow_id)
    return list((await session.execute(query)).scalars())


async def last_run(session: AsyncSession, workflow_id: int) -> WorkflowRun | None:
    rows = await runs(session, workflow_id, limit=1)
    return rows[0] if rows else None


async def steps(session: AsyncSession, run_id: str) -> dict[str, StepRun]:
    """The run's step rows as the database has them now (also rows this session loaded before)."""
    rows = await session.execute(_STEP_ROWS, {"b_run_id": run_id})
    return {row.step_path: row for row in rows.scalars()}


async def add_step(session: AsyncSession, run_id: str, path: str, status: str, output: Any = None, **values: Any) -> bool:
    """Record a step the first time it is reached; False when it was recorded already."""
    return await insert_or_ignore(
        session, StepRun, {"run_id": run_id, "step_path": path, "status": status, "attempt": 0, "output": output, **values}
    )


async def update_step(session: AsyncSession, run_id: str, path: str, *, where_status: tuple[str, ...] | None = None,
                      where_attempt: int | None = None, **values: Any) -> bool:
    """A plain UPDATE (no ORM bookkeeping: `steps` always re-reads, so nothing goes stale).
    `where_attempt` (with `where_status`): only while the row is still that attempt's, i.e.
    no other worker has claimed the step since."""
    keys: dict[str, Any] = {"b_run_id": run_id, "b_path": path}
    statement = _UPDATE_STEP
    if where_status is not None:
        keys["b_statuses"] = list(where_status)
        statement = _UPDATE_STEP_IF
        if where_attempt is not None:
            keys["b_attempt"] = where_attempt
            statement = _UPDATE_STEP_IF_MINE
    result = await session.execute(statement, {**values, **keys})
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def claim_step(session: AsyncSession, run_id: str, path: str, lease_until: datetime) -> int | None:
    """Take a queued step (or one whose worker died: its lease ran out) for one attempt;
    returns the attempt number, None when another worker has it or it is finished."""
    now = utcnow()
    result = await session.execute(
        _CLAIM_STEP, {"b_run_id": run_id, "b_path": path, "b_now": now, "lease_until": lease_until, "started_at": now}
    )
    return result.scalar_one_or_none()


async def expired_steps(session: AsyncSession, limit: int = 200, now: datetime | None = None) -> list[StepRun]:
    """Steps whose worker died mid-attempt, queued steps whose job was lost, and
    waits/timeouts that are due."""
    now = now or utcnow()
    rows = await session.execute(
        select(StepRun)
        .where(
            ((StepRun.status.in_(("running", "queued"))) & (StepRun.lease_until < now))
            | ((StepRun.status.in_(("waiting", "retrying"))) & (StepRun.wake_at < now))
        )
        .limit(limit)
    )
    return list(rows.scalars())


async def queued_steps(session: AsyncSession, lease_before: datetime, limit: int = 500) -> list[tuple[str, str]]:
    """(run id, path) of queued steps whose queue lease ends before `lease_before`: queued a
    while ago (a queued step's lease is its queueing time plus the grace), so its job should be
    in Redis by now, or taken."""
    rows = await session.execute(
        select(StepRun.run_id, StepRun.step_path)
        .where(StepRun.status == "queued", StepRun.lease_until < lease_before)
        .limit(limit)
    )
    return [(run_id, path) for run_id, path in rows.all()]


async def stalled_runs(session: AsyncSession, quiet_for: timedelta, limit: int = 200, now: datetime | None = None) -> list[str]:
    """Runs with no step queued, running, retrying or waiting (or no step row at all) and no
    advance for `quiet_for`: their next advance is due (the caller checks it is not queued)."""
    busy = select(StepRun.run_id).where(StepRun.status.in_(("queued", "running", "retrying", "waiting")))
    rows = await session.execute(
        select(WorkflowRun.id)
        .where(
            WorkflowRun.status.in_(("running", "waiting")),
            WorkflowRun.updated_at < (now or utcnow()) - quiet_for,
            WorkflowRun.id.not_in(busy),
        )
        .limit(limit)
    )
    return list(rows.scalars())


async def last_slots(session: AsyncSession) -> dict[int, int]:
    """The latest schedule slot that has a run, per workflow."""
    rows = await session.execute(select(WorkflowRun.workflow_id, func.max(WorkflowRun.slot)).group_by(WorkflowRun.workflow_id))
    return {workflow_id: int(slot) for workflow_id, slot in rows.all() if slot is not None}


async def active_definitions(session: AsyncSession, ids: list[int] | None = None) -> list[tuple[Workflow, dict[str, Any]]]:
    """Active workflows (all, or those of `ids`) with the document of their active version,
    in one query."""
    query = (
        select(Workflow, WorkflowVersion.definition)
        .join(WorkflowVersion, (WorkflowVersion.workflow_id == Workflow.id) & (WorkflowVersion.version == Workflow.active_version))
        .where(Workflow.status == "active")
        .order_by(Workflow.id)
    )
    if ids is not None:
        query = query.where(Workflow.id.in_(ids))
    rows = await session.execute(query)
    return [(row, dict(document)) for row, document in rows.all()]


async def workflows_with_slot(session: AsyncSession, ids: list[int], slot: int) -> set[int]:
    """Which of these workflows have a run (or a skipped record) of this schedule slot."""
    rows = await session.execute(select(WorkflowRun.workflow_id).where(WorkflowRun.slot == slot, WorkflowRun.workflow_id.in_(ids)))
    return set(rows.scalars())


async def active_run_counts(session: AsyncSession, ids: list[int]) -> dict[int, int]:
    """Unfinished runs per workflow, for those of `ids` that have any."""
    rows = await session.execute(
        select(WorkflowRun.workflow_id, func.count())
        .where(WorkflowRun.workflow_id.in_(ids), WorkflowRun.status.not_in(FINISHED_RUN))
        .group_by(WorkflowRun.workflow_id)
    )
    return {int(workflow_id): int(count) for workflow_id, count in rows.all()}


async def stats(session: AsyncSession) -> dict[str, dict[str, Any]]:
    """Per workflow: runs by outcome, success rate, and per step p50/p95 duration (seconds)."""
    out: dict[str, dict[str, Any]] = {}
    names = {w.id: w.name for w in await all_workflows(session)}
    counts = await session.execute(select(WorkflowRun.workflow_id, WorkflowRun.status, func.count()).group_by(WorkflowRun.workflow_id, WorkflowRun.status))
    for workflow_id, status, count in counts.all():
        entry = out.setdefault(names.get(workflow_id, str(workflow_id)), {"runs": {}, "steps": {}})
        entry["runs"][status] = int(count)
    durations: dict[tuple[str, str], list[float]] = {}
    rows = await session.execute(
        select(WorkflowRun.workflow_id, StepRun.step_path, StepRun.started_at, StepRun.finished_at)
        .join(WorkflowRun, WorkflowRun.id == StepRun.run_id)
        .where(StepRun.status == "done", StepRun.started_at.is_not(None), StepRun.finished_at.is_not(None))
    )
    for workflow_id, path, started, finished in rows.all():
        if started is None or finished is None:
            continue
        step = path.rsplit("/", 1)[-1].split("[")[0]
        durations.setdefault((names.get(workflow_id, str(workflow_id)), step), []).append((finished - started).total_seconds())
    for (name, step), values in durations.items():
        values.sort()
        entry = out.setdefault(name, {"runs": {}, "steps": {}})
        entry["steps"][step] = {"count": len(values), "p50": _quantile(values, 0.5), "p95": _quantile(values, 0.95)}
    for entry in out.values():
        finished = sum(entry["runs"].get(s, 0) for s in ("completed", "failed"))
        entry["success_rate"] = round(entry["runs"].get("completed", 0) / finished, 3) if finished else None
    return out


def _quantile(values: list[float], q: float) -> float:
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


async def of_member(session: AsyncSession, member_id: str) -> list[Workflow]:
    """The member's workflows (any status but deleted), by name."""
    rows = await session.execute(select(Workflow).where(Workflow.member_id == member_id).order_by(Workflow.name))
    return list(rows.scalars())
