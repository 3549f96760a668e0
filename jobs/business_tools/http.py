"""HTTP business tools: the model's input, checked against the tool's JSON Schema, fills the
URL, header and body templates; the answer is selected (`returns`) and capped before the
model sees it.

Invariants a reader must not break:
- **Secrets stay out of everything but the request.** `secrets.NAME` is read only in the url
  and headers (the config refuses it in a body); the values read are redacted from the answer
  and from every error, and no log line, error or record holds the URL's path, query or a
  header.
- **The model never chooses the host.** The URL's scheme and host are fixed text in the
  config; input values are URL-encoded where the URL template places them.
- **An effect is sent with `Idempotency-Key: <effect id>`**, the same on every attempt of the
  turn or step, and recorded (`effects.once`), so a retry is charged once.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from agents.tools.context import ToolContext
from agents.tools.registry import ToolError
from jobs.business_tools import answers, effects
from jobs.workflows import templates
from teammates.config import HttpToolConfig

log = logging.getLogger(__name__)

_WITH_BODY = ("POST", "PUT", "PATCH")
_NO_SECRETS = "secrets may only be read in an HTTP tool's url and headers"


@dataclass(frozen=True)
class HttpTool:
    """One configured HTTP tool, called with the model's validated input."""

    name: str
    spec: HttpToolConfig
    input_schema: dict[str, Any]
    returns: str | None = None
    effect: bool = False
    unset: Mapping[str, str] = field(default_factory=dict)  # part of the spec -> `${VAR}` not set

    async def __call__(self, ctx: ToolContext, data: dict[str, Any]) -> Any:
        if self.unset:
            where, variable = next(iter(self.unset.items()))
            raise ToolError(f"{self.name} is not set up: ${{{variable}}} (its {where}) is not set; tell the person")
        if not self.effect:
            return await self._request(ctx, data, None)
        return await effects.once(ctx, self.name, "http", {"input": data},
                                  lambda key: self._request(ctx, data, key))

    async def _request(self, ctx: ToolContext, data: dict[str, Any], idempotency_key: str | None) -> Any:
        spec = self.spec
        assert spec.url is not None
        values = _with_defaults(self.input_schema, data)
        secrets = await _secrets(ctx, self.name, [spec.url, *(v for v in spec.headers.values() if v)])
        url = str(self._render(spec.url, {**_url_encoded(values), "secrets": secrets}, "url", secrets))
        headers = {key: str(self._render(text or "", {**values, "secrets": secrets}, f"headers.{key}", secrets))
                   for key, text in spec.headers.items()}
        if any(c in value for value in headers.values() for c in "\r\n"):
            raise ToolError(f"{self.name}: a header would span lines (an input value holds a line break)")
        payload: bytes | None = None
        if spec.method in _WITH_BODY:
            refused = templates.SecretsView.refusing(_NO_SECRETS)
            body = self._render(spec.body, {**values, "secrets": refused}, "body", secrets) if spec.body is not None else None
            payload = (body if isinstance(body, str) else json.dumps(data if body is None else body)).encode()
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        host = _host(url)
        extra = {"run_id": ctx.run_id, "member": ctx.member.id, "tool": self.name}
        started = time.monotonic()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=spec.timeout)) as session:
                # No redirects: a header carrying a secret would follow one to another host.
                async with session.request(spec.method, url, headers=headers, data=payload, allow_redirects=False) as response:
                    status = response.status
                    raw, whole = await _read_capped(response.content)
                    kind = response.content_type
        except TimeoutError:
            log.warning("tool %s: %s %s timed out", self.name, spec.method, host, extra=extra)
            raise ToolError(f"{self.name}: {host} did not answer within {spec.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            log.warning("tool %s: %s %s failed: %s", self.name, spec.method, host, type(exc).__name__, extra=extra)
            raise ToolError(f"{self.name}: could not reach {host} ({type(exc).__name__})") from None
        log.info("tool %s: %s %s answered %d in %.0f ms", self.name, spec.method, host, status,
                 (time.monotonic() - started) * 1000, extra=extra)
        text = raw.decode("utf-8", errors="replace")
        if not 200 <= status < 300:
            said = secrets.redact(" ".join(text.split()))[:300]
            raise ToolError(f"{self.name}: the API answered HTTP {status}" + (f": {said}" if said else ""))
        if not whole:
            raise ToolError(f"{self.name}: the answer was larger than {answers.MAX_BODY_BYTES:,} bytes; ask for less")
        value: Any
        try:
            value = json.loads(text) if text.strip() else {"status": status}
        except ValueError:
            if self.returns is not None:
                raise ToolError(f"{self.name}: the API answered {kind or 'something'}, not JSON") from None
            value = text
        return answers.capped(templates.redact_value(answers.select(value, self.returns), secrets.used_values()))

    def _render(self, text: str, context: dict[str, Any], key: str, secrets: templates.SecretsView) -> Any:
        try:
            return templates.render(text, context, step=self.name, key=key)
        except templates.TemplateError as exc:
            raise ToolError(f"{self.name}: {key}: {secrets.redact(exc.problem)}") from None
        except templates.SecretAccessError as exc:
            raise ToolError(f"{self.name}: {key}: {exc}") from None


async def _secrets(ctx: ToolContext, tool: str, texts: list[str]) -> templates.SecretsView:
    """The secrets the url and headers may read: loaded only when they do read one (one
    query), each value decrypted on first read and remembered for redaction."""
    if not any(templates.reads_secrets(text) for text in texts):
        return templates.SecretsView()
    if ctx.secrets is None:
        raise ToolError(f"{tool}: stored secrets are not available here")
    stored = await ctx.secrets()
    return templates.SecretsView(names=list(stored), opener=stored.__getitem__)


def _with_defaults(schema: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The input, with every declared property present: its schema `default`, else "" (so an
    optional key left out renders as nothing, and `{% if min_days %}` can test for it)."""
    properties = schema.get("properties") or {}
    filled = {name: (spec.get("default", "") if isinstance(spec, dict) else "") for name, spec in properties.items()}
    return {**filled, **data}


def _url_encoded(values: dict[str, Any]) -> dict[str, Any]:
    """Text values percent-encoded: an input can fill a query value or a path segment, never
    add a parameter (`&admin=1`) or climb a path (`../`)."""
    return {key: urllib.parse.quote(value, safe="") if isinstance(value, str) else value for key, value in values.items()}


def _host(url: str) -> str:
    """Where a request went, for logs and errors: the host and port, never path, query or
    credentials."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


async def _read_capped(content: aiohttp.StreamReader) -> tuple[bytes, bool]:
    """At most `MAX_BODY_BYTES` of the body; (bytes, whether that was all of it)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in content.iter_chunked(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size > answers.MAX_BODY_BYTES:
            return b"".join(chunks)[: answers.MAX_BODY_BYTES], False
    return b"".join(chunks), True
