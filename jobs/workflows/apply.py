"""Applying workflow definitions: the one way a definition becomes a stored workflow version.

`apply` is what `teammates workflow apply FILE...` calls (and, later, the builder's
`create_workflow` tool). Every document of one call is checked before any is written, then all
are written in the caller's one transaction — all or nothing. The checks, in order:

- the format, its syntax and limits, and where secrets may go (`load_definition`);
- the workflow's member, and the members of its `agent:` and `handoff:` steps, exist;
- tools exist in the tool registry; an agent step's `tools:` are among its member's tools
  (a `tool:` step runs a registered tool as the workflow's member, whatever that member's list);
- template variables, where they can be known before a run: `steps.X` names a step that has run
  by then (not a later one, not one inside a branch or foreach the step cannot see) and one of
  its fields; `inputs.Y` is declared (when the workflow declares inputs); other names are the
  foreach item, `loop`, `run`, `secrets` or Jinja's own;
- a handoff names a workflow that exists (stored, or in the same call) of the member it hands
  off to;
- no handoff loop: the graph of "starts" — a handoff to workflow W starts W, and a handoff to
  member M starts every workflow listening for `member.handoff` of M — across all stored
  workflows and the ones applied has no cycle through an applied one;
- an existing name keeps its member: moving a workflow to another member is `delete` + `apply`;
- autonomy (`jobs.autonomy`): only an admin sets `autonomy: auto`; under `notify` no step may
  be an effect; under `approve` every effect step has an approval before it on its path.

Chains that `apply` cannot see (a loop through `approval.decided`, or rows written otherwise)
are stopped at run time by the run's depth (`workflows.max_handoff_depth`).

Every refusal is one `ApplyError` line: the source, where in the document, and what is wrong.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, nodes
from jinja2.exceptions import TemplateSyntaxError
from pydantic import ValidationError

from agents.tools.registry import known_tools, resolve
from jobs import autonomy
from jobs.workflows.definition import (
    AgentStep,
    ApprovalStep,
    ConditionStep,
    DefinitionError,
    EventTrigger,
    ForeachStep,
    HandoffStep,
    ParallelStep,
    ScheduleTrigger,
    Step,
    ToolStep,
    WorkflowDefinition,
    as_document,
    iter_steps,
    load_definition,
)
from jobs.workflows.definition.workflow import strings
from storage import activity, members
from storage import workflows as store


class ApplyError(Exception):
    """A definition `apply` refuses; its message is one line a person can act on."""


@dataclass(frozen=True)
class Source:
    """One document to apply: `name` says where it came from (a file name) in messages."""

    name: str
    text: str


@dataclass(frozen=True)
class Applied:
    """The outcome for one workflow: its active version, whether a version was written, and
    whether its schedule needs queueing (active with a schedule trigger)."""

    name: str
    member: str
    version: int
    changed: bool
    scheduled: bool


async def apply(session: Any, sources: list[Source], *, created_by: str | None = None,
                fallback_creator: str | None = None, admin: bool = False, home_conversation: str | None = None,
                team_conversations: Collection[str] = (), check_only: bool = False) -> list[Applied]:
    """Check every source, then store each as a workflow or a new version (see the module
    docstring). Raises `ApplyError` before anything is written. `created_by`: who applies
    them (the activity row's actor, and a new workflow's creator: the person of its scheduled
    and webhook runs). `fallback_creator`: the creator stored when `created_by` is None (the
    activity row still says `system`). An existing workflow keeps its creator. `check_only`:
    every check, nothing written (the builder's draft; returns an empty list).

    Autonomy: `admin` says whether the one applying is an admin (only then is `autonomy: auto`
    accepted). A post step stays inside the team when its channel is the literal id
    `home_conversation` (the conversation the workflow was built in; None from the CLI) or one
    of `team_conversations` (`jobs.team.conversations`)."""
    loaded: list[tuple[Source, WorkflowDefinition]] = []
    seen: dict[str, str] = {}
    for source in sources:
        try:
            definition = load_definition(source.text, source=source.name)
        except DefinitionError as exc:
            raise ApplyError(str(exc)) from None
        if definition.name in seen:
            raise ApplyError(f"{source.name}: name: {definition.name!r} is also defined in {seen[definition.name]}")
        seen[definition.name] = source.name
        loaded.append((source, definition))
    profiles = await members.profiles(session)
    tools = {profile.id: set(profile.tools) for profile in profiles}
    levels = {profile.id: profile.autonomy for profile in profiles}
    inside = {*team_conversations, *([home_conversation] if home_conversation else [])}
    stored = await _stored(session)
    for source, definition in loaded:
        check_definition(definition, source.name, tools)
        check_autonomy(definition, source.name, levels.get(definition.member), admin=admin, who=created_by, inside=inside)
        existing = stored.get(definition.name)
        if existing is not None and existing.member != definition.member:
            raise ApplyError(f"{source.name}: member: workflow {definition.name!r} belongs to {existing.member}; to give it to "
                             f"{definition.member}, `teammates workflow delete {definition.name}` first, then apply")
    graph = {**stored, **{d.name: d for _, d in loaded}}
    for source, definition in loaded:
        _check_handoff_targets(definition, source.name, graph)
    for source, definition in loaded:
        loop = find_loop(definition.name, graph)
        if loop is not None:
            raise ApplyError(f"{source.name}: steps[{loop[0][1]}].handoff: a handoff loop: {_show_loop(definition.name, loop)};"
                             " a workflow may not start itself again through handoffs")
    results: list[Applied] = []
    if check_only:
        return results
    for _, definition in loaded:
        row, version, changed = await store.apply(session, as_document(definition), created_by=created_by or fallback_creator)
        if changed:
            await activity.record(session, member_id=definition.member, actor_type="person" if created_by else "system",
                                  actor_id=created_by or "system", action="workflow_applied",
                                  description=f"Applied {definition.name} (version {version})", entity_type="workflow",
                                  entity_id=definition.name)
        results.append(Applied(name=definition.name, member=definition.member, version=version, changed=changed,
                               scheduled=isinstance(definition.trigger, ScheduleTrigger) and row.status == "active"))
    return results


async def delete(session: Any, name: str, *, cancel_runs: bool = False, by: str | None = None) -> int:
    """Delete a workflow with its versions and runs; returns how many unfinished runs went with
    it. Refused (one line) while runs are unfinished unless `cancel_runs`, and while another
    workflow hands off to it. Its schedule stops: a slot's job finds no active workflow."""
    row = await store.by_name(session, name)
    if row is None:
        raise ApplyError(f"no workflow named {name!r}")
    stored = await _stored(session)
    for other, definition in stored.items():
        if other != name and any(target == name for _, _, target in _handoffs(definition)):
            raise ApplyError(f"{name}: workflow {other!r} hands off to it; change or delete {other} first")
    active = await store.active_runs(session, row.id)
    if active and not cancel_runs:
        raise ApplyError(f"{name}: {active} run(s) still unfinished; wait for them, or "
                         f"`teammates workflow delete {name} --cancel-runs` to stop them")
    await store.delete(session, row.id)
    await activity.record(session, member_id=row.member_id, actor_type="person" if by else "system", actor_id=by or "system",
                          action="workflow_deleted",
                          description=f"Deleted {name}" + (f" and cancelled {active} unfinished run(s)" if active else ""),
                          entity_type="workflow", entity_id=name)
    return active


# --- the checks (no I/O) -----------------------------------------------------------------------


def check_definition(definition: WorkflowDefinition, source: str, member_tools: dict[str, set[str]]) -> None:
    """Members, tools and template variables of one definition; raises `ApplyError`."""
    if definition.member not in member_tools:
        raise ApplyError(f"{source}: member: no member {definition.member!r} (members: {', '.join(sorted(member_tools))})")
    checker = _Checker(definition, source, member_tools)
    checker.sequence(definition.steps, "steps", frozenset(), frozenset())


def check_autonomy(definition: WorkflowDefinition, source: str, member_level: str | None, *, admin: bool, who: str | None,
                   inside: Collection[str]) -> None:
    """`auto` only from an admin; no effect step under `notify`; an approval before every
    effect step under `approve` (see `jobs.autonomy`). Raises `ApplyError`."""
    if definition.autonomy == "auto" and not admin:
        raise ApplyError(f"{source}: autonomy: only an admin may set autonomy: auto ({who or 'you'} is not an admin); "
                         "leave it out to use the member's level, or ask an admin to apply it")
    level = autonomy.effective(definition.autonomy, member_level)
    if level == "auto":
        return
    effect_tools = {tool.name for tool in resolve(known_tools()) if tool.effect}
    for found in autonomy.effect_steps(definition, effect_tools, inside):
        step = found.step.id
        if level == "notify":
            raise ApplyError(f"{source}: {found.where}: {step!r} sends outside the team ({found.what}), and autonomy is notify "
                             f"(the member only reports); remove {step!r}, or use autonomy: approve with an approval before it")
        if not found.approvals:
            raise ApplyError(f"{source}: {found.where}: {step!r} sends outside the team ({found.what}); "
                             f"add an approval before {step!r}, or ask an admin for autonomy: auto")


def find_loop(start: str, graph: dict[str, WorkflowDefinition]) -> list[tuple[str, str, str]] | None:
    """The shortest cycle of "starts" edges from `start` back to it, as (workflow, step id,
    next workflow) hops; None when there is none."""
    listeners: dict[str | None, list[str]] = {}
    for name, definition in graph.items():
        trigger = definition.trigger
        if isinstance(trigger, EventTrigger) and trigger.event.name == "member.handoff":
            listeners.setdefault(trigger.event.member, []).append(name)
    parent: dict[str, tuple[str, str]] = {}  # node -> (previous node, step id of the edge)
    queue = deque([start])
    while queue:
        node = queue.popleft()
        current = graph.get(node)
        if current is None:
            continue
        for step_id, member, target in _handoffs(current):
            heard = [*listeners.get(member, []), *listeners.get(None, [])]
            for nxt in ([target] if target else []) + heard:
                if nxt == start:
                    hops = [(node, step_id, nxt)]
                    while node != start:
                        node, via = parent[node]
                        hops.insert(0, (node, via, hops[0][0]))
                    return hops
                if nxt not in parent and nxt in graph:
                    parent[nxt] = (node, step_id)
                    queue.append(nxt)
    return None


def _show_loop(start: str, hops: list[tuple[str, str, str]]) -> str:
    return " → ".join([start, *(f"{target} (by step {step} of {source})" for source, step, target in hops)])


def _handoffs(definition: WorkflowDefinition) -> Iterator[tuple[str, str, str | None]]:
    """(step id, member, workflow or None) of every handoff step, nested ones included."""
    for _, step in iter_steps(definition):
        if isinstance(step, HandoffStep):
            yield step.id, step.handoff.member, step.handoff.workflow


def _check_handoff_targets(definition: WorkflowDefinition, source: str, graph: dict[str, WorkflowDefinition]) -> None:
    for step_id, member, target in _handoffs(definition):
        if target is None:
            continue
        other = graph.get(target)
        if other is None:
            raise ApplyError(f"{source}: steps[{step_id}].handoff.workflow: no workflow named {target!r} "
                             "(apply it first, or in the same command)")
        if other.member != member:
            raise ApplyError(f"{source}: steps[{step_id}].handoff.workflow: {target!r} is {other.member}'s, not {member}'s")


_JINJA = Environment()  # parsing only (never compiled or run): the names a template reads
_GLOBALS = frozenset(_JINJA.globals)
_ROOTS = frozenset({"steps", "inputs", "secrets", "run"})
_STEP_FIELDS = ("output", "status", "error")
_APPROVAL_FIELDS = ("decision", "approved", "by", "at", "reason", "content")
_NESTED: dict[str, Any] = {"foreach": {"steps"}, "parallel": {"parallel"}, "condition": {"condition": {"then", "else_"}}}


class _Checker:
    """Walks the steps as a run would see them: `visible` are the step ids a template of the
    current step can read (those done before it, as the engine's walk fills `steps`)."""

    def __init__(self, definition: WorkflowDefinition, source: str, member_tools: dict[str, set[str]]) -> None:
        self.definition = definition
        self.source = source
        self.member_tools = member_tools
        self.known_tools = set(known_tools())
        self.steps: dict[str, Step] = {step.id: step for _, step in iter_steps(definition)}
        self.inputs = {i.name for i in definition.inputs}

    def fail(self, where: str, problem: str) -> ApplyError:
        return ApplyError(f"{self.source}: {where}: {problem}")

    def sequence(self, steps: list[Step], where: str, visible: frozenset[str], local: frozenset[str]) -> frozenset[str]:
        """Check a sequence; returns the step ids it leaves readable to the steps after it."""
        exported: set[str] = set()
        for step in steps:
            at = f"{where}[{step.id}]"
            self.step(step, at, visible, local)
            mine = {step.id}
            if isinstance(step, ConditionStep):  # the chosen branch's steps stay readable
                mine |= self.sequence(step.condition.then, f"{at}.condition.then", visible, local)
                mine |= self.sequence(step.condition.else_, f"{at}.condition.else", visible, local)
            elif isinstance(step, ForeachStep):  # per item only: not readable after the foreach
                self.sequence(step.steps, f"{at}.steps", visible, local | {step.as_, "loop"})
            elif isinstance(step, ParallelStep):
                for index, branch in enumerate(step.parallel):
                    mine |= self.sequence(branch, f"{at}.parallel[{index}]", visible, local)
            visible = visible | mine
            exported |= mine
        return frozenset(exported)

    def step(self, step: Step, at: str, visible: frozenset[str], local: frozenset[str]) -> None:
        if isinstance(step, AgentStep):
            if step.agent not in self.member_tools:
                raise self.fail(f"{at}.agent", f"no member {step.agent!r} (members: {', '.join(sorted(self.member_tools))})")
            for name in step.tools or []:
                if name not in self.known_tools:
                    raise self.fail(f"{at}.tools", f"unknown tool {name!r} (tools: {', '.join(sorted(self.known_tools))})")
                if name not in self.member_tools[step.agent]:
                    raise self.fail(f"{at}.tools", f"{step.agent} does not have the tool {name!r} "
                                                   f"({step.agent}'s tools: {', '.join(sorted(self.member_tools[step.agent])) or 'none'})")
        elif isinstance(step, ToolStep) and step.tool not in self.known_tools:
            raise self.fail(f"{at}.tool", f"unknown tool {step.tool!r} (tools: {', '.join(sorted(self.known_tools))})")
        elif isinstance(step, HandoffStep) and step.handoff.member not in self.member_tools:
            raise self.fail(f"{at}.handoff.member", f"no member {step.handoff.member!r} "
                                                    f"(members: {', '.join(sorted(self.member_tools))})")
        data = step.model_dump(by_alias=True, exclude=_NESTED.get(step.kind))
        data.pop("id", None)
        for key, text in strings(data, ""):
            problem = self.template(text, visible, local)
            if problem:
                raise self.fail(f"{at}.{key}", problem)

    def template(self, text: str, visible: frozenset[str], local: frozenset[str]) -> str | None:
        """Why a template reads something no run can have here, or None."""
        if not any(marker in text for marker in ("{{", "{%")):
            return None
        try:
            tree = _JINJA.parse(text)
        except TemplateSyntaxError:
            return None  # `load_definition` reports syntax
        assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
        for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
            chain = _chain(node)
            if not chain:
                continue
            root = chain[0]
            if root in assigned or root in local or root in _GLOBALS:
                continue
            if root not in _ROOTS:
                extra = " (the foreach item is only known inside the foreach)" if root == "item" else ""
                return f"unknown variable {root!r}{extra}; templates read steps, inputs, secrets and run"
            problem = self.reference(chain, visible)
            if problem:
                return problem
        return None

    def reference(self, chain: list[Any], visible: frozenset[str]) -> str | None:
        root, rest = chain[0], chain[1:]
        shown = ".".join(str(part) for part in chain[:3])
        if root == "steps" and rest and isinstance(rest[0], str):
            target = self.steps.get(rest[0])
            if target is None:
                return f"unknown variable {shown!r}: no step {rest[0]!r} in this workflow"
            if rest[0] not in visible:
                return (f"{shown!r} is not known here: step {rest[0]!r} has not run by then "
                        "(it comes later, contains this step, or sits in a foreach or branch this step does not see)")
            if len(rest) > 1 and isinstance(rest[1], str):
                fields = list(_STEP_FIELDS)
                if isinstance(target, ApprovalStep):
                    fields += _APPROVAL_FIELDS
                if isinstance(target, ConditionStep):
                    fields.append("branch")
                if rest[1] not in fields:
                    return f"unknown variable {shown!r}: a step {target.kind} has {', '.join(fields)}"
        if root == "inputs" and rest and isinstance(rest[0], str) and self.inputs and rest[0] not in self.inputs:
            return f"unknown variable {shown!r}: no input {rest[0]!r} (inputs: {', '.join(sorted(self.inputs))})"
        if root == "run" and rest and rest[0] != "id":
            return f"unknown variable {shown!r}: run has id"
        return None


def _chain(node: nodes.Node) -> list[Any] | None:
    """`steps.find.output` as ['steps', 'find', 'output']; None for anything not a plain chain."""
    if isinstance(node, nodes.Name):
        return [node.name] if node.ctx == "load" else None
    if isinstance(node, nodes.Getattr):
        head = _chain(node.node)
        return None if head is None else [*head, node.attr]
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        head = _chain(node.node)
        return None if head is None else [*head, node.arg.value]
    return None


async def _stored(session: Any) -> dict[str, WorkflowDefinition]:
    """Every stored workflow's active definition (paused ones too: resuming does not check),
    by name. One that no longer validates has no edges to offer and is left out."""
    out: dict[str, WorkflowDefinition] = {}
    for row in await store.all_workflows(session):
        try:
            out[row.name] = WorkflowDefinition.model_validate(await store.definition(session, row.id, row.active_version))
        except ValidationError:
            continue
    return out
