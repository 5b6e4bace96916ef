"""The embedded SQLite store: the default backend, one file under CAMPAIGN_HOME.

WAL mode and a busy timeout make it safe for many concurrent activities in one
worker process and for the CLI reading while workers write. Each call opens its
own short-lived connection in a worker thread so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from campaign_core.envelope import Envelope
from campaign_core.leads import Lead
from campaign_core.models import Counts
from campaign_core.store import SCHEMA_VERSION, StoreError

T = TypeVar("T")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _migrations() -> list[tuple[int, str]]:
    """(version, sql) for every migration file shipped with the package, in order."""
    folder = Path(__file__).resolve().parent / "migrations"
    return [(int(p.name.split("_", 1)[0]), p.read_text()) for p in sorted(folder.glob("*.sql"))]


class SqliteStore:
    """`Store` on a SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._migrated = False

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

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if not self._migrated:
            await self.migrate()

        def call() -> T:
            with self._conn() as conn:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    result = fn(conn)
                    conn.execute("COMMIT")
                    return result
                except sqlite3.IntegrityError as exc:
                    conn.execute("ROLLBACK")
                    raise StoreError(f"constraint violated: {exc}") from exc
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise

        return await asyncio.to_thread(call)

    # -- schema -----------------------------------------------------------------

    async def migrate(self) -> int:
        """Apply every migration not yet applied; re-applying is a no-op."""

        def apply() -> int:
            with self._conn() as conn:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version "
                    "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
                )
                done = {r[0] for r in conn.execute("SELECT version FROM schema_version")}
                for version, sql in _migrations():
                    if version in done:
                        continue
                    conn.executescript("BEGIN;" + sql + ";COMMIT;")
                    conn.execute(
                        "INSERT INTO schema_version(version, applied_at) VALUES (?, ?)",
                        (version, _now()),
                    )
                row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
                return int(row[0] or 0)

        version = await asyncio.to_thread(apply)
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema {version}, newer than this code ({SCHEMA_VERSION})"
            )
        self._migrated = True
        return version

    async def schema_version(self) -> int:
        return await self._run(
            lambda c: int(c.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)
        )

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
        ))

    async def get_campaign(self, campaign_id: str) -> dict[str, Any] | None:
        row = await self._run(lambda c: c.execute(
            "SELECT * FROM campaigns WHERE campaign_id = ?", (campaign_id,)).fetchone())
        return dict(row) if row else None

    async def set_stage(self, campaign_id: str, stage: str) -> None:
        await self._run(lambda c: c.execute(
            "UPDATE campaigns SET stage = ?, updated_at = ? WHERE campaign_id = ?",
            (stage, _now(), campaign_id)))

    async def upsert_leads(self, campaign_id: str, leads: list[Lead]) -> int:
        now = _now()

        def write(c: sqlite3.Connection) -> int:
            c.executemany(
                "INSERT INTO leads(campaign_id, lead_id, email, data, created_at, updated_at) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT(campaign_id, lead_id) DO UPDATE SET "
                "data = excluded.data, updated_at = excluded.updated_at",
                [(campaign_id, lead.lead_id, lead.email, lead.model_dump_json(), now, now)
                 for lead in leads],
            )
            return len(leads)

        return await self._run(write)

    async def get_lead(self, campaign_id: str, lead_id: str) -> Lead | None:
        row = await self._run(lambda c: c.execute(
            "SELECT data FROM leads WHERE campaign_id = ? AND lead_id = ?",
            (campaign_id, lead_id)).fetchone())
        return Lead.model_validate_json(row[0]) if row else None

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
            (status, error, _now(), campaign_id, lead_id)))

    # -- envelopes, retrievals, drafts -------------------------------------------

    async def save_envelope(self, envelope: Envelope, lead_id: str | None = None) -> str:
        eid = envelope.envelope_id
        m = envelope.metadata
        await self._run(lambda c: c.execute(
            "INSERT INTO audit_log(envelope_id, campaign_id, lead_id, agent, envelope, created_at) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT(envelope_id) DO NOTHING",
            (eid, m.campaign_id, lead_id, m.agent, envelope.model_dump_json(), _now())))
        return eid

    async def get_envelope(self, envelope_id: str) -> Envelope | None:
        row = await self._run(lambda c: c.execute(
            "SELECT envelope FROM audit_log WHERE envelope_id = ?", (envelope_id,)).fetchone())
        return Envelope.model_validate_json(row[0]) if row else None

    async def save_retrieval(
        self, campaign_id: str, lead_id: str, passages: list[dict[str, Any]], envelope_id: str
    ) -> None:
        await self._run(lambda c: c.execute(
            "INSERT INTO retrievals(campaign_id, lead_id, passages, envelope_id, created_at) "
            "VALUES (?,?,?,?,?) ON CONFLICT(campaign_id, lead_id) DO UPDATE SET "
            "passages = excluded.passages, envelope_id = excluded.envelope_id",
            (campaign_id, lead_id, json.dumps(passages), envelope_id, _now())))

    async def get_retrieval(self, campaign_id: str, lead_id: str) -> list[dict[str, Any]]:
        row = await self._run(lambda c: c.execute(
            "SELECT passages FROM retrievals WHERE campaign_id = ? AND lead_id = ?",
            (campaign_id, lead_id)).fetchone())
        return list(json.loads(row[0])) if row else []

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
             json.dumps(provenance, default=str), envelope_id, _now())))

    @staticmethod
    def _draft_row(row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        d["citations"] = json.loads(d["citations"])
        d["provenance"] = json.loads(d["provenance"])
        d["approved"] = bool(d["approved"])
        return d

    async def list_drafts(self, campaign_id: str) -> list[dict[str, Any]]:
        rows = await self._run(lambda c: c.execute(
            "SELECT d.*, l.email FROM drafts d JOIN leads l USING (campaign_id, lead_id) "
            "WHERE d.campaign_id = ? ORDER BY l.created_at, d.lead_id, d.step",
            (campaign_id,)).fetchall())
        return [self._draft_row(r) for r in rows]

    async def get_draft(self, campaign_id: str, lead_id: str, step: int = 1) -> dict[str, Any] | None:
        row = await self._run(lambda c: c.execute(
            "SELECT d.*, l.email FROM drafts d JOIN leads l USING (campaign_id, lead_id) "
            "WHERE d.campaign_id = ? AND d.lead_id = ? AND d.step = ?",
            (campaign_id, lead_id, step)).fetchone())
        return self._draft_row(row) if row else None

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

        return await self._run(write)

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
                [(e.strip().lower(), reason, now) for e in emails])
            return c.total_changes - before

        return await self._run(write)

    async def is_suppressed(self, email: str) -> bool:
        row = await self._run(lambda c: c.execute(
            "SELECT 1 FROM suppressions WHERE email = ?", (email.strip().lower(),)).fetchone())
        return row is not None

    async def get_delivery(self, message_key: str) -> dict[str, Any] | None:
        row = await self._run(lambda c: c.execute(
            "SELECT * FROM deliveries WHERE message_key = ?", (message_key,)).fetchone())
        return dict(row) if row else None

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
             now)))

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
        stage = campaign["stage"] if campaign else None
        rows = await self._run(lambda c: c.execute(
            "SELECT l.lead_id, l.email, l.draft_status, l.error AS draft_error, "
            "d.approved, x.status AS delivery, x.message_id, x.error AS delivery_error "
            "FROM leads l LEFT JOIN drafts d ON d.campaign_id = l.campaign_id "
            "AND d.lead_id = l.lead_id AND d.step = 1 "
            "LEFT JOIN deliveries x ON x.campaign_id = l.campaign_id AND x.lead_id = l.lead_id "
            "AND x.step = 1 WHERE l.campaign_id = ? ORDER BY l.created_at, l.lead_id",
            (campaign_id,)).fetchall())
        decided = stage in {"delivering", "completed", "rejected", "expired"}
        out = []
        for r in rows:
            draft_status = "drafted" if r["draft_status"] == "drafted" else (
                "failed" if r["draft_status"] == "failed" else "pending")
            if r["delivery"] in {"sent", "suppressed", "failed"}:
                delivery = r["delivery"]
            elif draft_status == "failed" or (decided and not r["approved"]):
                delivery = "not_approved"
            else:
                delivery = "pending"
            out.append({
                "lead_id": r["lead_id"], "email": r["email"],
                "draft_status": "failed" if draft_status == "failed" else "drafted"
                if draft_status == "drafted" else "pending",
                "delivery_status": delivery,
                "message_id": r["message_id"],
                "error": r["delivery_error"] or r["draft_error"],
            })
        return out

    async def audit(self, campaign_id: str, lead_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM audit_log WHERE campaign_id = ?"
        args: tuple[str, ...] = (campaign_id,)
        if lead_id:
            sql += " AND lead_id = ?"
            args += (lead_id,)
        rows = await self._run(lambda c: c.execute(sql + " ORDER BY created_at", args).fetchall())
        return [{**dict(r), "envelope": json.loads(r["envelope"])} for r in rows]
