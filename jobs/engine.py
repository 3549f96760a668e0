"""The workflow engine: runs a workflow version's steps as RQ jobs, with the database as truth.

How a run moves:
- `advance` (an RQ job) locks the run row, walks the definition against the recorded step rows
  and queues every step that can run now (one `step_job` each, recorded `queued` first so a
  step is never queued twice). Containers (`condition`, `foreach`, `parallel`) are decided here
  and their decisions recorded (the chosen branch, the items), so a resumed run never decides
  again. When nothing is left, the run completes (or fails).
- `step_job` claims its step with a lease, runs it, records the output and asks for another
  `advance`. A worker killed mid-step loses its lease; the reconciler hands the step to another
  worker. A completed step is never run again.
- `approval` and `wait` steps suspend: the step row is `waiting` with a `wake_at`, a timer job is
  put on RQ's scheduler, and no worker is held. `decide` resumes an approval (first decision
  wins); the timer or the reconciler wakes a wait, or expires an approval.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from redis import Redis
from rq import Queue
from rq.queue import EnqueueData

from jobs import loop, queues
from jobs.runtime import Runtime, current
from jobs.workflows import templates
from jobs.workflows.definition import (
    ApprovalStep,
    ConditionStep,
    ForeachStep,
    ParallelStep,
    Step,
    WorkflowDefinition,
    as_document,
)
from storage import activity, approvals
from storage import workflows as store
from storage.db import Database
from storage.models import StepRun, WorkflowRun, utcnow

log = logging.getLogger(__name__)

MAX_OUTPUT_CHARS = 64_000
DONE = ("done", "skipped")
ADVANCE_JOB = "jobs.engine.advance_job"
STEP_JOB = "jobs.engine.step_job"
WAKE_JOB = "jobs.engine.wake_job"


# ---------------------------------------------------------------------------- RQ entry points


def advance_job(run_id: str) -> str:
    return loop.run(advance(current(), run_id))


def step_job(run_id: str, path: str) -> str:
    from jobs.steps import run_step

    return loop.run(run_step(current(), run_id, path))


def wake_job(run_id: str, path: str) -> str:
    return loop.run(wake(current(), run_id, path))


# ---------------------------------------------------------------------------- enqueueing


def enqueue_advance(redis: Redis, run_id: str, job_id: str | None = None) -> None:
    _enqueue(redis, [_advance_data(run_id, job_id)])


def enqueue_step(redis: Redis, run_id: str, path: str, job_timeout: int) -> None:
    _enqueue(redis, [_step_data(run_id, path, job_timeout)])


def _advance_data(run_id: str, job_id: str | None = None) -> EnqueueData:
    return Queue.prepare_data(ADVANCE_JOB, (run_id,), job_id=job_id or f"adv-{run_id}-{uuid.uuid4().hex[:8]}",
                              result_ttl=60, timeout=120)


def _step_data(run_id: str, path: str, job_timeout: int) -> EnqueueData:
    return Queue.prepare_data(STEP_JOB, (run_id, path), job_id=f"step-{run_id}-{_job_safe(path)}-{uuid.uuid4().hex[:6]}",
                              timeout=job_timeout, result_ttl=60, failure_ttl=7 * 24 * 3600)


def _enqueue(redis: Redis, jobs: list[EnqueueData]) -> None:
    if jobs:
        queues.queue(redis, queues.WORKFLOWS).enqueue_many(jobs)


def schedule_wake(redis: Redis, run_id: str, path: str, at: datetime) -> None:
    """A timer on RQ's scheduler, rounded up to its whole seconds so it never fires early;
    the reconciler wakes the step too if Redis loses it."""
    due = math.ceil(at.timestamp())
    queues.queue(redis, queues.WORKFLOWS).enqueue_at(
        datetime.fromtimestamp(due, UTC), WAKE_JOB, run_id, path,
        job_id=f"wake-{run_id}-{_job_safe(path)}-{due}-{uuid.uuid4().hex[:6]}", result_ttl=60,
    )


def _job_safe(path: str) -> str:
    digest = hashlib.sha1(path.encode()).hexdigest()[:10]
    return digest


# ---------------------------------------------------------------------------- definitions

_DEFINITIONS: dict[tuple[str, int, int], WorkflowDefinition] = {}


def cached_version(session: Any, workflow_id: int, version: int, document: dict[str, Any]) -> WorkflowDefinition:
    """Like `load_version`, for a document the caller already read."""
    key = (_database(session), workflow_id, version)
    cached = _DEFINITIONS.get(key)
    if cached is None:
        cached = _DEFINITIONS[key] = WorkflowDefinition.model_validate(document)
    return cached


async def load_version(session: Any, workflow_id: int, version: int) -> WorkflowDefinition:
    """A workflow version, validated once per process and database: versions are immutable,
    so the cache never goes stale."""
    key = (_database(session), workflow_id, version)
    cached = _DEFINITIONS.get(key)
    if cached is None:
        cached = WorkflowDefinition.model_validate(await store.definition(session, workflow_id, version))
        if len(_DEFINITIONS) > 5000:
            _DEFINITIONS.clear()
            _SECRET_USERS.clear()
        _DEFINITIONS[key] = cached
    return cached


_SECRET_USERS: dict[int, bool] = {}


def _uses_secrets(definition: WorkflowDefinition) -> bool:
    """Does any template of the definition read `secrets`? (cached per definition object)"""
    key = id(definition)
    if key not in _SECRET_USERS:
        _SECRET_USERS[key] = "secrets." in json.dumps(as_document(definition))
    return _SECRET_USERS[key]


def _database(session: Any) -> str:
    return str(session.get_bind().url)


# ---------------------------------------------------------------------------- starting runs


async def start_run(db: Database, redis: Redis, workflow_name: str, trigger: str, run_input: dict[str, Any], slot: int | None = None) -> str | None:
    """Create a run of the workflow's active version and queue its first steps; None when
    that schedule slot already has a run."""
    async with db.session() as session:
        workflow = await store.by_name(session, workflow_name)
        if workflow is None:
            raise LookupError(f"no workflow named {workflow_name!r}")
        run_id, to_queue = await start_loaded(session, workflow, trigger, run_input, slot)
    enqueue_steps(redis, run_id, to_queue)
    return run_id


async def start_loaded(session: Any, workflow: Any, trigger: str, run_input: dict[str, Any], slot: int | None = None) -> tuple[str | None, list[tuple[str, Step]]]:
    """Create a run of an already loaded workflow inside `session`'s transaction. Its first
    advance runs right here, so the first steps are queued with the run (no extra job);
    the caller enqueues the returned steps once the transaction has committed."""
    definition = await load_version(session, workflow.id, workflow.active_version)
    values = resolve_inputs(definition, run_input)
    run_id = await store.create_run(session, workflow, trigger, values, slot)
    if run_id is None:
        return None, []
    feed = [activity.entry(
        member_id=workflow.member_id, actor_type="member", actor_id=workflow.member_id, action="run_started",
        description=f"Started {workflow.name} (v{workflow.active_version}, {trigger})", entity_type="workflow",
        entity_id=workflow.name, run_id=run_id,
    )]
    if _uses_secrets(definition):
        await activity.record_many(session, feed)
        return run_id, [("", definition.steps[0])]  # needs the secrets key: a worker advances it
    # The run was inserted by this transaction a moment ago: nothing to re-read or lock.
    fresh = WorkflowRun(id=run_id, workflow_id=workflow.id, version=workflow.active_version, status="running", input=values)
    _, to_queue = await _advance_run(session, fresh, definition, {}, templates.SecretsView({}), _QUEUE_GRACE, feed)
    await activity.record_many(session, feed)
    return run_id, to_queue


def enqueue_steps(redis: Redis, run_id: str | None, steps: list[tuple[str, Step]]) -> None:
    """Queue the steps an advance decided on; an empty path asks for a full advance instead."""
    enqueue_runs_steps(redis, [(run_id, steps)])


def enqueue_runs_steps(redis: Redis, runs: list[tuple[str | None, list[tuple[str, Step]]]], *, at_front: bool = False) -> None:
    """`enqueue_steps` for several runs in one Redis round trip (a foreach fan-out, a batch of
    schedules started together). `at_front` puts them ahead of what waits in the queue."""
    jobs = []
    for run_id, steps in runs:
        for path, step in steps:
            assert run_id is not None
            job = _step_data(run_id, path, _job_timeout(step)) if path else _advance_data(run_id)
            jobs.append(job._replace(at_front=at_front))
    _enqueue(redis, jobs)


_QUEUE_GRACE = timedelta(minutes=5)


async def publish(db: Database, redis: Redis, name: str, member: str | None, payload: dict[str, Any]) -> list[str]:
    """A platform event (`approval.decided`, `member.handoff`): start every active workflow
    whose event trigger listens for it. Returns the ids of the runs started."""
    async with db.session() as session:
        started = await publish_in(session, name, member, payload)
    enqueue_runs_steps(redis, started)
    return [run_id for run_id, _ in started if run_id]


async def publish_in(session: Any, name: str, member: str | None, payload: dict[str, Any]) -> list[tuple[str | None, list[tuple[str, Step]]]]:
    """`publish` inside the caller's transaction, so that the runs an event starts commit with
    whatever caused it (a handoff step's record): the caller enqueues the returned steps."""
    from jobs.workflows.definition import EventTrigger

    started = []
    for workflow, document in await store.active_definitions(session):
        definition = cached_version(session, workflow.id, workflow.active_version, document)
        trigger = definition.trigger
        if not (isinstance(trigger, EventTrigger) and trigger.event.name == name and trigger.event.member in (None, member)):
            continue
        declared = {i.name for i in definition.inputs}
        try:
            started.append(await start_loaded(session, workflow, "event", {k: v for k, v in payload.items() if not declared or k in declared}))
        except InputError as exc:  # raised before anything is written for this workflow
            log.warning("event %s not delivered to %s: %s", name, workflow.name, exc, extra={"workflow": workflow.name})
    return started


class InputError(ValueError):
    """A run's input does not match the workflow's declared inputs."""


def resolve_inputs(definition: WorkflowDefinition, given: dict[str, Any]) -> dict[str, Any]:
    """Declared inputs with defaults applied and text values converted to their types."""
    declared = {i.name: i for i in definition.inputs}
    unknown = sorted(set(given) - set(declared))
    if unknown and declared:
        raise InputError(f"unknown input {unknown[0]!r} (inputs: {', '.join(declared)})")
    values = dict(given)
    for name, spec in declared.items():
        if name not in values:
            if spec.required and spec.default is None:
                raise InputError(f"input {name!r} is required")
            values[name] = spec.default
            continue
        values[name] = _convert(name, spec.type, values[name])
    return values


def _convert(name: str, kind: str, value: Any) -> Any:
    if not isinstance(value, str) or kind == "string":
        return value
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
        if kind == "boolean":
            if value.lower() in ("true", "yes", "1"):
                return True
            if value.lower() in ("false", "no", "0"):
                return False
            raise ValueError(value)
        if kind in ("list", "object"):
            return json.loads(value)
    except (ValueError, json.JSONDecodeError):
        raise InputError(f"input {name!r}: expected {kind}, got {value!r}") from None
    return value


# ---------------------------------------------------------------------------- walking a run


@dataclass
class Walk:
    """What one pass over the definition found."""

    runnable: list[tuple[str, Step]] = field(default_factory=list)
    new_rows: list[tuple[str, str, Any]] = field(default_factory=list)  # (path, status, output)
    finished_rows: list[tuple[str, Any]] = field(default_factory=list)  # containers now done
    contexts: dict[str, dict[str, Any]] = field(default_factory=dict)  # template context per open leaf
    failed: str | None = None
    waiting: bool = False
    output: Any = None


def run_context(run: WorkflowRun, secrets: templates.SecretsView) -> dict[str, Any]:
    return {"inputs": dict(run.input or {}), "steps": {}, "secrets": secrets, "run": {"id": run.id}}


def step_view(step: Step, row: StepRun | None, output: Any = None, status: str | None = None) -> dict[str, Any]:
    """What `steps.<id>` shows templates: its output; approvals also their decision fields."""
    value = row.output if row is not None else output
    view: dict[str, Any] = {"output": value, "status": row.status if row is not None else status}
    if isinstance(step, ApprovalStep):
        decision = value if isinstance(value, dict) else {}
        view.update({k: decision.get(k) for k in ("decision", "approved", "by", "at", "reason", "content")})
        view["output"] = decision.get("content")
    if row is not None and row.error:
        view["error"] = row.error
    return view


def walk(steps: list[Step], prefix: str, ctx: dict[str, Any], rows: dict[str, StepRun], plan: Walk) -> str:
    """Walk one sequence of steps; returns "done", "blocked" or "failed"."""
    for step in steps:
        path = prefix + step.id
        row = rows.get(path)
        container = isinstance(step, ConditionStep | ForeachStep | ParallelStep)
        if row is not None and row.status == "done" and container:
            pass  # walked below: the steps inside stay readable by later steps
        elif row is not None and (row.status in DONE or (row.status == "failed" and step.on_error == "continue")):
            ctx["steps"][step.id] = step_view(step, row)
            continue
        if row is not None and row.status == "failed":
            plan.failed = f"step {step.id!r} failed: {row.error}"
            return "failed"
        if row is None and step.when is not None:
            try:
                go = templates.is_truthy(templates.render(step.when, ctx, step=step.id, key="when"))
            except templates.TemplateError as exc:
                plan.failed = str(exc)
                return "failed"
            if not go:
                plan.new_rows.append((path, "skipped", None))
                ctx["steps"][step.id] = step_view(step, None, None, "skipped")
                continue
        if container:
            assert isinstance(step, ConditionStep | ForeachStep | ParallelStep)
            outcome = _walk_container(step, path, row, ctx, rows, plan)
            if outcome != "done":
                return outcome
            continue
        if row is None:
            plan.runnable.append((path, step))
        elif row.status == "waiting":
            plan.waiting = True
        plan.contexts[path] = ctx
        return "blocked"
    return "done"


def _walk_container(step: ConditionStep | ForeachStep | ParallelStep, path: str, row: StepRun | None, ctx: dict[str, Any], rows: dict[str, StepRun], plan: Walk) -> str:
    already_done = row is not None and row.status == "done"
    try:
        decided = row.output if row is not None else _decide(step, ctx)
    except templates.TemplateError as exc:
        plan.failed = str(exc)
        return "failed"
    except ValueError as exc:
        plan.failed = f"step {step.id!r}: {exc}"
        return "failed"
    if row is None:
        plan.new_rows.append((path, "running", decided))
    if isinstance(step, ConditionStep):
        branch = decided["branch"]
        chosen = step.condition.then if branch == "then" else step.condition.else_
        outcome = walk(chosen, f"{path}/{branch}/", ctx, rows, plan)
        if outcome == "done":
            last = ctx["steps"].get(chosen[-1].id, {}).get("output") if chosen else None
            if not already_done:
                plan.finished_rows.append((path, {**decided, "result": last}))
            ctx["steps"][step.id] = {"output": last, "branch": branch, "status": "done"}
        return outcome
    if isinstance(step, ForeachStep):
        sequences = [(f"{path}[{i}]/", step.steps, {step.as_: item, "loop": {"index": i}}) for i, item in enumerate(decided["items"])]
        limit = step.concurrency
    else:
        sequences = [(f"{path}/{i}/", branch, {}) for i, branch in enumerate(step.parallel)]
        limit = len(sequences)
    results: list[Any] = []
    finished_contexts: list[dict[str, Any]] = []
    active = 0
    open_sequences = 0
    for seq_prefix, seq_steps, extra in sequences:
        started = any(p.startswith(seq_prefix) for p in rows)
        if not started and active >= limit:
            open_sequences += 1
            results.append(None)
            continue
        seq_ctx = {**ctx, **extra, "steps": dict(ctx["steps"])}
        outcome = walk(seq_steps, seq_prefix, seq_ctx, rows, plan)
        if outcome == "failed":
            return "failed"
        if outcome == "blocked":
            active += 1
            open_sequences += 1
        results.append(seq_ctx["steps"].get(seq_steps[-1].id, {}).get("output"))
        finished_contexts.append(seq_ctx)
    if open_sequences:
        return "blocked"
    if not already_done:
        plan.finished_rows.append((path, {**decided, "results": results}))
    if isinstance(step, ParallelStep):  # each branch step exists once: later steps may read it
        for seq_ctx in finished_contexts:
            ctx["steps"].update(seq_ctx["steps"])
    ctx["steps"][step.id] = {"output": results, "status": "done"}
    return "done"


def _decide(step: ConditionStep | ForeachStep | ParallelStep, ctx: dict[str, Any]) -> dict[str, Any]:
    if isinstance(step, ConditionStep):
        value = templates.render(step.condition.if_, ctx, step=step.id, key="condition.if")
        return {"branch": "then" if templates.is_truthy(value) else "else"}
    if isinstance(step, ForeachStep):
        items = templates.render(step.foreach, ctx, step=step.id, key="foreach")
        if not isinstance(items, list):
            raise ValueError(f"foreach: expected a list, got {type(items).__name__}")
        return {"items": items}
    return {}


# ---------------------------------------------------------------------------- advancing


async def advance(rt: Runtime, run_id: str) -> str:
    """Queue whatever can run now; finish the run when nothing is left."""
    async with rt.db.session() as session:
        outcome, to_queue = await advance_in(session, run_id, rt.loaded.config.secrets_key, _grace(rt))
    assert rt.redis is not None
    enqueue_steps(rt.redis, run_id, to_queue)
    return f"{outcome}; queued {len(to_queue)}"


def _grace(rt: Runtime) -> timedelta:
    return timedelta(seconds=rt.loaded.config.workers.step_lease * 10)


async def advance_in(session: Any, run_id: str, secrets_key: str | None, grace: timedelta,
                     feed: list[dict[str, Any]] | None = None) -> tuple[str, list[tuple[str, Step]]]:
    """The advance inside the caller's transaction (the run row stays locked until it ends);
    returns the outcome and the steps to enqueue once the transaction has committed. `feed`:
    the caller's activity rows (`activity.entry`), written with the advance's own in one
    statement."""
    feed = list(feed or [])
    run = await store.run(session, run_id, lock=True)
    if run is None or run.status in store.FINISHED_RUN:
        await activity.record_many(session, feed)
        return ("no such run" if run is None else f"run {run.status}"), []
    definition = await load_version(session, run.workflow_id, run.version)
    rows = await store.steps(session, run_id)
    secrets = templates.SecretsView(await _secret_values(session, secrets_key))
    outcome = await _advance_run(session, run, definition, rows, secrets, grace, feed)
    await activity.record_many(session, feed)
    return outcome


async def _advance_run(session: Any, run: WorkflowRun, definition: WorkflowDefinition, rows: dict[str, StepRun],
                       secrets: templates.SecretsView, grace: timedelta,
                       feed: list[dict[str, Any]]) -> tuple[str, list[tuple[str, Step]]]:
    """Walk the definition against `rows` and record what that decided (see `advance_in`);
    its activity rows go to `feed`, for the caller to write."""
    run_id = run.id
    to_queue: list[tuple[str, Step]] = []
    plan = Walk()
    ctx = run_context(run, secrets)
    outcome = walk(definition.steps, "", ctx, rows, plan)
    for path, status, output in plan.new_rows:
        await store.add_step(session, run_id, path, status, output=_jsonable(output), finished_at=utcnow() if status == "skipped" else None)
    for path, output in plan.finished_rows:
        await store.update_step(session, run_id, path, status="done", output=_jsonable(output), finished_at=utcnow())
    lease = utcnow() + grace
    for path, step in plan.runnable:
        if await store.add_step(session, run_id, path, "queued", lease_until=lease):
            to_queue.append((path, step))
    if outcome == "done":
        last = ctx["steps"].get(definition.steps[-1].id, {}).get("output")
        if await store.finish_run(session, run_id, "completed", output=_jsonable({"result": last})):
            feed.append(activity.entry(member_id=definition.member, actor_type="member", actor_id=definition.member,
                                       action="run_completed", description=f"Completed {definition.name}", entity_type="workflow",
                                       entity_id=definition.name, run_id=run_id))
    elif outcome == "failed":
        if await store.finish_run(session, run_id, "failed", error=plan.failed):
            feed.append(activity.entry(member_id=definition.member, actor_type="member", actor_id=definition.member,
                                       action="run_failed", description=f"{definition.name} failed: {plan.failed}",
                                       entity_type="workflow", entity_id=definition.name, run_id=run_id))
    else:
        finished = {path for path, _ in plan.finished_rows}  # `rows` were read before they were finished
        busy = any(r.status in ("queued", "running", "retrying") for p, r in rows.items() if p not in finished) or to_queue
        status = "waiting" if plan.waiting and not busy else "running"
        if status != run.status:
            await store.set_run_status(session, run_id, status)
    return outcome, to_queue


def _job_timeout(step: Step) -> int:
    limit = step.timeout_delta
    return int(limit.total_seconds()) + 30 if limit is not None else 600


def _jsonable(value: Any) -> Any:
    """Outputs are stored as JSON, bounded in size: a huge output is cut with a note."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    if len(text) <= MAX_OUTPUT_CHARS:
        return json.loads(text)
    return {"truncated": True, "note": f"output was {len(text)} characters; kept the first {MAX_OUTPUT_CHARS}", "preview": text[:MAX_OUTPUT_CHARS]}


async def _secrets(rt: Runtime, session: Any) -> dict[str, str]:
    return await _secret_values(session, rt.loaded.config.secrets_key)


async def _secret_values(session: Any, key: str | None) -> dict[str, str]:
    from storage import secrets as secret_store

    return await secret_store.all_values(session, key) if key else {}


# ---------------------------------------------------------------------------- waking and deciding


async def wake(rt: Runtime, run_id: str, path: str) -> str:
    """A timer fired: finish a wait, expire an approval, or retry a failed attempt."""
    async with rt.db.session() as session:
        row = (await store.steps(session, run_id)).get(path)
        if row is None or row.wake_at is None:
            return "nothing to wake"
        due = row.wake_at
        if due > datetime.now(UTC):
            # RQ's scheduler keeps whole seconds: a timer may fire a little early. Wait on.
            assert rt.redis is not None
            schedule_wake(rt.redis, run_id, path, due)
            return "not due yet"
        approval_id = (row.input or {}).get("approval_id")
        if row.status == "retrying":
            if not await store.update_step(session, run_id, path, where_status=("retrying",), status="queued", wake_at=None):
                return "already requeued"
            action = "retry"
        elif row.status == "waiting" and approval_id:
            action = "expire"
        elif row.status == "waiting":
            if not await store.update_step(session, run_id, path, where_status=("waiting",), status="done", finished_at=utcnow(), wake_at=None):
                return "already woken"
            action = "advance"
        else:
            return f"step {row.status}"
    assert rt.redis is not None
    if action == "retry":
        enqueue_step(rt.redis, run_id, path, 600)
        return "retry queued"
    if action == "expire":
        await expire_approval(rt, str(approval_id))
        return "approval expired"
    enqueue_advance(rt.redis, run_id)
    return "woken"


@dataclass(frozen=True)
class Decision:
    decision: str  # approved | rejected | expired | cancelled
    by: str | None = None
    reason: str | None = None
    content: str | None = None


async def decide(rt: Runtime, approval_id: str, decision: Decision) -> bool:
    """Record a decision on a pending approval and resume its run. The first decision wins:
    a later (or concurrent) one changes nothing and returns False."""
    async with rt.db.session() as session:
        row = await approvals.decide(session, approval_id, decision.decision, decision.by, decision.reason)
        if row is None:
            return False
        output = {
            "decision": decision.decision,
            "approved": decision.decision == "approved",
            "by": decision.by,
            "at": utcnow().isoformat(),
            "reason": decision.reason,
            "content": decision.content if decision.content is not None else row.content,
        }
        assert row.run_id is not None and row.step_path is not None
        await store.update_step(session, row.run_id, row.step_path, where_status=("waiting",), status="done",
                                output=output, finished_at=utcnow(), wake_at=None)
        await activity.record(session, member_id=row.member_id, actor_type="person" if decision.by else "system",
                              actor_id=decision.by or "system", action=f"approval_{decision.decision}",
                              description=f"{decision.decision.capitalize()}: {row.title}", entity_type="approval",
                              entity_id=approval_id, run_id=row.run_id)
        run_id = row.run_id
        member_id = row.member_id
    assert rt.redis is not None
    enqueue_advance(rt.redis, run_id, job_id=f"resume-{approval_id}")
    await publish(rt.db, rt.redis, "approval.decided", member_id,
                  {"approval_id": approval_id, "decision": decision.decision, "run_id": run_id, "by": decision.by})
    return True


async def expire_approval(rt: Runtime, approval_id: str) -> bool:
    """The approval's time is up: follow its `on_timeout` (skip, abort or escalate)."""
    async with rt.db.session() as session:
        row = await approvals.get(session, approval_id)
        if row is None or row.status != "pending" or row.run_id is None or row.step_path is None:
            return False
        run = await store.run(session, row.run_id)
        assert run is not None
        definition = WorkflowDefinition.model_validate(await store.definition(session, run.workflow_id, run.version))
        step = find_step(definition, row.step_path)
        assert isinstance(step, ApprovalStep)
        policy = step.approval.on_timeout
        if policy == "escalate" and step.approval.escalate_to and step.approval.escalate_to not in (row.approvers or []):
            timeout = step.approval.timeout_delta or timedelta(days=7)
            wake_at = utcnow() + timeout
            await approvals.escalate(session, approval_id, step.approval.escalate_to, wake_at)
            await store.update_step(session, row.run_id, row.step_path, wake_at=wake_at)
            run_id, path = row.run_id, row.step_path
        else:
            run_id, path = "", ""
    if run_id:
        assert rt.redis is not None
        schedule_wake(rt.redis, run_id, path, wake_at)
        return True
    decided = await decide(rt, approval_id, Decision("expired", reason="timed out"))
    if decided and policy == "abort":
        async with rt.db.session() as session:
            await store.update_step(session, row.run_id, row.step_path, status="failed", error="approval timed out")
    return decided


def find_step(definition: WorkflowDefinition, path: str) -> Step:
    """The step a path points at (`remind[3]/draft` -> draft): ids are unique per workflow."""
    from jobs.workflows.definition import iter_steps

    wanted = path.rsplit("/", 1)[-1].split("[")[0]
    for _, step in iter_steps(definition):
        if step.id == wanted:
            return step
    raise LookupError(f"no step {wanted!r} in {definition.name}")


# ---------------------------------------------------------------------------- reconciling


async def reconcile(rt: Runtime) -> int:
    """Repair what a crash or a Redis loss left behind: steps of dead workers go to others,
    queued steps whose job vanished are queued again, due timers fire, and runs whose next
    advance was lost advance. Every repair is idempotent (claims and unique rows)."""
    assert rt.redis is not None
    fixed = 0
    async with rt.db.session() as session:
        stale = await store.expired_steps(session)
        stalled = await store.stalled_runs(session, _grace(rt))
    grace = _grace(rt)
    for row in stale:
        if row.status in ("running", "queued"):
            async with rt.db.session() as session:
                requeue = await store.update_step(
                    session, row.run_id, row.step_path, where_status=(row.status,), status="queued", lease_until=utcnow() + grace
                )
            if requeue:
                fixed += 1
                enqueue_step(rt.redis, row.run_id, row.step_path, 600)
        else:
            fixed += 1
            await wake(rt, row.run_id, row.step_path)
    for run_id in stalled:
        enqueue_advance(rt.redis, run_id)
    return fixed + len(stalled)

