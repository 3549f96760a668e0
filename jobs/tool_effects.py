"""The effect log a tool records its outbound effects in (`agents.tools.context.EffectLog`).

The Nth effect of a kind in one turn or step keeps its id on every attempt
(`<run id>-<kind>-<n>`), so a retried turn or step does each effect at most once: the row is
written `started` before the tool acts and `done` after; a retry finds it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobs.runtime import Runtime
from storage import effects


@dataclass
class ToolEffects:
    """`run_id`: stable across attempts (a turn's first message, a step's run and path).
    `redact`: applied to every intent and result before it is stored (a tool step's args may
    hold secret values; none may reach the table)."""

    rt: Runtime
    run_id: str
    counts: dict[str, int] = field(default_factory=dict)
    redact: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def next_id(self, kind: str) -> str:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return f"{self.run_id}-{kind}-{self.counts[kind]}"

    async def begin(self, effect_id: str, kind: str, intent: dict[str, Any]) -> tuple[str, dict[str, Any], bool]:
        async with self.rt.db.session() as session:
            row, inserted = await effects.begin_with(session, effect_id, kind, self._redacted(intent))
            return row.status, dict(row.result), not inserted

    async def finish(self, effect_id: str, result: dict[str, Any]) -> None:
        async with self.rt.db.session() as session:
            await effects.finish(session, effect_id, self._redacted(result))

    def _redacted(self, record: dict[str, Any]) -> dict[str, Any]:
        return record if self.redact is None else self.redact(record)
