"""What the console shows, read from storage: a member's workflows with their last and next
run, its runs, the approvals a person may decide, spend this period. Read-only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from agents.channels import Channel
from jobs import schedules
from jobs.builder import words
from jobs.people import People
from jobs.runtime import Runtime
from jobs.workflows.definition import ScheduleTrigger, WorkflowDefinition
from storage import approvals, budgets, members, performance, usage
from storage import workflows as store
from storage.budgets import Limit
from storage.models import Approval, StepRun, Workflow, WorkflowRun
from storage.performance import Performance

RUNS_SHOWN = 5


@dataclass(frozen=True)
class WorkflowFacts:
    row: Workflow
    when: str  # its trigger in words, in its time zone
    last_run: WorkflowRun | None
    next_run: datetime | None  # None: not scheduled, paused, or its member is
    may_manage: bool  # the viewer is its creator or an admin: Pause / Resume / Run now


@dataclass(frozen=True)
class Period:
    """The spend period the console reports: the member's budget's, else the workspace's, else a month."""

    name: str  # day | month
    since: datetime
    label: str  # "today" / "December 2026"


@dataclass(frozen=True)
class Spend:
    tokens: int
    cost: float


@dataclass(frozen=True)
class BudgetUse:
    limit: Limit
    used: float


async def workflows(rt: Runtime, member_id: str, viewer: str, platform: str, admin: bool, *, paused: bool) -> list[WorkflowFacts]:
    people = People.from_config(rt.loaded.config)
    now = datetime.now(UTC)
    out = []
    async with rt.db.session() as session:
        zone = (await members.workspace(session)).timezone
        for row in await store.of_member(session, member_id):
            definition = WorkflowDefinition.model_validate(await store.definition(session, row.id, row.active_version))
            trigger = definition.trigger
            upcoming = None
            if isinstance(trigger, ScheduleTrigger) and row.status == "active" and not paused:
                upcoming = schedules.next_slot(trigger.schedule, trigger.zone(zone), now)
            mine = row.created_by is not None and people.same(row.created_by, viewer, platform)
            out.append(WorkflowFacts(row, words.trigger_in_words(definition, zone), await store.last_run(session, row.id),
                                     upcoming, admin or mine))
    return out


async def runs(rt: Runtime, workflow: Workflow, limit: int = RUNS_SHOWN) -> list[tuple[WorkflowRun, list[tuple[str, StepRun]]]]:
    """The workflow's latest runs, newest first, each with its failed steps."""
    out = []
    async with rt.db.session() as session:
        for run in await store.runs(session, workflow.id, limit=limit):
            steps = await store.steps(session, run.id)
            out.append((run, [(path, step) for path, step in sorted(steps.items()) if step.status == "failed"]))
    return out


async def pending_for(rt: Runtime, member_id: str, viewer: str, platform: str, channel: Channel | None, admin: bool) -> list[Approval]:
    """The member's pending requests the viewer may decide: those naming them (people, users,
    groups), and every one for an admin."""
    people = People.from_config(rt.loaded.config)
    async with rt.db.session() as session:
        pending = await approvals.pending_of_member(session, member_id)
    if admin:
        return pending
    return [row for row in pending if await people.any_is(row.approvers or [], viewer, channel, platform)]


async def period(rt: Runtime, member_id: str, now: datetime | None = None) -> Period:
    async with rt.db.session() as session:
        found = await budgets.limits(session)
    limit = found.get(f"member:{member_id}") or found.get("workspace")
    name = limit.period if limit is not None and limit.period in ("day", "month") else "month"
    zone = ZoneInfo(rt.loaded.config.workspace.timezone)
    local = (now or datetime.now(UTC)).astimezone(zone)
    if name == "day":
        return Period("day", datetime(local.year, local.month, local.day, tzinfo=zone), "today")
    return Period("month", datetime(local.year, local.month, 1, tzinfo=zone), f"{local:%B %Y}")


PERFORMANCE_DAYS = 30


async def member_performance(rt: Runtime, member_id: str, now: datetime | None = None) -> Performance:
    """Seed 003's figures of the member over the last `PERFORMANCE_DAYS` days."""
    since = (now or datetime.now(UTC)) - timedelta(days=PERFORMANCE_DAYS)
    async with rt.db.session() as session:
        found = await performance.of_members(session, [member_id], since, rt.loaded.config.workspace.timezone)
    return found[member_id]


async def member_spend(rt: Runtime, member_id: str, since: datetime) -> Spend:
    async with rt.db.session() as session:
        return _spend(await usage.total(session, usage.Scope(since=since, member_id=member_id)))


async def person_spend(rt: Runtime, member_id: str | None, user_id: str, since: datetime) -> Spend:
    """What the person's conversations cost (with one member, or with all of them)."""
    async with rt.db.session() as session:
        return _spend(await usage.total(session, usage.Scope(since=since, member_id=member_id, user_ids=(user_id,))))


async def team_spend(rt: Runtime, since: datetime) -> dict[str, Spend]:
    async with rt.db.session() as session:
        return {m: _spend(f) for m, f in (await usage.by_member(session, usage.Scope(since=since))).items()}


def _spend(figures: usage.Figures) -> Spend:
    """Every billed token counts: input, output, cache reads and writes."""
    return Spend(figures.total, figures.cost)


async def budget_use(rt: Runtime, scope: str) -> BudgetUse | None:
    """A budget's limit and its use in the current period (None: no such budget)."""
    from jobs.spend import periods

    async with rt.db.session() as session:
        limit = (await budgets.limits(session)).get(scope)
        if limit is None:
            return None
        key = (scope, periods.key(limit.period, rt.loaded.config.workspace.timezone))
        row = (await budgets.use(session, [key]))[key]
    return BudgetUse(limit, row.used(limit.metric))
