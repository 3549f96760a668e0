"""Database engines and sessions for SQLite (embedded default) and PostgreSQL.

Users write plain URLs (`sqlite:///teammates.db`, `postgresql://...`); the async driver is
chosen here. SQLite is shared by the web process and the workers, so every connection gets
WAL mode and a busy timeout, or concurrent writers fail with "database is locked".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from storage import inline_sqlite


class DatabaseUrlError(ValueError):
    """The database URL names a database this product does not support."""


def async_url(url: str) -> str:
    """Map a user's URL to the async driver we ship (aiosqlite, asyncpg)."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a long message
        raise DatabaseUrlError(f"not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise DatabaseUrlError(f"database {backend!r} is not supported: use sqlite:/// or postgresql://")


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, inline: bool = False, **kwargs: Any) -> AsyncEngine:
    """An async engine; for SQLite with the pragmas several processes need. `inline` (worker
    processes) runs a SQLite file's statements on the loop's thread: see storage.inline_sqlite."""
    target = async_url(url)
    if is_sqlite(url):
        path = make_url(url).database
        if inline and path and path != ":memory:" and not path.startswith("file:"):
            engine = create_async_engine(target, async_creator=inline_sqlite.creator(path, timeout=30), **kwargs)
        else:
            engine = create_async_engine(target, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(target, **kwargs)


class Database:
    """One engine and its session factory, owned by one event loop."""

    def __init__(self, url: str, *, inline: bool = False) -> None:
        self.url = url
        self.engine = create_engine(url, inline=inline)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed on success, rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    async def ping(self) -> None:
        from sqlalchemy import text

        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()
