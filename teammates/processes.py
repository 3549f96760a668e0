"""The long-running processes: the web server, RQ workers, and `run`, which starts both."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from aiohttp import web
from rq import SimpleWorker

from bot.inbox import Inbox
from bot.server import SLACK_APPS, connect_socket_mode, create_app
from jobs import intake, queues
from jobs import runtime as job_runtime
from storage.db import Database
from teammates.config import LoadedConfig
from teammates.runtime import prepare_database, worker_runtime

log = logging.getLogger(__name__)

SWEEP_EVERY = 60.0
SHUTDOWN_GRACE = 20.0


async def serve(loaded: LoadedConfig, host: str, port: int) -> None:
    """Serve HTTP until SIGTERM/SIGINT; then stop accepting and finish in-flight requests."""
    config = loaded.config
    db = Database(config.database_url)
    await prepare_database(loaded, db)
    redis = queues.redis_from_url(config.redis_url)
    inbox = Inbox(db=db, redis=redis, job_timeout=config.workers.turn_timeout)
    app = create_app(loaded, db, inbox)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    socket_handlers = await connect_socket_mode(loaded, app[SLACK_APPS])
    log.info("listening on http://%s:%d (%d member(s) on Slack)", host, port, len(app[SLACK_APPS]))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sweeper = asyncio.create_task(_sweep_forever(db, inbox))
    await stop.wait()
    log.info("shutting down: finishing in-flight requests")
    sweeper.cancel()
    for handler in socket_handlers:
        await handler.close_async()
    await runner.cleanup()
    await db.close()


async def _sweep_forever(db: Database, inbox: Inbox) -> None:
    """Re-enqueue messages whose job Redis lost; harmless when several processes do it."""
    while True:
        await asyncio.sleep(SWEEP_EVERY)
        try:
            count = await intake.sweep(db, inbox.redis, job_timeout=inbox.job_timeout)
            if count:
                log.warning("re-enqueued %d unanswered message(s)", count)
        except Exception:  # noqa: BLE001
            log.exception("sweep failed")


def work(loaded: LoadedConfig, queue_names: Sequence[str], burst: bool) -> None:
    """One RQ worker with RQ's scheduler. `SimpleWorker` runs jobs in this process (no fork
    per job): ~5x the throughput of the forking worker, and jobs keep their DB pool and HTTP
    connections on the worker's persistent event loop."""
    job_runtime.install(lambda: worker_runtime(loaded))
    redis = queues.redis_from_url(loaded.config.redis_url)
    worker = SimpleWorker([queues.queue(redis, name) for name in queue_names], connection=redis)
    worker.work(burst=burst, with_scheduler=True, logging_level="WARNING")


def run(loaded: LoadedConfig, host: str, port: int, workers: int, argv_config: list[str]) -> None:
    """Everything in one command: `workers` worker processes plus the web server here."""
    children = [
        subprocess.Popen([sys.executable, "-m", "teammates", *argv_config, "worker"], env=os.environ.copy())
        for _ in range(workers)
    ]
    log.info("started %d worker(s)", workers)
    try:
        asyncio.run(serve(loaded, host, port))
    finally:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=SHUTDOWN_GRACE)
            except subprocess.TimeoutExpired:
                child.kill()
