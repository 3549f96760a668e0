"""A scriptable fake of the Anthropic Messages API, served over real HTTP.

Why a real server instead of mocking the SDK: the production code talks to Claude through
``anthropic.AsyncAnthropic`` (and sometimes from worker processes), so the only faithful
seam is the wire. Pointing ``base_url`` / ``ANTHROPIC_BASE_URL`` at this server exercises the
SDK's real request building, retries, timeouts, error mapping and SSE parsing.

The server runs on 127.0.0.1 (random free port) in a daemon thread with its own event loop,
so it can be used from sync tests, async tests and other processes alike. Every public
method is synchronous and thread-safe.

Typical use::

    fake = FakeAnthropic().start()
    fake.script(Reply(tool_uses=[{"name": "search", "input": {"q": "x"}}]), Reply(text="done"))
    client = anthropic.AsyncAnthropic(api_key="test-key", base_url=fake.base_url)
    ...
    fake.stop()
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import secrets
import string
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["Fail", "FakeAnthropic", "Reply"]

log = logging.getLogger(__name__)

_ALNUM = string.ascii_letters + string.digits

# Real API error `type` per HTTP status (https://docs.anthropic.com/en/api/errors).
_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


@dataclass
class Reply:
    """One scripted assistant message (consumed by exactly one request)."""

    text: str | None = None
    # Each {"name": str, "input": dict, "id": optional str}; a missing id becomes "toolu_...".
    tool_uses: list[dict[str, Any]] = field(default_factory=list)
    # Default: "tool_use" if tool_uses else "end_turn".
    stop_reason: str | None = None
    # Keys given here override the computed usage (the rest stay computed).
    usage: dict[str, Any] | None = None
    # Seconds to wait before answering: simulates a slow model / triggers client timeouts.
    delay: float = 0.0


@dataclass
class Fail:
    """One scripted error response, shaped like the real API's error JSON."""

    status: int = 429
    # Sets the `retry-after` header. Note the SDK only honours values > 0; 0 means its own
    # exponential backoff (~0.5 s for the first retry).
    retry_after: float | None = None
    delay: float = 0.0
    message: str = "scripted failure"
    # Sets `x-should-retry: true|false`, which the SDK obeys over its status-code policy.
    should_retry: bool | None = None


Responder = Callable[[dict[str, Any]], "Reply | Fail"]


def _rand_id(prefix: str, n: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(n))


def _error_body(status: int, message: str, request_id: str) -> dict[str, Any]:
    etype = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {
        "type": "error",
        "error": {"type": etype, "message": message},
        "request_id": request_id,
    }


def _tokens(text: str) -> int:
    """Crude 4-chars-per-token estimate; tests only need stable, monotonic numbers."""
    return len(text) // 4


