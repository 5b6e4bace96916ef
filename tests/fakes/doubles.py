"""Same-named test doubles for the agents, for tests of the orchestration alone.

They do the minimum a real agent leaves behind in the store (lead status, a draft
row) so the orchestrators' store-driven paging sees the same world, at a fraction
of the cost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from activities.sequence_agent import stop_reason_at_due, stop_reason_before_first
from campaign_core.envelope import EnvelopeRef
from campaign_core.ids import message_key
from campaign_core.models import DeliverInput, DeliveryOutcome, LeadInput, StoreDraftInput
from campaign_core.store.base import Store

#: Marks a follow-up's step in a double's envelope id (`env-draft-<lead>~step~2`).
STEP_MARK = "~step~"


def fast_agents(store: Store, sent: list[str] | None = None) -> dict[str, Callable[..., Any]]:
    """Doubles for every per-lead agent; `sent` collects the lead ids delivered.

    Steps after the first are drafted and delivered like the real agents do (the double
    of `deliver_message` also records the follow-up and schedules the next one; the stop
    checks, of step 1 and of a follow-up, are the real ones), and `sent` gets
    `<lead>#<step>` for them.
    """

    @activity.defn(name="store_lead")
    async def store_lead(inp: LeadInput) -> EnvelopeRef:
        return EnvelopeRef(envelope_id=f"env-lead-{inp.lead_id}", agent="double")

    @activity.defn(name="retrieve_knowledge")
    async def retrieve_knowledge(inp: LeadInput) -> EnvelopeRef:
        return EnvelopeRef(envelope_id=f"env-kb-{inp.lead_id}", agent="double", summary="0")

    @activity.defn(name="write_draft")
    async def write_draft(inp: LeadInput) -> EnvelopeRef:
        step = "" if inp.step == 1 else f"{STEP_MARK}{inp.step}"
        return EnvelopeRef(envelope_id=f"env-draft-{inp.lead_id}{step}", agent="double",
                           summary="d")

    @activity.defn(name="store_draft")
    async def store_draft(inp: StoreDraftInput) -> EnvelopeRef:
        _, mark, step = inp.envelope_id.rpartition(STEP_MARK)
        await store.upsert_draft(
            campaign_id=inp.campaign_id, lead_id=inp.lead_id, step=int(step) if mark else 1,
            subject="s", body="b", citations=[], provenance={"agent": "double"},
            envelope_id=inp.envelope_id)
        await store.set_lead_status(inp.campaign_id, inp.lead_id, "drafted")
        return EnvelopeRef(envelope_id=inp.envelope_id, agent="double")

    @activity.defn(name="deliver_message")
    async def deliver_message(inp: DeliverInput) -> DeliveryOutcome:
        key = message_key(inp.campaign_id, inp.lead_id, inp.step)
        done = await store.get_delivery(key)
        if inp.step > 1 and done is None:
            lead = await store.get_lead(inp.campaign_id, inp.lead_id)
            draft = await store.get_draft(inp.campaign_id, inp.lead_id, inp.step)
            reason = inp.stop_reason or (await stop_reason_at_due(
                store, inp.campaign_id, lead, inp.step, draft, company=inp.stop_on_company_reply)
                if lead else None)
            if reason is not None:
                await store.set_step_status(inp.campaign_id, inp.lead_id, inp.step, "stopped",
                                            reason)
                return DeliveryOutcome(lead_id=inp.lead_id, status="stopped", stop_reason=reason)
        if inp.step == 1 and done is None and (
                lead := await store.get_lead(inp.campaign_id, inp.lead_id)) is not None:
            first = await stop_reason_before_first(store, inp.campaign_id, lead)
            if first is not None:  # the real agent's step-1 check (issue 27)
                await store.set_step_status(inp.campaign_id, inp.lead_id, 1, "stopped", first)
                return DeliveryOutcome(lead_id=inp.lead_id, status="stopped", stop_reason=first)
        await store.upsert_delivery(message_key=key, campaign_id=inp.campaign_id,
                                    lead_id=inp.lead_id, step=inp.step,
                                    channel=inp.channel.value, status="sent", message_id=key)
        if inp.step > 1:
            await store.set_step_status(inp.campaign_id, inp.lead_id, inp.step, "sent")
        if inp.next_due_at is not None and inp.step < inp.steps:
            await store.schedule_step(inp.campaign_id, inp.lead_id, inp.step + 1, inp.next_due_at)
        # A retried attempt (the first one's result lost: a worker under load, or the
        # time-skipping server moving the clock past the heartbeat timeout while the attempt
        # ran) finds the delivery recorded and sends nothing, as the real agent does; only a
        # first send is one more message.
        if sent is not None and done is None:
            sent.append(inp.lead_id if inp.step == 1 else f"{inp.lead_id}#{inp.step}")
        return DeliveryOutcome(lead_id=inp.lead_id, status="sent", message_id=key)

    return {f.__name__: f for f in (store_lead, retrieve_knowledge, write_draft, store_draft,
                                    deliver_message)}
