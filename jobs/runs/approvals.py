"""Approvals: asking people before something leaves the team, and deciding exactly once.

Invariants a reader must not break:
- The click proves nothing: who may decide is checked here, on the server, against the
  request's approvers (people, platform users, user groups resolved now), else the run's
  originating person, else the workflow's creator — and the admins, always.
- Exactly one outcome: the final decision is an UPDATE guarded by `status = 'pending'`; the
  step row, the activity row and the runs `approval.decided` starts commit in that same
  transaction (their first advance is a job: no template renders in it), and the run resumes
  once (a deterministic job id). A quorum's partial approvals are a read-modify-write guarded
  by `revision`, so two concurrent clicks never lose one.
- Every copy of the request that was posted is updated after any change, with the member's
  own credentials: the buttons go, the outcome shows ("Approved by @ana at 14:02").
- Not approved means not done: a rejected, expired or cancelled approval is never
  `approved`, and (with `on_reject: stop`, the walk's business) skips the rest of its block.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from agents.channels import Channel, ChannelError
from agents.messages import (
    APPROVE_ACTION,
    APPROVE_ALL_ACTION,
    EDIT_ACTION,
    EDITED_FORM,
    REJECT_ACTION,
    REJECTED_FORM,
    VIEW_ACTION,
    Button,
    Card,
    Field,
    Form,
    FormInput,
    InboundAction,
    MessageRef,
)
from jobs import team
from jobs.people import People
from jobs.runs import queueing
from jobs.runs.advance import advance
from jobs.runs.definitions import find_step, load_version
from jobs.runs.origin import Origin
from jobs.runs.settings import settings
from jobs.runs.start import ChainTooDeep, Started, publish_in
from jobs.runtime import Runtime
from jobs.workflows.definition import ApprovalStep
from storage import activity, approvals, effects
from storage import workflows as store
from storage.models import Approval, Workflow, utcnow

log = logging.getLogger(__name__)

DecisionKind = Literal["approved", "rejected", "expired", "cancelled"]
DEFAULT_TIMEOUT = timedelta(days=7)


@dataclass(frozen=True)
class Decision:
    decision: DecisionKind
    by: str | None = None
    reason: str | None = None
    content: str | None = None


class RunFinished(Exception):
    """The run ended (cancelled, failed) before its approval could be opened: none is."""


def people(rt: Runtime) -> People:
    return People.from_config(rt.loaded.config)


def _channel(rt: Runtime, platform: str, member_id: str) -> Channel | None:
    try:
        return rt.channels(platform, member_id)
    except LookupError:
        return None


# ---------------------------------------------------------------------------- asking


async def request(rt: Runtime, *, approval_id: str, run_id: str, path: str, member_id: str, workflow: str, step: ApprovalStep,
                  title: str, content: str) -> datetime | None:
    """Open the request (once, whatever retries do) and post it where the step says. Returns
    when the step should wake: the reminder if one is due before expiry, else the expiry."""
    spec = step.approval
    timeout = spec.timeout_delta
    remind_after = spec.remind_after
    now = utcnow()
    expires_at = now + timeout if timeout is not None else None
    remind_at = now + remind_after if remind_after is not None else None
    async with rt.db.session() as session:
        # The run's row is locked first, as `cancel_run` does: a cancel that committed before
        # this finds no approval to open; one after it finds this approval pending and cancels it.
        run = await store.run(session, run_id, lock=True)
        if run is None or run.status in store.FINISHED_RUN:
            raise RunFinished(f"step {path!r}: the run is {run.status if run else 'gone'}")
        origin = _origin(run)
        approvers = list(spec.approvers or [])
        if not approvers:
            if origin.get("person"):
                approvers = [str(origin["person"])]
            elif run is not None and (creator := await _creator(session, run.workflow_id)):
                approvers = [creator]
        row, created = await approvals.open_request(
            session, approval_id=approval_id, run_id=run_id, step_path=path, member_id=member_id, title=title,
            content=content, approvers=approvers, expires_at=expires_at, workflow=workflow, quorum=spec.quorum,
            remind_at=remind_at,
        )
        platform = spec.platform or origin.get("platform") or "slack"
        if created:  # a retried step finds its request: asked once, in the log once
            await activity.record(session, member_id=member_id, actor_type="member", actor_id=member_id,
                                  action="approval_requested", description=f"{workflow}: asked for approval: {title}",
                                  entity_type="approval", entity_id=approval_id, run_id=run_id,
                                  details={"approvers": approvers, "quorum": spec.quorum})
    await _post_copies(rt, row, platform, spec.to, origin)
    wake = row.remind_at if row.remind_at and row.reminded_at is None else row.expires_at
    return wake


def _origin(run: Any) -> dict[str, Any]:
    origin = getattr(run, "origin", None)
    return dict(origin) if isinstance(origin, dict) else {}


async def _creator(session: Any, workflow_id: int) -> str | None:
    workflow = await session.get(Workflow, workflow_id)
    return workflow.created_by if workflow is not None else None


async def _post_copies(rt: Runtime, row: Approval, platform: str, to: str, origin: dict[str, Any],
                       recipients: list[str] | None = None) -> None:
    """Post the request to each destination at most once (an effect per destination) and
    keep where each copy landed, so every copy can be updated later. `to: dm` goes to each
    of `recipients` (default: every approver, else the admins)."""
    channel = _channel(rt, platform, row.member_id)
    if channel is None:
        log.warning("approval %s not posted: %s is not connected to %s", row.id, row.member_id, platform, extra={"run_id": row.run_id})
        return
    destinations: list[tuple[str, MessageRef | None, str | None]] = []  # (key, where, or a person to DM)
    if to == "thread" and origin.get("conversation") and origin.get("platform") in (None, platform):
        destinations.append(("thread", MessageRef(str(origin["conversation"]), None, origin.get("thread")), None))
    elif to not in ("thread", "dm"):
        destinations.append((f"to-{to}", MessageRef(to), None))
    elif to == "thread" and (approvals_channel := await _approvals_channel(rt, row.member_id)):
        destinations.append(("channel", MessageRef(approvals_channel), None))
    if not destinations:
        who = await people(rt).user_ids(recipients or row.approvers or rt.loaded.config.admins, channel, platform)
        destinations = [(f"dm-{user}", None, user) for user in who]
    card = await render(rt, row, channel)
    group = await _group(rt, row)
    for key, where, person in destinations:
        if group is not None and (where is None or where.thread is None):
            parent = await _group_parent(rt, row, group, key, where, person, channel)
            if parent is not None:  # the item goes in the thread under its group's message (a DM's too)
                where, person = MessageRef(parent.conversation, None, parent.message), None
        effect_key = f"{row.id}-{key}"[:200]
        async with rt.db.session() as session:
            record = await effects.begin(session, effect_key, "approval_request")
        if record.status == "done":
            continue
        try:
            ref = await _send(channel, where, person, card, effect_key)
        except ChannelError as exc:
            log.warning("approval %s: could not post to %s: %s", row.id, key, exc.code, extra={"run_id": row.run_id})
            continue
        copy = {"platform": platform, "conversation": ref.conversation, "message": ref.message, "thread": ref.thread}
        async with rt.db.session() as session:
            await approvals.add_copy(session, row.id, copy)
            await effects.finish(session, effect_key, copy)


@dataclass(frozen=True)
class _Group:
    """The approvals of one foreach's items, asked together: one parent message carries
    "Approve all N"; each item is still its own request, in the parent's thread."""

    run_id: str
    foreach_path: str
    count: int

    @property
    def key(self) -> str:
        return f"{self.run_id}|{self.foreach_path}"


