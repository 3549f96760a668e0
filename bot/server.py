"""The aiohttp web server: one route per member's Slack app, health and metrics.

Each member's events arrive at `POST /slack/{member}/events` and are dispatched to that
member's own Bolt app, which checks the request against that member's signing secret."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.registry import Collector
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from bot import ops
from bot.hooks import webhook
from bot.inbox import Inbox
from bot.metrics import CapacityCollector, SpendCollector
from bot.slack import envelope
from bot.slack.apps import member_app
from storage.db import Database
from teammates.config import LoadedConfig

log = logging.getLogger(__name__)

SLACK_APPS = web.AppKey("slack_apps", dict[str, AsyncApp])
SLACK_SECRETS = web.AppKey("slack_secrets", dict[str, str])
DATABASE = web.AppKey("database", Database)
INBOX = web.AppKey("inbox", Inbox)
METRICS = web.AppKey("metrics", CollectorRegistry)


def slack_apps(loaded: LoadedConfig, inbox: Inbox) -> dict[str, AsyncApp]:
    """A Bolt app for every member with Slack credentials; the others are skipped with one
    warning line each (they stay reachable with `teammates chat`)."""
    apps = {}
    config = loaded.config
    for member in config.members:
        gaps = loaded.slack_gaps(member)
        if gaps:
            log.warning("member %s is not served on Slack: %s not set", member.id, " and ".join(gaps), extra={"member": member.id})
            continue
        assert member.slack and member.slack.bot_token and member.slack.signing_secret
        apps[member.id] = member_app(member.id, member.slack.bot_token, member.slack.signing_secret, config.slack.api_url, inbox,
                                     config)
    return apps


async def connect_socket_mode(loaded: LoadedConfig, apps: dict[str, AsyncApp]) -> list[AsyncSocketModeHandler]:
    """Members with an app-level token receive their events over Socket Mode instead of HTTP
    (same Bolt app, same listener, same durable hand-off before the ack).

    A token Slack rejects is reported once and that member skipped: slack-sdk would otherwise
    retry the connection forever. Connections are made in the background, so one slow or
    failing member never holds up the others or the server's start."""
    handlers = []
    for member in loaded.config.members:
        if member.id not in apps or not member.slack or not member.slack.app_token:
            continue
        try:
            await apps[member.id].client.apps_connections_open(app_token=member.slack.app_token)
        except SlackApiError as exc:
            log.error("member %s: Socket Mode refused (%s): check its app_token", member.id, exc.response.get("error"), extra={"member": member.id})
            continue
        except Exception as exc:  # noqa: BLE001
            log.error("member %s: cannot reach Slack for Socket Mode (%s)", member.id, type(exc).__name__, extra={"member": member.id})
            continue
        handler = AsyncSocketModeHandler(apps[member.id], member.slack.app_token)
        handlers.append(handler)
        task = asyncio.create_task(handler.connect_async())
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)
        log.info("member %s connecting over Socket Mode", member.id, extra={"member": member.id})
    return handlers


_BACKGROUND: set[asyncio.Task[None]] = set()


def create_app(loaded: LoadedConfig, db: Database, inbox: Inbox) -> web.Application:
    app = web.Application(client_max_size=1024**2)
    app[SLACK_APPS] = slack_apps(loaded, inbox)
    app[SLACK_SECRETS] = {m.id: m.slack.signing_secret for m in loaded.config.members if m.id in app[SLACK_APPS] and m.slack and m.slack.signing_secret}
    app[DATABASE] = db
    app[INBOX] = inbox
    registry = CollectorRegistry()
    registry.register(_ProcessMetrics())
    registry.register(CapacityCollector(inbox.redis))
    with contextlib.suppress(RuntimeError):  # no loop (an app built outside one): no spend figures
        registry.register(SpendCollector(db, loaded.config.workspace.timezone, asyncio.get_running_loop()))
    app[METRICS] = registry
    app.router.add_post("/slack/{member}/events", slack_events)
    app.router.add_post("/hooks/{workflow}", webhook)
    ops.add_routes(app, db, loaded.config.redis_url, registry, loaded.config.server.metrics)  # /healthz; /metrics with its token
    return app


async def slack_events(request: web.Request) -> web.Response:
    member = request.match_info["member"]
    bolt_app = request.app[SLACK_APPS].get(member)
    if bolt_app is None:
        return web.json_response({"error": f"no member {member!r} is served on Slack here"}, status=404)
    # Signature, then the envelope's shape, before Bolt parses anything: a malformed payload
    # gets a 4xx here, so a 5xx from Bolt means only that the hand-off failed (Slack retries).
    rejection = envelope.screen(await request.read(), request.headers, request.app[SLACK_SECRETS][member])
    if rejection is not None:
        return web.json_response({"error": rejection.reason}, status=rejection.status)
    bolt_response = await bolt_app.async_dispatch(await to_bolt_request(request))
    return await to_aiohttp_response(bolt_response)


class _ProcessMetrics(Collector):
    """This process's own metrics (inbound counters, hand-off latency, GC, memory)."""

    def collect(self):  # type: ignore[no-untyped-def]
        return REGISTRY.collect()
