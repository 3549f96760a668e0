"""`teammates approvals ...`: pending approvals, one approval in full, and deciding one as a
person. Thin calls into `storage.approvals` and `jobs.runs.approvals.decide_as`: who may
decide is checked there, exactly as for a click in Slack, never here."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from jobs.people import People
from jobs.queues import redis_from_url
from jobs.runs.approvals import DecisionKind, decide_as
from jobs.runtime import Runtime
from storage import approvals as store
from storage.models import Approval
from teammates.config import ConfigError, LoadedConfig
from teammates.runtime import opened, slack_channels
from teammates.workflows_cli import person

Say = Callable[[str], None]

MAX_CONTENT = 3000  # characters, as the Edit form in Slack allows
MAX_REASON = 500  # characters, as the Reject form in Slack allows
PLATFORM = "slack"  # the CLI decides as the person's Slack account, as their click would


class Refused(Exception):
    """Nothing was decided: the person may not decide this one, or it was decided already."""


async def list_pending(loaded: LoadedConfig, say: Say, as_json: bool) -> None:
    async with opened(loaded) as db:
        async with db.session() as session:
            rows = await store.listing(session, pending_only=True)
    items = [_summary(row) for row in rows]
    if as_json:
        say(json.dumps(items, indent=2))
        return
    if not items:
        say("no pending approvals")
    for item in items:
        quorum = f" ({item['quorum']} needed)" if item["quorum"] > 1 else ""
        say(f"{item['id']}  {item['workflow'] or '-'}  {item['title']}  approvers: {', '.join(item['approvers']) or 'admins'}"
            f"{quorum}  expires: {item['expires_at'] or 'never'}")


async def show(loaded: LoadedConfig, approval_id: str, say: Say, as_json: bool) -> None:
    async with opened(loaded) as db:
        async with db.session() as session:
            row = await store.get(session, approval_id)
    if row is None:
        raise ConfigError(f"no approval {approval_id!r}")
    item = _details(row)
    if as_json:
        say(json.dumps(item, indent=2))
        return
    say(f"{item['id']}  {item['status']}  {item['title']}")
    say(f"  workflow: {item['workflow'] or '-'}  member: {item['member']}  run: {item['run_id'] or '-'}  step: {item['step'] or '-'}")
    say(f"  approvers: {', '.join(item['approvers']) or 'admins'}" + (f"  quorum: {item['quorum']}" if item["quorum"] > 1 else ""))
    say(f"  created: {item['created_at']}  expires: {item['expires_at'] or 'never'}")
    if item["decided_at"]:
        say(f"  decided: {item['status']} by {item['decided_by'] or 'system'} at {item['decided_at']}"
            + (f": {item['reason']}" if item["reason"] else ""))
    for entry in item["decisions"]:
        say(f"  - {entry['decision']} by {entry['by'] or 'system'} at {entry['at']}" + (" (edited)" if entry.get("edited") else "")
            + (f": {entry['reason']}" if entry.get("reason") else ""))
    for copy in item["messages"]:
        say(f"  posted: {copy.get('platform')} {copy.get('conversation')} {copy.get('message')}"
            + (f" (thread {copy['thread']})" if copy.get("thread") else ""))
    say("  content:")
    for line in (item["content"] or "(empty)").splitlines() or [""]:
        say(f"    {line}")


async def decide(loaded: LoadedConfig, approval_id: str, kind: DecisionKind, as_person: str | None, say: Say, *,
                 reason: str | None = None, content_file: str | None = None) -> None:
    """Decide as `--as PERSON` through `decide_as`, the path of a click: the person's Slack
    user id is checked against the approvers (and admins); the decision resumes the run and
    updates every posted copy of the request. Anything that changed nothing is `Refused`."""
    who = person(loaded, as_person)
    if who is None:
        raise ConfigError(f"approvals {'approve' if kind == 'approved' else 'reject'}: --as PERSON is required (who decides)")
    content = await _content(content_file) if content_file is not None else None
    if reason is not None:
        reason = reason.strip() or None
        if reason is not None and len(reason) > MAX_REASON:
            raise ConfigError(f"--reason: at most {MAX_REASON} characters (got {len(reason)})")
    directory = People.from_config(loaded.config)
    user_id = directory.user_id(who, PLATFORM)
    redis = redis_from_url(loaded.config.redis_url)
    try:  # the decision is what resumes the run: without Redis, decide nothing rather than half
        await asyncio.to_thread(redis.ping)
    except RedisError:
        raise ConfigError("redis_url: Redis is unreachable; nothing was decided") from None
    async with opened(loaded) as db:
        async with db.session() as session:
            if await store.get(session, approval_id) is None:
                raise ConfigError(f"no approval {approval_id!r}")
        rt = Runtime(loaded=loaded, db=db, channels=slack_channels(loaded), redis=redis)
        outcome, sentence = await decide_as(rt, approval_id, user_id, PLATFORM, None, kind, reason=reason, content=content)
        if outcome in ("refused", "unchanged"):
            raise Refused(f"{approval_id}: {_plain(sentence, directory)}")
        if outcome == "counted":
            async with db.session() as session:
                row = await store.get(session, approval_id)
            assert row is not None
            approved = {d["by"] for d in row.decisions or [] if d.get("decision") == "approved"}
            say(f"{approval_id}: approval counted as {who} ({len(approved)} of {row.quorum})")
            return
    say(f"{approval_id}: {outcome} as {who}")


async def _content(path: str) -> str:
    """The edited draft: a UTF-8 file of at most MAX_CONTENT characters (trailing newlines,
    which an editor adds, are dropped)."""
    try:
        text = await asyncio.to_thread(Path(path).read_text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the content file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    text = text.rstrip("\n")
    if not text.strip():
        raise ConfigError(f"{path}: the content file is empty")
    if len(text) > MAX_CONTENT:
        raise ConfigError(f"{path}: at most {MAX_CONTENT} characters (got {len(text)})")
    return text


_MENTION = re.compile(r"<@([A-Z0-9]+)>|<!subteam\^([A-Z0-9]+)>")


def _plain(sentence: str, directory: People) -> str:
    """The core's sentence names people as Slack mentions; a terminal shows their ids."""
    def name(match: re.Match[str]) -> str:
        user = match.group(1)
        if user is None:
            return match.group(2)
        found = directory.person_of(user, PLATFORM)
        return f"{found} ({user})" if found else user

    return _MENTION.sub(name, sentence)


