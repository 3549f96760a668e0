"""Posting the activity feed: a loop in every web process, one pass at a time across them.

The `activity` table is the source; `storage.feed` records what was posted. A pass reads the
rows after the cursor, words them (`jobs.feed.lines`), and posts each line worth one to its
member's activity channel (`members[].channels.activity`, else `workspace.channels.activity`)
as that member's bot: the first line of a run starts a thread, its later lines are replies in
it, so a run is one message in the channel however much it does. Channels are posted to side by
side, each paced under Slack's per-channel rate (`workers.channel_post_interval`).

Never on the critical path: turns and steps only write their activity row; a slow or absent
Slack delays the feed, nothing else. Posted once: a line's record goes `posting` before the
post (which carries the record's id in its metadata) and `done` after; a process that dies in
between leaves `posting`, and after its lease the next pass asks Slack whether the line landed
before posting it again. A Redis lock keeps passes of several web processes from running at
once (the records would keep them from posting twice anyway)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from redis.exceptions import RedisError

from agents.channels import Channel, ChannelError, is_permanent
from agents.messages import MessageRef
from agents.tools.registry import known_tools, resolve
from jobs import pacing, team
from jobs.feed.lines import Words, line
from jobs.people import People
from jobs.runtime import Runtime
from storage import feed as store
from storage.models import Activity, utcnow

log = logging.getLogger(__name__)

EVERY = 2.0  # seconds between passes
PAGE = 500  # rows read per query
MAX_ROWS = 5000  # rows read per pass
PASS_BUDGET = 20.0  # seconds a pass may spend posting; the rest waits for the next
LOCK_TTL = 60.0  # seconds; a pass of a dead process holds the lock no longer
POST_TIMEOUT = 30.0  # seconds one post may take, retries included; then it is left to the lease
LEASE = timedelta(seconds=45)  # a `posting` record older than this lost its poster (> POST_TIMEOUT)
QUIET_AFTER = timedelta(seconds=60)  # a row this old was committed: the cursor may pass it
LOOK_BACK = timedelta(hours=1)  # a new feed starts with the last hour
PLATFORM = "slack"
_LOCK = "teammates:feed:lock"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


async def run_forever(rt: Runtime, every: float = EVERY) -> None:
    """Pass after pass until cancelled; an error is logged and the next pass goes on (Redis
    away is said once, not every pass: the feed simply waits for it)."""
    redis_away = False
    while True:
        try:
            await post_pending(rt)
            redis_away = False
        except RedisError as exc:
            if not redis_away:
                log.warning("activity feed waits for Redis: %s", exc)
            redis_away = True
        except Exception:  # noqa: BLE001 - the feed must never stop the web process
            log.exception("activity feed pass failed")
        await asyncio.sleep(every)


async def post_pending(rt: Runtime) -> int:
    """One pass: post what is pending; returns how many lines landed."""
    config = rt.loaded.config
    # Members' channels as stored: an admin may have changed one from chat (`jobs.team`).
    if not config.workspace.channels.activity and not any(m.activity_channel for m in await team.profiles(rt.db)):
        return 0
    assert rt.redis is not None
    token = uuid.uuid4().hex
    if not rt.redis.set(_LOCK, token, nx=True, px=int(LOCK_TTL * 1000)):
        return 0  # another process is on it
    try:
        return await _pass(rt)
    finally:
        rt.redis.eval(_RELEASE, 1, _LOCK, token)


async def _pass(rt: Runtime) -> int:
    config = rt.loaded.config
    rows: list[Activity] = []
    marks: dict[int, Any] = {}
    async with rt.db.session() as session:
        after = await store.cursor(session, LOOK_BACK)
        while len(rows) < MAX_ROWS:  # past rows already posted but too young for the cursor to pass
            page = await store.rows_after(session, rows[-1].id if rows else after, PAGE)
            rows += page
            marks.update(await store.marks(session, [row.id for row in page]))
            if len(page) < PAGE:
                break
        runs = await store.runs(session, {row.run_id for row in rows if row.run_id})
    words = _words(rt, _poster(rt, None))
    stored = {m.id: m.activity_channel for m in await team.profiles(rt.db)}
    settled: set[int] = set()
    pending: dict[str, list[tuple[Activity, str]]] = {}  # channel -> rows to post, in order
    for row in rows:
        mark = marks.get(row.id)
        channel_id = (stored.get(row.member_id) if row.member_id else None) or config.workspace.channels.activity
        text = line(row, words, runs.get(row.run_id or "")) if channel_id else None
        if mark is not None and mark.status == "done" or text is None or channel_id is None:
            settled.add(row.id)
        else:
            pending.setdefault(channel_id, []).append((row, text))
    deadline = time.monotonic() + PASS_BUDGET
    # Side by side, and each to its end: a channel that fails (its record stays `posting`, the
    # lease hands it to a later pass) neither stops the others nor outlives the pass's lock.
    results = await asyncio.gather(*(_post_channel(rt, channel_id, lines, deadline, settled)
                                     for channel_id, lines in pending.items()), return_exceptions=True)
    for channel_id, result in zip(pending, results, strict=True):
        if isinstance(result, BaseException):
            log.warning("feed lines for %s not posted: %s", channel_id, result)
    moved = store.settled_before(rows, settled, utcnow() - QUIET_AFTER)
    if moved is not None and moved > after:
        async with rt.db.session() as session:
            await store.move_cursor(session, moved)
    return sum(result for result in results if isinstance(result, int))


async def _post_channel(rt: Runtime, channel_id: str, lines: list[tuple[Activity, str]], deadline: float, settled: set[int]) -> int:
    """This channel's lines in order. A line another poster holds keeps the later lines of its
    run back (they must not start the run's thread before it); a line Slack refuses for now
    ends the channel's turn (it is rate limited or away)."""
    landed = 0
    held: set[str | None] = set()
    for row, text in lines:
        if time.monotonic() > deadline:
            break
        if row.run_id in held:
            continue
        outcome = await _post_line(rt, channel_id, row, text)
        if outcome == "later":
            break
        if outcome == "busy":
            held.add(row.run_id)
            continue
        settled.add(row.id)
        landed += outcome == "posted"
    return landed


async def _post_line(rt: Runtime, channel_id: str, row: Activity, text: str) -> str:
    """posted | settled (found in Slack, or never postable) | busy (another poster has it) | later."""
    extra: dict[str, Any] = {"run_id": row.run_id, "member": row.member_id}
    channel = _poster(rt, row.member_id)
    if channel is None:
        return "settled"  # no member of this feed is on Slack: nothing can post it
    async with rt.db.session() as session:
        taken, maybe_landed = await store.claim(session, row.id, LEASE)
        thread = await store.thread(session, channel_id, row.run_id) if row.run_id else None
    if not taken:
        return "busy"
    key = store.line_key(row.id)
    where = MessageRef(channel_id, None, thread)
    if maybe_landed:  # its poster died mid-post: did the line land?
        try:
            found = await channel.find_effect(where, key)
        except ChannelError as exc:
            found = None
            log.info("feed line %s: could not look for an earlier post (%s)", row.id, exc.code, extra=extra)
        if found is not None:
            await _record(rt, row, channel_id, thread, str(found.message))
            return "settled"
    assert rt.redis is not None
    await pacing.pace(rt.redis, f"{PLATFORM}:channel:{channel_id}", rt.loaded.config.workers.channel_post_interval)
    try:
        posted = await asyncio.wait_for(channel.post(where, text, effect_id=key), POST_TIMEOUT)
    except TimeoutError:  # it may have landed: the next poster after the lease asks Slack
        log.warning("feed line in %s: no answer from Slack in %.0f s", channel_id, POST_TIMEOUT, extra=extra)
        return "later"
    except ChannelError as exc:
        async with rt.db.session() as session:
            if is_permanent(exc):
                await store.posted(session, row.id, {"error": exc.code, "channel": channel_id})
            else:
                await store.not_now(session, row.id)
        log.warning("feed line not posted in %s: %s", channel_id, exc.code, extra=extra)
        return "settled" if is_permanent(exc) else "later"
    await _record(rt, row, channel_id, thread, str(posted.message))
    return "posted"


async def _record(rt: Runtime, row: Activity, channel_id: str, thread: str | None, ts: str) -> None:
    async with rt.db.session() as session:
        await store.posted(session, row.id, {"channel": channel_id, "ts": ts, "thread": thread})
        if row.run_id and thread is None:  # the run's first line: its thread
            await store.start_thread(session, channel_id, row.run_id, ts)


def _poster(rt: Runtime, member_id: str | None) -> Channel | None:
    """The bot that posts a member's lines: its own, else (a row of no member, or a member not
    on Slack) the first member's that is."""
    ids = ([member_id] if member_id else []) + [m.id for m in rt.loaded.config.members if m.id != member_id]
    for candidate in ids:
        try:
            return rt.channels(PLATFORM, candidate)
        except LookupError:  # not on Slack
            continue
    return None


def _words(rt: Runtime, channel: Channel | None) -> Words:
    """Names, mentions and tools for the wording of one pass."""
    config = rt.loaded.config
    names = {m.id: m.name for m in config.members}
    people = People.from_config(config)
    tools = {tool.name: tool for tool in resolve(known_tools())}

    def mention(who: str) -> str:
        user = people.user_id(who, PLATFORM)
        return channel.mention(user) if channel is not None else user

    configured = {entry.name: entry.input for entry in config.tools}

    def schema(name: str) -> Mapping[str, Any]:
        if name in configured:
            return configured[name]
        tool = tools.get(name)
        found = tool.schema().get("input_schema") if tool is not None else None
        return found if isinstance(found, Mapping) else {}

    return Words(member_name=lambda member: names.get(member, member), mention=mention,
                 is_effect=lambda name: name in tools and tools[name].effect, tool_schema=schema,
                 conversation=lambda c: channel.mention_conversation(c) if channel is not None else c)
