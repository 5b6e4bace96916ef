"""A signal that arrives in a run's first workflow task (right after a continue-as-new)
changes the state the run carries instead of being overwritten by it.

Temporal hands such a signal to its handler before the run method starts; the
orchestrators set their carried state in `@workflow.init`, so the handler sees it. Before,
`run` assigned the carry after the handler, and a pause, resume or cancel sent at that
moment was lost (in a 20,000-lead sequence, follow-ups went out during a pause).
`start_signal` puts the signal in the first task every time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from campaign_core.ids import campaign_workflow_id, delivery_workflow_id
from campaign_core.models import CampaignCarry, CampaignInput, DeliveryInput, DeliveryResult
from campaign_core.queues import WORKFLOW_QUEUE, queue_name
from workflows.campaign import CampaignWorkflow
from workflows.delivery import DeliveryOrchestrator


async def test_a_pause_in_a_continued_campaign_runs_first_task_holds(
    dev_env: Any, prefix: str, run_workers: Any
) -> None:
    cid = "c-first-task"
    carry = CampaignCarry(runs=2)  # a continued run: the carry says "not paused"
    async with run_workers(dev_env.client):
        handle = await dev_env.client.start_workflow(
            CampaignWorkflow.run,
            CampaignInput(campaign_id=cid, name=cid, queue_prefix=prefix, carry=carry),
            id=campaign_workflow_id(cid), task_queue=queue_name(WORKFLOW_QUEUE, prefix),
            start_signal="pause")
        status = await handle.query(CampaignWorkflow.status)
        assert status.paused, status
        await handle.terminate()


async def test_a_resume_in_a_continued_delivery_runs_first_task_resumes(
    dev_env: Any, prefix: str, run_workers: Any
) -> None:
    """The carry says paused (the run before was paused); the resume sent as it continued
    as new goes on: nothing is approved or due here, so the run ends at once. Lost, the
    follow-up loop would wait paused for ever."""
    cid = "c-first-resume"
    async with run_workers(dev_env.client):
        handle = await dev_env.client.start_workflow(
            DeliveryOrchestrator.run,
            DeliveryInput(campaign_id=cid, queue_prefix=prefix, paused=True,
                          follow_up_seconds=[60], result=DeliveryResult()),
            id=delivery_workflow_id(cid), task_queue=queue_name(WORKFLOW_QUEUE, prefix),
            start_signal="resume")
        result = await asyncio.wait_for(handle.result(), 20)
    assert result == DeliveryResult()
