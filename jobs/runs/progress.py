"""A run's live progress: one message in its origin thread, updated as its steps change.

Invariants a reader must not break:
- Never on a step's critical path. The engine only *notes* a change after its own transaction
  has committed (`note`, a Redis SET and at most one enqueue, every error caught and logged);
  the message is rendered and sent later by a job (`refresh`) that reads the run from the
  database. A failed update never fails, retries or delays a step.
- Nothing for runs nobody follows: `note` looks only at the origin the caller already holds;
  a run without an origin conversation (CLI, webhook) costs nothing until it finishes, and then
  one job only if its origin names a person to tell (`jobs.runs.outcomes`).
- Coalesced, last state wins: a change sets `due:<run>` (SET NX, with a TTL) and only the
  change that set it enqueues a job, `DELAY` seconds later; the job clears `due` *before* it
  reads the database, so a change committed after that read schedules the next job, and one
  committed before it is in what the job reads. At most one job per run works at a time
  (`lock:<run>`); a job that finds the lock taken asks for another one instead of waiting.
- Posted once: the message's ref is kept in the effect row `progress-<run id>`, written before
  the first post (a crash between the post and its record is reconciled with `find_effect`);
  afterwards the message is only updated (`Channel.update`), paced per channel with the posts.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import timedelta
from typing import Any

from redis import Redis
from rq import Retry

from agents.channels import ChannelError
from agents.messages import Card, MessageRef, Task, TaskStatus, task_lines
from jobs import queues
from jobs.runs import outcomes
from jobs.runs.definitions import load_version
from jobs.runs.origin import Origin
from jobs.runs.walk import DONE
from jobs.runtime import Runtime
from jobs.spend.caps import HELD
from jobs.workflows.definition import ApprovalStep, ForeachStep, Step, WorkflowDefinition
from storage import effects
from storage import workflows as store
from storage.models import StepRun, WorkflowRun

log = logging.getLogger(__name__)

PROGRESS_JOB = "jobs.runs.jobs.progress_job"
DELAY = 1.0  # seconds between a change and the job that shows it (RQ's scheduler: whole seconds)
DUE_TTL = 30  # a lost job blocks the next update of its run at most this long (seconds)
LOCK_TTL = 120  # longer than any one update takes (seconds)
_DUE = "teammates:progress:due:"
_LOCK = "teammates:progress:lock:"


def effect_key(run_id: str) -> str:
    """The effect row that holds the progress message's ref."""
    return f"progress-{run_id}"


def follows(origin: dict[str, Any] | None, finished: bool) -> bool:
    """Does anyone follow this run: a conversation that shows its progress, or — once it has
    finished — a person to tell the outcome? Reads only the stored origin (no I/O)."""
    if not origin:
        return False
    return bool(origin.get("conversation") or (finished and origin.get("person")))


def note(redis: Redis | None, run_id: str, origin: dict[str, Any] | None, *, finished: bool = False) -> None:
    """After a committed change of the run: schedule its progress update and outcome if anyone
    follows it (see `follows`). Never raises; costs nothing for runs nobody follows."""
    if redis is not None and follows(origin, finished):
        request(redis, run_id)


def request(redis: Redis, run_id: str, delay: float = DELAY) -> None:
    """Schedule one `refresh` of the run `delay` seconds from now, unless one is due already
    (it will read the latest state). Never raises: progress is a nicety."""
    try:
        if not redis.set(_DUE + run_id, "1", nx=True, ex=DUE_TTL + int(delay)):
            return
        try:
            queues.queue(redis, queues.WORKFLOWS).enqueue_in(
                timedelta(seconds=delay), PROGRESS_JOB, run_id, job_id=f"progress-{run_id}-{uuid.uuid4().hex[:8]}",
                result_ttl=0, failure_ttl=24 * 3600, job_timeout=LOCK_TTL - 10,
                retry=Retry(max=3, interval=[10, 60, 300]),  # only a transient failure to tell the outcome raises
            )
        except Exception:
            redis.delete(_DUE + run_id)  # the next change may try again
            raise
    except Exception:  # noqa: BLE001 - never on the critical path: log and go on
        log.warning("progress update of run %s not scheduled", run_id, exc_info=True, extra={"run_id": run_id})


