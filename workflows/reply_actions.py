"""ReplyActionWorkflow: what is done with one reply, durably and once (issue 27).

Started by the reply desk for each reply it records (webhook or IMAP) with the id
`reply-action:<reply_id>` and a policy that refuses a second start, so a reply delivered
twice is acted on once; `…:confirmed` when a person confirms an unverified match, and a fresh
id when a person changes the intent (`start_reply_action`). Steps: classify (the reply-intent
agent, llm queue; skipped for a person's intent) → apply (record the intent and action,
suppress, snooze, suggest a lead, stop the person's sequences or move the next step: the
reply action agent, store queue) → for interested / meeting_request / question, draft an
answer (llm queue), which a person sends. History carries ids, intents and dates only.
A campaign's pause or continue-as-new does not touch it: it is a workflow of its own.
"""

from __future__ import annotations

import uuid

from temporalio import workflow
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

with workflow.unsafe.imports_passed_through():
    from activities.reply_actions import ReplyActionAgent, ReplyAnswerAgent
    from activities.reply_intents import ReplyIntentAgent
    from campaign_core.ids import campaign_workflow_id
    from campaign_core.intents import ClassifyReplyInput, ReplyIntent
    from campaign_core.queues import WORKFLOW_QUEUE, queue_name
    from campaign_core.reply_actions import (
        REPLY_ACTION_PREFIX,
        ApplyIntentInput,
        DraftAnswerInput,
        ReplyActionInput,
        ReplyActionResult,
        reply_action_id,
    )
    from workflows.agents import call_agent


@workflow.defn(name="ReplyActionWorkflow")
class ReplyActionWorkflow:
    @workflow.run
    async def run(self, inp: ReplyActionInput) -> ReplyActionResult:
        prefix = inp.queue_prefix
        outcome = None
        if inp.intent_override is None:
            outcome = await call_agent(ReplyIntentAgent.classify_reply,
                                       ClassifyReplyInput(reply_id=inp.reply_id), prefix=prefix,
                                       summary="what the reply means")
        applied = await call_agent(
            ReplyActionAgent.apply_reply_intent,
            ApplyIntentInput(reply_id=inp.reply_id, outcome=outcome,
                             intent_override=inp.intent_override, confirmed=inp.confirmed,
                             by=inp.by),
            prefix=prefix, summary="act on the reply")
        workflow.set_current_details(f"{applied.intent.value}: {applied.action}")
        result = ReplyActionResult(reply_id=inp.reply_id, intent=applied.intent,
                                   action=applied.action)
        if applied.draft:
            drafted = await call_agent(ReplyAnswerAgent.draft_reply_answer,
                                       DraftAnswerInput(reply_id=inp.reply_id), prefix=prefix,
                                       summary="draft the answer")
            result.answer = drafted.status
            workflow.set_current_details(
                f"{applied.intent.value}: {applied.action}, answer {drafted.status}")
        return result


async def queue_prefix_of(client: Client, campaign_id: str | None, default: str = "") -> str:
    """The task-queue prefix the campaign's workflows run under (read from its campaign
    workflow's queue), so a reply's workflow runs on the same worker; `default` when the
    campaign's workflow is not known (any more)."""
    if not campaign_id:
        return default
    try:
        desc = await client.get_workflow_handle(campaign_workflow_id(campaign_id)).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return default
        raise
    queue = desc.task_queue or ""
    return queue[:-len(WORKFLOW_QUEUE)] if queue.endswith(WORKFLOW_QUEUE) else default


async def start_reply_action(client: Client, reply_id: str,
                             intent_override: ReplyIntent | None = None, *,
                             campaign_id: str | None = None, confirmed: bool = False,
                             by: str | None = None, prefix: str | None = None) -> bool:
    """Start the reply action workflow for `reply_id`: the classifier's reading (once per
    reply: a second start is a no-op), after a person's confirmation (`confirmed`, once), or
    a person's intent (`intent_override`: each change acts anew). It runs on the queues of
    the campaign's own workflows, else under `prefix` (the deployment's task-queue prefix).
    True when started now or before."""
    prefix = await queue_prefix_of(client, campaign_id, prefix or "")
    if intent_override is not None:
        wid = f"{REPLY_ACTION_PREFIX}{reply_id}:{intent_override.value}:{uuid.uuid4().hex[:8]}"
    else:
        wid = reply_action_id(reply_id, confirmed=confirmed)
    try:
        await client.start_workflow(
            ReplyActionWorkflow.run,
            ReplyActionInput(reply_id=reply_id, intent_override=intent_override,
                             confirmed=confirmed, by=by, queue_prefix=prefix),
            id=wid, task_queue=queue_name(WORKFLOW_QUEUE, prefix),
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=f"Act on reply {reply_id}")
    except WorkflowAlreadyStartedError:
        return True  # acted on before (or being acted on): once per reply
    return True
