"""`POST /hooks/{workflow}`: start a run from an outside system, body (JSON) as its input.

A request carries three headers (the interfaces document's contract):
- `X-Teammates-Timestamp`: unix seconds, within `TOLERANCE` of this server's clock;
- `X-Teammates-Delivery`: the sender's unique id for this delivery;
- `X-Teammates-Signature: v1=<hex HMAC-SHA256 of "v1:{timestamp}:{raw body}">` made with
  the trigger's secret.

Authentication comes before anything else is looked at, and every way it can fail (unknown
workflow, not a webhook workflow, secret unset, missing or stale header, bad signature) gets
the same 401 body after the same work: an unknown name is signed against a dummy key, so
neither the answer nor its timing tells which workflow names exist.

One delivery id starts one run: the id is stored with the run in the transaction that creates
it, so a retry or a replay of a captured request gets the first run's id and starts nothing.
The timestamp bounds how long a captured request is worth replaying at all."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from typing import Any

from aiohttp import web

from jobs import pauses
from jobs.runs import queueing
from jobs.runs.inputs import InputError
from jobs.runs.origin import Origin
from jobs.runs.start import start_loaded
from storage import webhooks as deliveries

log = logging.getLogger(__name__)

TOLERANCE = 300  # seconds a signed request stays valid either side of our clock
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_DELIVERY = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces: fits the key column
# Signs requests for names that are not webhook workflows, so they cost what a real check costs.
_DUMMY_KEY = secrets.token_bytes(32)
_UNAUTHORIZED = {"error": "unauthorized: unknown webhook, or a missing, stale or bad X-Teammates-Signature"}


class _LostRace(Exception):
    """Another request recorded the same delivery first: roll this run back."""


def resolve_secret(text: str) -> str | None:
    """`${VAR}` from this process's environment; None when unset (the hook is then closed)."""
    missing = [name for name in _VAR.findall(text) if not os.environ.get(name)]
    if missing:
        return None
    return _VAR.sub(lambda m: os.environ[m.group(1)], text)


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    """The `X-Teammates-Signature` value for a body sent at `timestamp`."""
    return "v1=" + hmac.new(key, b"v1:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()


def _hook_secret(document: dict[str, Any] | None) -> str | None:
    """The webhook trigger's resolved secret; None when the workflow has no webhook trigger
    or its `${VAR}` is unset."""
    trigger = (document or {}).get("trigger")
    hook = trigger.get("webhook") if isinstance(trigger, dict) else None
    secret = hook.get("secret") if isinstance(hook, dict) else None
    return resolve_secret(secret) if isinstance(secret, str) and secret else None


def authentic(secret: str | None, headers: Any, body: bytes, now: float) -> bool:
    """Whether the request is signed with `secret` and fresh. With no secret the HMAC is
    still computed (against a dummy key) and compared in constant time, then refused."""
    timestamp = headers.get("X-Teammates-Timestamp", "")
    given = headers.get("X-Teammates-Signature", "")
    expected = sign(secret.encode() if secret else _DUMMY_KEY, timestamp, body)
    matches = hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))
    fresh = bool(_TIMESTAMP.match(timestamp)) and abs(now - int(timestamp)) <= TOLERANCE
    return matches and fresh and secret is not None


def _unauthorized() -> web.Response:
    return web.json_response(_UNAUTHORIZED, status=401)


async def webhook(request: web.Request) -> web.Response:
    from bot.server import DATABASE, INBOX

    name = request.match_info["workflow"]
    db = request.app[DATABASE]
    body = await request.read()
    async with db.session() as session:
        found = await deliveries.target(session, name)
    workflow, document = found if found else (None, None)
    if not authentic(_hook_secret(document), request.headers, body, time.time()) or workflow is None:
        return _unauthorized()
    delivery = request.headers.get("X-Teammates-Delivery", "")
    if not _DELIVERY.match(delivery):
        return _unauthorized()
    # Authenticated: from here on the sender may learn what is wrong with its request.
    if workflow.status != "active":
        return web.json_response({"error": f"workflow {name!r} is paused"}, status=409)
    async with db.session() as session:
        halted = await pauses.refusal(session, None, workflow.member_id)
    if halted:
        return web.json_response({"error": halted}, status=409)
    try:
        payload = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return web.json_response({"error": "body is not JSON"}, status=400)
    if not isinstance(payload, dict):
        return web.json_response({"error": "body must be a JSON object (the run's input)"}, status=400)
    try:
        run_id, to_queue = await _start_once(db, name, delivery, payload)
    except InputError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    if run_id is None:  # the workflow was deleted meanwhile
        return _unauthorized()
    if to_queue:
        try:
            queueing.enqueue_steps(request.app[INBOX].redis, run_id, to_queue)
        except Exception as exc:  # noqa: BLE001 - the run is committed: the reconciler queues its work
            log.warning("webhook run %s of %s: queueing its first steps failed (%s); the reconciler will", run_id, name, type(exc).__name__)
    return web.json_response({"run_id": run_id}, status=202)


async def _start_once(db: Any, name: str, delivery: str, payload: dict[str, Any]) -> tuple[str | None, list[Any]]:
    """Start a run for this delivery, or return the run it already started (nothing to queue).
    The delivery row and the run commit together, or neither does."""
    from storage import workflows as store

    try:
        async with db.session() as session:
            workflow = await store.by_name(session, name)
            if workflow is None:
                return None, []
            earlier = await deliveries.delivered_run(session, workflow.id, delivery)
            if earlier is not None:
                return earlier, []
            # No conversation behind a webhook: its person is the workflow's creator.
            run_id, to_queue = await start_loaded(session, workflow, "webhook", payload, defer=True,
                                                  origin=Origin.of_workflow(workflow.home, workflow.created_by, "webhook"))
            assert run_id is not None  # no schedule slot: a run is always created
            if not await deliveries.record_delivery(session, workflow.id, delivery, run_id):
                raise _LostRace
            return run_id, to_queue
    except _LostRace:
        async with db.session() as session:
            workflow = await store.by_name(session, name)
            return (await deliveries.delivered_run(session, workflow.id, delivery) if workflow else None), []