async def refresh(rt: Runtime, run_id: str) -> str:
    """The job: show the run's progress in its origin conversation, and once it has finished
    tell its outcome (once). What it shows is read from the database now."""
    redis = rt.redis
    assert redis is not None
    token = uuid.uuid4().hex
    if not redis.set(_LOCK + run_id, token, nx=True, ex=LOCK_TTL):
        request(redis, run_id)  # the job at work may have read the state before this change
        return "another update is at work: asked again"
    try:
        redis.delete(_DUE + run_id)  # before reading: a change from now on schedules the next job
        async with rt.db.session() as session:
            run = await store.run(session, run_id)
            if run is None:
                return "no such run"
            definition = await load_version(session, run.workflow_id, run.version)
            rows = await store.steps(session, run_id)
        origin = Origin.from_json(run.origin)
        if origin is None:
            return "no origin"
        done: list[str] = []
        try:
            if origin.conversation:
                try:
                    done.append(await _show(rt, run, definition, rows, origin))
                except outcomes.ChannelBusy:
                    raise
                except Exception as exc:  # noqa: BLE001 - the progress message is a nicety; the outcome still goes out
                    log.warning("progress of run %s not shown: %s", run_id, exc, extra={"run_id": run_id, "member": definition.member})
                    done.append(f"progress not shown: {exc}")
            if run.status in store.FINISHED_RUN:
                done.append(await outcomes.tell(rt, run, definition, rows, origin))
        except outcomes.ChannelBusy as busy:  # a burst of posts goes out there: come back after it
            request(redis, run_id, delay=busy.seconds)
            done.append(f"channel busy: again in {busy.seconds:.0f} s")
        return "; ".join(done)
    finally:
        if redis.get(_LOCK + run_id) in (token, token.encode()):
            redis.delete(_LOCK + run_id)


async def _show(rt: Runtime, run: WorkflowRun, definition: WorkflowDefinition, rows: dict[str, StepRun], origin: Origin) -> str:
    """Post the progress message once, then update it when what it shows has changed."""
    assert origin.conversation is not None and rt.redis is not None
    platform = origin.platform or outcomes.DEFAULT_PLATFORM
    channel = rt.channels(platform, definition.member)
    card = progress_card(definition, run, rows)
    shown = hashlib.sha1(repr(card).encode()).hexdigest()[:16]
    key = effect_key(run.id)
    to = MessageRef(origin.conversation, None, origin.thread)
    async with rt.db.session() as session:
        row, inserted = await effects.begin_with(session, key, "progress", {"attempted": False})
        result = dict(row.result)
    if row.status == "done" and result.get("shown") == shown:
        return "progress unchanged"
    await outcomes.pace(rt, f"{platform}:{definition.member}:{origin.conversation}")  # shared with the run's posts there
    if row.status == "done":
        ref = MessageRef(str(result["conversation"]), str(result["message"]), result.get("thread"))
        await channel.update(ref, card)
        async with rt.db.session() as session:
            await effects.finish(session, key, {**result, "shown": shown})
        return "progress updated"
    found = await channel.find_effect(to, key) if result.get("attempted") and not inserted else None
    if found is None:
        async with rt.db.session() as session:
            await effects.remember_intent(session, key, {"attempted": True})
        try:
            found = await channel.send_card(to, card, effect_id=key)
        except ChannelError:
            async with rt.db.session() as session:  # it did not land: the next job posts it
                await effects.remember_intent(session, key, {"attempted": False})
            raise
    else:
        await channel.update(found, card)  # it landed before a crash: bring it up to date
    async with rt.db.session() as session:
        await effects.finish(session, key, {"conversation": found.conversation, "message": found.message,
                                            "thread": origin.thread, "shown": shown})
    return "progress posted"


