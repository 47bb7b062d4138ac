"""PostgreSQL journal backend: an asyncpg pool, row locks for the delivery counters.

Safe for many tasks and many processes: counters are changed only under ``SELECT ... FOR UPDATE`` of the
message row (see :class:`~gateway.runtime.journal.base.SqlJournal`), and schema creation is serialised by
a transaction-level advisory lock so that several gateway processes may start at the same time.
"""

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

import asyncpg

from gateway.runtime.journal import schema
from gateway.runtime.journal.base import Executor, SqlJournal

# Arbitrary constant identifying "cisis-gateway journal schema" among advisory locks.
_SCHEMA_LOCK_KEY: Final = 0x43495349534A4E4C


class _PgExecutor:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Mapping[str, Any] | None:
        row = await self._conn.fetchrow(sql, *args)
        return dict(row) if row is not None else None

    async def fetch(self, sql: str, *args: Any) -> list[Mapping[str, Any]]:
        return [dict(row) for row in await self._conn.fetch(sql, *args)]


class PostgresJournal(SqlJournal):
    """Journal in PostgreSQL (timestamptz, JSONB, BYTEA), through a small asyncpg pool.

    JSON travels as text both ways (asyncpg's default jsonb codec), like in SQLite, so the shared code
    encodes and decodes it once.
    """

    dialect: ClassVar[str] = "postgresql"
    for_update: ClassVar[str] = " FOR UPDATE"
    ddl: ClassVar[tuple[str, ...]] = schema.statements("postgresql")

    def __init__(
        self, dsn: str, *, min_size: int = 1, max_size: int = 5, command_timeout: float = 30.0
    ) -> None:
        super().__init__()
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        # The DSN may hold a password: show only where it points.
        return f"PostgresJournal(<dsn>, max_size={self._max_size})"

    async def _connect(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=self._min_size,
            max_size=self._max_size,
            command_timeout=self._command_timeout,
            server_settings={"application_name": "cisis-gateway-journal"},
        )

    async def _disconnect(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()  # waits for connections in use to be released

    def _require(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("journal is not open; call open() first")
        return self._pool

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_PgExecutor]:
        # READ COMMITTED is enough: every read-modify-write starts with a row lock, and after waiting on
        # it PostgreSQL re-reads the latest committed row.
        # The acquire timeout bounds how long a write (which its caller cannot cancel) may wait for a pool
        # connection when the server is unreachable.
        async with self._require().acquire(timeout=self._command_timeout) as conn, conn.transaction():
            yield _PgExecutor(conn)

    @asynccontextmanager
    async def _reader(self) -> AsyncIterator[_PgExecutor]:
        async with self._require().acquire(timeout=self._command_timeout) as conn:
            yield _PgExecutor(conn)

    async def _prepare_schema(self, ex: Executor) -> None:
        # CREATE TABLE IF NOT EXISTS is not safe against a concurrent identical CREATE (unique violation
        # in pg_type); processes starting together queue on this lock instead.
        await ex.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK_KEY)

    def _ts_in(self, value: datetime) -> datetime:
        return value

    def _ts_out(self, value: Any) -> datetime:
        return value.astimezone(UTC)  # type: ignore[no-any-return]
