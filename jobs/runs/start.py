"""Starting runs: from a trigger, a platform event or a handoff.

A run is created with its first advance in one transaction, so its first steps are queued
with it (no extra job) and a run with no step rows never exists once its start commits."""

from __future__ import annotations

import logging
from typing import Any

from redis import Redis

from jobs import pauses
from jobs.pauses import MemberPaused
from jobs.runs import queueing, secrets
from jobs.runs.advance import Queued, advance_run
from jobs.runs.definitions import cached_version, load_version
from jobs.runs.inputs import InputError, resolve_inputs
from jobs.runs.origin import Origin
from jobs.runs.settings import RunSettings
from jobs.workflows.definition import EventTrigger
from storage import activity, members
from storage import webhooks as deliveries
from storage import workflows as store
from storage.db import Database
from storage.models import WorkflowRun

log = logging.getLogger(__name__)

Started = list[tuple[str | None, Queued]]


class ChainTooDeep(Exception):
    """A handoff or event would start a run deeper than `workflows.max_handoff_depth`: the
    chain stops here (one line, naming the workflow and the limit). Raised before anything is
    written for that run."""


async def start_run(db: Database, redis: Redis, workflow_name: str, trigger: str, run_input: dict[str, Any],
                    slot: int | None = None, settings: RunSettings | None = None, *, defer: bool = False,
                    origin: Origin | None = None, once: str | None = None) -> str | None:
    """Create a run of the workflow's active version and queue its first steps; None when
    that schedule slot already has a run. `defer`, `origin`: see `start_loaded`. A paused
    member's workflow raises `MemberPaused` (nothing is written). `once`: the id of what asked
    (a click): it is stored with the run, in its transaction, so asking again (a retried job)
    returns that run instead of starting a second one."""
    try:
        async with db.session() as session:
            workflow = await store.by_name(session, workflow_name)
            if workflow is None:
                raise LookupError(f"no workflow named {workflow_name!r}")
            if once is not None and (earlier := await deliveries.delivered_run(session, workflow.id, once)):
                return earlier
            halted = await pauses.refusal(session, None, workflow.member_id)
            if halted:
                raise MemberPaused(f"{workflow_name} does not run: {halted}")
            run_id, to_queue = await start_loaded(session, workflow, trigger, run_input, slot, settings, defer=defer, origin=origin)
            if once is not None and run_id is not None and not await deliveries.record_delivery(session, workflow.id, once, run_id):
                raise _Started(workflow.id)  # a concurrent attempt started it: this run rolls back
    except _Started as lost:
        async with db.session() as session:
            return await deliveries.delivered_run(session, lost.workflow_id, once or "")
    queueing.enqueue_steps(redis, run_id, to_queue)
    return run_id


class _Started(Exception):
    def __init__(self, workflow_id: int) -> None:
        super().__init__(workflow_id)
        self.workflow_id = workflow_id


