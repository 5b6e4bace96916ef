"""The PostgreSQL store: psycopg 3, async, through a connection pool.

For teams that already run Postgres, or Supabase (its database is Postgres: point
`CAMPAIGN_STORE_URL` at the project's connection string). Same schema and natural
keys as the SQLite store, with JSON in `jsonb` and times in `timestamptz`, so the
record can be queried in SQL after the fact.

Choices, and why:

- One pool per process, opened on first use inside the running event loop (the
  store is created by synchronous code before any loop runs). If that loop ends
  without `close()` (a CLI command that simply returns), a guard task closes the
  pool while the loop shuts down; an abandoned psycopg pool can otherwise keep
  `asyncio.run` from ever returning.
- Connections are checked when taken from the pool, so a database restart costs a
  reconnect, not a failed activity; `prepare_threshold=None` keeps it working
  behind PgBouncer in transaction mode (Supabase's pooler on port 6543).
- A database that is down raises `StoreUnavailable` (naming the store and the
  server's reason) or psycopg's `OperationalError`: ordinary exceptions, so
  Temporal retries the activity. Integrity
  and data errors (SQLSTATE classes 23 and 22) become `StoreError` with the table
  and key, because no retry will make the database accept that row.
- A schema older than the code is refused (`campaign db migrate` upgrades it)
  unless the store was opened with `auto_migrate`, as `campaign dev` does.
  Migrations run in one transaction under an advisory lock, so concurrent
  migrators apply each file once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from campaign_core.envelope import Envelope
from campaign_core.leads import Lead
from campaign_core.models import Counts
from campaign_core.store import (
    SCHEMA_VERSION,
    StoreError,
    StoreUnavailable,
    check_version,
    draft_row,
    migrations,
    normalise_address,
    parse_envelope,
    parse_lead,
    plain_row,
    redact_url,
    report_rows,
    trace_fields,
)

#: Key of the advisory lock that serialises migrators ("camp" in ASCII).
MIGRATION_LOCK = 0x63616D70

_dumps = functools.partial(json.dumps, default=str)

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


def _json(value: Any) -> Jsonb:
    return Jsonb(value, dumps=_dumps)


class PostgresStore:
    """`Store` on PostgreSQL (including a Supabase project's database)."""

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

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self.url)!r})"

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

    async def _ready_pool(self) -> AsyncConnectionPool[Conn]:
        pool = await self._open_pool()
        if not self._ready:
            await self.ensure_schema()
        return pool

    @contextlib.asynccontextmanager
    async def _conn(
        self, table: str | None = None, key: str | None = None, *, write: bool = False
    ) -> AsyncIterator[Conn]:
        """A pooled connection (in a transaction when `write`); rejected rows -> StoreError."""
        pool = await self._ready_pool()
        try:
            async with pool.connection() as conn:
                if write:
                    async with conn.transaction():
                        yield conn
                else:
                    yield conn
        except (psycopg.IntegrityError, psycopg.DataError) as exc:
            detail = getattr(getattr(exc, "diag", None), "message_detail", None)
            reason = f"rejected by the store: {str(exc).strip()}" + (f" ({detail})" if detail else "")
            raise StoreError(reason, table=table, key=key) from exc

    async def _one(self, sql: str, args: Any = None) -> DictRow | None:
        async with self._conn() as c:
            cur = await c.execute(sql, args)
            return await cur.fetchone()

    async def _all(self, sql: str, args: Any = None) -> list[DictRow]:
        async with self._conn() as c:
            cur = await c.execute(sql, args)
            return await cur.fetchall()

    # -- schema -----------------------------------------------------------------

    @staticmethod
    async def _version(conn: Conn) -> int:
        cur = await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL AS present")
        row = await cur.fetchone()
        if not row or not row["present"]:
            return 0
        cur = await conn.execute("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
        row = await cur.fetchone()
        return int(row["v"]) if row else 0

    async def schema_version(self) -> int:
        pool = await self._open_pool()
        async with pool.connection() as conn:
            return await self._version(conn)

    async def migrate(self, target: int | None = None) -> int:
        """Apply pending migrations (up to `target`) in one transaction; re-applying is a no-op."""
        target = SCHEMA_VERSION if target is None else target
        pool = await self._open_pool()
        async with pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version FROM schema_version")
            done = {int(r["version"]) for r in await cur.fetchall()}
            for m in migrations("postgres"):
                if m.version in done or m.version > target:
                    continue
                await conn.execute(m.sql.encode())  # no parameters: a script of statements
                await conn.execute(
                    "INSERT INTO schema_version(version) VALUES (%s) ON CONFLICT (version) DO NOTHING",
                    (m.version,))
            version = await self._version(conn)
        if version > SCHEMA_VERSION:
            check_version(version, redact_url(self.url))
        self._ready = version == SCHEMA_VERSION
        return version

    async def ensure_schema(self) -> int:
        """Migrate when opened with `auto_migrate`, else refuse a schema that is not the code's."""
        if self.auto_migrate:
            version = await self.migrate()
        else:
            version = check_version(await self.schema_version(), redact_url(self.url))
        self._ready = True
        return version

    # -- campaigns and leads ----------------------------------------------------

    async def upsert_campaign(
        self, *, campaign_id: str, name: str, brief: str, channel: str,
        kb_dir: str | None, workflow_id: str,
    ) -> None:
        async with self._conn("campaigns", campaign_id) as c:
            await c.execute(
                "INSERT INTO campaigns(campaign_id, name, brief, channel, kb_dir, workflow_id) "
                "VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (campaign_id) DO NOTHING",
                (campaign_id, name, brief, channel, kb_dir, workflow_id))

    async def get_campaign(self, campaign_id: str) -> dict[str, Any] | None:
        return plain_row(await self._one(
            "SELECT * FROM campaigns WHERE campaign_id = %s", (campaign_id,)))

    async def set_stage(self, campaign_id: str, stage: str) -> None:
        async with self._conn("campaigns", campaign_id) as c:
            await c.execute(
                "UPDATE campaigns SET stage = %s, updated_at = now() WHERE campaign_id = %s",
                (stage, campaign_id))

    async def upsert_leads(self, campaign_id: str, leads: list[Lead]) -> int:
        """The whole batch in one statement (arrays unnested server-side): one round trip.

        The arrays go in binary (`%b`): psycopg's text-array quoting costs ten times the
        insert itself on a 10,000-lead import. Duplicates are merged first, since one
        INSERT .. ON CONFLICT DO UPDATE may not touch the same row twice.
        """
        rows = list({lead.lead_id: lead for lead in leads}.values())
        async with self._conn("leads", campaign_id) as c:
            await c.execute(
                "INSERT INTO leads(campaign_id, lead_id, email, data) "
                "SELECT %s, r.lead_id, r.email, r.data::jsonb "
                "FROM unnest(%b::text[], %b::text[], %b::text[]) AS r(lead_id, email, data) "
                "ON CONFLICT (campaign_id, lead_id) DO UPDATE SET data = EXCLUDED.data, "
                "updated_at = now()",
                (campaign_id, [lead.lead_id for lead in rows], [lead.email for lead in rows],
                 [lead.model_dump_json() for lead in rows]))
        return len(leads)

    async def get_lead(self, campaign_id: str, lead_id: str) -> Lead | None:
        row = await self._one(
            "SELECT data FROM leads WHERE campaign_id = %s AND lead_id = %s", (campaign_id, lead_id))
        return parse_lead(row["data"], f"{campaign_id}/{lead_id}") if row else None

    async def list_lead_ids(self, campaign_id: str, after: str | None, limit: int) -> list[str]:
        rows = await self._all(
            "SELECT lead_id FROM leads WHERE campaign_id = %s AND lead_id > %s "
            "ORDER BY lead_id LIMIT %s", (campaign_id, after or "", limit))
        return [r["lead_id"] for r in rows]

    async def set_lead_status(
        self, campaign_id: str, lead_id: str, status: str, error: str | None = None
    ) -> None:
        async with self._conn("leads", f"{campaign_id}/{lead_id}") as c:
            await c.execute(
                "UPDATE leads SET draft_status = %s, error = %s, updated_at = now() "
                "WHERE campaign_id = %s AND lead_id = %s", (status, error, campaign_id, lead_id))

    # -- envelopes, retrievals, drafts -------------------------------------------

    async def save_envelope(self, envelope: Envelope, lead_id: str | None = None) -> str:
        eid = envelope.envelope_id
        m = envelope.metadata
        t = trace_fields(envelope)
        async with self._conn("audit_log", eid) as c:
            await c.execute(
                "INSERT INTO audit_log(envelope_id, campaign_id, lead_id, agent, envelope, run_id, "
                "attempt, agent_version, started_at, ended_at, duration_ms, record_count, outcome, "
                "inputs_digest) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT (envelope_id) DO NOTHING",
                (eid, m.campaign_id, lead_id, m.agent, _json(envelope.model_dump(mode="json")),
                 t["run_id"], t["attempt"], t["agent_version"], t["started_at"], t["ended_at"],
                 t["duration_ms"], t["record_count"], t["outcome"], t["inputs_digest"]))
        return eid

    async def get_envelope(self, envelope_id: str) -> Envelope | None:
        row = await self._one("SELECT envelope FROM audit_log WHERE envelope_id = %s", (envelope_id,))
        return parse_envelope(row["envelope"], envelope_id) if row else None

    async def save_retrieval(
        self, campaign_id: str, lead_id: str, passages: list[dict[str, Any]], envelope_id: str
    ) -> None:
        async with self._conn("retrievals", f"{campaign_id}/{lead_id}") as c:
            await c.execute(
                "INSERT INTO retrievals(campaign_id, lead_id, passages, envelope_id) "
                "VALUES (%s,%s,%s,%s) ON CONFLICT (campaign_id, lead_id) DO UPDATE SET "
                "passages = EXCLUDED.passages, envelope_id = EXCLUDED.envelope_id",
                (campaign_id, lead_id, _json(passages), envelope_id))

    async def get_retrieval(self, campaign_id: str, lead_id: str) -> list[dict[str, Any]]:
        row = await self._one(
            "SELECT passages FROM retrievals WHERE campaign_id = %s AND lead_id = %s",
            (campaign_id, lead_id))
        return list(row["passages"]) if row else []

    async def upsert_draft(
        self, *, campaign_id: str, lead_id: str, step: int, subject: str, body: str,
        citations: list[str], provenance: dict[str, Any], envelope_id: str,
    ) -> None:
        async with self._conn("drafts", f"{campaign_id}/{lead_id}/{step}") as c:
            await c.execute(
                "INSERT INTO drafts(campaign_id, lead_id, step, subject, body, citations, provenance, "
                "envelope_id) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT (campaign_id, lead_id, step) DO UPDATE SET subject = EXCLUDED.subject, "
                "body = EXCLUDED.body, citations = EXCLUDED.citations, "
                "provenance = EXCLUDED.provenance, envelope_id = EXCLUDED.envelope_id",
                (campaign_id, lead_id, step, subject, body, _json(citations), _json(provenance),
                 envelope_id))

    async def list_drafts(self, campaign_id: str) -> list[dict[str, Any]]:
        rows = await self._all(
            "SELECT d.*, l.email FROM drafts d JOIN leads l USING (campaign_id, lead_id) "
            "WHERE d.campaign_id = %s ORDER BY l.created_at, d.lead_id, d.step", (campaign_id,))
        return [draft_row(dict(r)) for r in rows]

    async def get_draft(self, campaign_id: str, lead_id: str, step: int = 1) -> dict[str, Any] | None:
        row = await self._one(
            "SELECT d.*, l.email FROM drafts d JOIN leads l USING (campaign_id, lead_id) "
            "WHERE d.campaign_id = %s AND d.lead_id = %s AND d.step = %s",
            (campaign_id, lead_id, step))
        return draft_row(dict(row)) if row else None

    # -- approvals and delivery ---------------------------------------------------

    async def record_decision(
        self, *, campaign_id: str, decision_id: str, decision: str, lead_ids: list[str] | None,
        by: str, note: str | None,
    ) -> int:
        """Record who decided what; on approval mark the drafts approved. Returns how many."""
        async with self._conn("approvals", f"{campaign_id}/{decision_id}", write=True) as c:
            await c.execute(
                "INSERT INTO approvals(campaign_id, decision_id, decision, lead_ids, decided_by, note) "
                "VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (campaign_id, decision_id) DO NOTHING",
                (campaign_id, decision_id, decision,
                 _json(lead_ids) if lead_ids is not None else None, by, note))
            if decision != "approve":
                return 0
            if lead_ids is None:
                await c.execute("UPDATE drafts SET approved = true WHERE campaign_id = %s",
                                (campaign_id,))
            else:
                await c.execute(
                    "UPDATE drafts SET approved = true WHERE campaign_id = %s AND lead_id = ANY(%s)",
                    (campaign_id, list(lead_ids)))
            cur = await c.execute(
                "SELECT count(*) AS n FROM drafts WHERE campaign_id = %s AND approved",
                (campaign_id,))
            row = await cur.fetchone()
            return int(row["n"]) if row else 0

    async def list_approved_lead_ids(
        self, campaign_id: str, after: str | None, limit: int
    ) -> list[str]:
        rows = await self._all(
            "SELECT DISTINCT lead_id FROM drafts WHERE campaign_id = %s AND approved "
            "AND lead_id > %s ORDER BY lead_id LIMIT %s", (campaign_id, after or "", limit))
        return [r["lead_id"] for r in rows]

    async def add_suppressions(self, emails: list[str], reason: str) -> int:
        async with self._conn("suppressions", f"{len(emails)} address(es)") as c:
            cur = await c.execute(
                "INSERT INTO suppressions(email, reason) SELECT e, %s FROM unnest(%b::text[]) AS e "
                "ON CONFLICT (email) DO NOTHING",
                (reason, [normalise_address(e) for e in emails]))
            return max(cur.rowcount, 0)

    async def is_suppressed(self, email: str) -> bool:
        row = await self._one(
            "SELECT 1 AS x FROM suppressions WHERE email = %s", (normalise_address(email),))
        return row is not None

    async def get_delivery(self, message_key: str) -> dict[str, Any] | None:
        return plain_row(await self._one(
            "SELECT * FROM deliveries WHERE message_key = %s", (message_key,)))

    async def upsert_delivery(
        self, *, message_key: str, campaign_id: str, lead_id: str, step: int, channel: str,
        status: str, message_id: str | None = None, error: str | None = None,
    ) -> None:
        async with self._conn("deliveries", message_key) as c:
            await c.execute(
                "INSERT INTO deliveries(message_key, campaign_id, lead_id, step, channel, status, "
                "message_id, error) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT (message_key) DO UPDATE SET status = EXCLUDED.status, "
                "message_id = COALESCE(EXCLUDED.message_id, deliveries.message_id), "
                "error = EXCLUDED.error, updated_at = now()",
                (message_key, campaign_id, lead_id, step, channel, status, message_id, error))

    # -- read models ---------------------------------------------------------------

    async def counts(self, campaign_id: str) -> Counts:
        row = await self._one(
            "SELECT "
            "(SELECT count(*) FROM leads WHERE campaign_id = %(c)s) AS leads, "
            "(SELECT count(*) FROM leads WHERE campaign_id = %(c)s AND draft_status = 'drafted') "
            "AS drafted, "
            "(SELECT count(*) FROM leads WHERE campaign_id = %(c)s AND draft_status = 'failed') "
            "AS draft_failed, "
            "(SELECT count(*) FROM drafts WHERE campaign_id = %(c)s AND approved) AS approved, "
            "(SELECT count(*) FROM deliveries WHERE campaign_id = %(c)s AND status = 'suppressed') "
            "AS suppressed, "
            "(SELECT count(*) FROM deliveries WHERE campaign_id = %(c)s AND status = 'sent') AS sent, "
            "(SELECT count(*) FROM deliveries WHERE campaign_id = %(c)s AND status = 'failed') "
            "AS send_failed",
            {"c": campaign_id})
        return Counts(**{k: int(v) for k, v in (row or {}).items()})

    async def report(self, campaign_id: str) -> list[dict[str, Any]]:
        """One row per lead with its final outcome, in the contract's shape."""
        campaign = await self.get_campaign(campaign_id)
        rows = await self._all(
            "SELECT l.lead_id, l.email, l.draft_status, l.error AS draft_error, "
            "d.approved, x.status AS delivery, x.message_id, x.error AS delivery_error "
            "FROM leads l LEFT JOIN drafts d ON d.campaign_id = l.campaign_id "
            "AND d.lead_id = l.lead_id AND d.step = 1 "
            "LEFT JOIN deliveries x ON x.campaign_id = l.campaign_id AND x.lead_id = l.lead_id "
            "AND x.step = 1 WHERE l.campaign_id = %s ORDER BY l.created_at, l.lead_id",
            (campaign_id,))
        return report_rows([dict(r) for r in rows], campaign["stage"] if campaign else None)

    async def audit(self, campaign_id: str, lead_id: str | None = None) -> list[dict[str, Any]]:
        if lead_id:
            rows = await self._all(
                "SELECT * FROM audit_log WHERE campaign_id = %s AND lead_id = %s "
                "ORDER BY created_at, envelope_id", (campaign_id, lead_id))
        else:
            rows = await self._all(
                "SELECT * FROM audit_log WHERE campaign_id = %s ORDER BY created_at, envelope_id",
                (campaign_id,))
        return [plain_row(dict(r)) or {} for r in rows]
