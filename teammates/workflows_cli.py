"""`teammates workflow ...`, `teammates runs` and `teammates secret ...`: thin calls into the
engine and storage, printing one line per thing, or one JSON document with `--json`."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs import schedules, team
from jobs.pauses import MemberPaused
from jobs.people import People
from jobs.queues import redis_from_url
from jobs.runs.approvals import refresh as refresh_approval
from jobs.runs.cancel import NotCancellable, cancel_run
from jobs.runs.inputs import InputError
from jobs.runs.origin import Origin
from jobs.runs.settings import from_config as run_settings
from jobs.runs.start import start_run
from jobs.runtime import Runtime
from jobs.workflows import apply as core
from jobs.workflows.apply import Source
from jobs.workflows.definition import ScheduleTrigger, WorkflowDefinition
from storage import activity, members
from storage import approvals as approval_store
from storage import secrets as secret_store
from storage import workflows as store
from storage.db import Database
from storage.models import StepRun, WorkflowRun
from teammates.config import ConfigError, LoadedConfig
from teammates.runtime import opened, slack_channels

Say = Callable[[str], None]


_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")


def person(loaded: LoadedConfig, value: str | None) -> str | None:
    """`--as PERSON`: a person id from `people:` or a Slack user id, kept as given (None stays
    None); anything else is a one-line error."""
    if value is None:
        return None
    if any(p.id == value for p in loaded.config.people) or _SLACK_USER.match(value):
        return value
    raise ConfigError(f"--as: unknown person {value!r} (expected a person id from people: or a Slack user id)")


def default_creator(loaded: LoadedConfig) -> str | None:
    """Who creates a workflow applied without `--as`: the config's first admin (so that its
    scheduled and webhook runs have a person), None without `admins:`."""
    return loaded.config.admins[0] if loaded.config.admins else None


async def apply(loaded: LoadedConfig, files: list[str], say: Say, as_person: str | None = None) -> None:
    """Read every file, then hand them to the one `apply` of the core: all checked, then all
    stored in one transaction (or none). `as_person` (`--as`) is stored as a new workflow's
    creator; without it the first admin is (the activity row then says `system`). The CLI acts
    with `--as`'s rights (`autonomy: auto` only for an admin), and without `--as` as an admin:
    whoever runs it can edit the config file anyway."""
    by = person(loaded, as_person)
    admin = by is None or People.from_config(loaded.config).is_admin(by)
    sources: list[Source] = []
    for file in files:
        try:
            text = await asyncio.to_thread(Path(file).read_text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read the workflow file ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{file}: not a UTF-8 text file") from None
        sources.append(Source(file, text))
    async with opened(loaded) as db:
        inside = await team.conversations(db, loaded.config)
        try:
            async with db.session() as session:
                results = await core.apply(session, sources, created_by=by,
                                           fallback_creator=None if by else default_creator(loaded), admin=admin,
                                           team_conversations=inside)
        except core.ApplyError as exc:
            raise ConfigError(str(exc)) from None
        if any(result.scheduled for result in results):
            await _reconcile_quietly(loaded, db)
    for result in results:
        say(f"{result.name}: {'active version ' + str(result.version) if result.changed else 'unchanged (version ' + str(result.version) + ')'}")


async def delete(loaded: LoadedConfig, name: str, cancel_runs: bool, say: Say) -> None:
    async with opened(loaded) as db:
        try:
            async with db.session() as session:
                cancelled = await core.delete(session, name, cancel_runs=cancel_runs)
        except core.ApplyError as exc:
            raise ConfigError(str(exc)) from None
    say(f"{name}: deleted" + (f" ({cancelled} unfinished run(s) stopped)" if cancelled else ""))


async def list_workflows(loaded: LoadedConfig, say: Say, as_json: bool) -> None:
    async with opened(loaded) as db:
        async with db.session() as session:
            zone = (await members.workspace(session)).timezone
            items: list[dict[str, Any]] = []
            for row in await store.all_workflows(session):
                definition = WorkflowDefinition.model_validate(await store.definition(session, row.id, row.active_version))
                last = await store.last_run(session, row.id)
                trigger = definition.trigger
                next_run = None
                if isinstance(trigger, ScheduleTrigger) and row.status == "active":
                    next_run = schedules.next_slot(trigger.schedule, trigger.zone(zone), datetime.now(UTC))
                items.append({
                    "name": row.name, "member": row.member_id, "status": row.status, "version": row.active_version,
                    "trigger": _trigger_text(definition),
                    "last_run": {"id": last.id, "status": last.status, "finished_at": _iso(last.finished_at)} if last else None,
                    "next_run": _iso(next_run),
                })
    if as_json:
        say(json.dumps(items, indent=2))
        return
    if not items:
        say("no workflows yet: `teammates workflow apply FILE`")
    for item in items:
        previous = item["last_run"]
        say(f"{item['name']}  v{item['version']}  {item['status']}  {item['member']}  {item['trigger']}"
            f"  last: {previous['status'] if previous else '-'}  next: {item['next_run'] or '-'}")


async def run_now(loaded: LoadedConfig, name: str, pairs: list[str], say: Say, as_person: str | None = None) -> None:
    """Start a run now; its origin is `cli` with the `--as` person (None without it)."""
    origin = Origin(via="cli", person=person(loaded, as_person))
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--input: expected key=value, got {pair!r}")
        values[key] = value
    async with opened(loaded) as db:
        try:
            run_id = await start_run(db, redis_from_url(loaded.config.redis_url), name, "manual", values,
                                   settings=run_settings(loaded.config), origin=origin)
        except LookupError as exc:
            raise ConfigError(str(exc).strip("'\"")) from None
        except InputError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        except MemberPaused as exc:
            raise ConfigError(str(exc)) from None
    say(str(run_id))


async def set_status(loaded: LoadedConfig, name: str, status: str, say: Say) -> None:
    async with opened(loaded) as db:
        async with db.session() as session:
            row = await store.by_name(session, name)
            if row is None:
                raise ConfigError(f"no workflow named {name!r}")
            changed = row.status != status
            await store.set_status(session, row.id, status)
            if changed:  # in the feed beside what members did
                await activity.record(session, member_id=row.member_id, actor_type="system", actor_id="cli",
                                      action="workflow_paused" if status == "paused" else "workflow_resumed",
                                      description=f"{'Paused' if status == 'paused' else 'Resumed'} {name} from the command line",
                                      entity_type="workflow", entity_id=name)
        if status == "active":
            await _reconcile_quietly(loaded, db)
    say(f"{name}: {'paused' if status == 'paused' else 'active'}")


async def run_stats(loaded: LoadedConfig, say: Say, as_json: bool) -> None:
    async with opened(loaded) as db:
        async with db.session() as session:
            numbers = await store.stats(session)
    if as_json:
        say(json.dumps(numbers, indent=2))
        return
    for name, entry in sorted(numbers.items()):
        rate = "-" if entry["success_rate"] is None else f"{entry['success_rate']:.0%}"
        runs = ", ".join(f"{count} {status}" for status, count in sorted(entry["runs"].items()))
        say(f"{name}: success {rate} ({runs})")
        for step, t in entry["steps"].items():
            say(f"    {step:<24} p50 {t['p50']:.2f} s  p95 {t['p95']:.2f} s  ({t['count']} done)")


async def list_runs(loaded: LoadedConfig, workflow: str | None, say: Say, as_json: bool) -> None:
    async with opened(loaded) as db:
        async with db.session() as session:
            workflow_id = None
            names: dict[int, str] = {w.id: w.name for w in await store.all_workflows(session)}
            if workflow:
                row = await store.by_name(session, workflow)
                if row is None:
                    raise ConfigError(f"no workflow named {workflow!r}")
                workflow_id = row.id
            items = [_run_json(run, names.get(run.workflow_id, "?"), await store.steps(session, run.id),
                               await approval_store.by_step(session, run.id))
                     for run in await store.runs(session, workflow_id)]
    if as_json:
        say(json.dumps(items, indent=2, default=str))
        return
    for item in items:
        origin = Origin.from_json(item["origin"])
        say(f"{item['id']}  {item['workflow']} v{item['version']}  {item['status']}  started {item['started_at']}"
            f"  from {origin.describe() if origin else '-'}")
        for step in item["steps"]:
            detail = step["error"] or _short(step["output"])
            if step["approval_id"]:
                detail = f"approval {step['approval_id']}  {detail}".rstrip()
            say(f"    {step['id']:<24} {step['status']:<9} attempts {step['attempts']}  {detail}")


async def cancel(loaded: LoadedConfig, run_id: str, as_person: str | None, say: Say) -> None:
    """`runs cancel RUN_ID`: a thin call of `jobs.runs.cancel.cancel_run`."""
    by = person(loaded, as_person)
    async with opened(loaded) as db:
        # With Redis, so that the run's thread shows it and its requester may hear of it.
        rt = Runtime(loaded=loaded, db=db, channels=slack_channels(loaded), redis=redis_from_url(loaded.config.redis_url))
        try:
            cancelled = await cancel_run(rt, run_id, by)
        except (LookupError, NotCancellable) as exc:
            raise ConfigError(str(exc)) from None
        for approval_id in cancelled:  # every posted copy now says "Cancelled"
            await refresh_approval(rt, approval_id)
    say(f"{run_id}: cancelled" + (f" ({len(cancelled)} pending approval(s) cancelled: {', '.join(cancelled)})" if cancelled else ""))


async def secret_set(loaded: LoadedConfig, name: str, say: Say) -> None:
    key = loaded.config.secrets_key
    if not key:
        raise ConfigError(f"{loaded.path}: secrets_key: needed to store secrets (set it, e.g. ${{TEAMMATES_SECRETS_KEY}})")
    value = sys.stdin.read().rstrip("\n")
    if not value:
        raise ConfigError("secret set: expected the value on standard input")
    async with opened(loaded) as db:
        async with db.session() as session:
            await secret_store.put(session, name, value, key)
    say(f"secret {name} stored")


async def secret_list(loaded: LoadedConfig, say: Say) -> None:
    async with opened(loaded) as db:
        async with db.session() as session:
            for name in await secret_store.names(session):
                say(name)


SHOWN_OUTPUT = 16_000  # characters of a step's output `runs --json` shows; the run keeps it whole


def _run_json(run: WorkflowRun, workflow: str, steps: dict[str, StepRun], approval_ids: dict[str, str]) -> dict[str, Any]:
    return {
        "id": run.id, "workflow": workflow, "version": run.version, "status": run.status,
        "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at), "input": run.input,
        "error": run.error, "depth": run.depth, "origin": run.origin,
        "steps": [
            {"id": path, "status": row.status, "attempts": row.attempt, **_shown(row.output), "error": row.error,
             "approval_id": approval_ids.get(path), "started_at": _iso(row.started_at), "finished_at": _iso(row.finished_at)}
            for path, row in steps.items()
        ],
    }


def _shown(output: Any) -> dict[str, Any]:
    """A step's output as `runs --json` shows it: whole when small; otherwise the start of its
    JSON text with `"truncated": true` (the stored output, which the run reads, stays whole)."""
    if output is None or isinstance(output, bool | int | float):
        return {"output": output}
    text = output if isinstance(output, str) else json.dumps(output, default=str, ensure_ascii=False)
    if len(text) <= SHOWN_OUTPUT:
        return {"output": output}
    return {"output": text[:SHOWN_OUTPUT] + "…", "truncated": True}


def _trigger_text(definition: WorkflowDefinition) -> str:
    trigger = definition.trigger
    if isinstance(trigger, ScheduleTrigger):
        return f"schedule {trigger.schedule}" + (f" ({trigger.timezone})" if trigger.timezone else "")
    return trigger.kind


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat()


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if value is not None else ""
    return text if len(text) <= 80 else text[:77] + "..."


async def _reconcile_quietly(loaded: LoadedConfig, db: Database) -> None:
    try:
        await schedules.reconcile(db, redis_from_url(loaded.config.redis_url))
    except Exception:  # noqa: BLE001 - the running reconciler catches up when Redis is back
        pass