async def _group(rt: Runtime, row: Approval) -> _Group | None:
    """The group of an approval inside a foreach of more than one item, else None."""
    path = row.step_path or ""
    if "[" not in path or row.run_id is None:
        return None
    foreach_path = path[: path.rindex("[")]
    if len(foreach_path) + len(row.run_id) > 250:  # a button's value holds the key
        return None
    async with rt.db.session() as session:
        container = (await store.steps(session, row.run_id)).get(foreach_path)
    items = container.output.get("items") if container is not None and isinstance(container.output, dict) else None
    if not isinstance(items, list) or len(items) < 2:
        return None
    return _Group(row.run_id, foreach_path, len(items))


async def _group_parent(rt: Runtime, row: Approval, group: _Group, key: str, where: MessageRef | None, person: str | None,
                        channel: Channel) -> MessageRef | None:
    """The group's parent message at `where` (or in `person`'s DM), posted once by whichever
    item comes first; the others wait (briefly) for it to land. None when it could not be posted."""
    effect_key = f"group-{group.key}-{key}"[:200]
    async with rt.db.session() as session:
        record, mine = await effects.begin_with(session, effect_key, "approval_group", {})
    if not mine:
        for _ in range(50):
            if record.status == "done":
                break
            await asyncio.sleep(0.1)
            async with rt.db.session() as session:
                found = await effects.get(session, effect_key)
            if found is not None:
                record = found
        result = record.result or {}
        return MessageRef(str(result["conversation"]), str(result["message"])) if result.get("message") else None
    card = group_card(row.workflow or "", group.count, group.key, "")
    try:
        ref = await _send(channel, where, person, card, effect_key)
    except ChannelError as exc:
        log.warning("approval group of %s not posted: %s", row.run_id, exc.code, extra={"run_id": row.run_id})
        async with rt.db.session() as session:
            await effects.finish(session, effect_key, {})
        return None
    async with rt.db.session() as session:
        await effects.finish(session, effect_key, {"conversation": ref.conversation, "message": ref.message})
    return ref


