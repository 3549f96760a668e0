"""The leaf step kinds, each a small function with its side effect at the edge.

Side effects carry an effect id derived from the run and the step path, recorded before they
act: a retry finds the record and never repeats what landed."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agents import prompts
from agents.channels import Channel, ChannelError
from agents.members import MemberProfile
from agents.messages import MessageRef
from agents.tools.context import Held, HistoryLine, ToolContext
from agents.tools.registry import Tool, ToolError, known_tools, resolve
from agents.turns import LlmUnavailable, OverBudget, TurnSettings, run_turn
from jobs import autonomy, pacing, pauses, team, tool_secrets
from jobs.runs import approvals as approvals_core
from jobs.runs import queueing
from jobs.runs.origin import Origin
from jobs.runs.settings import settings
from jobs.runs.start import ChainTooDeep, Started, publish_in, start_loaded
from jobs.runtime import Runtime
from jobs.spend import caps
from jobs.spend import limits as spend_limits
from jobs.spend import tell as spend_tell
from jobs.spend.meter import BudgetMeter
from jobs.tool_effects import ToolEffects
from jobs.workflows import templates
from jobs.workflows.definition import (
    AgentStep,
    ApprovalStep,
    HandoffStep,
    PostStep,
    Step,
    ToolStep,
    WaitStep,
    WorkflowDefinition,
)
from storage import activity, effects, members
from storage import workflows as store
from storage.models import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Suspend:
    """The step waits (no worker held) until `wake_at`, or a decision for an approval."""

    wake_at: datetime | None
    approval_id: str | None = None
    held: str | None = None  # why an effect step is held (its member's cap), shown as the step's error
    held_by: str | None = None  # the member whose cap holds it (`jobs.spend.caps.wake_held` finds it by this)


DEFAULT_PLATFORM = "slack"  # where a run with no platform in its origin posts


class StepFailure(Exception):
    """The step failed in a way a retry cannot fix (bad template, unknown tool...)."""


def effect_id(run_id: str, path: str) -> str:
    return f"wf-{run_id}-{hashlib.sha1(path.encode()).hexdigest()[:12]}"


async def execute(rt: Runtime, definition: WorkflowDefinition, run_id: str, path: str, step: Step, ctx: dict[str, Any], attempt: int) -> Any:
    """Run one leaf step: its output, or `Suspend` for a step that waits."""
    render = _renderer(step, ctx)
    if isinstance(step, PostStep):
        channel_id = render(step.post.channel, "post.channel")
        if await _check_effect(rt, definition, run_id, path, step, ctx, str(channel_id)):
            held = await _hold(rt, definition, run_id, path)
            if held is not None:
                return held
        return await _post(rt, definition, run_id, path, channel_id,
                           render(step.post.text, "post.text"), render(step.post.thread_ts, "post.thread_ts"), step.post.platform)
    if isinstance(step, AgentStep):
        return await _agent(rt, definition, run_id, path, step, render(step.prompt, "prompt"), ctx)
    if isinstance(step, ToolStep):
        args = render(step.args, "args")
        if (step.tool == autonomy.POST_TOOL or step.tool in _effect_tools()) \
                and await _check_effect(rt, definition, run_id, path, step, ctx, args):
            held = await _hold(rt, definition, run_id, path)
            if held is not None:
                return held
        return await _tool(rt, definition, run_id, path, step.tool, args, ctx.get("secrets"))
    if isinstance(step, ApprovalStep):
        return await _approval(rt, definition, run_id, path, step, render)
    if isinstance(step, WaitStep):
        if step.wait is not None:
            return Suspend(wake_at=utcnow() + (step.wait_delta or timedelta()))
        until = render(step.until, "until")
        moment = until if isinstance(until, datetime) else datetime.fromisoformat(str(until))
        return Suspend(wake_at=moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    if isinstance(step, HandoffStep):
        return await _handoff(rt, definition, run_id, path, step, render)
    raise StepFailure(f"step {step.id!r}: kind {step.kind} is not a leaf step")


def _renderer(step: Step, ctx: dict[str, Any]) -> Any:
    def render(value: Any, key: str) -> Any:
        return templates.render(value, ctx, step=step.id, key=key)

    return render


async def _post(rt: Runtime, definition: WorkflowDefinition, run_id: str, path: str, channel_id: Any, text: Any, thread: Any,
                platform: str | None) -> dict[str, Any]:
    """Post at most once: the effect row is written before posting; after a crash between the
    post and its record, the channel is asked whether the post landed before posting again.
    The platform: the step's, else the run's origin's, else Slack."""
    platform = platform or await _origin_platform(rt, run_id)
    channel = _channel(rt, platform, definition.member)
    to = MessageRef(str(channel_id), None, str(thread) if thread else None)
    key = effect_id(run_id, path)
    async with rt.db.session() as session:
        row = await effects.begin(session, key, "post")
        if row.status == "done":
            return dict(row.result)
        landed_before = bool(row.result.get("attempted"))
        await effects.remember_intent(session, key, {"attempted": True, "channel": str(channel_id)})
    if landed_before:
        found = await channel.find_effect(to, key)
        if found is not None:
            result = {"channel": found.conversation, "ts": found.message}
            async with rt.db.session() as session:
                await effects.finish(session, key, result)
            return result
    assert rt.redis is not None
    await pacing.pace(rt.redis, f"{platform}:{definition.member}:{channel_id}", rt.loaded.config.workers.channel_post_interval)
    try:
        posted = await channel.post(to, str(text), effect_id=key)
    except ChannelError as exc:
        raise StepFailure(f"step {path!r}: could not post to {channel_id}: {exc.code}") from None
    result = {"channel": posted.conversation, "ts": posted.message}
    async with rt.db.session() as session:
        await effects.finish(session, key, result)
    return result


