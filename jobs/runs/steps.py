"""Running one step of a run: claim it, run its kind under its timeout, record the outcome.

`run_step` claims the step with a lease that a heartbeat renews while it runs; a step whose
lease is lost (another worker took it after a stall, or the database stopped answering for a
whole lease) is cancelled, so a step never runs in two workers at once. The outcome is done,
waiting (approval, wait), retrying (with backoff on RQ's scheduler), or failed and then
`on_error`; each is recorded together with the run's next advance, in one transaction."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from jobs.feed import facts
from jobs.runs import approvals, kinds, progress, queueing, secrets
from jobs.runs.advance import FINISHING, advance_in, stored
from jobs.runs.definitions import find_step, load_version
from jobs.runs.settings import lease as lease_of
from jobs.runs.settings import settings
from jobs.runs.walk import Walk, run_context, walk
from jobs.runtime import Runtime
from jobs.spend.caps import HELD
from jobs.workflows import templates
from jobs.workflows.definition import Step, WorkflowDefinition
from storage import activity
from storage import workflows as store
from storage.models import utcnow

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """The step's lease went to another worker (or could not be renewed in time)."""


async def run_step(rt: Runtime, run_id: str, path: str) -> str:
    lease = lease_of(rt)
    config = settings(rt)
    async with rt.db.session() as session:
        run = await store.run(session, run_id)
        if run is None or run.status in store.FINISHED_RUN:
            return "run finished"
        definition = await load_version(session, run.workflow_id, run.version)
        rows = await store.steps(session, run_id)
        plan = Walk(max_foreach_items=config.max_foreach_items)
        walk(definition.steps, "", run_context(run, secrets.refusing()), rows, plan)
        ctx = plan.contexts.get(path)
        step = find_step(definition, path)
        # Only a tool step's args read secrets, and only this step's: decrypted on first read.
        secret_view = await secrets.view_for(session, step, config.secrets_key)
        attempt = await store.claim_step(session, run_id, path, utcnow() + lease)
    if attempt is None:
        return "step taken or finished"
    if ctx is None:
        raise LookupError(f"step {path} is not open in run {run_id}")
    origin = run.origin  # read with the run above: following its progress costs no query
    progress.note(rt.redis, run_id, origin)  # the step is running now
    ctx = {**ctx, "secrets": secret_view}
    extra = {"run_id": run_id, "workflow": definition.name, "member": definition.member}
    outcome: Any
    try:
        async with _heartbeat(rt, run_id, path, attempt, lease):
            limit = step.timeout_delta
            work = kinds.execute(rt, definition, run_id, path, step, ctx, attempt)
            outcome = await (asyncio.wait_for(work, limit.total_seconds()) if limit else work)
    except LeaseLost:
        log.warning("step %s lost its lease: stopped, another worker has it", path, extra=extra)
        return "lease lost"
    except (templates.TemplateError, kinds.StepFailure) as exc:
        return await _failed(rt, definition, run_id, path, step, secret_view.redact(str(exc)), attempt, retryable=False, origin=origin)
    except TimeoutError:
        return await _failed(rt, definition, run_id, path, step, f"timed out after {step.timeout}", attempt, retryable=True, origin=origin)
    except Exception as exc:  # noqa: BLE001 - any failure of a step follows its retry/on_error
        error = secret_view.redact(f"{type(exc).__name__}: {exc}")
        log.warning("step %s failed: %s", path, error, extra=extra)
        return await _failed(rt, definition, run_id, path, step, error, attempt, retryable=True, origin=origin)
    assert rt.redis is not None
    if isinstance(outcome, kinds.Suspend):
        # A held effect step (its member's cap is reached) says why in its `error`; its timer
        # runs it again (`timers.wake`) instead of finishing it like a wait. Being held is not
        # an attempt at the effect: it does not use up the step's retries.
        state = {"approval_id": outcome.approval_id} if outcome.approval_id else {HELD: outcome.held_by} if outcome.held else None
        async with rt.db.session() as session:
            await store.update_step(session, run_id, path, where_status=("running",), where_attempt=attempt, status="waiting",
                                    wake_at=outcome.wake_at, lease_until=None, input=state, error=outcome.held,
                                    **({"attempt": attempt - 1} if outcome.held else {}))
            _, to_queue = await advance_in(session, run_id, config)
        if outcome.held:
            log.info("step %s %s", path, outcome.held, extra=extra)
        if outcome.wake_at is not None:
            queueing.schedule_wake(rt.redis, run_id, path, outcome.wake_at)
        queueing.enqueue_steps(rt.redis, run_id, to_queue)
        progress.note(rt.redis, run_id, origin)  # waiting (for approval)
        if outcome.approval_id and await approvals.settle(rt, outcome.approval_id):
            return "decided while it was being asked"
        return "waiting"
    output = templates.redact_value(outcome, secret_view.used_values())
    async with rt.db.session() as session:
        done = await store.update_step(session, run_id, path, where_status=("running",), where_attempt=attempt, status="done",
                                       output=stored(output), finished_at=utcnow(), lease_until=None, error=None)
        feed = [activity.entry(member_id=definition.member, actor_type="member", actor_id=definition.member,
                               action="step_done", description=f"{definition.name}: {path} done", entity_type="step",
                               entity_id=path, run_id=run_id, details=facts.of_step(step, ctx.get("item"), output))] if done else []
        # The next advance runs in this transaction (no extra job per step), and writes `feed`.
        advanced, to_queue = await advance_in(session, run_id, config, feed)
    queueing.enqueue_steps(rt.redis, run_id, to_queue)
    progress.note(rt.redis, run_id, origin, finished=advanced in FINISHING)
    return "done"


