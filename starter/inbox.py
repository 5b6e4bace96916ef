"""The inbox for people: the replies that need one, their answers, and sending an answer once.

`campaign inbox`, `GET/POST /inbox...` and the page `/review/inbox` all go through here.
Sending is exactly once however often it is asked for: the store's `claim_answer_send`
lets one caller mark the answer `sending`, and only that caller starts `AnswerWorkflow`
(`answer:<reply_id>`, a reuse policy that refuses a second start unless the first failed);
a later press finds the answer being sent or sent and starts nothing. The workflow's
activity (`DeliveryAgent.send_answer`) renders the message in their thread and sends it over
the campaign's channel. Changing a reply's intent records it as the person's reading and
starts the reply action for the new intent (part D's `start_reply_action`).

Raises starter/errors.py errors (NotFound, BadInput, Conflict); each door phrases them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from campaign_core.answers import (
    AnswerInput,
    AnswerOutcome,
    answer_workflow_id,
    reply_subject,
)
from campaign_core.envelope import now_utc
from campaign_core.ids import message_key
from campaign_core.intents import ReplyIntent
from campaign_core.models import Channel
from campaign_core.queues import WORKFLOW_QUEUE, queue_name
from campaign_core.store.base import AnswerConflict
from campaign_core.store.rows import InboxItem, ReplyAnswerRow, ReplyRow
from starter.errors import BadInput, Conflict, NotFound
from starter.limits import MAX_BODY, MAX_SUBJECT
from starter.manager import CampaignManager

#: How long a send waits for the answer workflow before saying "being sent".
SEND_WAIT = timedelta(seconds=60)
#: A claim with no workflow this long after it was taken is abandoned (its claimer died
#: between claiming and starting the workflow): a later press takes it over.
CLAIM_STALE = timedelta(minutes=2)


class AnswerSent(BaseModel):
    """What `send` did: `sent` now, `already_sent` (an earlier press sent it), or `sending`
    (the workflow runs: it was started by this press or an earlier one)."""

    reply_id: str
    status: Literal["sent", "already_sent", "sending"]
    message_id: str | None = None
    by: str | None = None
    workflow_id: str


class AnswerSaved(BaseModel):
    reply_id: str
    status: str
    subject: str
    body: str
    by: str


class Done(BaseModel):
    reply_id: str
    done: bool
    by: str


class IntentChanged(BaseModel):
    reply_id: str
    intent: str
    by: str
    action_started: bool


class ThreadMessage(BaseModel):
    """One message of the thread as the page shows it: ours (a step, or an answer) or theirs."""

    who: Literal["us", "them"]
    at: str
    subject: str
    text: str
    what: str


def check_intents(intents: Iterable[str] | None) -> list[str] | None:
    """The intents named, each one of ReplyIntent's values (BadInput naming `intent`)."""
    if not intents:
        return None
    known = {i.value for i in ReplyIntent}
    chosen: list[str] = []
    for raw in intents:
        for value in (v.strip() for v in raw.split(",")):
            if not value:
                continue
            if value not in known:
                raise BadInput(f"{value!r} is not one of {', '.join(i.value for i in ReplyIntent)}",
                               field="intent")
            chosen.append(value)
    return chosen or None


async def inbox(m: CampaignManager, *, campaign_id: str | None = None,
                intents: Iterable[str] | None = None) -> list[InboxItem]:
    """The replies that need a person, newest first (see `Store.inbox`)."""
    wanted = check_intents(intents)
    if campaign_id is not None and await m.store.get_campaign(campaign_id) is None:
        raise NotFound(f"unknown campaign {campaign_id!r}", field="campaign")
    items = await m.store.inbox(campaign_id=campaign_id, intents=wanted, now=now_utc())
    if not any(item.intent == "referral" for item in items):
        return items
    # A referral's item names the contact it suggested (name, address, who referred them),
    # so a person can add them to a campaign (`campaign add-leads`) from what the inbox shows.
    named = {s.reply_id: s for s in await m.store.list_suggested_leads(campaign_id)}
    return [item.model_copy(update={"suggested_lead": named.get(item.reply_id)})
            if item.intent == "referral" else item for item in items]