_ORIGINS: dict[tuple[str, str], Origin | None] = {}
_ORIGINS_MAX = 10_000  # runs remembered per process; beyond it the cache starts over


async def _origin(rt: Runtime, run_id: str) -> Origin | None:
    """The run's origin, read once per process: it is written when the run starts and never
    changes, so every later post, agent and tool step of the run is spared the query."""
    key = (rt.db.url, run_id)
    if key in _ORIGINS:
        return _ORIGINS[key]
    async with rt.db.session() as session:
        run = await store.run(session, run_id)
    if run is None:
        return None  # not cached: a run that is not there yet may be by the next step
    origin = Origin.from_json(run.origin)
    if len(_ORIGINS) >= _ORIGINS_MAX:
        _ORIGINS.clear()
    _ORIGINS[key] = origin
    return origin


async def _origin_platform(rt: Runtime, run_id: str) -> str:
    origin = await _origin(rt, run_id)
    return (origin.platform if origin is not None else None) or DEFAULT_PLATFORM


def _effect_tools() -> frozenset[str]:
    """Names of the registered tools with `effect=True` (the registry only grows at import)."""
    return frozenset(tool.name for tool in resolve(known_tools()) if tool.effect)


async def _inside(rt: Runtime, origin: Origin | None) -> frozenset[str]:
    """Where a post of this run stays inside the team: its origin conversation and the
    team's channels (`jobs.team`)."""
    inside = await team.conversations(rt.db, rt.loaded.config)
    return inside | {origin.conversation} if origin is not None and origin.conversation else inside


async def _level(rt: Runtime, definition: WorkflowDefinition) -> autonomy.Level:
    member = await _member(rt, definition.member)
    return autonomy.effective(definition.autonomy, member.autonomy if member is not None else None)


async def _check_effect(rt: Runtime, definition: WorkflowDefinition, run_id: str, path: str, step: Step, ctx: dict[str, Any],
                        rendered: Any) -> str | None:
    """The engine's own check before a post or tool step acts (apply checked the definition;
    this checks the run): an effect under `notify` fails, and under `approve` fails unless an
    approval on its path was approved in this run. Raises `StepFailure` (the step's row and the
    activity feed then say why). Returns what makes the step an effect (None: it is not one)."""
    what = autonomy.effect_of(step, _effect_tools(), await _inside(rt, await _origin(rt, run_id)), rendered)
    if what is None:
        return None
    level = await _level(rt, definition)
    if level == "auto":
        return what
    extra = {"run_id": run_id, "workflow": definition.name, "member": definition.member}
    if level == "notify":
        log.warning("effect step %s stopped: autonomy notify", path, extra=extra)
        raise StepFailure(f"step {path!r}: stopped: it sends outside the team ({what}) and autonomy is notify "
                          "(the member only reports)")
    if autonomy.approved_on_path(definition, step.id, ctx.get("steps", {})) is None:
        log.warning("effect step %s stopped: no approval on its path was approved", path, extra=extra)
        raise StepFailure(f"step {path!r}: stopped: it sends outside the team ({what}) and no approval before it was approved "
                          f"in this run; add an approval before {step.id!r}, or ask an admin for autonomy: auto")
    return what


