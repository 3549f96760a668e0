"""`POST /hooks/{workflow}`: start a run from an outside system, body (JSON) as its input.

The request must carry `X-Teammates-Signature: sha256=<hex HMAC-SHA256 of the raw body>` made
with the trigger's secret; anything else is refused before the body is even parsed."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re

from aiohttp import web

from jobs.runs.inputs import InputError
from jobs.runs.start import start_run
from jobs.workflows.definition import WebhookTrigger, WorkflowDefinition
from storage import workflows as store

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def resolve_secret(text: str) -> str | None:
    """`${VAR}` from this process's environment; None when unset (the hook is then closed)."""
    missing = [name for name in _VAR.findall(text) if not os.environ.get(name)]
    if missing:
        return None
    return _VAR.sub(lambda m: os.environ[m.group(1)], text)


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256="))


async def webhook(request: web.Request) -> web.Response:
    from bot.server import DATABASE, INBOX

    name = request.match_info["workflow"]
    db = request.app[DATABASE]
    async with db.session() as session:
        row = await store.by_name(session, name)
        document = await store.definition(session, row.id, row.active_version) if row else None
    definition = WorkflowDefinition.model_validate(document) if document else None
    if row is None or definition is None or not isinstance(definition.trigger, WebhookTrigger):
        return web.json_response({"error": f"no webhook workflow named {name!r}"}, status=404)
    secret = resolve_secret(definition.trigger.webhook.secret)
    body = await request.read()
    if secret is None or not signature_ok(secret, body, request.headers.get("X-Teammates-Signature")):
        return web.json_response({"error": "bad or missing X-Teammates-Signature"}, status=401)
    if row.status != "active":
        return web.json_response({"error": f"workflow {name!r} is paused"}, status=409)
    try:
        payload = json.loads(body or b"{}")
    except json.JSONDecodeError:
        return web.json_response({"error": "body is not JSON"}, status=400)
    if not isinstance(payload, dict):
        return web.json_response({"error": "body must be a JSON object (the run's input)"}, status=400)
    try:
        run_id = await start_run(db, request.app[INBOX].redis, name, "webhook", payload, defer=True)
    except InputError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"run_id": run_id}, status=202)
