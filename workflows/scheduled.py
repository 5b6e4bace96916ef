"""ScheduledCampaign: what a recurring campaign's Temporal Schedule starts at every firing.

Each firing copies the template campaign's leads into a campaign named after the
schedule and the firing time, starts it as an abandoned child and completes.
See docs/architecture.md ("Orchestration and wiring").
"""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio import workflow
from temporalio.common import SearchAttributeKey, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.schedule_agent import SCHEDULE_BUDGET_EXHAUSTED, ScheduleAgent
    from campaign_core.ids import campaign_workflow_id
    from campaign_core.models import (
        CopyLeadsInput,
        ScheduledCampaignInput,
        ScheduledRun,
        Stage,
    )
    from campaign_core.queues import WORKFLOW_QUEUE, queue_name
    from workflows.agents import call_agent
    from workflows.campaign import CampaignWorkflow, search_attributes

#: Set by Temporal on every workflow a schedule starts: the firing's nominal time.
SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
SCHEDULE_ID_PREFIX = "campaign-schedule:"
#: `workflow.patched` id: a firing whose every lead was skipped (in another campaign's active
#: sequence, or replied within the cooldown) starts no campaign. Before it, a firing with
#: no lead never got this far (the copy failed).
FIRING_WITHOUT_LEADS = "firing-without-leads"


def schedule_id(name: str) -> str:
    """The Temporal Schedule id of the recurring campaign `name`."""
    return f"{SCHEDULE_ID_PREFIX}{name}"


def kickoff_workflow_id(name: str) -> str:
    """The base id of the firing workflows (Temporal appends each firing's time)."""
    return f"scheduled-campaign:{name}"


def scheduled_campaign_id(name: str, fired_at: datetime) -> str:
    """The campaign one firing starts: the schedule's name and the firing's UTC time.

    The same firing always gives the same id, so a retried firing finds its campaign
    instead of starting a second one; firings a second apart give distinct ids.
    """
    return f"{name}-{fired_at.astimezone(UTC):%Y%m%d-%H%M%S}"


@workflow.defn(name="ScheduledCampaign")
class ScheduledCampaign:
    @workflow.run
    async def run(self, inp: ScheduledCampaignInput) -> ScheduledRun:
        fired = workflow.info().typed_search_attributes.get(SCHEDULED_START) or workflow.now()
        cid = scheduled_campaign_id(inp.schedule, fired)
        name = f"{inp.schedule} {fired.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        prefix = inp.campaign.queue_prefix
        try:
            leads = await call_agent(
                ScheduleAgent.copy_template_leads,
                CopyLeadsInput(template_id=inp.template_id, campaign_id=cid, name=name,
                               schedule=inp.schedule, allow_overlap=inp.allow_overlap),
                prefix=prefix, summary=f"copy the leads of {inp.template_id} to {cid}",
            )
        except ActivityError as err:
            if isinstance(err.cause, ApplicationError) and \
                    err.cause.type == SCHEDULE_BUDGET_EXHAUSTED:
                # The schedule's total budget is spent: the firing fails with the reason
                # itself, which Temporal's pause-on-failure writes into the schedule's note
                # (an activity's failure would read "Activity task failed" there).
                raise ApplicationError(err.cause.message, type=SCHEDULE_BUDGET_EXHAUSTED,
                                       non_retryable=True) from None
            raise
        if leads == 0 and workflow.patched(FIRING_WITHOUT_LEADS):
            workflow.set_current_details(f"every lead was skipped (in another campaign's active "
                                         f"sequence, or replied): no campaign `{cid}` started")
            return ScheduledRun(schedule=inp.schedule, campaign_id=cid, leads=0)
        campaign = inp.campaign.model_copy(update={"campaign_id": cid, "name": name, "carry": None})
        already = False
        try:
            await workflow.start_child_workflow(
                CampaignWorkflow.run,
                campaign,
                id=campaign_workflow_id(cid),
                task_queue=queue_name(WORKFLOW_QUEUE, prefix),
                # The campaign waits days for its approval; this firing is done at once.
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=f"Campaign {name!r} ({leads} leads, {campaign.channel.value}), "
                               f"from schedule {inp.schedule!r}",
                static_details=f"**Campaign** `{cid}`, started by the schedule "
                               f"`{inp.schedule}` from the template `{inp.template_id}`\n\n"
                               f"* leads: {leads}\n* channel: {campaign.channel.value}",
                search_attributes=search_attributes(cid, "campaign", Stage.DRAFTING)
                if campaign.use_search_attributes else None,
            )
        except WorkflowAlreadyStartedError:
            already = True  # a retried firing: its campaign already runs (or ran)
        workflow.set_current_details(
            f"{'found' if already else 'started'} campaign `{cid}` with {leads} leads")
        return ScheduledRun(schedule=inp.schedule, campaign_id=cid, leads=leads,
                            already_started=already)