async def _hold(rt: Runtime, definition: WorkflowDefinition, run_id: str, path: str) -> Suspend | None:
    """An effect step takes a slot of its member's cap (`jobs.spend.caps`) before it acts; past
    the cap it is held until the cap resets (or an admin raises it and wakes it). The slot is
    keyed by the step's effect id: a retry of the same step takes no second one."""
    capped = await caps.take(rt.db, rt.loaded.config, definition.member, effect_id(run_id, path), run_id=run_id,
                             workflow=definition.name)
    if capped is None:
        return None
    return Suspend(wake_at=capped.resets_at.astimezone(UTC), held=capped.held(), held_by=definition.member)


def _agent_gate(rt: Runtime, definition: WorkflowDefinition, run_id: str, path: str, level: autonomy.Level, approved: str | None,
                inside: frozenset[str], member_id: str) -> Any:
    """The gate of an agent step's tool calls: an effect runs under `auto`, or under `approve`
    when an approval before the step was approved in this run; otherwise it is stopped, logged
    and recorded, and the model is told it needs an approval. An effect let through takes a
    slot of `member_id`'s cap first; past the cap it does not run and the model is told why."""

    async def gate(tool: Tool[Any], ctx: ToolContext, raw: Any) -> Held | None:
        what = autonomy.call_effect(tool.name, tool.effect, raw, inside)
        if what is None:
            return None
        if level == "auto" or (level == "approve" and approved is not None):
            return await _capped_call(rt, ctx, member_id, run_id, definition.name)
        extra = {"run_id": run_id, "workflow": definition.name, "member": definition.member}
        log.warning("agent step %s: %s stopped (autonomy %s, no approval)", path, what, level, extra=extra)
        async with rt.db.session() as session:
            await activity.record(session, member_id=definition.member, actor_type="member", actor_id=definition.member,
                                  action="effect_stopped",
                                  description=f"{definition.name}: {path}: stopped {what}: "
                                              + ("autonomy is notify" if level == "notify" else "no approval before it"),
                                  entity_type="step", entity_id=path, run_id=run_id, details={"tool": tool.name, "level": level})
        if level == "notify":
            return Held(f"Not done: {what} would leave the team, and this workflow's autonomy is notify (report only). "
                        "Report what you would do instead.")
        return Held(f"Not done: {what} would leave the team and needs approval first: no approval step before this one "
                    "was approved in this run. Do not try again; say in your answer what you would have sent.")

    return gate


async def _capped_call(rt: Runtime, ctx: ToolContext, member_id: str, run_id: str, workflow: str) -> Held | None:
    """A tool call's slot of its member's cap, keyed by the call's place in the step (the Nth
    effect of the step keeps its id on every attempt); past the cap, the model's answer."""
    slot = ctx.effects.next_id("slot") if ctx.effects is not None else f"{ctx.run_id}-{ctx.call_id}-slot"
    capped = await caps.take(rt.db, rt.loaded.config, member_id, slot, run_id=run_id, workflow=workflow)
    return None if capped is None else Held(capped.refusal(rt.loaded.config, ctx.channel.mention))


