"""One pass over a run's definition against its recorded step rows. No I/O.

The walk finds the leaf steps that can run now, decides containers that have no row yet
(`condition` picks a branch, `foreach` renders its items) and tells whether the run is done,
blocked or failed. What a container decided is recorded by the caller before anything inside
it runs, so a resumed run never decides again; those rows are stored whole, never shortened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from jobs.workflows import templates
from jobs.workflows.definition import ApprovalStep, ConditionStep, ForeachStep, ParallelStep, Step
from storage.models import StepRun, WorkflowRun

DONE = ("done", "skipped")
Outcome = Literal["done", "blocked", "failed"]
DEFAULT_MAX_FOREACH_ITEMS = 1000


@dataclass
class Walk:
    """What one pass over the definition found."""

    runnable: list[tuple[str, Step]] = field(default_factory=list)
    new_rows: list[tuple[str, str, Any]] = field(default_factory=list)  # (path, status, output)
    finished_rows: list[tuple[str, Any]] = field(default_factory=list)  # containers now done
    contexts: dict[str, dict[str, Any]] = field(default_factory=dict)  # template context per open leaf
    failed: str | None = None
    waiting: bool = False
    busy: bool = False  # a leaf step is queued, running or retrying (a container's own row never counts)
    output: Any = None
    max_foreach_items: int = DEFAULT_MAX_FOREACH_ITEMS
    _started: set[str] | None = None

    def started(self, rows: dict[str, StepRun], prefix: str) -> bool:
        """Has any step inside the sequence at `prefix` (`remind[3]/`, `par/1/`) a row?
        One set of every sequence prefix, built once a walk: a foreach over n items is
        walked in O(n), not O(n x rows)."""
        if self._started is None:
            self._started = {path[: i + 1] for path in rows for i, ch in enumerate(path) if ch == "/"}
        return prefix in self._started


def run_context(run: WorkflowRun, secrets: templates.SecretsView) -> dict[str, Any]:
    return {"inputs": dict(run.input or {}), "steps": {}, "secrets": secrets, "run": {"id": run.id}}


def step_view(step: Step, row: StepRun | None, output: Any = None, status: str | None = None) -> dict[str, Any]:
    """What `steps.<id>` shows templates: its output; approvals also their decision fields."""
    value = row.output if row is not None else output
    view: dict[str, Any] = {"output": value, "status": row.status if row is not None else status}
    if isinstance(step, ApprovalStep):
        decision = value if isinstance(value, dict) else {}
        view.update({k: decision.get(k) for k in ("decision", "approved", "by", "at", "reason", "content")})
        view["output"] = decision.get("content")
    if row is not None and row.error:
        view["error"] = row.error
    return view


def walk(steps: list[Step], prefix: str, ctx: dict[str, Any], rows: dict[str, StepRun], plan: Walk) -> Outcome:
    """Walk one sequence of steps."""
    for step in steps:
        path = prefix + step.id
        row = rows.get(path)
        container = isinstance(step, ConditionStep | ForeachStep | ParallelStep)
        if row is not None and row.status == "done" and container:
            pass  # walked below: the steps inside stay readable by later steps
        elif row is not None and (row.status in DONE or (row.status == "failed" and step.on_error == "continue")):
            ctx["steps"][step.id] = step_view(step, row)
            if _stops_block(step, row):
                _skip_rest(steps[steps.index(step) + 1:], prefix, ctx, rows, plan)
                return "done"
            continue
        if row is not None and row.status == "failed":
            plan.failed = f"step {step.id!r} failed: {row.error}"
            return "failed"
        if row is None and step.when is not None:
            try:
                go = templates.is_truthy(templates.render(step.when, ctx, step=step.id, key="when"))
            except templates.TemplateError as exc:
                plan.failed = str(exc)
                return "failed"
            if not go:
                plan.new_rows.append((path, "skipped", None))
                ctx["steps"][step.id] = step_view(step, None, None, "skipped")
                continue
        if container:
            assert isinstance(step, ConditionStep | ForeachStep | ParallelStep)
            outcome = _walk_container(step, path, row, ctx, rows, plan)
            if outcome != "done":
                return outcome
            continue
        if row is None:
            plan.runnable.append((path, step))
        elif row.status == "waiting":
            plan.waiting = True
        elif row.status in ("queued", "running", "retrying"):
            plan.busy = True
        plan.contexts[path] = ctx
        return "blocked"
    return "done"


def _stops_block(step: Step, row: StepRun) -> bool:
    """Not approved means not done: a decided approval that is not `approved` ends its block
    (unless the step says `on_reject: continue`)."""
    if not isinstance(step, ApprovalStep) or step.approval.on_reject != "stop" or row.status != "done":
        return False
    return not (isinstance(row.output, dict) and row.output.get("approved") is True)


def _skip_rest(rest: list[Step], prefix: str, ctx: dict[str, Any], rows: dict[str, StepRun], plan: Walk) -> None:
    for later in rest:
        row = rows.get(prefix + later.id)
        if row is None:
            plan.new_rows.append((prefix + later.id, "skipped", None))
        ctx["steps"][later.id] = step_view(later, row, None, "skipped")


def _walk_container(step: ConditionStep | ForeachStep | ParallelStep, path: str, row: StepRun | None, ctx: dict[str, Any],
                    rows: dict[str, StepRun], plan: Walk) -> Outcome:
    already_done = row is not None and row.status == "done"
    try:
        decided = row.output if row is not None else decide(step, ctx, plan.max_foreach_items)
    except templates.TemplateError as exc:
        plan.failed = str(exc)
        return "failed"
    except ValueError as exc:
        plan.failed = f"step {step.id!r}: {exc}"
        return "failed"
    if not isinstance(decided, dict):
        plan.failed = f"step {step.id!r}: its recorded decision is unreadable"
        return "failed"
    if row is None:
        plan.new_rows.append((path, "running", decided))
    if isinstance(step, ConditionStep):
        branch = decided.get("branch")
        chosen = step.condition.then if branch == "then" else step.condition.else_
        outcome = walk(chosen, f"{path}/{branch}/", ctx, rows, plan)
        if outcome == "done":
            last = ctx["steps"].get(chosen[-1].id, {}).get("output") if chosen else None
            if not already_done:
                plan.finished_rows.append((path, {**decided, "result": last}))
            ctx["steps"][step.id] = {"output": last, "branch": branch, "status": "done"}
        return outcome
    if isinstance(step, ForeachStep):
        sequences = [(f"{path}[{i}]/", step.steps, {step.as_: item, "loop": {"index": i}}) for i, item in enumerate(decided.get("items") or [])]
        limit = step.concurrency
    else:
        sequences = [(f"{path}/{i}/", branch, {}) for i, branch in enumerate(step.parallel)]
        limit = len(sequences)
    results: list[Any] = []
    finished_contexts: list[dict[str, Any]] = []
    active = 0
    open_sequences = 0
    for seq_prefix, seq_steps, extra in sequences:
        if active >= limit and not plan.started(rows, seq_prefix):
            open_sequences += 1
            results.append(None)
            continue
        seq_ctx = {**ctx, **extra, "steps": dict(ctx["steps"])}
        outcome = walk(seq_steps, seq_prefix, seq_ctx, rows, plan)
        if outcome == "failed":
            return "failed"
        if outcome == "blocked":
            active += 1
            open_sequences += 1
        results.append(seq_ctx["steps"].get(seq_steps[-1].id, {}).get("output"))
        finished_contexts.append(seq_ctx)
    if open_sequences:
        return "blocked"
    if not already_done:
        plan.finished_rows.append((path, {**decided, "results": results}))
    if isinstance(step, ParallelStep):  # each branch step exists once: later steps may read it
        for seq_ctx in finished_contexts:
            ctx["steps"].update(seq_ctx["steps"])
    ctx["steps"][step.id] = {"output": results, "status": "done"}
    return "done"


def decide(step: ConditionStep | ForeachStep | ParallelStep, ctx: dict[str, Any], max_items: int) -> dict[str, Any]:
    """What a container does, decided once: the branch, or the items (at most `max_items`)."""
    if isinstance(step, ConditionStep):
        value = templates.render(step.condition.if_, ctx, step=step.id, key="condition.if")
        return {"branch": "then" if templates.is_truthy(value) else "else"}
    if isinstance(step, ForeachStep):
        items = templates.render(step.foreach, ctx, step=step.id, key="foreach")
        if not isinstance(items, list):
            raise ValueError(f"foreach: expected a list, got {type(items).__name__}")
        if len(items) > max_items:
            raise ValueError(f"foreach: {len(items)} items, more than workflows.max_foreach_items ({max_items})")
        return {"items": items}
    return {}
