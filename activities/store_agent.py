"""The DB-write agent: every store operation the orchestrators need, as activities.

Each is an idempotent upsert, so Temporal may retry it freely; a store that is down
raises an ordinary (retryable) error and the registry's policy keeps retrying.
"""

from __future__ import annotations

import difflib
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.base import Agent, permanent
from activities.copywriter import OFFLINE_ASK
from activities.guardrails import check_edit
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
from campaign_core.review import CONFLICT, GUARDRAIL, DraftEditRef, DraftVersionRef, Exclusion
from campaign_core.store.base import StoreError

#: The refusal of an edit as Temporal history holds it: the reasons quote the edit's
#: text, so they stay in the store (`DraftEditRow.reason`), where the control plane reads them.
REFUSED = "the guardrails refused the edit (the reasons are stored with it)"

#: Fixed sentences of the offline writer that an edited draft may keep.
OFFLINE_GROUNDING = [OFFLINE_ASK]


def edit_diff(old_subject: str, old_body: str, new_subject: str, new_body: str,
              old_version: int, new_version: int) -> str:
    """A unified diff of the subject and body, as the audit trail keeps it."""
    def text(subject: str, body: str) -> list[str]:
        return [f"Subject: {subject}\n", "\n", *(line + "\n" for line in body.splitlines())]

    return "".join(difflib.unified_diff(text(old_subject, old_body), text(new_subject, new_body),
                                        f"version {old_version}", f"version {new_version}"))


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
        step = int(draft.data.get("step", 1))
        failed = draft.data.get("failed_reason")
        failed = str(failed) if failed else None
        try:
            await self.store.upsert_draft(
                campaign_id=inp.campaign_id,
                lead_id=inp.lead_id,
                step=step,
                subject=str(draft.data["subject"]),
                body=str(draft.data["body"]),
                citations=[str(c) for c in draft.data.get("citations", [])],
                provenance=draft.provenance.model_dump(mode="json"),
                envelope_id=inp.envelope_id,
                failed_reason=failed,
            )
        except (KeyError, StoreError) as exc:
            raise permanent("InvalidInput", f"drafts[{inp.lead_id}]: {exc}") from exc
        await self._settle_lead_status(inp.campaign_id, inp.lead_id)
        record = Record(
            kind="draft_stored",
            key=inp.lead_id,
            data={"envelope_id": inp.envelope_id},
            provenance=self.provenance(f"envelope:{inp.envelope_id}", inp.model_dump()),
        )
        ref = await self.keep(self.envelope(inp.campaign_id, [record], started), inp.lead_id,
                              f"step {step} failed its checks" if failed else "draft stored")
        return ref.model_copy(update={"failed": bool(failed)})

    async def _settle_lead_status(self, campaign_id: str, lead_id: str) -> None:
        """The lead is `failed` (with the first failed step's reason) while any of its steps
        is, else `drafted`: a later passing step or a reviewer's fix must not hide a failure,
        and fixing the last failed step makes the lead an ordinary drafted one."""
        steps = await self.store.list_lead_drafts(campaign_id, lead_id)
        failed = [d for d in steps if d.failed_reason]
        if failed:
            await self.store.set_lead_status(campaign_id, lead_id, "failed",
                                             f"step {failed[0].step}: {failed[0].failed_reason}")
        else:
            await self.store.set_lead_status(campaign_id, lead_id, "drafted")

    @activity.defn(name="record_lead_failure")
    async def record_lead_failure(self, inp: LeadFailure) -> None:
        """Mark the lead failed with the full reason: the one its failed activity left in
        the audit trail (history only carries a reason without lead data), else `error`."""
        full = await latest_failure_reason(self.store, inp.campaign_id, inp.lead_id)
        reason = full or inp.error
        written = {d.step for d in await self.store.list_lead_drafts(inp.campaign_id, inp.lead_id)}
        for step in range(1, inp.steps + 1):
            if step not in written:  # an empty failed step: the reviewer can write it
                await self.store.upsert_draft(
                    campaign_id=inp.campaign_id, lead_id=inp.lead_id, step=step, subject="",
                    body="", citations=[], provenance={"source": "none", "agent": self.name},
                    envelope_id="", failed_reason=f"not written: {reason}")
        await self.store.set_lead_status(inp.campaign_id, inp.lead_id, "failed", reason)

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
            send_passing=inp.send_passing,
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
        data = await self._request(inp.campaign_id, inp.request_id)
        note = data.get("note")
        return inp.model_copy(update={"by": str(data.get("by") or inp.by),
                                      "note": None if note is None else str(note)})

    async def _request(self, campaign_id: str, request_id: str) -> dict[str, Any]:
        """The control plane's stored request (who, why) that history only names by id."""
        env = await self.store.get_envelope(request_id)
        found = [r for r in env.records if r.kind == DECISION_REQUEST] if env else []
        if env is None or not found or env.metadata.campaign_id != campaign_id:
            raise permanent("NotFound", f"decision request {request_id} is not in the audit "
                            f"trail of campaign {campaign_id}")
        return found[0].data

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
                sender=await self.store.lead_sender(page.campaign_id, lead_id),
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

    # -- reviewers' edits and exclusions ----------------------------------------------

    @activity.defn(name="apply_draft_edit")
    async def apply_draft_edit(self, ref: DraftEditRef) -> DraftVersionRef:
        """Check a reviewer's pending edit with the guardrails and make it the next version.

        Refused (non-retryable, the edit marked refused with the reason) when the draft
        moved past the edit's base version (`Conflict`) or a guardrail fails
        (`GuardrailViolation`). The text is read from the store, never from history.
        """
        started = now_utc()
        edit = await self.store.get_draft_edit(ref.edit_id)
        if edit is None or (edit.campaign_id, edit.lead_id, edit.step) != (
                ref.campaign_id, ref.lead_id, ref.step):
            raise permanent("NotFound", f"edit {ref.edit_id} is not on record for lead "
                            f"{ref.lead_id} step {ref.step}")
        draft = await self.store.get_draft(ref.campaign_id, ref.lead_id, ref.step)
        if draft is None:
            raise permanent("NotFound", f"lead {ref.lead_id} has no draft for step {ref.step}")
        if edit.status == "applied":
            return DraftVersionRef(lead_id=ref.lead_id, step=ref.step, version=edit.version or 1)
        if edit.status == "refused":
            raise permanent(GUARDRAIL, REFUSED)

        async def refuse(kind: str, reason: str, shown: str) -> ApplicationError:
            await self.store.refuse_draft_edit(ref.edit_id, reason)
            return permanent(kind, shown)

        if edit.base_version is not None and edit.base_version != draft.version:
            stale = (f"version: the draft of lead {ref.lead_id} step {ref.step} is at version "
                     f"{draft.version}, not {edit.base_version}: someone edited it meanwhile; "
                     "reload it and edit again")
            raise await refuse(CONFLICT, stale, stale)
        subject = (edit.subject if edit.subject is not None else draft.subject).strip()
        body = (edit.body if edit.body is not None else draft.body).strip("\n").rstrip()
        campaign = await self.store.get_campaign(ref.campaign_id)
        lead = await self.store.get_lead(ref.campaign_id, ref.lead_id)
        if campaign is None or lead is None:
            raise permanent("NotFound", f"lead {ref.lead_id} is not in campaign {ref.campaign_id}")
        passages = await self.store.get_retrieval(ref.campaign_id, ref.lead_id)
        reasons = check_edit(subject, body, passages=passages, lead=lead, brief=campaign.brief,
                             grounding=OFFLINE_GROUNDING)
        if reasons:
            raise await refuse(GUARDRAIL, "guardrail: " + "; ".join(reasons), REFUSED)
        applied = await self.store.apply_draft_edit(ref.edit_id, subject=subject, body=body,
                                                    expected_version=draft.version)
        if applied is None:  # another edit was applied between our read and write: re-read
            raise ApplicationError(f"draft of lead {ref.lead_id} changed meanwhile; retrying",
                                   type="DraftMoved")
        record = Record(
            kind="draft_edit", key=f"{ref.lead_id}:{ref.step}",
            data={"edit_id": ref.edit_id, "step": ref.step, "version": applied.version,
                  "previous_version": draft.version, "by": edit.edited_by,
                  "diff": edit_diff(draft.subject, draft.body, subject, body, draft.version,
                                    applied.version)},
            provenance=self.provenance(f"person:{edit.edited_by}", {
                "edit_id": ref.edit_id, "previous_version": draft.version}),
        )
        await self.keep(self.envelope(ref.campaign_id, [record], started), ref.lead_id,
                        f"draft edited (version {applied.version})")
        if draft.failed_reason:  # a failed step fixed: the lead may no longer be held
            await self._settle_lead_status(ref.campaign_id, ref.lead_id)
        return DraftVersionRef(lead_id=ref.lead_id, step=ref.step, version=applied.version)

    @activity.defn(name="set_excluded")
    async def set_excluded(self, inp: Exclusion) -> list[int]:
        """Exclude a lead's draft(s) from the approval, or include them again; returns
        the steps changed, and records who did it in the audit trail."""
        started = now_utc()
        if inp.request_id is not None:
            who = (await self._request(inp.campaign_id, inp.request_id)).get("by")
            inp = inp.model_copy(update={"by": str(who or inp.by)})
        steps = await self.store.set_draft_excluded(inp.campaign_id, inp.lead_id, inp.step,
                                                    inp.excluded)
        if not steps:
            raise permanent("NotFound", f"lead {inp.lead_id} has no draft"
                            + (f" for step {inp.step}" if inp.step is not None else ""))
        action = "excluded" if inp.excluded else "included"
        record = Record(
            kind=f"draft_{action}", key=inp.lead_id,
            data={"status": action, "steps": steps, "by": inp.by},
            provenance=self.provenance(f"person:{inp.by}", inp.model_dump(mode="json")),
        )
        await self.keep(self.envelope(inp.campaign_id, [record], started), inp.lead_id,
                        f"draft {action}")
        return steps