async def _failed(rt: Runtime, definition: WorkflowDefinition, run_id: str, path: str, step: Step, error: str, attempt: int, *, retryable: bool,
                  origin: dict[str, Any] | None = None) -> str:
    """Retry with backoff while attempts remain; then follow `on_error`."""
    assert rt.redis is not None
    policy = step.retry
    if retryable and policy is not None and attempt <= policy.max:
        wake_at = utcnow() + policy.delay(attempt)
        async with rt.db.session() as session:
            await store.update_step(session, run_id, path, where_status=("running",), where_attempt=attempt, status="retrying", error=error,
                                    wake_at=wake_at, lease_until=None)
        queueing.schedule_wake(rt.redis, run_id, path, wake_at)
        progress.note(rt.redis, run_id, origin)
        return f"retrying at {wake_at:%H:%M:%S}"
    status = "skipped" if step.on_error == "skip" else "failed"
    async with rt.db.session() as session:
        await store.update_step(session, run_id, path, where_status=("running",), where_attempt=attempt, status=status, error=error,
                                finished_at=utcnow(), lease_until=None)
        feed = [activity.entry(member_id=definition.member, actor_type="member", actor_id=definition.member,
                               action="step_failed", description=f"{definition.name}: {path} failed: {error}",
                               entity_type="step", entity_id=path, run_id=run_id)]
        advanced, to_queue = await advance_in(session, run_id, settings(rt), feed)
    queueing.enqueue_steps(rt.redis, run_id, to_queue)
    progress.note(rt.redis, run_id, origin, finished=advanced in FINISHING)
    return f"{status}: {error}"


@dataclass
class _Lease:
    lost: bool = False


@contextlib.asynccontextmanager
async def _heartbeat(rt: Runtime, run_id: str, path: str, attempt: int, lease: Any) -> AsyncIterator[None]:
    """Keep the lease while the step runs. When the row is no longer ours (another worker
    claimed it after our lease ran out: it is `running` again, but as a later attempt) or
    could not be renewed before the lease ran out, the step's work is cancelled and
    `LeaseLost` raised: the other worker's attempt is the one."""
    state = _Lease()
    worker = asyncio.current_task()
    assert worker is not None
    seconds = lease.total_seconds()

    async def renew() -> None:
        renewed = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(seconds / 3)
            try:
                async with rt.db.session() as session:
                    mine = await store.update_step(session, run_id, path, where_status=("running",), where_attempt=attempt,
                                                   lease_until=utcnow() + lease)
            except Exception:  # noqa: BLE001 - the database may come back before the lease runs out
                log.info("heartbeat of %s not recorded", path, exc_info=True)
                if asyncio.get_running_loop().time() - renewed < seconds * 0.9:
                    continue
                mine = False
            if not mine:
                state.lost = True
                worker.cancel()
                return
            renewed = asyncio.get_running_loop().time()

    task = asyncio.create_task(renew())
    try:
        yield
    except asyncio.CancelledError:
        if state.lost:
            worker.uncancel()  # our own cancel, turned into LeaseLost: the job itself goes on
            raise LeaseLost(path) from None
        raise
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
