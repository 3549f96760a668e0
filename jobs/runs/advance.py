"""Advancing a run: lock its row, walk it, record what the walk decided.

An advance runs inside the caller's transaction (a step's own, a start's, or its own job's),
and returns the steps to enqueue once that transaction has committed: a step is recorded
`queued` before its job exists, never the other way round."""

from __future__ import annotations

import json
from typing import Any

from redis import Redis

from jobs.runs import progress, queueing, secrets
from jobs.runs.definitions import load_version
from jobs.runs.settings import RunSettings
from jobs.runs.walk import Walk, run_context, walk
from jobs.workflows import templates
from jobs.workflows.definition import Step, WorkflowDefinition
from storage import activity
from storage import workflows as store
from storage.db import Database
from storage.models import StepRun, WorkflowRun, utcnow

Queued = list[tuple[str, Step]]


async def advance(db: Database, redis: Redis, run_id: str, settings: RunSettings) -> str:
    """Queue whatever can run now; finish the run when nothing is left. A walk never reads
    secrets (only a tool step's args may, when that step runs), so the run's lock (on SQLite:
    the database's write lock) is never held while decrypting."""
    origin: list[dict[str, Any] | None] = []
    async with db.session() as session:
        outcome, to_queue = await advance_in(session, run_id, settings, origin_out=origin)
    queueing.enqueue_steps(redis, run_id, to_queue)
    if origin:  # after the commit: whoever follows the run sees this advance (no-op when nobody does)
        progress.note(redis, run_id, origin[0], finished=outcome in FINISHING)
    return f"{outcome}; queued {len(to_queue)}"


FINISHING = ("done", "failed")
"""Outcomes of `advance_in` that finish the run (`run completed`/`run failed`: it already was)."""


async def advance_in(session: Any, run_id: str, settings: RunSettings,
                     feed: list[dict[str, Any]] | None = None, *,
                     origin_out: list[dict[str, Any] | None] | None = None) -> tuple[str, Queued]:
    """The advance inside the caller's transaction (the run row stays locked until it ends);
    returns the outcome and the steps to enqueue once the transaction has committed. `feed`:
    the caller's activity rows (`activity.entry`), written with the advance's own in one
    statement. `origin_out`, if given, receives the run's stored origin (for `progress.note`
    once the transaction has committed) when the run was still open."""
    feed = list(feed or [])
    run = await store.run(session, run_id, lock=True)
    if run is None or run.status in store.FINISHED_RUN:
        await activity.record_many(session, feed)
        return ("no such run" if run is None else f"run {run.status}"), []
    if origin_out is not None:
        origin_out.append(run.origin)
    definition = await load_version(session, run.workflow_id, run.version)
    rows = await store.steps(session, run_id)
    # A walk never reads secrets (only tool step args may): it never touches the secrets table.
    outcome = await advance_run(session, run, definition, rows, secrets.refusing(), settings, feed)
    await activity.record_many(session, feed)
    return outcome


async def advance_run(session: Any, run: WorkflowRun, definition: WorkflowDefinition, rows: dict[str, StepRun],
                      secret_view: templates.SecretsView, settings: RunSettings,
                      feed: list[dict[str, Any]]) -> tuple[str, Queued]:
    """Walk the definition against `rows` and record what that decided (see `advance_in`);
    its activity rows go to `feed`, for the caller to write."""
    run_id = run.id
    to_queue: Queued = []
    plan = Walk(max_foreach_items=settings.max_foreach_items)
    ctx = run_context(run, secret_view)
    outcome = walk(definition.steps, "", ctx, rows, plan)
    for path, status, output in plan.new_rows:
        await store.add_step(session, run_id, path, status, output=stored(output), finished_at=utcnow() if status == "skipped" else None)
    for path, output in plan.finished_rows:
        await store.update_step(session, run_id, path, status="done", output=stored(output), finished_at=utcnow())
    lease = utcnow() + settings.grace
    for path, step in plan.runnable:
        if await store.add_step(session, run_id, path, "queued", lease_until=lease):
            to_queue.append((path, step))
    if outcome == "done":
        last = ctx["steps"].get(definition.steps[-1].id, {}).get("output")
        if await store.finish_run(session, run_id, "completed", output=stored({"result": last})):
            feed.append(activity.entry(member_id=definition.member, actor_type="member", actor_id=definition.member,
                                       action="run_completed", description=f"Completed {definition.name}", entity_type="workflow",
                                       entity_id=definition.name, run_id=run_id))
    elif outcome == "failed":
        if await store.finish_run(session, run_id, "failed", error=plan.failed):
            feed.append(activity.entry(member_id=definition.member, actor_type="member", actor_id=definition.member,
                                       action="run_failed", description=f"{definition.name} failed: {plan.failed}",
                                       entity_type="workflow", entity_id=definition.name, run_id=run_id))
    else:
        # Only leaf steps are work in flight: a foreach's or parallel's own row stays `running`
        # until it is done, so a run whose open items all wait (approvals, held effects) waits.
        status = "waiting" if plan.waiting and not (plan.busy or to_queue) else "running"
        if status != run.status:
            await store.set_run_status(session, run_id, status)
    return outcome, to_queue


def stored(value: Any) -> Any:
    """A value as it is stored in a JSON column: whole, whatever its size (only what is shown
    to people is shortened). What a container decided is read back from here, so cutting it
    would break the run."""
    return json.loads(json.dumps(value, default=str, ensure_ascii=False))