async def start_loaded(session: Any, workflow: Any, trigger: str, run_input: dict[str, Any], slot: int | None = None,
                       settings: RunSettings | None = None, depth: int = 0, *, defer: bool = False,
                       origin: Origin | None = None) -> tuple[str | None, Queued]:
    """Create a run of an already loaded workflow inside `session`'s transaction. Its first
    advance runs right here, so the first steps are queued with the run (no extra job);
    the caller enqueues the returned steps once the transaction has committed.

    `depth`: handoffs and events since the run a trigger started (0 for a trigger; a handoff
    or an event passes its run's depth + 1). Deeper than `max_handoff_depth` raises
    `ChainTooDeep`: a loop of handoffs and events ends there, whatever `apply` could see.

    `origin`: where the run came from, stored with it (`workflow_runs.origin`, NULL when None).
    Every trigger passes one (cli, schedule, webhook; a handoff or event: the parent run's,
    via `Origin.inherited`); None only from callers that predate origins.

    With `defer` (the web process, which never renders templates on its event loop nor in
    an ack's way) the first advance is a job instead: only the run row is written here. Until that job runs the run
    has no step rows; the reconciler queues the advance again at once if Redis lost it."""
    settings = settings or RunSettings()
    if depth > settings.max_handoff_depth:
        raise ChainTooDeep(f"handoff chain too deep: starting {workflow.name} would be {depth} handoffs/events deep, "
                           f"more than workflows.max_handoff_depth ({settings.max_handoff_depth})")
    definition = await load_version(session, workflow.id, workflow.active_version)
    values = resolve_inputs(definition, run_input)
    run_id = await store.create_run(session, workflow, trigger, values, slot, depth,
                                    origin.to_json() if origin is not None else None)
    if run_id is None:
        return None, []
    feed = [activity.entry(
        member_id=workflow.member_id, actor_type="member", actor_id=workflow.member_id, action="run_started",
        description=f"Started {workflow.name} (v{workflow.active_version}, {trigger})", entity_type="workflow",
        entity_id=workflow.name, run_id=run_id,
    )]
    if defer:
        await activity.record_many(session, feed)
        return run_id, [("", definition.steps[0])]  # an empty path: an advance job
    # The run was inserted by this transaction a moment ago: nothing to re-read or lock.
    fresh = WorkflowRun(id=run_id, workflow_id=workflow.id, version=workflow.active_version, status="running", input=values,
                        depth=depth, origin=origin.to_json() if origin is not None else None)
    _, to_queue = await advance_run(session, fresh, definition, {}, secrets.refusing(), settings, feed)
    await activity.record_many(session, feed)
    return run_id, to_queue


async def publish(db: Database, redis: Redis, name: str, member: str | None, payload: dict[str, Any],
                  settings: RunSettings | None = None, depth: int = 0, *, parent_origin: Origin | None = None) -> list[str]:
    """A platform event (`approval.decided`, `member.handoff`): start every active workflow
    whose event trigger listens for it. Returns the ids of the runs started. `depth`: that of
    the runs it starts (the emitting run's + 1); too deep raises `ChainTooDeep`, nothing started.
    `parent_origin`: the emitting run's origin; each run started gets it with `via: event`
    (platform, conversation, thread and person copied; all None when the emitter has none)."""
    async with db.session() as session:
        started = await publish_in(session, name, member, payload, settings, depth, parent_origin=parent_origin)
    queueing.enqueue_runs_steps(redis, started)
    return [run_id for run_id, _ in started if run_id]


async def publish_in(session: Any, name: str, member: str | None, payload: dict[str, Any],
                     settings: RunSettings | None = None, depth: int = 0, *, defer: bool = False,
                     parent_origin: Origin | None = None) -> Started:
    """`publish` inside the caller's transaction, so that the runs an event starts commit with
    whatever caused it (a handoff step's record): the caller enqueues the returned steps.
    `defer`: their first advance is a job (no template renders in the caller's transaction)."""
    started: Started = []
    origin = Origin.inherited(parent_origin, "event")
    halted = await members.paused_ids(session)  # a paused member's workflows do not fire
    for workflow, document in await store.active_definitions(session):
        if workflow.member_id in halted:
            continue
        definition = cached_version(session, workflow.id, workflow.active_version, document)
        trigger = definition.trigger
        if not (isinstance(trigger, EventTrigger) and trigger.event.name == name and trigger.event.member in (None, member)):
            continue
        declared = {i.name for i in definition.inputs}
        try:
            started.append(await start_loaded(session, workflow, "event",
                                              {k: v for k, v in payload.items() if not declared or k in declared}, settings=settings,
                                              depth=depth, defer=defer, origin=origin))
        except InputError as exc:  # raised before anything is written for this workflow
            log.warning("event %s not delivered to %s: %s", name, workflow.name, exc, extra={"workflow": workflow.name})
    return started