async def _agent(rt: Runtime, definition: WorkflowDefinition, run_id: str, path: str, step: AgentStep, prompt: Any,
                 step_ctx: dict[str, Any]) -> str:
    """An LLM turn by the step's member; every call is metered like a conversation turn's, per
    member, workflow and run (recorded as it happens, so a failed later call still counts).
    Its tool calls pass the autonomy gate (`_agent_gate`)."""
    member_id, tool_names = step.agent, step.tools
    async with rt.db.session() as session:
        member = await members.profile(session, member_id)
        workspace = await members.workspace(session)
        colleagues = await members.profiles(session)
        feedback = await approvals_core.lessons(session, member_id, definition.name)
    if member is None:
        raise StepFailure(f"step {path!r}: no member {member_id!r}")
    if feedback:  # what approvers said about this member's earlier drafts here (seed 003)
        prompt = f"{prompt}\n\n{feedback}"
    names = [n for n in member.tools if tool_names is None or n in tool_names]
    step_run = f"{run_id}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"  # the same on every attempt
    origin = await _origin(rt, run_id)
    gate = _agent_gate(rt, definition, run_id, path, await _level(rt, definition),
                       autonomy.approved_on_path(definition, step.id, step_ctx.get("steps", {})), await _inside(rt, origin),
                       member_id)
    ctx = ToolContext(member=member, channel=_channel(rt, await _origin_platform(rt, run_id), member_id), conversation=None,
                      user_id=member_id, run_id=step_run, history=_no_history, effects=ToolEffects(rt, step_run),
                      secrets=tool_secrets.reader(rt), gate=gate)
    llm = rt.loaded.config.llm
    platform = await _origin_platform(rt, run_id)
    meter = BudgetMeter(rt, spend_limits.Payer(member_id, run_id, workflow=definition.name), mention=ctx.channel.mention, to_person=False)
    try:
        result = await run_turn(rt.llm, TurnSettings(model=llm.model, max_tokens=llm.max_tokens, max_iterations=llm.max_iterations),
                                prompts.system_blocks(member, workspace, datetime.now(UTC), colleagues),
                                [{"role": "user", "content": str(prompt)}], resolve(names), ctx, meter)
    except LlmUnavailable as exc:
        raise RuntimeError(f"LLM unavailable ({exc.kind})") from None
    except OverBudget as exc:
        # The requester and the admins hear it once per budget period, not once per step.
        users = [*([origin.person] if origin is not None and origin.person else []), *spend_tell.admins(rt, platform)]
        await spend_tell.once(rt, member_id, platform, users, f"out-{exc.scope}-{exc.period}",
                              f"{definition.name} stopped at step {path!r}: {exc}")
        raise StepFailure(f"step {path!r}: over budget: {exc}") from None
    finally:
        await spend_tell.warn_admins(rt, member_id, platform, meter.crossed)
    return result.text


async def _no_history(_limit: int) -> list[HistoryLine]:
    return []


async def _tool(rt: Runtime, definition: WorkflowDefinition, run_id: str, path: str, name: str, args: Any,
                secrets: templates.SecretsView | None = None) -> Any:
    try:
        [tool] = resolve([name])
    except KeyError:
        raise StepFailure(f"step {path!r}: unknown tool {name!r}") from None
    member = await _member(rt, definition.member)
    if member is None:
        raise StepFailure(f"step {path!r}: no member {definition.member!r}")
    # The step's effect log keeps each effect's intent and answer with the values of the
    # secrets its args read redacted (args may hold them): a retried step finds a `done`
    # effect (an email, an HTTP effect) and does not repeat it.
    step_effects = ToolEffects(rt, effect_id(run_id, path),
                               redact=lambda record: templates.redact_value(record, secrets.used_values() if secrets is not None else []))
    ctx = ToolContext(member=member, channel=_channel(rt, await _origin_platform(rt, run_id), definition.member), conversation=None,
                      user_id=definition.member, run_id=effect_id(run_id, path), history=_no_history, effects=step_effects,
                      secrets=tool_secrets.reader(rt))
    try:
        return await tool.call(ctx, args)
    except ToolError as exc:
        raise RuntimeError(str(exc)) from None


_PROFILES: dict[tuple[str, str], tuple[float, MemberProfile | None]] = {}
PROFILE_TTL = 5.0


async def _member(rt: Runtime, member_id: str) -> MemberProfile | None:
    """The member's profile, kept for a few seconds: a burst of tool steps would otherwise
    read the same row once per step, and a profile edit may take effect that much later."""
    key, now = (rt.db.url, member_id), time.monotonic()
    hit = _PROFILES.get(key)
    if hit is not None and now - hit[0] < PROFILE_TTL:
        return hit[1]
    async with rt.db.session() as session:
        profile = await members.profile(session, member_id)
    _PROFILES[key] = (now, profile)
    return profile


async def _approval(rt: Runtime, definition: WorkflowDefinition, run_id: str, path: str, step: ApprovalStep, render: Any) -> Suspend:
    """Open the request and post it (both at most once); the step then waits for a decision,
    waking for the reminder and the expiry."""
    request = step.approval
    approval_id = effect_id(run_id, path).replace("wf-", "ap-")
    shown = render(request.show, "approval.show") if request.show is not None else ""
    try:
        wake_at = await approvals_core.request(
            rt, approval_id=approval_id, run_id=run_id, path=path, member_id=definition.member, workflow=definition.name,
            step=step, title=str(render(request.message, "approval.message")), content="" if shown is None else str(shown),
        )
    except approvals_core.RunFinished as exc:
        raise StepFailure(str(exc)) from None
    return Suspend(wake_at=wake_at, approval_id=approval_id)


