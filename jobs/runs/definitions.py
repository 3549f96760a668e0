"""Workflow versions as validated definitions, cached per process.

Versions are immutable, so a cached definition never goes stale; the cache is keyed by the
database too (tests and benches open several)."""

from __future__ import annotations

from typing import Any

from jobs.workflows.definition import Step, WorkflowDefinition, iter_steps
from storage import workflows as store

_CACHE_LIMIT = 5000
_DEFINITIONS: dict[tuple[str, int, int], WorkflowDefinition] = {}


def cached_version(session: Any, workflow_id: int, version: int, document: dict[str, Any]) -> WorkflowDefinition:
    """Like `load_version`, for a document the caller already read."""
    key = (_database(session), workflow_id, version)
    cached = _DEFINITIONS.get(key)
    if cached is None:
        cached = _remember(key, WorkflowDefinition.model_validate(document))
    return cached


async def load_version(session: Any, workflow_id: int, version: int) -> WorkflowDefinition:
    """A workflow version, validated once per process and database."""
    key = (_database(session), workflow_id, version)
    cached = _DEFINITIONS.get(key)
    if cached is None:
        cached = _remember(key, WorkflowDefinition.model_validate(await store.definition(session, workflow_id, version)))
    return cached


def find_step(definition: WorkflowDefinition, path: str) -> Step:
    """The step a path points at (`remind[3]/draft` -> draft): ids are unique per workflow."""
    wanted = path.rsplit("/", 1)[-1].split("[")[0]
    for _, step in iter_steps(definition):
        if step.id == wanted:
            return step
    raise LookupError(f"no step {wanted!r} in {definition.name}")


def _remember(key: tuple[str, int, int], definition: WorkflowDefinition) -> WorkflowDefinition:
    if len(_DEFINITIONS) > _CACHE_LIMIT:
        _DEFINITIONS.clear()
    _DEFINITIONS[key] = definition
    return definition


def _database(session: Any) -> str:
    return str(session.get_bind().url)
