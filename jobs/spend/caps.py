"""Members' caps on external effects: `members[].limits.effects_per_day`.

The cap is the budget of scope `effects:<member>` (metric `effects`), seeded from the config
and changeable by admins; it is read from the budgets table at the moment of each effect, so
a raise applies at once, without a restart. What counts as an effect is `jobs.autonomy`'s
decision (an effect tool such as `send_email` or an HTTP tool with `effect: true`; a post
outside the work's own conversation and the team's channels); the callers ask here only
about calls that are effects and that autonomy lets through.

Invariants:
- An effect takes one slot of its member's period (a day of the workspace's time zone) before
  it acts, keyed by the effect's id: a retry of the same effect takes no second slot, and
  two processes never both take the last one (`storage.budgets.take_effect_slot`).
- Past the cap the effect does not happen. A workflow step is *held*: its row is `waiting`
  with `input.held` naming the member, `error` saying why and `wake_at` at the start of the
  next period; it then runs again (and takes a slot then). `wake_held` wakes them sooner,
  after an admin raised the cap. A tool call of an agent step or a conversation turn is
  refused: the model is told why, when the cap resets and who can raise it.
- The first refusal of a member's period is recorded in the activity feed (`effect_capped`),
  once, however many processes hit the cap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from redis import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.runs import queueing
from jobs.spend import notices, periods
from storage import activity, budgets, effects
from storage.db import Database
from storage.models import StepRun
from storage.workflows import update_step
from teammates.config import Config

log = logging.getLogger(__name__)

HELD = "held"  # the key of a held step's `input`: the member whose cap holds it


@dataclass(frozen=True)
class Capped:
    """An effect refused: `member_id`'s cap of `cap` effects per `period` is used up until
    `resets_at` (an aware datetime in the workspace's time zone)."""

    member_id: str
    member_name: str
    cap: int
    period: str  # day | month
    key: str  # the period's key: 2026-12-02
    resets_at: datetime

    @property
    def limit(self) -> str:
        every = "daily" if self.period == "day" else "monthly"
        return f"{self.member_name}'s {every} limit of {self.cap:,} external action{'' if self.cap == 1 else 's'}"

    @property
    def until(self) -> str:
        zone = getattr(self.resets_at.tzinfo, "key", str(self.resets_at.tzinfo))
        return f"{self.resets_at:%Y-%m-%d %H:%M} {zone}"

    def held(self) -> str:
        """A held step's reason, as `runs --json` and the run's progress show it."""
        return f"held: {self.limit} is reached; waits until {self.until} or an admin raises it"

    def reason(self, config: Config, mention: Callable[[str], str], now: datetime | None = None) -> str:
        """Why it did not happen, when that changes, and who can change it sooner."""
        when = periods.words(self.resets_at, now)
        return (f"{self.limit} is reached. It resets {when}. An admin can raise it "
                f"({notices.raisers(config, mention)}, with `teammates budget set member:{self.member_id} --effects N`).")

    def refusal(self, config: Config, mention: Callable[[str], str], now: datetime | None = None) -> str:
        """The tool result a model gets instead of the effect."""
        return (f"Not done, nothing was sent: {self.reason(config, mention, now)} "
                "Tell the person it did not happen and why; do not try again now.")


async def take(db: Database, config: Config, member_id: str, effect_id: str, *, run_id: str | None = None,
               workflow: str | None = None, now: datetime | None = None) -> Capped | None:
    """Take a slot of `member_id`'s current period for the effect `effect_id` before it acts.
    None: it may act (it has a slot, had one already, or the member has no cap)."""
    async with db.session() as session:
        limit = (await budgets.limits(session)).get(f"effects:{member_id}")
        if limit is None:
            return None
        key = periods.key(limit.period, config.workspace.timezone, now)
        if await budgets.take_effect_slot(session, effect_id, member_id, key, int(limit.amount)):
            return None
        capped = _capped(config, member_id, limit, key, now)
        await _note(session, capped, run_id, workflow)
    log.info("effect %s refused: %s", effect_id, capped.held(), extra={"run_id": run_id, "member": member_id, "workflow": workflow})
    return capped


async def room(db: Database, config: Config, member_id: str, *, run_id: str | None = None,
               now: datetime | None = None) -> Capped | None:
    """Whether `member_id` could act now, without taking a slot (a conversation asks the
    person first; the slot is taken when they say OK). None: there is room or no cap."""
    async with db.session() as session:
        limit = (await budgets.limits(session)).get(f"effects:{member_id}")
        if limit is None:
            return None
        key = periods.key(limit.period, config.workspace.timezone, now)
        used = (await budgets.use(session, [(limit.scope, key)]))[(limit.scope, key)]
        if used.count < int(limit.amount):
            return None
        capped = _capped(config, member_id, limit, key, now)
        await _note(session, capped, run_id, None)
    return capped


async def wake_held(db: Database, redis: Redis, member_id: str) -> int:
    """Wake `member_id`'s held steps now (after an admin raised the cap): each becomes due and
    gets its timer, and runs again, taking a slot if there is one (held again if not). A
    timer Redis loses is fired by the reconciler (the row's `wake_at` is due). How many."""
    now = datetime.now(UTC)
    async with db.session() as session:
        rows = (await session.execute(
            select(StepRun.run_id, StepRun.step_path, StepRun.input)
            .where(StepRun.status == "waiting", StepRun.wake_at.is_not(None))
        )).all()
        held = [(run_id, path) for run_id, path, data in rows if isinstance(data, dict) and data.get(HELD) == member_id]
        woken = [(run_id, path) for run_id, path in held
                 if await update_step(session, run_id, path, where_status=("waiting",), wake_at=now)]
    for run_id, path in woken:
        queueing.schedule_wake(redis, run_id, path, now)
    if woken:
        log.info("woke %d held step(s)", len(woken), extra={"member": member_id})
    return len(woken)


def _capped(config: Config, member_id: str, limit: budgets.Limit, key: str, now: datetime | None) -> Capped:
    name = next((m.name for m in config.members if m.id == member_id), member_id)
    return Capped(member_id, name, int(limit.amount), limit.period, key,
                  periods.resets_at(limit.period, config.workspace.timezone, now))


async def _note(session: AsyncSession, capped: Capped, run_id: str | None, workflow: str | None) -> None:
    """The feed's `effect_capped` row, once per member and period (an effect row is the
    once-only marker: its insert wins in exactly one transaction)."""
    marker = f"capped-{capped.member_id}-{capped.key}"
    _, first = await effects.begin_with(session, marker, "effect_capped", {"cap": capped.cap})
    if not first:
        return
    await activity.record(session, member_id=capped.member_id, actor_type="member", actor_id=capped.member_id,
                          action="effect_capped",
                          description=f"{capped.limit} is reached: further external actions wait until {capped.until} "
                                      "or an admin raises it",
                          entity_type="member", entity_id=capped.member_id, run_id=run_id,
                          details={"cap": capped.cap, "period": capped.key, "workflow": workflow})
    log.warning("%s is reached", capped.limit, extra={"run_id": run_id, "member": capped.member_id, "workflow": workflow})
