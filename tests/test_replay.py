"""Replay recorded histories against today's workflow code.

If a change to a workflow would make campaigns that are already running take a
different path (non-determinism), this fails. Re-record only for compatible
changes: `.venv/bin/python -m tests.histories.record` (see that module).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.campaign import CampaignWorkflow
from workflows.delivery import DeliveryOrchestrator
from workflows.lead import LeadOrchestrator
from workflows.scheduled import ScheduledCampaign

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_are_present() -> None:
    names = {p.stem for p in HISTORIES}
    assert {"campaign_first_run", "campaign_approved", "campaign_rejected", "campaign_expired",
            "lead_drafted", "delivery_first_run", "delivery_windowed", "campaign_added_leads",
            "delivery_breaker", "scheduled_firing", "campaign_reviewed", "campaign_budget",
            "lead_budget"} <= names


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replay(path: Path) -> None:
    replayer = Replayer(
        workflows=[CampaignWorkflow, LeadOrchestrator, DeliveryOrchestrator, ScheduledCampaign],
        data_converter=pydantic_data_converter,
    )
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
