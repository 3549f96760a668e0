"""Recurring triggers on RQ's own scheduler, with the database as the source of truth.

Every active schedule always has its next slot queued as `enqueue_at(..., job_id=
"wf-<workflow id>-<slot epoch>", unique=True)`. The run row is unique on (workflow, slot), so a
duplicate job, two reconcilers or a late catch-up can never start a slot twice. The reconciler
(`reconcile`, harmless when several run) re-creates whatever Redis lost, runs a missed slot
once when it is within the workflow's `catch_up` window, and records older ones as skipped.

Cron is evaluated in the schedule's IANA time zone (croniter + zoneinfo), so "0 9 * * *" is
09:00 on the wall clock on both sides of a DST change."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from redis import Redis
from rq.exceptions import DuplicateJobError
from rq.registry import ScheduledJobRegistry

from jobs import loop, pauses, queues
from jobs.runs import queueing
from jobs.runs.definitions import cached_version
from jobs.runs.origin import Origin, Via
from jobs.runs.settings import RunSettings
from jobs.runs.settings import settings as run_settings
from jobs.runs.start import start_loaded
from jobs.runtime import Runtime, current
from jobs.spend import ledger as spend_ledger
from jobs.workflows.definition import AgentStep, ScheduleTrigger, iter_steps
from storage import activity, members
from storage import workflows as store
from storage.db import Database
from storage.models import Workflow

log = logging.getLogger(__name__)

FIRE_JOB = "jobs.schedules.fire_job"
BATCH = 250  # runs one fire job starts in one transaction when many schedules share a slot
SCAN_LIMIT = 5000  # queued job ids a fire job reads to find the others due with it
QUEUE_RETRY = timedelta(seconds=15)


def next_slot(cron: str, zone: ZoneInfo, after: datetime) -> datetime:
    """The first slot strictly after `after`, as an aware UTC time."""
    return croniter(cron, after.astimezone(zone)).get_next(datetime).astimezone(UTC)


def previous_slot(cron: str, zone: ZoneInfo, before: datetime) -> datetime:
    """The latest slot at or before `before`."""
    return croniter(cron, (before + timedelta(seconds=1)).astimezone(zone)).get_prev(datetime).astimezone(UTC)


def slot_job_id(workflow_id: int, slot: datetime) -> str:
    return f"wf-{workflow_id}-{int(slot.timestamp())}"


def ensure_slot(redis: Redis, workflow_id: int, slot: datetime) -> bool:
    """Queue the slot's job unless it is queued already; True when this call queued it."""
    try:
        queues.queue(redis, queues.WORKFLOWS).enqueue_at(
            slot, FIRE_JOB, workflow_id, int(slot.timestamp()), job_id=slot_job_id(workflow_id, slot), unique=True,
            result_ttl=3600,
        )
    except DuplicateJobError:
        return False
    return True


def fire_job(workflow_id: int, slot_epoch: int) -> str:
    return loop.run(fire(current(), workflow_id, slot_epoch))


