"""Clicks and form submissions: the one way in for every button and form, on any platform.

Invariants a reader must not break:
- An action is recorded before the platform is acked (`accept`, web process): platforms do
  not deliver an interaction twice, so an unrecorded click would be lost. A replay of the same
  delivery finds its row and does nothing.
- Its job (`handle`, a worker) does what it asks once (the row's status guards it) and checks
  who may do it there, never in an adapter: approvals against their approvers and the admins;
  Try again, a plan's Start / Change / Cancel (`jobs.builder.plans`) and a confirmation card's
  Post it / Don't (`jobs.confirm`) against the person who asked and the admins; a workflow's
  Pause / Resume / Run now (`jobs.console.controls`) against its creator and the admins. Anyone
  else gets a private notice and nothing changes.
- A member's slash command and the opening of its home tab travel the same way (recorded,
  then a job: `jobs.console`). A click made on the home tab publishes the tab again once done.
- A click that opens a form is answered in the web process, while the platform's short-lived
  trigger is valid (`form_for`): it only reads. The form's submission comes back as an action.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from redis import Redis

from agents.channels import ChannelError
from agents.messages import (
    APPROVE_ACTION,
    APPROVE_ALL_ACTION,
    COMMAND_ACTION,
    EDIT_ACTION,
    EDITED_FORM,
    HOME_ACTION,
    HOME_TAB,
    PLAN_CANCEL_ACTION,
    PLAN_CHANGE_ACTION,
    PLAN_START_ACTION,
    REJECT_ACTION,
    REJECTED_FORM,
    RETRY_TURN_ACTION,
    VIEW_ACTION,
    WORKFLOW_PAUSE_ACTION,
    WORKFLOW_RESUME_ACTION,
    WORKFLOW_RUN_ACTION,
    Form,
    InboundAction,
)
from jobs import confirm, intake, loop, member_settings, queues
from jobs.people import People
from jobs.runs import approvals as approval_rules
from jobs.runtime import Runtime, current
from storage import actions, approvals, inbound
from storage.db import Database
from storage.models import utcnow

log = logging.getLogger(__name__)

ACTION_JOB = "jobs.actions.handle_job"
FORM_ACTIONS = frozenset({REJECT_ACTION, EDIT_ACTION, VIEW_ACTION})
STALE_AFTER = timedelta(minutes=10)  # a click not handled by then is not tried again
PLAN_ACTIONS = frozenset({PLAN_START_ACTION, PLAN_CHANGE_ACTION, PLAN_CANCEL_ACTION})
CONSOLE_ACTIONS = frozenset({COMMAND_ACTION, HOME_ACTION, WORKFLOW_PAUSE_ACTION, WORKFLOW_RESUME_ACTION, WORKFLOW_RUN_ACTION})
RECORDED_ACTIONS = frozenset({APPROVE_ACTION, APPROVE_ALL_ACTION, REJECTED_FORM, EDITED_FORM, RETRY_TURN_ACTION,
                              *PLAN_ACTIONS, *confirm.ACTIONS, member_settings.CONFIG_FORM, *CONSOLE_ACTIONS})


async def accept(db: Database, action: InboundAction) -> int | None:
    """Record the action (before the ack); its id, or None for a replayed delivery."""
    async with db.session() as session:
        return await actions.record(session, action)


def enqueue(redis: Redis, action_id: int) -> None:
    """On the turns queue: a person is waiting for what their click does."""
    queues.queue(redis, queues.TURNS).enqueue(ACTION_JOB, action_id, job_id=f"action-{action_id}", job_timeout=120,
                                             result_ttl=600, failure_ttl=7 * 24 * 3600)


async def form_for(db: Database, action: InboundAction) -> Form | str:
    """The form a click opens, or a sentence for the person when there is none to open."""
    async with db.session() as session:
        row = await approvals.get(session, action.object_id)
    return approval_rules.form_for(row, action)


def handle_job(action_id: int) -> str:
    """RQ entry point (sync, runs on the worker's persistent loop)."""
    return loop.run(handle(current(), action_id))


async def handle(rt: Runtime, action_id: int) -> str:
    async with rt.db.session() as session:
        row = await actions.get(session, action_id)
        if row is None or row.status != "received":
            return "handled already"
        action = actions.as_action(row)
    extra = {"member": action.member_id, "action": action.action}
    if action.action == RETRY_TURN_ACTION:
        outcome = await _retry_turn(rt, action)
    elif action.action in (APPROVE_ACTION, REJECTED_FORM, EDITED_FORM):
        outcome = await approval_rules.act(rt, action)
    elif action.action == APPROVE_ALL_ACTION:
        outcome = await approval_rules.approve_all(rt, action)
    elif action.action in PLAN_ACTIONS:
        # Imported here: the web process, which only records clicks, never loads the builder.
        from jobs.builder import plans

        outcome = await plans.act(rt, action)
    elif action.action in confirm.ACTIONS:
        outcome = await confirm.act(rt, action)
    elif action.action == member_settings.CONFIG_FORM:
        outcome = await member_settings.submit(rt, action)
    elif action.action in CONSOLE_ACTIONS:
        outcome = await _console(rt, action)
    else:
        outcome = f"unknown action {action.action}"
    if action.where == HOME_TAB and action.action != HOME_ACTION:
        outcome += "; home tab " + await _republish(rt, action)
    log.info("action %s by %s: %s", action.action, action.user_id, outcome, extra=extra)
    async with rt.db.session() as session:
        await actions.finish(session, action_id, "done", outcome)
    return outcome


async def _console(rt: Runtime, action: InboundAction) -> str:
    """The member's slash command, its home tab being opened, a workflow's buttons."""
    # Imported here, like the builder: the web process that records these never loads them.
    from jobs.console import commands, controls, home

    if action.action == COMMAND_ACTION:
        return await commands.answer(rt, action)
    if action.action == HOME_ACTION:
        return await home.publish(rt, action.member_id, action.user_id, action.platform)
    return await controls.act(rt, action)


async def _republish(rt: Runtime, action: InboundAction) -> str:
    """After a click on the home tab, the tab again as it now stands. Never fails the click
    (it was done): a tab not refreshed is refreshed when the person opens it next."""
    from jobs.console import home

    try:
        return await home.publish(rt, action.member_id, action.user_id, action.platform)
    except Exception as exc:  # noqa: BLE001
        log.warning("home tab not refreshed: %s", type(exc).__name__, extra={"member": action.member_id})
        return "not refreshed"


async def _retry_turn(rt: Runtime, action: InboundAction) -> str:
    """Try again: only the person who wrote the message, or an admin."""
    if not action.object_id.isdigit() or len(action.object_id) > 18:
        return "not a message id"
    inbound_id = int(action.object_id)
    async with rt.db.session() as session:
        row = await inbound.get(session, inbound_id)
    if row is None or row.member_id != action.member_id:
        return "no such message"
    people = People.from_config(rt.loaded.config)
    if action.user_id != row.user_id and not people.is_admin(action.user_id, action.platform):
        channel = rt.channels(action.platform, action.member_id)
        try:
            await channel.notice(action.where, action.user_id,
                                 f"Only {channel.mention(row.user_id)} (who wrote the message) or an admin can ask me to try again.")
        except ChannelError as exc:
            log.info("notice not sent: %s", exc.code)
        return "refused"
    async with rt.db.session() as session:
        row = await inbound.get(session, inbound_id)
        if row is None or row.status != "failed":
            return "answered or being answered already"
        await inbound.reset_for_retry(session, inbound_id)
        attempt = row.attempts
    assert rt.redis is not None
    await asyncio.to_thread(intake.enqueue_turn, rt.redis, inbound_id, rt.loaded.config.workers.turn_timeout, attempt)
    return "retrying"


async def sweep(db: Database, redis: Redis, older_than: timedelta = timedelta(seconds=15)) -> int:
    """Enqueue again the actions recorded but never handled (their job was never enqueued:
    Redis was away at the ack, or the process died right after it)."""
    async with db.session() as session:
        ids = await actions.unhandled_before(session, utcnow() - older_than, utcnow() - STALE_AFTER)
    for action_id in ids:
        await asyncio.to_thread(enqueue, redis, action_id)
    return len(ids)
