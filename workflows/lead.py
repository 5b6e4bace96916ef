"""LeadOrchestrator: one lead from stored data to a stored draft.

A lead that cannot be drafted is recorded as `failed` with its reason and the
workflow still completes, so one bad lead never fails the campaign. A lead the
campaign's budget stopped is not failed: it returns status `budget`.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.copywriter import CopywriterAgent
    from activities.knowledge import KnowledgeAgent
    from activities.store_agent import StoreAgent
    from campaign_core.budget import BUDGET_EXHAUSTED
    from campaign_core.models import LeadFailure, LeadInput, LeadResult, StoreDraftInput
    from workflows.agents import call_agent


#: Marker: a lead whose drafting stopped records a failed draft for every step not written.
FAILED_STEPS_KEPT = "failed-steps-kept"


def failure_reason(err: ActivityError) -> str:
    """The innermost message, which names what actually went wrong."""
    cause: BaseException | None = err.cause
    while isinstance(cause, ApplicationError | ActivityError) and cause.cause is not None:
        cause = cause.cause
    return str(cause or err)[:500]


def failure_type(err: ActivityError) -> str | None:
    """The ApplicationError type behind an activity failure, e.g. 'LLMAuthError'."""
    cause = err.cause
    return cause.type if isinstance(cause, ApplicationError) else None


@workflow.defn(name="LeadOrchestrator")
class LeadOrchestrator:
    def __init__(self) -> None:
        self._step = "starting"

    @workflow.query(name="step")
    def step(self) -> str:
        return self._step

    @workflow.run
    async def run(self, inp: LeadInput) -> LeadResult:
        p = inp.queue_prefix
        try:
            self._step = "storing lead"
            await call_agent(StoreAgent.store_lead, inp, prefix=p,
                             summary=f"store lead {inp.lead_id}")
            self._step = "retrieving knowledge"
            found = await call_agent(KnowledgeAgent.retrieve_knowledge, inp, prefix=p,
                                     summary=f"retrieve passages for {inp.lead_id}")
            workflow.set_current_details(f"retrieval: {found.summary}")
            self._step = "writing draft"
            draft = await call_agent(CopywriterAgent.write_draft, inp, prefix=p,
                                     summary=f"write draft for {inp.lead_id}")
            self._step = "storing draft"
            stored = await call_agent(
                StoreAgent.store_draft,
                StoreDraftInput(campaign_id=inp.campaign_id, lead_id=inp.lead_id,
                                envelope_id=draft.envelope_id),
                prefix=p, summary=f"store draft {draft.envelope_id}",
            )
            failed_steps = [1] if stored.failed else []
            # A sequence: each follow-up is written after the steps before it, as a reply.
            # A step that failed its checks is kept (text and reasons) and the next ones are
            # still written, so the reviewer sees the whole sequence and can fix that step.
            for step in range(2, inp.steps + 1):
                self._step = f"writing follow-up {step}"
                follow_up = await call_agent(
                    CopywriterAgent.write_draft, inp.model_copy(update={"step": step}), prefix=p,
                    summary=f"write step {step} for {inp.lead_id}")
                stored = await call_agent(
                    StoreAgent.store_draft,
                    StoreDraftInput(campaign_id=inp.campaign_id, lead_id=inp.lead_id,
                                    envelope_id=follow_up.envelope_id),
                    prefix=p, summary=f"store draft {follow_up.envelope_id}",
                )
                if stored.failed:
                    failed_steps.append(step)
        except ActivityError as err:
            reason = failure_reason(err)
            if isinstance(err.cause, ApplicationError) and err.cause.type == BUDGET_EXHAUSTED:
                # Not a failure: the campaign pauses and drafts this lead again on resume
                # (steps already written are found in the audit log, not paid for twice).
                self._step = f"stopped by the budget: {err.cause.message}"
                return LeadResult(lead_id=inp.lead_id, status="budget",
                                  error=err.cause.message, error_type=BUDGET_EXHAUSTED)
            self._step = f"failed: {reason}"
            workflow.logger.warning("lead %s not drafted: %s", inp.lead_id, reason)
            failure = LeadFailure(campaign_id=inp.campaign_id, lead_id=inp.lead_id, error=reason)
            if workflow.patched(FAILED_STEPS_KEPT):
                # Every step not written is a failed step of its own, so the reviewer sees the
                # whole sequence, and can write the missing steps by an edit.
                failure.steps = inp.steps
            await call_agent(StoreAgent.record_lead_failure, failure, prefix=p,
                             summary=f"record failure of {inp.lead_id}")
            return LeadResult(lead_id=inp.lead_id, status="failed", error=reason,
                              error_type=failure_type(err))
        if failed_steps:
            what = f"step(s) {', '.join(map(str, failed_steps))} failed their checks"
            self._step = f"held: {what}"
            workflow.set_current_details(f"held for review: {what} (reasons in the store)")
            return LeadResult(lead_id=inp.lead_id, status="failed", error=what,
                              error_type="GuardrailViolation")
        self._step = "drafted"
        workflow.set_current_details(f"drafted: {draft.summary}")
        return LeadResult(lead_id=inp.lead_id, status="drafted")
