"""Autonomy: what a member may do on its own, enforced in code (never left to the prompt).

Levels (`members[].autonomy`, overridden by a workflow's `autonomy`; default `approve`):
- `notify`: the member only reports. Effect steps are refused at apply; an effect is refused
  at run time and in conversations.
- `approve`: an effect needs a person's OK first: in a workflow an `approval` step on its path
  (before it in its own sequence, or in an enclosing sequence before the foreach, condition or
  parallel that contains it) that was approved in this run; in a conversation, a click on the
  confirmation card the member posts.
- `auto`: the member acts on its own. Only an admin may set it (config file, chat, workflow
  file); `apply` refuses it from anyone else.

An **effect** is anything that leaves the team:
- a tool whose `Tool.effect` is true (HTTP tools with `effect: true`, `send_email`);
- a post (a `post` step, a `post_message` call) into any conversation other than the one the
  work belongs to — a run's origin conversation, a turn's own conversation, the conversation a
  workflow was built in — or the team's own channels: the `channels.activity` and
  `channels.approvals` of any member in the config. Those are set by an admin as the team's
  feed and approval rooms; posting there never leaves the team.

At apply a post's channel counts as inside only when it is a literal id (a template could
render anywhere). This module holds the rules only; no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from jobs.workflows.definition import (
    ApprovalStep,
    ConditionStep,
    ForeachStep,
    ParallelStep,
    PostStep,
    Step,
    ToolStep,
    WorkflowDefinition,
)
from teammates.config import Config

Level = Literal["notify", "approve", "auto"]
LEVELS: tuple[Level, ...] = ("notify", "approve", "auto")
DEFAULT: Level = "approve"
POST_TOOL = "post_message"  # the built-in tool whose effect depends on where it posts


def effective(workflow_level: str | None, member_level: str | None) -> Level:
    """The workflow's own level, else its member's, else `approve`. An unknown stored value
    counts as `approve` (never more freedom than the default)."""
    for level in (workflow_level, member_level):
        if level in LEVELS:
            return level  # type: ignore[return-value]
        if level is not None:
            return DEFAULT
    return DEFAULT


def team_conversations(config: Config) -> frozenset[str]:
    """The team's own channels: every member's `channels.activity` and `channels.approvals`,
    and the workspace's activity feed."""
    found: set[str] = {config.workspace.channels.activity} if config.workspace.channels.activity else set()
    for member in config.members:
        for channel in (member.channels.activity, member.channels.approvals):
            if channel:
                found.add(channel)
    return frozenset(found)


def post_target(raw: Any) -> str | None:
    """The channel id a `post_message` input names (`<#C0123|name>` and `C0123` alike), or
    None when the input has none (the tool's own validation then refuses it)."""
    channel = raw.get("channel") if isinstance(raw, dict) else None
    if not isinstance(channel, str):
        return None
    return channel.strip().removeprefix("<#").split("|")[0].removesuffix(">").strip() or None


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


@dataclass(frozen=True)
class EffectStep:
    """A step that would leave the team, and what shows it (`tool send_x`, `post to C0123`)."""

    where: str  # `steps[remind].steps[send]`
    step: Step
    what: str
    approvals: tuple[str, ...]  # ids of the approval steps on its path, nearest last


def effect_steps(definition: WorkflowDefinition, effect_tools: Collection[str], inside: Collection[str]) -> Iterator[EffectStep]:
    """Every step of `definition` that is an effect, in document order, with the approvals on
    its path. `effect_tools`: names of tools with `effect=True`; `inside`: conversation ids a
    post may go to without leaving the team (the home conversation and the team's channels)."""
    yield from _walk(definition.steps, "steps", (), effect_tools, inside)


def _walk(steps: list[Step], where: str, before: tuple[str, ...], effect_tools: Collection[str],
          inside: Collection[str]) -> Iterator[EffectStep]:
    for step in steps:
        at = f"{where}[{step.id}]"
        what = effect_of(step, effect_tools, inside)
        if what is not None:
            yield EffectStep(at, step, what, before)
        if isinstance(step, ConditionStep):
            yield from _walk(step.condition.then, f"{at}.condition.then", before, effect_tools, inside)
            yield from _walk(step.condition.else_, f"{at}.condition.else", before, effect_tools, inside)
        elif isinstance(step, ForeachStep):
            yield from _walk(step.steps, f"{at}.steps", before, effect_tools, inside)
        elif isinstance(step, ParallelStep):
            for index, branch in enumerate(step.parallel):
                yield from _walk(branch, f"{at}.parallel[{index}]", before, effect_tools, inside)
        if isinstance(step, ApprovalStep):
            before = (*before, step.id)


def effect_of(step: Step, effect_tools: Collection[str], inside: Collection[str], rendered: Any = None) -> str | None:
    """What makes `step` an effect (`tool send_x`, `post to C0123`), or None. `rendered`: the
    post's channel (or a `post_message` step's args) as rendered at run time; at apply the
    definition's literal text is read, and a template counts as outside."""
    if isinstance(step, PostStep):
        channel = str(rendered if rendered is not None else step.post.channel).strip()
        if rendered is None and is_template(channel):
            return f"post to {channel}"
        return None if channel in inside else f"post to {channel}"
    if isinstance(step, ToolStep):
        if step.tool == POST_TOOL:
            args = rendered if rendered is not None else step.args
            target = post_target(args)
            if target is None or (rendered is None and is_template(target)) or target not in inside:
                return f"tool {POST_TOOL} to {target or 'a channel'}"
            return None
        if step.tool in effect_tools:
            return f"tool {step.tool}"
    return None


def call_effect(name: str, effect: bool, raw: Any, inside: Collection[str]) -> str | None:
    """What makes a tool call an effect (`tool send_x`, `post to C0123`), or None: an effect
    tool, or `post_message` into a conversation not in `inside`. `raw` is the model's input,
    unvalidated (a `post_message` without a channel is left to the tool to refuse)."""
    if effect:
        return f"tool {name}"
    if name == POST_TOOL:
        target = post_target(raw)
        if target is not None and target not in inside:
            return f"post to {target}"
    return None


def approvals_before(definition: WorkflowDefinition, step_id: str) -> tuple[str, ...] | None:
    """The ids of the approval steps on the path of step `step_id` (see the module
    docstring), None when no such step exists."""
    return _before(definition.steps, step_id, ())


def _before(steps: list[Step], step_id: str, before: tuple[str, ...]) -> tuple[str, ...] | None:
    for step in steps:
        if step.id == step_id:
            return before
        inner: list[list[Step]] = []
        if isinstance(step, ConditionStep):
            inner = [step.condition.then, step.condition.else_]
        elif isinstance(step, ForeachStep):
            inner = [step.steps]
        elif isinstance(step, ParallelStep):
            inner = list(step.parallel)
        for sequence in inner:
            found = _before(sequence, step_id, before)
            if found is not None:
                return found
        if isinstance(step, ApprovalStep):
            before = (*before, step.id)
    return None


def approved_on_path(definition: WorkflowDefinition, step_id: str, steps_view: dict[str, Any]) -> str | None:
    """The id of an approval on the path of `step_id` that was approved in this run (read from
    the walk's `steps` view of the step's context: no query), or None."""
    for approval in reversed(approvals_before(definition, step_id) or ()):
        view = steps_view.get(approval)
        if isinstance(view, dict) and view.get("approved") is True:
            return approval
    return None
