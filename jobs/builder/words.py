"""A workflow in plain words, for the plan a person starts: its steps as numbered tasks, its
schedule and time zone, who approves, and what the member may do on its own.

Everything here is derived from the checked definition, never from what the model says the
workflow does: the plan a person starts is the workflow that runs."""

from __future__ import annotations

from typing import Any

from agents.messages import Task
from agents.tools.registry import Tool
from jobs.workflows.definition import (
    AgentStep,
    ApprovalStep,
    ConditionStep,
    EventTrigger,
    ForeachStep,
    HandoffStep,
    ManualTrigger,
    ParallelStep,
    PostStep,
    ScheduleTrigger,
    Step,
    ToolStep,
    WaitStep,
    WebhookTrigger,
    WorkflowDefinition,
    iter_steps,
)

_AUTONOMY = {
    "notify": "notify: I only report; I never act outside the team",
    "approve": "approve: I ask before anything leaves the team",
    "auto": "auto: I act on my own",
}


def schedule_in_words(cron: str, zone: str) -> str:
    """"At 09:00, Monday through Friday (Amsterdam time)"; the cron itself when it has no words."""
    from cron_descriptor import ExpressionDescriptor, Options  # type: ignore[import-untyped]

    options = Options()
    options.use_24hour_time_format = True
    try:
        words = str(ExpressionDescriptor(cron, options).get_description())
    except Exception:  # noqa: BLE001 - a cron the describer does not know still has a plan
        words = f"on schedule `{cron}`"
    if words.startswith("At ") and "," not in words and cron.split()[2:] == ["*", "*", "*"]:
        words = "Every day a" + words[1:]
    return f"{words} ({zone_in_words(zone)})"


def zone_in_words(zone: str) -> str:
    """`Europe/Amsterdam` -> "Amsterdam time"; `UTC` stays UTC."""
    if "/" not in zone:
        return zone
    return zone.rsplit("/", 1)[1].replace("_", " ") + " time"


def trigger_in_words(definition: WorkflowDefinition, zone: str) -> str:
    trigger = definition.trigger
    if isinstance(trigger, ScheduleTrigger):
        return schedule_in_words(trigger.schedule, trigger.timezone or zone)
    if isinstance(trigger, ManualTrigger):
        return "When someone asks (no schedule)"
    if isinstance(trigger, WebhookTrigger):
        return "When its webhook is called"
    if isinstance(trigger, EventTrigger):
        return f"On {trigger.event.name}" + (f" from {trigger.event.member}" if trigger.event.member else "")
    return "—"


def autonomy_in_words(level: str) -> str:
    return _AUTONOMY.get(level, level)


def approvers_in_words(definition: WorkflowDefinition, mention: dict[str, str], requester: str) -> str:
    """Who approves what: "@ana approves each 'approve' before it goes on"; "nobody" when no
    step asks."""
    lines = []
    for _, step in iter_steps(definition):
        if isinstance(step, ApprovalStep):
            who = [mention.get(a, a) for a in step.approval.approvers or []] or [requester]
            quorum = f" ({step.approval.quorum} of them)" if step.approval.quorum > 1 else ""
            lines.append(f"{', '.join(who)}{quorum}: {_short(step.approval.message, 60)}")
    return "; ".join(lines) if lines else "Nobody: no step asks for approval"


def tasks(definition: WorkflowDefinition, tools: dict[str, Tool[Any]]) -> tuple[Task, ...]:
    """One numbered task per top-level step, in order; nested steps in its details."""
    return tuple(Task(id=step.id, title=_title(step, tools), details=_details(step, tools)) for step in definition.steps)


def _title(step: Step, tools: dict[str, Tool[Any]]) -> str:
    when = " (only when its condition holds)" if step.when else ""
    if isinstance(step, ToolStep):
        tool = tools.get(step.tool)
        what = _short(tool.description, 70) if tool is not None and tool.description else step.tool
        return f"{what} ({step.tool}){when}"
    if isinstance(step, AgentStep):
        return f"{step.agent.capitalize()} writes: {_short(step.prompt, 70)}{when}"
    if isinstance(step, ApprovalStep):
        return f"Ask for approval: {_short(step.approval.message, 70)}{when}"
    if isinstance(step, PostStep):
        return f"Post in {step.post.channel}: {_short(step.post.text, 60)}{when}"
    if isinstance(step, WaitStep):
        return f"Wait {step.wait}" if step.wait else f"Wait until {step.until}"
    if isinstance(step, ForeachStep):
        return f"For each of {_short(str(step.foreach), 50)}: " + " → ".join(s.id for s in step.steps)
    if isinstance(step, ConditionStep):
        return f"If {_short(str(step.condition.if_), 60)}"
    if isinstance(step, ParallelStep):
        return f"At the same time: {len(step.parallel)} branches"
    if isinstance(step, HandoffStep):
        return f"Hand over to {step.handoff.member.capitalize()}" + (f" ({step.handoff.workflow})" if step.handoff.workflow else "")
    return step.id


def _details(step: Step, tools: dict[str, Tool[Any]]) -> str:
    inner = [s for s in _all([step]) if s is not step]
    return "\n".join(f"• {_title(s, tools)}" for s in inner[:8])


def _all(steps: list[Step]) -> list[Step]:
    """These steps and the ones nested in them, in order (`iter_steps` does this for a whole
    definition; here it is one step's subtree)."""
    out: list[Step] = []
    for step in steps:
        out.append(step)
        if isinstance(step, ForeachStep):
            out += _all(step.steps)
        elif isinstance(step, ConditionStep):
            out += _all(step.condition.then) + _all(step.condition.else_)
        elif isinstance(step, ParallelStep):
            for branch in step.parallel:
                out += _all(branch)
    return out


def _short(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
