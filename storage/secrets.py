"""Workflow secrets, encrypted at rest with the configured `secrets_key` (Fernet).

Only names are ever listed; values are decrypted for a run's templates and redacted from its
outputs, logs and prompts."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.inserts import insert_or_ignore
from storage.models import Secret


class SecretKeyError(ValueError):
    """The secrets key cannot decrypt what is stored (it changed, or is wrong)."""


def _fernet(key: str) -> Fernet:
    # Any passphrase works: it is stretched to the 32 bytes Fernet needs.
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))


async def put(session: AsyncSession, name: str, value: str, key: str) -> None:
    token = _fernet(key).encrypt(value.encode())
    if not await insert_or_ignore(session, Secret, {"name": name, "ciphertext": token}):
        row = await session.get(Secret, name)
        assert row is not None
        row.ciphertext = token
        await session.flush()


async def names(session: AsyncSession) -> list[str]:
    return list((await session.execute(select(Secret.name).order_by(Secret.name))).scalars())


async def all_values(session: AsyncSession, key: str) -> dict[str, str]:
    fernet = _fernet(key)
    values = {}
    for row in (await session.execute(select(Secret))).scalars():
        try:
            values[row.name] = fernet.decrypt(row.ciphertext).decode()
        except InvalidToken:
            raise SecretKeyError(f"secret {row.name!r} cannot be decrypted with the configured secrets_key") from None
    return values
