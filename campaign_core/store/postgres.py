"""The PostgreSQL store (also a Supabase project's database): psycopg 3, async, pooled.

The Postgres dialect of `SqlStore`: one pool per process and event loop, `?` read as
`%s`, batches as `unnest` arrays, migrations under an advisory lock. It refuses a
schema older than the code unless opened with `auto_migrate`. Details:
docs/architecture.md ("The store").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.sql import SQL, Identifier
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from campaign_core.store.base import StoreUnavailable, redact_url
from campaign_core.store.sql import Conn as SqlConn
from campaign_core.store.sql import SqlStore

#: Key of the advisory lock that serialises migrators ("camp" in ASCII).
MIGRATION_LOCK = 0x63616D70

Conn = psycopg.AsyncConnection[DictRow]


class _QuietCancelledConnects(logging.Filter):
    """Drop psycopg_pool's "error connecting" for an attempt cancelled by loop shutdown.

    It is not an error (the process is exiting) and would otherwise end CLI commands
    with a confusing, empty warning; real connection failures still get through.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not any(isinstance(a, asyncio.CancelledError) for a in args)


logging.getLogger("psycopg.pool").addFilter(_QuietCancelledConnects())

#: Guard tasks of open pools. A loop keeps only weak references to its tasks, so a
#: store dropped without `close()` would let its guard be garbage-collected, pending.
_GUARDS: set[asyncio.Task[None]] = set()


