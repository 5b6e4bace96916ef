"""CampaignWorkflow: drafts every lead, waits for a person's decision, delivers.

It reads lead ids from the store page by page and runs one LeadOrchestrator child
per lead in a sliding window, so lead data never travels through history and the
pending-children limit is never approached. The approval gate is a signal waited
on durably with the campaign's approval timeout; nothing is sent before approval.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from campaign_core.ids import delivery_workflow_id, lead_workflow_id
    from campaign_core.models import (
        Approval,
        CampaignInput,
        CampaignStatus,
        Counts,
        Decision,
        DeliveryInput,
        DeliveryResult,
        LeadInput,
        LeadResult,
        PageRequest,
        Rejection,
        Stage,
        StageUpdate,
    )
    from campaign_core.registry import WORKFLOW_QUEUE, queue_name
    from workflows.agents import call_agent

CAMPAIGN_ID = SearchAttributeKey.for_keyword("CampaignId")
CAMPAIGN_STAGE = SearchAttributeKey.for_keyword("CampaignStage")
FLOW = SearchAttributeKey.for_keyword("Flow")


def search_attributes(campaign_id: str, flow: str, stage: Stage | None = None) -> (
    TypedSearchAttributes
):
    """The project's search attributes: ids and stage only, never personal data."""
    pairs = [SearchAttributePair(CAMPAIGN_ID, campaign_id), SearchAttributePair(FLOW, flow)]
    if stage is not None:
        pairs.append(SearchAttributePair(CAMPAIGN_STAGE, stage.value))
    return TypedSearchAttributes(pairs)


