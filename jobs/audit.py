"""The audit trail of a period: who asked, what was planned, who approved, what ran, what it cost.

One `Record` per event, each with the ids that tie it to the rest (run, turn, approval, plan,
activity row), read from the tables that are the facts themselves, not from logs:
- `plan`: a workflow a member drafted in a conversation (storage/plans.py), by who asked, with
  where it ended (started, cancelled, ...);
- `run`: a workflow run (by the person it came from), with how it ended; `step`: each of its
  steps that started; `effect`: what its steps and agents did outside (posts, emails, HTTP);
- `approval`: a request, by its member; `decision`: each person's click, and an expiry or a
  cancellation (by whoever cancelled, else the system);
- `activity`: every activity row (what members did and what people did through the product:
  plans started, workflows applied, paused, deleted, budgets and settings changed);
- `cost`: the LLM cost of one run or one conversation turn in the period (`llm_usage.cost`
  summed, with its tokens). Only `cost` records carry a cost, so the column sums to the
  period's whole LLM cost, each call counted once.

Each event is in the period by its own time (a run by its start, a decision by its time, a
cost by its calls): an export `--since` a day lists each of them exactly once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import (
    Activity,
    Approval,
    Effect,
    LlmUsage,
    Plan,
    StepRun,
    Workflow,
    WorkflowRun,
)

COLUMNS = ("time", "kind", "actor", "member", "workflow", "run_id", "turn_id", "step", "approval_id", "plan_id",
           "activity_id", "description", "cost", "tokens")
"""The CSV columns, in order (the README documents each); JSON lines have the same keys."""


@dataclass(frozen=True)
class Record:
    time: datetime
    kind: str
    actor: str | None = None
    member: str | None = None
    workflow: str | None = None
    run_id: str | None = None
    turn_id: str | None = None
    step: str | None = None
    approval_id: str | None = None
    plan_id: str | None = None
    activity_id: int | None = None
    description: str = ""
    cost: float | None = None
    tokens: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["time"] = self.time.isoformat()
        return out


async def records(session: AsyncSession, since: datetime) -> list[Record]:
    """Every event from `since` on, oldest first."""
    out: list[Record] = []
    out += await _plans(session, since)
    runs = await _runs(session, since, out)
    out += await _steps_and_effects(session, runs, since)
    out += await _approvals(session, since)
    out += await _activity(session, since)
    out += await _costs(session, since)
    order = {kind: i for i, kind in enumerate(("plan", "run", "approval", "decision", "step", "effect", "activity", "cost"))}
    return sorted(out, key=lambda r: (r.time, order.get(r.kind, 99)))


async def _plans(session: AsyncSession, since: datetime) -> list[Record]:
    rows = await session.execute(select(Plan).where(Plan.created_at >= since))
    out = []
    for plan in rows.scalars():
        steps = len((plan.definition or {}).get("steps") or [])
        ended = f"; {plan.status}" + (f" by {plan.decided_by}" if plan.decided_by else "") if plan.status != "proposed" else "; proposed"
        what = f"a change to {plan.workflow} (from version {plan.base_version})" if plan.base_version else f"workflow {plan.workflow}"
        out.append(Record(plan.created_at, "plan", actor=plan.person or plan.requester, member=plan.member_id, workflow=plan.workflow,
                          plan_id=plan.id, description=f"Planned {what}: {steps} step(s){ended}"))
    return out


async def _runs(session: AsyncSession, since: datetime, out: list[Record]) -> dict[str, tuple[str, str]]:
    """Run records into `out`; returns each run's (workflow, member) by id."""
    rows = await session.execute(select(WorkflowRun, Workflow.name, Workflow.member_id).join(Workflow, Workflow.id == WorkflowRun.workflow_id)
                                 .where(WorkflowRun.started_at >= since))
    found: dict[str, tuple[str, str]] = {}
    for run, name, member in rows.all():
        origin = run.origin if isinstance(run.origin, dict) else {}
        how = origin.get("via") or run.trigger
        ended = run.status + (f": {run.error}" if run.error else "")
        out.append(Record(run.started_at, "run", actor=origin.get("person"), member=member, workflow=name, run_id=run.id,
                          description=f"Ran {name} v{run.version} ({how}): {ended}"))
        found[run.id] = (name, member)
    return found