async def _send(channel: Channel, where: MessageRef | None, person: str | None, card: Card, effect_key: str) -> MessageRef:
    """Post `card` at `where`, or in `person`'s DM when the destination is a person."""
    if person is not None:
        return await channel.send_card_to_person(person, card, effect_id=effect_key)
    assert where is not None
    return await channel.send_card(where, card, effect_id=effect_key)


def group_card(workflow: str, count: int, key: str, outcome: str) -> Card:
    title = f"{count} approvals for {workflow}" if workflow else f"{count} approvals"
    if outcome:
        return Card(text=f"{title}: {outcome}", title=title, status=outcome)
    return Card(text=f"{title}: waiting", title=title, status="Each request is in this thread; decide them one by one or all at once.",
                buttons=(Button(APPROVE_ALL_ACTION, f"Approve all {count}", key, "primary"),))


async def approve_all(rt: Runtime, action: InboundAction) -> str:
    """"Approve all N": each pending request of the group is decided as if this person had
    clicked its own Approve (the same checks); the parent message then says what happened."""
    run_id, _, foreach_path = action.object_id.partition("|")
    async with rt.db.session() as session:
        rows = [await approvals.get(session, a) for a in await approvals.pending_for_run(session, run_id)]
    mine = [r for r in rows if r is not None and (r.step_path or "").startswith(foreach_path + "[") and r.member_id == action.member_id]
    channel = _channel(rt, action.platform, action.member_id)
    approved = refused = 0
    sentence = ""
    for row in mine:
        outcome, why = await decide_as(rt, row.id, action.user_id, action.platform, action.member_id, "approved")
        if outcome in ("approved", "counted"):
            approved += 1
        elif outcome == "refused":
            refused += 1
            sentence = why
    if channel is not None and action.where is not None and approved:
        workflow = mine[0].workflow or "" if mine else ""
        outcome_text = f"✅ {approved} approved at once by {channel.mention(action.user_id)}" + (f"; {refused} not yours to approve" if refused else "")
        try:
            await channel.update(action.where, group_card(workflow, len(mine), action.object_id, outcome_text))
        except ChannelError as exc:
            log.info("group message not updated: %s", exc.code)
    if not approved and channel is not None:
        text = sentence or "Nothing is left to approve here."
        try:
            await channel.notice(action.where, action.user_id, text)
        except ChannelError as exc:
            log.info("notice not sent: %s", exc.code)
    return f"approved {approved}, refused {refused}"


