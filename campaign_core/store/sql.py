"""The SQL of both SQL backends, each statement written once (`SqlStore`).

Statements use `?` placeholders, `now()` for the time of the transaction, JSON as
text and `TRUE` for booleans: SQLite and PostgreSQL read them alike. What still
differs lives in one subclass per dialect (`sqlite.py`, `postgres.py`) as class
constants and small hooks, as in Prefect's query components.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

from campaign_core.budget import fits, reservation_of, spend_of
from campaign_core.decisions import REQUEST_AGENT
from campaign_core.envelope import Envelope
from campaign_core.leads import Lead, address_forms
from campaign_core.models import Counts
from campaign_core.senders import (
    HEALTH_WINDOW,
    SenderClaim,
    SenderEventKind,
    SenderHealth,
    SenderRow,
    WaitReason,
)
from campaign_core.store.base import (
    APPROVALS,
    AWAITING_CONFIRMATION,
    INBOX_INTENTS,
    MACHINE_INTENTS,
    REVIEW_STATUSES,
    SCHEDULE_TEMPLATE_PREFIX,
    SCHEMA_VERSION,
    AnswerConflict,
    StoreError,
    answer_row,
    as_time,
    as_version,
    audit_entry,
    bare_message_id,
    campaign_row,
    check_version,
    claim_values,
    delivery_row,
    draft_edit_row,
    draft_row,
    event_row,
    first_suppression,
    headers_json,
    inbox_of,
    iso,
    migrations,
    normalise_address,
    now_utc,
    original_edit_id,
    overlap_forms,
    parse_envelope,
    parse_json,
    parse_lead,
    reply_id_for,
    reply_row,
    reviewer_row,
    sender_claim,
    sender_row,
    sender_values,
    step_row,
    suggested_email,
    suggested_lead_id,
    suggested_lead_row,
    suppression_row,
    trace_fields,
)
from campaign_core.store.erasure import (
    ERASURE_SOURCE,
    FORGOTTEN_REASON,
    Erasure,
    Mention,
    Pairs,
)
from campaign_core.store.outcomes import (
    ReplyFigures,
    counts_of,
    held_lead_ids,
    report_rows,
    status_figures,
)
from campaign_core.store.review import (
    SEARCHED,
    STEP_STATUSES,
    lead_matches,
    page_of,
    search_key,
)
from campaign_core.store.rows import (
    AuditEntry,
    CampaignRow,
    DeliveryEventRow,
    DeliveryRow,
    DraftEditRow,
    DraftRow,
    InboxItem,
    ReplyAnswerRow,
    ReplyRow,
    ReportRow,
    Reservation,
    ReviewerRow,
    ReviewPage,
    SequenceStepRow,
    Spend,
    SuggestedLeadRow,
    SuppressionRow,
    SuppressionSource,
)

#: The facts `outcomes.report_rows` reads about each (lead, step): the lead (and its sender),
#: its draft, the draft's delivery and its place on the schedule. `report`, `counts` and the review page
#: select them (the page with more columns) from the same joins.
FACT_COLUMNS = ("l.lead_id, l.email, l.draft_status, l.error AS draft_error, l.sender, "
                "d.step, d.approved, "
                "d.excluded, d.failed_reason, x.status AS delivery, x.message_id, "
                "x.error AS delivery_error, s.status AS step_status, s.stop_reason, s.due_at")
FACTS_FROM = ("FROM leads l LEFT JOIN drafts d ON d.campaign_id = l.campaign_id "
              "AND d.lead_id = l.lead_id "
              "LEFT JOIN deliveries x ON x.campaign_id = l.campaign_id AND x.lead_id = l.lead_id "
              "AND x.step = COALESCE(d.step, 1) "
              "LEFT JOIN sequence_steps s ON s.campaign_id = l.campaign_id "
              "AND s.lead_id = l.lead_id AND s.step = d.step ")

#: A campaign's verified replies grouped as `outcomes.status_figures` reads them: by intent,
#: kind and the step answered, and by lead where no step is known (the lead's last step
#: sent is then the one it answered). One grouped query however many replies there are.
REPLY_TALLY = (
    "SELECT intent, kind, step, CASE WHEN step IS NULL THEN lead_id END AS lead_id, "
    "count(*) AS n FROM replies WHERE campaign_id = ? AND lead_id IS NOT NULL "
    "AND verified = TRUE AND kind <> 'unparseable' "
    "GROUP BY intent, kind, step, CASE WHEN step IS NULL THEN lead_id END")

#: Rows per statement where a list becomes `IN (?, ...)` (SQLite caps parameters).
CHUNK = 500


class Conn(Protocol):
    """A dialect's connection, as the shared SQL uses it."""

    async def all(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    async def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Execute; the number of rows changed."""
        ...

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int: ...


@dataclass
class Scope:
    """An erasure's transaction and the (campaign, lead) pairs it works on, as SQL."""

    c: Conn
    pairs: str = ""  # a subquery of (campaign_id, lead_id)
    args: list[Any] = field(default_factory=list)


def marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def chunks(values: Sequence[Any]) -> list[Sequence[Any]]:
    return [values[i:i + CHUNK] for i in range(0, len(values), CHUNK)]


AUDIT_INSERT = (
    "INSERT INTO audit_log(envelope_id, campaign_id, lead_id, agent, envelope, created_at, run_id, "
    "attempt, agent_version, started_at, ended_at, duration_ms, record_count, outcome, "
    "inputs_digest) VALUES (?, ?, ?, ?, ?, now(), ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (envelope_id) DO NOTHING")


def audit_args(envelope: Envelope, lead_id: str | None) -> tuple[Any, ...]:
    m, t = envelope.metadata, trace_fields(envelope)
    return (envelope.envelope_id, m.campaign_id, lead_id, m.agent, envelope.model_dump_json(),
            t["run_id"], t["attempt"], t["agent_version"], iso(t["started_at"]),
            iso(t["ended_at"]), t["duration_ms"], t["record_count"], t["outcome"],
            t["inputs_digest"])


class SqlStore(Erasure[Scope]):
    """`Store` in SQL; a dialect supplies connections and the hooks below."""

    #: The migrations folder, and the SQL that differs per dialect.
    DIALECT: ClassVar[str]
    VERSION_TABLE: ClassVar[str]  # CREATE TABLE IF NOT EXISTS schema_version ...
    HAS_VERSION_TABLE: ClassVar[str]  # one row, `present` true when schema_version exists
    TEXT: ClassVar[str] = "{}"  # a JSON column as text
    FIND: ClassVar[str]  # "text {} contains {}", a condition
    COMPANY: ClassVar[str]  # the `company` field of a lead's `data` (alias `l`), as text
    VECTOR_READ: ClassVar[str] = "vector"  # the embeddings.vector column as the driver reads it
    VECTOR_WRITE: ClassVar[str] = "?"
    #: Appended to the campaign's SELECT in a reservation: Postgres locks the row; SQLite's
    #: write transaction (BEGIN IMMEDIATE) already holds the whole file.
    LOCK_ROW: ClassVar[str] = ""
    #: Driver errors no retry will fix (a constraint, a malformed value).
    REJECTED: ClassVar[tuple[type[Exception], ...]]

    auto_migrate: bool
    _ready: bool

    @abstractmethod
    def _open(self, *, write: bool) -> AbstractAsyncContextManager[Conn]:
        """A connection (in a write transaction when `write`), without the schema check."""

    @abstractmethod
    async def _script(self, c: Conn, sql: str) -> None:
        """Run one migration file."""

    async def _lock_migrations(self, c: Conn) -> None:
        """Keep concurrent migrators apart (inside the migration's transaction)."""

    @abstractmethod
    async def _pairs(self, c: Conn, pairs: list[tuple[str, str]]) -> tuple[str, list[Any]]:
        """The pairs as a subquery `(campaign_id, lead_id)`, and its arguments."""

    def _vector_param(self, vector: list[float], key: str) -> Any:
        return list(vector)

    def _vector_value(self, row: dict[str, Any], key: str) -> list[float]:
        return list(row["vector"])

    def _reason(self, exc: Exception) -> str:
        return str(exc).strip()

    def _rejected(self, exc: Exception, table: str | None, key: str | None) -> StoreError:
        """A row the store refused, as the StoreError that names its table and key."""
        return StoreError(f"rejected by the store: {self._reason(exc)}", table=table, key=key)

    async def _insert_many(self, c: Conn, table: str, columns: tuple[str, ...],
                           rows: list[tuple[Any, ...]], tail: str, stamps: tuple[str, ...]) -> int:
        """Insert `rows` (their `stamps` columns set to now()); the rows inserted or updated."""
        sql = (f"INSERT INTO {table}({', '.join(columns + stamps)}) VALUES "
               f"({', '.join(['?'] * len(columns) + ['now()'] * len(stamps))}) {tail}")
        try:
            return await c.many(sql, rows)
        except self.REJECTED as exc:  # the driver does not say which row: find it, to name it
            for row in rows:
                try:
                    await c.run(sql, row)
                except self.REJECTED as one:
                    raise self._rejected(one, table, "/".join(map(str, row[:2]))) from one
            raise exc

    # -- connections and schema ---------------------------------------------------------

    @asynccontextmanager
    async def _conn(self, table: str | None = None, key: str | None = None, *,
                    write: bool = False) -> AsyncIterator[Conn]:
        """A connection to a current schema; rows the store rejects -> StoreError(table, key)."""
        if not self._ready:
            await self.ensure_schema()
        try:
            async with self._open(write=write) as c:
                yield c
        except self.REJECTED as exc:
            raise self._rejected(exc, table, key) from exc

    async def _all(self, sql: str, args: Sequence[Any] = (), table: str | None = None,
                   key: str | None = None) -> list[dict[str, Any]]:
        async with self._conn(table, key) as c:
            return await c.all(sql, args)

    async def _one(self, sql: str, args: Sequence[Any] = (), table: str | None = None,
                   key: str | None = None) -> dict[str, Any] | None:
        rows = await self._all(sql, args, table, key)
        return rows[0] if rows else None

    async def _run(self, sql: str, args: Sequence[Any], table: str, key: str) -> int:
        async with self._conn(table, key) as c:
            return await c.run(sql, args)

    async def _version(self, c: Conn) -> int:
        present = await c.all(self.HAS_VERSION_TABLE)
        if not present or not present[0]["present"]:
            return 0
        rows = await c.all("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
        return int(rows[0]["v"])

    async def schema_version(self) -> int:
        async with self._open(write=False) as c:
            return await self._version(c)

    async def migrate(self, target: int | None = None) -> int:
        """Apply pending migrations (up to `target`) in one transaction; re-applying is a no-op."""
        target = SCHEMA_VERSION if target is None else target
        async with self._open(write=True) as c:
            await self._lock_migrations(c)
            await c.run(self.VERSION_TABLE)
            done = {int(r["version"]) for r in await c.all("SELECT version FROM schema_version")}
            for m in migrations(self.DIALECT):
                if m.version in done or m.version > target:
                    continue
                await self._script(c, m.sql)
                await c.run("INSERT INTO schema_version(version, applied_at) VALUES (?, now()) "
                            "ON CONFLICT (version) DO NOTHING", (m.version,))
            version = await self._version(c)
        if version > SCHEMA_VERSION:
            check_version(version, self._where)
        self._ready = version == SCHEMA_VERSION
        return version

    async def ensure_schema(self) -> int:
        """Migrate when `auto_migrate`, else refuse a schema that is not the code's."""
        if self.auto_migrate:
            version = await self.migrate()
        else:
            version = check_version(await self.schema_version(), self._where)
        self._ready = True
        return version

    # -- campaigns and leads ----------------------------------------------------------

    async def upsert_campaign(self, *, campaign_id: str, name: str, brief: str, channel: str,
                              kb_dir: str | None, workflow_id: str,
                              lead_id_salt: str | None = None,
                              budget_usd: float | None = None) -> None:
        await self._run(
            "INSERT INTO campaigns(campaign_id, name, brief, channel, kb_dir, workflow_id, "
            "lead_id_salt, budget_usd, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, now(), now()) ON CONFLICT (campaign_id) DO NOTHING",
            (campaign_id, name, brief, channel, kb_dir, workflow_id, lead_id_salt, budget_usd),
            "campaigns", campaign_id)

    # -- LLM spend caps (schema 11) -------------------------------------------------------

    _TOTALS = ("SELECT COALESCE(SUM(CASE WHEN status = 'spent' THEN cost_nanousd END), 0) "
               "AS spent, COALESCE(SUM(CASE WHEN status = 'reserved' THEN reserved_nanousd "
               "END), 0) AS held FROM llm_spend WHERE campaign_id = ?")

    async def set_budget(self, campaign_id: str, budget_usd: float | None) -> bool:
        return await self._run(
            "UPDATE campaigns SET budget_usd = ?, updated_at = now() WHERE campaign_id = ?",
            (budget_usd, campaign_id), "campaigns", campaign_id) > 0

    async def reserve_llm_call(self, campaign_id: str, call_key: str,
                               amount_nanousd: int) -> Reservation:
        """Check and hold in one write transaction, the campaign's row locked."""
        async with self._conn("llm_spend", campaign_id, write=True) as c:
            rows = await c.all("SELECT budget_usd FROM campaigns WHERE campaign_id = ?"
                               + self.LOCK_ROW, (campaign_id,))
            budget = rows[0]["budget_usd"] if rows else None
            totals = (await c.all(self._TOTALS, (campaign_id,)))[0]
            spent, held = int(totals["spent"]), int(totals["held"])
            known = await c.all("SELECT 1 AS one FROM llm_spend WHERE campaign_id = ? AND "
                                "call_key = ?", (campaign_id, call_key))
            if known:
                return reservation_of(True, budget, spent, held)
            if not fits(budget, spent, held, amount_nanousd):
                return reservation_of(False, budget, spent, held)
            await c.run("INSERT INTO llm_spend(campaign_id, call_key, status, reserved_nanousd, "
                        "created_at, updated_at) VALUES (?, ?, 'reserved', ?, now(), now())",
                        (campaign_id, call_key, amount_nanousd))
            return reservation_of(True, budget, spent, held + amount_nanousd)

    async def settle_llm_call(self, campaign_id: str, call_key: str,
                              cost_nanousd: int | None) -> None:
        await self._run(
            "INSERT INTO llm_spend(campaign_id, call_key, status, cost_nanousd, created_at, "
            "updated_at) VALUES (?, ?, 'spent', ?, now(), now()) ON CONFLICT (campaign_id, "
            "call_key) DO UPDATE SET status = 'spent', cost_nanousd = excluded.cost_nanousd, "
            "updated_at = excluded.updated_at",
            (campaign_id, call_key, cost_nanousd), "llm_spend", campaign_id)

    async def release_llm_call(self, campaign_id: str, call_key: str) -> None:
        await self._run("DELETE FROM llm_spend WHERE campaign_id = ? AND call_key = ? "
                        "AND status = 'reserved'", (campaign_id, call_key), "llm_spend",
                        campaign_id)

    async def spend(self, campaign_id: str) -> Spend:
        async with self._conn("llm_spend", campaign_id) as c:
            rows = await c.all("SELECT budget_usd FROM campaigns WHERE campaign_id = ?",
                               (campaign_id,))
            totals = (await c.all(self._TOTALS, (campaign_id,)))[0]
        return spend_of(rows[0]["budget_usd"] if rows else None, int(totals["spent"]),
                        int(totals["held"]))

    async def get_campaign(self, campaign_id: str) -> CampaignRow | None:
        return campaign_row(await self._one("SELECT * FROM campaigns WHERE campaign_id = ?", (campaign_id,)))

    async def list_campaigns(self, limit: int = 200) -> list[CampaignRow]:
        rows = await self._all("SELECT * FROM campaigns ORDER BY created_at DESC, campaign_id "
                               "LIMIT ?", (limit,))
        return [c for c in map(campaign_row, rows) if c is not None]

    async def set_stage(self, campaign_id: str, stage: str) -> None:
        await self._run("UPDATE campaigns SET stage = ?, updated_at = now() WHERE campaign_id = ?",
                        (stage, campaign_id), "campaigns", campaign_id)

    async def upsert_leads(self, campaign_id: str, leads: list[Lead]) -> int:
        """One statement for the batch; duplicates are merged first (one upsert may not
        touch a row twice)."""
        unique = {lead.lead_id: lead for lead in leads}.values()
        rows = [(campaign_id, lead.lead_id, lead.email, lead.model_dump_json()) for lead in unique]
        async with self._conn("leads", campaign_id) as c:
            await self._insert_many(
                c, "leads", ("campaign_id", "lead_id", "email", "data"), rows,
                "ON CONFLICT (campaign_id, lead_id) DO UPDATE SET data = excluded.data, "
                "updated_at = excluded.updated_at", ("created_at", "updated_at"))
        return len(leads)

    async def get_lead(self, campaign_id: str, lead_id: str) -> Lead | None:
        row = await self._one("SELECT data FROM leads WHERE campaign_id = ? AND lead_id = ?",
                              (campaign_id, lead_id))
        return parse_lead(row["data"], f"{campaign_id}/{lead_id}") if row else None

    async def list_lead_ids(self, campaign_id: str, after: str | None, limit: int) -> list[str]:
        rows = await self._all("SELECT lead_id FROM leads WHERE campaign_id = ? AND lead_id > ? "
                               "ORDER BY lead_id LIMIT ?", (campaign_id, after or "", limit))
        return [r["lead_id"] for r in rows]

    async def set_lead_status(self, campaign_id: str, lead_id: str, status: str,
                              error: str | None = None) -> None:
        await self._run("UPDATE leads SET draft_status = ?, error = ?, updated_at = now() "
                        "WHERE campaign_id = ? AND lead_id = ?", (status, error, campaign_id, lead_id),
                        "leads", f"{campaign_id}/{lead_id}")

    # -- envelopes, retrievals, drafts -------------------------------------------------

    async def save_envelope(self, envelope: Envelope, lead_id: str | None = None) -> str:
        eid = envelope.envelope_id
        await self._run(AUDIT_INSERT, audit_args(envelope, lead_id), "audit_log", eid)
        return eid

    async def get_envelope(self, envelope_id: str) -> Envelope | None:
        row = await self._one("SELECT envelope FROM audit_log WHERE envelope_id = ?", (envelope_id,))
        return parse_envelope(row["envelope"], envelope_id) if row else None

    async def save_retrieval(self, campaign_id: str, lead_id: str, passages: list[dict[str, Any]],
                             envelope_id: str) -> None:
        await self._run(
            "INSERT INTO retrievals(campaign_id, lead_id, passages, envelope_id, created_at) "
            "VALUES (?, ?, ?, ?, now()) ON CONFLICT (campaign_id, lead_id) DO UPDATE SET "
            "passages = excluded.passages, envelope_id = excluded.envelope_id",
            (campaign_id, lead_id, json.dumps(passages, default=str), envelope_id),
            "retrievals", f"{campaign_id}/{lead_id}")

    async def get_retrieval(self, campaign_id: str, lead_id: str) -> list[dict[str, Any]]:
        row = await self._one("SELECT passages FROM retrievals WHERE campaign_id = ? AND lead_id = ?",
                              (campaign_id, lead_id))
        return list(parse_json(row["passages"], "retrievals", f"{campaign_id}/{lead_id}")) if row else []

    async def upsert_draft(self, *, campaign_id: str, lead_id: str, step: int, subject: str, body: str,
                           citations: list[str], provenance: dict[str, Any], envelope_id: str,
                           failed_reason: str | None = None) -> None:
        await self._run(
            "INSERT INTO drafts(campaign_id, lead_id, step, subject, body, citations, provenance, "
            "envelope_id, failed_reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, now()) "
            "ON CONFLICT (campaign_id, lead_id, step) DO UPDATE SET subject = excluded.subject, "
            "body = excluded.body, citations = excluded.citations, "
            "provenance = excluded.provenance, envelope_id = excluded.envelope_id, "
            "failed_reason = excluded.failed_reason",
            (campaign_id, lead_id, step, subject, body, json.dumps(citations),
             json.dumps(provenance, default=str), envelope_id, failed_reason), "drafts",
            f"{campaign_id}/{lead_id}/{step}")

    _DRAFTS = "SELECT d.*, l.email FROM drafts d JOIN leads l USING (campaign_id, lead_id) "

    async def list_drafts(self, campaign_id: str, *, offset: int = 0,
                          limit: int | None = None) -> list[DraftRow]:
        page = ""
        args: list[Any] = [campaign_id]
        if limit is not None or offset:
            page = " LIMIT ? OFFSET ?"
            args += [limit if limit is not None else 2**62, offset]
        rows = await self._all(self._DRAFTS + "WHERE d.campaign_id = ? "
                               "ORDER BY l.created_at, d.lead_id, d.step" + page, args)
        return [draft_row(r) for r in rows]

    async def get_draft(self, campaign_id: str, lead_id: str, step: int = 1) -> DraftRow | None:
        row = await self._one(self._DRAFTS + "WHERE d.campaign_id = ? AND d.lead_id = ? AND d.step = ?",
                              (campaign_id, lead_id, step))
        return draft_row(row) if row else None

    async def list_lead_drafts(self, campaign_id: str, lead_id: str) -> list[DraftRow]:
        rows = await self._all(self._DRAFTS + "WHERE d.campaign_id = ? AND d.lead_id = ? "
                               "ORDER BY d.step", (campaign_id, lead_id))
        return [draft_row(r) for r in rows]

    # -- reviewers' edits and exclusions (schema 6) -----------------------------------

    async def add_draft_edit(self, *, edit_id: str, campaign_id: str, lead_id: str, step: int,
                             subject: str | None, body: str | None, base_version: int | None,
                             by: str) -> None:
        await self._run(
            "INSERT INTO draft_versions(edit_id, campaign_id, lead_id, step, base_version, subject, "
            "body, edited_by, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
            "'pending', now(), now()) ON CONFLICT (edit_id) DO NOTHING",
            (edit_id, campaign_id, lead_id, step, base_version, subject, body, by),
            "draft_versions", edit_id)

    async def get_draft_edit(self, edit_id: str) -> DraftEditRow | None:
        row = await self._one("SELECT * FROM draft_versions WHERE edit_id = ?", (edit_id,))
        return draft_edit_row(row) if row else None

    async def apply_draft_edit(self, edit_id: str, *, subject: str, body: str,
                               expected_version: int) -> DraftRow | None:
        """One transaction: keep version 1 if it is the one replaced, bump the draft, mark
        the edit applied."""
        async with self._conn("draft_versions", edit_id, write=True) as c:
            edits = await c.all("SELECT * FROM draft_versions WHERE edit_id = ?", (edit_id,))
            if not edits:
                raise StoreError("no such edit", table="draft_versions", key=edit_id)
            edit = draft_edit_row(edits[0])
            where = (edit.campaign_id, edit.lead_id, edit.step)
            if edit.status == "applied":
                rows = await c.all(self._DRAFTS + "WHERE d.campaign_id = ? AND d.lead_id = ? "
                                   "AND d.step = ?", where)
                return draft_row(rows[0]) if rows else None
            if expected_version == 1:
                await c.run(
                    "INSERT INTO draft_versions(edit_id, campaign_id, lead_id, step, version, "
                    "subject, body, edited_by, status, created_at, updated_at) SELECT ?, "
                    "campaign_id, lead_id, step, version, subject, body, edited_by, 'original', "
                    "created_at, now() FROM drafts WHERE campaign_id = ? AND lead_id = ? "
                    "AND step = ? AND version = 1 ON CONFLICT DO NOTHING",
                    (original_edit_id(*where), *where))
            changed = await c.run(
                "UPDATE drafts SET subject = ?, body = ?, version = version + 1, edited_by = ?, "
                "failed_reason = NULL "
                "WHERE campaign_id = ? AND lead_id = ? AND step = ? AND version = ?",
                (subject, body, edit.edited_by, *where, expected_version))
            if not changed:
                return None
            await c.run("UPDATE draft_versions SET status = 'applied', version = ?, subject = ?, "
                        "body = ?, updated_at = now() WHERE edit_id = ?",
                        (expected_version + 1, subject, body, edit_id))
            rows = await c.all(self._DRAFTS + "WHERE d.campaign_id = ? AND d.lead_id = ? "
                               "AND d.step = ?", where)
            return draft_row(rows[0]) if rows else None

    async def refuse_draft_edit(self, edit_id: str, reason: str) -> None:
        await self._run("UPDATE draft_versions SET status = 'refused', reason = ?, updated_at = now() "
                        "WHERE edit_id = ? AND status = 'pending'", (reason, edit_id),
                        "draft_versions", edit_id)

    async def get_draft_version(self, campaign_id: str, lead_id: str, step: int,
                                version: int) -> DraftRow | None:
        draft = await self.get_draft(campaign_id, lead_id, step)
        if draft is None or draft.version == version:
            return draft
        row = await self._one(
            "SELECT * FROM draft_versions WHERE campaign_id = ? AND lead_id = ? AND step = ? "
            "AND version = ? AND status IN ('applied', 'original')",
            (campaign_id, lead_id, step, version))
        return as_version(draft, draft_edit_row(row)) if row else None

    async def list_draft_versions(self, campaign_id: str, lead_id: str,
                                  step: int | None = None) -> list[DraftEditRow]:
        by_step = " AND step = ?" if step is not None else ""
        args = (campaign_id, lead_id) + ((step,) if step is not None else ())
        rows = await self._all("SELECT * FROM draft_versions WHERE campaign_id = ? AND lead_id = ?"
                               f"{by_step} ORDER BY step, created_at, edit_id", args)
        return [draft_edit_row(r) for r in rows]

    async def set_draft_excluded(self, campaign_id: str, lead_id: str, step: int | None,
                                 excluded: bool) -> list[int]:
        by_step = " AND step = ?" if step is not None else ""
        args = (campaign_id, lead_id) + ((step,) if step is not None else ())
        async with self._conn("drafts", f"{campaign_id}/{lead_id}", write=True) as c:
            await c.run(f"UPDATE drafts SET excluded = {'TRUE' if excluded else 'FALSE'} "
                        f"WHERE campaign_id = ? AND lead_id = ?{by_step}", args)
            rows = await c.all("SELECT step FROM drafts WHERE campaign_id = ? AND lead_id = ?"
                               f"{by_step} ORDER BY step", args)
        return [int(r["step"]) for r in rows]

    # -- approvals and delivery --------------------------------------------------------

    async def record_decision(self, *, campaign_id: str, decision_id: str, decision: str,
                              lead_ids: list[str] | None, by: str, note: str | None,
                              send_passing: bool = False) -> int:
        """Record who decided what; on approval mark the drafts approved. Returns how many
        leads are approved. `approve_leads` approves a selection during the review (the
        campaign still awaits its decision); see `Store.record_decision` for the rules."""
        async with self._conn("approvals", f"{campaign_id}/{decision_id}", write=True) as c:
            await c.run(
                "INSERT INTO approvals(campaign_id, decision_id, decision, lead_ids, decided_by, note, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, now()) "
                "ON CONFLICT (campaign_id, decision_id) DO NOTHING",
                (campaign_id, decision_id, decision, None if lead_ids is None else json.dumps(lead_ids),
                 by, note))
            if decision not in APPROVALS:
                return 0
            # Excluded and failed drafts are never approved, nor are a held lead's (one with a
            # failed step) unless the reviewer sends its passing steps. The campaign's decision
            # approves each draft at the version it has then, those approved earlier in the
            # review too (an edit since then is what the reviewer last saw).
            if decision == "approve":
                await c.run("UPDATE drafts SET approved_version = version WHERE campaign_id = ? "
                            "AND approved = TRUE", (campaign_id,))
            approve = ("UPDATE drafts SET approved = TRUE, approved_version = version "
                       "WHERE excluded = FALSE AND failed_reason IS NULL AND campaign_id = ?")
            if not (send_passing and lead_ids is not None):
                approve += (" AND lead_id NOT IN (SELECT f.lead_id FROM drafts f WHERE "
                            "f.campaign_id = drafts.campaign_id AND f.failed_reason IS NOT NULL "
                            "AND f.excluded = FALSE)")
            if lead_ids is None:
                await c.run(approve, (campaign_id,))
            for part in chunks(lead_ids or []):
                await c.run(f"{approve} AND lead_id IN ({marks(part)})", (campaign_id, *part))
            rows = await c.all("SELECT count(*) AS n FROM drafts WHERE campaign_id = ? "
                               "AND approved = TRUE AND step = 1", (campaign_id,))  # leads
            return int(rows[0]["n"])

    async def list_approved_lead_ids(self, campaign_id: str, after: str | None, limit: int) -> list[str]:
        """Leads whose step 1 is approved: a sequence starts there, or not at all."""
        rows = await self._all(
            "SELECT lead_id FROM drafts WHERE campaign_id = ? AND approved = TRUE AND step = 1 "
            "AND lead_id > ? ORDER BY lead_id LIMIT ?", (campaign_id, after or "", limit))
        return [r["lead_id"] for r in rows]

    async def add_suppressions(self, emails: list[str], reason: str, *,
                               source: SuppressionSource) -> int:
        rows = [(e, reason, source) for e in dict.fromkeys(normalise_address(e) for e in emails)]
        async with self._conn("suppressions", f"{len(emails)} address(es)") as c:
            return await self._insert_many(c, "suppressions", ("email", "reason", "source"), rows,
                                           "ON CONFLICT (email) DO NOTHING", ("created_at",))

    async def list_suppressions(self) -> list[SuppressionRow]:
        rows = await self._all("SELECT email, reason, source, created_at FROM suppressions "
                               "ORDER BY created_at DESC, email")
        return [suppression_row(r) for r in rows]

    async def get_suppression(self, email: str) -> SuppressionRow | None:
        forms = address_forms(email)
        rows = await self._all("SELECT email, reason, source, created_at FROM suppressions "
                               f"WHERE email IN ({marks(forms)})", forms)
        return first_suppression([suppression_row(r) for r in rows])

    async def lift_suppression(self, email: str) -> list[SuppressionRow]:
        """One statement: an entry made by an erasure request (under any form) keeps them all."""
        forms = address_forms(email)
        async with self._conn("suppressions", "lift", write=True) as c:
            rows = await c.all(
                f"DELETE FROM suppressions WHERE email IN ({marks(forms)}) AND NOT EXISTS "
                f"(SELECT 1 FROM suppressions e WHERE e.email IN ({marks(forms)}) "
                "AND e.source = 'erasure') RETURNING email, reason, source, created_at",
                (*forms, *forms))
        return [suppression_row(r) for r in rows]

    async def is_suppressed(self, email: str) -> bool:
        forms = address_forms(email)  # older rows may hold an earlier normal form
        return await self._one(
            f"SELECT 1 AS x FROM suppressions WHERE email IN ({', '.join('?' * len(forms))})",
            forms) is not None

    async def get_delivery(self, message_key: str) -> DeliveryRow | None:
        return delivery_row(await self._one("SELECT * FROM deliveries WHERE message_key = ?", (message_key,)))

    async def upsert_delivery(self, *, message_key: str, campaign_id: str, lead_id: str, step: int,
                              channel: str, status: str, message_id: str | None = None,
                              error: str | None = None) -> None:
        await self._run(
            "INSERT INTO deliveries(message_key, campaign_id, lead_id, step, channel, status, "
            "message_id, error, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, now(), now()) "
            "ON CONFLICT (message_key) DO UPDATE SET status = excluded.status, "
            "message_id = COALESCE(excluded.message_id, deliveries.message_id), "
            "error = excluded.error, updated_at = excluded.updated_at",
            (message_key, campaign_id, lead_id, step, channel, status, message_id, error),
            "deliveries", message_key)

    async def find_delivery_by_message_id(self, message_id: str) -> DeliveryRow | None:
        mid = bare_message_id(message_id)
        return delivery_row(await self._one("SELECT * FROM deliveries WHERE message_id IN (?, ?) LIMIT 1",
                                           (mid, f"<{mid}>")))

    async def record_delivery_event(self, *, event_id: str, kind: str, email: str, source: str,
                                    campaign_id: str | None = None, lead_id: str | None = None,
                                    message_key: str | None = None, detail: str | None = None) -> bool:
        return await self._run(
            "INSERT INTO delivery_events(event_id, kind, email, campaign_id, lead_id, message_key, "
            "source, detail, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, now()) "
            "ON CONFLICT (event_id) DO NOTHING",
            (event_id, kind, normalise_address(email), campaign_id, lead_id, message_key, source,
             detail), "delivery_events", event_id) > 0

    async def list_delivery_events(self, campaign_id: str, lead_id: str | None = None
                                   ) -> list[DeliveryEventRow]:
        lead = " AND lead_id = ?" if lead_id is not None else ""
        rows = await self._all(f"SELECT * FROM delivery_events WHERE campaign_id = ?{lead} "
                               "ORDER BY created_at, event_id",
                               (campaign_id, lead_id) if lead_id is not None else (campaign_id,))
        return [event_row(r) for r in rows]

    async def get_or_create_secret(self, name: str, candidate: str) -> str:
        async with self._conn("signing_keys", name, write=True) as c:
            await c.run("INSERT INTO signing_keys(name, secret, created_at) VALUES (?, ?, now()) "
                        "ON CONFLICT (name) DO NOTHING", (name, candidate))
            rows = await c.all("SELECT secret FROM signing_keys WHERE name = ?", (name,))
        return str(rows[0]["secret"])

    async def claim_webhook_id(self, webhook_id: str) -> bool:
        return await self._run("INSERT INTO webhook_ids(webhook_id, received_at) VALUES (?, now()) "
                               "ON CONFLICT (webhook_id) DO NOTHING", (webhook_id,),
                               "webhook_ids", webhook_id) > 0

    async def release_webhook_id(self, webhook_id: str) -> None:
        await self._run("DELETE FROM webhook_ids WHERE webhook_id = ?", (webhook_id,),
                        "webhook_ids", webhook_id)

    # -- reviewers and sign-in codes (schema 7) ------------------------------------------

    async def add_reviewer(self, name: str, token_hash: str) -> bool:
        return await self._run(
            "INSERT INTO reviewers(name, token_hash, created_at) VALUES (?, ?, now()) "
            "ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash, "
            "created_at = excluded.created_at, removed_at = NULL "
            "WHERE reviewers.removed_at IS NOT NULL", (name, token_hash), "reviewers", name) > 0

    async def get_reviewer(self, name: str) -> ReviewerRow | None:
        return reviewer_row(await self._one(
            "SELECT name, created_at, removed_at, session_epoch FROM reviewers WHERE name = ? "
            "AND removed_at IS NULL", (name,), "reviewers", name))

    async def reviewer_by_token(self, token_hash: str) -> ReviewerRow | None:
        return reviewer_row(await self._one(
            "SELECT name, created_at, removed_at, session_epoch FROM reviewers WHERE token_hash = ? "
            "AND removed_at IS NULL", (token_hash,), "reviewers"))

    async def list_reviewers(self) -> list[ReviewerRow]:
        rows = await self._all("SELECT name, created_at, removed_at, session_epoch FROM reviewers "
                               "WHERE removed_at IS NULL ORDER BY name")
        return [r for r in map(reviewer_row, rows) if r is not None]

    async def remove_reviewer(self, name: str) -> bool:
        async with self._conn("reviewers", name, write=True) as c:
            await c.run("DELETE FROM sign_in_codes WHERE reviewer = ?", (name,))
            return await c.run("UPDATE reviewers SET removed_at = now(), "
                               "session_epoch = session_epoch + 1 WHERE name = ? "
                               "AND removed_at IS NULL", (name,)) > 0

    async def bump_session_epoch(self, name: str) -> bool:
        return await self._run("UPDATE reviewers SET session_epoch = session_epoch + 1 "
                               "WHERE name = ? AND removed_at IS NULL", (name,),
                               "reviewers", name) > 0

    async def add_sign_in_code(self, code_hash: str, reviewer: str, expires_at: datetime) -> None:
        await self._run("INSERT INTO sign_in_codes(code_hash, reviewer, expires_at, created_at) "
                        "VALUES (?, ?, ?, now())", (code_hash, reviewer, iso(expires_at)),
                        "sign_in_codes", reviewer)

    async def take_sign_in_code(self, code_hash: str) -> str | None:
        async with self._conn("sign_in_codes", write=True) as c:
            rows = await c.all("DELETE FROM sign_in_codes WHERE code_hash = ? "
                               "RETURNING reviewer, expires_at", (code_hash,))
        if not rows or datetime.fromisoformat(str(iso(rows[0]["expires_at"]))) <= now_utc():
            return None
        return str(rows[0]["reviewer"])

    #: A review page's filters on a lead (alias `l`) by the state of any of its steps.
    _ANY_STEP = ("EXISTS (SELECT 1 FROM drafts f WHERE f.campaign_id = l.campaign_id "
                 "AND f.lead_id = l.lead_id AND {})")
    _STEP_FILTERS: ClassVar[dict[str, str]] = {
        "failed": _ANY_STEP.format("f.failed_reason IS NOT NULL"),
        "edited": _ANY_STEP.format("f.version > 1"),
        "excluded": _ANY_STEP.format("f.excluded = TRUE"),
        "replied": ("EXISTS (SELECT 1 FROM replies r WHERE r.campaign_id = l.campaign_id "
                    "AND r.lead_id = l.lead_id AND r.kind = 'reply' AND r.verified = TRUE)"),
        "held": (_ANY_STEP.format("f.failed_reason IS NOT NULL AND f.excluded = FALSE")
                 + " AND NOT " + _ANY_STEP.format("f.approved = TRUE")),
    }

    def _lead_field(self, name: str) -> str:
        """A field of a lead's `data` (alias `l`) as text, in this dialect."""
        return self.COMPANY.replace("company", name)

    async def review_page(self, campaign_id: str, *, status: str | None = None,
                          search: str | None = None, step_status: str | None = None,
                          lead_id: str | None = None, offset: int = 0,
                          limit: int = 50) -> ReviewPage:
        """The filters in SQL; a search reads the searched fields of the leads that pass
        them and matches here (`review.lead_matches`: accents folded, on every dialect)."""
        where, args = "l.campaign_id = ?", [campaign_id]
        if lead_id is not None:
            where += " AND l.lead_id = ?"
            args.append(lead_id)
        if status is not None:
            if status not in REVIEW_STATUSES:
                raise StoreError(f"unknown review status {status!r}", table="leads", key=campaign_id)
            where += {"approved": " AND d.approved = TRUE", "excluded": " AND d.excluded = TRUE",
                      "edited": " AND d.version > 1",
                      "pending": " AND l.draft_status IN ('pending', 'drafting')"}.get(
                status, " AND l.draft_status = ?")
            if status in {"drafted", "failed"}:
                args.append(status)
        if step_status is not None:
            if step_status not in STEP_STATUSES:
                raise StoreError(f"unknown step status {step_status!r}", table="drafts",
                                 key=campaign_id)
            where += f" AND {self._STEP_FILTERS[step_status]}"
        fields = ", ".join(f"{self._lead_field(f)} AS {f}" for f in SEARCHED)
        joined = ("FROM leads l LEFT JOIN drafts d ON d.campaign_id = l.campaign_id "
                  f"AND d.lead_id = l.lead_id AND d.step = 1 WHERE {where}")
        order = " ORDER BY l.created_at, l.lead_id"
        key = search_key(search)
        async with self._conn("leads", campaign_id) as c:
            if key is None:
                total = int((await c.all(f"SELECT count(*) AS n {joined}", args))[0]["n"])
                found = await c.all(f"SELECT l.lead_id {joined}{order} LIMIT ? OFFSET ?",
                                    [*args, max(limit, 0), max(offset, 0)])
                ids = [str(r["lead_id"]) for r in found]
            else:
                rows = await c.all(f"SELECT l.lead_id, l.email, {fields} {joined}{order}", args)
                hits = [str(r["lead_id"]) for r in rows if lead_matches(r, key)]
                total, ids = len(hits), hits[max(offset, 0):max(offset, 0) + max(limit, 0)]
            leads: dict[str, dict[str, Any]] = {}
            facts: list[dict[str, Any]] = []
            replies: list[dict[str, Any]] = []
            events: list[dict[str, Any]] = []
            for part in chunks(ids):
                within = (campaign_id, *part)
                for r in await c.all(
                        f"SELECT l.lead_id, l.email, l.draft_status, l.error, {fields} FROM leads l "
                        f"WHERE l.campaign_id = ? AND l.lead_id IN ({marks(part)})", within):
                    leads[str(r["lead_id"])] = r
                facts += await c.all(
                    f"SELECT {FACT_COLUMNS}, d.subject, d.version, d.edited_by, "
                    f"x.updated_at AS sent_at, s.due_at {FACTS_FROM}"
                    f"WHERE l.campaign_id = ? AND l.lead_id IN ({marks(part)}) "
                    "ORDER BY l.lead_id, COALESCE(d.step, 1)", within)
                replies += await c.all(
                    "SELECT lead_id, step, kind FROM replies WHERE campaign_id = ? "
                    f"AND lead_id IN ({marks(part)}) AND verified = TRUE "
                    "ORDER BY received_at", within)
                events += await c.all(
                    "SELECT lead_id, message_key, kind FROM delivery_events WHERE campaign_id = ? "
                    f"AND lead_id IN ({marks(part)}) ORDER BY created_at", within)
            decisions = await c.all(
                "SELECT decision, decided_by, note, lead_ids, created_at FROM approvals "
                "WHERE campaign_id = ? ORDER BY created_at, decision_id", (campaign_id,))
            stage = await c.all("SELECT stage FROM campaigns WHERE campaign_id = ?", (campaign_id,))
        return page_of(
            campaign_id, total, [leads[i] for i in ids if i in leads], facts,
            stage[0]["stage"] if stage else None, replies=replies, events=events,
            decisions=decisions)

    # -- replies (schema 8) ----------------------------------------------------------

    async def record_reply(self, *, message_id: str, kind: str, email: str, source: str,
                           campaign_id: str | None = None, lead_id: str | None = None,
                           step: int | None = None, subject: str = "", text: str = "",
                           matched_by: str | None = None, verified: bool = True,
                           headers: dict[str, str] | None = None) -> tuple[str, bool]:
        reply_id = reply_id_for(message_id, campaign_id, lead_id)
        new = await self._run(
            "INSERT INTO replies(reply_id, message_id, campaign_id, lead_id, step, kind, email, "
            "subject, text, matched_by, source, verified, headers, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now()) "
            "ON CONFLICT (reply_id) DO NOTHING",
            (reply_id, bare_message_id(message_id), campaign_id, lead_id, step, kind,
             normalise_address(email), subject, text, matched_by, source, verified,
             headers_json(headers)),
            "replies", reply_id)
        return reply_id, new > 0

    async def get_reply(self, reply_id: str) -> ReplyRow | None:
        row = await self._one("SELECT * FROM replies WHERE reply_id = ?", (reply_id,))
        return reply_row(row) if row is not None else None

    async def record_reply_intent(self, reply_id: str, intent: str, confidence: float | None,
                                  action: str | None) -> bool:
        return await self._run("UPDATE replies SET intent = ?, confidence = ?, action = ? "
                               "WHERE reply_id = ?", (intent, confidence, action, reply_id),
                               "replies", reply_id) > 0

    # -- what is done with a reply (schema 15) -------------------------------------------

    async def snooze_reply(self, reply_id: str, until: datetime) -> bool:
        return await self._run("UPDATE replies SET snooze_until = ? WHERE reply_id = ?",
                               (iso(until), reply_id), "replies", reply_id) > 0

    async def mark_reply_done(self, reply_id: str, *, by: str) -> bool:
        return await self._run("UPDATE replies SET done_at = now(), done_by = ? "
                               "WHERE reply_id = ?", (by, reply_id), "replies", reply_id) > 0

    async def set_reply_intent_by_person(self, reply_id: str, intent: str, *, by: str) -> bool:
        return await self._run(
            "UPDATE replies SET intent = ?, confidence = 1.0, action = NULL, intent_by = ?, "
            "done_at = NULL, done_by = NULL WHERE reply_id = ?", (intent, by, reply_id),
            "replies", reply_id) > 0

    #: The replies `inbox` looks at (alias r); it filters them further (`inbox_of`).
    _INBOX_WHERE = (
        "r.done_at IS NULL AND r.kind = 'reply' AND (r.intent IN ({intents}) "
        "OR r.snooze_until IS NOT NULL OR r.action = ?)")

    async def inbox(self, *, campaign_id: str | None, intents: list[str] | None,
                    now: datetime) -> list[InboxItem]:
        where = self._INBOX_WHERE.format(intents=marks(INBOX_INTENTS))
        args: list[Any] = [*INBOX_INTENTS, AWAITING_CONFIRMATION]
        if campaign_id is not None:
            where += " AND r.campaign_id = ?"
            args.append(campaign_id)
        async with self._conn("replies") as c:
            replies = await c.all(f"SELECT r.* FROM replies r WHERE {where}", args)
            answers = await c.all("SELECT a.* FROM reply_answers a JOIN replies r "
                                  f"ON r.reply_id = a.reply_id WHERE {where}", args)
        return inbox_of([reply_row(r) for r in replies],
                        {a["reply_id"]: answer_row(a) for a in answers},
                        campaign_id=campaign_id, intents=intents, now=now)

    async def save_reply_answer(self, reply_id: str, *, subject: str, body: str,
                                by: str | None, drafted: bool = False) -> None:
        if drafted:  # the agent's draft: a person's edit already there is kept
            update = ("subject = excluded.subject, body = excluded.body, "
                      "drafted_by = excluded.drafted_by, drafted_at = now(), updated_at = now() "
                      "WHERE reply_answers.status = 'drafted' AND reply_answers.edited_by IS NULL")
            who: tuple[str | None, str | None] = (by, None)
        else:
            update = ("subject = excluded.subject, body = excluded.body, "
                      "edited_by = excluded.edited_by, edited_at = now(), updated_at = now() "
                      "WHERE reply_answers.status = 'drafted'")
            who = (None, by)
        async with self._conn("reply_answers", reply_id, write=True) as c:
            changed = await c.run(
                "INSERT INTO reply_answers(reply_id, campaign_id, lead_id, subject, body, "
                "status, drafted_by, drafted_at, edited_by, edited_at, updated_at) "
                "SELECT reply_id, campaign_id, lead_id, ?, ?, 'drafted', ?, "
                f"{'now()' if drafted else 'NULL'}, ?, {'NULL' if drafted else 'now()'}, now() "
                "FROM replies WHERE reply_id = ? "
                f"ON CONFLICT (reply_id) DO UPDATE SET {update}",
                (subject, body, *who, reply_id))
            if changed:
                return
            rows = await c.all("SELECT status FROM reply_answers WHERE reply_id = ?", (reply_id,))
        if not rows:
            raise StoreError("no such reply", table="replies", key=reply_id)
        if rows[0]["status"] != "drafted":
            raise AnswerConflict(f"the answer is {rows[0]['status']}: it can no longer change",
                                 table="reply_answers", key=reply_id)

    async def get_reply_answer(self, reply_id: str) -> ReplyAnswerRow | None:
        row = await self._one("SELECT * FROM reply_answers WHERE reply_id = ?", (reply_id,),
                              "reply_answers", reply_id)
        return answer_row(row) if row is not None else None

    async def claim_answer_send(self, reply_id: str, *, by: str) -> ReplyAnswerRow | None:
        async with self._conn("reply_answers", reply_id, write=True) as c:
            claimed = await c.run("UPDATE reply_answers SET status = 'sending', sent_by = ?, "
                                  "updated_at = now() WHERE reply_id = ? AND status = 'drafted'",
                                  (by, reply_id))
            if not claimed:
                return None
            rows = await c.all("SELECT * FROM reply_answers WHERE reply_id = ?", (reply_id,))
        return answer_row(rows[0])

    async def release_answer_send(self, reply_id: str) -> bool:
        return await self._run("UPDATE reply_answers SET status = 'drafted', sent_by = NULL, "
                               "updated_at = now() WHERE reply_id = ? AND status = 'sending'",
                               (reply_id,), "reply_answers", reply_id) > 0

    async def mark_answer_sent(self, reply_id: str, *, message_id: str, by: str) -> None:
        await self._run("UPDATE reply_answers SET status = 'sent', message_id = ?, sent_by = ?, "
                        "sent_at = now(), updated_at = now() "
                        "WHERE reply_id = ? AND status <> 'sent'",
                        (message_id, by, reply_id), "reply_answers", reply_id)

    async def add_suggested_lead(self, *, campaign_id: str | None, reply_id: str,
                                 referred_by: str | None, name: str | None,
                                 email: str | None) -> tuple[str, bool]:
        sid = suggested_lead_id(reply_id, name, email)
        new = await self._run(
            "INSERT INTO suggested_leads(id, campaign_id, reply_id, referred_by, name, email, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, now()) ON CONFLICT (id) DO NOTHING",
            (sid, campaign_id, reply_id, referred_by, name, suggested_email(email)),
            "suggested_leads", sid)
        return sid, new > 0

    async def list_suggested_leads(self, campaign_id: str | None = None
                                   ) -> list[SuggestedLeadRow]:
        where, args = ("WHERE campaign_id = ? ", (campaign_id,)) if campaign_id else ("", ())
        rows = await self._all(f"SELECT * FROM suggested_leads {where}"
                               "ORDER BY created_at DESC, id", args, "suggested_leads")
        return [suggested_lead_row(r) for r in rows]

    async def mark_suggested_lead_added(self, suggestion_id: str, campaign_id: str) -> bool:
        return await self._run("UPDATE suggested_leads SET added_campaign_id = ? WHERE id = ?",
                               (campaign_id, suggestion_id), "suggested_leads",
                               suggestion_id) > 0

    async def confirm_reply(self, reply_id: str) -> bool:
        return await self._run("UPDATE replies SET verified = TRUE WHERE reply_id = ? "
                               "AND verified = FALSE", (reply_id,), "replies", reply_id) > 0

    async def lead_replied(self, campaign_id: str, lead_id: str) -> bool:
        return await self._one("SELECT 1 AS x FROM replies WHERE campaign_id = ? AND lead_id = ? "
                               "AND kind = 'reply' AND verified = TRUE AND (intent IS NULL OR "
                               f"intent NOT IN ({marks(MACHINE_INTENTS)})) LIMIT 1",
                               (campaign_id, lead_id, *MACHINE_INTENTS)) is not None

    async def list_replies(self, campaign_id: str | None) -> list[ReplyRow]:
        where = "campaign_id = ?" if campaign_id is not None else "campaign_id IS NULL"
        rows = await self._all(f"SELECT * FROM replies WHERE {where} ORDER BY received_at, reply_id",
                               (campaign_id,) if campaign_id is not None else ())
        return [reply_row(r) for r in rows]

    async def find_leads_by_email(self, email: str, stages: Iterable[str]) -> list[tuple[str, str]]:
        forms, wanted = address_forms(email), list(stages)
        if not wanted:
            return []
        rows = await self._all(
            "SELECT l.campaign_id, l.lead_id FROM leads l JOIN campaigns c "
            f"ON c.campaign_id = l.campaign_id WHERE l.email IN ({marks(forms)}) "
            f"AND c.stage IN ({marks(wanted)}) ORDER BY l.campaign_id, l.lead_id", (*forms, *wanted))
        return [(r["campaign_id"], r["lead_id"]) for r in rows]

    async def emails_in_active_sequences(self, emails: Sequence[str], *,
                                         exclude_campaign: str | None = None) -> dict[str, str]:
        found: dict[str, str] = {}
        lead = "s.campaign_id = l.campaign_id AND s.lead_id = l.lead_id"
        sql = (
            "SELECT l.email, l.campaign_id FROM leads l JOIN campaigns c "
            "ON c.campaign_id = l.campaign_id WHERE l.email IN ({forms}) "
            "AND l.campaign_id <> ? AND lower(c.campaign_id) NOT LIKE ? AND ("
            "(c.stage IN ('drafting', 'awaiting_approval') AND l.draft_status <> 'failed') "
            "OR (c.stage = 'delivering' AND ("
            f"EXISTS (SELECT 1 FROM sequence_steps s WHERE {lead} AND s.status = 'scheduled') "
            f"OR (EXISTS (SELECT 1 FROM drafts s WHERE {lead} AND s.step = 1 "
            "AND s.approved = TRUE) "
            f"AND NOT EXISTS (SELECT 1 FROM deliveries s WHERE {lead} AND s.step = 1 "
            "AND s.status IN ('sent', 'suppressed', 'failed')))))) "
            "ORDER BY l.campaign_id")
        for forms in overlap_forms(emails):
            rows = await self._all(sql.format(forms=marks(list(forms))),
                                   (*forms, exclude_campaign or "",
                                    SCHEDULE_TEMPLATE_PREFIX + "%"), "leads")
            for r in rows:
                email = forms.get(r["email"])
                if email is not None:
                    found.setdefault(email, r["campaign_id"])
        return found

    async def emails_replied_since(self, emails: Sequence[str], since: datetime
                                   ) -> dict[str, str]:
        found: dict[str, str] = {}
        for forms in overlap_forms(emails):
            rows = await self._all(
                f"SELECT email, campaign_id FROM replies WHERE email IN ({marks(list(forms))}) "
                "AND kind = 'reply' AND verified = TRUE AND campaign_id IS NOT NULL "
                f"AND (intent IS NULL OR intent NOT IN ({marks(MACHINE_INTENTS)})) "
                "AND received_at >= ? ORDER BY received_at DESC, reply_id",
                (*forms, *MACHINE_INTENTS, iso(since)), "replies")
            for r in rows:
                email = forms.get(r["email"])
                if email is not None:
                    found.setdefault(email, r["campaign_id"])
        return found

    async def get_imap_state(self, mailbox: str) -> tuple[int, int] | None:
        row = await self._one("SELECT uidvalidity, last_uid FROM imap_state WHERE mailbox = ?",
                              (mailbox,))
        return (int(row["uidvalidity"]), int(row["last_uid"])) if row else None

    async def save_imap_state(self, mailbox: str, uidvalidity: int, last_uid: int) -> None:
        await self._run(
            "INSERT INTO imap_state(mailbox, uidvalidity, last_uid, updated_at) "
            "VALUES (?, ?, ?, now()) ON CONFLICT (mailbox) DO UPDATE SET "
            "uidvalidity = excluded.uidvalidity, last_uid = CASE WHEN imap_state.uidvalidity = "
            "excluded.uidvalidity AND imap_state.last_uid > excluded.last_uid THEN "
            "imap_state.last_uid ELSE excluded.last_uid END, "  # never backwards (two pollers)
            "updated_at = excluded.updated_at", (mailbox, uidvalidity, last_uid),
            "imap_state", mailbox)

    # -- sequences -------------------------------------------------------------------

    async def schedule_step(self, campaign_id: str, lead_id: str, step: int,
                            due_at: datetime) -> None:
        await self._run(
            "INSERT INTO sequence_steps(campaign_id, lead_id, step, due_at, status, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, 'scheduled', now(), now()) "
            "ON CONFLICT (campaign_id, lead_id, step) DO NOTHING",
            (campaign_id, lead_id, step, iso(due_at)), "sequence_steps",
            f"{campaign_id}/{lead_id}/{step}")

    async def move_open_step(self, campaign_id: str, lead_id: str, not_before: datetime
                             ) -> bool:
        return await self._run(
            "UPDATE sequence_steps SET due_at = ?, updated_at = now() WHERE campaign_id = ? "
            "AND lead_id = ? AND status = 'scheduled' AND due_at < ?",
            (iso(not_before), campaign_id, lead_id, iso(not_before)), "sequence_steps",
            f"{campaign_id}/{lead_id}") > 0

    async def get_step(self, campaign_id: str, lead_id: str, step: int) -> SequenceStepRow | None:
        row = await self._one("SELECT * FROM sequence_steps WHERE campaign_id = ? AND lead_id = ? "
                              "AND step = ?", (campaign_id, lead_id, step))
        return step_row(row) if row else None

    async def set_step_status(self, campaign_id: str, lead_id: str, step: int, status: str,
                              stop_reason: str | None = None) -> None:
        keep_sent = "" if status == "sent" else " WHERE sequence_steps.status <> 'sent'"
        await self._run(
            "INSERT INTO sequence_steps(campaign_id, lead_id, step, due_at, status, stop_reason, "
            "created_at, updated_at) VALUES (?, ?, ?, now(), ?, ?, now(), now()) "
            "ON CONFLICT (campaign_id, lead_id, step) DO UPDATE SET status = excluded.status, "
            "stop_reason = excluded.stop_reason, wait_reason = NULL, "
            "updated_at = excluded.updated_at" + keep_sent,
            (campaign_id, lead_id, step, status, stop_reason), "sequence_steps",
            f"{campaign_id}/{lead_id}/{step}")

    async def due_steps(self, campaign_id: str, before: datetime, after: str | None,
                        limit: int) -> list[SequenceStepRow]:
        rows = await self._all(
            "SELECT * FROM sequence_steps WHERE campaign_id = ? AND status = 'scheduled' "
            "AND due_at <= ? AND lead_id > ? ORDER BY lead_id, step LIMIT ?",
            (campaign_id, iso(before), after or "", limit), "sequence_steps", campaign_id)
        return [step_row(r) for r in rows]

    async def next_due_at(self, campaign_id: str, after: datetime) -> datetime | None:
        row = await self._one(
            "SELECT MIN(due_at) AS t FROM sequence_steps WHERE campaign_id = ? "
            "AND status = 'scheduled' AND due_at > ?", (campaign_id, iso(after)),
            "sequence_steps", campaign_id)
        return as_time(row["t"]) if row else None

    async def stop_open_steps(self, campaign_id: str, reason: str) -> int:
        return await self._run(
            "UPDATE sequence_steps SET status = 'stopped', stop_reason = ?, wait_reason = NULL, "
            "updated_at = now() WHERE campaign_id = ? AND status = 'scheduled'",
            (reason, campaign_id),
            "sequence_steps", campaign_id)

    async def last_sent_step(self, campaign_id: str, lead_id: str) -> int:
        row = await self._one(
            "SELECT MAX(step) AS n FROM deliveries WHERE campaign_id = ? AND lead_id = ? "
            "AND status IN ('sent', 'suppressed', 'committing')", (campaign_id, lead_id))
        return int(row["n"] or 0) if row else 0

    async def lead_ids_at_domain(self, campaign_id: str, domain: str) -> list[str]:
        pattern = "%@" + domain.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = await self._all("SELECT lead_id FROM leads WHERE campaign_id = ? "
                               "AND email LIKE ? ESCAPE '\\' ORDER BY lead_id",
                               (campaign_id, pattern))
        return [r["lead_id"] for r in rows]

    async def suppression_reason(self, email: str) -> str | None:
        forms = address_forms(email)
        row = await self._one(
            f"SELECT reason FROM suppressions WHERE email IN ({', '.join('?' * len(forms))}) "
            "ORDER BY created_at LIMIT 1", forms)
        return str(row["reason"]) if row else None

    # -- senders (issue 28, schema 16) ---------------------------------------------------

    _SENDER_COLUMNS = ("name", "from_addr", "transport", "smtp_url", "imap_url", "daily_cap",
                       "hourly_cap", "min_gap_seconds", "ramp_start", "ramp_step",
                       "dkim_selector", "dkim_key", "paused", "paused_reason", "paused_at",
                       "created_at", "removed_at")
    _CLAIM_COLUMNS = ("sender", "seq", "message_key", "campaign_id", "lead_id", "sent_at",
                      "day_number", "bounced", "complained")

    async def add_sender(self, row: SenderRow) -> bool:
        """One statement: a new name is inserted, a removed sender's row taken over (only
        while it is still removed), an active one left alone."""
        values = sender_values(row)
        cols = self._SENDER_COLUMNS
        return await self._run(
            f"INSERT INTO senders({', '.join(cols)}) VALUES ({marks(cols)}) "
            "ON CONFLICT (name) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
            + " WHERE senders.removed_at IS NOT NULL",
            [values[c] for c in cols], "senders", row.name) > 0

    async def get_sender(self, name: str) -> SenderRow | None:
        row = await self._one("SELECT * FROM senders WHERE name = ?", (name,), "senders", name)
        return sender_row(row) if row else None

    async def list_senders(self, *, include_removed: bool = False) -> list[SenderRow]:
        active = "" if include_removed else " WHERE removed_at IS NULL"
        rows = await self._all(f"SELECT * FROM senders{active} ORDER BY name", (), "senders")
        return [sender_row(r) for r in rows]

    async def set_sender_paused(self, name: str, paused: bool, reason: str | None, *,
                                if_not_paused: bool = False) -> bool:
        return await self._run(
            "UPDATE senders SET paused = ?, paused_reason = ?, "
            f"paused_at = {'now()' if paused else 'NULL'} "
            "WHERE name = ? AND removed_at IS NULL"
            + (" AND paused = FALSE" if if_not_paused else ""),
            (paused, reason if paused else None, name), "senders", name) > 0

    async def remove_sender(self, name: str) -> bool:
        return await self._run("UPDATE senders SET removed_at = now() WHERE name = ? "
                               "AND removed_at IS NULL", (name,), "senders", name) > 0

    async def last_sender_claim(self, sender: str) -> SenderClaim | None:
        row = await self._one("SELECT * FROM sender_sends WHERE sender = ? ORDER BY seq DESC "
                              "LIMIT 1", (sender,), "sender_sends", sender)
        return sender_claim(row) if row else None

    async def sender_claims_since(self, sender: str, since: datetime) -> list[SenderClaim]:
        rows = await self._all("SELECT * FROM sender_sends WHERE sender = ? AND sent_at > ? "
                               "ORDER BY seq", (sender, iso(since)), "sender_sends", sender)
        return [sender_claim(r) for r in rows]

    async def sender_claim_for(self, message_key: str) -> SenderClaim | None:
        row = await self._one("SELECT * FROM sender_sends WHERE message_key = ?",
                              (message_key,), "sender_sends", message_key)
        return sender_claim(row) if row else None

    async def insert_sender_claim(self, claim: SenderClaim) -> bool:
        """One statement, outside any transaction: a claim for a `message_key` already
        there writes nothing (`ON CONFLICT (message_key) DO NOTHING`); a taken
        (sender, seq) is a key violation. After a violation the rows say which it was
        (whichever key the engine checked first): the message's claim exists -> True; the
        seq is taken -> False; else (a missing value) the StoreError it always is."""
        values = claim_values(claim)
        cols = self._CLAIM_COLUMNS
        async with self._conn("sender_sends", f"{claim.sender}/{claim.seq}") as c:
            try:
                await c.run(f"INSERT INTO sender_sends({', '.join(cols)}) VALUES ({marks(cols)}) "
                            "ON CONFLICT (message_key) DO NOTHING", [values[k] for k in cols])
            except self.REJECTED:
                if await c.all("SELECT 1 AS x FROM sender_sends WHERE message_key = ?",
                               (claim.message_key,)):
                    return True
                if await c.all("SELECT 1 AS x FROM sender_sends WHERE sender = ? AND seq = ?",
                               (claim.sender, claim.seq)):
                    return False
                raise
        return True

    async def mark_sender_event(self, message_key: str, kind: SenderEventKind) -> str | None:
        column = {"bounce": "bounced", "complaint": "complained"}[kind]
        async with self._conn("sender_sends", message_key, write=True) as c:
            rows = await c.all(f"UPDATE sender_sends SET {column} = TRUE WHERE message_key = ? "
                               "RETURNING sender", (message_key,))
        return str(rows[0]["sender"]) if rows else None

    async def sender_health(self, sender: str, window: int = HEALTH_WINDOW) -> SenderHealth:
        row = await self._one(
            "SELECT count(*) AS sends, COALESCE(SUM(CASE WHEN bounced THEN 1 ELSE 0 END), 0) "
            "AS bounces, COALESCE(SUM(CASE WHEN complained THEN 1 ELSE 0 END), 0) AS complaints "
            "FROM (SELECT bounced, complained FROM sender_sends WHERE sender = ? "
            "ORDER BY seq DESC LIMIT ?) AS w", (sender, max(window, 0)), "sender_sends", sender)
        return SenderHealth(**{k: int(v) for k, v in (row or {}).items()})

    async def assign_senders(self, campaign_id: str, assignments: dict[str, str]) -> int:
        """One transaction, a statement per sender (and `CHUNK` leads); a lead that has a
        sender keeps it."""
        by_sender: dict[str, list[str]] = {}
        for lead_id, sender in assignments.items():
            by_sender.setdefault(sender, []).append(lead_id)
        changed = 0
        async with self._conn("leads", campaign_id, write=True) as c:
            for sender, lead_ids in sorted(by_sender.items()):
                for part in chunks(sorted(lead_ids)):
                    changed += await c.run(
                        "UPDATE leads SET sender = ?, updated_at = now() WHERE campaign_id = ? "
                        f"AND sender IS NULL AND lead_id IN ({marks(part)})",
                        (sender, campaign_id, *part))
        return changed

    async def lead_sender(self, campaign_id: str, lead_id: str) -> str | None:
        row = await self._one("SELECT sender FROM leads WHERE campaign_id = ? AND lead_id = ?",
                              (campaign_id, lead_id), "leads", f"{campaign_id}/{lead_id}")
        return row["sender"] if row else None

    async def sender_assignment_counts(self, campaign_id: str) -> dict[str, int]:
        rows = await self._all("SELECT sender, count(*) AS n FROM leads WHERE campaign_id = ? "
                               "AND sender IS NOT NULL GROUP BY sender ORDER BY sender",
                               (campaign_id,), "leads", campaign_id)
        return {str(r["sender"]): int(r["n"]) for r in rows}

    async def defer_step(self, campaign_id: str, lead_id: str, step: int, due_at: datetime,
                         sender: str, reason: WaitReason) -> None:
        await self._run(
            "INSERT INTO sequence_steps(campaign_id, lead_id, step, due_at, status, sender, "
            "wait_reason, created_at, updated_at) VALUES (?, ?, ?, ?, 'scheduled', ?, ?, now(), "
            "now()) ON CONFLICT (campaign_id, lead_id, step) DO UPDATE SET "
            "due_at = excluded.due_at, sender = excluded.sender, "
            "wait_reason = excluded.wait_reason, updated_at = excluded.updated_at "
            "WHERE sequence_steps.status = 'scheduled'",
            (campaign_id, lead_id, step, iso(due_at), sender, reason), "sequence_steps",
            f"{campaign_id}/{lead_id}/{step}")

    async def clear_step_wait(self, campaign_id: str, lead_id: str, step: int) -> None:
        await self._run(
            "UPDATE sequence_steps SET wait_reason = NULL, updated_at = now() "
            "WHERE campaign_id = ? AND lead_id = ? AND step = ? AND wait_reason IS NOT NULL",
            (campaign_id, lead_id, step), "sequence_steps", f"{campaign_id}/{lead_id}/{step}")

    async def capacity_waits(self, campaign_id: str) -> tuple[int, datetime | None]:
        row = await self._one(
            "SELECT count(*) AS n, MIN(CASE WHEN wait_reason = 'capacity' THEN due_at END) "
            "AS t FROM sequence_steps WHERE campaign_id = ? AND status = 'scheduled' "
            "AND wait_reason IS NOT NULL", (campaign_id,), "sequence_steps", campaign_id)
        return (int(row["n"]), as_time(row["t"])) if row else (0, None)

    async def planned_waits(self, sender: str, after: datetime) -> list[datetime]:
        rows = await self._all(
            "SELECT due_at FROM sequence_steps WHERE sender = ? AND wait_reason = 'capacity' "
            "AND due_at > ? AND status = 'scheduled' ORDER BY due_at",
            (sender, iso(after)), "sequence_steps", sender)
        return [t for t in (as_time(r["due_at"]) for r in rows) if t is not None]

    async def release_sender_holds(self, sender: str, due_at: datetime) -> list[str]:
        async with self._conn("sequence_steps", sender, write=True) as c:
            rows = await c.all(
                "UPDATE sequence_steps SET wait_reason = 'capacity', due_at = ?, "
                "updated_at = now() WHERE sender = ? AND wait_reason = 'paused' "
                "AND status = 'scheduled' RETURNING campaign_id", (iso(due_at), sender))
        return sorted({str(r["campaign_id"]) for r in rows})

    # -- read models ----------------------------------------------------------------

    async def counts(self, campaign_id: str) -> Counts:
        """Drafting figures counted here; every message's figure tallied from the report's
        rows (`outcomes.counts_of`), so status and report cannot disagree."""
        figures = await self._drafting_figures(campaign_id)
        facts, stage = await self._report_facts(campaign_id)
        return counts_of(facts, stage, **figures)

    async def status_figures(self, campaign_id: str) -> tuple[Counts, ReplyFigures]:
        """The counts and the reply figures, from one read of the report's facts and one
        grouped query over the replies (`outcomes.status_figures`)."""
        figures = await self._drafting_figures(campaign_id)
        facts, stage = await self._report_facts(campaign_id)
        replies = await self._all(REPLY_TALLY, (campaign_id,), "replies", campaign_id)
        return status_figures(facts, stage, replies, **figures)

    async def _drafting_figures(self, campaign_id: str) -> dict[str, int]:
        of = {"leads": ("leads", ""), "drafted": ("leads", "draft_status = 'drafted'"),
              "draft_failed": ("leads", "draft_status = 'failed'"),
              "approved": ("drafts", "approved = TRUE AND step = 1")}
        # Leads that replied (a person, not an auto-reply), however many times each did.
        replied = ("(SELECT count(DISTINCT lead_id) FROM replies WHERE campaign_id = ? "
                   "AND kind = 'reply' AND verified = TRUE) AS replied")
        row = await self._one("SELECT " + ", ".join([*(
            f"(SELECT count(*) FROM {table} WHERE campaign_id = ?{' AND ' + cond if cond else ''}) AS {name}"
            for name, (table, cond) in of.items()), replied]), [campaign_id] * (len(of) + 1))
        return {k: int(v) for k, v in (row or {}).items()}

    async def held_leads(self, campaign_id: str) -> list[str]:
        facts, _ = await self._report_facts(campaign_id)
        return held_lead_ids(facts)

    async def _report_facts(self, campaign_id: str) -> tuple[list[dict[str, Any]], str | None]:
        """The joined rows `outcomes.report_rows` reads, and the campaign's stage."""
        campaign = await self.get_campaign(campaign_id)
        rows = await self._all(
            f"SELECT {FACT_COLUMNS} {FACTS_FROM}WHERE l.campaign_id = ? "
            "ORDER BY l.created_at, l.lead_id, COALESCE(d.step, 1)", (campaign_id,))
        return rows, campaign.stage if campaign else None

    async def report(self, campaign_id: str) -> list[ReportRow]:
        """One row per lead and step with its outcome, in the contract's shape."""
        facts, stage = await self._report_facts(campaign_id)
        return report_rows(facts, stage)

    async def audit(self, campaign_id: str, lead_id: str | None = None) -> list[AuditEntry]:
        args = (campaign_id, REQUEST_AGENT, lead_id) if lead_id else (campaign_id, REQUEST_AGENT)
        by_lead = " AND lead_id = ?" if lead_id else ""
        rows = await self._all(f"SELECT * FROM audit_log WHERE campaign_id = ? AND agent <> ?"
                               f"{by_lead} ORDER BY created_at, envelope_id", args)
        return [audit_entry(r) for r in rows]

    # -- embeddings ----------------------------------------------------------------

    async def get_embeddings(self, model: str, hashes: list[str]) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {}
        for part in chunks(list(dict.fromkeys(hashes))):
            rows = await self._all(
                f"SELECT text_hash, dims, {self.VECTOR_READ} AS vector FROM embeddings "
                f"WHERE model = ? AND text_hash IN ({marks(part)})", (model, *part), "embeddings", model)
            found.update({r["text_hash"]: self._vector_value(r, f"{model}/{r['text_hash']}") for r in rows})
        return found

    async def put_embeddings(self, model: str, vectors: dict[str, list[float]]) -> None:
        """One transaction; a hash already stored keeps its vector."""
        if not vectors:
            return
        rows = [(model, h, len(v), self._vector_param(v, f"{model}/{h}")) for h, v in vectors.items()]
        async with self._conn("embeddings", f"{model}: {len(rows)} vector(s)", write=True) as c:
            await c.many("INSERT INTO embeddings(model, text_hash, dims, vector, created_at) "
                         f"VALUES (?, ?, ?, {self.VECTOR_WRITE}, now()) "
                         "ON CONFLICT (model, text_hash) DO NOTHING", rows)

    async def vector_search(self, model: str, query_vector: list[float], hashes: list[str],
                            k: int) -> list[tuple[str, float]] | None:
        """No vector search in SQL by default: the caller searches in memory."""
        return None

    # -- erasure: the primitives of `Erasure.forget`, in one transaction -------------------

    def _erasing(self, subject: str) -> AbstractAsyncContextManager[Scope]:
        @asynccontextmanager
        async def scope() -> AsyncIterator[Scope]:
            async with self._conn("suppressions", subject, write=True) as c:
                yield Scope(c)

        return scope()

    async def _erase_suppress(self, tx: Scope, address: str) -> int:
        return await tx.c.run(
            "INSERT INTO suppressions(email, reason, source, created_at) VALUES (?, ?, ?, now()) "
            "ON CONFLICT (email) DO UPDATE SET reason = excluded.reason, source = excluded.source "
            "WHERE suppressions.reason IS DISTINCT FROM excluded.reason "
            "OR suppressions.source IS DISTINCT FROM excluded.source",
            (address, FORGOTTEN_REASON, ERASURE_SOURCE))

    async def _erase_campaign_ids(self, tx: Scope) -> list[tuple[str, str | None]]:
        return [(r["campaign_id"], r["lead_id_salt"])
                for r in await tx.c.all("SELECT campaign_id, lead_id_salt FROM campaigns")]

    async def _erase_leads_by_address(self, tx: Scope, addresses: list[str]) -> Pairs:
        rows = await tx.c.all(f"SELECT campaign_id, lead_id FROM leads WHERE email IN ({marks(addresses)})",
                              addresses)
        return {(r["campaign_id"], r["lead_id"]) for r in rows}

    async def _erase_scope(self, tx: Scope, pairs: Pairs) -> None:
        tx.pairs, tx.args = await self._pairs(tx.c, sorted(pairs))

    async def _erase_find(self, tx: Scope, table: str) -> Pairs:
        rows = await tx.c.all(f"SELECT DISTINCT campaign_id, lead_id FROM {table} "
                              f"WHERE (campaign_id, lead_id) IN {tx.pairs}", tx.args)
        return {(r["campaign_id"], r["lead_id"]) for r in rows}

    async def _erase_event_campaigns(self, tx: Scope, addresses: list[str]) -> set[str]:
        rows = await tx.c.all("SELECT DISTINCT campaign_id FROM delivery_events WHERE campaign_id "
                              f"IS NOT NULL AND email IN ({marks(addresses)})", addresses)
        return {r["campaign_id"] for r in rows}

    async def _erase_lead_data(self, tx: Scope, pairs: Pairs) -> list[tuple[str, str, Any, Any]]:
        rows = await tx.c.all(
            "SELECT l.campaign_id, l.lead_id, l.data, c.brief FROM leads l LEFT JOIN campaigns c "
            f"ON c.campaign_id = l.campaign_id WHERE (l.campaign_id, l.lead_id) IN {tx.pairs}", tx.args)
        return [(r["campaign_id"], r["lead_id"], r["data"], r["brief"]) for r in rows]

    async def _erase_mentions(self, tx: Scope, campaigns: list[str], addresses: list[str]
                              ) -> list[Mention]:
        find = self.FIND.format
        envelope, lead_ids = self.TEXT.format("a.envelope"), self.TEXT.format("a.lead_ids")
        entries = await tx.c.all(
            f"SELECT a.envelope_id, a.campaign_id, a.envelope FROM audit_log a JOIN {tx.pairs} AS f "
            f"ON a.campaign_id = f.campaign_id WHERE a.lead_id IS NULL AND ({find(envelope, 'f.lead_id')}"
            + "".join(f" OR {find(f'lower({envelope})', '?')}" for _ in addresses) + ")",
            [*tx.args, *addresses])
        decisions = await tx.c.all(
            f"SELECT a.campaign_id, a.decision_id, a.lead_ids FROM approvals a JOIN {tx.pairs} AS f "
            f"ON a.campaign_id = f.campaign_id WHERE a.lead_ids IS NOT NULL AND "
            f"{find(lead_ids, 'f.lead_id')}", tx.args)
        found = {r["envelope_id"]: Mention(
            "audit_log", "envelope", {"envelope_id": r["envelope_id"]}, r["campaign_id"],
            parse_json(r["envelope"], "audit_log", r["envelope_id"])) for r in entries}
        found |= {f"{r['campaign_id']}/{r['decision_id']}": Mention(
            "approvals", "lead_ids", {"campaign_id": r["campaign_id"], "decision_id": r["decision_id"]},
            r["campaign_id"], parse_json(r["lead_ids"], "approvals", r["decision_id"])) for r in decisions}
        return [m for m in found.values() if m.campaign_id in campaigns]

    async def _erase_patch(self, tx: Scope, mention: Mention, value: Any) -> None:
        where = " AND ".join(f"{k} = ?" for k in mention.key)
        await tx.c.run(f"UPDATE {mention.table} SET {mention.column} = ? WHERE {where}",
                       (json.dumps(value, ensure_ascii=False), *mention.key.values()))

    async def _erase_delete(self, tx: Scope, table: str, found: Pairs) -> list[str | None]:
        if not found:
            return []
        rows = await tx.c.all(f"DELETE FROM {table} WHERE (campaign_id, lead_id) IN {tx.pairs} "
                              "RETURNING campaign_id", tx.args)
        return [r["campaign_id"] for r in rows]

    async def _erase_unlink(self, tx: Scope, table: str, found: Pairs) -> list[str | None]:
        if not found:
            return []
        rows = await tx.c.all(f"UPDATE {table} SET lead_id = NULL WHERE (campaign_id, lead_id) "
                              f"IN {tx.pairs} RETURNING campaign_id", tx.args)
        return [r["campaign_id"] for r in rows]

    async def _erase_delete_by_address(self, tx: Scope, table: str, addresses: list[str]
                                       ) -> list[str | None]:
        rows = await tx.c.all(f"DELETE FROM {table} WHERE email IN ({marks(addresses)}) "
                              "RETURNING campaign_id", addresses)
        return [r["campaign_id"] for r in rows]

    async def _erase_embeddings(self, tx: Scope, hashes: list[str]) -> int:
        return sum([await tx.c.run(f"DELETE FROM embeddings WHERE text_hash IN ({marks(part)})", part)
                    for part in chunks(hashes)])

    async def _erase_record(self, tx: Scope, envelope: Envelope) -> None:
        await tx.c.run(AUDIT_INSERT, audit_args(envelope, None))
