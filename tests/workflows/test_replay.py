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

from workflows.answer import AnswerWorkflow
from workflows.campaign import CampaignWorkflow
from workflows.delivery import DeliveryOrchestrator
from workflows.lead import LeadOrchestrator
from workflows.reply_actions import ReplyActionWorkflow
from workflows.scheduled import ScheduledCampaign

HISTORIES = sorted((Path(__file__).parent.parent / "histories").glob("*.json"))


def test_histories_are_present() -> None:
    names = {p.stem for p in HISTORIES}
    assert {"campaign_first_run", "campaign_approved", "campaign_rejected", "campaign_expired",
            "lead_drafted", "delivery_first_run", "delivery_windowed", "campaign_added_leads",
            "delivery_breaker", "scheduled_firing", "campaign_reviewed", "delivery_sequence",
            "delivery_paced_first_run", "lead_local_store", "campaign_local_store",
            "campaign_budget", "lead_budget", "reply_action_ooo", "reply_action_interested",
            "answer_sent", "delivery_out_of_office", "campaign_senders",
            "delivery_senders"} <= names


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


def test_the_senders_histories_took_their_path() -> None:
    """Issue 28: the campaign gave its leads their senders before drafting, and its one-step
    delivery ran the schedule loop (the send that waited for its mailbox's capacity went
    out from it the next day) and was woken by `senders_changed`."""
    campaign, _ = _scheduled_and_markers("campaign_senders")
    delivery, _ = _scheduled_and_markers("delivery_senders")
    assert "assign_senders" in campaign
    assert delivery.count("deliver_message") == 5  # 4 leads, one of them twice (waited)
    assert "list_due_steps" in delivery and "next_due_at" in delivery
    text = (Path(__file__).parent.parent / "histories" / "delivery_senders.json").read_text()
    history = WorkflowHistory.from_json("delivery_senders", text)
    signals = [e.workflow_execution_signaled_event_attributes.signal_name
               for e in history.events
               if e.HasField("workflow_execution_signaled_event_attributes")]
    assert "senders_changed" in signals


@pytest.mark.parametrize(("name", "workflow", "activities", "signal"), [
    ("reply_action_ooo", "ReplyActionWorkflow", ["classify_reply", "apply_reply_intent"], None),
    ("reply_action_interested", "ReplyActionWorkflow",
     ["classify_reply", "apply_reply_intent", "draft_reply_answer"], None),
    ("answer_sent", "AnswerWorkflow", ["send_answer"], None),
    ("delivery_out_of_office", "DeliveryOrchestrator", None, "out_of_office"),
])
def test_the_reply_histories_took_their_paths(
    name: str, workflow: str, activities: list[str] | None, signal: str | None
) -> None:
    """The `replies` scenario's histories guard the reply workflows only if they ran their
    steps: the reply actions (the interested one drafting), the answer's send, and the
    delivery run that received the out_of_office signal."""
    text = (Path(__file__).parent.parent / "histories" / f"{name}.json").read_text()
    events = WorkflowHistory.from_json(name, text).events
    started = events[0].workflow_execution_started_event_attributes
    assert started.workflow_type.name == workflow
    if activities is not None:
        assert _scheduled_and_markers(name)[0] == activities
    if signal is not None:
        assert signal in {e.workflow_execution_signaled_event_attributes.signal_name
                          for e in events}


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replay(path: Path) -> None:
    replayer = Replayer(
        workflows=[CampaignWorkflow, LeadOrchestrator, DeliveryOrchestrator, ScheduledCampaign,
                   ReplyActionWorkflow, AnswerWorkflow],
        data_converter=pydantic_data_converter,
    )
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
