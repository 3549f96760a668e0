"""Schedules: the database is the truth, Redis only holds the next slot of each schedule."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import redis as redis_lib
from rq import Queue
from rq.registry import ScheduledJobRegistry

from jobs import schedules
from jobs.workflows.definition import as_document, load_definition
from storage import workflows as store
from storage.db import Database
from tests.conftest import Stack

AMSTERDAM = ZoneInfo("Europe/Amsterdam")


def _a_monday_at_nine() -> datetime:
    """09:00 Amsterdam time on a Monday a few weeks ahead, in UTC. Slots in these tests lie in
    the future on purpose: RQ's scheduler (in any worker attached to the test's Redis) moves a
    due job out of the scheduled registry, and fixed dates fall in the past as time goes by."""
    day = (datetime.now(AMSTERDAM) + timedelta(days=21)).date()
    day += timedelta(days=-day.weekday())
    return datetime(day.year, day.month, day.day, 9, 0, tzinfo=AMSTERDAM).astimezone(UTC)


def test_a_daily_0900_schedule_stays_at_0900_local_across_both_dst_changes() -> None:
    spring = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)  # clocks go forward at 02:00 on Sunday 29 March
    first = schedules.next_slot("0 9 * * *", AMSTERDAM, spring)
    second = schedules.next_slot("0 9 * * *", AMSTERDAM, first)
    assert first == datetime(2026, 3, 28, 8, 0, tzinfo=UTC)  # Saturday, CET (+1)
    assert second == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)  # Sunday, CEST (+2)
    autumn = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)  # clocks go back at 03:00 on Sunday 25 October
    after = schedules.next_slot("0 9 * * *", AMSTERDAM, autumn)
    assert after == datetime(2026, 10, 25, 8, 0, tzinfo=UTC)  # Sunday, CET (+1) again
    for slot in (first, second, after):
        assert slot.astimezone(AMSTERDAM).hour == 9
    # 02:30 does not exist on the spring-forward night: that day's slot is not invented twice
    nights = [schedules.next_slot("30 2 * * *", AMSTERDAM, datetime(2026, 3, 28, 3, 0, tzinfo=UTC))]
    nights.append(schedules.next_slot("30 2 * * *", AMSTERDAM, nights[0]))
    assert nights[0] < nights[1] and len(set(nights)) == 2


def _documents(count: int) -> list[dict]:
    return [
        as_document(load_definition(f"""
name: sched-{i:03d}
member: nova
trigger: {{schedule: "{i % 60} 9 * * MON-FRI", timezone: Europe/Amsterdam}}
steps:
  - id: now
    tool: current_time
