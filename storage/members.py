"""Members and the workspace, seeded from the config file.

Seeding is idempotent and runs at every start. For each setting the row remembers what the
file said (`file_values`): a setting an admin changed from chat keeps its value until the
file's own value changes, and then the file wins again."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agents.members import MemberProfile, Workspace
from storage.inserts import insert_or_ignore
from storage.models import Member, Person, utcnow
from storage.models import Workspace as WorkspaceRow

WORKSPACE_ID = "default"
SEEDED_FIELDS = ("name", "role", "description", "persona", "tools", "autonomy", "channels", "timezone")


async def seed(session: AsyncSession, workspace: Mapping[str, Any], people: Iterable[Mapping[str, Any]], members: Iterable[Mapping[str, Any]]) -> None:
    """Bring the workspace, people and members in line with the config file."""
    await insert_or_ignore(session, WorkspaceRow, {"id": WORKSPACE_ID, **workspace})
    await session.execute(update(WorkspaceRow).where(WorkspaceRow.id == WORKSPACE_ID).values(**workspace))
    for person in people:
        values = {
            "name": person["name"],
            "slack_user_id": person.get("slack"),
            "teams_user_id": person.get("teams"),
            "email": person.get("email"),
        }
        if not await insert_or_ignore(session, Person, {"id": person["id"], "workspace_id": WORKSPACE_ID, **values}):
            await session.execute(update(Person).where(Person.id == person["id"]).values(**values))
    for member in members:
        file_values = {key: member.get(key) for key in SEEDED_FIELDS}
        inserted = await insert_or_ignore(
            session,
            Member,
            {"id": member["id"], "workspace_id": WORKSPACE_ID, **file_values, "file_values": file_values, "status": "active"},
        )
        if inserted:
            continue
        row = await session.get(Member, member["id"], populate_existing=True)
        assert row is not None
        changed = {key: value for key, value in file_values.items() if row.file_values.get(key) != value}
        if changed:
            await session.execute(
                update(Member).where(Member.id == row.id).values(**changed, file_values={**row.file_values, **changed})
            )


async def profile(session: AsyncSession, member_id: str) -> MemberProfile | None:
    row = await session.get(Member, member_id)
    return _profile(row) if row else None


async def profiles(session: AsyncSession) -> list[MemberProfile]:
    rows = await session.execute(select(Member).order_by(Member.id))
    return [_profile(row) for row in rows.scalars()]


async def workspace(session: AsyncSession) -> Workspace:
    row = await session.get(WorkspaceRow, WORKSPACE_ID)
    if row is None:
        return Workspace(name="My team", locale="en-GB", timezone="UTC", currency="EUR")
    return Workspace(name=row.name, locale=row.locale, timezone=row.timezone, currency=row.currency)


def _profile(row: Member) -> MemberProfile:
    return MemberProfile(
        id=row.id,
        name=row.name,
        role=row.role,
        description=row.description,
        persona=row.persona,
        tools=tuple(row.tools or ()),
        autonomy=row.autonomy,
        status=row.status,
        approvals_channel=(row.channels or {}).get("approvals"),
        activity_channel=(row.channels or {}).get("activity"),
        timezone=row.timezone,
        paused_by=row.paused_by if row.status == "paused" else None,
        paused_at=row.paused_at if row.status == "paused" else None,
    )


async def pause(session: AsyncSession, member_id: str, by: str) -> bool:
    """Pause an active member; False when it is paused already (or unknown). Guarded on the
    status, so of two admins pausing at once one pauses and the other is told it was."""
    result = await session.execute(
        update(Member).where(Member.id == member_id, Member.status == "active")
        .values(status="paused", paused_by=by[:64], paused_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def resume(session: AsyncSession, member_id: str) -> bool:
    """Resume a paused member; False when it was not paused."""
    result = await session.execute(
        update(Member).where(Member.id == member_id, Member.status == "paused")
        .values(status="active", paused_by=None, paused_at=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def paused_ids(session: AsyncSession) -> set[str]:
    """The members paused now (one small query: checked before starting runs)."""
    rows = await session.execute(select(Member.id).where(Member.status == "paused"))
    return {str(r) for r in rows.scalars()}