async def _handoff(rt: Runtime, definition: WorkflowDefinition, run_id: str, path: str, step: HandoffStep, render: Any) -> dict[str, Any]:
    """Start the other member's run and publish `member.handoff`, exactly once: the runs, the
    feed row and the effect record commit in one transaction, and a retry finds the record."""
    handoff = step.handoff
    key = effect_id(run_id, path).replace("wf-", "ho-")
    child_input = render(handoff.input or {}, "handoff.input") if handoff.workflow else None
    message = render(handoff.message, "handoff.message") if handoff.message else None
    config = settings(rt)
    async with rt.db.session() as session:
        record = await effects.begin(session, key, "handoff")
        if record.status == "done":
            return dict(record.result)
        result: dict[str, Any] = {"member": handoff.member}
        started: Started = []
        parent = await store.run(session, run_id)
        depth = (parent.depth if parent is not None else 0) + 1  # the runs this handoff starts
        origin = Origin.from_json(parent.origin) if parent is not None else None  # theirs, with another `via`
        try:
            if handoff.workflow:
                workflow = await store.by_name(session, handoff.workflow)
                if workflow is None:
                    raise StepFailure(f"step {path!r}: no workflow named {handoff.workflow!r}")
                halted = await pauses.refusal(session, rt.loaded.config, workflow.member_id)
                if halted:  # a paused member's workflows do not run, a handoff's neither
                    raise StepFailure(f"step {path!r}: {halted}")
                child, first_steps = await start_loaded(session, workflow, "handoff", child_input or {}, settings=config,
                                                        depth=depth, origin=Origin.inherited(origin, "handoff"))
                result["run_id"] = child
                started.append((child, first_steps))
            if message is not None:
                result["message"] = message
            event = {**result, "from": definition.member, "from_run_id": run_id}  # run_id: the run it started, if any
            started += await publish_in(session, "member.handoff", handoff.member, event, config, depth,
                                        parent_origin=origin)
        except ChainTooDeep as exc:  # nothing of this handoff is written: the transaction rolls back
            raise StepFailure(f"step {path!r}: {exc}") from None
        await activity.record(session, member_id=definition.member, actor_type="member", actor_id=definition.member,
                              action="handoff", description=f"{definition.name}: handed off to {handoff.member}",
                              entity_type="member", entity_id=handoff.member, run_id=run_id, details=result)
        await effects.finish(session, key, result)
    assert rt.redis is not None
    queueing.enqueue_runs_steps(rt.redis, started)
    return result


class _NoChannel:
    """For members not connected to a platform: every call fails with a clear reason."""

    platform = "none"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def post(self, *_: Any, **__: Any) -> MessageRef:
        raise ChannelError("not_connected", self.reason)

    async def find_effect(self, *_: Any) -> MessageRef | None:
        return None

    async def set_working(self, *_: Any) -> None:
        return None

    async def clear_working(self, *_: Any) -> None:
        return None

    async def lookup_user(self, *_: Any) -> None:
        raise ChannelError("not_connected", self.reason)

    async def notify(self, *_: Any, **__: Any) -> MessageRef:
        raise ChannelError("not_connected", self.reason)

    async def send_card(self, *_: Any, **__: Any) -> Any:
        raise ChannelError("not_connected", self.reason)

    async def send_card_to_person(self, *_: Any, **__: Any) -> Any:
        raise ChannelError("not_connected", self.reason)

    async def update(self, *_: Any) -> None:
        raise ChannelError("not_connected", self.reason)

    async def notice(self, *_: Any) -> None:
        raise ChannelError("not_connected", self.reason)

    async def open_form(self, *_: Any) -> None:
        raise ChannelError("not_connected", self.reason)

    async def show(self, *_: Any) -> None:
        raise ChannelError("not_connected", self.reason)

    async def publish_home(self, *_: Any) -> None:
        raise ChannelError("not_connected", self.reason)

    async def group_members(self, *_: Any) -> list[str] | None:
        return None

    def mention(self, user_id: str) -> str:
        return user_id

    def mention_conversation(self, conversation: str) -> str:
        return conversation


def _channel(rt: Runtime, platform: str, member_id: str) -> Channel:
    try:
        return rt.channels(platform, member_id)
    except LookupError as exc:
        return _NoChannel(str(exc))