"""))
        for i in range(count)
    ]


def test_after_redis_is_flushed_the_reconciler_requeues_every_next_slot_once(stack: Stack) -> None:
    assert stack.cli("workflow", "list").returncode == 0  # seeds the members
    url, redis_url = stack.env["DATABASE_URL"], stack.env["REDIS_URL"]
    connection = redis_lib.Redis.from_url(redis_url)
    now = _a_monday_at_nine() - timedelta(hours=1)  # a Monday, 08:00 in Amsterdam

    async def main() -> None:
        db = Database(url)
        try:
            async with db.session() as session:
                for document in _documents(100):
                    await store.apply(session, document)
            await schedules.reconcile(db, connection, now=now)
            connection.flushall()  # Redis loses everything
            # two reconcilers at once (e.g. two web processes)
            counts = await asyncio.gather(schedules.reconcile(db, connection, now=now), schedules.reconcile(db, connection, now=now))
            assert sum(counts) == 100  # each slot was queued by exactly one of them
        finally:
            await db.close()

    asyncio.run(main())
    registry = ScheduledJobRegistry(queue=Queue("workflows", connection=connection))
    jobs = registry.get_job_ids()
    assert len(jobs) == 100 and len(set(jobs)) == 100
    for job_id in jobs:
        scheduled = registry.get_scheduled_time(job_id)
        _, workflow_id, epoch = job_id.split("-")
        slot = datetime.fromtimestamp(int(epoch), UTC)
        assert scheduled == slot.replace(tzinfo=None) or scheduled == slot
        local = slot.astimezone(AMSTERDAM)
        assert local.hour == 9 and local.date() == now.date()


def test_a_slot_fired_twice_at_once_starts_one_run(stack: Stack) -> None:
    assert stack.cli("workflow", "list").returncode == 0
    url, redis_url = stack.env["DATABASE_URL"], stack.env["REDIS_URL"]
    connection = redis_lib.Redis.from_url(redis_url)
    slot = int(_a_monday_at_nine().timestamp())

    async def main() -> list:
        from jobs.runtime import Runtime
        from teammates.config import load

        loaded = load(str(stack.workdir / "teammates.yml"), env=stack.env)
        db = Database(url)
        rt = Runtime(loaded=loaded, db=db, channels=lambda *_: None, redis=connection)  # type: ignore[arg-type,return-value]
        try:
            async with db.session() as session:
                row, _, _ = await store.apply(session, _documents(1)[0])
            outcomes = await asyncio.gather(*(schedules.fire(rt, row.id, slot) for _ in range(3)))
            async with db.session() as session:
                runs = await store.runs(session, row.id)
            assert len([r for r in runs if r.slot == slot]) == 1
            return outcomes
        finally:
            await db.close()

    outcomes = asyncio.run(main())
    assert sum(1 for o in outcomes if o.startswith("started")) == 1


def test_schedules_due_at_the_same_moment_start_in_batches_and_each_slot_runs_once(stack: Stack) -> None:
    """More schedules due at 09:00 Amsterdam than one batch takes: RQ's scheduler has moved their fire jobs into
    the queue. The first job starts a batch of them; the others find theirs started or start the next batch."""
    assert stack.cli("workflow", "list").returncode == 0
    url, connection = stack.env["DATABASE_URL"], redis_lib.Redis.from_url(stack.env["REDIS_URL"])
    slot = _a_monday_at_nine()
    count = schedules.BATCH + 50  # two buckets

    async def main() -> tuple[list[str], dict[int, list[int]]]:
        from jobs.runtime import Runtime
        from teammates.config import load

        db = Database(url)
        rt = Runtime(loaded=load(str(stack.workdir / "teammates.yml"), env=stack.env), db=db,
                     channels=lambda *_: None, redis=connection)  # type: ignore[arg-type,return-value]
        queue = Queue("workflows", connection=connection)
        try:
            ids = []
            async with db.session() as session:
                for i in range(count):
                    row, _, _ = await store.apply(session, as_document(load_definition(
                        f'name: nine-{i:03d}\nmember: nova\ntrigger: {{schedule: "0 9 * * *", timezone: Europe/Amsterdam}}\n'
                        'steps: [{id: now, tool: current_time}]')))
                    ids.append(row.id)
            for wid in ids:  # as RQ's scheduler leaves them at 09:00
                queue.enqueue(schedules.FIRE_JOB, wid, int(slot.timestamp()), job_id=schedules.slot_job_id(wid, slot))
            outcomes = []
            for wid in ids:  # each job in turn, as the workers would take them
                queue.remove(schedules.slot_job_id(wid, slot))
                outcomes.append(await schedules.fire(rt, wid, int(slot.timestamp())))
            async with db.session() as session:
                slots = {wid: [r.slot for r in await store.runs(session, wid)] for wid in ids}
            return outcomes, slots
        finally:
            await db.close()

    outcomes, slots = asyncio.run(main())
    assert all(found == [int(slot.timestamp())] for found in slots.values()), "every schedule ran its slot exactly once"
    assert outcomes[0].endswith(f"(and {count // 2 - 1} more of this slot)")  # its bucket: half of them
    batches = [o for o in outcomes if o.startswith("started")]
    assert 2 <= len(batches) <= 6 and sum(1 for o in outcomes if o == "slot already ran") == count - len(batches)
    tomorrow = int((slot + timedelta(days=1)).timestamp())
    queued = set(ScheduledJobRegistry(queue=Queue("workflows", connection=connection)).get_job_ids())
    assert all(f"wf-{wid}-{tomorrow}" in queued for wid in slots), "every schedule's next slot is queued"
    steps = [j for j in Queue("workflows", connection=connection).get_job_ids() if j.startswith("step-")]
    assert len(steps) == count, "every run's first step is queued"


def test_a_missed_slot_inside_the_catch_up_window_runs_once_and_older_ones_are_skipped(stack: Stack) -> None:
    assert stack.cli("workflow", "list").returncode == 0
    url, connection = stack.env["DATABASE_URL"], redis_lib.Redis.from_url(stack.env["REDIS_URL"])

    async def main() -> list[str]:
        db = Database(url)
        try:
            async with db.session() as session:
                recent, _, _ = await store.apply(session, as_document(load_definition(
                    'name: recent\nmember: nova\ntrigger: {schedule: "*/10 * * * *", catch_up: 1h}\nsteps: [{id: now, tool: current_time}]')))
                stale, _, _ = await store.apply(session, as_document(load_definition(
                    'name: stale\nmember: nova\ntrigger: {schedule: "*/10 * * * *", catch_up: 1m}\nsteps: [{id: now, tool: current_time}]')))
                for row in (recent, stale):  # created an hour ago, so the last slot was missed
                    row.created_at = datetime.now(UTC) - timedelta(hours=1)
            now = datetime.now(UTC).replace(second=0, microsecond=0)
            now = now.replace(minute=now.minute - now.minute % 10) + timedelta(minutes=5)
            for _ in range(2):
                await schedules.reconcile(db, connection, now=now)
            async with db.session() as session:
                return [r.status for r in await store.runs(session, recent.id)] + [r.status for r in await store.runs(session, stale.id)]
        finally:
            await db.close()

    assert asyncio.run(main()) == ["running", "skipped"]


def test_a_slot_that_comes_while_the_last_run_is_still_going_follows_the_overlap_policy(stack: Stack) -> None:
    assert stack.cli("workflow", "list").returncode == 0
    url, connection = stack.env["DATABASE_URL"], redis_lib.Redis.from_url(stack.env["REDIS_URL"])

    async def main() -> dict[str, tuple[str, list[str]]]:
        from jobs.runs.start import start_run
        from jobs.runtime import Runtime
        from teammates.config import load

        db = Database(url)
        rt = Runtime(loaded=load(str(stack.workdir / "teammates.yml"), env=stack.env), db=db,
                     channels=lambda *_: None, redis=connection)  # type: ignore[arg-type,return-value]
        outcomes = {}
        try:
            for policy in ("skip", "queue", "allow"):
                async with db.session() as session:
                    row, _, _ = await store.apply(session, as_document(load_definition(
                        f'name: o-{policy}\nmember: nova\ntrigger: {{schedule: "0 9 * * *", overlap: {policy}}}\n'
                        'steps: [{id: now, tool: current_time}]')))
                going = await start_run(db, connection, f"o-{policy}", "manual", {})  # still going: no worker runs it
                outcome = await schedules.fire(rt, row.id, 1_800_000_000)
                async with db.session() as session:
                    outcomes[policy] = (outcome, sorted(r.status for r in await store.runs(session, row.id)))
                if policy == "skip":  # once that run ends, the skipped slot's record holds nothing up
                    async with db.session() as session:
                        await store.finish_run(session, str(going), "completed")
                    await schedules.fire(rt, row.id, 1_800_086_400)
                    async with db.session() as session:
                        outcomes["skip, next day"] = ("", sorted(r.status for r in await store.runs(session, row.id)))
        finally:
            await db.close()
        return outcomes

    outcomes = asyncio.run(main())
    assert outcomes["skip"] == ("skipped: previous run still going", ["running", "skipped"])
    assert outcomes["skip, next day"][1] == ["completed", "running", "skipped"]
    assert outcomes["queue"] == ("queued behind the running run", ["running"])
    assert outcomes["allow"][1] == ["running", "running"]