def _blocks(content: Any) -> list[dict[str, Any]]:
    """Normalise message/system content (str or list of blocks) to a list of blocks."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _last_user_text(body: dict[str, Any]) -> str:
    """Text of the last user message's last text block ("" if there is none)."""
    for msg in reversed(body.get("messages") or []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            texts = [
                b.get("text", "") for b in _blocks(msg.get("content")) if b.get("type") == "text"
            ]
            return str(texts[-1]) if texts else ""
    return ""


def _validate(body: Any) -> str | None:
    """Return an error message for requests the real API would reject with a 400.

    Deliberately minimal: required fields plus tool_use/tool_result pairing, which is the
    classic bug in hand-written tool loops.
    """
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    for key in ("model", "max_tokens", "messages"):
        if body.get(key) is None:
            return f"{key}: Field required"
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            return f"messages.{i}: each message needs role 'user' or 'assistant'"
        if "content" not in msg:
            return f"messages.{i}.content: Field required"
    for i, msg in enumerate(messages):
        blocks = _blocks(msg.get("content"))
        if msg["role"] == "assistant":
            ids = [b.get("id") for b in blocks if b.get("type") == "tool_use"]
            if not ids:
                continue
            nxt = messages[i + 1] if i + 1 < len(messages) else None
            results: set[Any] = set()
            if nxt is not None and nxt.get("role") == "user":
                results = {
                    b.get("tool_use_id")
                    for b in _blocks(nxt.get("content"))
                    if b.get("type") == "tool_result"
                }
            missing = [x for x in ids if x not in results]
            if missing:
                return (
                    f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(map(str, missing))}. Each `tool_use` block "
                    "must have a corresponding `tool_result` block in the next message."
                )
        else:
            result_ids = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
            if not result_ids:
                continue
            prev = messages[i - 1] if i > 0 else None
            uses: set[Any] = set()
            if prev is not None and prev.get("role") == "assistant":
                uses = {
                    b.get("id") for b in _blocks(prev.get("content")) if b.get("type") == "tool_use"
                }
            unexpected = [x for x in result_ids if x not in uses]
            if unexpected:
                return (
                    f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` "
                    f"blocks: {', '.join(map(str, unexpected))}. Each `tool_result` block must "
                    "have a corresponding `tool_use` block in the previous message."
                )
    return None


def _cache_units(body: dict[str, Any]) -> Iterator[tuple[str, bool]]:
    """Yield (canonical text, has cache_control) per cacheable block in API cache order.

    The real cache prefix order is tools -> system -> messages. `cache_control` itself is
    stripped from the text so moving a breakpoint does not change the cached content.
    """

    def canon(tag: str, block: dict[str, Any]) -> tuple[str, bool]:
        marked = block.get("cache_control") is not None
        clean = {k: v for k, v in block.items() if k != "cache_control"}
        return tag + json.dumps(clean, sort_keys=True, ensure_ascii=False), marked

    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            yield canon("tool:", tool)
    for block in _blocks(body.get("system")):
        yield canon("system:", block)
    for msg in body.get("messages") or []:
        if isinstance(msg, dict):
            for block in _blocks(msg.get("content")):
                yield canon(f"{msg.get('role')}:", block)


def _build_content(reply: Reply) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    if reply.text is not None:
        content.append({"type": "text", "text": reply.text})
    for tu in reply.tool_uses:
        content.append(
            {
                "type": "tool_use",
                "id": tu.get("id") or _rand_id("toolu_"),
                "name": tu["name"],
                "input": copy.deepcopy(tu.get("input") or {}),
            }
        )
    return content


def _chunks(s: str, parts: int = 3) -> list[str]:
    """Split into a few non-empty pieces, like a model streaming tokens."""
    if not s:
        return []
    size = max(1, -(-len(s) // parts))
    return [s[i : i + size] for i in range(0, len(s), size)]


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class FakeAnthropic:
    """Scriptable local stand-in for https://api.anthropic.com (Messages API only)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._script: deque[Reply | Fail] = deque()
        self._responder: Responder | None = None
        self._requests: list[dict[str, Any]] = []
        self._cache: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self.base_url: str = ""
        self._api_keys: set[str] | None = None  # None: any key is accepted
        self._input_count: int | None = None  # None: count_tokens estimates from the request

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeAnthropic:
        """Start serving; returns self so `fake = FakeAnthropic().start()` works."""
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-anthropic", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            port = asyncio.run_coroutine_threadsafe(self._astart(), loop).result(timeout=10)
        except BaseException:
            self._shutdown_loop()
            raise
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        """Stop serving. Delayed in-flight replies are sent at once rather than awaited."""
        loop = self._loop
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._astop(), loop).result(timeout=10)
        except Exception:  # pragma: no cover - best effort teardown
            log.exception("FakeAnthropic: error during shutdown")
        self._shutdown_loop()

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        if loop is not None and not loop.is_running():
            loop.close()
        self._loop = self._thread = None
        self._runner = None

    async def _astart(self) -> int:
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/healthz", self._handle_health)
        app.router.add_post("/v1/messages", self._handle_messages)
        app.router.add_post("/v1/messages/count_tokens", self._handle_count_tokens)
        app.router.add_get("/v1/models", self._handle_models)
        app.router.add_get("/v1/models/{model_id}", self._handle_model)
        app.router.add_route("*", "/{tail:.*}", self._handle_not_found)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        return int(runner.addresses[0][1])

    async def _astop(self) -> None:
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ scripting

    def script(self, *items: Reply | Fail) -> None:
        """Append replies/failures to the FIFO queue; each request consumes one."""
        for item in items:
            if not isinstance(item, Reply | Fail):
                raise TypeError(f"script() takes Reply or Fail, got {type(item).__name__}")
        with self._lock:
            self._script.extend(items)

    def set_responder(self, fn: Responder | None) -> None:
        """Compute answers from the request body once the script queue is empty.

        Called on the server thread with a copy of the parsed request body.
        """
        with self._lock:
            self._responder = fn

    def set_api_keys(self, keys: set[str] | None) -> None:
        """Accept only these API keys (401 authentication_error for any other); None: any."""
        with self._lock:
            self._api_keys = None if keys is None else set(keys)

    def set_input_count(self, tokens: int | None) -> None:
        """What `count_tokens` answers for every request (None: an estimate from its size). A
        test that scripts fixed usage sets the same input here, as the real API counts exactly
        what it then bills."""
        with self._lock:
            self._input_count = tokens

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Deep copies of every request seen: {"body", "headers", "path", "query", "status"}."""
        with self._lock:
            return copy.deepcopy(self._requests)

    def wait_for_requests(self, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Block until at least `n` requests were answered (or decided); return them all."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self._requests) >= n, timeout=timeout)
            if not ok:
                seen = [
                    f"{r['path']} -> {r['status']}: {_last_user_text(r['body'])[:60]!r}"
                    if isinstance(r["body"], dict)
                    else f"{r['path']} -> {r['status']}"
                    for r in self._requests
                ]
                raise AssertionError(
                    f"FakeAnthropic: expected >= {n} requests within {timeout}s, "
                    f"got {len(self._requests)}; pending script items: {len(self._script)}; "
                    f"seen: {seen}"
                )
            return copy.deepcopy(self._requests)

    def reset(self) -> None:
        """Forget script, responder, recorded requests and the prompt cache."""
        with self._lock:
            self._script.clear()
            self._responder = None
            self._requests.clear()
            self._cache.clear()

    # ------------------------------------------------------------------ internals

    def _record(self, request: web.Request, body: Any, status: int) -> None:
        with self._cond:
            self._requests.append(
                {
                    "body": copy.deepcopy(body),
                    "headers": {k.lower(): v for k, v in request.headers.items()},
                    "path": request.path,
                    "query": dict(request.query),
                    "status": status,
                }
            )
            self._cond.notify_all()

    def _next_item(self, body: dict[str, Any]) -> Reply | Fail:
        with self._lock:
            if self._script:
                return self._script.popleft()
            responder = self._responder
        if responder is None:
            return Reply(text=f"echo: {_last_user_text(body)}")
        try:
            item = responder(copy.deepcopy(body))
        except Exception as exc:
            log.exception("FakeAnthropic: responder raised")
            return Fail(status=500, message=f"fake responder raised: {exc!r}")
        if not isinstance(item, Reply | Fail):
            return Fail(status=500, message=f"fake responder returned {type(item).__name__}")
        return item

    def _cache_usage(self, body: dict[str, Any]) -> tuple[int, int, int]:
        """Return (total_estimate, cache_creation, cache_read) for the request.

        Breakpoint prefixes are remembered; a later request reads the longest remembered
        prefix found at any block boundary (like the real API's lookback), and creates the
        rest up to its last breakpoint.
        """
        units = list(_cache_units(body))
        total = _tokens(json.dumps(body, sort_keys=True, ensure_ascii=False))
        last_bp = max((i for i, (_, marked) in enumerate(units) if marked), default=-1)
        if last_bp < 0:
            return total, 0, 0
        hasher = hashlib.sha256(str(body.get("model")).encode())
        length = 0
        prefixes: list[tuple[str, int, bool]] = []  # (hash, token estimate, is breakpoint)
        for text, marked in units[: last_bp + 1]:
            hasher.update(b"\x00" + text.encode())
            length += len(text)
            prefixes.append((hasher.hexdigest(), max(1, length // 4), marked))
        bp_tokens = prefixes[-1][1]
        with self._lock:
            read = max((tok for h, tok, _ in prefixes if h in self._cache), default=0)
            for h, _, marked in prefixes:
                if marked:
                    self._cache.add(h)
        return max(total, bp_tokens), bp_tokens - read, read

    def _message(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        content = _build_content(reply)
        total, creation, read = self._cache_usage(body)
        out_text = (reply.text or "") + "".join(
            json.dumps(b["input"]) for b in content if b["type"] == "tool_use"
        )
        usage: dict[str, Any] = {
            "input_tokens": max(1, total - creation - read),
            "output_tokens": max(1, _tokens(out_text)),
            "cache_creation_input_tokens": creation,
            "cache_read_input_tokens": read,
        }
        if reply.usage:
            usage.update(reply.usage)
        return {
            "id": _rand_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": content,
            "stop_reason": reply.stop_reason or ("tool_use" if reply.tool_uses else "end_turn"),
            "stop_sequence": None,
            "usage": usage,
        }

    async def _sleep(self, delay: float) -> None:
        """Sleep, but wake early when the server is stopping so stop() never hangs."""
        if delay <= 0:
            return
        assert self._closing is not None
        try:
            await asyncio.wait_for(self._closing.wait(), timeout=delay)
        except TimeoutError:
            pass

    @staticmethod
    def _gone(request: web.Request) -> bool:
        return request.transport is None or request.transport.is_closing()

    def _error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        rid = _rand_id("req_")
        return web.json_response(
            _error_body(status, message, rid),
            status=status,
            headers={"request-id": rid, **(headers or {})},
        )

    # ------------------------------------------------------------------ handlers

    async def _handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _handle_not_found(self, request: web.Request) -> web.Response:
        return self._error(404, f"Not found: {request.method} {request.path}")

    def _authorized(self, request: web.Request) -> bool:
        auth = request.headers.get("authorization", "")
        key = request.headers.get("x-api-key") or (
            auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        )
        with self._lock:
            allowed = self._api_keys
        return bool(key) and (allowed is None or key in allowed)

    # The models API (GET /v1/models, /v1/models/{id}): every model id starting with
    # "claude-" exists here, so a configured test model is always found.
    @staticmethod
    def _model(model_id: str) -> dict[str, Any]:
        return {"type": "model", "id": model_id, "display_name": model_id, "created_at": "2025-01-01T00:00:00Z"}

    async def _handle_models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            self._record(request, None, 401)
            return self._error(401, "invalid x-api-key")
        self._record(request, None, 200)
        data = [self._model("claude-test-model")]
        return web.json_response({"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]})

    async def _handle_model(self, request: web.Request) -> web.Response:
        model_id = request.match_info["model_id"]
        if not self._authorized(request):
            self._record(request, None, 401)
            return self._error(401, "invalid x-api-key")
        if not model_id.startswith("claude-"):
            self._record(request, None, 404)
            return self._error(404, f"model: {model_id}")
        self._record(request, None, 200)
        return web.json_response(self._model(model_id))

    async def _read_body(self, request: web.Request) -> tuple[Any, web.Response | None]:
        """Parse JSON and check auth; on failure record the request and return the error."""
        raw = await request.read()
        try:
            body: Any = json.loads(raw or b"null")
        except ValueError:
            self._record(request, raw.decode("utf-8", "replace"), 400)
            return None, self._error(400, "There was an error parsing the body of your request")
        if not self._authorized(request):
            self._record(request, body, 401)
            return body, self._error(401, "invalid x-api-key")
        return body, None

    async def _handle_count_tokens(self, request: web.Request) -> web.Response:
        body, err = await self._read_body(request)
        if err is not None:
            return err
        if not isinstance(body, dict) or "model" not in body or not body.get("messages"):
            self._record(request, body, 400)
            return self._error(400, "model and messages are required")
        self._record(request, body, 200)
        with self._lock:
            fixed = self._input_count
        return web.json_response(
            {"input_tokens": fixed if fixed is not None else max(1, _tokens(json.dumps(body, sort_keys=True)))}
        )

    async def _handle_messages(self, request: web.Request) -> web.StreamResponse:
        body, err = await self._read_body(request)
        if err is not None:
            return err
        problem = _validate(body)
        if problem is not None:
            self._record(request, body, 400)
            return self._error(400, problem)

        item = self._next_item(body)
        if isinstance(item, Fail):
            self._record(request, body, item.status)
            await self._sleep(item.delay)
            headers: dict[str, str] = {}
            if item.retry_after is not None:
                ra = item.retry_after
                headers["retry-after"] = str(int(ra)) if float(ra).is_integer() else str(ra)
            if item.should_retry is not None:
                headers["x-should-retry"] = "true" if item.should_retry else "false"
            return self._error(item.status, item.message, headers)

        message = self._message(body, item)
        self._record(request, body, 200)
        await self._sleep(item.delay)
        rid = _rand_id("req_")
        if not body.get("stream"):
            return web.json_response(message, headers={"request-id": rid})
        return await self._stream(request, message, rid)

    async def _stream(
        self, request: web.Request, message: dict[str, Any], rid: str
    ) -> web.StreamResponse:
        """Send `message` as the real SSE event sequence; tolerate client disconnects."""
        resp = web.StreamResponse(
            status=200,
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "request-id": rid,
            },
        )
        usage = message["usage"]
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        }
        events: list[bytes] = [
            _sse("message_start", {"type": "message_start", "message": start}),
            _sse("ping", {"type": "ping"}),
        ]
        for index, block in enumerate(message["content"]):
            first: dict[str, Any]
            if block["type"] == "text":
                first = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": c} for c in _chunks(block["text"])]
            else:
                first = {**block, "input": {}}
                raw = json.dumps(block["input"]) if block["input"] else ""
                deltas = [
                    {"type": "input_json_delta", "partial_json": c} for c in [""] + _chunks(raw)
                ]
            events.append(
                _sse(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": first},
                )
            )
            for delta in deltas:
                events.append(
                    _sse(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    )
                )
            events.append(
                _sse("content_block_stop", {"type": "content_block_stop", "index": index})
            )
        events.append(
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            )
        )
        events.append(_sse("message_stop", {"type": "message_stop"}))
        try:
            if self._gone(request):
                return resp
            await resp.prepare(request)
            for ev in events:
                await resp.write(ev)
            await resp.write_eof()
        except (ConnectionError, RuntimeError) as exc:
            # Client hung up (e.g. its timeout fired); nothing to deliver.
            log.debug("FakeAnthropic: stream aborted: %r", exc)
        return resp
