"""The baseline for bench/ack.py: a slack-bolt AsyncApp that only acks.

Why: the ack latency of `teammates serve` means little on its own; what matters is how much
the durable hand-off (DB row + RQ job before the ack) adds on top of Bolt + aiohttp. This app
is served exactly like `teammates serve` (same route shape, AppRunner, access log off,
process_before_response=True) but its `message` listener does nothing.

    python bench/bare_bolt.py --port P --token xoxb-... --secret S --api-url http://127.0.0.1:N/api/
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

APPS = web.AppKey("apps", dict[str, AsyncApp])


def bolt_app(token: str, secret: str, api_url: str) -> AsyncApp:
    app = AsyncApp(
        name="bare",
        signing_secret=secret,
        client=AsyncWebClient(token=token, base_url=api_url),
        process_before_response=True,
    )

    async def on_message() -> None:
        """Nothing: Bolt acks after the listener returns."""

    app.event("message")(on_message)
    return app


async def slack_events(request: web.Request) -> web.Response:
    bolt = request.app[APPS].get(request.match_info["member"])
    if bolt is None:
        return web.json_response({"error": "no such member"}, status=404)
    return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def serve(host: str, port: int, member: str, token: str, secret: str, api_url: str) -> None:
    app = web.Application(client_max_size=1024**2)
    app[APPS] = {member: bolt_app(token, secret, api_url)}
    app.router.add_post("/slack/{member}/events", slack_events)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--member", default="nova")
    parser.add_argument("--token", required=True, help="bot token (xoxb-...)")
    parser.add_argument("--secret", required=True, help="signing secret")
    parser.add_argument("--api-url", required=True, help="Slack Web API base URL (FakeSlack)")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.member, args.token, args.secret, args.api_url))


if __name__ == "__main__":
    main()
