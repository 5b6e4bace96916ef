"""Two builds of a campaign-like pair of workflows with the same type names, as a deploy
sees them (tests/ops/test_deploys.py). A module of their own: the workflow sandbox re-imports it.

Build 2 adds a step ("check") before the send, behind `workflow.patched`, the way every
change to a long-running orchestrator must be made: a campaign that had already sent on
build 1 replays without it, one still waiting for approval takes it.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from campaign_core.deployment import LONG_RUNNING, SHORT_LIVED

LEAD, CAMPAIGN = "DeployProbeLead", "DeployProbeCampaign"
PATCH = "deploy-probe-check-before-send"


@activity.defn(name="DeployProbeStep")
async def probe_step(step: str) -> str:
    return step


async def step(name: str) -> str:
    return await workflow.execute_activity(probe_step, name,
                                           start_to_close_timeout=timedelta(seconds=30))


class _Lead:
    def __init__(self) -> None:
        self._go = False

    @workflow.signal(name="go")
    def go(self) -> None:
        self._go = True


@workflow.defn(name=LEAD, versioning_behavior=SHORT_LIVED)
class LeadV1(_Lead):
    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self._go)
        return "drafted by v1"


@workflow.defn(name=LEAD, versioning_behavior=SHORT_LIVED)
class LeadV2(_Lead):
    """The new build drafts differently: a lead in flight must not see it."""

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self._go)
        return "drafted by v2"


class _Campaign:
    def __init__(self) -> None:
        self._approved = False

    @workflow.signal(name="approve")
    def approve(self) -> None:
        self._approved = True


@workflow.defn(name=CAMPAIGN, versioning_behavior=LONG_RUNNING)
class CampaignV1(_Campaign):
    @workflow.run
    async def run(self, lead_id: str) -> list[str]:
        lead = await workflow.start_child_workflow(LEAD, id=lead_id,
                                                   task_queue=workflow.info().task_queue)
        await workflow.wait_condition(lambda: self._approved)
        sent = await step("send")
        return [await lead, sent]


@workflow.defn(name=CAMPAIGN, versioning_behavior=LONG_RUNNING)
class CampaignV2(_Campaign):
    @workflow.run
    async def run(self, lead_id: str) -> list[str]:
        lead = await workflow.start_child_workflow(LEAD, id=lead_id,
                                                   task_queue=workflow.info().task_queue)
        await workflow.wait_condition(lambda: self._approved)
        steps = []
        if workflow.patched(PATCH):
            steps.append(await step("check"))
        steps.append(await step("send"))
        return [await lead, *steps]
