"""Checks that FakeAnthropic is faithful enough for the real `anthropic` SDK.

Everything goes through `anthropic.AsyncAnthropic` over HTTP, so these tests pin down the
wire contract (paths, JSON shapes, SSE, retry/timeout behaviour) that the rest of the test
suite relies on when it swaps Claude for the fake.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.fakes.anthropic_api import Fail, FakeAnthropic, Reply

MODEL = "claude-test-model"
TOOLS: list[Any] = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    server.reset()
    yield server
    server.reset()


def client(fake: FakeAnthropic, **kw: Any) -> anthropic.AsyncAnthropic:
    kw.setdefault("max_retries", 0)
    return anthropic.AsyncAnthropic(api_key="test-key", base_url=fake.base_url, **kw)


def user(text: str) -> Any:
    """A user turn (typed Any: the SDK's TypedDicts are too strict for literal test data)."""
    return {"role": "user", "content": text}


def comparable(msg: anthropic.types.Message) -> dict[str, Any]:
    """Message minus per-response ids and input-side token counts (the stream flag adds bytes)."""
    d = msg.model_dump(exclude_none=True)
    d.pop("id")
    d["usage"] = {"output_tokens": d["usage"]["output_tokens"]}
    return d


def test_healthz_and_404(fake: FakeAnthropic) -> None:
    with urllib.request.urlopen(f"{fake.base_url}/healthz", timeout=5) as resp:
        assert resp.status == 200
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"{fake.base_url}/v1/nope", timeout=5)
    assert exc.value.code == 404
    assert json.loads(exc.value.read())["error"]["type"] == "not_found_error"


async def test_text_reply_and_default_echo(fake: FakeAnthropic) -> None:
    fake.script(Reply(text="hello there"))
    async with client(fake) as c:
        msg = await c.messages.create(model=MODEL, max_tokens=100, messages=[user("hi")])
        assert msg.content[0].type == "text" and msg.content[0].text == "hello there"
        assert msg.stop_reason == "end_turn" and msg.model == MODEL
        assert msg.id.startswith("msg_") and msg.usage.input_tokens > 0
        assert msg.usage.cache_read_input_tokens == 0

        # Nothing scripted: echo the last user text block.
        msg = await c.messages.create(
            model=MODEL,
            max_tokens=100,
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "ping"}],
                }
            ],
        )
        assert msg.content[0].type == "text" and msg.content[0].text == "echo: ping"

        # The beta surface hits the same endpoint.
        beta = await c.beta.messages.create(model=MODEL, max_tokens=100, messages=[user("b")])
        assert beta.content[0].type == "text" and beta.content[0].text == "echo: b"

    reqs = fake.wait_for_requests(3)
    assert [r["path"] for r in reqs] == ["/v1/messages"] * 3
    assert reqs[0]["status"] == 200 and reqs[0]["body"]["messages"] == [user("hi")]
    assert "authorization" in reqs[0]["headers"] or "x-api-key" in reqs[0]["headers"]


async def test_tool_use_round_trip(fake: FakeAnthropic) -> None:
    fake.script(
        Reply(tool_uses=[{"name": "get_weather", "input": {"city": "Oslo"}}]), Reply(text="Sunny")
    )
    async with client(fake) as c:
        messages: list[Any] = [user("weather in Oslo?")]
        first = await c.messages.create(model=MODEL, max_tokens=100, tools=TOOLS, messages=messages)
        assert first.stop_reason == "tool_use"
        tu = first.content[0]
        assert tu.type == "tool_use" and tu.name == "get_weather" and tu.input == {"city": "Oslo"}
        assert tu.id.startswith("toolu_")

        messages += [
            {
                "role": "assistant",
                "content": [b.model_dump(exclude_none=True) for b in first.content],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tu.id, "content": "12C sun"}],
            },
        ]
        second = await c.messages.create(
            model=MODEL, max_tokens=100, tools=TOOLS, messages=messages
        )
        assert second.content[0].type == "text" and second.content[0].text == "Sunny"

    sent = fake.requests[1]["body"]["messages"][-1]["content"][0]
    assert sent == {"type": "tool_result", "tool_use_id": tu.id, "content": "12C sun"}


async def test_missing_tool_result_is_400(fake: FakeAnthropic) -> None:
    fake.script(Reply(text="never sent"))
    messages = [
        user("go"),
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}],
        },
        user("forgot the tool_result"),
    ]
    async with client(fake) as c:
        with pytest.raises(anthropic.BadRequestError) as exc:
            await c.messages.create(model=MODEL, max_tokens=100, tools=TOOLS, messages=messages)
        assert exc.value.type == "invalid_request_error" and "toolu_1" in (
            exc.value.api_message or ""
        )
        # Validation errors do not consume the script.
        ok = await c.messages.create(model=MODEL, max_tokens=100, messages=[user("x")])
        assert ok.content[0].type == "text" and ok.content[0].text == "never sent"
    assert [r["status"] for r in fake.requests] == [400, 200]


