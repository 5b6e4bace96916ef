"""The rows the store returns: one pydantic model per kind, the same on every backend.

Times are ISO 8601 text in UTC with microseconds (as every backend returns them), JSON
columns are parsed, and fields are in the table's column order, so `model_dump()`
gives the JSON the CLI and the API have always printed. Leads are `leads.Lead`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from campaign_core.models import DeliveryEventKind, Stage

#: A lead's drafting status in the store.
LeadStatus = Literal["pending", "drafting", "drafted", "failed"]
#: A delivery's status in the store (`committing`: the provider call is under way).
DeliveryState = Literal["sending", "committing", "sent", "suppressed", "failed"]
#: The outcomes `campaign report` gives (the contract's).
DraftOutcome = Literal["drafted", "failed", "pending"]
DeliveryOutcomeName = Literal["sent", "suppressed", "not_approved", "failed", "pending",
                              "stopped"]
#: A follow-up's state in the store's schedule (`sequence_steps`).
StepState = Literal["scheduled", "sent", "stopped", "failed"]


class Row(BaseModel):
    model_config = ConfigDict(frozen=True)


class CampaignRow(Row):
    campaign_id: str
    name: str
    brief: str = ""
    channel: str
    kb_dir: str | None = None
    workflow_id: str
    stage: Stage
    created_at: str
    updated_at: str


class DraftRow(Row):
    """A draft with its lead's address (drafts are read joined to their lead)."""

    campaign_id: str
    lead_id: str
    step: int
    subject: str
    body: str
    citations: list[str]
    provenance: dict[str, Any]
    envelope_id: str
    approved: bool
    created_at: str
    email: str


class DeliveryRow(Row):
    message_key: str
    campaign_id: str
    lead_id: str
    step: int
    channel: str
    status: DeliveryState
    message_id: str | None = None
    error: str | None = None
    created_at: str
    updated_at: str


class DeliveryEventRow(Row):
    event_id: str
    kind: DeliveryEventKind
    email: str
    campaign_id: str | None = None
    lead_id: str | None = None
    message_key: str | None = None
    source: str
    detail: str | None = None
    created_at: str


class AuditEntry(Row):
    """One agent step: its envelope (parsed JSON) and the node trace lifted out of it."""

    envelope_id: str
    campaign_id: str
    lead_id: str | None = None
    agent: str
    envelope: dict[str, Any]
    created_at: str
    run_id: str | None = None
    attempt: int | None = None
    agent_version: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    duration_ms: int | None = None
    record_count: int | None = None
    outcome: str | None = None
    inputs_digest: str | None = None


class SequenceStepRow(Row):
    """One follow-up in the schedule: due at `due_at`, then sent, stopped or failed."""

    campaign_id: str
    lead_id: str
    step: int
    due_at: str
    status: StepState
    stop_reason: str | None = None
    created_at: str
    updated_at: str


class ReportRow(Row):
    """One lead's outcome at one step, in the contract's `report --json` shape."""

    lead_id: str
    email: str
    draft_status: DraftOutcome
    delivery_status: DeliveryOutcomeName
    message_id: str | None = None
    error: str | None = None
    step: int = 1
    stop_reason: str | None = None


class DraftView(Row):
    """A draft waiting for review, in the contract's `drafts --json` shape."""

    lead_id: str
    email: str
    subject: str
    body: str
    citations: list[str]