async def fire(rt: Runtime, workflow_id: int, slot_epoch: int) -> str:
    """Start the run of one slot (once), then queue the next slot.

    Schedules fall due together (on the hour, at 09:00): one job per schedule would start them
    one by one behind each other. So this job also starts, in its one transaction, up to
    `BATCH - 1` runs of the same slot whose fire jobs are still waiting in the queue; those
    jobs then find their run there and end at once. The run row's unique (workflow, slot) keeps
    two batches, or a batch and a job, from ever starting a slot twice."""
    assert rt.redis is not None
    slot = datetime.fromtimestamp(slot_epoch, UTC)
    async with rt.db.session() as session:
        if await store.workflows_with_slot(session, [workflow_id], slot_epoch):
            return "slot already ran"  # a batch started it: the common case when many are due
        siblings = due_alongside(rt.redis, slot_epoch, exclude=workflow_id)
        fired = await store.workflows_with_slot(session, siblings, slot_epoch) if siblings else set()
        # Workers take these jobs in id order, several at once: split the slot's workflows into
        # buckets by id, so that those workers start different buckets, not the same one.
        buckets = math.ceil((len(siblings) + 1) / BATCH)
        batch = [workflow_id, *[w for w in siblings if w % buckets == workflow_id % buckets and w not in fired][:BATCH - 1]]
        loaded = {workflow.id: (workflow, document) for workflow, document in await store.active_definitions(session, batch)}
        if workflow_id not in loaded:
            return "workflow not active"
        busy = await store.active_run_counts(session, list(loaded))
        zone = await _default_zone(session)
        started: dict[int, tuple[str | None, list[Any], ScheduleTrigger]] = {}  # workflow -> run, its first steps
        own: tuple[Workflow, ScheduleTrigger] | None = None
        broke: dict[str, str | None] = {}  # member -> why it cannot call the LLM now (None: it can)
        halted: dict[str, str | None] = {}  # member -> its pause in words (None: active)
        for wid in batch:
            if wid not in loaded:
                continue
            workflow, document = loaded[wid]
            definition = cached_version(session, wid, workflow.active_version, document)
            trigger = definition.trigger
            if not isinstance(trigger, ScheduleTrigger):
                continue
            if wid == workflow_id:
                own = (workflow, trigger)
            if busy.get(wid):
                continue  # the overlap policy decides: its own job (this one, below, for this workflow)
            if workflow.member_id not in halted:
                halted[workflow.member_id] = await pauses.refusal(session, rt.loaded.config, workflow.member_id)
            if halted[workflow.member_id]:  # a paused member's slots are skipped, saying why; resuming fires the next
                await _skip_in(session, workflow, slot_epoch, str(halted[workflow.member_id]))
                started[wid] = (None, [], trigger)
                continue
            if any(isinstance(step, AgentStep) for _, step in iter_steps(definition)):
                if workflow.member_id not in broke:
                    broke[workflow.member_id] = await spend_ledger.out_of_budget(session, rt.loaded.config, workflow.member_id)
                if broke[workflow.member_id]:  # a run that needs the LLM would only fail: the slot is skipped, saying why
                    await _skip_in(session, workflow, slot_epoch, f"over budget: {broke[workflow.member_id]}")
                    started[wid] = (None, [], trigger)
                    continue
            run_id, to_queue = await start_loaded(session, workflow, "schedule", {}, slot=slot_epoch, settings=run_settings(rt),
                                                  origin=scheduled_origin(workflow))
            started[wid] = (run_id, to_queue, trigger)
    if own is None:
        return "not a scheduled workflow"
    # Ahead of the fire jobs still queued for this slot (each of those now ends at once): the
    # runs' first steps should not wait behind a thousand of them.
    queueing.enqueue_runs_steps(rt.redis, [(run_id, to_queue) for run_id, to_queue, _ in started.values()], at_front=True)
    for wid, (_, _, trigger) in started.items():
        ensure_slot(rt.redis, wid, next_slot(trigger.schedule, trigger.zone(zone), slot))
    workflow, trigger = own
    if busy.get(workflow_id):
        ensure_slot(rt.redis, workflow_id, next_slot(trigger.schedule, trigger.zone(zone), slot))
        return await start_slot(rt.db, rt.redis, workflow, trigger, slot_epoch, busy[workflow_id], run_settings(rt))
    own_run = started[workflow_id][0]
    others = sum(1 for wid, (run_id, _, _) in started.items() if run_id and wid != workflow_id)
    batched = f" (and {others} more of this slot)" if others else ""
    return f"started {own_run}{batched}" if own_run else "slot already ran"


def scheduled_origin(workflow: Workflow, via: Via = "schedule") -> Origin:
    """A schedule's (or webhook's) run reports where the workflow was built when it was built
    in a conversation (`workflows.home`); otherwise it comes from no conversation and its
    person is the workflow's creator (`workflow apply --as`, or the config's first admin)."""
    return Origin.of_workflow(workflow.home, workflow.created_by, via)


def due_alongside(redis: Redis, slot_epoch: int, exclude: int) -> list[int]:
    """Workflows whose fire job for this slot waits in the queue (RQ's scheduler moved it there).
    Only the first `SCAN_LIMIT` queued jobs are looked at: behind a longer backlog, slots simply
    fire one by one."""
    suffix = f"-{slot_epoch}"
    out = []
    for job_id in queues.queue(redis, queues.WORKFLOWS).get_job_ids(0, SCAN_LIMIT):
        if job_id.startswith("wf-") and job_id.endswith(suffix):
            middle = job_id[3:-len(suffix)]
            if middle.isdigit() and int(middle) != exclude:
                out.append(int(middle))
    return out


_ZONES: dict[str, str] = {}


async def _default_zone(session: Any) -> str:
    """The workspace time zone, read once per process and database (it is seeded from the
    config file at start; a change takes effect when processes restart)."""
    key = str(session.get_bind().url)
    if key not in _ZONES:
        _ZONES[key] = (await members.workspace(session)).timezone
    return _ZONES[key]


