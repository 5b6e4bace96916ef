"""CampaignWorkflow: drafts every lead, waits for a person's decision, delivers.

Leads are paged from the store and drafted by one child per lead in a sliding window;
the run continues as new with only a cursor and counters. Nothing is sent before
approval. See docs/architecture.md ("Orchestration and wiring").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.sequence_agent import SequenceAgent
    from activities.store_agent import StoreAgent
    from campaign_core.budget import BUDGET_REASON
    from campaign_core.ids import delivery_workflow_id, lead_workflow_id
    from campaign_core.metrics import EngineMetrics
    from campaign_core.models import (
        AddLeads,
        Approval,
        AssignSenders,
        CampaignCarry,
        CampaignInput,
        CampaignStatus,
        Decision,
        DeliveryEventSignal,
        DeliveryResult,
        LeadIdsCheck,
        LeadInput,
        PageRequest,
        Rejection,
        ReplySignal,
        Stage,
        StageUpdate,
    )
    from campaign_core.queues import WORKFLOW_QUEUE, queue_name
    from campaign_core.review import CONFLICT, DraftEditRef, DraftVersionRef, Exclusion
    from workflows.agents import call_agent
    from workflows.breaker import BreakerListener
    from workflows.delivery import DeliveryOrchestrator
    from workflows.lead import LeadOrchestrator

CAMPAIGN_ID = SearchAttributeKey.for_keyword("CampaignId")
CAMPAIGN_STAGE = SearchAttributeKey.for_keyword("CampaignStage")
FLOW = SearchAttributeKey.for_keyword("Flow")

#: Error types that mean the whole campaign cannot go on (e.g. a bad LLM key, or a
#: budget that cannot be enforced because the model's price is unknown).
CAMPAIGN_FATAL = {"LLMAuthError", "LLMPriceUnknown"}


def _conflict(message: str) -> ApplicationError:
    """A refusal due to the campaign's state (HTTP 409, exit 2)."""
    return ApplicationError(message, type=CONFLICT, non_retryable=True)


def _refusal(err: ActivityError) -> ApplicationError:
    """The store agent's refusal of an edit or exclusion, passed on with its own type and
    message (a guardrail's reasons, a stale version, an unknown lead)."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return ApplicationError(cause.message, type=cause.type, non_retryable=True)
    return ApplicationError(str(err), type="ActivityFailed", non_retryable=True)


def search_attributes(campaign_id: str, flow: str, stage: Stage | None = None) -> (
    TypedSearchAttributes
):
    """The project's search attributes: ids and stage only, never personal data."""
    pairs = [SearchAttributePair(CAMPAIGN_ID, campaign_id), SearchAttributePair(FLOW, flow)]
    if stage is not None:
        pairs.append(SearchAttributePair(CAMPAIGN_STAGE, stage.value))
    return TypedSearchAttributes(pairs)


