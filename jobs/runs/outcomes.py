"""How a finished run ended, told to the person who asked for it: once, and only when worth it.

A run is worth telling about when it did something outside the team (posts outside its origin
conversation, effect tools, messages its agent steps sent elsewhere), when an approval was
rejected or expired, when a step was skipped or failed on its way, or when it failed or was
cancelled by someone else. A quiet success is only recorded in the activity feed.

Told exactly once: the effect row `outcome-<run id>` is written (with the `run.finished`
activity row, in one transaction) before anything is sent, so the finishing code running twice
finds it; a crash between the message and its record is reconciled with `find_effect` in a
conversation, and not repeated in a DM (whose conversation is only known once sent). The
message goes to the origin's thread when the run came from a conversation, else to the origin's
person privately (`Channel.notify`)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agents.channels import ChannelError, is_permanent
from agents.messages import MessageRef
from agents.tools.registry import resolve
from jobs import pacing, team
from jobs.people import People
from jobs.runs.definitions import find_step
from jobs.runs.origin import Origin
from jobs.runtime import Runtime
from jobs.workflows.definition import (
    ApprovalStep,
    ConditionStep,
    PostStep,
    ToolStep,
    WorkflowDefinition,
)
from storage import activity, effects
from storage.models import StepRun, WorkflowRun

log = logging.getLogger(__name__)

DEFAULT_PLATFORM = "slack"  # where a run with no platform in its origin reaches people
_KIND_WORDS = {"post": ("message posted", "messages posted"), "email": ("email sent", "emails sent")}


MAX_PACE_WAIT = 5.0  # seconds a job may wait for its turn in a channel; longer, it comes back later


def effect_key(run_id: str) -> str:
    return f"outcome-{run_id}"


class ChannelBusy(Exception):
    """The channel's next free slot is more than `MAX_PACE_WAIT` away (a burst of posts is going
    out): rather than hold a worker, the caller schedules itself after `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"channel busy for {seconds:.0f} s")
        self.seconds = seconds


async def pace(rt: Runtime, key: str) -> None:
    """Wait for this channel's turn (shared with the posts there), or raise `ChannelBusy`."""
    assert rt.redis is not None
    interval = rt.loaded.config.workers.channel_post_interval
    busy = pacing.free_at(rt.redis, key) - time.time()
    if interval > 0 and busy > MAX_PACE_WAIT:
        raise ChannelBusy(busy)
    await pacing.pace(rt.redis, key, interval)


@dataclass
class Outcome:
    """What a finished run did that its requester would want to hear, in plain words."""

    workflow: str
    status: str
    done: list[str] = field(default_factory=list)  # "Send reminder ×3", "2 messages posted"
    rejected: list[str] = field(default_factory=list)  # "1 rejected by @ben (too formal)"
    skipped: list[str] = field(default_factory=list)  # "1 skipped: no email address"
    failure: str | None = None
    cancelled_by_requester: bool = False

    @property
    def worth_telling(self) -> bool:
        if self.done or self.rejected or self.skipped:
            return True
        if self.status == "failed":
            return True
        return self.status == "cancelled" and not self.cancelled_by_requester

    def sentence(self) -> str:
        verb = {"completed": "finished", "failed": "failed", "cancelled": "was cancelled"}.get(self.status, self.status)
        parts = [*self.done, *self.rejected, *self.skipped]
        if self.failure and self.status == "failed":
            parts.insert(0, self.failure)
        elif self.status == "cancelled" and self.failure:
            parts.insert(0, self.failure)
        if not parts:
            return f"{self.workflow} {verb}."
        return f"{self.workflow} {verb}: {', '.join(parts)}."


def summarize(definition: WorkflowDefinition, run: WorkflowRun, rows: dict[str, StepRun], agent_effects: list[tuple[str, dict[str, Any]]],
              origin: Origin | None, mention: Callable[[str], str], people: People,
              team: frozenset[str] | set[str] = frozenset()) -> Outcome:
    """The outcome from the run's step rows (no I/O). `agent_effects`: (kind, result) of the
    effects its agent steps' tools finished; `mention` names a person id or platform user."""
    outcome = Outcome(workflow=definition.name, status=run.status)
    # Posts where the team already sees them (the run's own conversation, a team channel such
    # as the activity feed) are not news to the requester; a post anywhere else is.
    inside = {*team, *([origin.conversation] if origin is not None and origin.conversation else [])}
    tool_counts: Counter[str] = Counter()
    posts = 0
    rejected: list[tuple[str, str]] = []
    expired = 0
    skipped: list[str] = []
    for path, row in rows.items():
        try:
            step = find_step(definition, path)
        except LookupError:
            continue
        output = row.output if isinstance(row.output, dict) else {}
        if row.status == "done" and isinstance(step, PostStep) and output.get("channel") not in inside:
            posts += 1
        elif row.status == "done" and isinstance(step, ToolStep) and _is_effect(step.tool):
            tool_counts[step.tool] += 1
        elif row.status == "done" and isinstance(step, ConditionStep) and _empty_branch(step, output.get("branch")):
            # A condition that chose a branch with no steps did nothing for this run (or item):
            # "1 skipped (has email address: no)".
            skipped.append(f"{words(step.id).lower()}: {'yes' if output.get('branch') == 'then' else 'no'}")
        elif row.status == "done" and isinstance(step, ApprovalStep):
            if output.get("decision") == "rejected":
                by = mention(str(output["by"])) if output.get("by") else "someone"
                rejected.append((by, str(output.get("reason") or "").strip()))
            elif output.get("decision") == "expired":
                expired += 1
        elif row.status == "skipped" and row.error:
            skipped.append(f"{words(step.id)}: {row.error}")
        elif row.status == "failed" and step.on_error == "continue":
            skipped.append(f"{words(step.id)} failed: {row.error}")
    kinds: Counter[str] = Counter()
    for kind, result in agent_effects:
        if kind == "post" and result.get("channel") in inside:
            continue  # an answer in the conversation the run came from leaves nothing outside it
        if kind == "post":
            posts += 1
        else:
            kinds[kind] += 1
    if posts:
        outcome.done.append(f"{posts} {_kind_words('post', posts)}")
    outcome.done += [f"{n} {_kind_words(kind, n)}" for kind, n in kinds.items()]
    outcome.done += [_tool_words(tool, n) for tool, n in tool_counts.items()]
    by_person: dict[tuple[str, str], int] = Counter(rejected)
    outcome.rejected += [f"{n} rejected by {by}" + (f" ({reason})" if reason else "") for (by, reason), n in by_person.items()]
    if expired:
        outcome.rejected.append(f"{expired} approval{'s' if expired > 1 else ''} expired (not sent)")
    by_reason = Counter(skipped)
    outcome.skipped += [f"{n} skipped ({why})" for why, n in by_reason.items()]
    if run.status in ("failed", "cancelled"):
        outcome.failure = run.error or run.status
    if run.status == "cancelled" and origin is not None and origin.person:
        by = (run.error or "").removeprefix("cancelled by ").strip()
        outcome.cancelled_by_requester = bool(by) and people.same(origin.person, by, origin.platform or DEFAULT_PLATFORM)
    return outcome


async def tell(rt: Runtime, run: WorkflowRun, definition: WorkflowDefinition, rows: dict[str, StepRun], origin: Origin) -> str:
    """Record `run.finished` and tell the requester how the run ended, both exactly once.
    Raises on a transient platform failure (the job is retried); a permanent one is logged."""
    platform = origin.platform or DEFAULT_PLATFORM
    people = People.from_config(rt.loaded.config)
    try:
        channel = rt.channels(platform, definition.member)
    except LookupError:
        channel = None
    key = effect_key(run.id)
    async with rt.db.session() as session:
        existing = await effects.get(session, key)
        if existing is not None and existing.status == "done":
            return "outcome already told"
        agent_effects = [(row.kind, dict(row.result or {})) for row in await effects.done_with_prefix(session, f"{run.id}-")]

    def mention(who: str) -> str:
        user = people.user_id(who, platform)
        return channel.mention(user) if channel is not None else user

    outcome = summarize(definition, run, rows, agent_effects, origin, mention, people,
                        await team.conversations(rt.db, rt.loaded.config))
    text = outcome.sentence()
    worth = outcome.worth_telling and bool(origin.conversation or origin.person)
    async with rt.db.session() as session:
        row, inserted = await effects.begin_with(session, key, "outcome", {"attempted": False, "told": worth})
        if inserted:
            await activity.record(session, member_id=definition.member, actor_type="member", actor_id=definition.member,
                                  action="run.finished", description=text if worth else f"{text} (nothing to tell)",
                                  entity_type="workflow", entity_id=definition.name, run_id=run.id,
                                  details={"status": run.status, "told": worth, "done": outcome.done, "rejected": outcome.rejected,
                                           "skipped": outcome.skipped, "failure": outcome.failure})
        result = dict(row.result or {})
    if row.status == "done":
        return "outcome already told"
    if not worth:
        async with rt.db.session() as session:
            await effects.finish(session, key, {"told": False})
        return "quiet: nothing to tell"
    if channel is None:
        async with rt.db.session() as session:
            await effects.finish(session, key, {"told": False, "error": "not_connected"})
        return f"outcome not told: {definition.member} is not connected to {platform}"
    to = MessageRef(origin.conversation, None, origin.thread) if origin.conversation else None
    if result.get("attempted") and not inserted:  # an earlier attempt may have landed before a crash
        found = await channel.find_effect(to, key) if to is not None else None
        if found is not None or to is None:
            async with rt.db.session() as session:
                await effects.finish(session, key, {"told": True, "reconciled": found is not None})
            return "outcome told before a crash" if found is not None else "outcome may have gone before a crash: not repeated"
    if to is not None:
        await pace(rt, f"{platform}:{definition.member}:{to.conversation}")  # may raise ChannelBusy: nothing sent yet
    async with rt.db.session() as session:
        await effects.remember_intent(session, key, {"attempted": True, "told": True})
    try:
        if to is not None:
            landed = await channel.post(to, text, effect_id=key)
        else:
            assert origin.person is not None
            landed = await channel.notify(people.user_id(origin.person, platform), text, effect_id=key)
    except ChannelError as exc:
        async with rt.db.session() as session:  # it did not land
            if is_permanent(exc):
                await effects.finish(session, key, {"told": False, "error": exc.code})
            else:
                await effects.remember_intent(session, key, {"attempted": False, "told": True})
        log.warning("outcome of run %s not told: %s", run.id, exc.code, extra={"run_id": run.id, "member": definition.member})
        if is_permanent(exc):
            return f"outcome not told: {exc.code}"
        raise
    async with rt.db.session() as session:
        await effects.finish(session, key, {"told": True, "conversation": landed.conversation, "message": landed.message})
    return "outcome told"


def _empty_branch(step: ConditionStep, branch: Any) -> bool:
    return branch in ("then", "else") and not (step.condition.then if branch == "then" else step.condition.else_)


def _tool_words(tool: str, n: int) -> str:
    """What `n` calls of an effect tool did, in words: `send_payment_reminder` -> "2 payment
    reminders sent"; another name -> "notify partner ×2"."""
    verb, _, thing = tool.partition("_")
    if verb == "send" and thing:
        noun = thing.replace("_", " ")
        return f"{n} {noun if n == 1 or noun.endswith('s') else noun + 's'} sent"
    return f"{words(tool)} ×{n}" if n > 1 else words(tool)


def words(step_id: str) -> str:
    """A step id in plain words: `send-reminders` -> `Send reminders`."""
    text = step_id.replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:] if text else step_id


def _is_effect(tool: str) -> bool:
    try:
        [found] = resolve([tool])
    except KeyError:
        return False
    return found.effect


def _kind_words(kind: str, n: int) -> str:
    one, many = _KIND_WORDS.get(kind, (f"{kind} call", f"{kind} calls"))
    return one if n == 1 else many
