"""DeliveryOrchestrator: sends a campaign's approved drafts.

It pages approved lead ids from the store (never carrying them all in history)
and keeps a bounded number of sends in flight; the delivery agent makes each send
exactly-once, so a retry here is always safe.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from campaign_core.models import (
        DeliverInput,
        DeliveryInput,
        DeliveryOutcome,
        DeliveryResult,
        PageRequest,
    )
    from workflows.agents import call_agent
    from workflows.lead import failure_reason

IN_FLIGHT = 50


@workflow.defn(name="DeliveryOrchestrator")
class DeliveryOrchestrator:
    def __init__(self) -> None:
        self._result = DeliveryResult()

    @workflow.query(name="progress")
    def progress(self) -> DeliveryResult:
        return self._result

    async def _send(self, inp: DeliveryInput, lead_id: str) -> None:
        try:
            out = await call_agent(
                "deliver_message",
                DeliverInput(campaign_id=inp.campaign_id, lead_id=lead_id, channel=inp.channel),
                result_type=DeliveryOutcome, prefix=inp.queue_prefix,
                summary=f"deliver to lead {lead_id} via {inp.channel.value}",
            )
        except ActivityError as err:
            self._result.failed += 1
            workflow.logger.warning("delivery to %s failed: %s", lead_id, failure_reason(err))
            return
        if out.status == "sent":
            self._result.sent += 1
        elif out.status == "suppressed":
            self._result.suppressed += 1
        else:
            self._result.failed += 1

    @workflow.run
    async def run(self, inp: DeliveryInput) -> DeliveryResult:
        after: str | None = None
        pending: set[asyncio.Task[None]] = set()
        while True:
            page = await call_agent(
                "list_approved_lead_ids",
                PageRequest(campaign_id=inp.campaign_id, after=after, limit=inp.page_size),
                result_type=list[str], prefix=inp.queue_prefix, summary="next approved leads",
            )
            for lead_id in page:
                if len(pending) >= IN_FLIGHT:
                    _, rest = await workflow.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    pending = set(rest)
                pending.add(asyncio.create_task(self._send(inp, lead_id)))
            if len(page) < inp.page_size:
                break
            after = page[-1]
        if pending:
            await workflow.wait(pending)
        r = self._result
        workflow.set_current_details(
            f"sent {r.sent}, suppressed {r.suppressed}, failed {r.failed}"
        )
        return r