async def _approvals_channel(rt: Runtime, member_id: str) -> str | None:
    member = await team.member(rt.db, member_id)
    return member.approvals_channel if member is not None else None


# ---------------------------------------------------------------------------- showing


async def render(rt: Runtime, row: Approval, channel: Channel) -> Card:
    """The request as it stands: open with its buttons, or its outcome without them."""
    mention = channel.mention
    directory = people(rt)
    approvers = [mention(u) for u in await directory.user_ids(row.approvers or [], None)]
    fields = [Field("Workflow", row.workflow or "-")]
    if approvers:
        fields.append(Field("Approvers", ", ".join(approvers) + (f" ({row.quorum} needed)" if row.quorum > 1 else "")))
    if row.expires_at is not None and row.status == "pending":
        fields.append(Field("Expires", _local(rt, row.expires_at)))
    body = row.content or ""
    status, buttons = "", tuple[Button, ...]()
    approved_by = [d["by"] for d in row.decisions or [] if d.get("decision") == "approved"]
    if row.status == "pending":
        waiting = " or ".join(approvers) if approvers else "an admin"
        status = f"Waiting for {waiting}" + (" or an admin" if approvers else "")
        if row.quorum > 1:
            status = f"{len(approved_by)} of {row.quorum} approvals" + (f" (approved by {', '.join(mention(b) for b in approved_by)})" if approved_by else "")
        if row.reminded_at is not None:
            status = "⏰ Reminder: " + status
        buttons = (Button(APPROVE_ACTION, "Approve", row.id, "primary"), Button(REJECT_ACTION, "Reject", row.id, "danger"))
        if body:
            buttons = (*buttons, Button(EDIT_ACTION, "Edit", row.id))
    else:
        final = (row.decisions or [])[-1] if row.decisions else {}
        body = final.get("content") or body
        at = _local(rt, row.decided_at) if row.decided_at else ""
        by = mention(row.decided_by) if row.decided_by else ""
        if row.status == "approved":
            edited = " (edited)" if final.get("edited") else ""
            status = f"✅ Approved by {', '.join(mention(b) for b in approved_by) or by} at {at}{edited}"
        elif row.status == "rejected":
            status = f"❌ Rejected by {by}" + (f": {row.reason}" if row.reason else "")
        elif row.status == "expired":
            status = "⌛ Expired — not sent"
        else:
            status = "Cancelled — the run was stopped"
    more = Button(VIEW_ACTION, "View draft", row.id) if body else None
    text = f"Approval {'needed' if row.status == 'pending' else row.status}: {row.title}"
    return Card(text=text, title=row.title, fields=tuple(fields), body=body, status=status, buttons=buttons, more=more)


def _local(rt: Runtime, moment: datetime) -> str:
    zone = ZoneInfo(rt.loaded.config.workspace.timezone)
    local = moment.astimezone(zone)
    today = utcnow().astimezone(zone).date()
    return f"{local:%H:%M}" if local.date() == today else f"{local:%d %b %H:%M}"


async def refresh(rt: Runtime, approval_id: str) -> None:
    """Update every posted copy to the request's current state. A copy that cannot be
    updated (deleted, channel gone) is logged and the others still are."""
    async with rt.db.session() as session:
        row = await approvals.get(session, approval_id)
    if row is None:
        return
    cards: dict[str, Card] = {}
    for copy in row.messages or []:
        platform = str(copy.get("platform") or "slack")
        channel = _channel(rt, platform, row.member_id)
        if channel is None or not copy.get("message"):
            continue
        if platform not in cards:
            cards[platform] = await render(rt, row, channel)
        try:
            await channel.update(MessageRef(str(copy["conversation"]), str(copy["message"]), copy.get("thread")), cards[platform])
        except ChannelError as exc:
            log.warning("approval %s: a copy was not updated: %s", approval_id, exc.code, extra={"run_id": row.run_id})


# ---------------------------------------------------------------------------- clicks


