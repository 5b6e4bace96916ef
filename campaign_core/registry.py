"""The one registry: flows, agents and task queues.

The worker builds every worker from it, the workflows look up an agent's queue,
timeouts and retry policy in it, and the control plane picks flows from it. Nothing
about wiring is written anywhere else. This module is plain data so that workflow
code can import it inside the sandbox.

Task queues do the old Dispatcher's job: `max_concurrent` caps activities per
worker process, `rate_per_second` is a task-queue-wide limit the Temporal server
enforces across all workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from temporalio.common import RetryPolicy

#: Error types no retry can fix: raised as non-retryable ApplicationErrors.
#: `LLMAuthError` (401/403: a bad key) is also what the campaign workflow turns into one
#: campaign-level error; `LLMRequestRejected` is any other 4xx the provider will never accept.
#: `StoreError` is a row the store rejects (constraint, malformed data); a store that is
#: down raises `StoreUnavailable` instead, which stays retryable.
PERMANENT_ERRORS = ["InvalidInput", "NotFound", "GuardrailViolation", "LLMAuthError",
                    "LLMRequestRejected", "StoreError"]


@dataclass(frozen=True)
class QueueSpec:
    """A task queue and the limits that make it behave like a dispatcher."""

    name: str
    max_concurrent: int
    rate_per_second: float | None = None
    description: str = ""


@dataclass(frozen=True)
class AgentSpec:
    """An operational agent: an activity on its queue with its own timeouts and retries."""

    name: str
    queue: str
    impl: str  # "module:Class.method"; resolved by the worker only
    start_to_close: timedelta
    retry: RetryPolicy
    heartbeat: timedelta | None = None
    description: str = ""


@dataclass(frozen=True)
class FlowSpec:
    """An orchestrator: a workflow type started by name from the control plane."""

    name: str
    workflow_type: str
    impl: str  # "module:Class"
    queue: str = "workflows"
    description: str = ""
    defaults: dict[str, object] = field(default_factory=dict)


WORKFLOW_QUEUE = "workflows"

QUEUES: dict[str, QueueSpec] = {
    q.name: q
    for q in (
        QueueSpec(WORKFLOW_QUEUE, max_concurrent=200, description="orchestrators"),
        QueueSpec("store", max_concurrent=20, description="reads and writes to the store"),
        QueueSpec("knowledge", max_concurrent=8, description="retrieval over the knowledge base"),
        QueueSpec("llm", max_concurrent=8, rate_per_second=5.0, description="LLM copywriter"),
        QueueSpec("delivery", max_concurrent=4, rate_per_second=10.0, description="sending"),
    )
}

# The store may be down for a while: keep retrying with backoff rather than fail a lead.
_STORE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
    non_retryable_error_types=PERMANENT_ERRORS,
)
_AGENT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=8,
    non_retryable_error_types=PERMANENT_ERRORS,
)
_DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=10,
    non_retryable_error_types=PERMANENT_ERRORS,
)

_S = timedelta(seconds=30)


def _store(name: str, description: str) -> AgentSpec:
    return AgentSpec(name, "store", f"activities.store_agent:StoreAgent.{name}", _S, _STORE_RETRY,
                     description=description)


AGENTS: dict[str, AgentSpec] = {
    a.name: a
    for a in (
        _store("store_lead", "mark a lead as being drafted"),
        _store("list_lead_ids", "page through a campaign's lead ids"),
        _store("store_draft", "persist the copywriter's draft from its envelope"),
        _store("record_lead_failure", "record why a lead could not be drafted"),
        _store("set_stage", "record the campaign's stage"),
        _store("record_decision", "record an approval or rejection and its author"),
        _store("list_approved_leads", "page through approved leads and their time zones"),
        _store("check_lead_ids", "find lead ids that have no draft"),
        AgentSpec("retrieve_knowledge", "knowledge",
                  "activities.knowledge:KnowledgeAgent.retrieve_knowledge",
                  # Long enough for a first index build that embeds the whole knowledge base;
                  # heartbeats (also while waiting for another lead's build) catch a dead worker.
                  timedelta(minutes=5), _AGENT_RETRY, heartbeat=timedelta(seconds=30),
                  description="find the knowledge-base passages relevant to a lead (BM25, +dense)"),
        # Up to two LLM calls (draft + one repair), each bounded by CAMPAIGN_LLM_TIMEOUT.
        AgentSpec("write_draft", "llm", "activities.copywriter:CopywriterAgent.write_draft",
                  timedelta(minutes=3), _AGENT_RETRY, heartbeat=timedelta(seconds=30),
                  description="write a personalised message (LLM with guardrails, or offline)"),
        AgentSpec("deliver_message", "delivery",
                  "activities.delivery:DeliveryAgent.deliver_message",
                  # The heartbeat lets a send on a worker that died be retried after 20 s
                  # instead of the full minute; the retry is safe (see activities/delivery).
                  timedelta(minutes=1), _DELIVERY_RETRY, heartbeat=timedelta(seconds=20),
                  description="send one approved message exactly once"),
        # Pages through a schedule template's leads; heartbeats carry the cursor so a
        # retry resumes where the last attempt stopped.
        AgentSpec("copy_template_leads", "store",
                  "activities.schedule_agent:ScheduleAgent.copy_template_leads",
                  timedelta(minutes=30), _STORE_RETRY, heartbeat=timedelta(seconds=60),
                  description="copy a recurring campaign's template leads into one firing's campaign"),
    )
}

FLOWS: dict[str, FlowSpec] = {
    f.name: f
    for f in (
        FlowSpec("campaign", "CampaignWorkflow", "workflows.campaign:CampaignWorkflow",
                 description="drafts every lead, waits for approval, delivers"),
        FlowSpec("lead", "LeadOrchestrator", "workflows.lead:LeadOrchestrator",
                 description="one lead: store, retrieve, write, store draft"),
        FlowSpec("delivery", "DeliveryOrchestrator", "workflows.delivery:DeliveryOrchestrator",
                 description="sends the approved drafts of one campaign"),
        FlowSpec("scheduled", "ScheduledCampaign", "workflows.scheduled:ScheduledCampaign",
                 description="one firing of a recurring campaign: copy its leads, start it"),
    )
}

#: Search attributes every workflow of this project sets (no personal data in them).
SEARCH_ATTRIBUTES = {"CampaignId": "Keyword", "CampaignStage": "Keyword", "Flow": "Keyword"}


def queue_name(queue: str, prefix: str = "") -> str:
    """The real task-queue name for a logical queue under a deployment prefix."""
    return f"{prefix}{queue}"