async def _reply(m: CampaignManager, reply_id: str) -> ReplyRow:
    reply = await m.store.get_reply(reply_id)
    if reply is None:
        raise NotFound(f"no reply {reply_id!r}")
    return reply


def _checked_text(subject: str | None, body: str | None) -> None:
    if subject is not None and len(subject) > MAX_SUBJECT:
        raise BadInput(f"at most {MAX_SUBJECT:,} characters", field="subject")
    if body is not None and len(body) > MAX_BODY:
        raise BadInput(f"at most {MAX_BODY:,} characters", field="body")


async def save_answer(m: CampaignManager, reply_id: str, *, subject: str | None = None,
                      body: str | None = None, by: str) -> AnswerSaved:
    """A person's edit of the answer (what is not given is kept); Conflict once it is being
    sent or was sent."""
    _checked_text(subject, body)
    reply = await _reply(m, reply_id)
    if reply.campaign_id is None or reply.lead_id is None:
        raise Conflict("this message matched no lead: there is no one to answer")
    current = await m.store.get_reply_answer(reply_id)
    if current is not None and current.status != "drafted":
        raise Conflict(f"the answer is {current.status} already; it can no longer be changed")
    new_subject = subject if subject is not None else (
        current.subject if current else reply_subject(reply.subject))
    new_body = body if body is not None else (current.body if current else "")
    try:
        await m.store.save_reply_answer(reply_id, subject=new_subject.strip() or reply_subject(
            reply.subject), body=new_body, by=by)
    except AnswerConflict as err:
        raise Conflict("the answer is being sent or was sent; it can no longer be changed") from err
    saved = await m.store.get_reply_answer(reply_id)
    assert saved is not None
    return AnswerSaved(reply_id=reply_id, status=saved.status, subject=saved.subject,
                       body=saved.body, by=by)


async def _check_sendable(m: CampaignManager, reply: ReplyRow) -> None:
    """Conflict when this reply's answer cannot go: no lead, unverified, a webhook campaign,
    a suppressed address, a channel without its settings."""
    if reply.campaign_id is None or reply.lead_id is None:
        raise Conflict("this message matched no lead: there is no one to answer")
    if not reply.verified:
        raise Conflict("this reply was matched by an address nobody vouched for: a person "
                       "confirms it first (replies confirm), then it can be answered")
    campaign = await m.store.get_campaign(reply.campaign_id)
    lead = await m.store.get_lead(reply.campaign_id, reply.lead_id)
    if campaign is None or lead is None:
        raise NotFound("the reply's campaign or lead is gone")
    if campaign.channel == Channel.WEBHOOK.value:
        raise Conflict(f"campaign {campaign.campaign_id!r} delivers by webhook: answers go "
                       "by smtp or outbox only; answer from your mail client")
    if await m.store.is_suppressed(lead.email):
        raise Conflict("the address is on the suppression list: no answer is sent to it")
    if campaign.channel == Channel.SMTP.value and m.settings.smtp_url is None:
        raise Conflict("set CAMPAIGN_SMTP_URL: the campaign's channel is smtp")


async def send_answer(m: CampaignManager, reply_id: str, *, by: str, subject: str | None = None,
                      body: str | None = None, wait: timedelta = SEND_WAIT) -> AnswerSent:
    """Send the answer (after saving the edit given, if any), exactly once: see the module.

    A press that finds the answer being sent or sent reports it (`sending`,
    `already_sent`) when its text is the one going out (the same form pressed twice), and
    is refused (Conflict) when it carries another: that edit was not sent."""
    reply = await _reply(m, reply_id)
    current = await m.store.get_reply_answer(reply_id)
    if current is not None and current.status != "drafted":
        return await _pressed_again(m, current, subject, body, by=by, wait=wait)
    await _check_sendable(m, reply)
    if subject is not None or body is not None:
        try:
            await save_answer(m, reply_id, subject=subject, body=body, by=by)
        except Conflict:
            row = await m.store.get_reply_answer(reply_id)
            if row is None or row.status == "drafted":
                raise
            return await _pressed_again(m, row, subject, body, by=by, wait=wait)
        current = await m.store.get_reply_answer(reply_id)
    if current is None or not current.body.strip():
        raise BadInput("there is no answer to send: write one (its body) first",
                       field="body")
    claimed = await m.store.claim_answer_send(reply_id, by=by)
    if claimed is None:
        return await _already(m, reply_id, by=by, wait=wait)
    return await _run(m, reply_id, by=by, wait=wait)


