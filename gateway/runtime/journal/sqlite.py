"""SQLite journal backend (the default): one file, one connection, writes serialised.

One aiosqlite connection is shared by all tasks of the process. An :class:`asyncio.Lock` serialises its
use: SQLite allows one writer anyway, and sharing a connection without the lock would let one task read
another task's uncommitted transaction. Write transactions use ``BEGIN IMMEDIATE`` (the write lock is
taken up front, so no transaction ever has to be retried half-way), with a busy timeout so that another
process on the same file (e.g. the CLI) waits instead of failing.
"""

import asyncio
import contextlib
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import aiosqlite

from gateway.runtime.journal import schema
from gateway.runtime.journal.base import JournalError, SqlJournal, run_to_completion

MEMORY: str = ":memory:"
_PLACEHOLDER = re.compile(r"\$(\d+)")


@lru_cache(maxsize=256)
def _qmark(sql: str) -> str:
    """``$3`` -> ``?3``: SQLite's numbered parameters bind like asyncpg's, so one SQL text serves both."""
    return _PLACEHOLDER.sub(r"?\1", sql)


class _SqliteExecutor:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute_fetchall(_qmark(sql), args)

    async def fetchrow(self, sql: str, *args: Any) -> Mapping[str, Any] | None:
        rows = list(await self._conn.execute_fetchall(_qmark(sql), args))
        return dict(rows[0]) if rows else None

    async def fetch(self, sql: str, *args: Any) -> list[Mapping[str, Any]]:
        return [dict(row) for row in await self._conn.execute_fetchall(_qmark(sql), args)]


class SqliteJournal(SqlJournal):
    """Journal in a SQLite file (WAL, synchronous=NORMAL, foreign keys on), or in memory for tests.

    Safe for many asyncio tasks of one process. Several processes may share the file (SQLite's own
    locking, with ``busy_timeout``); for a multi-process gateway prefer PostgreSQL.
    """

    dialect: ClassVar[str] = "sqlite"
    ddl: ClassVar[tuple[str, ...]] = schema.statements("sqlite")

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 10_000) -> None:
        super().__init__()
        self.path = str(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SqliteJournal({self.path!r})"

    async def _connect(self) -> None:
        if sqlite3.sqlite_version_info < (3, 35, 0):
            # RETURNING (3.35) and upserts (3.24) are used by the shared SQL.
            raise JournalError(f"SQLite >= 3.35 is required, found {sqlite3.sqlite_version}")
        if self.path != MEMORY:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: the sqlite3 module must not open transactions behind our back; we issue
        # BEGIN IMMEDIATE / COMMIT / ROLLBACK ourselves.
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            await conn.execute_fetchall(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            if self.path != MEMORY:
                await conn.execute_fetchall("PRAGMA journal_mode = WAL")
            await conn.execute_fetchall("PRAGMA synchronous = NORMAL")
            await conn.execute_fetchall("PRAGMA foreign_keys = ON")
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            async with self._lock:  # let the operation in progress finish
                await conn.close()

    def _require(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("journal is not open; call open() first")
        return self._conn

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_SqliteExecutor]:
        conn = self._require()
        async with self._lock:
            try:
                await run_to_completion(conn.execute_fetchall("BEGIN IMMEDIATE"))
            except BaseException:
                await self._rollback(conn)  # cancelled after BEGIN ran: a transaction is open
                raise
            try:
                yield _SqliteExecutor(conn)
                await run_to_completion(conn.execute_fetchall("COMMIT"))
            except BaseException:
                await self._rollback(conn)
                raise

    @staticmethod
    async def _rollback(conn: aiosqlite.Connection) -> None:
        # The shared connection must never be left inside a transaction once the lock is released, or
        # every later BEGIN would fail. ROLLBACK is queued after any statement still running for a
        # cancelled caller; "no transaction is active" (BEGIN failed, or COMMIT went through) is fine.
        with contextlib.suppress(sqlite3.OperationalError):
            await run_to_completion(conn.execute_fetchall("ROLLBACK"))

    @asynccontextmanager
    async def _reader(self) -> AsyncIterator[_SqliteExecutor]:
        conn = self._require()
        async with self._lock:  # never read in the middle of another task's transaction
            yield _SqliteExecutor(conn)

    def _ts_in(self, value: datetime) -> str:
        # Fixed-width ISO-8601 in UTC ("2025-01-31T08:00:00.000000+00:00"): text order == time order.
        return value.astimezone(UTC).isoformat(timespec="microseconds")

    def _ts_out(self, value: Any) -> datetime:
        return datetime.fromisoformat(value).astimezone(UTC)
