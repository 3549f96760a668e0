"""INSERT ... ON CONFLICT DO NOTHING on both SQLite and PostgreSQL.

Deduplication is a unique key plus this statement: the database, not a process-local set,
decides which of two racing writers wins."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase


async def insert_or_ignore(session: AsyncSession, model: type[DeclarativeBase], values: dict[str, Any]) -> bool:
    """Insert a row unless it collides with a unique key; True when this call inserted it."""
    bind = session.get_bind()
    insert = postgresql.insert if bind.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(model).values(values).on_conflict_do_nothing()  # Python-side defaults still apply
    result = await session.execute(stmt)
    return bool(result.rowcount)  # type: ignore[attr-defined]
