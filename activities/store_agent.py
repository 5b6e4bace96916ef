"""The DB-write agent: every store operation the orchestrators need, as activities.

Each is an idempotent upsert, so Temporal may retry it freely; a store that is down
raises an ordinary (retryable) error and the registry's policy keeps retrying.
"""

from __future__ import annotations

from temporalio import activity

from activities.base import Agent, permanent
from activities.history_guard import latest_failure_reason
from campaign_core.decisions import DECISION_REQUEST
from campaign_core.envelope import EnvelopeRef, Record, now_utc
from campaign_core.history_text import domain_key
from campaign_core.models import (
    ApprovedLead,
    Decision,
    LeadFailure,
    LeadIdsCheck,
    LeadInput,
    PageRequest,
    StageUpdate,
    StoreDraftInput,
)
from campaign_core.store.base import StoreError


class StoreAgent(Agent):
    name = "store"

    @activity.defn(name="store_lead")
    async def store_lead(self, inp: LeadInput) -> EnvelopeRef:
        """Mark the lead as being drafted and record that step in the audit trail."""
        started = now_utc()
        lead = await self.store.get_lead(inp.campaign_id, inp.lead_id)
        if lead is None:
            raise permanent("NotFound", f"lead {inp.lead_id} is not in campaign {inp.campaign_id}")
        await self.store.set_lead_status(inp.campaign_id, inp.lead_id, "drafting")
        record = Record(
            kind="lead",
            key=inp.lead_id,
            data={"status": "drafting", "rows": lead.rows},
            provenance=self.provenance(f"leads:{inp.campaign_id}", lead.model_dump(mode="json")),
        )
        env = self.envelope(inp.campaign_id, [record], started)
        return await self.keep(env, inp.lead_id, "lead stored")

    @activity.defn(name="list_lead_ids")
    async def list_lead_ids(self, page: PageRequest) -> list[str]:
        return await self.store.list_lead_ids(page.campaign_id, page.after, page.limit)

    @activity.defn(name="store_draft")
    async def store_draft(self, inp: StoreDraftInput) -> EnvelopeRef:
        """Persist the copywriter's draft, read from its envelope (only ids travel)."""
        started = now_utc()
        env = await self.store.get_envelope(inp.envelope_id)
        drafts = [r for r in env.records if r.kind == "draft"] if env else []
        if not drafts:
            raise permanent("NotFound", f"envelope {inp.envelope_id} holds no draft")
        draft = drafts[0]
        try:
            await self.store.upsert_draft(
                campaign_id=inp.campaign_id,
                lead_id=inp.lead_id,
                step=int(draft.data.get("step", 1)),
                subject=str(draft.data["subject"]),
                body=str(draft.data["body"]),
                citations=[str(c) for c in draft.data.get("citations", [])],
                provenance=draft.provenance.model_dump(mode="json"),
                envelope_id=inp.envelope_id,
            )
        except (KeyError, StoreError) as exc:
            raise permanent("InvalidInput", f"drafts[{inp.lead_id}]: {exc}") from exc
        await self.store.set_lead_status(inp.campaign_id, inp.lead_id, "drafted")
        record = Record(
            kind="draft_stored",
            key=inp.lead_id,
            data={"envelope_id": inp.envelope_id},
            provenance=self.provenance(f"envelope:{inp.envelope_id}", inp.model_dump()),
        )
        return await self.keep(
            self.envelope(inp.campaign_id, [record], started), inp.lead_id, "draft stored"
        )

    @activity.defn(name="record_lead_failure")
    async def record_lead_failure(self, inp: LeadFailure) -> None:
        """Mark the lead failed with the full reason: the one its failed activity left in
        the audit trail (history only carries a reason without lead data), else `error`."""
        full = await latest_failure_reason(self.store, inp.campaign_id, inp.lead_id)
        await self.store.set_lead_status(inp.campaign_id, inp.lead_id, "failed",
                                         full or inp.error)

    @activity.defn(name="set_stage")
    async def set_stage(self, inp: StageUpdate) -> None:
        await self.store.set_stage(inp.campaign_id, inp.stage.value)

    @activity.defn(name="record_decision")
    async def record_decision(self, inp: Decision) -> int:
        """Write the decision and its author to the store and the audit trail."""
        started = now_utc()
        inp = await self._with_author(inp)
        approved = await self.store.record_decision(
            campaign_id=inp.campaign_id,
            decision_id=inp.decision_id,
            decision=inp.decision,
            lead_ids=inp.lead_ids,
            by=inp.by,
            note=inp.note,
        )
        record = Record(
            kind="decision",
            key=inp.decision_id,
            data={**inp.model_dump(mode="json"), "approved_drafts": approved},
            provenance=self.provenance(f"person:{inp.by}", inp.model_dump(mode="json")),
        )
        await self.keep(self.envelope(inp.campaign_id, [record], started), None, inp.decision)
        return approved

    async def _with_author(self, inp: Decision) -> Decision:
        """The decision with its author and note read from the control plane's request
        (`request_id`), which kept them out of history; as it came without one."""
        if inp.request_id is None:
            return inp
        env = await self.store.get_envelope(inp.request_id)
        found = [r for r in env.records if r.kind == DECISION_REQUEST] if env else []
        if env is None or not found or env.metadata.campaign_id != inp.campaign_id:
            raise permanent("NotFound", f"decision request {inp.request_id} is not in the audit "
                            f"trail of campaign {inp.campaign_id}")
        data = found[0].data
        note = data.get("note")
        return inp.model_copy(update={"by": str(data.get("by") or inp.by),
                                      "note": None if note is None else str(note)})

    @activity.defn(name="list_approved_leads")
    async def list_approved_leads(self, page: PageRequest) -> list[ApprovedLead]:
        """A page of approved leads with the zone their send window is computed in."""
        ids = await self.store.list_approved_lead_ids(page.campaign_id, page.after, page.limit)
        out = []
        for lead_id in ids:
            lead = await self.store.get_lead(page.campaign_id, lead_id)
            out.append(ApprovedLead(
                lead_id=lead_id,
                timezone=lead.timezone if lead else None,
                domain=domain_key(page.campaign_id, lead.email) if lead else None,
            ))
        return out

    @activity.defn(name="check_lead_ids")
    async def check_lead_ids(self, check: LeadIdsCheck) -> list[str]:
        """The ids in `check` that have no draft in the campaign (so cannot be approved)."""
        unknown = []
        for lead_id in check.lead_ids:
            if await self.store.get_draft(check.campaign_id, lead_id) is None:
                unknown.append(lead_id)
        return unknown
