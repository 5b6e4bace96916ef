"""The embedded SQLite store: the default backend, one file under CAMPAIGN_HOME.

The SQLite dialect of `SqlStore`: WAL, a busy timeout, reused connections (one caller
at a time, on a pool of threads), and a `now()` fixed per transaction. It migrates itself
on first use unless told not to. Details: docs/architecture.md ("The store").
"""

from __future__ import annotations

import asyncio
import sqlite3
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from campaign_core.private_files import private_database
from campaign_core.store.base import StoreError, now_utc
from campaign_core.store.sql import SqlStore

T = TypeVar("T")


def split_statements(sql: str) -> Iterator[str]:
    """The statements of a SQL script, so a migration can run inside our own transaction.

    (`executescript` would commit any open transaction first, losing the write lock
    that keeps two processes from applying the same migration at once.)
    """
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                yield buf
            buf = ""
    if buf.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()
    ):
        yield buf


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


class _Connection:
    """A sqlite3 connection used from the event loop, its calls run on the store's threads."""

    def __init__(self, conn: sqlite3.Connection, thread: ThreadPoolExecutor) -> None:
        self.conn, self.thread = conn, thread

    async def call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.thread, fn)

    async def all(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return await self.call(lambda: self.conn.execute(sql, args).fetchall())

    async def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        return await self.call(lambda: self.conn.execute(sql, args).rowcount)

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        return await self.call(lambda: self.conn.executemany(sql, rows).rowcount)


class SqliteStore(SqlStore):
    """`Store` on a SQLite file."""

    DIALECT = "sqlite"
    VERSION_TABLE = ("CREATE TABLE IF NOT EXISTS schema_version "
                     "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    HAS_VERSION_TABLE = ("SELECT count(*) AS present FROM sqlite_master "
                         "WHERE type = 'table' AND name = 'schema_version'")
    FIND = "instr({}, {}) > 0"
    COMPANY = "json_extract(l.data, '$.company')"
    #: `database is locked` and I/O errors stay OperationalError, which Temporal retries.
    REJECTED = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError)

    def __init__(self, path: str | Path, *, auto_migrate: bool = True) -> None:
        self.path = Path(path)
        self.auto_migrate = auto_migrate
        self._ready = False
        # Threads and idle connections are reused: a thread and a connection per call cost
        # more than the statement. Enough threads that writers waiting on the file's lock
        # never starve the one that holds it.
        self._threads = ThreadPoolExecutor(64, thread_name_prefix="campaign-sqlite")
        self._idle: list[sqlite3.Connection] = []

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    @property
    def _where(self) -> str:
        return str(self.path)

    async def close(self) -> None:
        """Close the idle connections; the store reconnects when used again."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        private_database(self.path)  # 0600 before SQLite opens it: it holds every lead
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                               check_same_thread=False)  # one user at a time, any thread
        try:
            conn.row_factory = _dict_row
            self._wal(conn)
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _wal(conn: sqlite3.Connection) -> None:
        """Put the database in WAL mode (it stays so, in the file). Switching needs an
        exclusive lock, and SQLite answers "database is locked" at once, without its busy
        timeout, when waiting could deadlock with another connection's write (several
        stores opening a new database together, as concurrent migrators do): so read the
        mode first, and back off and retry the switch for up to the busy timeout."""
        deadline = time.monotonic() + 30
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()["journal_mode"] != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _checkout(self) -> sqlite3.Connection:
        """An idle connection or a new one, with `now()` fixed for this use (per transaction,
        like Postgres)."""
        try:
            conn = self._idle.pop()  # atomic: two threads never get the same connection
        except IndexError:
            conn = self._connect()
        stamp = now_utc().isoformat(timespec="microseconds")
        conn.create_function("now", 0, lambda: stamp)
        return conn

    def _checkin(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction or len(self._idle) >= 8:
            conn.close()
        else:
            self._idle.append(conn)

    @asynccontextmanager
    async def _open(self, *, write: bool) -> AsyncIterator[_Connection]:
        """A connection used by one caller at a time, its statements on the store's threads;
        writes in one `BEGIN IMMEDIATE` transaction."""
        loop = asyncio.get_running_loop()
        c = _Connection(await loop.run_in_executor(self._threads, self._checkout), self._threads)
        try:
            if write:
                await c.run("BEGIN IMMEDIATE")
            yield c
            if write:
                await c.run("COMMIT")
        except BaseException:
            if c.conn.in_transaction:
                await c.call(c.conn.rollback)
            raise
        finally:
            await c.call(lambda: self._checkin(c.conn))

    # One statement outside a transaction (most calls): checkout, statement and checkin in
    # one trip to the store's threads instead of three; each trip costs the event loop a
    # future, a wake-up and a thread switch, and a lead makes about sixteen such calls.

    def _once(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._checkout()
        try:
            return fn(conn)
        finally:
            if conn.in_transaction:
                conn.rollback()
            self._checkin(conn)

    async def _single(self, fn: Callable[[sqlite3.Connection], T], table: str | None,
                      key: str | None) -> T:
        if not self._ready:
            await self.ensure_schema()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._threads, self._once, fn)
        except self.REJECTED as exc:
            raise self._rejected(exc, table, key) from exc

    async def _all(self, sql: str, args: Sequence[Any] = (), table: str | None = None,
                   key: str | None = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._single(
            lambda conn: conn.execute(sql, args).fetchall(), table, key)
        return rows

    async def _run(self, sql: str, args: Sequence[Any], table: str, key: str) -> int:
        return await self._single(lambda conn: conn.execute(sql, args).rowcount, table, key)

    async def _script(self, c: Any, sql: str) -> None:
        for statement in split_statements(sql):
            await c.run(statement)

    async def _pairs(self, c: Any, pairs: list[tuple[str, str]]) -> tuple[str, list[Any]]:
        await c.run("CREATE TEMP TABLE IF NOT EXISTS forget_pairs "
                    "(campaign_id TEXT NOT NULL, lead_id TEXT NOT NULL)")
        await c.run("DELETE FROM temp.forget_pairs")
        await c.many("INSERT INTO temp.forget_pairs VALUES (?, ?)", pairs)
        return "(SELECT campaign_id, lead_id FROM temp.forget_pairs)", []

    def _vector_param(self, vector: list[float], key: str) -> bytes:
        """Little-endian float32 (the precision embeddings carry, and pgvector's)."""
        try:
            return struct.pack(f"<{len(vector)}f", *vector)
        except (struct.error, TypeError) as exc:  # not numbers, or beyond float32
            raise StoreError(f"rejected by the store: {exc}", table="embeddings", key=key) from exc

    def _vector_value(self, row: dict[str, Any], key: str) -> list[float]:
        try:
            return list(struct.unpack(f"<{row['dims']}f", row["vector"]))
        except (struct.error, TypeError) as exc:
            raise StoreError(f"malformed vector: {exc}", table="embeddings", key=key) from exc
