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
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.sql import SQL, Identifier
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from campaign_core.envelope import Envelope
from campaign_core.leads import Lead
from campaign_core.models import Counts
from campaign_core.store import (
    FORGOTTEN_REASON,
    LEAD_TABLES,
    SCHEMA_VERSION,
    DerivedHashes,
    StoreError,
    StoreUnavailable,
    bare_message_id,
    check_version,
    derived_hashes,
    draft_row,
    erased_campaigns,
    erasure_envelope,
    forget_addresses,
    forget_pairs,
    forget_result,
    log_erasure,
    migrations,
    normalise_address,
    now_utc,
    parse_envelope,
    parse_lead,
    plain_row,
    redact,
    redact_url,
    report_rows,
    subject_digest,
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
        self._pgvector: tuple[str | None] | None = None  # (schema,) once looked up

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

    async def find_delivery_by_message_id(self, message_id: str) -> dict[str, Any] | None:
        mid = bare_message_id(message_id)
        return plain_row(await self._one(
            "SELECT * FROM deliveries WHERE message_id IN (%s, %s) LIMIT 1", (mid, f"<{mid}>")))

    async def record_delivery_event(
        self, *, event_id: str, kind: str, email: str, source: str,
        campaign_id: str | None = None, lead_id: str | None = None,
        message_key: str | None = None, detail: str | None = None,
    ) -> bool:
        async with self._conn("delivery_events", event_id) as c:
            cur = await c.execute(
                "INSERT INTO delivery_events(event_id, kind, email, campaign_id, lead_id, "
                "message_key, source, detail) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT (event_id) DO NOTHING",
                (event_id, kind, normalise_address(email), campaign_id, lead_id, message_key,
                 source, detail))
            return cur.rowcount > 0

    async def list_delivery_events(self, campaign_id: str) -> list[dict[str, Any]]:
        rows = await self._all(
            "SELECT * FROM delivery_events WHERE campaign_id = %s ORDER BY created_at, event_id",
            (campaign_id,))
        return [plain_row(r) or {} for r in rows]

    async def get_or_create_secret(self, name: str, candidate: str) -> str:
        async with self._conn("signing_keys", name) as c:
            await c.execute("INSERT INTO signing_keys(name, secret) VALUES (%s, %s) "
                            "ON CONFLICT (name) DO NOTHING", (name, candidate))
            cur = await c.execute("SELECT secret FROM signing_keys WHERE name = %s", (name,))
            row = await cur.fetchone()
        assert row is not None
        return str(row["secret"])

    # -- webhook ids (schema 5) ------------------------------------------------------

    async def claim_webhook_id(self, webhook_id: str) -> bool:
        async with self._conn("webhook_ids", webhook_id) as c:
            cur = await c.execute("INSERT INTO webhook_ids(webhook_id) VALUES (%s) "
                                  "ON CONFLICT (webhook_id) DO NOTHING", (webhook_id,))
            return cur.rowcount > 0

    async def release_webhook_id(self, webhook_id: str) -> None:
        async with self._conn("webhook_ids", webhook_id) as c:
            await c.execute("DELETE FROM webhook_ids WHERE webhook_id = %s", (webhook_id,))

    # -- erasure (`campaign forget`) -------------------------------------------------

    async def forget(
        self, email: str, *, derived_text_hashes: DerivedHashes | None = None
    ) -> dict[str, int]:
        """Erase the person and suppress the address in one transaction.

        What is deleted, redacted and kept: "erasure" in campaign_core/store.py.
        """
        addresses = forget_addresses(email)
        subject = subject_digest(email)
        at = now_utc()
        tally: dict[str, Counter[str]] = defaultdict(Counter)
        pairs_sql = "unnest(%(c)s::text[], %(l)s::text[]) AS f(c, l)"
        async with self._conn("suppressions", subject, write=True) as c:
            cur = await c.execute(
                "INSERT INTO suppressions(email, reason) VALUES (%s, %s) "
                "ON CONFLICT (email) DO UPDATE SET reason = EXCLUDED.reason "
                "WHERE suppressions.reason IS DISTINCT FROM EXCLUDED.reason",
                (addresses[0], FORGOTTEN_REASON))
            suppressed = max(cur.rowcount, 0)
            # The lead id the address has in every campaign, and any lead row with it.
            cur = await c.execute("SELECT campaign_id FROM campaigns")
            campaigns = [r["campaign_id"] for r in await cur.fetchall()]
            cur = await c.execute(
                "SELECT campaign_id, lead_id FROM leads WHERE email = ANY(%s)", (addresses,))
            pairs = sorted(forget_pairs(addresses[0], campaigns) | {
                (r["campaign_id"], r["lead_id"]) for r in await cur.fetchall()})
            ids: dict[str, set[str]] = defaultdict(set)
            for cid, lid in pairs:
                ids[cid].add(lid)
            args = {"c": [p[0] for p in pairs], "l": [p[1] for p in pairs], "a": addresses}
            hashes: set[str] = set()
            cur = await c.execute(
                "SELECT l.campaign_id, l.lead_id, l.data, k.brief FROM leads l "
                f"JOIN {pairs_sql} ON l.campaign_id = f.c AND l.lead_id = f.l "
                "LEFT JOIN campaigns k ON k.campaign_id = l.campaign_id", args)
            for r in await cur.fetchall():
                hashes |= derived_hashes(derived_text_hashes, r["data"], r["brief"],
                                         f"{r['campaign_id']}/{r['lead_id']}")
            # Redact campaign-level audit entries and approvals that name the lead.
            cur = await c.execute(
                "SELECT a.envelope_id, a.campaign_id, a.envelope FROM audit_log a "
                f"JOIN {pairs_sql} ON a.campaign_id = f.c WHERE a.lead_id IS NULL AND "
                "(strpos(a.envelope::text, f.l) > 0 OR EXISTS (SELECT 1 FROM "
                "unnest(%(a)s::text[]) AS x(a) WHERE strpos(lower(a.envelope::text), x.a) > 0))",
                args)
            entries = {r["envelope_id"]: r for r in await cur.fetchall()}
            for eid, r in entries.items():
                clean = redact(r["envelope"], ids[r["campaign_id"]], addresses)
                await c.execute("UPDATE audit_log SET envelope = %s WHERE envelope_id = %s",
                                (_json(clean), eid))
                tally[r["campaign_id"]]["audit_log_redacted"] += 1
            cur = await c.execute(
                "SELECT a.campaign_id, a.decision_id, a.lead_ids FROM approvals a "
                f"JOIN {pairs_sql} ON a.campaign_id = f.c "
                "WHERE a.lead_ids IS NOT NULL AND strpos(a.lead_ids::text, f.l) > 0", args)
            decisions = {(r["campaign_id"], r["decision_id"]): r for r in await cur.fetchall()}
            for (cid, did), r in decisions.items():
                await c.execute(
                    "UPDATE approvals SET lead_ids = %s WHERE campaign_id = %s AND decision_id = %s",
                    (_json(redact(r["lead_ids"], ids[cid], addresses)), cid, did))
                tally[cid]["approvals"] += 1
            # Delete the lead's rows, the lead itself last.
            for table in LEAD_TABLES:
                cur = await c.execute(
                    SQL("DELETE FROM {} t USING " + pairs_sql + " WHERE t.campaign_id = f.c "
                        "AND t.lead_id = f.l RETURNING t.campaign_id").format(Identifier(table)),
                    args)
                rows = await cur.fetchall()
                if table in {"leads", "delivery_events"}:  # by address too
                    cur = await c.execute(
                        SQL("DELETE FROM {} WHERE email = ANY(%(a)s) RETURNING campaign_id")
                        .format(Identifier(table)), args)
                    rows += await cur.fetchall()
                for r in rows:
                    tally[r["campaign_id"] or ""][table] += 1
            embeddings = 0
            if hashes:
                cur = await c.execute("DELETE FROM embeddings WHERE text_hash = ANY(%s)",
                                      (sorted(hashes),))
                embeddings = max(cur.rowcount, 0)
            per = {cid: dict(t) for cid, t in tally.items()}
            for cid in erased_campaigns(per):
                env = erasure_envelope(cid, subject, per[cid], at)
                t = trace_fields(env)
                await c.execute(
                    "INSERT INTO audit_log(envelope_id, campaign_id, lead_id, agent, envelope, "
                    "run_id, attempt, agent_version, started_at, ended_at, duration_ms, "
                    "record_count, outcome, inputs_digest) "
                    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                    "ON CONFLICT (envelope_id) DO NOTHING",
                    (env.envelope_id, cid, None, env.metadata.agent,
                     _json(env.model_dump(mode="json")), t["run_id"], t["attempt"],
                     t["agent_version"], t["started_at"], t["ended_at"], t["duration_ms"],
                     t["record_count"], t["outcome"], t["inputs_digest"]))
        result = forget_result(per, embeddings=embeddings, suppressions=suppressed)
        log_erasure(redact_url(self.url), subject, result)
        return result

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

    # -- embeddings ----------------------------------------------------------------

    async def get_embeddings(self, model: str, hashes: list[str]) -> dict[str, list[float]]:
        """Vectors by hash; `::real[]` reads pgvector's column and the plain one alike."""
        unique = list(dict.fromkeys(hashes))
        if not unique:
            return {}
        rows = await self._all(
            "SELECT text_hash, vector::real[] AS v FROM embeddings "
            "WHERE model = %s AND text_hash = ANY(%s)", (model, unique))
        return {r["text_hash"]: list(r["v"]) for r in rows}

    async def put_embeddings(self, model: str, vectors: dict[str, list[float]]) -> None:
        """One transaction, pipelined; a `real[]` value is cast to `vector` on assignment."""
        if not vectors:
            return
        key = f"{model}: {len(vectors)} vector(s)"
        async with self._conn("embeddings", key, write=True) as c, c.cursor() as cur:
            await cur.executemany(
                "INSERT INTO embeddings(model, text_hash, dims, vector) "
                "VALUES (%s, %s, %s, %s::real[]) ON CONFLICT (model, text_hash) DO NOTHING",
                [(model, h, len(v), list(v)) for h, v in vectors.items()])

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
            cur = await c.execute(query, (list(query_vector), model, len(query_vector),
                                          list(dict.fromkeys(hashes)), k))
            rows = await cur.fetchall()
        return [(r["text_hash"], float(r["similarity"])) for r in rows]
