"""Same-named test doubles for the agents, for tests of the orchestration alone.

They do the minimum a real agent leaves behind in the store (lead status, a draft
row) so the orchestrators' store-driven paging sees the same world, at a fraction
of the cost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from campaign_core.envelope import EnvelopeRef
from campaign_core.ids import message_key
from campaign_core.models import DeliverInput, DeliveryOutcome, LeadInput, StoreDraftInput
from campaign_core.store.base import Store


def fast_agents(store: Store, sent: list[str] | None = None) -> dict[str, Callable[..., Any]]:
    """Doubles for every per-lead agent; `sent` collects the lead ids delivered."""

    @activity.defn(name="store_lead")
    async def store_lead(inp: LeadInput) -> EnvelopeRef:
        return EnvelopeRef(envelope_id=f"env-lead-{inp.lead_id}", agent="double")

    @activity.defn(name="retrieve_knowledge")
    async def retrieve_knowledge(inp: LeadInput) -> EnvelopeRef:
        return EnvelopeRef(envelope_id=f"env-kb-{inp.lead_id}", agent="double", summary="0")

    @activity.defn(name="write_draft")
    async def write_draft(inp: LeadInput) -> EnvelopeRef:
        return EnvelopeRef(envelope_id=f"env-draft-{inp.lead_id}", agent="double", summary="d")

    @activity.defn(name="store_draft")
    async def store_draft(inp: StoreDraftInput) -> EnvelopeRef:
        await store.upsert_draft(
            campaign_id=inp.campaign_id, lead_id=inp.lead_id, step=1, subject="s", body="b",
            citations=[], provenance={"agent": "double"}, envelope_id=inp.envelope_id)
        await store.set_lead_status(inp.campaign_id, inp.lead_id, "drafted")
        return EnvelopeRef(envelope_id=inp.envelope_id, agent="double")

    @activity.defn(name="deliver_message")
    async def deliver_message(inp: DeliverInput) -> DeliveryOutcome:
        key = message_key(inp.campaign_id, inp.lead_id, inp.step)
        await store.upsert_delivery(message_key=key, campaign_id=inp.campaign_id,
                                    lead_id=inp.lead_id, step=inp.step,
                                    channel=inp.channel.value, status="sent", message_id=key)
        if sent is not None:
            sent.append(inp.lead_id)
        return DeliveryOutcome(lead_id=inp.lead_id, status="sent", message_id=key)

    return {f.__name__: f for f in (store_lead, retrieve_knowledge, write_draft, store_draft,
                                    deliver_message)}