class _Connection:
    """A psycopg connection with `?` placeholders (the shared SQL's)."""

    def __init__(self, raw: Conn) -> None:
        self.raw = raw

    async def all(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = await self.raw.execute(_native(sql), args)
        return list(await cur.fetchall()) if cur.description else []

    async def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        return max((await self.raw.execute(_native(sql), args)).rowcount, 0)

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        async with self.raw.cursor() as cur:
            await cur.executemany(_native(sql), rows)
            return max(cur.rowcount, 0)


@functools.lru_cache(maxsize=512)
def _native(sql: str) -> str:
    return sql.replace("?", "%s")


class PostgresStore(SqlStore):
    """`Store` on PostgreSQL (including a Supabase project's database)."""

    DIALECT = "postgres"
    VERSION_TABLE = ("CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
    HAS_VERSION_TABLE = "SELECT to_regclass('schema_version') IS NOT NULL AS present"
    TEXT = "{}::text"
    FIND = "strpos({}, {}) > 0"
    COMPANY = "(l.data->>'company')"
    VECTOR_READ = "vector::real[]"  # pgvector's column and the plain one alike
    VECTOR_WRITE = "?::real[]"  # cast to `vector` on assignment
    LOCK_ROW = " FOR UPDATE"  # reservations of one campaign queue on its row
    #: SQLSTATE classes 23 and 22; a server that is down raises OperationalError (retried).
    REJECTED = (psycopg.IntegrityError, psycopg.DataError)
    #: The text columns `_insert_many` casts from text (the rest are text already).
    CASTS: ClassVar[dict[str, str]] = {"data": "jsonb"}

    def __init__(
        self, url: str, *, auto_migrate: bool = False, min_size: int = 1, max_size: int = 20,
        timeout: float = 15.0,
    ) -> None:
        """`max_size` covers the busiest worker (20 concurrent store activities);
        `timeout` bounds the wait for a connection before the call fails (and retries)."""
        self.url = url
        self.auto_migrate = auto_migrate
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = timeout
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._guard: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        self._ready = False
        self._pgvector: tuple[str | None] | None = None  # (schema,) once looked up

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self.url)!r})"

    @property
    def _where(self) -> str:
        return redact_url(self.url)

    # -- connections --------------------------------------------------------------

    async def _open_pool(self) -> AsyncConnectionPool[Conn]:
        """The pool for the running loop, opened (and its first connection made) once."""
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._loop is loop:
            return self._pool
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop, self._pool = asyncio.Lock(), loop, None
        async with self._lock:
            if self._pool is not None:
                return self._pool
            pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
                self.url,
                min_size=self.min_size,
                max_size=self.max_size,
                open=False,
                timeout=self.timeout,
                reconnect_timeout=max(self.timeout, 30.0),
                name="campaign-store",
                kwargs={"autocommit": True, "prepare_threshold": None, "row_factory": dict_row},
                check=AsyncConnectionPool.check_connection,
            )
            try:
                await pool.open(wait=True, timeout=self.timeout)
            except PoolTimeout as exc:
                await pool.close()
                raise StoreUnavailable(
                    f"store {redact_url(self.url)} is not reachable: {await self._why_not()}"
                ) from exc
            except BaseException:
                await pool.close()
                raise
            self._pool = pool
            self._guard = loop.create_task(self._close_with_loop(pool), name="campaign-store-guard")
            _GUARDS.add(self._guard)  # the loop only holds tasks weakly
            self._guard.add_done_callback(_GUARDS.discard)
            return pool

    async def _why_not(self) -> str:
        """The server's own reason for refusing us (the pool only says it timed out)."""
        try:
            conn = await psycopg.AsyncConnection.connect(self.url, connect_timeout=5)
        except Exception as exc:
            return " ".join(str(exc).split())
        await conn.close()
        return f"no connection within {self.timeout:g}s"

    @staticmethod
    async def _close_with_loop(pool: AsyncConnectionPool[Conn]) -> None:
        """Sleep until cancelled (at the latest when the loop shuts down), then close the pool."""
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            await pool.close(timeout=2.0)

    async def close(self) -> None:
        """Close the pool; a later call opens a new one."""
        pool, guard = self._pool, self._guard
        self._pool, self._guard = None, None
        if guard is None or guard.get_loop() is not asyncio.get_running_loop():
            return  # never opened, or opened by a loop that has closed it on its way out
        guard.cancel()  # its `finally` closes the pool
        with contextlib.suppress(asyncio.CancelledError):
            await guard
        if pool is not None:
            await pool.close()

    @contextlib.asynccontextmanager
    async def _open(self, *, write: bool) -> AsyncIterator[_Connection]:
        pool = await self._open_pool()
        async with pool.connection() as conn:
            if not write:
                yield _Connection(conn)
                return
            async with conn.transaction():
                yield _Connection(conn)

    async def _lock_migrations(self, c: SqlConn) -> None:
        await c.run("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))

    async def _script(self, c: SqlConn, sql: str) -> None:
        assert isinstance(c, _Connection)
        await c.raw.execute(sql.encode())  # no parameters: a script of statements

    def _reason(self, exc: Exception) -> str:
        detail = getattr(getattr(exc, "diag", None), "message_detail", None)
        return str(exc).strip() + (f" ({detail})" if detail else "")

    async def _insert_many(self, c: SqlConn, table: str, columns: tuple[str, ...],
                           rows: list[tuple[Any, ...]], tail: str, stamps: tuple[str, ...]) -> int:
        """One statement, the columns as arrays unnested server-side: one round trip.

        The arrays go in binary (`%b`): psycopg's text-array quoting costs ten times the
        insert itself on a 10,000-lead import."""
        values = [f"r.{col}::{self.CASTS[col]}" if col in self.CASTS else f"r.{col}" for col in columns]
        return await c.run(
            f"INSERT INTO {table}({', '.join(columns + stamps)}) "
            f"SELECT {', '.join(values + ['now()'] * len(stamps))} "
            f"FROM unnest({', '.join(['%b::text[]'] * len(columns))}) AS r({', '.join(columns)}) {tail}",
            [[None if row[i] is None else str(row[i]) for row in rows] for i in range(len(columns))])

    async def _pairs(self, c: SqlConn, pairs: list[tuple[str, str]]) -> tuple[str, list[Any]]:
        return ("(SELECT * FROM unnest(?::text[], ?::text[]) AS p(campaign_id, lead_id))",
                [[p[0] for p in pairs], [p[1] for p in pairs]])

    # -- embeddings ----------------------------------------------------------------

    async def _vector_schema(self) -> str | None:
        """pgvector's schema when the `embeddings.vector` column is its type, else None.

        Looked up once per store: the extension may live outside the search path
        (Supabase puts it in `extensions`), so queries name its type and operator.
        """
        if self._pgvector is None:
            row = await self._one(
                "SELECT n.nspname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                "JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE a.attrelid = to_regclass('embeddings') AND a.attname = 'vector' "
                "AND t.typname = 'vector'")
            self._pgvector = (row["nspname"] if row else None,)
        return self._pgvector[0]

    async def vector_search(
        self, model: str, query_vector: list[float], hashes: list[str], k: int
    ) -> list[tuple[str, float]] | None:
        """Exact cosine search with pgvector's `<=>`, or None without pgvector.

        Only vectors of the query's dimension are compared (`<=>` refuses others);
        ties are broken by hash, so the order is total.
        """
        schema = await self._vector_schema()
        if schema is None:
            return None
        if not hashes or k <= 0:
            return []
        query = SQL(
            "SELECT e.text_hash, 1 - (e.vector OPERATOR({s}.<=>) q.v) AS similarity "
            "FROM embeddings e, (SELECT %s::real[]::{s}.vector AS v) q "
            "WHERE e.model = %s AND e.dims = %s AND e.text_hash = ANY(%s) "
            "ORDER BY e.vector OPERATOR({s}.<=>) q.v, e.text_hash LIMIT %s"
        ).format(s=Identifier(schema))
        async with self._conn("embeddings", model) as c:
            assert isinstance(c, _Connection)
            cur = await c.raw.execute(query, (list(query_vector), model, len(query_vector),
                                              list(dict.fromkeys(hashes)), k))
            rows = await cur.fetchall()
        return [(r["text_hash"], float(r["similarity"])) for r in rows]