def form_for(row: Approval | None, action: InboundAction) -> Form | str:
    """What a click that opens a form shows: the reason form (Reject), the edit form (Edit),
    or the whole draft (View draft); a sentence instead when the request is decided."""
    if row is None or row.member_id != action.member_id:  # another member's request is none of this app's
        return "This approval request no longer exists."
    if action.action == VIEW_ACTION:
        return Form(title="Draft", object_id=row.id, text=row.content or "(empty)")
    if row.status != "pending":
        return f"This request is already {row.status}."
    if action.action == REJECT_ACTION:
        return Form(title="Reject", object_id=row.id, submit_action=REJECTED_FORM, submit_label="Reject",
                    text=f"*{row.title}*", inputs=(FormInput("reason", "Why? (optional, helps next time)", optional=True, max_length=500),))
    return Form(title="Edit and approve", object_id=row.id, submit_action=EDITED_FORM, submit_label="Approve",
                text=f"*{row.title}*", inputs=(FormInput("content", "Draft", initial=row.content or "", max_length=3000),))


async def act(rt: Runtime, action: InboundAction) -> str:
    """A person approved (button), rejected (reason form) or approved an edit (edit form).
    Anything that changed nothing is told to them privately, where they clicked."""
    values = action.values or {}
    if action.action == REJECTED_FORM:
        kind: DecisionKind = "rejected"
        reason, content = (values.get("reason") or "").strip() or None, None
    else:
        kind, reason, content = "approved", None, values.get("content") if action.action == EDITED_FORM else None
    outcome, sentence = await decide_as(rt, action.object_id, action.user_id, action.platform, action.member_id, kind,
                                        reason=reason, content=content)
    if sentence:
        channel = _channel(rt, action.platform, action.member_id)
        if channel is not None:
            try:
                await channel.notice(action.where, action.user_id, sentence)
            except ChannelError as exc:
                log.info("notice to %s not sent: %s", action.user_id, exc.code)
    return outcome + (f": {sentence}" if sentence else "")


async def decide_as(rt: Runtime, approval_id: str, user_id: str, platform: str, member_id: str | None, kind: DecisionKind, *,
                    reason: str | None = None, content: str | None = None) -> tuple[str, str]:
    """Decide as the person `user_id` on `platform` (a click, a form, or the CLI's `--as`):
    check who they are, count a quorum, decide, update every copy. Returns the outcome
    (approved, rejected, counted, refused, unchanged) and, when nothing was decided, the
    sentence that tells the person why."""
    async with rt.db.session() as session:
        row = await approvals.get(session, approval_id)
    if row is None or (member_id is not None and row.member_id != member_id):
        return "unchanged", "This approval request no longer exists."
    channel = _channel(rt, platform, row.member_id)
    if row.status != "pending":
        return "unchanged", await _already(rt, row, channel)
    directory = people(rt)
    allowed = row.approvers or []
    if not directory.is_admin(user_id, platform) and not await directory.any_is(allowed, user_id, channel, platform):
        named = await directory.user_ids(allowed, None, platform)
        who = " or ".join(channel.mention(u) if channel else u for u in named)
        return "refused", f"Only {who + ' or ' if who else ''}an admin can approve this."
    decision = Decision(kind, user_id, reason=reason, content=content)
    if kind == "approved" and row.quorum > 1:
        counted = await _count(rt, approval_id, decision)
        if counted == "counted":
            await refresh(rt, approval_id)
            return "counted", ""
        if counted != "quorum":
            return "unchanged", counted
    if not await decide(rt, approval_id, decision):
        async with rt.db.session() as session:
            row = await approvals.get(session, approval_id)
        return "unchanged", await _already(rt, row, channel) if row else "This request is gone."
    return kind, ""


