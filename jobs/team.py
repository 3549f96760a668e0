"""The members as stored: seeded from the file, changed from chat (`/nova config`).

Every process reads them here, kept for a few seconds (`TTL`): a burst of steps or posts would
otherwise read the same rows once each, and a change from chat reaches every web and worker
process within that time, without a restart."""

from __future__ import annotations

import time

from agents.members import MemberProfile
from storage import members
from storage.db import Database
from teammates.config import Config

TTL = 3.0
_CACHE: dict[str, tuple[float, list[MemberProfile]]] = {}


async def profiles(db: Database) -> list[MemberProfile]:
    now = time.monotonic()
    hit = _CACHE.get(db.url)
    if hit is not None and now - hit[0] < TTL:
        return hit[1]
    async with db.session() as session:
        found = await members.profiles(session)
    _CACHE[db.url] = (now, found)
    return found


async def member(db: Database, member_id: str) -> MemberProfile | None:
    return next((m for m in await profiles(db) if m.id == member_id), None)


async def conversations(db: Database, config: Config) -> frozenset[str]:
    """The team's own channels: every member's activity and approvals channel, and the
    workspace's activity feed. A post there stays inside the team (`jobs.autonomy`)."""
    found: set[str] = {config.workspace.channels.activity} if config.workspace.channels.activity else set()
    for m in await profiles(db):
        found.update(c for c in (m.activity_channel, m.approvals_channel) if c)
    return frozenset(found)


def forget(db: Database) -> None:
    """After this process changed a member: its own next read sees it at once."""
    _CACHE.pop(db.url, None)
