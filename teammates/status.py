"""`teammates status`: is the system keeping up? Queues, workers, turn latency, token usage."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from jobs import capacity
from jobs.queues import redis_from_url
from storage import inbound, usage
from storage.db import Database
from teammates.config import LoadedConfig


async def status(loaded: LoadedConfig, say: Callable[[str], None], as_json: bool) -> None:
    snap = capacity.snapshot(redis_from_url(loaded.config.redis_url))
    db = Database(loaded.config.database_url)
    try:
        async with db.session() as session:
            tokens = await usage.totals_by_member(session)
            workflow_tokens = await usage.totals_by_workflow(session)
            failed_count, failed = await inbound.failed(session)
    finally:
        await db.close()
    total = snap.turn_latency_buckets[-1][1] if snap.turn_latency_buckets else 0
    report: dict[str, Any] = {
        "queues": [{"name": q.name, "depth": q.depth, "oldest_age_seconds": round(q.oldest_age, 1)} for q in snap.queues],
        "workers": {"busy": snap.busy_workers, "idle": snap.idle_workers},
        "turns": {
            "answered": total,
            "p50_seconds_at_most": capacity.percentile(snap.turn_latency_buckets, 0.5),
            "p95_seconds_at_most": capacity.percentile(snap.turn_latency_buckets, 0.95),
        },
        "tokens": tokens,  # per member: conversation turns and workflow agent steps together
        "workflow_tokens": workflow_tokens,  # per workflow: its agent steps, and how many runs used any
        "failed_messages": {
            "count": failed_count,
            "latest": [
                {"id": m.id, "member": m.member_id, "platform": m.platform, "channel": m.channel, "user": m.user_id,
                 "attempts": m.attempts, "reason": m.error, "received_at": m.received_at.isoformat()}
                for m in failed
            ],
        },
    }
    if as_json:
        say(json.dumps(report, indent=2, default=lambda v: None if v == float("inf") else v))
        return
    for q in report["queues"]:
        say(f"queue {q['name']}: {q['depth']} waiting, oldest {q['oldest_age_seconds']} s")
    say(f"workers: {snap.busy_workers} busy, {snap.idle_workers} idle")
    turns = report["turns"]
    if total:
        say(f"turns answered: {total}; p50 <= {turns['p50_seconds_at_most']} s, p95 <= {turns['p95_seconds_at_most']} s")
    else:
        say("turns answered: none yet")
    for member, t in sorted(tokens.items()):
        say(f"tokens {member}: {t['input']} in, {t['output']} out, {t['cache_read']} from cache, {t['cache_write']} cached")
    for name, t in sorted(workflow_tokens.items()):
        say(f"tokens of workflow {name}: {t['input']} in, {t['output']} out in {t['runs']} run(s)")
    say(f"failed messages: {failed_count}" if failed_count else "failed messages: none")
    for m in failed:
        say(f"  #{m.id} {m.member_id} in {m.channel} from {m.user_id}, {m.attempts} attempt(s): {m.error}")