async def _count(rt: Runtime, approval_id: str, decision: Decision) -> str:
    """Add one person's approval toward the quorum: "counted", "quorum" (this one completes
    it: decide now), or a sentence for the person (they approved already)."""
    for _ in range(20):  # a lost race re-reads and tries again
        async with rt.db.session() as session:
            row = await approvals.get(session, approval_id)
            if row is None or row.status != "pending":
                return "This request was decided meanwhile."
            approved = {d["by"] for d in row.decisions or [] if d.get("decision") == "approved"}
            if decision.by in approved:
                return f"You approved already; {row.quorum - len(approved)} more needed."
            if len(approved) + 1 >= row.quorum:
                return "quorum"
            entry = _entry(decision, row)
            if await approvals.add_decision(session, approval_id, row.revision, entry):
                await activity.record(session, member_id=row.member_id, actor_type="person", actor_id=str(decision.by),
                                      action="approval_counted", description=f"Approved ({len(approved) + 1} of {row.quorum}): {row.title}",
                                      entity_type="approval", entity_id=approval_id, run_id=row.run_id)
                return "counted"
    return "Too many people clicked at once; please try again."


def _entry(decision: Decision, row: Approval) -> dict[str, Any]:
    edited = decision.content is not None and decision.content != row.content
    return {"by": decision.by, "decision": decision.decision, "at": utcnow().isoformat(), "reason": decision.reason,
            "content": decision.content if decision.content is not None else row.content, "edited": edited}


async def _already(rt: Runtime, row: Approval, channel: Channel | None) -> str:
    who = f" by {channel.mention(row.decided_by)}" if channel and row.decided_by else ""
    return {"approved": f"This request was already approved{who}.", "rejected": f"This request was already rejected{who}.",
            "expired": "This request has expired: nothing was sent.", "cancelled": "This request was cancelled (the run was stopped)."
            }.get(row.status, f"This request is {row.status}.")


# ---------------------------------------------------------------------------- deciding


async def decide(rt: Runtime, approval_id: str, decision: Decision, *, step_status: str = "done", error: str | None = None) -> bool:
    """Record the final decision and resume the run, once. The first decision wins: a later
    (or concurrent) one changes nothing and returns False. `step_status="failed"` (abort on
    timeout) fails the step in the same transaction, so no next step can start first."""
    started: Started = []
    async with rt.db.session() as session:
        current = await approvals.get(session, approval_id)
        if current is None:
            return False
        entry = _entry(decision, current)
        row = await approvals.decide(session, approval_id, decision.decision, decision.by, decision.reason, entry)
        if row is None:
            return False
        assert row.run_id is not None and row.step_path is not None
        # Only a waiting step: a click can come while the step is still posting its copies
        # (running); the step then finds the decision itself once it waits (`settle`), and
        # its heartbeat never sees its row taken from under it.
        resumed = await store.update_step(session, row.run_id, row.step_path, where_status=("waiting",), status=step_status,
                                          output=output_of(row), finished_at=utcnow(), wake_at=None, lease_until=None, error=error)
        await activity.record(session, member_id=row.member_id, actor_type="person" if decision.by else "system",
                              actor_id=decision.by or "system", action=f"approval_{decision.decision}",
                              description=_described(row, decision), entity_type="approval", entity_id=approval_id,
                              run_id=row.run_id, details={k: v for k, v in entry.items() if k != "content"})
        run = await store.run(session, row.run_id)
        depth = (run.depth if run is not None else 0) + 1  # of the runs the event starts
        origin = Origin.from_json(run.origin) if run is not None else None  # passed on to them
        event = {"approval_id": approval_id, "decision": decision.decision, "run_id": row.run_id, "by": decision.by}
        try:
            started = await publish_in(session, "approval.decided", row.member_id, event, settings(rt), depth, defer=True,
                                       parent_origin=origin)
        except ChainTooDeep as exc:  # the decision stands; only the runs its event would start are not started
            log.warning("approval.decided of %s not delivered: %s", approval_id, exc, extra={"run_id": row.run_id})
            await activity.record(session, member_id=row.member_id, actor_type="system", actor_id="system",
                                  action="event_not_delivered", description=f"approval.decided not delivered: {exc}",
                                  entity_type="approval", entity_id=approval_id, run_id=row.run_id)
        run_id = row.run_id
    assert rt.redis is not None
    queueing.enqueue_runs_steps(rt.redis, started)
    if not resumed:
        await refresh(rt, approval_id)
        return True
    try:
        # The run's next advance right here, in its own transaction (templates never render in
        # the decision's): no job hop between a click and the next step. If this process dies
        # first, the reconciler finds the run stalled and advances it.
        await advance(rt.db, rt.redis, run_id, settings(rt))
    except Exception:  # noqa: BLE001 - then as a job, which retries
        log.warning("advance after the decision failed; queued as a job", exc_info=True, extra={"run_id": run_id})
        queueing.enqueue_advance(rt.redis, run_id, job_id=f"resume-{approval_id}")
    await refresh(rt, approval_id)  # after the advance: the next step never waits for Slack
    return True


