"""The write on the ack path: record an inbound message in as little time as possible.

Slack waits for our ack while this runs, so it is one short transaction of Core statements.
With SQLite it runs on a plain synchronous connection in the caller's thread: a WAL-mode
insert and commit take tens of microseconds, while a hop through aiosqlite's thread and a
pool of connections contending for SQLite's one write lock cost milliseconds. PostgreSQL
goes through the async engine."""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import Connection, Engine, create_engine, delete, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import StaticPool

from agents.messages import InboundMessage
from storage.db import Database, is_sqlite
from storage.models import Conversation, InboundEvent, ProcessedEvent


class InboundRecorder(Protocol):
    async def record(self, msg: InboundMessage) -> int | None:
        """Store the message; its id, or None when it was delivered before (same event id,
        or same channel + ts: an @mention arrives as two events)."""
        ...

    async def forget(self, msg: InboundMessage, inbound_id: int) -> None:
        """Undo `record` (the hand-off failed): the platform will deliver it again."""
        ...

    async def in_thread(self, msg: InboundMessage) -> bool:
        """Is the member already part of the thread this message replies in?"""
        ...


def recorder_for(db: Database) -> InboundRecorder:
    return SqliteRecorder(db.url) if is_sqlite(db.url) else AsyncRecorder(db)


def _values(msg: InboundMessage) -> dict[str, Any]:
    return {
        "member_id": msg.member_id,
        "platform": msg.platform,
        "event_id": msg.event_id,
        "kind": msg.kind,
        "channel": msg.channel,
        "ts": msg.ts,
        "thread_ts": msg.thread_ts,
        "user_id": msg.user_id,
        "text": msg.text,
        "status": "received",
        "attempts": 0,
    }


def _processed(msg: InboundMessage) -> dict[str, Any]:
    return {"platform": msg.platform, "member_id": msg.member_id, "event_id": msg.event_id}


def _thread_query(msg: InboundMessage) -> Any:
    return select(Conversation.id).where(
        Conversation.member_id == msg.member_id,
        Conversation.platform == msg.platform,
        Conversation.channel == msg.channel,
        Conversation.thread_key == msg.thread_ts,
    )


def _forget(msg: InboundMessage, inbound_id: int) -> list[Any]:
    return [
        delete(InboundEvent).where(InboundEvent.id == inbound_id),
        delete(ProcessedEvent).where(
            ProcessedEvent.platform == msg.platform,
            ProcessedEvent.member_id == msg.member_id,
            ProcessedEvent.event_id == msg.event_id,
        ),
    ]


class SqliteRecorder:
    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(self.engine, "connect", _sqlite_pragmas)

    def _record(self, conn: Connection, msg: InboundMessage) -> int | None:
        fresh = conn.execute(sqlite.insert(ProcessedEvent).values(_processed(msg)).on_conflict_do_nothing()).rowcount
        if not fresh:
            return None
        row = conn.execute(
            sqlite.insert(InboundEvent).values(_values(msg)).on_conflict_do_nothing().returning(InboundEvent.id)
        ).first()
        return int(row[0]) if row else None

    async def record(self, msg: InboundMessage) -> int | None:
        with self.engine.begin() as conn:
            return self._record(conn, msg)

    async def forget(self, msg: InboundMessage, inbound_id: int) -> None:
        with self.engine.begin() as conn:
            for statement in _forget(msg, inbound_id):
                conn.execute(statement)

    async def in_thread(self, msg: InboundMessage) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(_thread_query(msg)).first() is not None


class AsyncRecorder:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, msg: InboundMessage) -> int | None:
        async with self.db.engine.begin() as conn:
            fresh = (await conn.execute(postgresql.insert(ProcessedEvent).values(_processed(msg)).on_conflict_do_nothing())).rowcount
            if not fresh:
                return None
            row = (
                await conn.execute(
                    postgresql.insert(InboundEvent).values(_values(msg)).on_conflict_do_nothing().returning(InboundEvent.id)
                )
            ).first()
            return int(row[0]) if row else None

    async def forget(self, msg: InboundMessage, inbound_id: int) -> None:
        async with self.db.engine.begin() as conn:
            for statement in _forget(msg, inbound_id):
                await conn.execute(statement)

    async def in_thread(self, msg: InboundMessage) -> bool:
        async with self.db.engine.connect() as conn:
            return (await conn.execute(_thread_query(msg))).first() is not None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
