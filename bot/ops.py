"""Operator endpoints: `/healthz` for load balancers, `/metrics` for Prometheus.

`/healthz` says which dependency fails and never why (exception text can carry hosts, users or
worse to whoever can reach the public port), and answers within `HEALTH_TIMEOUT` even when a
dependency hangs: its checks have their own deadlines and never wait on a thread.

`/metrics` is not for the public: it is served on its own listener (`server.metrics.bind`,
loopback by default) and, on the main port, only with the configured bearer token."""

from __future__ import annotations

import asyncio
import hmac
import logging

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from storage.db import Database
from teammates.config import MetricsConfig

log = logging.getLogger(__name__)

HEALTH_TIMEOUT = 2.0  # seconds: a hung database or Redis is reported, not waited for

REGISTRY_KEY = web.AppKey("metrics_registry", CollectorRegistry)
TOKEN_KEY = web.AppKey("metrics_token", str)


class Health:
    """The two checks behind `/healthz`, each bounded in time."""

    def __init__(self, db: Database, redis_url: str) -> None:
        self.db = db
        # Its own async client with short socket timeouts: a ping on the web loop's thread
        # pool would pile up blocked threads while Redis hangs.
        self.redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=HEALTH_TIMEOUT, socket_connect_timeout=HEALTH_TIMEOUT
        )

    async def report(self) -> dict[str, str]:
        """{"database": ..., "redis": ...}, each "ok", "unreachable" or "timeout"."""
        database, redis = await asyncio.gather(_probe(self.db.ping()), _probe(self.redis.ping()))
        return {"database": database, "redis": redis}

    async def close(self) -> None:
        await self.redis.aclose()


HEALTH_KEY = web.AppKey("health", Health)


async def _probe(check: object) -> str:
    try:
        await asyncio.wait_for(check, timeout=HEALTH_TIMEOUT)  # type: ignore[arg-type]
    except TimeoutError:
        return "timeout"
    except Exception:  # noqa: BLE001 - what failed is reported, never the exception's text
        return "unreachable"
    return "ok"


async def healthz(request: web.Request) -> web.Response:
    """200 when the database and Redis answer; 503 naming the one that does not."""
    checks = await request.app[HEALTH_KEY].report()
    healthy = all(state == "ok" for state in checks.values())
    return web.json_response({"status": "ok" if healthy else "unavailable", **checks}, status=200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text. On the main port (where a token is registered) only for a request
    bearing that token; 404 when no token is configured, as if the route did not exist."""
    token = request.app.get(TOKEN_KEY)
    if token is not None:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode("utf-8", "replace"), f"Bearer {token}".encode()):
            return web.json_response({"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"})
    body = await asyncio.to_thread(generate_latest, request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application, db: Database, redis_url: str, registry: CollectorRegistry, config: MetricsConfig) -> None:
    """`/healthz`, and `/metrics` behind the bearer token when one is configured."""
    app[HEALTH_KEY] = Health(db, redis_url)
    app[REGISTRY_KEY] = registry

    async def close_health(app: web.Application) -> None:
        await app[HEALTH_KEY].close()

    app.on_cleanup.append(close_health)
    app.router.add_get("/healthz", healthz)
    if config.token:
        app[TOKEN_KEY] = config.token
        app.router.add_get("/metrics", metrics)


async def start_metrics_listener(config: MetricsConfig, registry: CollectorRegistry) -> web.AppRunner | None:
    """Serve `/metrics` alone on `bind`:`port`. A port already taken (a second web process on
    this host) is one warning, not a failed start: the main port's token route still works."""
    if not config.bind:
        return None
    app = web.Application()
    app[REGISTRY_KEY] = registry
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.bind, config.port, reuse_address=True).start()
    except OSError as exc:
        log.warning("metrics listener not started: cannot listen on %s:%d (%s)", config.bind, config.port, exc.strerror or type(exc).__name__)
        await runner.cleanup()
        return None
    log.info("metrics on http://%s:%d/metrics", config.bind, config.port)
    return runner
