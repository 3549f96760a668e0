"""The workspace's stored secrets as a tool reads them (`ToolContext.secrets`): for tools whose
configuration names secrets itself, such as an HTTP tool's `Authorization` header.

Nothing is read until a tool asks (one query then), and a value is decrypted only when read; a
secret that cannot be decrypted fails only the call that reads it. The values never reach the
model: the tool redacts what it read from its answer and its errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from jobs.runtime import Runtime
from jobs.workflows import templates
from storage import secrets as secret_store


def reader(rt: Runtime) -> Callable[[], Awaitable[Mapping[str, str]]]:
    async def read() -> Mapping[str, str]:
        async with rt.db.session() as session:
            sealed = await secret_store.sealed(session, rt.loaded.config.secrets_key)
        return templates.SecretsView(names=sealed.ciphertexts, opener=sealed.open)

    return read
