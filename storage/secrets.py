"""Workflow secrets, encrypted at rest with the configured `secrets_key`.

Only names are ever listed; a value is decrypted only when a step reads it, and redacted from
that step's outputs, errors and logs.

Ciphertext formats (the first bytes tell which; a stored row is never ambiguous):
- `v2:f:<fernet token>` — `secrets_key` is itself a Fernet key (urlsafe base64 of 32 bytes),
  used as given.
- `v2:s:<salt, urlsafe base64>:<fernet token>` — `secrets_key` is a passphrase, stretched with
  scrypt (n=2**14, r=8, p=1) and a random per-secret salt.
- anything else: the first format (a Fernet token keyed by SHA-256 of the passphrase), still
  read; `reencrypt_legacy` rewrites such rows to v2 when a process starts.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.inserts import insert_or_ignore
from storage.models import Secret

_FERNET_PREFIX = b"v2:f:"
_SCRYPT_PREFIX = b"v2:s:"


class SecretKeyError(ValueError):
    """The secrets key cannot decrypt what is stored (it changed, or is wrong, or the row is
    damaged). The message names the secret, never its value."""


def encrypt(value: str, key: str) -> bytes:
    """`value` in the current (v2) format."""
    if _is_fernet_key(key):
        return _FERNET_PREFIX + Fernet(key.encode()).encrypt(value.encode())
    salt = os.urandom(16)
    token = Fernet(_scrypt(key, salt)).encrypt(value.encode())
    return _SCRYPT_PREFIX + base64.urlsafe_b64encode(salt) + b":" + token


def decrypt(name: str, ciphertext: bytes, key: str) -> str:
    """The value of secret `name`; raises `SecretKeyError` (naming the secret) when it cannot."""
    data = bytes(ciphertext)
    try:
        if data.startswith(_FERNET_PREFIX):
            if not _is_fernet_key(key):
                raise InvalidToken
            return Fernet(key.encode()).decrypt(data[len(_FERNET_PREFIX):]).decode()
        if data.startswith(_SCRYPT_PREFIX):
            salt, _, token = data[len(_SCRYPT_PREFIX):].partition(b":")
            return Fernet(_scrypt(key, base64.urlsafe_b64decode(salt))).decrypt(token).decode()
        return _legacy(key).decrypt(data).decode()
    except (InvalidToken, ValueError, binascii.Error):
        raise SecretKeyError(f"secret {name!r} cannot be decrypted with the configured secrets_key") from None


def is_current(ciphertext: bytes) -> bool:
    """Is this row already in the v2 format?"""
    return bytes(ciphertext).startswith((_FERNET_PREFIX, _SCRYPT_PREFIX))


async def put(session: AsyncSession, name: str, value: str, key: str) -> None:
    token = encrypt(value, key)
    if not await insert_or_ignore(session, Secret, {"name": name, "ciphertext": token}):
        row = await session.get(Secret, name)
        assert row is not None
        row.ciphertext = token
        await session.flush()


async def names(session: AsyncSession) -> list[str]:
    return list((await session.execute(select(Secret.name).order_by(Secret.name))).scalars())


@dataclass(frozen=True)
class Sealed:
    """Every stored secret, still encrypted: a step decrypts only the names it reads."""

    ciphertexts: dict[str, bytes]
    key: str | None

    def open(self, name: str) -> str:
        if self.key is None:
            raise SecretKeyError(f"secret {name!r} cannot be read: no secrets_key is configured")
        return decrypt(name, self.ciphertexts[name], self.key)


async def sealed(session: AsyncSession, key: str | None) -> Sealed:
    """The stored secrets, not decrypted (one query; no key needed until a value is read)."""
    rows = (await session.execute(select(Secret.name, Secret.ciphertext))).all()
    return Sealed({name: bytes(ciphertext) for name, ciphertext in rows}, key)


async def reencrypt_legacy(session: AsyncSession, key: str) -> tuple[list[str], list[str]]:
    """Rewrite rows still in the first format to v2. Returns (rewritten names, names that could
    not be decrypted with `key` — left as they are, so a key typo loses nothing)."""
    done: list[str] = []
    failed: list[str] = []
    for row in (await session.execute(select(Secret))).scalars():
        if is_current(row.ciphertext):
            continue
        try:
            value = decrypt(row.name, row.ciphertext, key)
        except SecretKeyError:
            failed.append(row.name)
            continue
        row.ciphertext = encrypt(value, key)
        done.append(row.name)
    await session.flush()
    return done, failed


def _is_fernet_key(key: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(key.encode())) == 32 and len(key.strip()) == 44
    except (binascii.Error, ValueError):
        return False


@functools.lru_cache(maxsize=256)
def _scrypt(passphrase: str, salt: bytes) -> bytes:
    # Cached per (passphrase, salt): a step reading the same secret again costs no second
    # stretch; the passphrase is in this process's memory anyway.
    kdf = Scrypt(salt=salt, length=32, n=2**14, r=8, p=1)
    return base64.urlsafe_b64encode(kdf.derive(passphrase.encode()))


def _legacy(key: str) -> Fernet:
    # The first format: the passphrase hashed once with SHA-256 (no salt, no stretching).
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))