async def start_slot(db: Database, redis: Redis, workflow: Workflow, trigger: ScheduleTrigger, slot_epoch: int, busy: int,
                     settings: RunSettings | None = None) -> str:
    """Start one slot's run once, following the overlap policy when a run is still going:
    `skip` records the slot as skipped, `queue` tries again shortly (the slot runs after the
    current run), `allow` starts it anyway. Without `settings` (the web process's catch-up)
    the run's first advance is a worker's job: templates never render in the web process."""
    async with db.session() as session:
        halted = await pauses.refusal(session, None, workflow.member_id)
    if halted:
        await _record_skipped(db, workflow, slot_epoch, halted)
        return f"skipped: {halted}"
    if busy and trigger.overlap == "skip":
        await _record_skipped(db, workflow, slot_epoch, "the previous run was still going")
        return "skipped: previous run still going"
    if busy and trigger.overlap == "queue":
        queues.queue(redis, queues.WORKFLOWS).enqueue_in(
            QUEUE_RETRY, FIRE_JOB, workflow.id, slot_epoch, job_id=f"wf-{workflow.id}-{slot_epoch}-wait{int(datetime.now(UTC).timestamp())}"
        )
        return "queued behind the running run"
    async with db.session() as session:
        run_id, to_queue = await start_loaded(session, workflow, "schedule", {}, slot=slot_epoch, settings=settings,
                                              defer=settings is None, origin=scheduled_origin(workflow))
    queueing.enqueue_steps(redis, run_id, to_queue)
    return f"started {run_id}" if run_id else "slot already ran"


async def _record_skipped(db: Database, workflow: Workflow, slot_epoch: int, why: str) -> None:
    async with db.session() as session:
        await _skip_in(session, workflow, slot_epoch, why)


async def _skip_in(session: Any, workflow: Workflow, slot_epoch: int, why: str) -> None:
    """The slot's run, recorded as skipped with its reason (once: the slot is unique)."""
    run_id = await store.create_run(session, workflow, "schedule", {}, slot=slot_epoch, origin=scheduled_origin(workflow).to_json())
    if run_id is None:
        return
    await store.finish_run(session, run_id, "skipped", error=why)
    await activity.record(session, member_id=workflow.member_id, actor_type="system", actor_id="scheduler",
                          action="slot_skipped", description=f"{workflow.name}: slot {datetime.fromtimestamp(slot_epoch, UTC):%Y-%m-%d %H:%M} UTC skipped: {why}",
                          entity_type="workflow", entity_id=workflow.name, run_id=run_id)
    log.info("%s: slot %s skipped: %s", workflow.name, slot_epoch, why, extra={"workflow": workflow.name, "run_id": run_id})


async def reconcile(db: Database, redis: Redis, now: datetime | None = None) -> int:
    """Make every active schedule's next slot queued; catch up or skip missed slots.

    Built for many schedules: one query for the active definitions (validated once per process
    and version), one for the latest slot of each, one Redis read for what is already queued;
    only what is missing is enqueued."""
    now = now or datetime.now(UTC)
    async with db.session() as session:
        default_zone = (await members.workspace(session)).timezone
        plans = []
        for workflow, document in await store.active_definitions(session):
            trigger = cached_version(session, workflow.id, workflow.active_version, document).trigger
            if isinstance(trigger, ScheduleTrigger):
                plans.append((workflow, trigger))
        last_slots = await store.last_slots(session) if plans else {}
    if not plans:
        return 0
    already = set(ScheduledJobRegistry(queue=queues.queue(redis, queues.WORKFLOWS)).get_job_ids())
    queued = 0
    for index, (workflow, trigger) in enumerate(plans):
        if index % 100 == 99:
            await asyncio.sleep(0)  # runs inside the web process: let acks through between batches
        zone = trigger.zone(default_zone)
        upcoming = next_slot(trigger.schedule, zone, now)
        if slot_job_id(workflow.id, upcoming) not in already and ensure_slot(redis, workflow.id, upcoming):
            queued += 1
        missed = previous_slot(trigger.schedule, zone, now)
        created = workflow.created_at
        if missed <= created or last_slots.get(workflow.id, 0) >= int(missed.timestamp()):
            continue
        if now - missed <= trigger.catch_up_window:
            async with db.session() as session:
                busy = await store.active_runs(session, workflow.id)
            outcome = await start_slot(db, redis, workflow, trigger, int(missed.timestamp()), busy)
            log.warning("%s: missed slot %s: %s", workflow.name, missed.isoformat(), outcome, extra={"workflow": workflow.name})
        else:
            await _record_skipped(db, workflow, int(missed.timestamp()), f"missed by more than {trigger.catch_up}")
    return queued