# ---------------------------------------------------------------------------- what it shows


def progress_card(definition: WorkflowDefinition, run: WorkflowRun, rows: dict[str, StepRun]) -> Card:
    """The message: the workflow's name, one task per top-level step, and how the run stands."""
    tasks = tuple(step_task(step, rows) for step in definition.steps)
    complete = sum(t.status == "complete" for t in tasks)
    standing = {"completed": "Finished", "failed": f"Failed: {run.error or 'unknown error'}", "cancelled": run.error or "Cancelled",
                "skipped": "Skipped"}.get(run.status) or ("Waiting" if run.status == "waiting" else "Running")
    status = f"{standing} · {complete}/{len(tasks)} steps done"
    # `text` is the whole of it as plain lines: what notifications and block-less surfaces show
    text = "\n".join([f"{definition.name}: {status}", *task_lines(tasks)])[:3000]
    return Card(text=text, title=definition.name, tasks=tasks, status=status)


def step_task(step: Step, rows: dict[str, StepRun]) -> Task:
    """One top-level step as a task: its status, and what is worth a glance (a foreach's
    `3/5 done`, an approval waiting, a retry's or a failure's reason, why it was skipped)."""
    row = rows.get(step.id)
    status = _status(row)
    details = ""
    if isinstance(step, ForeachStep) and row is not None and isinstance(row.output, dict):
        total = len(row.output.get("items") or [])
        finished = sum(_item_done(step, i, rows) for i in range(total))
        details = f"{finished}/{total} done"
        waiting = _waiting_inside(step.id, rows)
        if waiting and status != "complete":
            details += f", {waiting} waiting for approval"
        held = [r for path, r in rows.items() if path.startswith((f"{step.id}[", f"{step.id}/")) and _held(r)]
        if held and status != "complete":
            details += f", {len(held)} {held[0].error}"
    elif row is not None and _held(row):
        details = str(row.error)
    elif row is not None and row.status == "waiting":
        details = "waiting for approval" if isinstance(step, ApprovalStep) else "waiting"
    elif isinstance(step, ApprovalStep) and row is not None and row.status == "done" and isinstance(row.output, dict):
        decision = row.output.get("decision")
        details = str(decision) if decision and decision != "approved" else "approved"
    elif row is not None and row.status == "retrying":
        details = f"retrying: {row.error}" if row.error else "retrying"
    elif row is not None and row.status in ("failed", "cancelled") and row.error:
        details = row.error
    elif row is not None and row.status == "skipped":
        details = f"skipped: {row.error}" if row.error else "skipped"
    elif _waiting_inside(step.id, rows):
        details = "waiting for approval"
    return Task(id=step.id, title=outcomes.words(step.id), status=status, details=details[:300])


def _status(row: StepRun | None) -> TaskStatus:
    if row is None:
        return "pending"
    if row.status in DONE:
        return "complete"
    if row.status in ("failed", "cancelled"):
        return "error"
    return "in_progress"  # queued, running, retrying, waiting


def _item_done(step: ForeachStep, index: int, rows: dict[str, StepRun]) -> bool:
    """An item is done when its last step has a finished row (a rejected approval's item has
    the rest of its steps recorded `skipped`)."""
    row = rows.get(f"{step.id}[{index}]/{step.steps[-1].id}")
    return row is not None and row.status in (*DONE, "failed")


def _held(row: StepRun) -> bool:
    """An effect step held by its member's cap (`jobs.spend.caps`): its error says why."""
    return row.status == "waiting" and isinstance(row.input, dict) and bool(row.input.get(HELD)) and bool(row.error)


def _waiting_inside(step_id: str, rows: dict[str, StepRun]) -> int:
    """Approvals waiting inside a container step (paths under `step_id[`, `step_id/`)."""
    return sum(1 for path, r in rows.items() if path.startswith((f"{step_id}[", f"{step_id}/")) and r.status == "waiting"
               and isinstance(r.input, dict) and r.input.get("approval_id"))
