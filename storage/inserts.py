"""INSERT ... ON CONFLICT DO NOTHING on both SQLite and PostgreSQL.

Deduplication is a unique key plus this statement: the database, not a process-local set,
decides which of two racing writers wins."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase

_STATEMENTS: dict[tuple[str, type[DeclarativeBase]], Any] = {}


async def insert_or_ignore(session: AsyncSession, model: type[DeclarativeBase], values: dict[str, Any]) -> bool:
    """Insert a row unless it collides with a unique key; True when this call inserted it."""
    dialect = session.get_bind().dialect.name
    stmt = _STATEMENTS.get((dialect, model))
    if stmt is None:  # built once: the values go in as parameters (Python-side defaults still apply)
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = _STATEMENTS[(dialect, model)] = insert(cast(Table, model.__table__)).on_conflict_do_nothing()
    result = await session.execute(stmt, values)
    return bool(result.rowcount)  # type: ignore[attr-defined]
