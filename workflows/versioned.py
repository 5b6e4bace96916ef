"""The orchestrators as versioned workers register them: the same workflow types, each
declaring how it moves between Worker Deployment Versions.

Only workers with CAMPAIGN_DEPLOYMENT_VERSION set register these; unversioned workers
register the plain classes, because the server refuses a workflow task completed with a
versioning behavior by a worker that is not versioned ("versioning behavior cannot be
specified without deployment options being set with versioned mode"), so the behavior
cannot sit on the classes themselves. Each twin only re-declares `run` (the SDK wants it
on the class it registers); handlers are inherited, and the commands are the base class's,
so the replay test over the plain classes covers both. Why these behaviors:
campaign_core/deployment.py and docs/architecture.md ("Safe deploys").
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from campaign_core.answers import AnswerInput, AnswerOutcome
    from campaign_core.deployment import LONG_RUNNING, SHORT_LIVED
    from campaign_core.imap import PollSummary, ReplyPollInput
    from campaign_core.models import (
        CampaignInput,
        CampaignStatus,
        DeliveryInput,
        DeliveryResult,
        LeadInput,
        LeadResult,
        ScheduledCampaignInput,
        ScheduledRun,
    )
    from campaign_core.reply_actions import ReplyActionInput, ReplyActionResult

from workflows.answer import AnswerWorkflow
from workflows.campaign import CampaignWorkflow
from workflows.delivery import DeliveryOrchestrator
from workflows.lead import LeadOrchestrator
from workflows.replies import ReplyMailboxPoll
from workflows.reply_actions import ReplyActionWorkflow
from workflows.scheduled import ScheduledCampaign


@workflow.defn(name="CampaignWorkflow", versioning_behavior=LONG_RUNNING)
class VersionedCampaignWorkflow(CampaignWorkflow):
    @workflow.run
    async def run(self, inp: CampaignInput) -> CampaignStatus:
        return await super().run(inp)


@workflow.defn(name="DeliveryOrchestrator", versioning_behavior=LONG_RUNNING)
class VersionedDeliveryOrchestrator(DeliveryOrchestrator):
    @workflow.run
    async def run(self, inp: DeliveryInput) -> DeliveryResult:
        return await super().run(inp)


@workflow.defn(name="LeadOrchestrator", versioning_behavior=SHORT_LIVED)
class VersionedLeadOrchestrator(LeadOrchestrator):
    @workflow.run
    async def run(self, inp: LeadInput) -> LeadResult:
        return await super().run(inp)


@workflow.defn(name="ScheduledCampaign", versioning_behavior=SHORT_LIVED)
class VersionedScheduledCampaign(ScheduledCampaign):
    @workflow.run
    async def run(self, inp: ScheduledCampaignInput) -> ScheduledRun:
        return await super().run(inp)


@workflow.defn(name="ReplyMailboxPoll", versioning_behavior=SHORT_LIVED)
class VersionedReplyMailboxPoll(ReplyMailboxPoll):
    @workflow.run
    async def run(self, inp: ReplyPollInput) -> PollSummary:
        return await super().run(inp)


@workflow.defn(name="AnswerWorkflow", versioning_behavior=SHORT_LIVED)
class VersionedAnswerWorkflow(AnswerWorkflow):
    @workflow.run
    async def run(self, inp: AnswerInput) -> AnswerOutcome:
        return await super().run(inp)


@workflow.defn(name="ReplyActionWorkflow", versioning_behavior=SHORT_LIVED)
class VersionedReplyActionWorkflow(ReplyActionWorkflow):
    @workflow.run
    async def run(self, inp: ReplyActionInput) -> ReplyActionResult:
        return await super().run(inp)


#: Each orchestrator's versioned twin, by the plain class (worker_main.WORKFLOWS).
VERSIONED: dict[type, type] = {
    CampaignWorkflow: VersionedCampaignWorkflow,
    DeliveryOrchestrator: VersionedDeliveryOrchestrator,
    LeadOrchestrator: VersionedLeadOrchestrator,
    ScheduledCampaign: VersionedScheduledCampaign,
    ReplyMailboxPoll: VersionedReplyMailboxPoll,
    AnswerWorkflow: VersionedAnswerWorkflow,
    ReplyActionWorkflow: VersionedReplyActionWorkflow,
}
