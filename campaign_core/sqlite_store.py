"""The embedded SQLite store: the default backend, one file under CAMPAIGN_HOME.

WAL mode and a busy timeout make it safe for many concurrent activities in one
worker process and for the CLI reading while workers write: readers never block,
and each write is one short `BEGIN IMMEDIATE` transaction that waits its turn for
the file's single write lock instead of failing. Each call opens its own
connection in a worker thread so the event loop never blocks and no connection is
ever shared between threads.

Being embedded (one machine, one file, no other process to surprise) it migrates
itself on first use unless told not to.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import struct
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from campaign_core.envelope import Envelope
from campaign_core.leads import Lead
from campaign_core.models import Counts
from campaign_core.store import (
    FORGOTTEN_REASON,
    LEAD_TABLES,
    SCHEMA_VERSION,
    TIME_COLUMNS,
    DerivedHashes,
    StoreError,
    bare_message_id,
    check_version,
    derived_hashes,
    draft_row,
    erased_campaigns,
    erasure_envelope,
    forget_addresses,
    forget_pairs,
    forget_result,
    iso,
    log_erasure,
    migrations,
    normalise_address,
    now_utc,
    parse_envelope,
    parse_json,
    parse_lead,
    plain_row,
    redact,
    report_rows,
    subject_digest,
    trace_fields,
)

T = TypeVar("T")


def _now() -> str:
    return now_utc().isoformat(timespec="microseconds")


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


class SqliteStore:
    """`Store` on a SQLite file."""

    def __init__(self, path: str | Path, *, auto_migrate: bool = True) -> None:
        self.path = Path(path)
        self.auto_migrate = auto_migrate
        self._ready = False

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
            yield conn
        finally:
            conn.close()

    async def _run(
        self, fn: Callable[[sqlite3.Connection], T], table: str | None = None, key: str | None = None
    ) -> T:
        """Run `fn` in one write transaction in a thread; bad rows become StoreError.

        `database is locked` and I/O errors stay `sqlite3.OperationalError`, which
        Temporal retries; integrity and binding errors never succeed on retry.
        """
        if not self._ready:
            await self.ensure_schema()

        def call() -> T:
            with self._conn() as conn:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    result = fn(conn)
                    conn.execute("COMMIT")
                    return result
                except (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError) as exc:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise StoreError(f"rejected by the store: {exc}", table=table, key=key) from exc
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise

        return await asyncio.to_thread(call)

    # -- schema -----------------------------------------------------------------

    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        if not exists:
            return 0
        return int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)

    async def migrate(self, target: int | None = None) -> int:
        """Apply every migration not yet applied (up to `target`); re-applying is a no-op.

        All pending migrations run in one `BEGIN IMMEDIATE` transaction, so two
        processes starting at once apply each migration once, and a failure leaves
        the store at its previous version.
        """
        target = SCHEMA_VERSION if target is None else target

        def apply() -> int:
            with self._conn() as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_version "
                        "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
                    )
                    done = {r[0] for r in conn.execute("SELECT version FROM schema_version")}
                    for m in migrations("sqlite"):
                        if m.version in done or m.version > target:
                            continue
                        for statement in split_statements(m.sql):
                            conn.execute(statement)
                        conn.execute(
                            "INSERT INTO schema_version(version, applied_at) VALUES (?, ?) "
                            "ON CONFLICT(version) DO NOTHING", (m.version, _now()))
                    version = self._version(conn)
                    conn.execute("COMMIT")
                    return version
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise

        version = await asyncio.to_thread(apply)
        if version > SCHEMA_VERSION:
            check_version(version, str(self.path))
        self._ready = version == SCHEMA_VERSION
        return version

    async def schema_version(self) -> int:
        def read() -> int:
            with self._conn() as conn:
                return self._version(conn)

        return await asyncio.to_thread(read)

    async def ensure_schema(self) -> int:
        """Migrate (the default for the embedded store) or refuse an outdated schema."""
        if self.auto_migrate:
            version = await self.migrate()
        else:
            version = check_version(await self.schema_version(), str(self.path))
        self._ready = True
        return version

    async def close(self) -> None:
        """Nothing to release: every call has its own connection."""

    # -- campaigns and leads ----------------------------------------------------

    async def upsert_campaign(
        self, *, campaign_id: str, name: str, brief: str, channel: str,
        kb_dir: str | None, workflow_id: str,
    ) -> None:
        now = _now()
        await self._run(lambda c: c.execute(
            "INSERT INTO campaigns(campaign_id, name, brief, channel, kb_dir, workflow_id, "
            "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(campaign_id) DO NOTHING",
            (campaign_id, name, brief, channel, kb_dir, workflow_id, now, now),
        ), "campaigns", campaign_id)

    async def get_campaign(self, campaign_id: str) -> dict[str, Any] | None:
        row = await self._run(lambda c: c.execute(
            "SELECT * FROM campaigns WHERE campaign_id = ?", (campaign_id,)).fetchone())
        return plain_row(dict(row)) if row else None

    async def set_stage(self, campaign_id: str, stage: str) -> None:
        await self._run(lambda c: c.execute(
            "UPDATE campaigns SET stage = ?, updated_at = ? WHERE campaign_id = ?",
            (stage, _now(), campaign_id)), "campaigns", campaign_id)

    async def upsert_leads(self, campaign_id: str, leads: list[Lead]) -> int:
        now = _now()

        sql = ("INSERT INTO leads(campaign_id, lead_id, email, data, created_at, updated_at) "
               "VALUES (?,?,?,?,?,?) ON CONFLICT(campaign_id, lead_id) DO UPDATE SET "
               "data = excluded.data, updated_at = excluded.updated_at")
        rows = [(campaign_id, lead.lead_id, lead.email, lead.model_dump_json(), now, now)
                for lead in leads]

        def write(c: sqlite3.Connection) -> int:
            try:
                c.executemany(sql, rows)
            except sqlite3.IntegrityError as exc:
                # SQLite does not say which row of a batch failed: find it, to name it.
                # (Re-running the rows before it is harmless: they are upserts, and the
                # whole transaction is rolled back anyway.)
                for row in rows:
                    try:
                        c.execute(sql, row)
                    except sqlite3.IntegrityError as one:
                        raise StoreError(f"rejected by the store: {one}", table="leads",
                                         key=f"{campaign_id}/{row[1]}") from one
                raise StoreError(f"rejected by the store: {exc}", table="leads",
                                 key=campaign_id) from exc
            return len(leads)

        return await self._run(write, "leads", campaign_id)

    async def get_lead(self, campaign_id: str, lead_id: str) -> Lead | None:
        row = await self._run(lambda c: c.execute(
            "SELECT data FROM leads WHERE campaign_id = ? AND lead_id = ?",
            (campaign_id, lead_id)).fetchone())
        return parse_lead(row[0], f"{campaign_id}/{lead_id}") if row else None

    async def list_lead_ids(self, campaign_id: str, after: str | None, limit: int) -> list[str]:
        rows = await self._run(lambda c: c.execute(
            "SELECT lead_id FROM leads WHERE campaign_id = ? AND lead_id > ? "
            "ORDER BY lead_id LIMIT ?", (campaign_id, after or "", limit)).fetchall())
        return [r[0] for r in rows]

    async def set_lead_status(
        self, campaign_id: str, lead_id: str, status: str, error: str | None = None
    ) -> None:
        await self._run(lambda c: c.execute(
            "UPDATE leads SET draft_status = ?, error = ?, updated_at = ? "
            "WHERE campaign_id = ? AND lead_id = ?",
            (status, error, _now(), campaign_id, lead_id)), "leads", f"{campaign_id}/{lead_id}")

    # -- envelopes, retrievals, drafts -------------------------------------------

    async def save_envelope(self, envelope: Envelope, lead_id: str | None = None) -> str:
        eid = envelope.envelope_id
        m = envelope.metadata
        t = {k: iso(v) if k in TIME_COLUMNS else v for k, v in trace_fields(envelope).items()}
        await self._run(lambda c: c.execute(
            "INSERT INTO audit_log(envelope_id, campaign_id, lead_id, agent, envelope, created_at, "
            "run_id, attempt, agent_version, started_at, ended_at, duration_ms, record_count, "
            "outcome, inputs_digest) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(envelope_id) DO NOTHING",
            (eid, m.campaign_id, lead_id, m.agent, envelope.model_dump_json(), _now(),
             t["run_id"], t["attempt"], t["agent_version"], t["started_at"], t["ended_at"],
             t["duration_ms"], t["record_count"], t["outcome"], t["inputs_digest"])),
            "audit_log", eid)
        return eid

    async def get_envelope(self, envelope_id: str) -> Envelope | None:
        row = await self._run(lambda c: c.execute(
            "SELECT envelope FROM audit_log WHERE envelope_id = ?", (envelope_id,)).fetchone())
        return parse_envelope(row[0], envelope_id) if row else None

    async def save_retrieval(
        self, campaign_id: str, lead_id: str, passages: list[dict[str, Any]], envelope_id: str
    ) -> None:
        await self._run(lambda c: c.execute(
            "INSERT INTO retrievals(campaign_id, lead_id, passages, envelope_id, created_at) "
            "VALUES (?,?,?,?,?) ON CONFLICT(campaign_id, lead_id) DO UPDATE SET "
            "passages = excluded.passages, envelope_id = excluded.envelope_id",
            (campaign_id, lead_id, json.dumps(passages, default=str), envelope_id, _now())),
            "retrievals", f"{campaign_id}/{lead_id}")

    async def get_retrieval(self, campaign_id: str, lead_id: str) -> list[dict[str, Any]]:
        row = await self._run(lambda c: c.execute(
            "SELECT passages FROM retrievals WHERE campaign_id = ? AND lead_id = ?",
            (campaign_id, lead_id)).fetchone())
        return list(parse_json(row[0], "retrievals", f"{campaign_id}/{lead_id}")) if row else []

    async def upsert_draft(
        self, *, campaign_id: str, lead_id: str, step: int, subject: str, body: str,
        citations: list[str], provenance: dict[str, Any], envelope_id: str,
    ) -> None:
        await self._run(lambda c: c.execute(
            "INSERT INTO drafts(campaign_id, lead_id, step, subject, body, citations, provenance, "
            "envelope_id, created_at) VALUES (?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(campaign_id, lead_id, step) DO UPDATE SET subject = excluded.subject, "
            "body = excluded.body, citations = excluded.citations, "
            "provenance = excluded.provenance, envelope_id = excluded.envelope_id",
            (campaign_id, lead_id, step, subject, body, json.dumps(citations),
             json.dumps(provenance, default=str), envelope_id, _now())),
            "drafts", f"{campaign_id}/{lead_id}/{step}")

    async def list_drafts(self, campaign_id: str) -> list[dict[str, Any]]:
        rows = await self._run(lambda c: c.execute(
            "SELECT d.*, l.email FROM drafts d JOIN leads l USING (campaign_id, lead_id) "
            "WHERE d.campaign_id = ? ORDER BY l.created_at, d.lead_id, d.step",
            (campaign_id,)).fetchall())
        return [draft_row(dict(r)) for r in rows]

    async def get_draft(self, campaign_id: str, lead_id: str, step: int = 1) -> dict[str, Any] | None:
        row = await self._run(lambda c: c.execute(
            "SELECT d.*, l.email FROM drafts d JOIN leads l USING (campaign_id, lead_id) "
            "WHERE d.campaign_id = ? AND d.lead_id = ? AND d.step = ?",
            (campaign_id, lead_id, step)).fetchone())
        return draft_row(dict(row)) if row else None

    # -- approvals and delivery ---------------------------------------------------

    async def record_decision(
        self, *, campaign_id: str, decision_id: str, decision: str, lead_ids: list[str] | None,
        by: str, note: str | None,
    ) -> int:
        """Record who decided what; on approval mark the drafts approved. Returns how many."""

        def write(c: sqlite3.Connection) -> int:
            c.execute(
                "INSERT INTO approvals(campaign_id, decision_id, decision, lead_ids, decided_by, "
                "note, created_at) VALUES (?,?,?,?,?,?,?) "
                "ON CONFLICT(campaign_id, decision_id) DO NOTHING",
                (campaign_id, decision_id, decision,
                 json.dumps(lead_ids) if lead_ids is not None else None, by, note, _now()))
            if decision != "approve":
                return 0
            if lead_ids is None:
                c.execute("UPDATE drafts SET approved = 1 WHERE campaign_id = ?", (campaign_id,))
            else:
                c.executemany(
                    "UPDATE drafts SET approved = 1 WHERE campaign_id = ? AND lead_id = ?",
                    [(campaign_id, lid) for lid in lead_ids])
            row = c.execute("SELECT COUNT(*) FROM drafts WHERE campaign_id = ? AND approved = 1",
                            (campaign_id,)).fetchone()
            return int(row[0])

        return await self._run(write, "approvals", f"{campaign_id}/{decision_id}")

    async def list_approved_lead_ids(
        self, campaign_id: str, after: str | None, limit: int
    ) -> list[str]:
        rows = await self._run(lambda c: c.execute(
            "SELECT DISTINCT lead_id FROM drafts WHERE campaign_id = ? AND approved = 1 "
            "AND lead_id > ? ORDER BY lead_id LIMIT ?",
            (campaign_id, after or "", limit)).fetchall())
        return [r[0] for r in rows]

    async def add_suppressions(self, emails: list[str], reason: str) -> int:
        now = _now()

        def write(c: sqlite3.Connection) -> int:
            before = c.total_changes
            c.executemany(
                "INSERT INTO suppressions(email, reason, created_at) VALUES (?,?,?) "
                "ON CONFLICT(email) DO NOTHING",
                [(normalise_address(e), reason, now) for e in emails])
            return c.total_changes - before

        return await self._run(write, "suppressions", f"{len(emails)} address(es)")

    async def is_suppressed(self, email: str) -> bool:
        row = await self._run(lambda c: c.execute(
            "SELECT 1 FROM suppressions WHERE email = ?", (normalise_address(email),)).fetchone())
        return row is not None

    async def get_delivery(self, message_key: str) -> dict[str, Any] | None:
        row = await self._run(lambda c: c.execute(
            "SELECT * FROM deliveries WHERE message_key = ?", (message_key,)).fetchone())
        return plain_row(dict(row)) if row else None

    async def upsert_delivery(
        self, *, message_key: str, campaign_id: str, lead_id: str, step: int, channel: str,
        status: str, message_id: str | None = None, error: str | None = None,
    ) -> None:
        now = _now()
        await self._run(lambda c: c.execute(
            "INSERT INTO deliveries(message_key, campaign_id, lead_id, step, channel, status, "
            "message_id, error, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(message_key) DO UPDATE SET status = excluded.status, "
            "message_id = COALESCE(excluded.message_id, deliveries.message_id), "
            "error = excluded.error, updated_at = excluded.updated_at",
            (message_key, campaign_id, lead_id, step, channel, status, message_id, error, now,
             now)), "deliveries", message_key)

    async def find_delivery_by_message_id(self, message_id: str) -> dict[str, Any] | None:
        mid = bare_message_id(message_id)
        row = await self._run(lambda c: c.execute(
            "SELECT * FROM deliveries WHERE message_id IN (?, ?) LIMIT 1",
            (mid, f"<{mid}>")).fetchone())
        return plain_row(dict(row)) if row else None

    async def record_delivery_event(
        self, *, event_id: str, kind: str, email: str, source: str,
        campaign_id: str | None = None, lead_id: str | None = None,
        message_key: str | None = None, detail: str | None = None,
    ) -> bool:
        now = _now()

        def write(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "INSERT INTO delivery_events(event_id, kind, email, campaign_id, lead_id, "
                "message_key, source, detail, created_at) VALUES (?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(event_id) DO NOTHING",
                (event_id, kind, normalise_address(email), campaign_id, lead_id, message_key,
                 source, detail, now))
            return cur.rowcount > 0

        return await self._run(write, "delivery_events", event_id)

    async def list_delivery_events(self, campaign_id: str) -> list[dict[str, Any]]:
        rows = await self._run(lambda c: c.execute(
            "SELECT * FROM delivery_events WHERE campaign_id = ? ORDER BY created_at, event_id",
            (campaign_id,)).fetchall())
        return [plain_row(dict(r)) or {} for r in rows]

    async def get_or_create_secret(self, name: str, candidate: str) -> str:
        now = _now()

        def write(c: sqlite3.Connection) -> str:
            c.execute("INSERT INTO signing_keys(name, secret, created_at) VALUES (?,?,?) "
                      "ON CONFLICT(name) DO NOTHING", (name, candidate, now))
            return str(c.execute("SELECT secret FROM signing_keys WHERE name = ?",
                                 (name,)).fetchone()[0])

        return await self._run(write, "signing_keys", name)

    # -- webhook ids (schema 5) ------------------------------------------------------

    async def claim_webhook_id(self, webhook_id: str) -> bool:
        now = _now()
        return await self._run(lambda c: c.execute(
            "INSERT INTO webhook_ids(webhook_id, received_at) VALUES (?, ?) "
            "ON CONFLICT(webhook_id) DO NOTHING", (webhook_id, now)).rowcount > 0,
            "webhook_ids", webhook_id)

    async def release_webhook_id(self, webhook_id: str) -> None:
        await self._run(lambda c: c.execute(
            "DELETE FROM webhook_ids WHERE webhook_id = ?", (webhook_id,)),
            "webhook_ids", webhook_id)

    # -- read models ---------------------------------------------------------------

    async def counts(self, campaign_id: str) -> Counts:
        def read(c: sqlite3.Connection) -> Counts:
            def one(sql: str) -> int:
                return int(c.execute(sql, (campaign_id,)).fetchone()[0])

            return Counts(
                leads=one("SELECT COUNT(*) FROM leads WHERE campaign_id = ?"),
                drafted=one("SELECT COUNT(*) FROM leads WHERE campaign_id = ? "
                            "AND draft_status = 'drafted'"),
                draft_failed=one("SELECT COUNT(*) FROM leads WHERE campaign_id = ? "
                                 "AND draft_status = 'failed'"),
                approved=one("SELECT COUNT(*) FROM drafts WHERE campaign_id = ? AND approved = 1"),
                suppressed=one("SELECT COUNT(*) FROM deliveries WHERE campaign_id = ? "
                               "AND status = 'suppressed'"),
                sent=one("SELECT COUNT(*) FROM deliveries WHERE campaign_id = ? "
                         "AND status = 'sent'"),
                send_failed=one("SELECT COUNT(*) FROM deliveries WHERE campaign_id = ? "
                                "AND status = 'failed'"),
            )

        return await self._run(read)

    async def report(self, campaign_id: str) -> list[dict[str, Any]]:
        """One row per lead with its final outcome, in the contract's shape."""
        campaign = await self.get_campaign(campaign_id)
        rows = await self._run(lambda c: c.execute(
            "SELECT l.lead_id, l.email, l.draft_status, l.error AS draft_error, "
            "d.approved, x.status AS delivery, x.message_id, x.error AS delivery_error "
            "FROM leads l LEFT JOIN drafts d ON d.campaign_id = l.campaign_id "
            "AND d.lead_id = l.lead_id AND d.step = 1 "
            "LEFT JOIN deliveries x ON x.campaign_id = l.campaign_id AND x.lead_id = l.lead_id "
            "AND x.step = 1 WHERE l.campaign_id = ? ORDER BY l.created_at, l.lead_id",
            (campaign_id,)).fetchall())
        return report_rows([dict(r) for r in rows], campaign["stage"] if campaign else None)

    async def audit(self, campaign_id: str, lead_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM audit_log WHERE campaign_id = ?"
        args: tuple[str, ...] = (campaign_id,)
        if lead_id:
            sql += " AND lead_id = ?"
            args += (lead_id,)
        rows = await self._run(
            lambda c: c.execute(sql + " ORDER BY created_at, envelope_id", args).fetchall())
        out = []
        for r in rows:
            row = plain_row(dict(r)) or {}
            row["envelope"] = parse_json(row["envelope"], "audit_log", row["envelope_id"])
            out.append(row)
        return out

    # -- embeddings ----------------------------------------------------------------

    async def get_embeddings(self, model: str, hashes: list[str]) -> dict[str, list[float]]:
        """Vectors by hash, read in slices (SQLite caps a statement's parameters)."""
        unique = list(dict.fromkeys(hashes))

        def read(c: sqlite3.Connection) -> dict[str, list[float]]:
            found: dict[str, list[float]] = {}
            for start in range(0, len(unique), 500):
                part = unique[start:start + 500]
                rows = c.execute(
                    "SELECT text_hash, dims, vector FROM embeddings WHERE model = ? AND text_hash "
                    f"IN ({','.join('?' * len(part))})", [model, *part]).fetchall()
                found.update({h: _unpack_vector(v, d, f"{model}/{h}") for h, d, v in rows})
            return found

        return await self._run(read, "embeddings", model) if unique else {}

    async def put_embeddings(self, model: str, vectors: dict[str, list[float]]) -> None:
        if not vectors:
            return
        now = _now()
        rows = [(model, h, len(v), _pack_vector(v, f"{model}/{h}"), now) for h, v in vectors.items()]
        await self._run(lambda c: c.executemany(
            "INSERT INTO embeddings(model, text_hash, dims, vector, created_at) "
            "VALUES (?,?,?,?,?) ON CONFLICT(model, text_hash) DO NOTHING", rows),
            "embeddings", f"{model}: {len(rows)} vector(s)")

    async def vector_search(
        self, model: str, query_vector: list[float], hashes: list[str], k: int
    ) -> list[tuple[str, float]] | None:
        """SQLite has no vector search: the caller searches in memory."""
        return None

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
        now = at.isoformat(timespec="microseconds")
        by_address = f"email IN ({','.join('?' * len(addresses))})"
        of_lead = "(campaign_id, lead_id) IN (SELECT campaign_id, lead_id FROM temp.forget_pairs)"

        def erase(c: sqlite3.Connection) -> dict[str, int]:
            tally: dict[str, Counter[str]] = defaultdict(Counter)
            before = c.total_changes
            c.execute(
                "INSERT INTO suppressions(email, reason, created_at) VALUES (?,?,?) "
                "ON CONFLICT(email) DO UPDATE SET reason = excluded.reason "
                "WHERE suppressions.reason IS NOT excluded.reason",
                (addresses[0], FORGOTTEN_REASON, now))
            suppressed = c.total_changes - before
            # The lead id the address has in every campaign, and any lead row with it.
            campaigns = [r[0] for r in c.execute("SELECT campaign_id FROM campaigns")]
            pairs = forget_pairs(addresses[0], campaigns) | {
                (r[0], r[1]) for r in c.execute(
                    f"SELECT campaign_id, lead_id FROM leads WHERE {by_address}", addresses)}
            ids: dict[str, set[str]] = defaultdict(set)
            for cid, lid in pairs:
                ids[cid].add(lid)
            c.execute("CREATE TEMP TABLE IF NOT EXISTS forget_pairs "
                      "(campaign_id TEXT NOT NULL, lead_id TEXT NOT NULL)")
            c.execute("DELETE FROM temp.forget_pairs")
            c.executemany("INSERT INTO temp.forget_pairs VALUES (?, ?)", sorted(pairs))
            hashes: set[str] = set()
            for cid, lid, data, brief in c.execute(
                    "SELECT l.campaign_id, l.lead_id, l.data, c.brief FROM leads l "
                    "LEFT JOIN campaigns c USING (campaign_id) WHERE (l.campaign_id, l.lead_id) "
                    "IN (SELECT campaign_id, lead_id FROM temp.forget_pairs)"):
                hashes |= derived_hashes(derived_text_hashes, data, brief, f"{cid}/{lid}")
            # Redact campaign-level audit entries and approvals that name the lead.
            redacted: dict[str, tuple[str, str]] = {}
            for eid, cid, text in c.execute(
                    "SELECT a.envelope_id, a.campaign_id, a.envelope FROM audit_log a "
                    "JOIN temp.forget_pairs f USING (campaign_id) WHERE a.lead_id IS NULL AND "
                    "(instr(a.envelope, f.lead_id) > 0 OR "
                    + " OR ".join("instr(lower(a.envelope), ?) > 0" for _ in addresses) + ")",
                    addresses).fetchall():
                redacted[eid] = (cid, text)
            for eid, (cid, text) in redacted.items():
                clean = redact(parse_json(text, "audit_log", eid), ids[cid], addresses)
                c.execute("UPDATE audit_log SET envelope = ? WHERE envelope_id = ?",
                          (json.dumps(clean, ensure_ascii=False), eid))
                tally[cid]["audit_log_redacted"] += 1
            decisions = {(r[0], r[1]): r[2] for r in c.execute(
                "SELECT a.campaign_id, a.decision_id, a.lead_ids FROM approvals a "
                "JOIN temp.forget_pairs f USING (campaign_id) "
                "WHERE a.lead_ids IS NOT NULL AND instr(a.lead_ids, f.lead_id) > 0").fetchall()}
            for (cid, did), text in decisions.items():
                kept = redact(parse_json(text, "approvals", f"{cid}/{did}"), ids[cid], addresses)
                c.execute("UPDATE approvals SET lead_ids = ? WHERE campaign_id = ? "
                          "AND decision_id = ?", (json.dumps(kept), cid, did))
                tally[cid]["approvals"] += 1
            # Delete the lead's rows, the lead itself last.
            for table in LEAD_TABLES:
                gone = c.execute(f"DELETE FROM {table} WHERE {of_lead} RETURNING campaign_id")
                rows = gone.fetchall()
                if table in {"leads", "delivery_events"}:  # by address too (two indexable scans)
                    rows += c.execute(f"DELETE FROM {table} WHERE {by_address} RETURNING campaign_id",
                                      addresses).fetchall()
                for (cid,) in rows:
                    tally[cid or ""][table] += 1
            embeddings = 0
            ordered = sorted(hashes)
            for start in range(0, len(ordered), 500):
                part = ordered[start:start + 500]
                embeddings += c.execute(
                    f"DELETE FROM embeddings WHERE text_hash IN ({','.join('?' * len(part))})",
                    part).rowcount
            c.execute("DROP TABLE temp.forget_pairs")
            per = {cid: dict(t) for cid, t in tally.items()}
            for cid in erased_campaigns(per):
                env = erasure_envelope(cid, subject, per[cid], at)
                t = {k: iso(v) if k in TIME_COLUMNS else v for k, v in trace_fields(env).items()}
                c.execute(
                    "INSERT INTO audit_log(envelope_id, campaign_id, lead_id, agent, envelope, "
                    "created_at, run_id, attempt, agent_version, started_at, ended_at, duration_ms, "
                    "record_count, outcome, inputs_digest) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT(envelope_id) DO NOTHING",
                    (env.envelope_id, cid, None, env.metadata.agent, env.model_dump_json(), now,
                     t["run_id"], t["attempt"], t["agent_version"], t["started_at"],
                     t["ended_at"], t["duration_ms"], t["record_count"], t["outcome"],
                     t["inputs_digest"]))
            return forget_result(per, embeddings=embeddings, suppressions=suppressed)

        result = await self._run(erase, "suppressions", subject)
        log_erasure(str(self.path), subject, result)
        return result


def _pack_vector(vector: list[float], key: str) -> bytes:
    """A vector as little-endian float32 (the precision embeddings carry, and pgvector's)."""
    try:
        return struct.pack(f"<{len(vector)}f", *vector)
    except (struct.error, TypeError) as exc:  # not numbers, or beyond float32
        raise StoreError(f"rejected by the store: {exc}", table="embeddings", key=key) from exc


def _unpack_vector(blob: bytes, dims: int, key: str) -> list[float]:
    try:
        return list(struct.unpack(f"<{dims}f", blob))
    except (struct.error, TypeError) as exc:
        raise StoreError(f"malformed vector: {exc}", table="embeddings", key=key) from exc