async def _steps_and_effects(session: AsyncSession, runs: dict[str, tuple[str, str]], since: datetime) -> list[Record]:
    out: list[Record] = []
    ids = list(runs)
    for chunk in (ids[i:i + 500] for i in range(0, len(ids), 500)):
        rows = await session.execute(select(StepRun).where(StepRun.run_id.in_(chunk), StepRun.started_at.is_not(None)))
        for step in rows.scalars():
            name, member = runs[step.run_id]
            assert step.started_at is not None
            told = step.status + (f" after {step.attempt} attempts" if step.attempt > 1 else "") + (f": {step.error}" if step.error else "")
            out.append(Record(step.started_at, "step", actor=member, member=member, workflow=name, run_id=step.run_id,
                              step=step.step_path, description=f"Step {step.step_path}: {told}"))
    # A step's effects are `wf-<run id>-...`, its agents' tool effects `<run id>-...`: one read
    # of the period's effects, matched to the runs by that prefix (run ids have a fixed length).
    width = len(ids[0]) if ids else 0
    done = await session.execute(select(Effect).where(Effect.created_at >= since).order_by(Effect.created_at))
    for effect in done.scalars() if ids else []:
        run_id = effect.id[3:3 + width] if effect.id.startswith("wf-") else effect.id[:width]
        if run_id not in runs or effect.id[len(run_id) + (3 if effect.id.startswith("wf-") else 0):][:1] != "-":
            continue
        name, member = runs[run_id]
        result = effect.result or {}
        detail = ", ".join(f"{k}: {result[k]}" for k in ("tool", "to", "channel", "subject") if result.get(k))
        out.append(Record(effect.created_at, "effect", actor=member, member=member, workflow=name, run_id=run_id,
                          description=f"{effect.kind} {effect.status}" + (f" ({detail})" if detail else "") + f" [{effect.id}]"))
    return out


async def _approvals(session: AsyncSession, since: datetime) -> list[Record]:
    """Requests made in the period, and decisions made in it (of requests made before too)."""
    out: list[Record] = []
    rows = await session.execute(select(Approval).where(or_(Approval.created_at >= since, Approval.decided_at >= since)))
    for row in rows.scalars():
        def base(time: datetime, kind: str, actor: str, description: str, row: Approval = row) -> Record:
            return Record(time, kind, actor=actor, member=row.member_id, workflow=row.workflow, run_id=row.run_id, step=row.step_path,
                          approval_id=row.id, description=description)

        if row.created_at >= since:
            approvers = ", ".join(str(a) for a in row.approvers or [])
            out.append(base(row.created_at, "approval", row.member_id, f"Asked {approvers or 'for approval'}: {row.title}"))
        decided = set()
        for entry in row.decisions or []:
            at = _moment(entry.get("at"))
            if at is None or at < since:
                continue
            decided.add(entry.get("decision"))
            why = f" ({entry['reason']})" if entry.get("reason") else ""
            edits = " with edits" if entry.get("edited") else ""
            out.append(base(at, "decision", str(entry.get("by") or "system"),
                            f"{str(entry.get('decision')).capitalize()}{edits}{why}: {row.title}"))
        if row.status in ("expired", "cancelled") and row.status not in decided and row.decided_at is not None and row.decided_at >= since:
            why = f" ({row.reason})" if row.reason else ""
            out.append(base(row.decided_at, "decision", row.decided_by or "system", f"{row.status.capitalize()}{why}: {row.title}"))
    return out


async def _activity(session: AsyncSession, since: datetime) -> list[Record]:
    rows = await session.execute(select(Activity).where(Activity.created_at >= since).order_by(Activity.id))
    out = []
    for row in rows.scalars():
        details = row.details or {}
        plan = details.get("plan") if isinstance(details.get("plan"), str) else None
        approval = row.entity_id if row.entity_type == "approval" else None
        out.append(Record(row.created_at, "activity", actor=row.actor_id, member=row.member_id,
                          workflow=row.entity_id if row.entity_type == "workflow" else None, run_id=row.run_id,
                          step=row.entity_id if row.entity_type == "step" else None, approval_id=approval, plan_id=plan,
                          activity_id=row.id, description=f"{row.action}: {row.description}"))
    return out


async def _costs(session: AsyncSession, since: datetime) -> list[Record]:
    """One record per run (a workflow's agent steps) and per conversation turn."""
    tokens = (LlmUsage.input_tokens + LlmUsage.output_tokens + LlmUsage.cache_read_tokens + LlmUsage.cache_write_tokens)
    rows = await session.execute(
        select(LlmUsage.run_id, LlmUsage.workflow, LlmUsage.member_id, LlmUsage.user_id, func.min(LlmUsage.created_at),
               func.sum(LlmUsage.cost), func.sum(tokens), func.count())
        .where(LlmUsage.created_at >= since)
        .group_by(LlmUsage.run_id, LlmUsage.workflow, LlmUsage.member_id, LlmUsage.user_id))
    out = []
    for run_id, workflow, member, user, first, cost, used, calls in rows.all():
        is_run = workflow is not None
        out.append(Record(first, "cost", actor=user or member, member=member, workflow=workflow, run_id=run_id if is_run else None,
                          turn_id=None if is_run else run_id, cost=round(float(cost or 0), 6), tokens=int(used or 0),
                          description=f"{calls} LLM call(s) of {'run' if is_run else 'turn'} {run_id}"))
    return out


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