def output_of(row: Approval) -> dict[str, Any]:
    """What the approval step's output is once decided: `steps.<id>.decision`, `.approved`,
    `.by`, `.at`, `.reason` and `.content` (what was shown, or the approver's edit)."""
    final = (row.decisions or [{}])[-1]
    return {"decision": row.status, "approved": row.status == "approved", "by": row.decided_by,
            "at": final.get("at") or (row.decided_at.isoformat() if row.decided_at else None), "reason": row.reason,
            "content": final.get("content", row.content)}


async def settle(rt: Runtime, approval_id: str) -> bool:
    """The step has just begun to wait: if its request was decided while the step was still
    posting it, finish the step with that decision now and advance the run. True if so."""
    async with rt.db.session() as session:
        row = await approvals.get(session, approval_id)
        if row is None or row.status in ("pending", "cancelled") or row.run_id is None or row.step_path is None:
            return False
        if not await store.update_step(session, row.run_id, row.step_path, where_status=("waiting",), status="done",
                                       output=output_of(row), finished_at=utcnow(), wake_at=None, lease_until=None):
            return False
        run_id = row.run_id
    assert rt.redis is not None
    await advance(rt.db, rt.redis, run_id, settings(rt))
    await refresh(rt, approval_id)  # copies posted after the decision still show their buttons
    return True


def _described(row: Approval, decision: Decision) -> str:
    what = {"approved": "Approved", "rejected": "Rejected", "expired": "Expired (not sent)", "cancelled": "Cancelled"}[decision.decision]
    return f"{what}: {row.title}" + (f" — {decision.reason}" if decision.reason and decision.decision == "rejected" else "")


# ---------------------------------------------------------------------------- time


async def due(rt: Runtime, approval_id: str) -> str:
    """The step's timer fired: remind the approvers if the reminder is due and unsent (and
    sleep until the expiry), else follow `on_timeout`."""
    async with rt.db.session() as session:
        row = await approvals.get(session, approval_id)
        if row is None or row.status != "pending":
            return "decided"
        now = utcnow()
        if row.remind_at is not None and row.reminded_at is None and (row.expires_at is None or now < row.expires_at):
            if not await approvals.mark_reminded(session, approval_id):
                return "reminded already"
            await activity.record(session, member_id=row.member_id, actor_type="member", actor_id=row.member_id,
                                  action="approval_reminded", description=f"Reminded the approvers: {row.title}",
                                  entity_type="approval", entity_id=approval_id, run_id=row.run_id)
            assert row.run_id is not None and row.step_path is not None
            await store.update_step(session, row.run_id, row.step_path, wake_at=row.expires_at)
            run_id, path, expires_at = row.run_id, row.step_path, row.expires_at
        else:
            run_id = None
    if run_id is not None:
        await refresh(rt, approval_id)
        await _remind(rt, approval_id)
        if expires_at is not None:
            assert rt.redis is not None and path is not None
            queueing.schedule_wake(rt.redis, run_id, path, expires_at)
        return "reminded"
    await expire(rt, approval_id)
    return "expired"


