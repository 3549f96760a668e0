"""Signed but malformed Slack payloads never break intake.

Slack's own sample shapes (/work/shared/samples/slack/: events, block_actions,
view_submission, slash commands) are filled in and then mutated — keys dropped, wrong types,
nulls, long strings, deep nesting, NUL and lone surrogates, bad utf-8, truncated bodies — and
posted, correctly signed, to one real `teammates serve`. A user (and Slack) would notice a 5xx
(Slack retries it for ever the same), a dead process, or a message stored but never answered;
so: never a 5xx, the server stays up and answers a normal DM afterwards, and every recorded
inbound row has its turn job queued and is in a state the sweeper picks up again.

Derandomized with a pinned number of examples, so a failure reproduces and the run stays short.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import urllib.parse
from pathlib import Path
from typing import Any

import redis as redis_lib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rq.job import Job
from sqlalchemy import select

from agents.messages import RETRY_TURN_ACTION
from jobs.intake import turn_job_id
from storage.db import Database
from storage.models import InboundEvent
from tests.conftest import ANA, GENERAL, NOVA, NOVA_DM, Stack
from tests.fakes.slack_driver import new_ts

SAMPLES = Path("/work/shared/samples/slack")
EXAMPLES = 300

Json = dict[str, Any]


def _sample(name: str) -> Json:
    return json.loads((SAMPLES / name).read_text())


def _events() -> list[Json]:
    return [json.loads(p.read_text()) for p in sorted((SAMPLES / "events").glob("*.json"))]


def _filled_event(sample: Json, n: int) -> Json:
    """A sample envelope with the values Slack would put in (its samples are blanked)."""
    body = copy.deepcopy(sample)
    body.update(type="event_callback", team_id="T0TEAM001", api_app_id="A0APP0001", event_id=f"EvFUZZ{n:06d}")
    body["authorizations"] = [{"enterprise_id": None, "team_id": "T0TEAM001", "user_id": NOVA["user"], "is_bot": True, "is_enterprise_install": False}]
    return body


def _message(sample: Json, n: int, *, channel: str, channel_type: str | None) -> Json:
    body = _filled_event(sample, n)
    event = body["event"]
    for key in ("bot_id", "bot_profile", "subtype", "thread_ts", "parent_user_id", "edited", "hidden"):
        event.pop(key, None)
    event.update(user=ANA, channel=channel, ts=new_ts(), text=f"<@{NOVA['user']}> fuzz {n}", team="T0TEAM001")
    if channel_type:
        event["channel_type"] = channel_type
    else:
        event.pop("channel_type", None)
    return body


def _block_action(n: int) -> Json:
    body = _sample("app-backend/BlockActionPayload.json")
    body["user"].update(id=ANA, team_id="T0TEAM001")
    body["team"].update(id="T0TEAM001")
    body["channel"].update(id=NOVA_DM)
    body["container"].update(type="message", channel_id=NOVA_DM, message_ts=new_ts())
    body["actions"] = [{"type": "button", "action_id": RETRY_TURN_ACTION, "block_id": "b1", "value": str(n), "action_ts": new_ts()}]
    return body


def _view_submission() -> Json:
    body = _sample("app-backend/ViewSubmissionPayload.json")
    body["user"].update(id=ANA, team_id="T0TEAM001")
    body["team"].update(id="T0TEAM001")
    body["view"].update(callback_id="fuzz_view", type="modal")
    return body


def _slash_command() -> dict[str, str]:
    sample = _sample("app-backend/SlashCommandPayload.json")
    sample.update(team_id="T0TEAM001", channel_id=NOVA_DM, user_id=ANA, command="/nova", text="status", trigger_id="1.fuzz")
    return {key: json.dumps(value) if not isinstance(value, str) else value for key, value in sample.items()}


# ------------------------------------------------------------------ mutations

_LONG = st.sampled_from([10_000, 100_000, 400_000]).map(lambda n: "x" * n)
_ODD_STRINGS = st.sampled_from(["", "\x00", "a\x00b", "\ud800", "\udfff tail", "9" * 5000, "1700000000.000100" * 3, "🦀" * 50, "<@U0NOVA0001>", "{", "[]"])
_WRONG = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.sampled_from(["id", "type", "x"]), st.integers() | st.none(), max_size=2),
    _ODD_STRINGS,
    _LONG,
)


def _deep(depth: int, kind: str) -> str:
    """A placeholder that `_expand` turns into `depth` nested lists or objects (json.dumps
    itself would hit the recursion limit building them)."""
    return f"@@deep:{kind}:{depth}@@"


def _expand(text: str) -> str:
    def nested(match: re.Match[str]) -> str:
        kind, depth = match.group(1), int(match.group(2))
        opening, closing = ("[", "]") if kind == "list" else ('{"a":', "}")
        return opening * depth + '"bottom"' + closing * depth

    return re.sub(r'"@@deep:(list|dict):(\d+)@@"', nested, text)


_DEEP = st.builds(_deep, st.sampled_from([30, 80, 500, 2_000, 20_000]), st.sampled_from(["list", "dict"]))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            out.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for i, child in enumerate(value[:3]):
            out.extend(_paths(child, (*prefix, i)))
    return out


def _mutate(data: st.DataObject, body: Json) -> Json:
    """Apply 1-3 mutations at paths of the body: drop, replace with a wrong type, deep nesting."""
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        paths = _paths(body)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="path")
        parent: Any = body
        for step in path[:-1]:
            parent = parent[step]
        action = data.draw(st.sampled_from(["drop", "wrong", "wrong", "deep"]), label="action")
        if action == "drop":
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(_DEEP if action == "deep" else _WRONG, label="value")
    return body


def _encode(data: st.DataObject, kind: str, body: Any) -> tuple[bytes, str]:
    def dumps(value: Any) -> str:
        return _expand(json.dumps(value, ensure_ascii=data.draw(st.booleans(), label="ascii")))

    if kind == "event":
        return dumps(body).encode("utf-8", "surrogatepass"), "application/json"
    if kind == "form":
        fields = {k: v if isinstance(v, str) else dumps(v) for k, v in body.items()}
    else:
        fields = {"payload": dumps(body)}
    form = urllib.parse.urlencode(fields, encoding="utf-8", errors="surrogatepass")
    return form.encode(), "application/x-www-form-urlencoded"


def _damage(data: st.DataObject, raw: bytes) -> bytes:
    """Body-level damage now and then: bad utf-8 bytes, or a truncated body."""
    how = data.draw(st.sampled_from(["none", "none", "none", "bad_utf8", "truncate"]), label="damage")
    if how == "bad_utf8" and raw:
        # Positions as fractions: the body's length varies with ids and timestamps, and a
        # strategy's bounds must not (hypothesis replays and shrinks the same draws).
        at = data.draw(st.integers(0, 999), label="at") * len(raw) // 1000
        return raw[:at] + data.draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"]), label="bytes") + raw[at:]
    if how == "truncate" and raw:
        return raw[: data.draw(st.integers(0, 999), label="cut") * len(raw) // 1000]
    return raw


# ------------------------------------------------------------------ the test


def test_signed_malformed_payloads_never_get_a_5xx_and_leave_no_half_recorded_event(stack: Stack) -> None:
    stack.start_web()  # no worker: every recorded message must still have its queued job
    driver = stack.driver("nova")
    events = _events()
    statuses: dict[int, int] = {}
    counter = iter(range(10**9))

    @settings(derandomize=True, max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def post_one(data: st.DataObject) -> None:
        n = next(counter)
        shape = data.draw(st.sampled_from(["dm", "dm", "mention", "event", "block_actions", "view_submission", "slash"]), label="shape")
        body: Any
        if shape == "dm":
            kind, body = "event", _message(_sample("events/MessagePayload.json"), n, channel=NOVA_DM, channel_type="im")
        elif shape == "mention":
            kind, body = "event", _message(_sample("events/AppMentionPayload.json"), n, channel=GENERAL, channel_type=None)
        elif shape == "event":
            kind, body = "event", _filled_event(data.draw(st.sampled_from(events), label="sample"), n)
        elif shape == "block_actions":
            kind, body = "payload", _block_action(n)
        elif shape == "view_submission":
            kind, body = "payload", _view_submission()
        else:
            kind, body = "form", _slash_command()
        body = _mutate(data, body)
        raw, content_type = _encode(data, kind, body)
        raw = _damage(data, raw)
        signed = data.draw(st.integers(0, 9), label="signed") > 0
        status, answer = driver.post(*driver.build(raw, content_type, bad_signature=not signed))
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, (status, answer[:300], raw[:300])
        if not signed:
            assert status == 401, (status, answer[:300])

    post_one()

    # The server is still up and still answers a normal message with a recorded row.
    assert stack.procs["web"].poll() is None, stack.logs("web")[-3000:]
    status, _, _ = driver.dm(ANA, "still there?", channel=NOVA_DM)
    assert status == 200
    assert "Traceback" not in stack.logs("web"), stack.logs("web")[-3000:]
    assert statuses.get(200, 0) > EXAMPLES // 10 and statuses.get(400, 0) > EXAMPLES // 20, statuses

    rows = asyncio.run(_inbound_rows(stack.env["DATABASE_URL"]))
    assert rows, "no message was recorded: the fuzzing proved nothing about half-recorded events"
    redis = redis_lib.Redis.from_url(stack.env["REDIS_URL"])
    for row_id, status_name in rows:
        # The sweeper re-enqueues rows in these states; with Redis up, the job is there already.
        assert status_name in ("received", "working"), (row_id, status_name)
        job = Job.fetch(turn_job_id(row_id), connection=redis)
        assert job.get_status() == "queued", (row_id, job.get_status())


async def _inbound_rows(url: str) -> list[tuple[int, str]]:
    db = Database(url)
    try:
        async with db.session() as session:
            return [(r.id, r.status) for r in (await session.execute(select(InboundEvent))).scalars()]
    finally:
        await db.close()


def test_a_message_that_cannot_be_recorded_still_gets_a_5xx_so_slack_delivers_it_again(stack: Stack) -> None:
    """The one 5xx intake keeps: the durable hand-off failed, so Slack must retry."""
    stack.start_web()
    driver = stack.driver("nova")
    url = stack.env["DATABASE_URL"]
    asyncio.run(_execute(url, "ALTER TABLE inbound_events RENAME TO inbound_events_away"))
    status, event_id, ts = driver.dm(ANA, "please record me", channel=NOVA_DM)
    assert status >= 500
    asyncio.run(_execute(url, "ALTER TABLE inbound_events_away RENAME TO inbound_events"))
    event = {"type": "message", "user": ANA, "text": "please record me", "channel": NOVA_DM, "channel_type": "im", "ts": ts, "event_ts": ts}
    statuses = [driver.send_event(event, event_id=event_id, retry_num=n)[0] for n in (1, 2, 3)]
    assert statuses[-1] == 200 and all(s == 200 or s >= 500 for s in statuses), statuses
    assert len(asyncio.run(_inbound_rows(url))) == 1


async def _execute(url: str, sql: str) -> None:
    from sqlalchemy import text

    db = Database(url)
    try:
        async with db.session() as session:
            await session.execute(text(sql))
            await session.commit()
    finally:
        await db.close()