@workflow.defn(name="CampaignWorkflow")
class CampaignWorkflow(BreakerListener):
    @workflow.init
    def __init__(self, inp: CampaignInput) -> None:
        """The state a run starts from, set before any signal or update of the run's first
        task is handled: one that arrives right after a continue-as-new (a pause, a cancel)
        must change the carried state, not be overwritten by it when `run` starts."""
        self._inp = inp
        self._stage = Stage.DRAFTING
        self._carry = inp.carry.model_copy(deep=True) if inp.carry else CampaignCarry()
        self._error: str | None = None
        self._decision_recorded = False
        self._delivery_running = False
        self._paging_done_at_end = False  # drafting finished: too late to add leads
        self._added: set[str] = set(self._carry.added_lead_ids)  # for quick lookups
        self._reviews_in_flight = 0  # edits and exclusions being written to the store

    # -- decisions -------------------------------------------------------------------

    @property
    def _decided(self) -> bool:
        return self._carry.approval is not None or self._carry.rejection is not None

    def _check_decidable(self) -> None:
        """Why a decision cannot be taken now, as a message for the person who tried."""
        cid = self._inp.campaign_id
        if self._decided:
            raise _conflict(f"campaign {cid!r} has already been decided (see `campaign audit`)")
        if self._stage is Stage.DRAFTING:
            c = self._carry.counts
            raise _conflict(
                f"campaign {cid!r} is still drafting ({c.drafted + c.draft_failed} of "
                f"{c.leads} leads done so far); decide once it is awaiting_approval"
            )
        if self._stage is not Stage.AWAITING_APPROVAL:
            raise _conflict(f"campaign {cid!r} is {self._stage.value}: it takes no decision now")

    @workflow.signal(name="approve")
    def approve_signal(self, approval: Approval) -> None:
        """Approve every draft, or only `lead_ids`. The first decision wins."""
        if self._decided:
            workflow.logger.warning("ignoring a second decision")
        else:
            self._carry.approval = approval

    @workflow.signal(name="reject")
    def reject_signal(self, rejection: Rejection) -> None:
        """Reject the campaign: nothing is sent. The first decision wins."""
        if self._decided:
            workflow.logger.warning("ignoring a second decision")
        else:
            self._carry.rejection = rejection

    @workflow.update(name="approve")
    async def approve_update(self, approval: Approval) -> int:
        """Approve synchronously; returns how many drafts were approved."""
        if approval.lead_ids:
            unknown = await call_agent(
                StoreAgent.check_lead_ids,
                LeadIdsCheck(campaign_id=self._inp.campaign_id, lead_ids=approval.lead_ids),
                prefix=self._inp.queue_prefix, summary="check lead ids",
            )
            if unknown:
                raise ApplicationError(
                    f"no draft for lead id(s) {', '.join(unknown[:20])}", type="InvalidInput"
                )
        self._check_decidable()
        self._carry.approval = approval
        await workflow.wait_condition(lambda: self._decision_recorded)
        return self._carry.counts.approved

    @approve_update.validator
    def _validate_approve(self, approval: Approval) -> None:
        self._check_decidable()

    @workflow.update(name="reject")
    async def reject_update(self, rejection: Rejection) -> str:
        self._check_decidable()
        self._carry.rejection = rejection
        await workflow.wait_condition(lambda: self._decision_recorded)
        return self._stage.value

    @reject_update.validator
    def _validate_reject(self, rejection: Rejection) -> None:
        self._check_decidable()

    # -- reviewers' edits and exclusions ----------------------------------------------
    # Valid only while awaiting approval and undecided (the validators); the approval is
    # recorded only once every accepted edit or exclusion is written (see `run`), so an
    # approval approves exactly the versions edited before it, and an edit after it is
    # refused. Only ids travel: the edit's text waits in the store as a pending version.

    def _check_reviewable(self, what: str, campaign_id: str) -> None:
        cid = self._inp.campaign_id
        if campaign_id != cid:  # each campaign's drafts only through its own workflow
            raise ApplicationError(f"this is campaign {cid!r}, not {campaign_id!r}",
                                   type="InvalidInput", non_retryable=True)
        if self._decided:
            raise _conflict(f"campaign {cid!r} has already been decided: drafts can no "
                            f"longer be {what}")
        if self._stage is not Stage.AWAITING_APPROVAL or self._carry.cancelled:
            stage = "cancelling" if self._carry.cancelled else self._stage.value
            raise _conflict(f"campaign {cid!r} is {stage}: drafts can be {what} only while "
                            "it is awaiting_approval")

    @workflow.update(name="edit_draft")
    async def edit_draft(self, ref: DraftEditRef) -> DraftVersionRef:
        """Make a reviewer's pending edit (checked by the guardrails) the draft's next version."""
        self._reviews_in_flight += 1
        try:
            return await call_agent(StoreAgent.apply_draft_edit, ref,
                                    prefix=self._inp.queue_prefix, summary="apply a draft edit")
        except ActivityError as err:
            raise _refusal(err) from None
        finally:
            self._reviews_in_flight -= 1

    @edit_draft.validator
    def _validate_edit(self, ref: DraftEditRef) -> None:
        self._check_reviewable("edited", ref.campaign_id)

    @workflow.update(name="set_excluded")
    async def set_excluded(self, exclusion: Exclusion) -> list[int]:
        """Leave a lead's draft(s) out of the approval, or put them back; the steps changed."""
        self._reviews_in_flight += 1
        try:
            return await call_agent(
                StoreAgent.set_excluded, exclusion, prefix=self._inp.queue_prefix,
                summary="exclude a draft" if exclusion.excluded else "include a draft")
        except ActivityError as err:
            raise _refusal(err) from None
        finally:
            self._reviews_in_flight -= 1

    @set_excluded.validator
    def _validate_excluded(self, exclusion: Exclusion) -> None:
        self._check_reviewable("excluded or included", exclusion.campaign_id)

    @workflow.update(name="approve_leads")
    async def approve_leads(self, approval: Approval) -> int:
        """Approve a selection of leads during the review (their drafts at the versions
        they have now); the campaign still awaits its decision, which sends them with the
        rest. Returns how many leads are approved so far."""
        self._reviews_in_flight += 1
        try:
            return await self._record(self._inp, "approve_leads", approval.by, approval.note,
                                      approval.lead_ids, approval.request_id,
                                      send_passing=approval.send_passing)
        finally:
            self._reviews_in_flight -= 1

    @approve_leads.validator
    def _validate_approve_leads(self, approval: Approval) -> None:
        self._check_reviewable("approved", self._inp.campaign_id)
        if not approval.lead_ids:
            raise ApplicationError("lead_ids: name the leads to approve", type="InvalidInput",
                                   non_retryable=True)

    # -- more leads ------------------------------------------------------------------

    @workflow.update(name="add_leads")
    def add_leads(self, more: AddLeads) -> int:
        """Draft these (already stored) leads too; returns how many were new to the run.

        They are drafted after the paged ones. Paging skips them, so a lead whose id
        sorts after the cursor is not drafted twice.
        """
        fresh = [lid for lid in dict.fromkeys(more.lead_ids) if lid not in self._added]
        self._carry.added_lead_ids.extend(fresh)
        self._added.update(fresh)
        self._details(f"{len(fresh)} lead(s) added")
        return len(fresh)

    @add_leads.validator
    def _validate_add_leads(self, more: AddLeads) -> None:
        cid = self._inp.campaign_id
        if self._stage is not Stage.DRAFTING or self._paging_done_at_end:
            raise ValueError(f"campaign {cid!r} is {self._stage.value}: leads can be added "
                             "only while it is drafting")
        if self._carry.cancelled or self._error:
            raise ValueError(f"campaign {cid!r} is stopping: no leads can be added")

    # -- control ---------------------------------------------------------------------

    async def _forward(self, signal: Callable[..., Any], arg: object = None) -> None:
        """Pass control signals and delivery events on to the delivery orchestrator, by its
        handler (`DeliveryOrchestrator.pause`)."""
        if self._delivery_running:
            handle = workflow.get_external_workflow_handle_for(
                DeliveryOrchestrator.run, delivery_workflow_id(self._inp.campaign_id))
            if arg is None:
                await handle.signal(signal)
            else:
                await handle.signal(signal, arg)

    @workflow.signal(name="pause")
    async def pause(self) -> None:
        """Hold: start no new lead and send nothing until resumed."""
        self._carry.paused = True
        self._details()
        await self._forward(DeliveryOrchestrator.pause)

    @workflow.signal(name="resume")
    async def resume(self) -> None:
        self._carry.paused = False
        self._carry.paused_reason = None
        self._details()
        await self._forward(DeliveryOrchestrator.resume)

    @workflow.signal(name="delivery_event")
    async def delivery_event(self, event: DeliveryEventSignal) -> None:
        """A bounce or complaint for one of our messages (from the API's webhook)."""
        await self._forward(DeliveryOrchestrator.delivery_event, event)

    @workflow.signal(name="senders_changed")
    async def senders_changed(self) -> None:
        """A sender was resumed (issue 28): the delivery orchestrator asks the schedule again
        at once, so the sends its pause held go out without waiting for the next check."""
        await self._forward(DeliveryOrchestrator.senders_changed)

    @workflow.signal(name="reply")
    async def reply(self, signal: ReplySignal) -> None:
        """A reply matched to one of our leads (replies ingestion): its sequence stops at
        once, so a follow-up already waiting for its due time never fires."""
        await self._forward(DeliveryOrchestrator.reply, signal)

    def breaker_opened(self, reason: str) -> None:
        """The delivery orchestrator paused itself (`circuit_breaker`): record why, for
        `status` and the UI."""
        self._carry.paused = True
        self._carry.paused_reason = reason
        self._details(reason)

    @workflow.signal(name="cancel")
    async def cancel(self) -> None:
        """Stop drafting and sending; what is in flight finishes so the record stays whole."""
        self._carry.cancelled = True
        await self._forward(DeliveryOrchestrator.cancel)

    @workflow.query(name="status")
    def status(self) -> CampaignStatus:
        return CampaignStatus(
            campaign_id=self._inp.campaign_id,
            stage=self._stage, counts=self._carry.counts, paused=self._carry.paused,
            error=self._error, paused_reason=self._carry.paused_reason,
        )

    # -- helpers ---------------------------------------------------------------------

    def _details(self, note: str = "") -> None:
        c = self._carry.counts
        paused = " — **paused**" if self._carry.paused else ""
        workflow.set_current_details(
            f"**{self._stage.value}**{paused}\n\n"
            f"leads {c.leads} · drafted {c.drafted} · failed {c.draft_failed} · "
            f"approved {c.approved} · sent {c.sent} · suppressed {c.suppressed} · "
            f"send failed {c.send_failed} · run {self._carry.runs}"
            + (f"\n\n{note}" if note else "")
        )

    async def _set_stage(self, inp: CampaignInput, stage: Stage, note: str) -> None:
        self._stage = stage
        self._details(note)
        if inp.use_search_attributes:
            workflow.upsert_search_attributes([CAMPAIGN_STAGE.value_set(stage.value)])
        await call_agent(StoreAgent.set_stage, StageUpdate(campaign_id=inp.campaign_id, stage=stage),
                         prefix=inp.queue_prefix, summary=f"stage → {stage.value}")

    async def _draft_lead(self, inp: CampaignInput, lead_id: str) -> None:
        counts = self._carry.counts
        try:
            result = await workflow.execute_child_workflow(
                LeadOrchestrator.run,
                LeadInput(campaign_id=inp.campaign_id, lead_id=lead_id,
                          queue_prefix=inp.queue_prefix, steps=inp.steps),
                id=lead_workflow_id(inp.campaign_id, lead_id),
                task_queue=queue_name(WORKFLOW_QUEUE, inp.queue_prefix),
                static_summary=f"Lead {lead_id} of campaign {inp.campaign_id}",
                static_details=f"store → retrieve → write → store draft, for lead `{lead_id}`",
                search_attributes=search_attributes(inp.campaign_id, "lead")
                if inp.use_search_attributes else None,
            )
        except ChildWorkflowError as err:
            workflow.logger.warning("lead orchestrator %s failed: %s", lead_id, err)
            counts.draft_failed += 1
            EngineMetrics(workflow.metric_meter()).leads(failed=1)
            return
        if result.status == "budget":
            self._stopped_by_budget(inp, lead_id, result.error or "")
            return
        if result.status == "drafted":
            counts.drafted += 1
            EngineMetrics(workflow.metric_meter()).leads(drafted=1)
        else:
            counts.draft_failed += 1
            EngineMetrics(workflow.metric_meter()).leads(failed=1)
            if result.error_type in CAMPAIGN_FATAL and self._error is None:
                self._error = result.error or result.error_type
        self._details()

    def _stopped_by_budget(self, inp: CampaignInput, lead_id: str, why: str) -> None:
        """A refused LLM call: pause drafting and remember the lead, to draft it again first
        on resume (the carry keeps it across continue-as-new). The lead is not failed."""
        carry = self._carry
        if lead_id not in carry.budget_lead_ids:
            carry.budget_lead_ids.append(lead_id)
        carry.paused = True
        carry.paused_reason = (f"{BUDGET_REASON}: {why}; `campaign resume {inp.campaign_id} "
                               "--budget-usd M` raises it")
        self._details(carry.paused_reason)

    async def _redraft(self, inp: CampaignInput, pending: set[asyncio.Task[None]]) -> None:
        """Start the leads the budget stopped, in the window, until none is left or drafting
        pauses again (a call refused once more) or stops."""
        carry = self._carry
        while carry.budget_lead_ids and not (carry.paused or carry.cancelled or self._error):
            if len(pending) >= inp.window:
                done, _ = await workflow.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                pending.difference_update(done)
                continue
            lead_id = carry.budget_lead_ids.pop(0)
            pending.add(asyncio.create_task(self._draft_lead(inp, lead_id)))

    async def _draft_all(self, inp: CampaignInput) -> None:
        """Start a child per lead, `inp.window` at a time; may continue as new."""
        carry = self._carry
        pending: set[asyncio.Task[None]] = set()
        started = 0
        while not (carry.cancelled or self._error):
            page = await call_agent(
                StoreAgent.list_lead_ids,
                PageRequest(campaign_id=inp.campaign_id, after=carry.after, limit=inp.page_size),
                prefix=inp.queue_prefix, summary="next page of leads",
            )
            await self._assign_senders(inp, page)
            for lead_id in page:
                if lead_id in self._added:
                    carry.after = lead_id  # added while drafting: drafted from that list
                    continue
                if not await self._start_lead(inp, lead_id, pending, paged=True):
                    break
                carry.after = lead_id
                started += 1
            if len(page) < inp.page_size or carry.cancelled or self._error:
                break
            if started >= inp.leads_per_run or workflow.info().is_continue_as_new_suggested():
                if pending:
                    await workflow.wait(pending)
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not (carry.cancelled or self._error):
                    next_carry = carry.model_copy(update={"runs": carry.runs + 1})
                    workflow.continue_as_new(inp.model_copy(update={"carry": next_carry}))
        # Leads added while drafting, then whatever is still in flight.
        drained = 0
        while not (carry.cancelled or self._error):
            if drained < len(carry.added_lead_ids):
                await self._assign_senders(inp, carry.added_lead_ids[drained:drained + 1])
                if not await self._start_lead(inp, carry.added_lead_ids[drained], pending):
                    break
                drained += 1
                continue
            if carry.budget_lead_ids and not carry.paused:
                await self._redraft(inp, pending)
                continue
            if carry.budget_lead_ids and not pending:  # all done but these: wait for resume
                await workflow.wait_condition(
                    lambda: not carry.paused or carry.cancelled or self._error is not None)
                continue
            if not pending:
                break
            done, _ = await workflow.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            pending.difference_update(done)
        self._paging_done_at_end = True
        if pending:
            await workflow.wait(pending)

    async def _assign_senders(self, inp: CampaignInput, lead_ids: list[str]) -> None:
        """Give the leads their senders before they are drafted (issue 28), so their drafts
        sign with the sender's name; a campaign without senders calls nothing (runs before
        senders existed replay unchanged)."""
        if inp.senders and lead_ids:
            await call_agent(
                SequenceAgent.assign_senders,
                AssignSenders(campaign_id=inp.campaign_id, lead_ids=lead_ids,
                              senders=inp.senders),
                prefix=inp.queue_prefix, summary=f"give {len(lead_ids)} lead(s) their sender")

    async def _start_lead(self, inp: CampaignInput, lead_id: str,
                          pending: set[asyncio.Task[None]], *, paged: bool = False) -> bool:
        """Start one lead's orchestrator when pause and the window allow; False if stopping.

        A `paged` lead that `add_leads` named while this waited is left to the added list
        (its page was read after the lead was stored but before the Update arrived), so
        it is drafted once.
        """
        carry = self._carry
        while True:
            await workflow.wait_condition(
                lambda: not carry.paused or carry.cancelled or self._error is not None)
            if carry.cancelled or self._error:
                return False
            if carry.budget_lead_ids:
                await self._redraft(inp, pending)  # the leads the budget stopped come first
                continue
            if len(pending) >= inp.window:
                done, _ = await workflow.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                pending.difference_update(done)
                if carry.budget_lead_ids:  # the budget paused drafting meanwhile
                    continue
            break
        if paged and lead_id in self._added:
            return True
        pending.add(asyncio.create_task(self._draft_lead(inp, lead_id)))
        carry.counts.leads += 1
        return True

    async def _record(self, inp: CampaignInput, decision: str, by: str, note: str | None,
                      lead_ids: list[str] | None = None, request_id: str | None = None,
                      *, send_passing: bool = False) -> int:
        return await call_agent(
            StoreAgent.record_decision,
            Decision(campaign_id=inp.campaign_id, decision_id=str(workflow.uuid4()),
                     decision=decision, lead_ids=lead_ids, by=by, note=note,
                     request_id=request_id, send_passing=send_passing),
            prefix=inp.queue_prefix, summary=f"record the {decision} decision",
        )

    # -- the run ---------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: CampaignInput) -> CampaignStatus:
        if inp.carry is None:  # the first run (the carry is set in `__init__`)
            await self._set_stage(inp, Stage.DRAFTING, f"drafting campaign {inp.name!r}")
        self._details()
        await self._draft_all(inp)
        if self._error:
            await self._set_stage(inp, Stage.FAILED, self._error)
            raise ApplicationError(f"campaign {inp.campaign_id} stopped: {self._error}",
                                   type="CampaignFailed", non_retryable=True)
        if self._carry.cancelled:
            await self._set_stage(inp, Stage.CANCELLED, "cancelled while drafting; nothing sent")
            return self.status()

        c = self._carry.counts
        await self._set_stage(
            inp, Stage.AWAITING_APPROVAL,
            f"{c.drafted} drafted, {c.draft_failed} failed; waiting for approve/reject "
            f"(expires after {timedelta(seconds=inp.approval_timeout_seconds)})",
        )
        try:
            await workflow.wait_condition(
                lambda: self._decided or self._carry.cancelled,
                timeout=timedelta(seconds=inp.approval_timeout_seconds),
                timeout_summary="approval timeout",
            )
        except TimeoutError:
            await self._set_stage(inp, Stage.EXPIRED, "no decision before the approval timeout")
            return self.status()
        if self._carry.cancelled and not self._decided:
            await self._set_stage(inp, Stage.CANCELLED, "cancelled before a decision")
            return self.status()

        rejection, approval = self._carry.rejection, self._carry.approval
        if rejection is not None:
            await self._record(inp, "reject", rejection.by, rejection.reason,
                               request_id=rejection.request_id)
            self._decision_recorded = True
            await self._set_stage(inp, Stage.REJECTED, "rejected (who and why: the audit trail)")
            await workflow.wait_condition(workflow.all_handlers_finished)
            return self.status()

        assert approval is not None
        # Edits accepted before the approval are written before it is recorded.
        await workflow.wait_condition(lambda: self._reviews_in_flight == 0)
        self._carry.counts.approved = await self._record(
            inp, "approve", approval.by, approval.note, approval.lead_ids, approval.request_id,
            send_passing=approval.send_passing)
        EngineMetrics(workflow.metric_meter()).approved(self._carry.counts.approved)
        self._decision_recorded = True
        await self._set_stage(inp, Stage.DELIVERING,
                              f"{self._carry.counts.approved} approved (who: the audit trail)")
        result = await self._deliver(inp)
        c = self._carry.counts
        c.sent, c.suppressed, c.send_failed = result.sent, result.suppressed, result.failed
        c.stopped = result.stopped
        final = Stage.CANCELLED if self._carry.cancelled else Stage.COMPLETED
        await self._set_stage(
            inp, final, f"sent {result.sent}, suppressed {result.suppressed}, failed {result.failed}"
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.status()

    async def _deliver(self, inp: CampaignInput) -> DeliveryResult:
        if self._carry.cancelled:
            return DeliveryResult()
        window = inp.send_window.describe() if inp.send_window else "any time"
        handle = await workflow.start_child_workflow(
            DeliveryOrchestrator.run,
            inp.delivery_input(paused=self._carry.paused),
            id=delivery_workflow_id(inp.campaign_id),
            task_queue=queue_name(WORKFLOW_QUEUE, inp.queue_prefix),
            static_summary=f"Delivery of campaign {inp.campaign_id} via {inp.channel.value}",
            static_details=f"approved drafts only; suppression checked at send time; "
                           f"send window: {window}",
            search_attributes=search_attributes(inp.campaign_id, "delivery")
            if inp.use_search_attributes else None,
        )
        self._delivery_running = True
        # Control signals that arrived while the child was being started.
        if self._carry.cancelled:
            await handle.signal(DeliveryOrchestrator.cancel)
        elif self._carry.paused:
            await handle.signal(DeliveryOrchestrator.pause)
        try:
            result = await handle
        finally:
            self._delivery_running = False
        return result