async def _remind(rt: Runtime, approval_id: str) -> None:
    """A reply under each copy of the request that names its approvers (so they are
    notified) and says when it expires; each at most once (an effect per copy)."""
    async with rt.db.session() as session:
        row = await approvals.get(session, approval_id)
    if row is None:
        return
    for index, copy in enumerate(row.messages or []):
        channel = _channel(rt, str(copy.get("platform") or "slack"), row.member_id)
        if channel is None or not copy.get("message"):
            continue
        who = " ".join(channel.mention(u) for u in await people(rt).user_ids(row.approvers or [], None)) or "Admins"
        when = f" It expires at {_local(rt, row.expires_at)}, and then nothing is sent." if row.expires_at else ""
        text = f"{who}: a reminder, this still waits for your decision.{when}"
        key = f"{approval_id}-reminder-{index}"
        async with rt.db.session() as session:
            record = await effects.begin(session, key, "approval_reminder")
        if record.status == "done":
            continue
        try:
            sent = await channel.post(MessageRef(str(copy["conversation"]), None, copy.get("thread") or str(copy["message"])), text,
                                      effect_id=key)
        except ChannelError as exc:
            log.info("reminder for %s not posted: %s", approval_id, exc.code)
            continue
        async with rt.db.session() as session:
            await effects.finish(session, key, {"ts": sent.message})


async def expire(rt: Runtime, approval_id: str) -> bool:
    """The approval's time is up: follow its `on_timeout` — `skip` (expired: nothing sent),
    `abort` (expired, and the run fails with it) or `escalate` (ask `escalate_to` afresh)."""
    escalated: tuple[str, str, datetime] | None = None
    async with rt.db.session() as session:
        row = await approvals.get(session, approval_id)
        if row is None or row.status != "pending" or row.run_id is None or row.step_path is None:
            return False
        run = await store.run(session, row.run_id)
        assert run is not None
        step = find_step(await load_version(session, run.workflow_id, run.version), row.step_path)
        assert isinstance(step, ApprovalStep)
        policy = step.approval.on_timeout
        target = step.approval.escalate_to
        if policy == "escalate" and target and target not in (row.approvers or []):
            now = utcnow()
            expires_at = now + (step.approval.timeout_delta or DEFAULT_TIMEOUT)
            remind_after = step.approval.remind_after
            remind_at = now + remind_after if remind_after is not None else None
            wake_at = remind_at or expires_at  # the new approver is reminded too, then it expires
            await approvals.escalate(session, approval_id, target, expires_at, remind_at)
            await store.update_step(session, row.run_id, row.step_path, wake_at=wake_at)
            await activity.record(session, member_id=row.member_id, actor_type="system", actor_id="system",
                                  action="approval_escalated", description=f"No decision in time; asked {target}: {row.title}",
                                  entity_type="approval", entity_id=approval_id, run_id=row.run_id)
            escalated = (row.run_id, row.step_path, wake_at)
            origin = _origin(run)
            platform = step.approval.platform or origin.get("platform") or "slack"
    if escalated:
        assert rt.redis is not None
        queueing.schedule_wake(rt.redis, *escalated)
        async with rt.db.session() as session:
            fresh = await approvals.get(session, approval_id)
        if fresh is not None:
            await refresh(rt, approval_id)
            await _post_copies(rt, fresh, platform, "dm", {}, recipients=[str(target)])
        return True
    if policy == "abort":
        return await decide(rt, approval_id, Decision("expired", reason="timed out"), step_status="failed",
                            error="approval expired (on_timeout: abort)")
    return await decide(rt, approval_id, Decision("expired", reason="timed out"))


# ---------------------------------------------------------------------------- learning


async def lessons(session: Any, member_id: str, workflow: str, limit: int = 5) -> str:
    """What people said about this member's earlier drafts for this workflow (reasons for
    rejections, edits made before approving), newest first, for its next drafting prompt."""
    lines = []
    for row in await approvals.feedback(session, member_id, workflow, limit):
        final = (row.decisions or [{}])[-1]
        who = row.decided_by or "someone"
        if row.status == "rejected":
            lines.append(f"- {who} rejected “{row.title}”" + (f": {row.reason}" if row.reason else " (no reason given)"))
        elif final.get("edited"):
            lines.append(f"- {who} approved “{row.title}” after changing the draft to:\n{str(final.get('content'))[:600]}")
    if not lines:
        return ""
    return "Feedback on your earlier drafts for this workflow (follow it):\n" + "\n".join(lines)
