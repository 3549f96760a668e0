"""The long-running processes: the web server, RQ workers, and `run`, which starts both."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from aiohttp import web
from redis import exceptions as redis_errors
from rq import SimpleWorker
from rq.worker_pool import WorkerPool

from bot import ops
from bot.inbox import Inbox
from bot.server import METRICS, SLACK_APPS, connect_socket_mode, create_app
from jobs import actions as job_actions
from jobs import intake, queues, schedules
from jobs import loop as job_loop
from jobs import runtime as job_runtime
from jobs.builder import expiry as plan_expiry
from jobs.feed import poster as activity_feed
from jobs.runs.reconcile import reconcile as reconcile_runs
from jobs.runtime import Runtime
from jobs.spend import ledger as spend_ledger
from storage.db import Database
from teammates.config import LoadedConfig
from teammates.runtime import prepare_database, slack_channels, worker_runtime

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 20.0


async def serve(loaded: LoadedConfig, host: str, port: int) -> None:
    """Serve HTTP until SIGTERM/SIGINT; then stop accepting and finish in-flight requests."""
    config = loaded.config
    db = Database(config.database_url)
    await prepare_database(loaded, db)
    redis = queues.redis_for_web(config.redis_url)
    inbox = Inbox(db=db, redis=redis, job_timeout=config.workers.turn_timeout)
    app = create_app(loaded, db, inbox)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    metrics_runner = await ops.start_metrics_listener(config.server.metrics, app[METRICS])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    socket_handlers = await connect_socket_mode(loaded, app[SLACK_APPS])
    log.info("listening on http://%s:%d (%d member(s) on Slack)", host, port, len(app[SLACK_APPS]))
    handoff = asyncio.create_task(inbox.pending.run(db))
    sweeper = asyncio.create_task(_sweep_forever(db, inbox, config.workers.sweep_every, timedelta(seconds=config.workers.sweep_after)))
    engine_rt = Runtime(loaded=loaded, db=db, channels=slack_channels(loaded), redis=redis)
    reconciler = asyncio.create_task(_reconcile_forever(engine_rt, config.workers.reconcile_every))
    feed = asyncio.create_task(activity_feed.run_forever(engine_rt))  # off the request path: it only reads the table
    gc.collect()
    gc.freeze()  # start-up objects leave the collector's view: shorter pauses inside acks
    await stop.wait()
    log.info("shutting down: finishing in-flight requests")
    sweeper.cancel()
    reconciler.cancel()
    feed.cancel()
    for handler in socket_handlers:
        await handler.close_async()
    await runner.cleanup()
    if metrics_runner is not None:
        await metrics_runner.cleanup()
    handoff.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await handoff
    if not await inbox.pending.drain(give_up_after=5.0):
        log.warning("%d recorded message(s) not enqueued; the sweeper will", len(inbox.pending))
    await db.close()


async def _reconcile_forever(rt: Runtime, every: float) -> None:
    """Schedules and steps: queue every active schedule's next slot, catch up missed ones,
    hand steps of dead workers to others, wake due timers. Harmless when several processes
    run it: slots and steps are unique in the database. Each part of a pass is guarded on its
    own: an error is logged and the loop goes on (one failing part never stops the other, nor
    later passes)."""
    assert rt.redis is not None
    redis = rt.redis
    while True:
        for what, part in (("schedules", lambda: schedules.reconcile(rt.db, redis)), ("runs", lambda: reconcile_runs(rt)),
                           ("clicks", lambda: job_actions.sweep(rt.db, redis)), ("plans", lambda: plan_expiry.expire_due(rt.db, redis)),
                           ("budgets", lambda: spend_ledger.release_expired(rt.db))):
            try:
                await part()
            except Exception:  # noqa: BLE001
                log.exception("reconcile of %s failed", what)
        await asyncio.sleep(every)


async def _sweep_forever(db: Database, inbox: Inbox, every: float, after: timedelta) -> None:
    """Re-enqueue messages whose job was lost (Redis lost it, or its worker died: its lease
    ran out); harmless when several processes do it.
    Like the reconciler, an error in one pass is logged and never ends the loop."""
    while True:
        await asyncio.sleep(every)
        checkpoint = getattr(inbox.recorder, "checkpoint", None)
        try:
            if checkpoint is not None:
                await asyncio.to_thread(checkpoint)
        except Exception:  # noqa: BLE001
            log.exception("WAL checkpoint failed")
        try:
            count = await intake.sweep(db, inbox.redis, job_timeout=inbox.job_timeout, older_than=after)
            if count:
                log.warning("re-enqueued %d unanswered message(s)", count)
        except Exception:  # noqa: BLE001
            log.exception("sweep failed")


def work(loaded: LoadedConfig, queue_names: Sequence[str], burst: bool, concurrency: int = 1) -> None:
    """RQ workers with RQ's scheduler: `concurrency` processes, each running one job at a time.

    `SimpleWorker` runs the job in the worker process itself (no fork per job): ~5x the
    throughput of RQ's forking worker, and jobs keep their database pool and HTTP connections on
    the process's persistent event loop. Several of them run as an RQ `WorkerPool`, forked from
    this process after the heavy imports, so they share those pages copy-on-write."""
    job_runtime.install(lambda: worker_runtime(loaded))
    redis = queues.redis_from_url(loaded.config.redis_url)
    if concurrency <= 1:
        _work_until_asked_to_stop(lambda: WarmWorker([queues.queue(redis, name) for name in queue_names], connection=redis), burst)
        return
    _preload()
    pool = WorkerPool(list(queue_names), connection=redis, num_workers=concurrency, worker_class=WarmWorker)
    pool.start(burst=burst, logging_level="WARNING")


def _work_until_asked_to_stop(make: Callable[[], SimpleWorker], burst: bool) -> None:
    """Run one worker until a signal (or, in burst mode, an empty queue) stops it.

    RQ's work loop quits when Redis drops between two dequeues (its catch-all), and its teardown
    then raises trying to record the death in Redis. A lone worker process that exited there
    would leave its queues unserved once Redis is back, so it starts a fresh worker instead,
    after a pause that grows while Redis stays away, to the same 2 s at most as RQ's own
    reconnect loop (`WarmWorker`). (A `WorkerPool` respawns its own.)"""
    pause = 1.0
    while True:
        worker: SimpleWorker | None = None
        try:
            worker = make()  # it names itself in Redis already
            worker.work(burst=burst, with_scheduler=True, logging_level="WARNING")
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            log.warning("worker lost Redis (%s); starting again in %.0f s", exc, pause)
        else:
            if burst or worker._shutdown_requested_date is not None:
                return
            log.warning("worker ended without being asked to; starting again in %.0f s", pause)
        if worker is not None and worker._shutdown_requested_date is not None:
            return
        # The finished worker's handlers would ask Redis for its state: a signal now just exits.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _exit_on_signal)
        time.sleep(pause)
        pause = min(pause * 2, WarmWorker.max_connection_wait_time)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


class WarmWorker(SimpleWorker):
    """A `SimpleWorker` that connects (database, members, LLM client) before its first job, so
    the first person it answers does not wait for that.

    While Redis is away it tries again every 2 s at most (RQ's default backs off to 60 s: after
    an outage of 10 s a message waited 5 s more for a worker that slept through Redis's return).
    A reconnect attempt every 2 s per worker costs Redis nothing worth counting."""

    max_connection_wait_time = 2.0

    def work(self, *args: Any, **kwargs: Any) -> bool:
        try:
            job_loop.run(_warm(job_runtime.current()))
        except Exception as exc:  # noqa: BLE001 - a cold worker still works
            log.warning("worker warm-up skipped: %s", exc)
        return bool(super().work(*args, **kwargs))


async def _warm(rt: Runtime) -> None:
    from storage import members

    async with rt.db.session() as session:
        await members.profiles(session)
    rt.llm  # noqa: B018 - builds the client now


def _preload() -> None:
    """Import what jobs use before forking the pool, and freeze what exists then out of the
    garbage collector's reach: a collection touching those objects would write to their pages
    and un-share them (copy-on-write) in every worker."""
    import aiosqlite  # noqa: F401
    import anthropic  # noqa: F401
    import asyncpg  # noqa: F401
    import sqlalchemy.dialects.postgresql.asyncpg  # noqa: F401
    import sqlalchemy.dialects.sqlite.aiosqlite  # noqa: F401

    import jobs.runs.jobs  # noqa: F401
    import jobs.schedules  # noqa: F401
    import jobs.turns  # noqa: F401

    gc.collect()
    gc.freeze()


def split_workers(total: int) -> list[tuple[str, int]]:
    """How `teammates run` divides `total` worker processes: most answer conversation turns
    only, so a person never waits behind workflow or bulk work; the rest take every queue
    (turns first). Returns (queues, processes) per pool."""
    general = max(1, total // 6)
    dedicated = total - general
    pools = [("turns,workflows,bulk", general)]
    if dedicated:
        pools.insert(0, ("turns", dedicated))
    return pools


def run(loaded: LoadedConfig, host: str, port: int, workers: int, argv_config: list[str]) -> None:
    """Everything in one command: worker pools as child processes, the web server here.
    A pool that dies is started again; on SIGTERM every worker finishes its current job."""
    commands = [
        [sys.executable, "-m", "teammates", *argv_config, "worker", "--queues", names, "--concurrency", str(count)]
        for names, count in split_workers(workers)
    ]
    children = [subprocess.Popen(command) for command in commands]
    stopping = threading.Event()

    def supervise() -> None:
        while not stopping.wait(2.0):
            for index, child in enumerate(children):
                if child.poll() is not None and not stopping.is_set():
                    log.warning("worker pool exited with %s; starting it again", child.returncode)
                    children[index] = subprocess.Popen(commands[index])

    threading.Thread(target=supervise, name="supervisor", daemon=True).start()
    log.info("started %d worker(s): %s", workers, ", ".join(f"{n} on {q}" for q, n in split_workers(workers)))
    try:
        asyncio.run(serve(loaded, host, port))
    finally:
        stopping.set()
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=loaded.config.workers.turn_timeout + 5)
            except subprocess.TimeoutExpired:
                child.kill()
