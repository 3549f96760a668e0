"""Running one step of a run: the leaf step kinds, each a small function with its side effect
at the edge.

`run_step` claims the step (a lease that a heartbeat renews while it runs), renders its
templates, runs it under its timeout, and records the outcome: done, waiting (approval, wait),
retrying (with backoff on RQ's scheduler), or failed and then `on_error`. Side effects carry
an effect id derived from the run and the step path, recorded before they act."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agents import prompts
from agents.channels import Channel, ChannelError
from agents.members import MemberProfile
from agents.tools.context import HistoryLine, ToolContext
from agents.tools.registry import ToolError, resolve
from agents.turns import LlmUnavailable, TurnSettings, run_turn
from jobs import engine, pacing
from jobs.runtime import Runtime
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
from storage import activity, approvals, effects, members
from storage import workflows as store
from storage.models import utcnow

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Suspend:
    """The step waits (no worker held) until `wake_at`, or a decision for an approval."""

    wake_at: datetime | None
    approval_id: str | None = None


class StepFailure(Exception):
    """The step failed in a way a retry cannot fix (bad template, unknown tool...)."""


async def run_step(rt: Runtime, run_id: str, path: str) -> str:
    lease = _lease(rt)
    async with rt.db.session() as session:
        run = await store.run(session, run_id)
        if run is None or run.status in store.FINISHED_RUN:
            return "run finished"
        definition = await engine.load_version(session, run.workflow_id, run.version)
        rows = await store.steps(session, run_id)
        secrets = templates.SecretsView(await engine._secrets(rt, session))
        plan = engine.Walk()
        engine.walk(definition.steps, "", engine.run_context(run, secrets), rows, plan)
        ctx = plan.contexts.get(path)
        attempt = await store.claim_step(session, run_id, path, utcnow() + lease)
    if attempt is None:
        return "step taken or finished"
    if ctx is None:
        raise LookupError(f"step {path} is not open in run {run_id}")
    step = engine.find_step(definition, path)
    extra = {"run_id": run_id, "workflow": definition.name, "member": definition.member}
    outcome: Any
    try:
        async with _heartbeat(rt, run_id, path, lease):
            limit = step.timeout_delta
            work = _execute(rt, definition, run_id, path, step, ctx, attempt)
            outcome = await (asyncio.wait_for(work, limit.total_seconds()) if limit else work)
    except (templates.TemplateError, StepFailure) as exc:
        return await _failed(rt, definition, run_id, path, step, _redact(str(exc), secrets), attempt, retryable=False)
    except TimeoutError:
        return await _failed(rt, definition, run_id, path, step, f"timed out after {step.timeout}", attempt, retryable=True)
    except Exception as exc:  # noqa: BLE001 - any failure of a step follows its retry/on_error
        log.warning("step %s failed: %s", path, exc, extra=extra)
        return await _failed(rt, definition, run_id, path, step, _redact(f"{type(exc).__name__}: {exc}", secrets), attempt, retryable=True)
    assert rt.redis is not None
    if isinstance(outcome, Suspend):
        async with rt.db.session() as session:
            await store.update_step(session, run_id, path, where_status=("running",), status="waiting",
                                    wake_at=outcome.wake_at, lease_until=None,
                                    input={"approval_id": outcome.approval_id} if outcome.approval_id else None)
            _, to_queue = await engine.advance_in(session, run_id, rt.loaded.config.secrets_key, engine._grace(rt))
        if outcome.wake_at is not None:
            engine.schedule_wake(rt.redis, run_id, path, outcome.wake_at)
        engine.enqueue_steps(rt.redis, run_id, to_queue)
        return "waiting"
    output = templates.redact_value(outcome, secrets.used_values())
    async with rt.db.session() as session:
        done = await store.update_step(session, run_id, path, where_status=("running",), status="done",
                                       output=engine._jsonable(output), finished_at=utcnow(), lease_until=None, error=None)
        feed = [activity.entry(member_id=definition.member, actor_type="member", actor_id=definition.member,
                               action="step_done", description=f"{definition.name}: {path} done", entity_type="step",
                               entity_id=path, run_id=run_id)] if done else []
        # The next advance runs in this transaction (no extra job per step), and writes `feed`.
        _, to_queue = await engine.advance_in(session, run_id, rt.loaded.config.secrets_key, engine._grace(rt), feed)
    engine.enqueue_steps(rt.redis, run_id, to_queue)
    return "done"


async def _failed(rt: Runtime, definition: WorkflowDefinition, run_id: str, path: str, step: Step, error: str, attempt: int, *, retryable: bool) -> str:
    """Retry with backoff while attempts remain; then follow `on_error`."""
    assert rt.redis is not None
    policy = step.retry
    if retryable and policy is not None and attempt <= policy.max:
        wake_at = utcnow() + policy.delay(attempt)
        async with rt.db.session() as session:
            await store.update_step(session, run_id, path, where_status=("running",), status="retrying", error=error,
                                    wake_at=wake_at, lease_until=None)
        engine.schedule_wake(rt.redis, run_id, path, wake_at)
        return f"retrying at {wake_at:%H:%M:%S}"
    status = "skipped" if step.on_error == "skip" else "failed"
    async with rt.db.session() as session:
        await store.update_step(session, run_id, path, where_status=("running",), status=status, error=error,
                                finished_at=utcnow(), lease_until=None)
        feed = [activity.entry(member_id=definition.member, actor_type="member", actor_id=definition.member,
                               action="step_failed", description=f"{definition.name}: {path} failed: {error}",
                               entity_type="step", entity_id=path, run_id=run_id)]
        _, to_queue = await engine.advance_in(session, run_id, rt.loaded.config.secrets_key, engine._grace(rt), feed)
    engine.enqueue_steps(rt.redis, run_id, to_queue)
    return f"{status}: {error}"


@contextlib.asynccontextmanager
async def _heartbeat(rt: Runtime, run_id: str, path: str, lease: timedelta) -> AsyncIterator[None]:
    """Keep the lease while the step runs; a killed worker stops renewing it."""

    async def renew() -> None:
        while True:
            await asyncio.sleep(lease.total_seconds() / 3)
            async with rt.db.session() as session:
                await store.update_step(session, run_id, path, where_status=("running",), lease_until=utcnow() + lease)

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def _lease(rt: Runtime) -> timedelta:
    return timedelta(seconds=rt.loaded.config.workers.step_lease)


def _redact(text: str, secrets: templates.SecretsView) -> str:
    return templates.redact(text, secrets._all_values())


async def _execute(rt: Runtime, definition: WorkflowDefinition, run_id: str, path: str, step: Step, ctx: dict[str, Any], attempt: int) -> Any:
    render = _renderer(step, ctx)
    if isinstance(step, PostStep):
        return await _post(rt, definition, run_id, path, render(step.post.channel, "post.channel"),
                           render(step.post.text, "post.text"), render(step.post.thread_ts, "post.thread_ts"), step.post.platform)
    if isinstance(step, AgentStep):
        return await _agent(rt, run_id, path, step.agent, render(step.prompt, "prompt"), step.tools)
    if isinstance(step, ToolStep):
        return await _tool(rt, definition, run_id, path, step.tool, render(step.args, "args"))
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


def effect_id(run_id: str, path: str) -> str:
    return f"wf-{run_id}-{hashlib.sha1(path.encode()).hexdigest()[:12]}"


async def _post(rt: Runtime, definition: WorkflowDefinition, run_id: str, path: str, channel_id: Any, text: Any, thread_ts: Any, platform: str | None) -> dict[str, Any]:
    """Post at most once: the effect row is written before posting; after a crash between the
    post and its record, the channel is asked whether the post landed before posting again."""
    channel = _channel(rt, platform or "slack", definition.member)
    key = effect_id(run_id, path)
    async with rt.db.session() as session:
        row = await effects.begin(session, key, "post")
        if row.status == "done":
            return dict(row.result)
        landed_before = bool(row.result.get("attempted"))
        await effects.remember_intent(session, key, {"attempted": True, "channel": str(channel_id)})
    if landed_before:
        ts = await channel.find_effect(str(channel_id), str(thread_ts) if thread_ts else None, key)
        if ts is not None:
            result = {"channel": str(channel_id), "ts": ts}
            async with rt.db.session() as session:
                await effects.finish(session, key, result)
            return result
    assert rt.redis is not None
    await pacing.pace(rt.redis, f"{platform or 'slack'}:{definition.member}:{channel_id}", rt.loaded.config.workers.channel_post_interval)
    try:
        ts = await channel.post(str(channel_id), str(text), thread_ts=str(thread_ts) if thread_ts else None, effect_id=key)
    except ChannelError as exc:
        raise StepFailure(f"step {path!r}: could not post to {channel_id}: {exc.code}") from None
    result = {"channel": str(channel_id), "ts": ts}
    async with rt.db.session() as session:
        await effects.finish(session, key, result)
    return result


async def _agent(rt: Runtime, run_id: str, path: str, member_id: str, prompt: Any, tool_names: list[str] | None) -> str:
    async with rt.db.session() as session:
        member = await members.profile(session, member_id)
        workspace = await members.workspace(session)
        colleagues = await members.profiles(session)
    if member is None:
        raise StepFailure(f"step {path!r}: no member {member_id!r}")
    names = [n for n in member.tools if tool_names is None or n in tool_names]
    ctx = ToolContext(member=member, channel=_channel(rt, "slack", member_id), conversation_channel="", thread_ts=None,
                      user_id=member_id, run_id=f"{run_id}-{hashlib.sha1(path.encode()).hexdigest()[:8]}", history=_no_history)
    llm = rt.loaded.config.llm

    async def no_usage(_: Any) -> None:
        return None

    try:
        result = await run_turn(rt.llm, TurnSettings(model=llm.model, max_tokens=llm.max_tokens, max_iterations=llm.max_iterations),
                                prompts.system_blocks(member, workspace, datetime.now(UTC), colleagues),
                                [{"role": "user", "content": str(prompt)}], resolve(names), ctx, no_usage)
    except LlmUnavailable as exc:
        raise RuntimeError(f"LLM unavailable ({exc.kind})") from None
    return result.text


async def _no_history(_limit: int) -> list[HistoryLine]:
    return []


async def _tool(rt: Runtime, definition: WorkflowDefinition, run_id: str, path: str, name: str, args: Any) -> Any:
    try:
        [tool] = resolve([name])
    except KeyError:
        raise StepFailure(f"step {path!r}: unknown tool {name!r}") from None
    member = await _member(rt, definition.member)
    if member is None:
        raise StepFailure(f"step {path!r}: no member {definition.member!r}")
    ctx = ToolContext(member=member, channel=_channel(rt, "slack", definition.member), conversation_channel="", thread_ts=None,
                      user_id=definition.member, run_id=effect_id(run_id, path), history=_no_history)
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
    request = step.approval
    approval_id = effect_id(run_id, path).replace("wf-", "ap-")
    timeout = request.timeout_delta
    expires_at = utcnow() + timeout if timeout is not None else None
    shown = render(request.show, "approval.show") if request.show is not None else ""
    async with rt.db.session() as session:
        await approvals.open_request(
            session, approval_id=approval_id, run_id=run_id, step_path=path, member_id=definition.member,
            title=str(render(request.message, "approval.message")), content="" if shown is None else str(shown),
            approvers=list(request.approvers or []), expires_at=expires_at,
        )
        await activity.record(session, member_id=definition.member, actor_type="member", actor_id=definition.member,
                              action="approval_requested", description=f"{definition.name}: asked for approval ({path})",
                              entity_type="approval", entity_id=approval_id, run_id=run_id)
    return Suspend(wake_at=expires_at, approval_id=approval_id)


async def _handoff(rt: Runtime, definition: WorkflowDefinition, run_id: str, path: str, step: HandoffStep, render: Any) -> dict[str, Any]:
    """Start the other member's run and publish `member.handoff`, exactly once: the runs, the
    feed row and the effect record commit in one transaction, and a retry finds the record."""
    handoff = step.handoff
    key = effect_id(run_id, path).replace("wf-", "ho-")
    child_input = render(handoff.input or {}, "handoff.input") if handoff.workflow else None
    message = render(handoff.message, "handoff.message") if handoff.message else None
    async with rt.db.session() as session:
        record = await effects.begin(session, key, "handoff")
        if record.status == "done":
            return dict(record.result)
        result: dict[str, Any] = {"member": handoff.member}
        started: list[tuple[str | None, list[Any]]] = []
        if handoff.workflow:
            workflow = await store.by_name(session, handoff.workflow)
            if workflow is None:
                raise StepFailure(f"step {path!r}: no workflow named {handoff.workflow!r}")
            child, first_steps = await engine.start_loaded(session, workflow, "handoff", child_input or {})
            result["run_id"] = child
            started.append((child, first_steps))
        if message is not None:
            result["message"] = message
        event = {**result, "from": definition.member, "from_run_id": run_id}  # run_id: the run it started, if any
        started += await engine.publish_in(session, "member.handoff", handoff.member, event)
        await activity.record(session, member_id=definition.member, actor_type="member", actor_id=definition.member,
                              action="handoff", description=f"{definition.name}: handed off to {handoff.member}",
                              entity_type="member", entity_id=handoff.member, run_id=run_id, details=result)
        await effects.finish(session, key, result)
    assert rt.redis is not None
    engine.enqueue_runs_steps(rt.redis, started)
    return result


class _NoChannel:
    """For members not connected to a platform: every call fails with a clear reason."""

    platform = "none"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def post(self, *_: Any, **__: Any) -> str:
        raise ChannelError("not_connected", self.reason)

    async def find_effect(self, *_: Any) -> str | None:
        return None

    async def set_working(self, *_: Any) -> None:
        return None

    async def clear_working(self, *_: Any) -> None:
        return None

    async def lookup_user(self, *_: Any) -> None:
        raise ChannelError("not_connected", self.reason)


def _channel(rt: Runtime, platform: str, member_id: str) -> Channel:
    try:
        return rt.channels(platform, member_id)
    except LookupError as exc:
        return _NoChannel(str(exc))