@workflow.defn(name="CampaignWorkflow")
class CampaignWorkflow:
    def __init__(self) -> None:
        self._campaign_id = ""
        self._stage = Stage.DRAFTING
        self._counts = Counts()
        self._approval: Approval | None = None
        self._rejection: Rejection | None = None

    # -- messages ------------------------------------------------------------------

    @workflow.signal(name="approve")
    def approve(self, approval: Approval) -> None:
        """Approve every draft, or only `lead_ids`. The first decision wins."""
        if self._approval is None and self._rejection is None:
            self._approval = approval
        else:
            workflow.logger.warning("ignoring a second decision on %s", self._campaign_id)

    @workflow.signal(name="reject")
    def reject(self, rejection: Rejection) -> None:
        """Reject the campaign: nothing is sent."""
        if self._approval is None and self._rejection is None:
            self._rejection = rejection
        else:
            workflow.logger.warning("ignoring a second decision on %s", self._campaign_id)

    @workflow.query(name="status")
    def status(self) -> CampaignStatus:
        return CampaignStatus(campaign_id=self._campaign_id, stage=self._stage,
                              counts=self._counts)

    # -- helpers -------------------------------------------------------------------

    async def _set_stage(self, inp: CampaignInput, stage: Stage, details: str) -> None:
        self._stage = stage
        workflow.set_current_details(f"**{stage.value}**: {details}")
        if inp.use_search_attributes:
            workflow.upsert_search_attributes([CAMPAIGN_STAGE.value_set(stage.value)])
        await call_agent("set_stage", StageUpdate(campaign_id=inp.campaign_id, stage=stage),
                         result_type=type(None), prefix=inp.queue_prefix,
                         summary=f"stage → {stage.value}")

    async def _draft_lead(self, inp: CampaignInput, lead_id: str) -> None:
        try:
            result: LeadResult = await workflow.execute_child_workflow(
                "LeadOrchestrator",
                LeadInput(campaign_id=inp.campaign_id, lead_id=lead_id,
                          queue_prefix=inp.queue_prefix),
                id=lead_workflow_id(inp.campaign_id, lead_id),
                task_queue=queue_name(WORKFLOW_QUEUE, inp.queue_prefix),
                result_type=LeadResult,
                static_summary=f"Lead {lead_id} of campaign {inp.campaign_id}",
                search_attributes=search_attributes(inp.campaign_id, "lead")
                if inp.use_search_attributes else None,
            )
        except ChildWorkflowError as err:
            workflow.logger.warning("lead orchestrator %s failed: %s", lead_id, err)
            self._counts.draft_failed += 1
            return
        if result.status == "drafted":
            self._counts.drafted += 1
        else:
            self._counts.draft_failed += 1

    async def _draft_all(self, inp: CampaignInput) -> None:
        after: str | None = None
        pending: set[asyncio.Task[None]] = set()
        while True:
            page = await call_agent(
                "list_lead_ids",
                PageRequest(campaign_id=inp.campaign_id, after=after, limit=inp.page_size),
                result_type=list[str], prefix=inp.queue_prefix, summary="next page of leads",
            )
            self._counts.leads += len(page)
            for lead_id in page:
                if len(pending) >= inp.window:
                    _, rest = await workflow.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    pending = set(rest)
                pending.add(asyncio.create_task(self._draft_lead(inp, lead_id)))
            if len(page) < inp.page_size:
                break
            after = page[-1]
        if pending:
            await workflow.wait(pending)

    # -- the run -------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: CampaignInput) -> CampaignStatus:
        self._campaign_id = inp.campaign_id
        await self._set_stage(inp, Stage.DRAFTING, f"drafting campaign {inp.name!r}")
        await self._draft_all(inp)
        c = self._counts
        await self._set_stage(
            inp, Stage.AWAITING_APPROVAL,
            f"{c.drafted} drafted, {c.draft_failed} failed; waiting for approve/reject",
        )
        try:
            await workflow.wait_condition(
                lambda: self._approval is not None or self._rejection is not None,
                timeout=timedelta(seconds=inp.approval_timeout_seconds),
                timeout_summary="approval timeout",
            )
        except TimeoutError:
            await self._set_stage(inp, Stage.EXPIRED, "no decision before the approval timeout")
            return self.status()

        decision_id = str(workflow.uuid4())
        if self._rejection is not None:
            await call_agent(
                "record_decision",
                Decision(campaign_id=inp.campaign_id, decision_id=decision_id,
                         decision="reject", by=self._rejection.by, note=self._rejection.reason),
                result_type=int, prefix=inp.queue_prefix,
                summary=f"rejected by {self._rejection.by}",
            )
            await self._set_stage(inp, Stage.REJECTED, f"rejected by {self._rejection.by}")
            return self.status()

        assert self._approval is not None
        approval = self._approval
        self._counts.approved = await call_agent(
            "record_decision",
            Decision(campaign_id=inp.campaign_id, decision_id=decision_id, decision="approve",
                     lead_ids=approval.lead_ids, by=approval.by, note=approval.note),
            result_type=int, prefix=inp.queue_prefix, summary=f"approved by {approval.by}",
        )
        await self._set_stage(inp, Stage.DELIVERING,
                              f"{self._counts.approved} approved by {approval.by}")
        result: DeliveryResult = await workflow.execute_child_workflow(
            "DeliveryOrchestrator",
            DeliveryInput(campaign_id=inp.campaign_id, channel=inp.channel,
                          queue_prefix=inp.queue_prefix, page_size=inp.page_size),
            id=delivery_workflow_id(inp.campaign_id),
            task_queue=queue_name(WORKFLOW_QUEUE, inp.queue_prefix),
            result_type=DeliveryResult,
            static_summary=f"Delivery of campaign {inp.campaign_id} via {inp.channel.value}",
            search_attributes=search_attributes(inp.campaign_id, "delivery")
            if inp.use_search_attributes else None,
        )
        self._counts.sent = result.sent
        self._counts.suppressed = result.suppressed
        self._counts.send_failed = result.failed
        await self._set_stage(
            inp, Stage.COMPLETED,
            f"sent {result.sent}, suppressed {result.suppressed}, failed {result.failed}",
        )
        return self.status()