async def test_streaming_matches_non_streaming(fake: FakeAnthropic) -> None:
    reply = Reply(
        text="Let me check the weather for you.",
        tool_uses=[
            {"id": "toolu_fixed", "name": "get_weather", "input": {"city": "Oslo", "days": [1, 2]}}
        ],
    )
    fake.script(reply, reply)
    kwargs: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 100,
        "tools": TOOLS,
        "messages": [user("w?")],
    }
    async with client(fake) as c:
        plain = await c.messages.create(**kwargs)
        async with c.messages.stream(**kwargs) as stream:
            texts = [t async for t in stream.text_stream]
            streamed = await stream.get_final_message()
    assert len(texts) > 1 and "".join(texts) == reply.text
    assert comparable(streamed) == comparable(plain)
    assert streamed.stop_reason == "tool_use" and streamed.usage.input_tokens > 0
    assert fake.requests[1]["body"]["stream"] is True


async def test_rate_limit_then_success_with_retries(fake: FakeAnthropic) -> None:
    fake.script(Fail(429, retry_after=0), Reply(text="ok"))
    async with client(fake, max_retries=2) as c:
        msg = await c.messages.create(model=MODEL, max_tokens=10, messages=[user("x")])
    assert msg.content[0].type == "text" and msg.content[0].text == "ok"
    assert [r["status"] for r in fake.wait_for_requests(2)] == [429, 200]


async def test_rate_limit_error_shape(fake: FakeAnthropic) -> None:
    fake.script(Fail(429, retry_after=7, message="slow down"))
    async with client(fake) as c:
        with pytest.raises(anthropic.RateLimitError) as exc:
            await c.messages.create(model=MODEL, max_tokens=10, messages=[user("x")])
    err = exc.value
    assert err.response.headers["retry-after"] == "7"
    assert err.type == "rate_limit_error" and err.api_message == "slow down"
    assert err.request_id and err.request_id.startswith("req_")


async def test_overloaded_without_retries(fake: FakeAnthropic) -> None:
    fake.script(Fail(529))
    async with client(fake, max_retries=0) as c:
        with pytest.raises(anthropic.OverloadedError) as exc:
            await c.messages.create(model=MODEL, max_tokens=10, messages=[user("x")])
    assert isinstance(exc.value, anthropic.InternalServerError)
    assert exc.value.type == "overloaded_error"
    assert len(fake.requests) == 1


async def test_slow_reply_times_out_and_server_survives(fake: FakeAnthropic) -> None:
    fake.script(Reply(text="too late", delay=2))
    async with client(fake, timeout=0.5, max_retries=0) as c:
        t0 = time.monotonic()
        with pytest.raises(anthropic.APITimeoutError):
            await c.messages.create(model=MODEL, max_tokens=10, messages=[user("x")])
        assert time.monotonic() - t0 < 1.5
        # The abandoned handler must not break later requests.
        msg = await c.messages.create(model=MODEL, max_tokens=10, messages=[user("after")])
        assert msg.content[0].type == "text" and msg.content[0].text == "echo: after"


async def test_prompt_cache_read_on_repeat(fake: FakeAnthropic) -> None:
    system: list[Any] = [
        {
            "type": "text",
            "text": "You are a teammate. " * 50,
            "cache_control": {"type": "ephemeral"},
        }
    ]
    async with client(fake) as c:
        first = await c.messages.create(
            model=MODEL, max_tokens=10, system=system, messages=[user("a")]
        )
        second = await c.messages.create(
            model=MODEL, max_tokens=10, system=system, messages=[user("a")]
        )
        uncached = await c.messages.create(model=MODEL, max_tokens=10, messages=[user("a")])
    assert first.usage.cache_creation_input_tokens and first.usage.cache_creation_input_tokens > 0
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0
    assert (
        uncached.usage.cache_read_input_tokens == 0
        and uncached.usage.cache_creation_input_tokens == 0
    )


async def test_missing_fields(fake: FakeAnthropic) -> None:
    async with client(fake) as c:
        with pytest.raises(anthropic.BadRequestError):
            await c.messages.create(model=MODEL, max_tokens=10, messages=[])
        with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
            await c.messages.create(
                model=MODEL, max_tokens=10, messages=[user("x")], extra_body={"max_tokens": None}
            )
    assert [r["status"] for r in fake.requests] == [400, 400]


def test_missing_auth_is_401(fake: FakeAnthropic) -> None:
    req = urllib.request.Request(
        f"{fake.base_url}/v1/messages?beta=true",
        data=json.dumps({"model": MODEL, "max_tokens": 1, "messages": [user("x")]}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=5)
    assert exc.value.code == 401
    assert json.loads(exc.value.read())["error"]["type"] == "authentication_error"
    (rec,) = fake.requests
    assert (rec["status"], rec["path"], rec["query"]) == (401, "/v1/messages", {"beta": "true"})


def test_responder_and_wait_timeout(fake: FakeAnthropic) -> None:
    fake.set_responder(
        lambda body: Fail(500) if "boom" in json.dumps(body) else Reply(text="custom")
    )
    sync = anthropic.Anthropic(api_key="test-key", base_url=fake.base_url, max_retries=0)
    with sync:
        msg = sync.messages.create(model=MODEL, max_tokens=10, messages=[user("hi")])
        assert msg.content[0].type == "text" and msg.content[0].text == "custom"
        with pytest.raises(anthropic.InternalServerError):
            sync.messages.create(model=MODEL, max_tokens=10, messages=[user("boom")])
    with pytest.raises(AssertionError, match="expected >= 3 requests"):
        fake.wait_for_requests(3, timeout=0.1)
