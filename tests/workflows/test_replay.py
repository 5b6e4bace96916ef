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

HISTORIES = sorted((Path(__file__).parent.parent / "histories").glob("*.json"))


def test_histories_are_present() -> None:
    names = {p.stem for p in HISTORIES}
    assert {"campaign_first_run", "campaign_approved", "campaign_rejected", "campaign_expired",
            "lead_drafted", "delivery_first_run", "delivery_windowed", "campaign_added_leads",
            "delivery_breaker", "scheduled_firing", "campaign_reviewed", "delivery_sequence",
            "delivery_paced_first_run", "lead_local_store", "campaign_local_store",
            "campaign_budget", "lead_budget"} <= names


def _scheduled_and_markers(name: str) -> tuple[list[str], int]:
    text = (Path(__file__).parent.parent / "histories" / f"{name}.json").read_text()
    history = WorkflowHistory.from_json(name, text)
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name
                 for e in history.events if e.HasField("activity_task_scheduled_event_attributes")]
    markers = sum(e.HasField("marker_recorded_event_attributes") for e in history.events)
    return scheduled, markers


@pytest.mark.parametrize(("name", "kept", "gone"), [
    ("lead_local_store", {"write_draft", "retrieve_knowledge"}, {"store_lead", "store_draft"}),
    ("campaign_local_store", {"record_decision", "list_lead_ids"}, {"set_stage"}),
])
def test_the_local_store_steps_histories_took_the_patched_path(
    name: str, kept: set[str], gone: set[str]
) -> None:
    """The `*_local_store` histories prove the patched path replays only if they took it:
    their cheap store steps are markers, and none was scheduled on a queue."""
    scheduled, markers = _scheduled_and_markers(name)
    assert markers >= 3
    assert kept <= set(scheduled)
    assert not gone & set(scheduled)


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replay(path: Path) -> None:
    replayer = Replayer(
        workflows=[CampaignWorkflow, LeadOrchestrator, DeliveryOrchestrator, ScheduledCampaign],
        data_converter=pydantic_data_converter,
    )
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
