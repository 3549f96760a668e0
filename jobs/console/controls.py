"""A workflow's Pause / Resume / Run now buttons (on `/nova workflows` and the home tab).

Invariants a reader must not break:
- The click proves nothing: only the workflow's creator or an admin may press them (the rule
  of `jobs.builder.plans.may_manage`, with `may_administer`'s admins), and only on the member
  that owns the workflow; anyone else is told privately and nothing changes.
- Run now on a paused member is refused (`MemberPaused`), saying who paused it.
- Pausing and resuming are in the activity feed with the person as actor; a run's start is
  there already (`run_started`).
"""

from __future__ import annotations

import hashlib
import logging

from agents.channels import Channel, ChannelError
from agents.messages import (
    WORKFLOW_PAUSE_ACTION,
    WORKFLOW_RESUME_ACTION,
    WORKFLOW_RUN_ACTION,
    InboundAction,
)
from jobs import pauses, schedules
from jobs.pauses import MemberPaused
from jobs.people import People
from jobs.runs.inputs import InputError
from jobs.runs.origin import Origin
from jobs.runs.settings import settings as run_settings
from jobs.runs.start import start_run
from jobs.runtime import Runtime
from storage import activity
from storage import workflows as store

log = logging.getLogger(__name__)

ACTIONS = frozenset({WORKFLOW_PAUSE_ACTION, WORKFLOW_RESUME_ACTION, WORKFLOW_RUN_ACTION})
_VERB = {WORKFLOW_PAUSE_ACTION: "pause", WORKFLOW_RESUME_ACTION: "resume", WORKFLOW_RUN_ACTION: "run"}


async def act(rt: Runtime, action: InboundAction) -> str:
    """Do what the button asks if the person may; tell them privately what happened."""
    channel = rt.channels(action.platform, action.member_id)
    outcome, sentence = await _do(rt, action, channel)
    try:
        await channel.notice(action.where, action.user_id, sentence)
    except ChannelError as exc:
        log.info("notice to %s not sent: %s", action.user_id, exc.code, extra={"member": action.member_id})
    return f"{outcome}: {sentence}"


async def _do(rt: Runtime, action: InboundAction, channel: Channel) -> tuple[str, str]:
    name, verb = action.object_id, _VERB[action.action]
    people = People.from_config(rt.loaded.config)
    async with rt.db.session() as session:
        row = await store.by_name(session, name)
    if row is None or row.member_id != action.member_id:
        return "unchanged", f"There is no workflow {name!r} here any more."
    creator = row.created_by is not None and people.same(row.created_by, action.user_id, action.platform)
    if not creator and not await people.may_administer(action.user_id, action.platform, channel):
        who = channel.mention(people.user_id(row.created_by, action.platform)) if row.created_by else "its creator"
        return "refused", f"Only {who} (who set up {name}) or an admin can {verb} it."
    person = people.person_of(action.user_id, action.platform) or action.user_id
    extra = {"member": row.member_id, "workflow": name}
    if action.action == WORKFLOW_RUN_ACTION:
        async with rt.db.session() as session:
            pause = await pauses.paused(session, row.member_id)
        if pause is not None:  # said here in the workspace's time and with a mention (start_run re-checks)
            return "refused", f"{name} does not run: {pauses.sentence(pause, rt.loaded.config, channel.mention, action.platform)}."
        origin = Origin(via="chat", platform=action.platform, person=person)
        assert rt.redis is not None
        try:
            # Keyed by the click: a retried job (its worker died after the start) starts no second run.
            once = "click-" + hashlib.sha256(action.key.encode()).hexdigest()[:40]
            run_id = await start_run(rt.db, rt.redis, name, "manual", {}, settings=run_settings(rt), origin=origin, once=once)
        except MemberPaused as exc:
            return "refused", str(exc)
        except InputError as exc:
            return "refused", f"{name} needs inputs to run ({exc}): ask {row.member_id} in a DM, or use `teammates workflow run`."
        log.info("%s started by %s", name, person, extra={**extra, "run_id": run_id or ""})
        return "started", f"Started {name} (run {run_id})."
    status = "paused" if action.action == WORKFLOW_PAUSE_ACTION else "active"
    if row.status == status:
        return "unchanged", f"{name} is {'paused' if status == 'paused' else 'active'} already."
    async with rt.db.session() as session:
        await store.set_status(session, row.id, status)
        await activity.record(session, member_id=row.member_id, actor_type="person", actor_id=person,
                              action="workflow_paused" if status == "paused" else "workflow_resumed",
                              description=f"{'Paused' if status == 'paused' else 'Resumed'} {name} from chat",
                              entity_type="workflow", entity_id=name)
    if status == "active" and rt.redis is not None:
        await schedules.reconcile(rt.db, rt.redis)  # its next slot, queued again
    log.info("%s %s by %s", name, status, person, extra=extra)
    return status, f"{name} is {'paused: it will not run until resumed' if status == 'paused' else 'active again'}."
