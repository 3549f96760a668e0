"""Composition root: wires config, storage, Redis, the LLM and the platform channels together.

This is the only place outside `bot/` that knows which platforms exist."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from functools import cache

from sqlalchemy import inspect

from agents.channels import Channel, ChannelProvider
from jobs.queues import redis_from_url
from jobs.runtime import Runtime, llm_client
from jobs.spend import ledger as spend_ledger
from storage import members
from storage import secrets as secret_store
from storage.db import Database
from teammates.config import ConfigError, LoadedConfig

log = logging.getLogger(__name__)


def slack_channels(loaded: LoadedConfig) -> ChannelProvider:
    """One Slack client per member, created on first use and kept for the process.

    The Slack client (slack_sdk and aiohttp, ~0.2 s) is imported here, not with this module:
    CLI commands that only use `prepare_database` do not load it."""
    from bot.slack.channel import SlackChannel, web_client

    @cache
    def channel(platform: str, member_id: str) -> Channel:
        if platform != "slack":
            raise LookupError(f"no channel for platform {platform!r} in this process")
        member = loaded.config.member(member_id)
        if member.slack is None or member.slack.bot_token is None:
            raise LookupError(f"member {member_id} has no Slack bot token")
        return SlackChannel(web_client(member.slack.bot_token, loaded.config.slack.api_url))

    return channel


def worker_runtime(loaded: LoadedConfig) -> Runtime:
    return Runtime(
        loaded=loaded,
        db=Database(loaded.config.database_url, inline=True),  # a worker runs one job at a time
        channels=slack_channels(loaded),
        redis=redis_from_url(loaded.config.redis_url),
        llm_factory=lambda: llm_client(loaded),
    )


async def prepare_database(loaded: LoadedConfig, db: Database) -> None:
    """Check the schema is there, seed the workspace and members from the file, and bring stored
    secrets to the current ciphertext format."""
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    if "members" not in tables:
        raise ConfigError(f"database_url: the database has no tables yet: run `teammates migrate` first ({_safe_url(loaded)})")
    config = loaded.config
    async with db.session() as session:
        await members.seed(
            session,
            config.workspace.model_dump(exclude={"channels"}),
            [p.model_dump() for p in config.people],
            [m.model_dump(include={"id", "name", "role", "description", "persona", "tools", "autonomy", "channels", "timezone"})
             for m in config.members],
        )
        await spend_ledger.seed(session, config)
    if config.secrets_key:
        # Secrets stored in the first format (SHA-256 of the passphrase) move to v2 (scrypt, or
        # the key as a Fernet key) the first time a process starts with the key.
        async with db.session() as session:
            _, unreadable = await secret_store.reencrypt_legacy(session, config.secrets_key)
        if unreadable:
            log.warning("secrets %s cannot be decrypted with the configured secrets_key; left as they are "
                        "(steps that read them fail)", ", ".join(unreadable))


@contextlib.asynccontextmanager
async def opened(loaded: LoadedConfig) -> AsyncIterator[Database]:
    """The database for one CLI command: checked and seeded, closed again when it is done."""
    db = Database(loaded.config.database_url)
    try:
        await prepare_database(loaded, db)
        yield db
    finally:
        await db.close()


def _safe_url(loaded: LoadedConfig) -> str:
    from sqlalchemy.engine import make_url

    return make_url(loaded.config.database_url).render_as_string(hide_password=True)
