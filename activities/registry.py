"""The agent registry: each agent's queue, timeouts and retries.

Entries are keyed by the activity method itself (`StoreAgent.store_lead`), so workflows,
the worker and this table can only name agents that exist. It imports every agent class,
so it sits with the activities: the worker and the workflows import it (workflows under
`workflow.unsafe.imports_passed_through()`), the control plane and `campaign_core` never
do. The agent modules it imports have no import-time side effects, and they import their
heavy libraries (openai, numpy, bm25s, aiosmtplib, phonenumbers) where the work is done,
so a workflow's reference to an agent method costs no LLM client. The queues themselves
are campaign_core/queues.py. See docs/architecture.md ("Orchestration and wiring").
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy

from activities.base import Agent
from activities.copywriter import CopywriterAgent
from activities.delivery import DeliveryAgent
from activities.knowledge import KnowledgeAgent
from activities.replies import ReplyAgent
from activities.reply_actions import ReplyActionAgent, ReplyAnswerAgent
from activities.reply_intents import ReplyIntentAgent
from activities.schedule_agent import ScheduleAgent
from activities.sequence_agent import SequenceAgent
from activities.store_agent import StoreAgent

#: Error types no retry can fix: raised as non-retryable ApplicationErrors.
#: `LLMAuthError` (401/403: a bad key) is also what the campaign workflow turns into one
#: campaign-level error; `LLMRequestRejected` is any other 4xx the provider will never accept.
#: `StoreError` is a row the store rejects (constraint, malformed data); a store that is
#: down raises `StoreUnavailable` instead, which stays retryable.
PERMANENT_ERRORS = ["InvalidInput", "NotFound", "GuardrailViolation", "LLMAuthError",
                    "LLMRequestRejected", "StoreError"]

#: The libraries the agents import where the work is done rather than at the top of their
#: modules (so that the workflows' references to agent methods, and the CLI through them,
#: load none of them). The worker imports them when it builds its workers (`preload`), as
#: it did when they were top-level imports: the first activity of a fresh worker does not
#: stall the event loop, which also runs workflow tasks and heartbeats, on an import.
IMPLEMENTATION_LIBRARIES = ("openai", "numpy", "bm25s", "aiosmtplib", "phonenumbers", "dateparser")


def preload() -> None:
    """Import what the agents import where the work is done (IMPLEMENTATION_LIBRARIES)."""
    for name in IMPLEMENTATION_LIBRARIES:
        importlib.import_module(name)


#: An agent's activity, unbound: `StoreAgent.store_lead`.
AgentMethod = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class AgentSpec:
    """An agent activity on its queue, with its own timeouts and retries."""

    activity: AgentMethod
    queue: str
    start_to_close: timedelta
    retry: RetryPolicy
    heartbeat: timedelta | None = None
    #: Run as a local activity on the workflow worker: a cheap, idempotent store write
    #: that costs one marker event instead of a task-queue round trip (three events, two
    #: matchings and a workflow task). The worker of the workflow queue registers it.
    local: bool = False


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


def _store(fn: AgentMethod, *, local: bool = False) -> AgentSpec:
    return AgentSpec(fn, "store", _S, _STORE_RETRY, local=local)


#: The classes whose methods are agents; the worker makes one instance of each.
AGENT_CLASSES: tuple[type[Agent], ...] = (
    StoreAgent, ScheduleAgent, KnowledgeAgent, CopywriterAgent, DeliveryAgent, ReplyAgent, SequenceAgent,
    ReplyIntentAgent, ReplyActionAgent, ReplyAnswerAgent,
)

#: `local=True`: short, idempotent store steps, run as local activities (AgentSpec.local).
#: The pages that orchestrators read while a pause or cancel may arrive stay queued: a
#: local activity's result is seen in the same workflow task, before a signal that came
#: in meanwhile, so a page read as a local activity would start its leads (or sends)
#: after the person paused. Longer or batch work (decisions, review edits, stopping
#: sequences in batches, template copies) keeps its queue too.
AGENTS: dict[AgentMethod, AgentSpec] = {
    a.activity: a
    for a in (
        _store(StoreAgent.store_lead, local=True),
        _store(StoreAgent.list_lead_ids),
        _store(StoreAgent.store_draft, local=True),
        _store(StoreAgent.record_lead_failure, local=True),
        _store(StoreAgent.set_stage, local=True),
        _store(StoreAgent.record_decision),
        _store(StoreAgent.list_approved_leads),
        _store(StoreAgent.check_lead_ids, local=True),
        _store(StoreAgent.apply_draft_edit),
        _store(StoreAgent.set_excluded),
        _store(SequenceAgent.list_due_steps),
        _store(SequenceAgent.next_due_at),
        _store(SequenceAgent.stop_sequence),
        _store(SequenceAgent.move_steps),
        _store(SequenceAgent.assign_senders),
        # What a classified reply does (issue 27): store writes and a few signals.
        _store(ReplyActionAgent.apply_reply_intent),
        _store(SequenceAgent.record_step_failure, local=True),
        # Long enough for a first index build that embeds the whole knowledge base;
        # heartbeats (also while waiting for another lead's build) catch a dead worker.
        AgentSpec(KnowledgeAgent.retrieve_knowledge, "knowledge", timedelta(minutes=5),
                  _AGENT_RETRY, heartbeat=timedelta(seconds=30)),
        # Up to two LLM calls (draft + one repair), each bounded by CAMPAIGN_LLM_TIMEOUT.
        AgentSpec(CopywriterAgent.write_draft, "llm", timedelta(minutes=3), _AGENT_RETRY,
                  heartbeat=timedelta(seconds=30)),
        # One reply's intent: the rules, and at most one LLM call bounded by
        # CAMPAIGN_LLM_TIMEOUT; on the llm queue, so the provider's rate limit covers it.
        AgentSpec(ReplyIntentAgent.classify_reply, "llm", timedelta(minutes=2), _AGENT_RETRY,
                  heartbeat=timedelta(seconds=30)),
        # The answer to a positive reply: up to two LLM calls (draft + one repair), each
        # bounded by CAMPAIGN_LLM_TIMEOUT, on the llm queue like a draft.
        AgentSpec(ReplyAnswerAgent.draft_reply_answer, "llm", timedelta(minutes=3),
                  _AGENT_RETRY),
        # The heartbeat lets a send on a worker that died be retried after 20 s
        # instead of the full minute; the retry is safe (see activities/delivery).
        AgentSpec(DeliveryAgent.deliver_message, "delivery", timedelta(minutes=1),
                  _DELIVERY_RETRY, heartbeat=timedelta(seconds=20)),
        # A person's answer to a reply: the same queue, rate and retries as a campaign's
        # sends, and as safe to retry (the SMTP commit point is recorded in the audit).
        AgentSpec(DeliveryAgent.send_answer, "delivery", timedelta(minutes=1),
                  _DELIVERY_RETRY, heartbeat=timedelta(seconds=20)),
        # Pages through a schedule template's leads; heartbeats carry the cursor so a
        # retry resumes where the last attempt stopped.
        AgentSpec(ScheduleAgent.copy_template_leads, "store", timedelta(minutes=30),
                  _STORE_RETRY, heartbeat=timedelta(seconds=60)),
        # One pass over the IMAP reply mailbox; it heartbeats after every message, so a
        # worker that dies mid-pass is noticed in a minute (the retry resumes by UID).
        AgentSpec(ReplyAgent.poll_reply_mailbox, "store", timedelta(minutes=10),
                  _AGENT_RETRY, heartbeat=timedelta(seconds=60)),
    )
}


def agent_spec(fn: AgentMethod) -> AgentSpec:
    """The registry entry of the agent method `fn`; a clear error for one never registered."""
    try:
        return AGENTS[fn]
    except KeyError:
        raise LookupError(f"{getattr(fn, '__qualname__', fn)!r} is not in the registry") from None

