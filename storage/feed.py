"""What the activity feed has posted, kept in the effects table (no table of its own).

- `feed-<activity id>`: one activity row's line. `posting` while a process posts it (its
  `updated_at` is the lease), `retry` after Slack refused it for now, `done` once it landed
  (result: channel, ts, thread) or will never be posted (result: error). A line is posted only
  by the process that moved its row to `posting` (a guarded insert or UPDATE), and one whose
  poster died is checked in Slack (the post carries this id in its metadata) before it is
  posted again.
- `feed-thread-<channel>-<run id>`: the run's thread in that channel: its first line's ts.
- `feed-cursor`: every activity row with an id up to `result.after` is settled (posted, given
  up, or no line for it), so a pass reads only the rows after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.inserts import insert_or_ignore
from storage.models import Activity, Effect, Workflow, WorkflowRun, utcnow

CURSOR = "feed-cursor"


def line_key(activity_id: int) -> str:
    return f"feed-{activity_id}"


def thread_key(channel: str, run_id: str) -> str:
    return f"feed-thread-{channel}-{run_id}"


async def cursor(session: AsyncSession, look_back: timedelta) -> int:
    """The id up to which every row is settled. The first time (a new feed, or a database from
    before it), rows older than `look_back` count as settled: the feed starts with what is
    recent, never with the whole history."""
    row = await session.get(Effect, CURSOR, populate_existing=True)
    if row is not None:
        return int((row.result or {}).get("after") or 0)
    older = await session.scalar(select(func.max(Activity.id)).where(Activity.created_at < utcnow() - look_back))
    after = int(older or 0)
    await insert_or_ignore(session, Effect, {"id": CURSOR, "kind": "feed_cursor", "status": "done", "result": {"after": after}})
    return after


async def move_cursor(session: AsyncSession, after: int) -> None:
    await session.execute(update(Effect).where(Effect.id == CURSOR).values(result={"after": after}, updated_at=utcnow()))


async def rows_after(session: AsyncSession, after: int, limit: int) -> list[Activity]:
    result = await session.execute(select(Activity).where(Activity.id > after).order_by(Activity.id).limit(limit))
    return list(result.scalars())


async def marks(session: AsyncSession, activity_ids: list[int]) -> dict[int, Effect]:
    """The feed records of these rows, by activity id."""
    if not activity_ids:
        return {}
    keys = {line_key(i): i for i in activity_ids}
    result = await session.execute(select(Effect).where(Effect.id.in_(list(keys))))
    return {keys[row.id]: row for row in result.scalars()}


async def claim(session: AsyncSession, activity_id: int, lease: timedelta) -> tuple[bool, bool]:
    """Take this row's line for posting: (taken, maybe_landed). `maybe_landed`: an earlier
    poster died while posting it, so Slack must be asked before posting again. Only one
    caller takes a row: a new record is an insert that collides, an old one a guarded UPDATE."""
    key = line_key(activity_id)
    if await insert_or_ignore(session, Effect, {"id": key, "kind": "feed", "status": "posting", "result": {}}):
        return True, False
    now = utcnow()
    retried = await session.execute(update(Effect).where(Effect.id == key, Effect.status == "retry")
                                    .values(status="posting", updated_at=now))
    if retried.rowcount == 1:  # type: ignore[attr-defined]
        return True, False
    stale = await session.execute(update(Effect).where(Effect.id == key, Effect.status == "posting", Effect.updated_at < now - lease)
                                  .values(updated_at=now))
    return stale.rowcount == 1, True  # type: ignore[attr-defined]


async def posted(session: AsyncSession, activity_id: int, result: dict[str, Any]) -> None:
    """The line landed (or never will: `result` has an `error`)."""
    await session.execute(update(Effect).where(Effect.id == line_key(activity_id)).values(status="done", result=result, updated_at=utcnow()))


async def not_now(session: AsyncSession, activity_id: int) -> None:
    """Slack refused the line for now (rate limit, outage): the next pass posts it."""
    await session.execute(update(Effect).where(Effect.id == line_key(activity_id), Effect.status == "posting")
                          .values(status="retry", updated_at=utcnow()))


async def thread(session: AsyncSession, channel: str, run_id: str) -> str | None:
    row = await session.get(Effect, thread_key(channel, run_id), populate_existing=True)
    return str(row.result["ts"]) if row is not None and row.result.get("ts") else None


async def start_thread(session: AsyncSession, channel: str, run_id: str, ts: str) -> None:
    await insert_or_ignore(session, Effect, {"id": thread_key(channel, run_id), "kind": "feed_thread", "status": "done",
                                             "result": {"ts": ts}})


@dataclass(frozen=True)
class RunFacts:
    """What a run's lines name: its workflow, how it started and for whom."""

    workflow: str
    trigger: str
    via: str | None
    person: str | None


async def runs(session: AsyncSession, run_ids: set[str]) -> dict[str, RunFacts]:
    if not run_ids:
        return {}
    result = await session.execute(select(WorkflowRun.id, WorkflowRun.trigger, WorkflowRun.origin, Workflow.name)
                                   .join(Workflow, Workflow.id == WorkflowRun.workflow_id).where(WorkflowRun.id.in_(list(run_ids))))
    out = {}
    for run_id, trigger, origin, name in result.all():
        origin = origin if isinstance(origin, dict) else {}
        out[run_id] = RunFacts(name, trigger, origin.get("via"), origin.get("person"))
    return out


def settled_before(rows: list[Activity], settled: set[int], quiet_since: datetime) -> int | None:
    """The highest id the cursor may move to: every row up to it is settled and older than
    `quiet_since` (a row committed late, with a lower id than rows already seen, is then
    still read: a transaction that wrote a row commits well within that time)."""
    last = None
    for row in rows:
        if row.id not in settled or row.created_at >= quiet_since:
            break
        last = row.id
    return last
