"""Secret values for a run's templates, decrypted with the configured key."""

from __future__ import annotations

from typing import Any

from storage import secrets as secret_store


async def values(session: Any, key: str | None) -> dict[str, str]:
    return await secret_store.all_values(session, key) if key else {}
