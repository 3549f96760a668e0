"""`teammates status`: is the system keeping up? Queues, workers, turn latency, and per member
the tokens and cost of its LLM calls and what its budgets leave this period."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from jobs import capacity
from jobs.console.pages import duration
from jobs.queues import redis_from_url
from jobs.spend import balances
from storage import inbound, performance, usage
from storage.db import Database
from teammates.config import LoadedConfig


async def status(loaded: LoadedConfig, say: Callable[[str], None], as_json: bool) -> None:
    snap = capacity.snapshot(redis_from_url(loaded.config.redis_url))
    db = Database(loaded.config.database_url)
    try:
        async with db.session() as session:
            figures = await usage.by_member(session)
            tokens = {m: {k: v for k, v in f.as_dict().items() if k not in ("cost", "calls", "total")} for m, f in figures.items()}
            workflow_tokens = await usage.totals_by_workflow(session)
            standing = await balances.current(session, loaded.config.workspace.timezone)
            failed_count, failed = await inbound.failed(session)
            since = datetime.now(UTC) - timedelta(days=30)
            done = await performance.of_members(session, [m.id for m in loaded.config.members], since,
                                                 loaded.config.workspace.timezone)
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
        # per member: all its tokens, their cost (at the prices of the day they were used), and
        # the least its own and the workspace's budgets leave per metric (null: none bounds it)
        "members": [
            {"member": m.id, "tokens": figures[m.id].total if m.id in figures else 0,
             "cost": round(figures[m.id].cost, 6) if m.id in figures else 0.0,
             "budget_left": balances.llm_left(standing, m.id),
             "budgets": [b.as_dict() for b in balances.for_member(standing, m.id)]}
            for m in loaded.config.members
        ],
        "currency": loaded.config.workspace.currency,
        # per member, the last 30 days (seed 003): tasks done and failed, approvals asked and how
        # they ended, the median seconds from asking to a decision, and the cost of each day
        "performance": {m: p.as_dict() for m, p in done.items()},
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
    currency = loaded.config.workspace.currency
    for member, t in sorted(tokens.items()):
        say(f"tokens {member}: {t['input']} in, {t['output']} out, {t['cache_read']} from cache, {t['cache_write']} cached")
    for row in report["members"]:
        left = row["budget_left"]
        lefts = ", ".join(f"{v:,.2f} {currency}" if k == "cost" else f"{int(v):,} tokens" for k, v in sorted((left or {}).items()))
        say(f"spend {row['member']}: {row['tokens']:,} tokens, {row['cost']:,.4f} {currency}; "
            f"budget left: {lefts or 'no budget'}")
    for member, p in sorted(report["performance"].items()):
        wait = p["median_seconds_to_decision"]
        today = max(p["cost_per_day"]) if p["cost_per_day"] else None
        say(f"performance {member} (30 days): {p['tasks_done']} tasks done, {p['tasks_failed']} failed; approvals "
            f"{p['approvals_asked']} asked, {p['approvals_approved']} approved, {p['approvals_rejected']} rejected, "
            f"{p['approvals_expired']} expired" + (f"; median {duration(wait)} to a decision" if wait is not None else "")
            + (f"; {p['cost_per_day'][today]:,.4f} {currency} on {today}" if today else ""))
    for name, t in sorted(workflow_tokens.items()):
        say(f"tokens of workflow {name}: {t['input']} in, {t['output']} out in {t['runs']} run(s)")
    say(f"failed messages: {failed_count}" if failed_count else "failed messages: none")
    for m in failed:
        say(f"  #{m.id} {m.member_id} in {m.channel} from {m.user_id}, {m.attempts} attempt(s): {m.error}")