def _summary(row: Approval) -> dict[str, Any]:
    """The published `approvals --json` shape (docs/interfaces.md): these keys, no others."""
    return {
        "id": row.id, "run_id": row.run_id, "workflow": row.workflow, "member": row.member_id, "title": row.title,
        "status": row.status, "approvers": list(row.approvers or []), "quorum": row.quorum,
        "decisions": [{"by": d.get("by"), "decision": d.get("decision"), "at": d.get("at"), "reason": d.get("reason")}
                      for d in row.decisions or []],
        "expires_at": _iso(row.expires_at),
    }


def _details(row: Approval) -> dict[str, Any]:
    """Everything about one request: the summary, plus the draft, each decision in full, the
    outcome and where every copy was posted."""
    return {
        **_summary(row),
        "step": row.step_path, "content": row.content,
        "decisions": [{"by": d.get("by"), "decision": d.get("decision"), "at": d.get("at"), "reason": d.get("reason"),
                       "content": d.get("content"), "edited": bool(d.get("edited"))} for d in row.decisions or []],
        "decided_by": row.decided_by, "decided_at": _iso(row.decided_at), "reason": row.reason,
        "created_at": _iso(row.created_at), "remind_at": _iso(row.remind_at), "reminded_at": _iso(row.reminded_at),
        "messages": [dict(copy) for copy in row.messages or []],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
