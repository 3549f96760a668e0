"""The workflow tools every member has in a conversation, whatever its `tools:` lists:
building workflows is what a member is.

They are made per runtime (`for_runtime`) in the core, which knows storage; the model sees them
like any tool. What the model sends is untrusted: a definition is checked exactly as
`teammates workflow apply` checks a file, and a refusal names what is missing or wrong so the
member asks the person instead of guessing. Nothing here activates a workflow: `create_workflow`
and `update_workflow` post a plan that the person starts (`jobs.builder.plans`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from agents.tools.context import ToolContext
from agents.tools.registry import Tool, ToolError
from jobs import schedules
from jobs.builder import plans, words
from jobs.builder.plans import may_manage
from jobs.pauses import MemberPaused
from jobs.people import People
from jobs.runs.approvals import refresh
from jobs.runs.cancel import NotCancellable, cancel_run
from jobs.runs.inputs import InputError
from jobs.runs.origin import Origin
from jobs.runs.settings import settings as run_settings
from jobs.runs.start import start_run
from jobs.runtime import Runtime
from jobs.workflows.definition import ScheduleTrigger, WorkflowDefinition
from storage import activity, members
from storage import workflows as store
from storage.models import Workflow

FORMAT = """\
The definition is a JSON object:
- name: lowercase-with-dashes, unique; description: one line.
- trigger: exactly one of {"schedule": "<5-field cron>"} (times are in the person's time zone; do not set one),
  {"manual": {}}, {"webhook": {...}}, {"event": {"name": ..., "member": ...}}.
- autonomy: "approve" (default: ask before anything leaves the team) or "notify" (only report); "auto" only an admin may set.
- inputs: optional [{"name", "type": string|integer|number|boolean|list|object, "default"}].
- steps: a list; each has a unique "id" and one kind:
  {"tool": NAME, "args": {...}} a tool you have; {"agent": YOUR_ID, "prompt": "..."} you write or decide something;
  {"approval": {"message": "...", "show": "{{ steps.draft.output }}", "timeout": "7d", "on_timeout": "skip"}}
  asks the person who set it up (or "approvers": [...]) before what follows; {"post": {"channel": ID, "text": "..."}};
  {"wait": "3d"}; {"foreach": "{{ steps.find.output }}", "steps": [...]} (each item is `item`);
  {"condition": {"if": "...", "then": [...], "else": [...]}}; {"handoff": {"member": ID, "message": "..."}}.
  Common keys: "when": "{{ steps.approve.approved }}", "retry": {"max": 2}, "on_error": "skip".
- Templates are Jinja: {{ inputs.x }}, {{ steps.<id>.output }}, {{ item.field }}; an approval step also has
  .approved and .content (the approved, possibly edited, text).
Anything that leaves the team (an email, a message to a client, a post elsewhere) needs an approval step before it."""


class DraftInput(BaseModel):
    definition: dict[str, Any] = Field(description="The whole workflow definition (see the tool description)")


class NameInput(BaseModel):
    name: str = Field(min_length=1, max_length=100, description="The workflow's name")


class RunNowInput(BaseModel):
    name: str = Field(min_length=1, max_length=100, description="The workflow's name")
    inputs: dict[str, Any] = Field(default_factory=dict, description="Values for its declared inputs")


class CancelRunInput(BaseModel):
    run_id: str = Field(min_length=1, max_length=64, description="The run's id")


class ListInput(BaseModel):
    pass


def for_runtime(rt: Runtime) -> list[Tool[Any]]:
    """The workflow tools, bound to this process's runtime."""

    async def create_workflow(ctx: ToolContext, args: DraftInput) -> dict[str, Any]:
        return (await plans.propose(rt, ctx, args.definition, change=False)).for_model()

    async def update_workflow(ctx: ToolContext, args: DraftInput) -> dict[str, Any]:
        return (await plans.propose(rt, ctx, args.definition, change=True)).for_model()

    async def list_my_workflows(ctx: ToolContext, _: ListInput) -> list[dict[str, Any]]:
        out = []
        async with rt.db.session() as session:
            zone = (await members.workspace(session)).timezone
            for row in await store.all_workflows(session):
                if row.member_id != ctx.member.id:
                    continue
                definition = WorkflowDefinition.model_validate(await store.definition(session, row.id, row.active_version))
                last = await store.last_run(session, row.id)
                trigger = definition.trigger
                upcoming = None
                if isinstance(trigger, ScheduleTrigger) and row.status == "active":
                    upcoming = schedules.next_slot(trigger.schedule, trigger.zone(zone), datetime.now(UTC)).isoformat()
                out.append({"name": row.name, "status": row.status, "version": row.active_version,
                            "when": words.trigger_in_words(definition, zone), "next_run": upcoming,
                            "last_run": {"id": last.id, "status": last.status} if last else None,
                            "created_by": row.created_by})
        return out

    async def set_status(ctx: ToolContext, name: str, status: str) -> dict[str, Any]:
        async with rt.db.session() as session:
            row = await store.by_name(session, name)
            if row is None:
                raise ToolError(f"no workflow named {name!r}")
            people = People.from_config(rt.loaded.config)
            may_manage(people, row.member_id, row.created_by, ctx.member.id, ctx.user_id, ctx.channel.platform, "pause or resume")
            if row.status != status:  # the person's action, in the feed beside the member's
                who = people.person_of(ctx.user_id, ctx.channel.platform) or ctx.user_id
                await activity.record(session, member_id=row.member_id, actor_type="person", actor_id=who,
                                      action="workflow_paused" if status == "paused" else "workflow_resumed",
                                      description=f"{'Paused' if status == 'paused' else 'Resumed'} {name} from chat",
                                      entity_type="workflow", entity_id=name)
            await store.set_status(session, row.id, status)
        if status == "active" and rt.redis is not None:
            await schedules.reconcile(rt.db, rt.redis)
        return {"name": name, "status": status}

    async def pause_workflow(ctx: ToolContext, args: NameInput) -> dict[str, Any]:
        return await set_status(ctx, args.name, "paused")

    async def resume_workflow(ctx: ToolContext, args: NameInput) -> dict[str, Any]:
        return await set_status(ctx, args.name, "active")

    async def run_workflow_now(ctx: ToolContext, args: RunNowInput) -> dict[str, Any]:
        people = People.from_config(rt.loaded.config)
        async with rt.db.session() as session:
            row = await store.by_name(session, args.name)
        if row is None:
            raise ToolError(f"no workflow named {args.name!r}")
        may_manage(people, row.member_id, row.created_by, ctx.member.id, ctx.user_id, ctx.channel.platform, "run")
        where = ctx.conversation
        origin = Origin(via="chat", platform=ctx.channel.platform, conversation=where.conversation if where else None,
                        thread=where.thread if where else None,
                        person=people.person_of(ctx.user_id, ctx.channel.platform) or ctx.user_id)
        if rt.redis is None:
            raise ToolError("runs need the queue (Redis), which this process does not have")
        try:
            run_id = await start_run(rt.db, rt.redis, args.name, "manual", args.inputs, settings=run_settings(rt), origin=origin)
        except InputError as exc:
            raise ToolError(f"inputs: {exc}") from None
        except MemberPaused as exc:
            raise ToolError(f"{exc}; tell the person") from None
        return {"run_id": run_id, "status": "started"}

    async def cancel_a_run(ctx: ToolContext, args: CancelRunInput) -> dict[str, Any]:
        people = People.from_config(rt.loaded.config)
        async with rt.db.session() as session:
            run = await store.run(session, args.run_id)
            workflow = await session.get(Workflow, run.workflow_id) if run is not None else None
        if run is None or workflow is None or workflow.member_id != ctx.member.id:
            raise ToolError(f"no run {args.run_id!r} of your workflows")
        origin = Origin.from_json(run.origin)
        asked = origin is not None and origin.person is not None and people.same(origin.person, ctx.user_id, ctx.channel.platform)
        if not asked:
            may_manage(people, workflow.member_id, workflow.created_by, ctx.member.id, ctx.user_id, ctx.channel.platform, "cancel")
        by = people.person_of(ctx.user_id, ctx.channel.platform) or ctx.user_id
        try:
            cancelled = await cancel_run(rt, args.run_id, by)
        except (LookupError, NotCancellable) as exc:
            raise ToolError(str(exc)) from None
        for approval_id in cancelled:
            await refresh(rt, approval_id)
        return {"run_id": args.run_id, "status": "cancelled", "approvals_cancelled": len(cancelled)}

    return [
        Tool("create_workflow", "Propose a new workflow for something recurring the person asked for. Ask first what you "
             "need (timing, tone, who approves, which channel); then call this: it checks the definition and posts it as a "
             "plan with Start / Change / Cancel. It never starts anything by itself.\n\n" + FORMAT,
             DraftInput, create_workflow),
        Tool("update_workflow", "Propose a change to one of your workflows (a new version, posted as a plan the person "
             "starts). Send the whole new definition, same name.", DraftInput, update_workflow),
        Tool("list_my_workflows", "Your workflows: status, version, when they run, last run.", ListInput, list_my_workflows),
        Tool("pause_workflow", "Pause one of your workflows (no more scheduled runs until resumed).", NameInput, pause_workflow),
        Tool("resume_workflow", "Resume a paused workflow.", NameInput, resume_workflow),
        Tool("run_workflow_now", "Start a run of one of your workflows now; its approvals come to this conversation.",
             RunNowInput, run_workflow_now),
        Tool("cancel_run", "Stop a run of one of your workflows; its pending approvals are cancelled.", CancelRunInput,
             cancel_a_run),
    ]
