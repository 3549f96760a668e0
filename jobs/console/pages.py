"""The console's facts as plain cards (`Page`), the same for a command's answer and the home tab."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from agents.members import MemberProfile
from agents.messages import (
    WORKFLOW_PAUSE_ACTION,
    WORKFLOW_RESUME_ACTION,
    WORKFLOW_RUN_ACTION,
    Button,
    Card,
    Field,
    Page,
)
from jobs.console.facts import BudgetUse, Period, Spend, WorkflowFacts
from jobs.spend import notices
from storage.models import Activity, StepRun, Workflow, WorkflowRun, utcnow
from storage.performance import Performance
from teammates.config import Config

ERROR_SHOWN = 300  # characters of a failed step's error
Mention = Callable[[str], str]

EVERYONE = (
    ("status", "who I am, my status, workflows, pending approvals and spend this period"),
    ("workflows", "my workflows: schedule, last and next run, with Pause / Resume / Run now"),
    ("runs WORKFLOW", "a workflow's recent runs, failed steps and their errors"),
    ("approvals", "your pending approvals, with their buttons"),
    ("activity", "what I did lately"),
    ("usage", "what I and you spent this period"),
    ("help", "this list"),
)
ADMINS = (
    ("pause", "stop me answering and running workflows until resumed"),
    ("resume", "undo a pause"),
    ("team", "every member with role, status and spend this period"),
    ("config", "change my role, description, persona, autonomy, channels, time zone, budget"),
)


def local(moment: datetime | None, zone: str) -> str:
    """"14:02" today, "2 Dec 14:02" otherwise, in the workspace's time zone."""
    if moment is None:
        return "-"
    tz = ZoneInfo(zone)
    when = moment.astimezone(tz)
    return f"{when:%H:%M}" if when.date() == utcnow().astimezone(tz).date() else f"{when.day} {when:%b %H:%M}"


def help_page(name: str, command: str, admin: bool, lead: str = "") -> Page:
    """The commands this person may use (admins see theirs too), after `lead` if any."""
    lines = [f"`{command} {sub}` — {what}" for sub, what in EVERYONE]
    if admin:
        lines += ["*Admins only*"] + [f"`{command} {sub}` — {what}" for sub, what in ADMINS]
    return Page(text="\n".join([lead, f"*{name}'s commands*", *lines]).strip())


def status_line(profile: MemberProfile, config: Config, mention: Mention) -> str:
    if profile.status != "paused":
        return "🟢 Active"
    from jobs.people import People

    by = f" by {mention(People.from_config(config).user_id(profile.paused_by))}" if profile.paused_by else ""
    return f"⏸️ Paused{by} since {local(profile.paused_at, config.workspace.timezone)}"


def who_card(profile: MemberProfile, config: Config, mention: Mention, *, active: int, pending: int, spend: Spend,
             period: Period, budget: BudgetUse | None) -> Card:
    fields = [Field("Role", profile.role or "-"), Field("Status", status_line(profile, config, mention)),
              Field("Workflows active", str(active)), Field("Pending approvals", str(pending)),
              Field(f"Spend ({period.label})", spend_text(spend, config))]
    if budget is not None:
        fields.append(Field("Budget", budget_text(budget, config)))
    return Card(text=f"{profile.name}: {profile.role}", title=f"{profile.name} — {profile.role}", fields=tuple(fields),
                body=profile.description)


def performance_card(p: Performance, config: Config, days: int) -> Card:
    """How the member did lately: tasks, approvals and how fast people decide, cost per day."""
    wait = p.median_seconds_to_decision
    decided = "" if wait is None else f"; median {duration(wait)} to a decision"
    recent = sorted(p.cost_per_day.items())[-7:]
    costs = ", ".join(f"{day[5:]}: {cost:,.2f}" for day, cost in recent) or "nothing spent"
    return Card(text=f"Last {days} days", title=f"Last {days} days", fields=(
        Field("Tasks", f"{p.tasks_done} done, {p.tasks_failed} failed"),
        Field("Approvals", f"{p.approvals_asked} asked: {p.approvals_approved} approved, {p.approvals_rejected} rejected, "
                           f"{p.approvals_expired} expired{decided}"),
        Field(f"Cost per day ({config.workspace.currency})", costs),
    ))


