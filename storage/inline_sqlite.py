"""SQLite for worker processes without aiosqlite's thread hop.

Why: aiosqlite runs every call (cursor, execute, fetchall, close...) on its own thread and
hands the result back through the event loop: ~0.1 ms per hop, four or more hops per
statement. A workflow step runs about ten statements, so the hops cost more than the steps'
work, and the engine ran at 0.2x plain RQ's jobs/s. A worker process runs one job at a
time, so it loses nothing when SQLite runs on the loop's own thread: this is the interface of
`aiosqlite.Connection` that SQLAlchemy's aiosqlite dialect uses, done inline. It is plugged in
through `create_async_engine(async_creator=...)`, SQLAlchemy's documented way to supply the
driver connection; the dialect, the SQL and the pragmas stay the same.

The web process keeps aiosqlite: its loop also serves Slack's requests, and a statement waiting
on another writer's lock must not stall them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any


class InlineCursor:
    """`aiosqlite.Cursor`: coroutines that complete without suspending."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        self._cursor.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> InlineCursor:
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any] | dict[str, Any]]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class InlineConnection:
    """`aiosqlite.Connection` as SQLAlchemy's adapter uses it (`_conn` / `_connection` are the
    names it reads to reach the sqlite3 connection and to tell whether it is still open)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._connection: sqlite3.Connection | None = conn

    def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor())

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def close(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()

    def stop(self) -> None:
        """aiosqlite's forced close (used when SQLAlchemy terminates a connection)."""
        if self._connection is not None:
            self._connection = None
            self._conn.close()


def creator(path: str, timeout: float) -> Any:
    """The `async_creator` for `create_async_engine`: opens `path` as aiosqlite would."""

    async def connect() -> InlineConnection:
        return InlineConnection(sqlite3.connect(path, timeout=timeout, check_same_thread=False))

    return connect
