"""The Supabase REST store: the same schema, reached through PostgREST with the `supabase` client.

Chosen when only `SUPABASE_URL` and `SUPABASE_KEY` are set (use the service key).
Upserts are PostgREST upserts on the natural keys; a write of several steps is a
sequence of idempotent requests; reads page until an empty page; it never migrates.
Details: docs/architecture.md ("The store").
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import datetime
from typing import Any, ClassVar

import httpx
from postgrest.exceptions import APIError
from postgrest.types import CountMethod, ReturnMethod
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from campaign_core.budget import reservation_of, spend_of
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
    ACTIVE_STAGES,
    APPROVALS,
    MACHINE_INTENTS,
    REVIEW_STATUSES,
    SCHEDULE_TEMPLATE_PREFIX,
    SCHEMA_VERSION,
    TIME_COLUMNS,
    AnswerConflict,
    StoreError,
    StoreUnavailable,
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
    normalise_address,
    now_utc,
    original_edit_id,
    overlap_forms,
    parse_envelope,
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
    STEP_STATUSES,
    lead_fields,
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

#: The columns of a suppression-list entry.
SUPPRESSION_COLUMNS = "email,reason,source,created_at"

HOW_TO_MIGRATE = (
    "apply supabase/migrations/ with the Supabase CLI (`supabase db push`), or run "
    "`campaign db migrate` with CAMPAIGN_STORE_URL set to the project's Postgres connection string"
)

#: PostgREST's own "cannot read the request body" code; SQLSTATE classes 22 and 23.
_REJECTED_CODES = ("PGRST102",)
_REJECTED_CLASSES = ("22", "23")

Query = Any  # a postgrest request builder; its classes differ per operation
MINIMAL = ReturnMethod.minimal  # writes return no rows: less traffic, nothing to parse


def _now() -> str:
    return now_utc().isoformat(timespec="microseconds")


class SupabaseStore(Erasure[Pairs]):
    """`Store` over Supabase's REST API (PostgREST)."""

    def __init__(
        self, url: str, key: str, *, transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0, batch_size: int = 500, page_size: int = 1000,
    ) -> None:
        """`transport` replaces the network (tests); `batch_size` rows go in one upsert;
        `page_size` rows are asked for per page (Supabase caps pages at `max_rows`)."""
        self.url = url.rstrip("/")
        self._key = key
        self.transport = transport
        self.timeout = timeout
        self.batch_size = batch_size
        self.page_size = page_size
        self._client: AsyncClient | None = None
        self._http: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = False

    def __repr__(self) -> str:
        return f"SupabaseStore({self.url!r})"

    @property
    def _where(self) -> str:
        return self.url

    # -- plumbing ----------------------------------------------------------------

    async def _db(self) -> AsyncClient:
        """The client for the running loop (HTTP connections belong to one loop)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._http = httpx.AsyncClient(transport=self.transport, timeout=self.timeout)
            self._client = await acreate_client(self.url, self._key, options=AsyncClientOptions(
                httpx_client=self._http, postgrest_client_retry=False,
                auto_refresh_token=False, persist_session=False,
            ))
            self._loop = loop
        return self._client

    async def _ready_db(self) -> AsyncClient:
        db = await self._db()
        if not self._ready:
            await self.ensure_schema()
        return db

    async def close(self) -> None:
        http, self._http, self._client = self._http, None, None
        if http is not None:
            await http.aclose()

    async def _run(
        self, build: Callable[[AsyncClient], Query], table: str, key: str | None = None
    ) -> Any:
        """Execute one request; rows PostgREST or Postgres reject -> StoreError(table, key)."""
        db = await self._ready_db()
        return await self._execute(build(db), table, key)

    async def _execute(self, query: Query, table: str, key: str | None) -> Any:
        try:
            return await query.execute()
        except httpx.TransportError as exc:
            raise StoreUnavailable(f"store {self.url} is not reachable: "
                                   f"{exc.__class__.__name__}: {exc}") from exc
        except APIError as exc:
            code = str(exc.code or "")
            if code in _REJECTED_CODES or (len(code) == 5 and code[:2] in _REJECTED_CLASSES):
                detail = f" ({exc.details})" if exc.details else ""
                raise StoreError(f"rejected by the store: {code} {exc.message}{detail}",
                                 table=table, key=key) from exc
            raise

    async def _pages(
        self, table: str, columns: str, where: Callable[[Query], Query], order: list[str]
    ) -> list[dict[str, Any]]:
        """Every row matching `where`, page by page, in a total `order`."""
        db = await self._ready_db()
        rows: list[dict[str, Any]] = []
        while True:
            q = where(db.table(table).select(columns))
            for col in order:
                q = q.order(col)
            page = (await self._execute(q.range(len(rows), len(rows) + self.page_size - 1),
                                        table, None)).data
            if not page:
                return rows
            rows.extend(page)

    async def _count(self, table: str, where: Callable[[Query], Query]) -> int:
        res = await self._run(
            lambda db: where(db.table(table).select("*", count=CountMethod.exact, head=True)), table)
        return int(res.count or 0)

    # -- schema -----------------------------------------------------------------

    async def schema_version(self) -> int:
        db = await self._db()
        try:
            res = await self._execute(
                db.table("schema_version").select("version").order("version", desc=True).limit(1),
                "schema_version", None)
        except APIError as exc:
            if exc.code in {"42P01", "PGRST205"}:  # no such table (Postgres, PostgREST >= 12)
                return 0
            raise
        return int(res.data[0]["version"]) if res.data else 0

    async def ensure_schema(self) -> int:
        """Refuse a schema that is not the code's: REST cannot run migrations.

        Version 0 has a second possible cause worth naming: with the anon key,
        row-level security hides the `schema_version` rows, so the schema looks absent.
        """
        version = await self.schema_version()
        if version == 0:
            raise StoreError(
                f"store {self.url} shows no campaign schema: {HOW_TO_MIGRATE}. If the migrations "
                "are applied, SUPABASE_KEY must be the service key (row-level security hides "
                "every row from the anon key)")
        check_version(version, self.url, how_to_migrate=HOW_TO_MIGRATE)
        self._ready = True
        return version

    async def migrate(self, target: int | None = None) -> int:
        """Cannot apply DDL over REST: succeed if already current, else say how to migrate."""
        version = await self.schema_version()
        if version >= (SCHEMA_VERSION if target is None else target):
            return check_version(version, self.url, how_to_migrate=HOW_TO_MIGRATE)
        raise StoreError(f"store {self.url} is at schema version {version}; the REST API cannot "
                         f"migrate it: {HOW_TO_MIGRATE}")

    # -- campaigns and leads ----------------------------------------------------

    async def upsert_campaign(
        self, *, campaign_id: str, name: str, brief: str, channel: str,
        kb_dir: str | None, workflow_id: str, lead_id_salt: str | None = None,
        budget_usd: float | None = None,
    ) -> None:
        row = {"campaign_id": campaign_id, "name": name, "brief": brief, "channel": channel,
               "kb_dir": kb_dir, "workflow_id": workflow_id, "lead_id_salt": lead_id_salt,
               "budget_usd": budget_usd}
        await self._run(lambda db: db.table("campaigns").upsert(
            row, on_conflict="campaign_id", ignore_duplicates=True, returning=MINIMAL),
            "campaigns", campaign_id)

    async def get_campaign(self, campaign_id: str) -> CampaignRow | None:
        res = await self._run(lambda db: db.table("campaigns").select("*")
                              .eq("campaign_id", campaign_id).limit(1), "campaigns", campaign_id)
        return campaign_row(res.data[0]) if res.data else None

    async def list_campaigns(self, limit: int = 200) -> list[CampaignRow]:
        res = await self._run(lambda db: db.table("campaigns").select("*")
                              .order("created_at", desc=True).order("campaign_id").limit(limit),
                              "campaigns")
        return [c for c in map(campaign_row, res.data) if c is not None]

    async def set_stage(self, campaign_id: str, stage: str) -> None:
        await self._run(lambda db: db.table("campaigns").update(
            {"stage": stage, "updated_at": _now()}, returning=MINIMAL)
            .eq("campaign_id", campaign_id), "campaigns", campaign_id)

    # -- LLM spend caps (schema 11) -------------------------------------------------------

    async def set_budget(self, campaign_id: str, budget_usd: float | None) -> bool:
        res = await self._run(lambda db: db.table("campaigns").update(
            {"budget_usd": budget_usd, "updated_at": _now()},
            returning=ReturnMethod.representation).eq("campaign_id", campaign_id),
            "campaigns", campaign_id)
        return bool(res.data)

    async def reserve_llm_call(self, campaign_id: str, call_key: str,
                               amount_nanousd: int) -> Reservation:
        """One RPC (`reserve_llm_call`, migration 11): the check and the hold in one
        transaction under the campaign row's lock, as the SQL stores do it."""
        db = await self._ready_db()
        res = await self._execute(db.rpc("reserve_llm_call", {
            "p_campaign_id": campaign_id, "p_call_key": call_key, "p_amount": amount_nanousd}),
            "llm_spend", campaign_id)
        row = res.data[0]
        return reservation_of(bool(row["granted"]), row["budget"], int(row["spent"]),
                              int(row["held"]))

    async def settle_llm_call(self, campaign_id: str, call_key: str,
                              cost_nanousd: int | None) -> None:
        await self._run(lambda db: db.table("llm_spend").upsert(
            {"campaign_id": campaign_id, "call_key": call_key, "status": "spent",
             "cost_nanousd": cost_nanousd, "updated_at": _now()},
            on_conflict="campaign_id,call_key", returning=MINIMAL), "llm_spend", campaign_id)

    async def release_llm_call(self, campaign_id: str, call_key: str) -> None:
        await self._delete("llm_spend", campaign_id, _match(
            eq={"campaign_id": campaign_id, "call_key": call_key, "status": "reserved"}))

    async def spend(self, campaign_id: str) -> Spend:
        """The budget from the campaign's row, the sums from `llm_spend_totals` (an RPC:
        PostgREST does not aggregate)."""
        db = await self._ready_db()
        res = await self._execute(db.rpc("llm_spend_totals", {"p_campaign_id": campaign_id}),
                                  "llm_spend", campaign_id)
        campaign = await self._run(lambda db: db.table("campaigns").select("budget_usd")
                                   .eq("campaign_id", campaign_id).limit(1), "campaigns",
                                   campaign_id)
        totals = res.data[0] if res.data else {"spent": 0, "held": 0}
        budget = campaign.data[0]["budget_usd"] if campaign.data else None
        return spend_of(budget, int(totals["spent"]), int(totals["held"]))

    async def upsert_leads(self, campaign_id: str, leads: list[Lead]) -> int:
        """Upsert in batches; a batch is one statement, so duplicates in it are merged first."""
        unique = list({lead.lead_id: lead for lead in leads}.values())
        now = _now()
        for i in range(0, len(unique), self.batch_size):
            batch = [{"campaign_id": campaign_id, "lead_id": lead.lead_id, "email": lead.email,
                      "data": lead.model_dump(mode="json"), "updated_at": now}
                     for lead in unique[i:i + self.batch_size]]
            await self._upsert("leads", batch, "campaign_id,lead_id", campaign_id)
        return len(leads)

    async def _upsert(self, table: str, rows: list[dict[str, Any]], on_conflict: str, key: str) -> None:
        await self._run(lambda db: db.table(table).upsert(
            rows, on_conflict=on_conflict, returning=MINIMAL), table, key)

    async def get_lead(self, campaign_id: str, lead_id: str) -> Lead | None:
        key = f"{campaign_id}/{lead_id}"
        res = await self._run(lambda db: db.table("leads").select("data")
                              .eq("campaign_id", campaign_id).eq("lead_id", lead_id).limit(1),
                              "leads", key)
        return parse_lead(res.data[0]["data"], key) if res.data else None

    async def list_lead_ids(self, campaign_id: str, after: str | None, limit: int) -> list[str]:
        def build(db: AsyncClient) -> Query:
            q = db.table("leads").select("lead_id").eq("campaign_id", campaign_id)
            if after:
                q = q.gt("lead_id", after)
            return q.order("lead_id").limit(limit)

        res = await self._run(build, "leads", campaign_id)
        return [r["lead_id"] for r in res.data]

    async def set_lead_status(
        self, campaign_id: str, lead_id: str, status: str, error: str | None = None
    ) -> None:
        await self._run(lambda db: db.table("leads").update(
            {"draft_status": status, "error": error, "updated_at": _now()}, returning=MINIMAL)
            .eq("campaign_id", campaign_id).eq("lead_id", lead_id),
            "leads", f"{campaign_id}/{lead_id}")

    # -- envelopes, retrievals, drafts -------------------------------------------

    async def save_envelope(self, envelope: Envelope, lead_id: str | None = None) -> str:
        eid = envelope.envelope_id
        m = envelope.metadata
        row = {"envelope_id": eid, "campaign_id": m.campaign_id, "lead_id": lead_id,
               "agent": m.agent, "envelope": envelope.model_dump(mode="json"),
               **{k: iso(v) if k in TIME_COLUMNS else v for k, v in trace_fields(envelope).items()}}
        await self._run(lambda db: db.table("audit_log").upsert(
            row, on_conflict="envelope_id", ignore_duplicates=True, returning=MINIMAL),
            "audit_log", eid)
        return eid

    async def get_envelope(self, envelope_id: str) -> Envelope | None:
        res = await self._run(lambda db: db.table("audit_log").select("envelope")
                              .eq("envelope_id", envelope_id).limit(1), "audit_log", envelope_id)
        return parse_envelope(res.data[0]["envelope"], envelope_id) if res.data else None

    async def save_retrieval(
        self, campaign_id: str, lead_id: str, passages: list[dict[str, Any]], envelope_id: str
    ) -> None:
        row = {"campaign_id": campaign_id, "lead_id": lead_id, "passages": passages,
               "envelope_id": envelope_id}
        await self._run(lambda db: db.table("retrievals").upsert(
            row, on_conflict="campaign_id,lead_id", returning=MINIMAL),
            "retrievals", f"{campaign_id}/{lead_id}")

    async def get_retrieval(self, campaign_id: str, lead_id: str) -> list[dict[str, Any]]:
        res = await self._run(lambda db: db.table("retrievals").select("passages")
                              .eq("campaign_id", campaign_id).eq("lead_id", lead_id).limit(1),
                              "retrievals", f"{campaign_id}/{lead_id}")
        return list(res.data[0]["passages"]) if res.data else []

    async def upsert_draft(
        self, *, campaign_id: str, lead_id: str, step: int, subject: str, body: str,
        citations: list[str], provenance: dict[str, Any], envelope_id: str,
        failed_reason: str | None = None,
    ) -> None:
        row = {"campaign_id": campaign_id, "lead_id": lead_id, "step": step, "subject": subject,
               "body": body, "citations": citations, "provenance": provenance,
               "envelope_id": envelope_id, "failed_reason": failed_reason}
        await self._run(lambda db: db.table("drafts").upsert(
            row, on_conflict="campaign_id,lead_id,step", returning=MINIMAL),
            "drafts", f"{campaign_id}/{lead_id}/{step}")

    async def _emails(self, campaign_id: str, lead_ids: list[str] | None = None) -> dict[str, Any]:
        """lead_id -> (created_at, email) for the campaign (or the given leads): for joins."""
        def where(q: Query) -> Query:
            q = q.eq("campaign_id", campaign_id)
            return q.in_("lead_id", lead_ids) if lead_ids is not None else q

        rows = await self._pages("leads", "lead_id,email,created_at", where, ["lead_id"])
        return {r["lead_id"]: r for r in rows}

    async def list_drafts(self, campaign_id: str, *, offset: int = 0,
                          limit: int | None = None) -> list[DraftRow]:
        """Joined and ordered here (PostgREST has no join on a plain key): all, then the page."""
        rows = await self._all_drafts(campaign_id)
        return rows[offset:] if limit is None else rows[offset:offset + limit]

    async def _all_drafts(self, campaign_id: str) -> list[DraftRow]:
        drafts, leads = await asyncio.gather(
            self._pages("drafts", "*", lambda q: q.eq("campaign_id", campaign_id),
                        ["lead_id", "step"]),
            self._emails(campaign_id))
        joined = [{**d, "email": leads[d["lead_id"]]["email"]} for d in drafts if d["lead_id"] in leads]
        joined.sort(key=lambda d: (iso(leads[d["lead_id"]]["created_at"]), d["lead_id"], d["step"]))
        return [draft_row(d) for d in joined]

    async def get_draft(self, campaign_id: str, lead_id: str, step: int = 1) -> DraftRow | None:
        key = f"{campaign_id}/{lead_id}/{step}"
        res = await self._run(lambda db: db.table("drafts").select("*").eq("campaign_id", campaign_id)
                              .eq("lead_id", lead_id).eq("step", step).limit(1), "drafts", key)
        if not res.data:
            return None
        leads = await self._emails(campaign_id, [lead_id])
        if lead_id not in leads:
            return None
        return draft_row({**res.data[0], "email": leads[lead_id]["email"]})

    async def list_lead_drafts(self, campaign_id: str, lead_id: str) -> list[DraftRow]:
        res = await self._run(lambda db: db.table("drafts").select("*").eq("campaign_id", campaign_id)
                              .eq("lead_id", lead_id).order("step"), "drafts",
                              f"{campaign_id}/{lead_id}")
        leads = await self._emails(campaign_id, [lead_id])
        if lead_id not in leads:
            return []
        return [draft_row({**r, "email": leads[lead_id]["email"]}) for r in res.data]

    # -- reviewers' edits and exclusions (schema 6) ----------------------------------

    async def add_draft_edit(
        self, *, edit_id: str, campaign_id: str, lead_id: str, step: int, subject: str | None,
        body: str | None, base_version: int | None, by: str,
    ) -> None:
        row = {"edit_id": edit_id, "campaign_id": campaign_id, "lead_id": lead_id, "step": step,
               "base_version": base_version, "subject": subject, "body": body,
               "edited_by": by, "status": "pending"}
        await self._run(lambda db: db.table("draft_versions").upsert(
            row, on_conflict="edit_id", ignore_duplicates=True, returning=MINIMAL),
            "draft_versions", edit_id)

    async def get_draft_edit(self, edit_id: str) -> DraftEditRow | None:
        res = await self._run(lambda db: db.table("draft_versions").select("*")
                              .eq("edit_id", edit_id).limit(1), "draft_versions", edit_id)
        return draft_edit_row(res.data[0]) if res.data else None

    async def apply_draft_edit(
        self, edit_id: str, *, subject: str, body: str, expected_version: int
    ) -> DraftRow | None:
        """Idempotent requests: keep version 1, bump the draft only if it is still at
        `expected_version` (a conditional update), then mark the edit applied. A retry
        after the bump finds the draft past `expected_version` with this edit's text and
        finishes the marking."""
        edit = await self.get_draft_edit(edit_id)
        if edit is None:
            raise StoreError("no such edit", table="draft_versions", key=edit_id)
        cid, lid, step = edit.campaign_id, edit.lead_id, edit.step
        current = await self.get_draft(cid, lid, step)
        if edit.status == "applied" or current is None:
            return current
        if expected_version == 1 and current.version == 1:
            original = {"edit_id": original_edit_id(cid, lid, step), "campaign_id": cid,
                        "lead_id": lid, "step": step, "version": 1, "subject": current.subject,
                        "body": current.body, "edited_by": current.edited_by,
                        "status": "original", "created_at": current.created_at}
            await self._run(lambda db: db.table("draft_versions").upsert(
                original, on_conflict="edit_id", ignore_duplicates=True, returning=MINIMAL),
                "draft_versions", original_edit_id(cid, lid, step))
        done_before = (current.version == expected_version + 1 and current.subject == subject
                       and current.body == body and current.edited_by == edit.edited_by)
        if not done_before:
            res = await self._run(lambda db: db.table("drafts").update(
                {"subject": subject, "body": body, "version": expected_version + 1,
                 "edited_by": edit.edited_by, "failed_reason": None},
                returning=ReturnMethod.representation)
                .eq("campaign_id", cid).eq("lead_id", lid).eq("step", step)
                .eq("version", expected_version), "drafts", f"{cid}/{lid}/{step}")
            if not res.data:
                return None
        await self._run(lambda db: db.table("draft_versions").update(
            {"status": "applied", "version": expected_version + 1, "subject": subject,
             "body": body, "updated_at": _now()}, returning=MINIMAL).eq("edit_id", edit_id),
            "draft_versions", edit_id)
        return await self.get_draft(cid, lid, step)

    async def refuse_draft_edit(self, edit_id: str, reason: str) -> None:
        await self._run(lambda db: db.table("draft_versions").update(
            {"status": "refused", "reason": reason, "updated_at": _now()}, returning=MINIMAL)
            .eq("edit_id", edit_id).eq("status", "pending"), "draft_versions", edit_id)

    async def get_draft_version(
        self, campaign_id: str, lead_id: str, step: int, version: int
    ) -> DraftRow | None:
        draft = await self.get_draft(campaign_id, lead_id, step)
        if draft is None or draft.version == version:
            return draft
        res = await self._run(lambda db: db.table("draft_versions").select("*")
                              .eq("campaign_id", campaign_id).eq("lead_id", lead_id)
                              .eq("step", step).eq("version", version)
                              .in_("status", ["applied", "original"]).limit(1),
                              "draft_versions", f"{campaign_id}/{lead_id}/{step}")
        return as_version(draft, draft_edit_row(res.data[0])) if res.data else None

    async def list_draft_versions(
        self, campaign_id: str, lead_id: str, step: int | None = None
    ) -> list[DraftEditRow]:
        def where(q: Query) -> Query:
            q = q.eq("campaign_id", campaign_id).eq("lead_id", lead_id)
            return q.eq("step", step) if step is not None else q

        rows = await self._pages("draft_versions", "*", where, ["step", "created_at", "edit_id"])
        return [draft_edit_row(r) for r in rows]

    async def set_draft_excluded(
        self, campaign_id: str, lead_id: str, step: int | None, excluded: bool
    ) -> list[int]:
        def where(q: Query) -> Query:
            q = q.eq("campaign_id", campaign_id).eq("lead_id", lead_id)
            return q.eq("step", step) if step is not None else q

        res = await self._run(lambda db: where(db.table("drafts").update(
            {"excluded": excluded}, returning=ReturnMethod.representation)),
            "drafts", f"{campaign_id}/{lead_id}")
        return sorted(int(r["step"]) for r in res.data)

    # -- approvals and delivery ---------------------------------------------------

    async def record_decision(
        self, *, campaign_id: str, decision_id: str, decision: str, lead_ids: list[str] | None,
        by: str, note: str | None, send_passing: bool = False,
    ) -> int:
        """Record who decided what; on approval mark the drafts approved. Returns how many
        leads are approved (the rules: `Store.record_decision`).

        Idempotent requests instead of one transaction: a retry after a partial failure
        repeats them and ends in the same state.
        """
        key = f"{campaign_id}/{decision_id}"
        row = {"campaign_id": campaign_id, "decision_id": decision_id, "decision": decision,
               "lead_ids": lead_ids, "decided_by": by, "note": note}
        await self._run(lambda db: db.table("approvals").upsert(
            row, on_conflict="campaign_id,decision_id", ignore_duplicates=True,
            returning=MINIMAL), "approvals", key)
        if decision not in APPROVALS:
            return 0
        await self._approve(campaign_id, lead_ids, send_passing, final=decision == "approve")
        return await self._count(  # leads approved: a sequence's follow-ups count once
            "drafts", lambda q: q.eq("campaign_id", campaign_id).is_("approved", True).eq("step", 1))

    async def _approve(self, campaign_id: str, lead_ids: list[str] | None,
                       send_passing: bool, *, final: bool) -> None:
        """Approve the drafts not excluded or failed (of `lead_ids` only, when given),
        leaving out held leads unless `send_passing`, recording the version approved (for
        the `final` decision, that of the drafts approved earlier in the review too): one
        update per (version, step) group present (REST cannot set a column to another's
        value), each idempotent."""
        rows = await self._pages(
            "drafts", "lead_id,step,version,approved,excluded,failed_reason",
            lambda q: q.eq("campaign_id", campaign_id), ["lead_id", "step"])
        wanted = None if lead_ids is None else set(lead_ids)
        held = set() if send_passing and wanted is not None else {
            r["lead_id"] for r in rows if r.get("failed_reason") and not r.get("excluded")}
        todo: dict[int, list[tuple[str, int]]] = {}
        for r in rows:
            if not (final and r.get("approved")):
                if (wanted is not None and r["lead_id"] not in wanted) or r["lead_id"] in held:
                    continue
                if r.get("excluded") or r.get("failed_reason"):
                    continue
            todo.setdefault(int(r["version"]), []).append((r["lead_id"], int(r["step"])))
        for version, keys in sorted(todo.items()):
            for step in sorted({k[1] for k in keys}):
                ids = sorted({k[0] for k in keys if k[1] == step})
                for i in range(0, len(ids), 100):  # keep the URL short
                    def build(db: AsyncClient, version: int = version, step: int = step,
                              part: list[str] = ids[i:i + 100]) -> Query:
                        return db.table("drafts").update(
                            {"approved": True, "approved_version": version}, returning=MINIMAL
                        ).eq("campaign_id", campaign_id).eq("version", version).eq(
                            "step", step).in_("lead_id", part)

                    await self._run(build, "drafts", campaign_id)

    async def list_approved_lead_ids(
        self, campaign_id: str, after: str | None, limit: int
    ) -> list[str]:
        """Leads whose step 1 is approved: a sequence starts there, or not at all."""
        def build(db: AsyncClient) -> Query:
            q = db.table("drafts").select("lead_id").eq("campaign_id", campaign_id).is_(
                "approved", True).eq("step", 1)
            if after:
                q = q.gt("lead_id", after)
            return q.order("lead_id").limit(limit)

        rows = (await self._run(build, "drafts", campaign_id)).data
        return [str(r["lead_id"]) for r in rows]

    async def add_suppressions(self, emails: list[str], reason: str, *,
                               source: SuppressionSource) -> int:
        """New addresses only are returned by an ignore-duplicates upsert: that is the count."""
        rows = [{"email": e, "reason": reason, "source": source}
                for e in dict.fromkeys(normalise_address(e) for e in emails)]
        if not rows:
            return 0
        res = await self._run(lambda db: db.table("suppressions").upsert(
            rows, on_conflict="email", ignore_duplicates=True, returning=ReturnMethod.representation),
            "suppressions", f"{len(rows)} address(es)")
        return len(res.data)

    async def is_suppressed(self, email: str) -> bool:
        res = await self._run(lambda db: db.table("suppressions").select("email")
                              .in_("email", address_forms(email)).limit(1), "suppressions")
        return bool(res.data)

    async def list_suppressions(self) -> list[SuppressionRow]:
        rows = await self._pages("suppressions", SUPPRESSION_COLUMNS, lambda q: q, ["email"])
        found = [suppression_row(r) for r in rows]
        found.sort(key=lambda r: r.email)
        return sorted(found, key=lambda r: r.created_at, reverse=True)

    async def get_suppression(self, email: str) -> SuppressionRow | None:
        return first_suppression(await self._suppressions_of(email))

    async def _suppressions_of(self, email: str) -> list[SuppressionRow]:
        res = await self._run(lambda db: db.table("suppressions").select(SUPPRESSION_COLUMNS)
                              .in_("email", address_forms(email)), "suppressions")
        return [suppression_row(r) for r in res.data]

    async def lift_suppression(self, email: str) -> list[SuppressionRow]:
        """No transaction over REST: the delete itself spares an erasure's entry, so an
        erasure that lands between the check and the delete keeps its entry."""
        if any(r.source == ERASURE_SOURCE for r in await self._suppressions_of(email)):
            return []
        rows = await self._delete("suppressions", "lift", lambda q: q.in_(
            "email", address_forms(email)).neq("source", ERASURE_SOURCE))
        return [suppression_row({k: r[k] for k in SUPPRESSION_COLUMNS.split(",")}) for r in rows]

    async def get_delivery(self, message_key: str) -> DeliveryRow | None:
        res = await self._run(lambda db: db.table("deliveries").select("*")
                              .eq("message_key", message_key).limit(1), "deliveries", message_key)
        return delivery_row(res.data[0]) if res.data else None

    async def upsert_delivery(
        self, *, message_key: str, campaign_id: str, lead_id: str, step: int, channel: str,
        status: str, message_id: str | None = None, error: str | None = None,
    ) -> None:
        row: dict[str, Any] = {
            "message_key": message_key, "campaign_id": campaign_id, "lead_id": lead_id,
            "step": step, "channel": channel, "status": status, "error": error,
            "updated_at": _now(),
        }
        if message_id is not None:  # not sent at all: an earlier message_id is kept
            row["message_id"] = message_id
        await self._run(lambda db: db.table("deliveries").upsert(
            row, on_conflict="message_key", returning=MINIMAL), "deliveries", message_key)

    async def find_delivery_by_message_id(self, message_id: str) -> DeliveryRow | None:
        mid = bare_message_id(message_id)
        res = await self._run(lambda db: db.table("deliveries").select("*")
                              .in_("message_id", [mid, f"<{mid}>"]).limit(1), "deliveries", mid)
        return delivery_row(res.data[0]) if res.data else None

    async def record_delivery_event(
        self, *, event_id: str, kind: str, email: str, source: str,
        campaign_id: str | None = None, lead_id: str | None = None,
        message_key: str | None = None, detail: str | None = None,
    ) -> bool:
        """An ignore-duplicates upsert returns only new rows: that says whether it was new."""
        row = {"event_id": event_id, "kind": kind, "email": normalise_address(email),
               "campaign_id": campaign_id, "lead_id": lead_id, "message_key": message_key,
               "source": source, "detail": detail}
        res = await self._run(lambda db: db.table("delivery_events").upsert(
            row, on_conflict="event_id", ignore_duplicates=True,
            returning=ReturnMethod.representation), "delivery_events", event_id)
        return bool(res.data)

    async def list_delivery_events(self, campaign_id: str, lead_id: str | None = None
                                   ) -> list[DeliveryEventRow]:
        def query(db: Any) -> Any:
            q = db.table("delivery_events").select("*").eq("campaign_id", campaign_id)
            if lead_id is not None:
                q = q.eq("lead_id", lead_id)
            return q.order("created_at").order("event_id")

        res = await self._run(query, "delivery_events")
        return [event_row(r) for r in res.data]

    async def get_or_create_secret(self, name: str, candidate: str) -> str:
        await self._run(lambda db: db.table("signing_keys").upsert(
            {"name": name, "secret": candidate}, on_conflict="name", ignore_duplicates=True,
            returning=MINIMAL), "signing_keys", name)
        res = await self._run(lambda db: db.table("signing_keys").select("secret")
                              .eq("name", name).limit(1), "signing_keys", name)
        return str(res.data[0]["secret"])

    # -- webhook ids (schema 5) ------------------------------------------------------

    async def claim_webhook_id(self, webhook_id: str) -> bool:
        """An ignore-duplicates upsert returns only new rows: that says whether it was new."""
        res = await self._run(lambda db: db.table("webhook_ids").upsert(
            {"webhook_id": webhook_id}, on_conflict="webhook_id", ignore_duplicates=True,
            returning=ReturnMethod.representation), "webhook_ids", webhook_id)
        return bool(res.data)

    async def release_webhook_id(self, webhook_id: str) -> None:
        await self._run(lambda db: db.table("webhook_ids").delete().eq("webhook_id", webhook_id),
                        "webhook_ids", webhook_id)

    # -- reviewers and sign-in codes (schema 7) ----------------------------------------

    _REVIEWER = "name,created_at,removed_at,session_epoch"
    #: Attempts of a compare-and-set on a reviewer's epoch before giving up (each loses
    #: only to another sign-out or removal of the same reviewer at the same moment).
    _EPOCH_TRIES = 5

    async def add_reviewer(self, name: str, token_hash: str) -> bool:
        """An ignore-duplicates insert says whether the name was free; a removed reviewer's
        row is then taken over (only while it is still removed)."""
        res = await self._run(lambda db: db.table("reviewers").upsert(
            {"name": name, "token_hash": token_hash, "created_at": _now()}, on_conflict="name",
            ignore_duplicates=True, returning=ReturnMethod.representation), "reviewers", name)
        if res.data:
            return True
        found = await self._run(lambda db: db.table("reviewers").select(self._REVIEWER)
                                .eq("name", name).limit(1), "reviewers", name)
        if not found.data or found.data[0]["removed_at"] is None:
            return False
        res = await self._run(lambda db: db.table("reviewers").update(
            {"token_hash": token_hash, "created_at": _now(), "removed_at": None},
            returning=ReturnMethod.representation).eq("name", name)
            .eq("removed_at", found.data[0]["removed_at"]), "reviewers", name)
        return bool(res.data)

    async def _active_reviewer(self, column: str, value: str) -> ReviewerRow | None:
        res = await self._run(lambda db: db.table("reviewers").select(self._REVIEWER)
                              .eq(column, value).is_("removed_at", "null").limit(1), "reviewers")
        return reviewer_row(res.data[0]) if res.data else None

    async def get_reviewer(self, name: str) -> ReviewerRow | None:
        return await self._active_reviewer("name", name)

    async def reviewer_by_token(self, token_hash: str) -> ReviewerRow | None:
        return await self._active_reviewer("token_hash", token_hash)

    async def list_reviewers(self) -> list[ReviewerRow]:
        rows = await self._pages("reviewers", self._REVIEWER, _match(null=("removed_at",)),
                                 ["name"])
        return [r for r in map(reviewer_row, rows) if r is not None]

    async def remove_reviewer(self, name: str) -> bool:
        await self._delete("sign_in_codes", name, _match(eq={"reviewer": name}))
        return await self._move_epoch(name, {"removed_at": _now()})

    async def bump_session_epoch(self, name: str) -> bool:
        return await self._move_epoch(name, {})

    async def _move_epoch(self, name: str, also: dict[str, Any]) -> bool:
        """Bump the active reviewer's epoch (and set `also`): PostgREST has no
        `SET x = x + 1`, so read it and update only while it is still the value read
        (a compare-and-set, retried if another bump came between)."""
        for _ in range(self._EPOCH_TRIES):
            found = await self._active_reviewer("name", name)
            if found is None:
                return False
            if await self._set_epoch(name, found.session_epoch, also):
                return True
        raise StoreError("the session epoch kept changing; try again", table="reviewers",
                         key=name)

    async def _set_epoch(self, name: str, epoch: int, also: dict[str, Any]) -> bool:
        """One compare-and-set: `epoch + 1` if the active reviewer's epoch is still `epoch`."""
        res = await self._run(lambda db: db.table("reviewers").update(
            {**also, "session_epoch": epoch + 1}, returning=ReturnMethod.representation)
            .eq("name", name).is_("removed_at", "null").eq("session_epoch", epoch),
            "reviewers", name)
        return bool(res.data)

    async def add_sign_in_code(self, code_hash: str, reviewer: str, expires_at: datetime) -> None:
        await self._run(lambda db: db.table("sign_in_codes").insert(
            {"code_hash": code_hash, "reviewer": reviewer, "expires_at": iso(expires_at)},
            returning=MINIMAL), "sign_in_codes", reviewer)

    async def take_sign_in_code(self, code_hash: str) -> str | None:
        """A DELETE returning the row: only the request that deleted it gets it."""
        rows = await self._delete("sign_in_codes", "sign_in_codes",
                                  _match(eq={"code_hash": code_hash}))
        if not rows or datetime.fromisoformat(str(iso(rows[0]["expires_at"]))) <= now_utc():
            return None
        return str(rows[0]["reviewer"])

    async def review_page(
        self, campaign_id: str, *, status: str | None = None, search: str | None = None,
        step_status: str | None = None, lead_id: str | None = None, offset: int = 0,
        limit: int = 50,
    ) -> ReviewPage:
        """Filtered by status alone, one RPC (`review_page`, migration 7) gives the page and
        the count; with a search or a step filter, the campaign's leads and drafts are read
        page by page and matched here (no accent folding in PostgREST, no join on a plain
        key). Then the page's leads are read with every step (`_review_details`)."""
        if status is not None and status not in REVIEW_STATUSES:
            raise StoreError(f"unknown review status {status!r}", table="leads", key=campaign_id)
        if step_status is not None and step_status not in STEP_STATUSES:
            raise StoreError(f"unknown step status {step_status!r}", table="drafts",
                             key=campaign_id)
        key = search_key(search)
        if lead_id is not None:  # one lead (the lead page): read it alone
            lead = await self._pages("leads", "lead_id,email,data,draft_status,created_at",
                                     _match(eq={"campaign_id": campaign_id, "lead_id": lead_id}),
                                     ["lead_id"])
            hits = [lead_id] if lead and (key is None or lead_matches(
                {"email": lead[0]["email"], **lead_fields(lead[0].get("data"))}, key)) else []
            if hits and (status is not None or step_status is not None):
                hits = [i for i in await self._review_matches(
                    campaign_id, status, step_status, None) if i == lead_id]
            return await self._review_details(
                campaign_id, len(hits), hits[max(offset, 0):max(offset, 0) + max(limit, 0)])
        if key is None and step_status is None:
            db = await self._ready_db()
            res = await self._execute(db.rpc("review_page", {
                "p_campaign_id": campaign_id, "p_status": status, "p_search": None,
                "p_offset": max(offset, 0), "p_limit": max(limit, 0)}), "leads", campaign_id)
            rows: list[dict[str, Any]] = list(res.data or [])
            ids = [str(r["lead_id"]) for r in rows]
            total = int(rows[0]["total"]) if rows else (
                0 if offset <= 0 else (await self.review_page(
                    campaign_id, status=status, offset=0, limit=1)).total)
        else:
            hits = await self._review_matches(campaign_id, status, step_status, key)
            total, ids = len(hits), hits[max(offset, 0):max(offset, 0) + max(limit, 0)]
        return await self._review_details(campaign_id, total, ids)

    async def _review_matches(self, campaign_id: str, status: str | None,
                              step_status: str | None, key: str | None) -> list[str]:
        """The ids of the campaign's leads that pass the filters and the search, in order."""
        def where(q: Query) -> Query:
            return q.eq("campaign_id", campaign_id)

        columns = "lead_id,email,draft_status,created_at" + (",data" if key else "")
        leads, drafts = await asyncio.gather(
            self._pages("leads", columns, where, ["lead_id"]),
            self._pages("drafts", "lead_id,step,version,approved,excluded,failed_reason", where,
                        ["lead_id", "step"]))
        replied: set[str] = set()
        if step_status == "replied":
            replied = {str(r["lead_id"]) for r in await self._pages(
                "replies", "reply_id,lead_id",
                lambda q: where(q).eq("kind", "reply").eq("verified", True), ["reply_id"])}
        steps: dict[str, list[dict[str, Any]]] = {}
        for d in drafts:
            steps.setdefault(str(d["lead_id"]), []).append(d)

        def passes(lead: dict[str, Any]) -> bool:
            mine = steps.get(str(lead["lead_id"]), [])
            first = next((d for d in mine if int(d["step"]) == 1), {})
            if status is not None and not {
                "approved": bool(first.get("approved")), "excluded": bool(first.get("excluded")),
                "edited": int(first.get("version") or 1) > 1,
                "pending": lead["draft_status"] in {"pending", "drafting"},
            }.get(status, lead["draft_status"] == status):
                return False
            failing = any(d.get("failed_reason") for d in mine)
            if step_status is not None and not {
                "failed": failing, "edited": any(int(d.get("version") or 1) > 1 for d in mine),
                "excluded": any(d.get("excluded") for d in mine),
                "replied": str(lead["lead_id"]) in replied,
                "held": any(d.get("failed_reason") and not d.get("excluded") for d in mine)
                and not any(d.get("approved") for d in mine),
            }[step_status]:
                return False
            return key is None or lead_matches({"email": lead["email"],
                                                **lead_fields(lead.get("data"))}, key)

        leads.sort(key=lambda r: (iso(r["created_at"]), r["lead_id"]))
        return [str(r["lead_id"]) for r in leads if passes(r)]

    async def _review_details(self, campaign_id: str, total: int, ids: list[str]) -> ReviewPage:
        """The page's leads with every step, as `review.page_of` reads them."""
        def within(q: Query) -> Query:
            return q.eq("campaign_id", campaign_id).in_("lead_id", ids or [""])

        reads = [
            self._pages("leads", "lead_id,email,data,draft_status,error,sender", within,
                        ["lead_id"]),
            self._pages("drafts", "lead_id,step,subject,version,edited_by,approved,excluded,"
                        "failed_reason", within, ["lead_id", "step"]),
            self._pages("deliveries", "lead_id,step,status,message_id,error,updated_at,"
                        "message_key", within, ["lead_id", "step", "message_key"]),
            self._pages("sequence_steps", "lead_id,step,status,stop_reason,due_at", within,
                        ["lead_id", "step"]),
            self._pages("replies", "reply_id,lead_id,step,kind,received_at",
                        lambda q: within(q).eq("verified", True), ["received_at", "reply_id"]),
            self._pages("delivery_events", "event_id,lead_id,message_key,kind,created_at",
                        within, ["created_at", "event_id"]),
            self._pages("approvals", "decision_id,decision,decided_by,note,lead_ids,created_at",
                        lambda q: q.eq("campaign_id", campaign_id), ["created_at", "decision_id"]),
        ]
        campaign = await self.get_campaign(campaign_id)
        leads, drafts, deliveries, planned, replies, events, decisions = await asyncio.gather(*reads)
        by_lead: dict[str, dict[int, Any]] = {}
        for d in drafts:
            by_lead.setdefault(str(d["lead_id"]), {})[int(d["step"])] = d
        sent = {(str(x["lead_id"]), int(x["step"])): x for x in deliveries}
        due = {(str(x["lead_id"]), int(x["step"])): x for x in planned}
        rows = {str(r["lead_id"]): {
            "lead_id": r["lead_id"], "email": r["email"], "draft_status": r["draft_status"],
            "error": r.get("error"), "sender": r.get("sender"), **lead_fields(r.get("data"))}
            for r in leads}
        facts = []
        for lead_id in sorted(rows):
            r = rows[lead_id]
            lead_steps: dict[int, Any] = by_lead.get(lead_id) or {1: None}
            for step in sorted(lead_steps):
                d = lead_steps[step] or {}
                x = sent.get((lead_id, step), {})
                p = due.get((lead_id, step), {})
                facts.append({
                    "lead_id": lead_id, "email": r["email"], "draft_status": r["draft_status"],
                    "draft_error": r["error"], "sender": r["sender"], "step": step if d else None,
                    "approved": d.get("approved"), "excluded": d.get("excluded"),
                    "failed_reason": d.get("failed_reason"), "subject": d.get("subject"),
                    "version": d.get("version"), "edited_by": d.get("edited_by"),
                    "delivery": x.get("status"), "message_id": x.get("message_id"),
                    "delivery_error": x.get("error"), "sent_at": x.get("updated_at"),
                    "step_status": p.get("status"), "stop_reason": p.get("stop_reason"),
                    "due_at": p.get("due_at"),
                })
        return page_of(campaign_id, total, [rows[i] for i in ids if i in rows], facts,
                       campaign.stage if campaign else None, replies=replies, events=events,
                       decisions=decisions)

    # -- replies (schema 8) ------------------------------------------------------------

    async def record_reply(self, *, message_id: str, kind: str, email: str, source: str,
                           campaign_id: str | None = None, lead_id: str | None = None,
                           step: int | None = None, subject: str = "", text: str = "",
                           matched_by: str | None = None, verified: bool = True,
                           headers: dict[str, str] | None = None) -> tuple[str, bool]:
        """An ignore-duplicates upsert returns only new rows: that says whether it was new."""
        reply_id = reply_id_for(message_id, campaign_id, lead_id)
        row = {"reply_id": reply_id, "message_id": bare_message_id(message_id),
               "campaign_id": campaign_id, "lead_id": lead_id, "step": step, "kind": kind,
               "email": normalise_address(email), "subject": subject, "text": text,
               "matched_by": matched_by, "source": source, "verified": verified,
               "headers": headers_json(headers)}
        res = await self._run(lambda db: db.table("replies").upsert(
            row, on_conflict="reply_id", ignore_duplicates=True,
            returning=ReturnMethod.representation), "replies", reply_id)
        return reply_id, bool(res.data)

    async def get_reply(self, reply_id: str) -> ReplyRow | None:
        res = await self._run(lambda db: db.table("replies").select("*")
                              .eq("reply_id", reply_id).limit(1), "replies", reply_id)
        return reply_row(res.data[0]) if res.data else None

    async def record_reply_intent(self, reply_id: str, intent: str, confidence: float | None,
                                  action: str | None) -> bool:
        res = await self._run(lambda db: db.table("replies").update(
            {"intent": intent, "confidence": confidence, "action": action},
            returning=ReturnMethod.representation).eq("reply_id", reply_id), "replies", reply_id)
        return bool(res.data)

    # -- what is done with a reply (schema 15) -------------------------------------------

    async def _update_reply(self, table: str, key: str, values: dict[str, Any],
                            where: Callable[[Query], Query]) -> list[dict[str, Any]]:
        """A conditional update; the rows it changed (PostgREST applies it atomically)."""
        res = await self._run(lambda db: where(db.table(table).update(
            values, returning=ReturnMethod.representation)), table, key)
        return list(res.data)

    async def snooze_reply(self, reply_id: str, until: datetime) -> bool:
        return bool(await self._update_reply("replies", reply_id, {"snooze_until": iso(until)},
                                             _match(eq={"reply_id": reply_id})))

    async def mark_reply_done(self, reply_id: str, *, by: str) -> bool:
        return bool(await self._update_reply("replies", reply_id,
                                             {"done_at": _now(), "done_by": by},
                                             _match(eq={"reply_id": reply_id})))

    async def set_reply_intent_by_person(self, reply_id: str, intent: str, *, by: str) -> bool:
        return bool(await self._update_reply(
            "replies", reply_id, {"intent": intent, "confidence": 1.0, "action": None,
                                  "intent_by": by, "done_at": None, "done_by": None},
            _match(eq={"reply_id": reply_id})))

    async def inbox(self, *, campaign_id: str | None, intents: list[str] | None,
                    now: datetime) -> list[InboxItem]:
        """The replies not done are read (of the campaign) and filtered here (`inbox_of`)."""
        eq: dict[str, Any] = {"kind": "reply"}
        if campaign_id is not None:
            eq["campaign_id"] = campaign_id
        rows = await self._pages("replies", "*", _match(eq=eq, null=("done_at",)),
                                 ["received_at", "reply_id"])
        items = inbox_of([reply_row(r) for r in rows], {}, campaign_id=campaign_id,
                         intents=intents, now=now)
        ids = [i.reply_id for i in items]
        answers: dict[str, ReplyAnswerRow] = {}
        for start in range(0, len(ids), 200):
            chunk = ids[start:start + 200]
            for a in await self._pages("reply_answers", "*", _match(within={"reply_id": chunk}),
                                       ["reply_id"]):
                answers[a["reply_id"]] = answer_row(a)
        chosen = [r for r in (reply_row(r) for r in rows) if r.reply_id in set(ids)]
        return inbox_of(chosen, answers, campaign_id=campaign_id, intents=intents, now=now)

    async def save_reply_answer(self, reply_id: str, *, subject: str, body: str,
                                by: str | None, drafted: bool = False) -> None:
        """A sequence of conditional requests: insert if there is none, else update it while
        it is still drafted (the agent's draft: while no person edited it)."""
        reply = await self.get_reply(reply_id)
        if reply is None:
            raise StoreError("no such reply", table="replies", key=reply_id)
        now = _now()
        who = ({"drafted_by": by, "drafted_at": now} if drafted
               else {"edited_by": by, "edited_at": now})
        row = {"reply_id": reply_id, "campaign_id": reply.campaign_id, "lead_id": reply.lead_id,
               "subject": subject, "body": body, "status": "drafted", "updated_at": now, **who}
        res = await self._run(lambda db: db.table("reply_answers").upsert(
            row, on_conflict="reply_id", ignore_duplicates=True,
            returning=ReturnMethod.representation), "reply_answers", reply_id)
        if res.data:
            return
        null = ("edited_by",) if drafted else ()
        if await self._update_reply(
                "reply_answers", reply_id,
                {"subject": subject, "body": body, "updated_at": now, **who},
                _match(eq={"reply_id": reply_id, "status": "drafted"}, null=null)):
            return
        answer = await self.get_reply_answer(reply_id)
        if answer is not None and answer.status != "drafted":
            raise AnswerConflict(f"the answer is {answer.status}: it can no longer change",
                                 table="reply_answers", key=reply_id)

    async def get_reply_answer(self, reply_id: str) -> ReplyAnswerRow | None:
        res = await self._run(lambda db: db.table("reply_answers").select("*")
                              .eq("reply_id", reply_id).limit(1), "reply_answers", reply_id)
        return answer_row(res.data[0]) if res.data else None

    async def claim_answer_send(self, reply_id: str, *, by: str) -> ReplyAnswerRow | None:
        rows = await self._update_reply(
            "reply_answers", reply_id, {"status": "sending", "sent_by": by, "updated_at": _now()},
            _match(eq={"reply_id": reply_id, "status": "drafted"}))
        return answer_row(rows[0]) if rows else None

    async def release_answer_send(self, reply_id: str) -> bool:
        return bool(await self._update_reply(
            "reply_answers", reply_id, {"status": "drafted", "sent_by": None,
                                        "updated_at": _now()},
            _match(eq={"reply_id": reply_id, "status": "sending"})))

    async def mark_answer_sent(self, reply_id: str, *, message_id: str, by: str) -> None:
        now = _now()
        await self._update_reply(
            "reply_answers", reply_id, {"status": "sent", "message_id": message_id,
                                        "sent_by": by, "sent_at": now, "updated_at": now},
            lambda q: q.eq("reply_id", reply_id).neq("status", "sent"))

    async def add_suggested_lead(self, *, campaign_id: str | None, reply_id: str,
                                 referred_by: str | None, name: str | None,
                                 email: str | None) -> tuple[str, bool]:
        sid = suggested_lead_id(reply_id, name, email)
        row = {"id": sid, "campaign_id": campaign_id, "reply_id": reply_id,
               "referred_by": referred_by, "name": name, "email": suggested_email(email),
               "created_at": _now()}
        res = await self._run(lambda db: db.table("suggested_leads").upsert(
            row, on_conflict="id", ignore_duplicates=True,
            returning=ReturnMethod.representation), "suggested_leads", sid)
        return sid, bool(res.data)

    async def list_suggested_leads(self, campaign_id: str | None = None
                                   ) -> list[SuggestedLeadRow]:
        where = _match(eq={"campaign_id": campaign_id} if campaign_id else None)
        rows = await self._pages("suggested_leads", "*", where, ["created_at", "id"])
        found = [suggested_lead_row(r) for r in rows]
        found.sort(key=lambda r: r.id)
        found.sort(key=lambda r: r.created_at, reverse=True)
        return found

    async def mark_suggested_lead_added(self, suggestion_id: str, campaign_id: str) -> bool:
        return bool(await self._update_reply(
            "suggested_leads", suggestion_id, {"added_campaign_id": campaign_id},
            _match(eq={"id": suggestion_id})))

    async def confirm_reply(self, reply_id: str) -> bool:
        """An update returns the rows it changed: that says whether it was unverified."""
        res = await self._run(lambda db: db.table("replies").update(
            {"verified": True}, returning=ReturnMethod.representation)
            .eq("reply_id", reply_id).eq("verified", False), "replies", reply_id)
        return bool(res.data)

    async def lead_replied(self, campaign_id: str, lead_id: str) -> bool:
        rows = await self._pages("replies", "reply_id,intent", lambda q: q.eq(
            "campaign_id", campaign_id).eq("lead_id", lead_id).eq("kind", "reply").eq(
            "verified", True), ["reply_id"])
        return any(r.get("intent") not in MACHINE_INTENTS for r in rows)

    async def list_replies(self, campaign_id: str | None) -> list[ReplyRow]:
        def where(q: Query) -> Query:
            return q.eq("campaign_id", campaign_id) if campaign_id is not None else q.is_(
                "campaign_id", "null")

        rows = await self._pages("replies", "*", where, ["received_at", "reply_id"])
        return [reply_row(r) for r in rows]

    async def find_leads_by_email(self, email: str, stages: Iterable[str]) -> list[tuple[str, str]]:
        wanted = list(stages)
        if not wanted:
            return []
        leads = await self._pages("leads", "campaign_id,lead_id",
                                  _match(within={"email": address_forms(email)}),
                                  self._KEYS["leads"])
        campaigns = sorted({r["campaign_id"] for r in leads})
        sending: set[str] = set()
        for i in range(0, len(campaigns), 100):
            rows = await self._pages("campaigns", "campaign_id", _match(
                within={"campaign_id": campaigns[i:i + 100], "stage": wanted}), ["campaign_id"])
            sending |= {r["campaign_id"] for r in rows}
        return [(r["campaign_id"], r["lead_id"]) for r in leads if r["campaign_id"] in sending]

    async def emails_in_active_sequences(self, emails: Sequence[str], *,
                                         exclude_campaign: str | None = None) -> dict[str, str]:
        """PostgREST cannot say EXISTS: per batch, the leads with those addresses, their
        campaigns' stages, then (for delivering campaigns) their open steps, approved
        first drafts and finished first sends: a few requests a batch, none per lead."""
        found: dict[str, str] = {}
        for forms in overlap_forms(emails):
            leads = [r for r in await self._pages(
                "leads", "campaign_id,lead_id,email,draft_status",
                _match(within={"email": list(forms)}), self._KEYS["leads"])
                if r["campaign_id"] != exclude_campaign
                and not str(r["campaign_id"]).lower().startswith(SCHEDULE_TEMPLATE_PREFIX)]
            stages: dict[str, str] = {}
            campaigns = sorted({r["campaign_id"] for r in leads})
            for i in range(0, len(campaigns), 100):
                for row in await self._pages("campaigns", "campaign_id,stage", _match(
                        within={"campaign_id": campaigns[i:i + 100],
                                "stage": list(ACTIVE_STAGES)}), ["campaign_id"]):
                    stages[row["campaign_id"]] = row["stage"]
            delivering = [r for r in leads if stages.get(r["campaign_id"]) == "delivering"]
            pairs = await self._delivering_open(delivering)
            for r in sorted(leads, key=lambda r: str(r["campaign_id"])):
                stage = stages.get(r["campaign_id"])
                active = (stage in ("drafting", "awaiting_approval")
                          and r["draft_status"] != "failed") or (
                    stage == "delivering" and (r["campaign_id"], r["lead_id"]) in pairs)
                email = forms.get(r["email"])
                if active and email is not None:
                    found.setdefault(email, r["campaign_id"])
        return found

    async def _delivering_open(self, leads: list[dict[str, Any]]) -> set[tuple[str, str]]:
        """Of these leads of delivering campaigns, (campaign, lead) of those whose sequence
        is not over: a follow-up scheduled, or step 1 approved and not sent yet."""
        if not leads:
            return set()
        wanted = {(r["campaign_id"], r["lead_id"]) for r in leads}
        ids = sorted({r["lead_id"] for r in leads})
        campaigns = sorted({r["campaign_id"] for r in leads})

        async def pairs(table: str, columns: str, eq: dict[str, Any],
                        within: dict[str, list[str]] | None = None) -> set[tuple[str, str]]:
            out: set[tuple[str, str]] = set()
            for i in range(0, len(ids), 100):
                rows = await self._pages(table, f"campaign_id,lead_id,{columns}", _match(
                    eq=eq, within={"campaign_id": campaigns, "lead_id": ids[i:i + 100],
                                   **(within or {})}), ["campaign_id", "lead_id"])
                out |= {(r["campaign_id"], r["lead_id"]) for r in rows}
            return out & wanted

        scheduled = await pairs("sequence_steps", "step", {"status": "scheduled"})
        approved = await pairs("drafts", "step", {"step": 1, "approved": True})
        finished = await pairs("deliveries", "status", {"step": 1},
                               {"status": ["sent", "suppressed", "failed"]})
        return scheduled | (approved - finished)

    async def emails_replied_since(self, emails: Sequence[str], since: datetime
                                   ) -> dict[str, str]:
        found: dict[str, str] = {}
        for forms in overlap_forms(emails):
            def where(q: Query, forms: dict[str, str] = forms) -> Query:
                return (q.in_("email", list(forms)).eq("kind", "reply").eq("verified", True)
                        .gte("received_at", iso(since)))
            rows = await self._pages("replies", "reply_id,email,campaign_id,received_at,intent", where,
                                     ["reply_id"])
            for r in sorted(rows, key=lambda r: (iso(r["received_at"]), r["reply_id"]),
                            reverse=True):
                email = forms.get(r["email"])
                if r.get("intent") in MACHINE_INTENTS:  # the classifier says a machine wrote it
                    continue
                if email is not None and r["campaign_id"] is not None:  # matched a lead
                    found.setdefault(email, r["campaign_id"])
        return found

    async def get_imap_state(self, mailbox: str) -> tuple[int, int] | None:
        res = await self._run(lambda db: db.table("imap_state").select("uidvalidity,last_uid")
                              .eq("mailbox", mailbox).limit(1), "imap_state", mailbox)
        if not res.data:
            return None
        return int(res.data[0]["uidvalidity"]), int(res.data[0]["last_uid"])

    async def save_imap_state(self, mailbox: str, uidvalidity: int, last_uid: int) -> None:
        """Never backwards within one UIDVALIDITY (read, then write: pollers rarely overlap)."""
        before = await self.get_imap_state(mailbox)
        if before is not None and before[0] == uidvalidity:
            last_uid = max(last_uid, before[1])
        row = {"mailbox": mailbox, "uidvalidity": uidvalidity, "last_uid": last_uid,
               "updated_at": _now()}
        await self._run(lambda db: db.table("imap_state").upsert(
            row, on_conflict="mailbox", returning=MINIMAL), "imap_state", mailbox)

    # -- erasure: the primitives of `Erasure.forget`, as idempotent requests ----------------

    #: A total order (the primary key) per table, so paged reads miss no row.
    _KEYS: ClassVar[dict[str, list[str]]] = {
        "leads": ["campaign_id", "lead_id"], "drafts": ["campaign_id", "lead_id", "step"],
        "draft_versions": ["edit_id"],
        "retrievals": ["campaign_id", "lead_id"], "deliveries": ["message_key"],
        "audit_log": ["envelope_id"], "delivery_events": ["event_id"], "replies": ["reply_id"],
        "sequence_steps": ["campaign_id", "lead_id", "step"], "sender_sends": ["sender", "seq"]}

    def _erasing(self, subject: str) -> AbstractAsyncContextManager[Pairs]:
        return nullcontext(set())  # no transaction: the pairs in scope, once known

    async def _erase_suppress(self, tx: Pairs, address: str) -> int:
        res = await self._run(lambda db: db.table("suppressions").select("reason,source")
                              .eq("email", address).limit(1), "suppressions")
        if not res.data:
            return await self.add_suppressions([address], FORGOTTEN_REASON, source=ERASURE_SOURCE)
        if (res.data[0]["reason"], res.data[0]["source"]) == (FORGOTTEN_REASON, ERASURE_SOURCE):
            return 0
        await self._patch("suppressions", address,
                          {"reason": FORGOTTEN_REASON, "source": ERASURE_SOURCE},
                          _match(eq={"email": address}))
        return 1

    async def _erase_campaign_ids(self, tx: Pairs) -> list[tuple[str, str | None]]:
        return [(r["campaign_id"], r.get("lead_id_salt")) for r in
                await self._pages("campaigns", "campaign_id,lead_id_salt", _match(),
                                  ["campaign_id"])]

    async def _erase_leads_by_address(self, tx: Pairs, addresses: list[str]) -> Pairs:
        rows = await self._pages("leads", "campaign_id,lead_id", _match(within={"email": addresses}),
                                 self._KEYS["leads"])
        return {(r["campaign_id"], r["lead_id"]) for r in rows}

    async def _erase_scope(self, tx: Pairs, pairs: Pairs) -> None:
        tx |= pairs

    async def _erase_find(self, tx: Pairs, table: str) -> Pairs:
        """By lead id, 100 a request (lead ids are per campaign: the pair is checked here)."""
        lead_ids, found = sorted({lid for _, lid in tx}), set()
        for i in range(0, len(lead_ids), 100):
            rows = await self._pages(table, "campaign_id,lead_id",
                                     _match(within={"lead_id": lead_ids[i:i + 100]}), self._KEYS[table])
            found |= {(r["campaign_id"], r["lead_id"]) for r in rows} & tx
        return found

    async def _erase_event_campaigns(self, tx: Pairs, addresses: list[str]) -> set[str]:
        rows = await self._pages("delivery_events", "event_id,campaign_id",
                                 _match(within={"email": addresses}), ["event_id"])
        return {r["campaign_id"] for r in rows if r["campaign_id"]}

    async def _erase_lead_data(self, tx: Pairs, pairs: Pairs) -> list[tuple[str, str, Any, Any]]:
        out = []
        for cid, lids in _by_campaign(pairs).items():
            campaign = await self.get_campaign(cid)
            rows = await self._pages("leads", "lead_id,data", _match(
                eq={"campaign_id": cid}, within={"lead_id": lids}), ["lead_id"])
            out += [(cid, r["lead_id"], r["data"], campaign.brief if campaign else "") for r in rows]
        return out

    async def _erase_mentions(self, tx: Pairs, campaigns: list[str], addresses: list[str]
                              ) -> list[Mention]:
        """Every campaign-level audit entry and approval of those campaigns: `forget` checks them."""
        found: list[Mention] = []
        for i in range(0, len(campaigns), 100):
            part = campaigns[i:i + 100]
            entries = await self._pages(
                "audit_log", "envelope_id,campaign_id,envelope",
                _match(within={"campaign_id": part}, null=("lead_id",)), ["envelope_id"])
            found += [Mention("audit_log", "envelope", {"envelope_id": r["envelope_id"]},
                              r["campaign_id"], r["envelope"]) for r in entries]
            decisions = await self._pages(
                "approvals", "campaign_id,decision_id,lead_ids",
                _match(within={"campaign_id": part}), ["campaign_id", "decision_id"])
            found += [Mention("approvals", "lead_ids", {"campaign_id": r["campaign_id"],
                                                        "decision_id": r["decision_id"]},
                              r["campaign_id"], r["lead_ids"]) for r in decisions]
        return found

    async def _erase_patch(self, tx: Pairs, mention: Mention, value: Any) -> None:
        await self._patch(mention.table, "/".join(mention.key.values()), {mention.column: value},
                          _match(eq=mention.key))

    async def _erase_delete(self, tx: Pairs, table: str, found: Pairs) -> list[str | None]:
        gone: list[str | None] = []
        for cid, lids in _by_campaign(found).items():
            rows = await self._delete(table, cid, _match(eq={"campaign_id": cid}, within={"lead_id": lids}))
            gone += [cid] * len(rows)
        return gone

    async def _erase_unlink(self, tx: Pairs, table: str, found: Pairs) -> list[str | None]:
        gone: list[str | None] = []
        for cid, lids in _by_campaign(found).items():
            def build(db: AsyncClient, cid: str = cid, lids: list[str] = lids) -> Query:
                return (db.table(table).update({"lead_id": None},
                                               returning=ReturnMethod.representation)
                        .eq("campaign_id", cid).in_("lead_id", lids))

            gone += [cid] * len((await self._run(build, table, cid)).data)
        return gone

    async def _erase_delete_by_address(self, tx: Pairs, table: str, addresses: list[str]
                                       ) -> list[str | None]:
        return [r["campaign_id"] for r in
                await self._delete(table, table, _match(within={"email": addresses}))]

    async def _erase_embeddings(self, tx: Pairs, hashes: list[str]) -> int:
        return sum([len(await self._delete("embeddings", "embeddings",
                                           _match(within={"text_hash": hashes[i:i + 100]})))
                    for i in range(0, len(hashes), 100)])

    async def _erase_record(self, tx: Pairs, envelope: Envelope) -> None:
        await self.save_envelope(envelope, None)

    async def _delete(self, table: str, key: str, where: Callable[[Query], Query]
                      ) -> list[dict[str, Any]]:
        """Delete the matching rows; returns them (to count them)."""
        res = await self._run(lambda db: where(db.table(table).delete()), table, key)
        return list(res.data)

    async def _patch(self, table: str, key: str, values: dict[str, Any],
                     where: Callable[[Query], Query]) -> None:
        await self._run(lambda db: where(db.table(table).update(values, returning=MINIMAL)),
                        table, key)

    # -- sequences -------------------------------------------------------------------

    def _step_key(self, campaign_id: str, lead_id: str, step: int) -> Callable[[Query], Query]:
        return lambda q: q.eq("campaign_id", campaign_id).eq("lead_id", lead_id).eq("step", step)

    async def move_open_step(self, campaign_id: str, lead_id: str, not_before: datetime
                             ) -> bool:
        """One conditional update: only a scheduled step due before `not_before` moves."""
        when = iso(not_before)
        res = await self._run(lambda db: db.table("sequence_steps").update(
            {"due_at": when, "updated_at": _now()}, returning=ReturnMethod.representation)
            .eq("campaign_id", campaign_id).eq("lead_id", lead_id).eq("status", "scheduled")
            .lt("due_at", when), "sequence_steps", f"{campaign_id}/{lead_id}")
        return bool(res.data)

    async def schedule_step(self, campaign_id: str, lead_id: str, step: int,
                            due_at: datetime) -> None:
        row = {"campaign_id": campaign_id, "lead_id": lead_id, "step": step,
               "due_at": iso(due_at), "status": "scheduled"}
        await self._run(lambda db: db.table("sequence_steps").upsert(
            row, on_conflict="campaign_id,lead_id,step", ignore_duplicates=True,
            returning=MINIMAL), "sequence_steps", f"{campaign_id}/{lead_id}/{step}")

    async def get_step(self, campaign_id: str, lead_id: str, step: int) -> SequenceStepRow | None:
        key = self._step_key(campaign_id, lead_id, step)
        res = await self._run(lambda db: key(db.table("sequence_steps").select("*")).limit(1),
                              "sequence_steps", f"{campaign_id}/{lead_id}/{step}")
        return step_row(res.data[0]) if res.data else None

    async def set_step_status(self, campaign_id: str, lead_id: str, step: int, status: str,
                              stop_reason: str | None = None) -> None:
        """Insert the row if it is missing, then update it (a sent step stays sent)."""
        ident = f"{campaign_id}/{lead_id}/{step}"
        row = {"campaign_id": campaign_id, "lead_id": lead_id, "step": step, "due_at": _now(),
               "status": status, "stop_reason": stop_reason}
        await self._run(lambda db: db.table("sequence_steps").upsert(
            row, on_conflict="campaign_id,lead_id,step", ignore_duplicates=True,
            returning=MINIMAL), "sequence_steps", ident)
        key = self._step_key(campaign_id, lead_id, step)
        await self._patch("sequence_steps", ident, {
            "status": status, "stop_reason": stop_reason, "wait_reason": None,
            "updated_at": _now(),
        }, key if status == "sent" else (lambda q: key(q).neq("status", "sent")))

    async def due_steps(self, campaign_id: str, before: datetime, after: str | None,
                        limit: int) -> list[SequenceStepRow]:
        res = await self._run(lambda db: db.table("sequence_steps").select("*")
                              .eq("campaign_id", campaign_id).eq("status", "scheduled")
                              .lte("due_at", iso(before)).gt("lead_id", after or "")
                              .order("lead_id").order("step").limit(limit),
                              "sequence_steps", campaign_id)
        return [step_row(r) for r in res.data]

    async def next_due_at(self, campaign_id: str, after: datetime) -> datetime | None:
        res = await self._run(lambda db: db.table("sequence_steps").select("due_at")
                              .eq("campaign_id", campaign_id).eq("status", "scheduled")
                              .gt("due_at", iso(after)).order("due_at").limit(1),
                              "sequence_steps", campaign_id)
        return as_time(res.data[0]["due_at"]) if res.data else None

    async def stop_open_steps(self, campaign_id: str, reason: str) -> int:
        res = await self._run(lambda db: db.table("sequence_steps").update(
            {"status": "stopped", "stop_reason": reason, "wait_reason": None,
             "updated_at": _now()},
            returning=ReturnMethod.representation).eq("campaign_id", campaign_id)
            .eq("status", "scheduled"), "sequence_steps", campaign_id)
        return len(res.data)

    async def last_sent_step(self, campaign_id: str, lead_id: str) -> int:
        res = await self._run(lambda db: db.table("deliveries").select("step")
                              .eq("campaign_id", campaign_id).eq("lead_id", lead_id)
                              .in_("status", ["sent", "suppressed", "committing"])
                              .order("step", desc=True).limit(1), "deliveries", lead_id)
        return int(res.data[0]["step"]) if res.data else 0

    async def lead_ids_at_domain(self, campaign_id: str, domain: str) -> list[str]:
        """Paged and matched here: rare (a company reply), and PostgREST's `like` would
        need the domain escaped for its own wildcard syntax."""
        rows = await self._pages("leads", "lead_id,email",
                                 lambda q: q.eq("campaign_id", campaign_id), ["lead_id"])
        return [r["lead_id"] for r in rows if str(r["email"]).rpartition("@")[2] == domain]

    async def suppression_reason(self, email: str) -> str | None:
        res = await self._run(lambda db: db.table("suppressions").select("reason")
                              .in_("email", address_forms(email)).order("created_at").limit(1),
                              "suppressions")
        return str(res.data[0]["reason"]) if res.data else None

    # -- senders (issue 28, schema 16) ---------------------------------------------------

    async def add_sender(self, row: SenderRow) -> bool:
        """An ignore-duplicates insert says whether the name was free; a removed sender's
        row is then taken over (only while it is still the removed row read)."""
        values = sender_values(row)
        res = await self._run(lambda db: db.table("senders").upsert(
            values, on_conflict="name", ignore_duplicates=True,
            returning=ReturnMethod.representation), "senders", row.name)
        if res.data:
            return True
        found = await self._run(lambda db: db.table("senders").select("removed_at")
                                .eq("name", row.name).limit(1), "senders", row.name)
        if not found.data or found.data[0]["removed_at"] is None:
            return False
        res = await self._run(lambda db: db.table("senders").update(
            {k: v for k, v in values.items() if k != "name"},
            returning=ReturnMethod.representation).eq("name", row.name)
            .eq("removed_at", found.data[0]["removed_at"]), "senders", row.name)
        return bool(res.data)

    async def get_sender(self, name: str) -> SenderRow | None:
        res = await self._run(lambda db: db.table("senders").select("*").eq("name", name)
                              .limit(1), "senders", name)
        return sender_row(res.data[0]) if res.data else None

    async def list_senders(self, *, include_removed: bool = False) -> list[SenderRow]:
        where = _match() if include_removed else _match(null=("removed_at",))
        return [sender_row(r) for r in await self._pages("senders", "*", where, ["name"])]

    async def set_sender_paused(self, name: str, paused: bool, reason: str | None, *,
                                if_not_paused: bool = False) -> bool:
        values = {"paused": paused, "paused_reason": reason if paused else None,
                  "paused_at": _now() if paused else None}
        return await self._update_sender(name, values, only_active=if_not_paused)

    async def remove_sender(self, name: str) -> bool:
        return await self._update_sender(name, {"removed_at": _now()})

    async def _update_sender(self, name: str, values: dict[str, Any], *,
                             only_active: bool = False) -> bool:
        """Change a sender that is not removed (and, `only_active`, not paused); whether
        there was one."""
        def update(db: Any) -> Any:
            query = db.table("senders").update(
                values, returning=ReturnMethod.representation).eq("name", name).is_(
                "removed_at", "null")
            return query.eq("paused", False) if only_active else query

        res = await self._run(update, "senders", name)
        return bool(res.data)

    async def last_sender_claim(self, sender: str) -> SenderClaim | None:
        res = await self._run(lambda db: db.table("sender_sends").select("*").eq("sender", sender)
                              .order("seq", desc=True).limit(1), "sender_sends", sender)
        return sender_claim(res.data[0]) if res.data else None

    async def sender_claims_since(self, sender: str, since: datetime) -> list[SenderClaim]:
        rows = await self._pages("sender_sends", "*", lambda q: q.eq("sender", sender)
                                 .gt("sent_at", iso(since)), ["seq"])
        return [sender_claim(r) for r in rows]

    async def sender_claim_for(self, message_key: str) -> SenderClaim | None:
        res = await self._run(lambda db: db.table("sender_sends").select("*")
                              .eq("message_key", message_key).limit(1), "sender_sends",
                              message_key)
        return sender_claim(res.data[0]) if res.data else None

    async def insert_sender_claim(self, claim: SenderClaim) -> bool:
        """One insert that ignores a duplicate `message_key` (PostgREST's `ON CONFLICT
        (message_key) DO NOTHING`): a taken (sender, seq) is then a unique violation
        (23505), the answer False. After a violation the rows say which key it was, as
        in the SQL stores: the message's claim exists -> True; the seq is taken -> False."""
        key = f"{claim.sender}/{claim.seq}"
        try:
            await self._run(lambda db: db.table("sender_sends").upsert(
                claim_values(claim), on_conflict="message_key", ignore_duplicates=True,
                returning=MINIMAL), "sender_sends", key)
        except StoreError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, APIError) and cause.code == "23505"):
                raise
            if await self.sender_claim_for(claim.message_key) is not None:
                return True
            taken = await self._run(lambda db: db.table("sender_sends").select("seq")
                                    .eq("sender", claim.sender).eq("seq", claim.seq).limit(1),
                                    "sender_sends", key)
            if taken.data:
                return False
            raise
        return True

    async def mark_sender_event(self, message_key: str, kind: SenderEventKind) -> str | None:
        column = {"bounce": "bounced", "complaint": "complained"}[kind]
        res = await self._run(lambda db: db.table("sender_sends").update(
            {column: True}, returning=ReturnMethod.representation)
            .eq("message_key", message_key), "sender_sends", message_key)
        return str(res.data[0]["sender"]) if res.data else None

    async def sender_health(self, sender: str, window: int = HEALTH_WINDOW) -> SenderHealth:
        """The last `window` sends' two flags (a window is far below a page's `max_rows`)."""
        res = await self._run(lambda db: db.table("sender_sends").select("bounced,complained")
                              .eq("sender", sender).order("seq", desc=True)
                              .limit(max(window, 0)), "sender_sends", sender)
        rows = res.data if window > 0 else []
        return SenderHealth(sends=len(rows), bounces=sum(1 for r in rows if r["bounced"]),
                            complaints=sum(1 for r in rows if r["complained"]))

    async def assign_senders(self, campaign_id: str, assignments: dict[str, str]) -> int:
        """A conditional update per sender and 100 leads (only where `sender` is null):
        the rows it returns are the leads that got their sender."""
        by_sender: dict[str, list[str]] = {}
        for lead_id, name in assignments.items():
            by_sender.setdefault(name, []).append(lead_id)
        changed = 0
        now = _now()
        for name, lead_ids in sorted(by_sender.items()):
            ids = sorted(lead_ids)
            for i in range(0, len(ids), 100):
                def build(db: AsyncClient, name: str = name,
                          part: list[str] = ids[i:i + 100]) -> Query:
                    return (db.table("leads").update({"sender": name, "updated_at": now},
                                                     returning=ReturnMethod.representation)
                            .eq("campaign_id", campaign_id).is_("sender", "null")
                            .in_("lead_id", part))

                changed += len((await self._run(build, "leads", campaign_id)).data)
        return changed

    async def lead_sender(self, campaign_id: str, lead_id: str) -> str | None:
        res = await self._run(lambda db: db.table("leads").select("sender")
                              .eq("campaign_id", campaign_id).eq("lead_id", lead_id).limit(1),
                              "leads", f"{campaign_id}/{lead_id}")
        return res.data[0]["sender"] if res.data else None

    async def sender_assignment_counts(self, campaign_id: str) -> dict[str, int]:
        """Counted here: PostgREST groups nothing (two short columns a lead)."""
        rows = await self._pages("leads", "lead_id,sender",
                                 lambda q: q.eq("campaign_id", campaign_id), ["lead_id"])
        counted = Counter(str(r["sender"]) for r in rows if r["sender"] is not None)
        return dict(sorted(counted.items()))

    async def defer_step(self, campaign_id: str, lead_id: str, step: int, due_at: datetime,
                         sender: str, reason: WaitReason) -> None:
        """Insert the row if it is missing, then move it while it is scheduled (a row
        sent, stopped or failed is kept)."""
        ident = f"{campaign_id}/{lead_id}/{step}"
        when = iso(due_at)
        row = {"campaign_id": campaign_id, "lead_id": lead_id, "step": step, "due_at": when,
               "status": "scheduled", "sender": sender, "wait_reason": reason}
        await self._run(lambda db: db.table("sequence_steps").upsert(
            row, on_conflict="campaign_id,lead_id,step", ignore_duplicates=True,
            returning=MINIMAL), "sequence_steps", ident)
        key = self._step_key(campaign_id, lead_id, step)
        await self._patch("sequence_steps", ident, {
            "due_at": when, "sender": sender, "wait_reason": reason, "updated_at": _now(),
        }, lambda q: key(q).eq("status", "scheduled"))

    async def clear_step_wait(self, campaign_id: str, lead_id: str, step: int) -> None:
        key = self._step_key(campaign_id, lead_id, step)
        await self._patch("sequence_steps", f"{campaign_id}/{lead_id}/{step}",
                          {"wait_reason": None, "updated_at": _now()},
                          lambda q: key(q).in_("wait_reason", ["capacity", "paused"]))

    async def capacity_waits(self, campaign_id: str) -> tuple[int, datetime | None]:
        rows = await self._pages(
            "sequence_steps", "lead_id,step,due_at,wait_reason",
            lambda q: q.eq("campaign_id", campaign_id).eq("status", "scheduled")
            .in_("wait_reason", ["capacity", "paused"]), ["lead_id", "step"])
        due = [t for r in rows if r["wait_reason"] == "capacity"
               if (t := as_time(r["due_at"])) is not None]
        return len(rows), min(due, default=None)

    async def planned_waits(self, sender: str, after: datetime) -> list[datetime]:
        rows = await self._pages(
            "sequence_steps", "campaign_id,lead_id,step,due_at",
            lambda q: q.eq("sender", sender).eq("wait_reason", "capacity")
            .eq("status", "scheduled").gt("due_at", iso(after)),
            ["due_at", "campaign_id", "lead_id", "step"])
        return [t for t in (as_time(r["due_at"]) for r in rows) if t is not None]

    async def release_sender_holds(self, sender: str, due_at: datetime) -> list[str]:
        res = await self._run(lambda db: db.table("sequence_steps").update(
            {"wait_reason": "capacity", "due_at": iso(due_at), "updated_at": _now()},
            returning=ReturnMethod.representation).eq("sender", sender)
            .eq("wait_reason", "paused").eq("status", "scheduled"), "sequence_steps", sender)
        return sorted({str(r["campaign_id"]) for r in res.data})

    # -- read models ---------------------------------------------------------------

    async def counts(self, campaign_id: str) -> Counts:
        """Drafting figures counted here; every message's figure tallied from the report's
        rows (`outcomes.counts_of`), so status and report cannot disagree."""
        figures = await self._drafting_figures(campaign_id)
        replied = await self._pages("replies", "reply_id,lead_id", lambda q: q.eq(
            "campaign_id", campaign_id).eq("kind", "reply").eq("verified", True), ["reply_id"])
        facts, stage = await self._report_facts(campaign_id)
        return counts_of(facts, stage, replied=len({r["lead_id"] for r in replied}), **figures)

    async def status_figures(self, campaign_id: str) -> tuple[Counts, ReplyFigures]:
        """The counts and the reply figures (`outcomes.status_figures`): PostgREST groups
        nothing, so the campaign's verified replies are read (five short columns) and
        grouped here as the SQL stores' query groups them."""
        figures = await self._drafting_figures(campaign_id)
        replies = [r for r in await self._pages(
            "replies", "reply_id,lead_id,kind,intent,step", lambda q: q.eq(
                "campaign_id", campaign_id).eq("verified", True), ["reply_id"])
            if r["lead_id"] is not None and r["kind"] != "unparseable"]
        facts, stage = await self._report_facts(campaign_id)
        groups: Counter[tuple[Any, Any, Any, Any]] = Counter(
            (r["intent"], r["kind"], r["step"], r["lead_id"] if r["step"] is None else None)
            for r in replies)
        tally = [{"intent": i, "kind": k, "step": st, "lead_id": lead, "n": n}
                 for (i, k, st, lead), n in groups.items()]
        replied = len({r["lead_id"] for r in replies if r["kind"] == "reply"})
        return status_figures(facts, stage, tally, replied=replied, **figures)

    async def _drafting_figures(self, campaign_id: str) -> dict[str, int]:
        def on(table: str, **eq: Any) -> Awaitable[int]:
            def where(q: Query) -> Query:
                q = q.eq("campaign_id", campaign_id)
                for col, value in eq.items():
                    q = q.is_(col, value) if isinstance(value, bool) else q.eq(col, value)
                return q

            return self._count(table, where)

        values = await asyncio.gather(
            on("leads"), on("leads", draft_status="drafted"), on("leads", draft_status="failed"),
            on("drafts", approved=True, step=1))
        return dict(zip(["leads", "drafted", "draft_failed", "approved"], values, strict=True))

    async def held_leads(self, campaign_id: str) -> list[str]:
        facts, _ = await self._report_facts(campaign_id)
        return held_lead_ids(facts)

    async def report(self, campaign_id: str) -> list[ReportRow]:
        """One row per lead and step with its outcome, in the contract's shape."""
        facts, stage = await self._report_facts(campaign_id)
        return report_rows(facts, stage)

    async def _report_facts(self, campaign_id: str) -> tuple[list[dict[str, Any]], str | None]:
        """The rows `outcomes.report_rows` reads: four paged reads joined here."""
        campaign, leads, drafts, deliveries, steps = await asyncio.gather(
            self.get_campaign(campaign_id),
            self._pages("leads", "lead_id,email,draft_status,error,created_at,sender",
                        lambda q: q.eq("campaign_id", campaign_id), ["lead_id"]),
            self._pages("drafts", "lead_id,step,approved,excluded,failed_reason",
                        lambda q: q.eq("campaign_id", campaign_id), ["lead_id", "step"]),
            self._pages("deliveries", "lead_id,step,status,message_id,error,message_key",
                        lambda q: q.eq("campaign_id", campaign_id),
                        ["lead_id", "step", "message_key"]),
            self._pages("sequence_steps", "lead_id,step,status,stop_reason,due_at",
                        lambda q: q.eq("campaign_id", campaign_id), ["lead_id", "step"]))
        by_lead: dict[str, dict[int, Any]] = {}
        for d in drafts:
            by_lead.setdefault(d["lead_id"], {})[int(d["step"])] = d
        sent = {(x["lead_id"], int(x["step"])): x for x in deliveries}
        planned = {(x["lead_id"], int(x["step"])): x for x in steps}
        leads.sort(key=lambda r: (iso(r["created_at"]), r["lead_id"]))
        rows = []
        for r in leads:
            lead_steps: dict[int, Any] = by_lead.get(r["lead_id"]) or {1: None}
            for step in sorted(lead_steps):
                d = lead_steps[step] or {}
                x = sent.get((r["lead_id"], step), {})
                p = planned.get((r["lead_id"], step), {})
                rows.append({
                    "lead_id": r["lead_id"], "email": r["email"], "draft_status": r["draft_status"],
                    "draft_error": r["error"], "sender": r.get("sender"),
                    "approved": d.get("approved"),
                    "excluded": d.get("excluded"), "failed_reason": d.get("failed_reason"),
                    "step": step if d else None,
                    "delivery": x.get("status"), "message_id": x.get("message_id"),
                    "delivery_error": x.get("error"), "step_status": p.get("status"),
                    "stop_reason": p.get("stop_reason"), "due_at": p.get("due_at"),
                })
        return rows, campaign.stage if campaign else None

    async def audit(self, campaign_id: str, lead_id: str | None = None) -> list[AuditEntry]:
        def where(q: Query) -> Query:
            q = q.eq("campaign_id", campaign_id).neq("agent", REQUEST_AGENT)
            return q.eq("lead_id", lead_id) if lead_id else q

        rows = await self._pages("audit_log", "*", where, ["created_at", "envelope_id"])
        return [audit_entry(r) for r in rows]

    # -- embeddings ----------------------------------------------------------------

    async def get_embeddings(self, model: str, hashes: list[str]) -> dict[str, list[float]]:
        """Vectors by hash, 100 hashes a request (keeps the URL short, under `max_rows`)."""
        unique = list(dict.fromkeys(hashes))
        found: dict[str, list[float]] = {}
        for i in range(0, len(unique), 100):
            part = unique[i:i + 100]
            def build(db: AsyncClient, part: list[str] = part) -> Query:
                return (db.table("embeddings").select("text_hash,vector").eq("model", model)
                        .in_("text_hash", part))

            res = await self._run(build, "embeddings", model)
            found.update({r["text_hash"]: _vector(r["vector"], f"{model}/{r['text_hash']}")
                          for r in res.data})
        return found

    async def put_embeddings(self, model: str, vectors: dict[str, list[float]]) -> None:
        """Ignore-duplicates upserts, 100 vectors a request (a request body stays small)."""
        rows = [{"model": model, "text_hash": h, "dims": len(v), "vector": list(v)}
                for h, v in vectors.items()]
        for i in range(0, len(rows), 100):
            batch = rows[i:i + 100]
            await self._upsert_embeddings(batch, f"{model}: {len(batch)} vector(s)")

    async def _upsert_embeddings(self, rows: list[dict[str, Any]], key: str) -> None:
        await self._run(lambda db: db.table("embeddings").upsert(
            rows, on_conflict="model,text_hash", ignore_duplicates=True, returning=MINIMAL),
            "embeddings", key)

    async def vector_search(
        self, model: str, query_vector: list[float], hashes: list[str], k: int
    ) -> list[tuple[str, float]] | None:
        """pgvector's search through the `match_embeddings` RPC; None where it does not exist
        (the project has no pgvector), so the caller searches in memory."""
        if not hashes or k <= 0:
            return []
        db = await self._ready_db()
        params = {"model": model, "query": list(query_vector),
                  "hashes": list(dict.fromkeys(hashes)), "k": k}
        try:
            res = await self._execute(db.rpc("match_embeddings", params), "embeddings", model)
        except APIError as exc:
            if exc.code in {"PGRST202", "42883"}:  # no such function (PostgREST, Postgres)
                return None
            raise
        found = [(str(r["text_hash"]), float(r["similarity"])) for r in res.data]
        return sorted(found, key=lambda hs: (-hs[1], hs[0]))  # the function's order, kept


def _by_campaign(pairs: Pairs) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for cid, lid in sorted(pairs):
        out.setdefault(cid, []).append(lid)
    return out


def _match(*, eq: dict[str, Any] | None = None, within: dict[str, list[str]] | None = None,
           null: tuple[str, ...] = ()) -> Callable[[Query], Query]:
    """A filter: columns equal to values, within lists of values, or null."""
    def where(q: Query) -> Query:
        for col, value in (eq or {}).items():
            q = q.eq(col, value)
        for col, values in (within or {}).items():
            q = q.in_(col, values)
        for col in null:
            q = q.is_(col, "null")
        return q

    return where


def _vector(value: Any, key: str) -> list[float]:
    """A vector as PostgREST returns it: pgvector's text (`"[1,2]"`) or a `real[]` array."""
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
        return [float(x) for x in parsed]
    except (TypeError, ValueError) as exc:
        raise StoreError(f"malformed vector: {exc}", table="embeddings", key=key) from exc