def duration(seconds: float) -> str:
    """12 s, 4 min, 2.5 h."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def spend_text(spend: Spend, config: Config) -> str:
    return f"{spend.tokens:,} tokens, {spend.cost:,.2f} {config.workspace.currency}"


def budget_text(use: BudgetUse, config: Config) -> str:
    every = "a day" if use.limit.period == "day" else "a month"
    currency = config.workspace.currency
    return f"{notices.amount(use.limit, use.used, currency)} of {notices.amount(use.limit, use.limit.amount, currency)} {every}"


def workflow_card(item: WorkflowFacts, zone: str) -> Card:
    row = item.row
    last = item.last_run
    last_text = "never" if last is None else f"{last.status}, {local(last.finished_at or last.started_at, zone)}"
    if last is not None and last.error and last.status in ("failed", "skipped"):
        last_text += f" — {_short(last.error, 150)}"
    buttons: tuple[Button, ...] = ()
    if item.may_manage:
        toggle = (Button(WORKFLOW_RESUME_ACTION, "Resume", row.name, "primary") if row.status == "paused"
                  else Button(WORKFLOW_PAUSE_ACTION, "Pause", row.name))
        buttons = (toggle, Button(WORKFLOW_RUN_ACTION, "Run now", row.name))
    status = "⏸️ paused" if row.status == "paused" else "🟢 active" if row.status == "active" else row.status
    return Card(text=f"{row.name}: {row.status}", title=row.name,
                fields=(Field("Status", status), Field("When", item.when), Field("Last run", last_text),
                        Field("Next run", local(item.next_run, zone) if item.next_run else "-")),
                buttons=buttons)


def workflows_page(name: str, items: Sequence[WorkflowFacts], zone: str) -> Page:
    if not items:
        return Page(text=f"{name} has no workflows yet. Ask {name} in a DM to set one up.")
    return Page(text=f"*{name}'s workflows*", cards=tuple(workflow_card(i, zone) for i in items))


def runs_page(workflow: Workflow, runs: Sequence[tuple[WorkflowRun, list[tuple[str, StepRun]]]], zone: str) -> Page:
    if not runs:
        return Page(text=f"{workflow.name} has not run yet.")
    cards = []
    for run, failed in runs:
        fields = [Field("Status", run.status), Field("Trigger", run.trigger), Field("Started", local(run.started_at, zone)),
                  Field("Finished", local(run.finished_at, zone) if run.finished_at else "-")]
        lines = [f"`{path}`: {_short(step.error or 'failed', ERROR_SHOWN)}" for path, step in failed]
        if run.error and not lines:
            lines.append(_short(run.error, ERROR_SHOWN))
        cards.append(Card(text=f"{run.id}: {run.status}", title=f"Run {run.id}", fields=tuple(fields),
                          status=("Failed steps:\n" if failed else "") + "\n".join(lines)))
    return Page(text=f"*Recent runs of {workflow.name}*", cards=tuple(cards),
                note=f"`teammates runs --workflow {workflow.name}` shows every step.")


def approvals_page(cards: Sequence[Card]) -> Page:
    if not cards:
        return Page(text="Nothing waits for your approval here.")
    return Page(text=f"*{len(cards)} waiting for your approval*", cards=tuple(cards))


def activity_card(rows: Sequence[Activity], zone: str) -> Card:
    lines = [f"{local(r.created_at, zone)}  {_short(r.description, 200)}" for r in rows]
    return Card(text="Recent activity", title="Recent activity", status="\n".join(lines) or "Nothing yet.")


def usage_page(name: str, period: Period, member: Spend, person: Spend, member_budget: BudgetUse | None,
               person_budget: BudgetUse | None, config: Config) -> Page:
    fields = [Field(name, spend_text(member, config)), Field("You (with every member)", spend_text(person, config))]
    if member_budget is not None:
        fields.append(Field(f"{name}'s budget", budget_text(member_budget, config)))
    if person_budget is not None:
        fields.append(Field("Your budget", budget_text(person_budget, config)))
    return Page(text=f"*Spend, {period.label}*", cards=(Card(text="Spend", fields=tuple(fields)),))


def team_page(rows: Sequence[tuple[MemberProfile, Spend]], period: Period, config: Config, mention: Mention) -> Page:
    cards = tuple(Card(text=f"{p.name}: {p.status}", title=f"{p.name} — {p.role}",
                       fields=(Field("Status", status_line(p, config, mention)), Field(f"Spend ({period.label})", spend_text(s, config))))
                  for p, s in rows)
    return Page(text="*The team*", cards=cards)


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