async def _pressed_again(m: CampaignManager, row: ReplyAnswerRow, subject: str | None,
                         body: str | None, *, by: str, wait: timedelta) -> AnswerSent:
    """Send pressed on an answer already being sent or sent: the same text is the same
    answer (reported); another text is an edit that came too late."""
    same = ((subject is None or subject.strip() == row.subject.strip())
            and (body is None or body.replace("\r\n", "\n") == row.body.replace("\r\n", "\n")))
    if not same:
        raise Conflict(f"the answer is {row.status} already, with other text: this edit was "
                       "not sent")
    return await _already(m, row.reply_id, by=by, wait=wait)


async def _already(m: CampaignManager, reply_id: str, *, by: str, wait: timedelta
                   ) -> AnswerSent:
    """Another press holds the claim: report it; a workflow that failed after its claim
    (or never started) gives the claim back and this press sends."""
    row = await m.store.get_reply_answer(reply_id)
    wid = answer_workflow_id(reply_id)
    if row is not None and row.status == "sent":
        return AnswerSent(reply_id=reply_id, status="already_sent", message_id=row.message_id,
                          by=row.sent_by, workflow_id=wid)
    status = await _workflow_status(m, wid)
    given_up = status in (WorkflowExecutionStatus.FAILED, WorkflowExecutionStatus.TERMINATED,
                          WorkflowExecutionStatus.TIMED_OUT, WorkflowExecutionStatus.CANCELED)
    # No workflow: its claimer may be about to start it, unless the claim is old (the
    # claimer died between claiming and starting).
    abandoned = status is None and row is not None and _older_than(row.updated_at, CLAIM_STALE)
    if given_up or abandoned:
        # Its sender is gone without sending: take the claim back, once, for this press.
        await m.store.release_answer_send(reply_id)
        if await m.store.claim_answer_send(reply_id, by=by) is not None:
            return await _run(m, reply_id, by=by, wait=wait)
    row = await m.store.get_reply_answer(reply_id)
    if row is not None and row.status == "sent":
        return AnswerSent(reply_id=reply_id, status="already_sent", message_id=row.message_id,
                          by=row.sent_by, workflow_id=wid)
    return AnswerSent(reply_id=reply_id, status="sending", by=row.sent_by if row else None,
                      workflow_id=wid)


def _older_than(stamp: str | None, age: timedelta) -> bool:
    if not stamp:
        return True
    return now_utc() - datetime.fromisoformat(stamp) > age


async def _workflow_status(m: CampaignManager, wid: str) -> WorkflowExecutionStatus | None:
    client = await m.client()
    try:
        described = await client.get_workflow_handle(wid).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return described.status


async def _run(m: CampaignManager, reply_id: str, *, by: str, wait: timedelta) -> AnswerSent:
    """Start the answer workflow for the claim this caller holds, and wait a while for it."""
    from workflows.answer import AnswerWorkflow

    client = await m.client()
    wid = answer_workflow_id(reply_id)
    handle: WorkflowHandle[Any, AnswerOutcome]
    try:
        handle = await client.start_workflow(
            AnswerWorkflow.run, AnswerInput(reply_id=reply_id, queue_prefix=m.queue_prefix),
            id=wid, task_queue=queue_name(WORKFLOW_QUEUE, m.queue_prefix),
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            static_summary="Answer to a reply")
    except WorkflowAlreadyStartedError:
        handle = client.get_workflow_handle_for(AnswerWorkflow.run, wid)
    except BaseException:
        await m.store.release_answer_send(reply_id)  # nothing started: the claim goes back
        raise
    try:
        outcome: AnswerOutcome = await asyncio.wait_for(
            handle.result(), wait.total_seconds())
    except TimeoutError:
        return AnswerSent(reply_id=reply_id, status="sending", by=by, workflow_id=wid)
    except WorkflowFailureError as err:
        await m.store.release_answer_send(reply_id)
        raise Conflict(f"the answer was not sent: {_cause(err)}") from err
    return AnswerSent(reply_id=reply_id, status="sent" if outcome.status == "sent"
                      else "already_sent", message_id=outcome.message_id, by=by,
                      workflow_id=wid)


