"""The write on the ack path: record an inbound message in as little time as possible.

Slack waits for our ack while this runs, so it is one short transaction of Core statements.
With SQLite it runs on one plain synchronous connection in the caller's thread: a WAL-mode
insert and commit take ~0.1 ms, while a hop through aiosqlite's thread and a pool of
connections contending for SQLite's one write lock cost milliseconds. PostgreSQL
goes through the async engine."""

from __future__ import annotations

import sqlite3
from typing import Any, Protocol

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

from agents.messages import InboundMessage
from storage.db import Database, is_sqlite
from storage.models import Conversation, InboundEvent, ProcessedEvent, utcnow


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
    """The SQLite hand-off on one plain `sqlite3` connection with fixed SQL: ~0.1 ms for the
    transaction, against ~0.7 ms through SQLAlchemy's execution layer (measured here). The
    end-to-end tests exercise these statements against the migrated schema."""

    _PROCESSED = (
        "INSERT INTO processed_events (platform, member_id, event_id, received_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
    )
    _INBOUND = (
        "INSERT INTO inbound_events (member_id, platform, event_id, kind, channel, ts, thread_ts, "
        "user_id, text, status, attempts, received_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'received', 0, ?) ON CONFLICT DO NOTHING RETURNING id"
    )
    _IN_THREAD = (
        "SELECT 1 FROM conversations WHERE member_id = ? AND platform = ? AND channel = ? AND thread_key = ?"
    )

    def __init__(self, url: str) -> None:
        path = make_url(url).database or ":memory:"
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        _sqlite_pragmas(self.conn, None)
        # A checkpoint inside a commit stalls the ack for milliseconds: leave checkpoints to
        # the workers' connections (SQLite's default) and to `checkpoint()` off the ack path.
        self.conn.execute("PRAGMA wal_autocheckpoint=0")

    def checkpoint(self) -> None:
        """Copy the WAL back into the database file; called from a thread, never in an ack."""
        with sqlite3.connect(self.conn.execute("PRAGMA database_list").fetchone()[2], timeout=30) as conn:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def record(self, msg: InboundMessage) -> int | None:
        now = f"{utcnow():%Y-%m-%d %H:%M:%S.%f}"  # SQLAlchemy's SQLite DATETIME format
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not conn.execute(self._PROCESSED, (msg.platform, msg.member_id, msg.event_id, now)).rowcount:
                conn.execute("ROLLBACK")
                return None
            row = conn.execute(
                self._INBOUND,
                (msg.member_id, msg.platform, msg.event_id, msg.kind, msg.channel, msg.ts, msg.thread_ts, msg.user_id, msg.text, now),
            ).fetchone()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return int(row[0]) if row else None

    async def forget(self, msg: InboundMessage, inbound_id: int) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM inbound_events WHERE id = ?", (inbound_id,))
        conn.execute(
            "DELETE FROM processed_events WHERE platform = ? AND member_id = ? AND event_id = ?",
            (msg.platform, msg.member_id, msg.event_id),
        )
        conn.execute("COMMIT")

    async def in_thread(self, msg: InboundMessage) -> bool:
        row = self.conn.execute(self._IN_THREAD, (msg.member_id, msg.platform, msg.channel, msg.thread_ts)).fetchone()
        return row is not None


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


def _sqlite_pragmas(connection: sqlite3.Connection, _record: Any) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA busy_timeout=30000")
    connection.execute("PRAGMA synchronous=NORMAL")