def _cause(err: BaseException) -> str:
    cur: BaseException = err
    while cur.__cause__ is not None:
        cur = cur.__cause__
    return str(cur) or type(cur).__name__


async def mark_done(m: CampaignManager, reply_id: str, *, by: str) -> Done:
    await _reply(m, reply_id)
    await m.store.mark_reply_done(reply_id, by=by)
    return Done(reply_id=reply_id, done=True, by=by)


async def change_intent(m: CampaignManager, reply_id: str, intent: str, *, by: str
                        ) -> IntentChanged:
    """Record the person's reading of the reply and start the action for it."""
    chosen = check_intents([intent])
    if not chosen or len(chosen) != 1:
        raise BadInput("name one intent", field="intent")
    value = chosen[0]
    reply = await _reply(m, reply_id)
    if reply.campaign_id is None or reply.lead_id is None:
        raise Conflict("this message matched no lead: nothing follows from its intent")
    await m.store.set_reply_intent_by_person(reply_id, value, by=by)
    started = await _start_reply_action(m, reply, value, by)
    return IntentChanged(reply_id=reply_id, intent=value, by=by, action_started=started)


async def _start_reply_action(m: CampaignManager, reply: ReplyRow, intent: str, by: str
                              ) -> bool:
    """Part D's entry point: the reply action workflow for the person's intent."""
    try:
        from workflows.reply_actions import start_reply_action
    except ImportError as err:  # a tree without the reply actions
        raise Conflict("the reply actions are not available in this version: the intent is "
                       "recorded, nothing follows from it", field="intent") from err
    return await start_reply_action(await m.client(), reply.reply_id, ReplyIntent(intent),
                                    campaign_id=reply.campaign_id, by=by,
                                    prefix=m.queue_prefix)


async def thread(m: CampaignManager, reply: ReplyRow) -> list[ThreadMessage]:
    """The whole thread with the lead, oldest first: each step we sent, their messages, and
    an answer we sent."""
    if reply.campaign_id is None or reply.lead_id is None:
        return [ThreadMessage(who="them", at=reply.received_at, subject=reply.subject,
                              text=reply.text, what=reply.kind)]
    cid, lid = reply.campaign_id, reply.lead_id
    messages: list[ThreadMessage] = []
    for draft in await m.store.list_lead_drafts(cid, lid):
        sent = await m.store.get_delivery(message_key(cid, lid, draft.step))
        if sent is None or sent.status != "sent":
            continue
        if draft.approved_version not in (None, draft.version):
            draft = await m.store.get_draft_version(cid, lid, draft.step,
                                                    draft.approved_version) or draft
        messages.append(ThreadMessage(who="us", at=sent.updated_at, subject=draft.subject,
                                      text=draft.body, what=f"step {draft.step}"))
    for other in await m.store.list_replies(cid):
        if other.lead_id == lid:
            messages.append(ThreadMessage(
                who="them", at=other.received_at, subject=other.subject, text=other.text,
                what=other.intent or other.kind))
    answer = await m.store.get_reply_answer(reply.reply_id)
    if answer is not None and answer.status == "sent":
        messages.append(ThreadMessage(who="us", at=answer.sent_at or "", subject=answer.subject,
                                      text=answer.body, what=f"answer sent by {answer.sent_by}"))
    messages.sort(key=lambda msg: msg.at)
    return messages


async def why(m: CampaignManager, reply: ReplyRow) -> str | None:
    """The classifier's reason for the reply's intent, from the audit (`reply_intent`)."""
    if reply.campaign_id is None or reply.lead_id is None:
        return None
    found: str | None = None
    for entry in await m.store.audit(reply.campaign_id, reply.lead_id):
        for record in entry.envelope.get("records", []):
            if isinstance(record, dict) and record.get("kind") == "reply_intent" and \
                    record.get("key") == reply.reply_id:
                data: dict[str, Any] = record.get("data") or {}
                classification = data.get("classification") or {}
                found = str(classification.get("why") or "") or found
    return found


async def answer_of(m: CampaignManager, reply_id: str) -> ReplyAnswerRow | None:
    return await m.store.get_reply_answer(reply_id)
