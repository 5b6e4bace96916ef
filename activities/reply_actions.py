"""The reply action agents (issue 27): what is done with a classified reply, and the answer
the copywriter drafts for a positive one.

`ReplyActionAgent.apply_reply_intent` (store queue) records the intent and its action on the
reply, and acts: an unsubscribe suppresses the address for every campaign (source `reply`),
an out-of-office moves the lead's next step (CAMPAIGN_OOO_DEFAULT_DELAY without a date), a
`not_now` with a date snoozes the reply (the inbox lists it again then), a referral records
the contact it names as a suggested lead (nothing is sent to them), and a person's reply of
any other intent stops their sequence in every campaign still sending to them, the intent as
stop reason. A reply matched by an address nobody vouched for changes nothing: its action is
`awaiting_confirmation` until a person confirms it. The audit names the message that asked.

`ReplyAnswerAgent.draft_reply_answer` (llm queue) drafts an answer for `interested`,
`meeting_request` and `question`: the copywriter with the campaign's brief, the thread (our
messages sent to the lead and their reply, fenced as data), the knowledge base searched for
the reply's words, the same guardrails and one repair; the offline writer without an LLM.
Stored with `save_reply_answer(drafted=True)`: never sent by itself.

The signals go by the workflows' handler references, which an activity may not import: the
worker gives the agent how to make them (`workflows.signals.TemporalCampaignSignals`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client

from activities.base import Agent, permanent
from activities.copywriter import (
    CallOutcome,
    CopywriterAgent,
    PromptTemplate,
    fenced,
    follow_up_subject,
    judge,
    lead_block,
    passages_block,
)
from activities.guardrails import DraftOutput, check_draft
from activities.offline_writer import (
    _body,
    _signature,
    _Who,
    passage_facts,
    signature_name,
)
from activities.reply_intents import reply_and_history
from campaign_core.campaign_signals import CampaignSignals
from campaign_core.envelope import Record, digest, now_utc
from campaign_core.ids import message_key
from campaign_core.intents import ReplyClassification, ReplyIntent
from campaign_core.leads import Lead
from campaign_core.metrics import process_metrics
from campaign_core.models import LeadInput, OutOfOfficeSignal, ReplySignal
from campaign_core.replies import SENDING_STAGES
from campaign_core.reply_actions import (
    Action,
    AnswerDraftOutcome,
    ApplyIntentInput,
    ApplyOutcome,
    DraftAnswerInput,
    drafts_answer,
    ooo_not_before,
    stops,
)
from campaign_core.settings import Settings
from campaign_core.store.base import AWAITING_CONFIRMATION, AnswerConflict, Store, StoreError
from campaign_core.store.rows import AuditEntry, DraftRow, ReplyRow

#: The answer prompt (its sha256 goes in the provenance; copy to a new version to change it).
ANSWER_PROMPT_NAME = "reply_answer_v1"
#: The offline writer's fixed sentences, per intent (the guardrails may let their words by).
OFFLINE_OPENERS = {
    ReplyIntent.INTERESTED: "Thank you for your reply, I am glad this is of interest.",
    ReplyIntent.MEETING_REQUEST: "Thank you for your reply, I would be glad to talk.",
    ReplyIntent.QUESTION: "Thank you for your reply and for your question.",
}
OFFLINE_ASKS = {
    ReplyIntent.INTERESTED: "Would a short call next week suit you? Tell me a time that works "
                            "and I will send an invitation.",
    ReplyIntent.MEETING_REQUEST: "Tell me which day and time suit you best and I will send "
                                 "an invitation.",
    ReplyIntent.QUESTION: "I hope this answers it. Happy to go into more detail on a short "
                          "call if that helps.",
}
OFFLINE_WRITER = "offline-answer-v1"
#: How much of the reply the answer prompt reads.
REPLY_CHARS = 4000


def reply_audit(row: ReplyRow, history: list[AuditEntry]) -> ReplyClassification | None:
    """The classification of the reply kept in the lead's audit (record kind `reply_intent`)."""
    for entry in reversed(history):
        for record in entry.envelope.get("records", []):
            data = record.get("data") or {}
            if record.get("kind") == "reply_intent" and data.get("reply_id") == row.reply_id:
                try:
                    return ReplyClassification.model_validate(data["classification"])
                except (KeyError, ValueError):
                    return None
    return None


class ReplyActionAgent(Agent):
    name = "reply_action"
    version = "1"

    def __init__(self, store: Store, settings: Settings, *,
                 signals: Callable[[Client], CampaignSignals]) -> None:
        super().__init__(store, settings)
        #: How to tell campaigns through a Temporal client (the activity's, the worker's).
        self.signals = signals

    @activity.defn(name="apply_reply_intent")
    async def apply_reply_intent(self, inp: ApplyIntentInput) -> ApplyOutcome:
        """Record the reply's intent and act on it (see the module docstring). Safe to retry:
        each step is idempotent (a suppression, snooze or suggestion already there stays,
        a stop or move signalled twice is recorded once)."""
        started = now_utc()
        row, history = await reply_and_history(self.store, inp.reply_id)
        reading = None if inp.intent_override is not None else reply_audit(row, history)
        if inp.intent_override is not None:
            intent, confidence = inp.intent_override, 1.0
        elif inp.outcome is not None:
            intent, confidence = inp.outcome.intent, inp.outcome.confidence
        else:
            raise permanent("InvalidInput", "neither a classification nor a person's intent")
        when = inp.outcome.date if inp.outcome is not None and inp.intent_override is None \
            else None
        out = ApplyOutcome(reply_id=row.reply_id, intent=intent, action="none")
        if row.intent is None and row.campaign_id and row.matched_by:
            # The desk left a matched reply uncounted until it was read: counted once, at
            # its first reading (a retry finds the intent recorded), by what it means.
            process_metrics().reply(kind=row.kind, matched_by=row.matched_by,
                                    intent=intent.value)
        if not (row.campaign_id and row.lead_id):  # matched no lead: nothing to act on
            await self.store.record_reply_intent(row.reply_id, intent.value, confidence, "none")
            return out
        cid, lid = row.campaign_id, row.lead_id
        if not row.verified and not inp.confirmed:
            out.action = "awaiting_confirmation"
            await self.store.record_reply_intent(row.reply_id, intent.value, confidence,
                                                 AWAITING_CONFIRMATION)
            await self._audit(row, intent, out, inp, started, {}, history)
            return out
        lead = await self.store.get_lead(cid, lid)
        client = self.signals(activity.client())
        detail: dict[str, Any] = {}
        action: Action = "none"
        if row.kind != "reply" and intent not in (ReplyIntent.OUT_OF_OFFICE,):
            intent_stops = False  # machine mail (a header-borne auto-reply): as today
        else:
            intent_stops = stops(intent)
        if intent is ReplyIntent.UNSUBSCRIBE:
            added = await self.store.add_suppressions(
                [row.email], f"unsubscribe (reply, {cid})", source="reply")
            detail["suppressed"] = added > 0
            action = "suppressed"
        elif intent is ReplyIntent.OUT_OF_OFFICE:
            out.not_before = ooo_not_before(when, now_utc(), self.settings.ooo_default_delay_delta,
                                            lead.timezone if lead else None)
            signalled = await client.out_of_office(cid, OutOfOfficeSignal(
                lead_id=lid, reply_id=row.reply_id, not_before=out.not_before))
            if signalled:
                out.signalled.append(cid)
            else:  # no delivery running: the schedule itself moves
                await self.store.move_open_step(cid, lid, out.not_before)
            detail["not_before"] = out.not_before.isoformat()
            action = "moved"
        elif intent is ReplyIntent.NOT_NOW and when is not None:
            until = datetime.combine(when, time(0, 0), tzinfo=UTC)
            await self.store.snooze_reply(row.reply_id, until)
            detail["snooze_until"] = until.isoformat()
            action = "snoozed"
        elif intent is ReplyIntent.REFERRAL:
            referral = reading.referral if reading is not None else None
            if referral is not None and (referral.name or referral.email):
                sid, _ = await self.store.add_suggested_lead(
                    campaign_id=cid, reply_id=row.reply_id, referred_by=row.email,
                    name=referral.name, email=referral.email)
                detail["suggested_lead"] = sid
                action = "suggested"
        if intent_stops:
            out.signalled += await self._stop(client, row, lead, intent)
            if action == "none":
                action = "stopped"
            detail["stop_reason"] = intent.value
        out.action = action
        out.draft = intent_stops and drafts_answer(intent)
        await self.store.record_reply_intent(row.reply_id, intent.value, confidence, action)
        await self._audit(row, intent, out, inp, started, detail, history)
        return out

    async def _stop(self, client: CampaignSignals, row: ReplyRow, lead: Lead | None,
                    intent: ReplyIntent) -> list[str]:
        """Stop the person's sequence in the campaign replied to (the intent as reason) and in
        every other campaign still sending to their address (`replied in campaign <id>`)."""
        assert row.campaign_id and row.lead_id
        told = []
        if await client.reply(row.campaign_id, ReplySignal(
                lead_id=row.lead_id, kind="reply", reply_id=row.reply_id, reason=intent.value)):
            told.append(row.campaign_id)
        if lead is None:
            return told
        for cid, lid in await self.store.find_leads_by_email(lead.email, SENDING_STAGES):
            if cid == row.campaign_id:
                continue
            if await client.reply(cid, ReplySignal(lead_id=lid, kind="reply",
                                                   reply_id=row.reply_id,
                                                   from_campaign=row.campaign_id)):
                told.append(cid)
        return told

    async def _audit(self, row: ReplyRow, intent: ReplyIntent, out: ApplyOutcome,
                     inp: ApplyIntentInput, started: datetime, detail: dict[str, Any],
                     history: list[AuditEntry]) -> None:
        """The action in the lead's audit trail, naming the message that asked (its reply id
        and Message-ID) and who read it (the classifier, or the person who set the intent);
        once per run (a retried attempt finds the entry of the attempt before it)."""
        assert row.campaign_id and row.lead_id
        data = {"status": out.action, "reply_id": row.reply_id, "message_id": row.message_id,
                "intent": intent.value, "by": inp.by or "classifier",
                "confirmed": inp.confirmed, "signalled": out.signalled,
                "run": activity.info().workflow_run_id, **detail}
        for entry in history:
            for record in entry.envelope.get("records", []):
                kept = record.get("data") or {}
                if (record.get("kind") == "reply_action" and kept.get("run") == data["run"]
                        and kept.get("reply_id") == row.reply_id):
                    return
        record = Record(kind="reply_action", key=row.reply_id, data=data,
                        provenance=self.provenance(
                            f"reply:{row.reply_id}", {"reply": row.reply_id,
                                                      "intent": intent.value}))
        await self.keep(self.envelope(row.campaign_id, [record], started), row.lead_id,
                        f"reply {row.reply_id}: {intent.value} -> {out.action}")


def offline_answer(lead: Lead, intent: ReplyIntent, passages: list[dict[str, Any]],
                   subject: str, *, sender: str) -> DraftOutput:
    """A short, deterministic answer: thanks, for a question the knowledge base's sentence
    that best matches it (with its citation), an easy next step, the signature."""
    who = _Who.of(lead)
    facts = [f for rank, p in enumerate(passages) for f in passage_facts(p, rank)][:1] \
        if intent is ReplyIntent.QUESTION else []
    body = _body([who.greeting, OFFLINE_OPENERS[intent], *(f.line() for f in facts),
                  OFFLINE_ASKS[intent], _signature(sender, lead)])
    return DraftOutput(subject=subject, body=body, personal_points=who.points,
                       citations=[f.citation() for f in facts])


class ReplyAnswerAgent(CopywriterAgent):
    """The copywriter, answering a reply (its `_complete` pays, caches and budgets the call
    exactly as a draft's)."""

    name = "reply_answer"
    version = "1"

    def __init__(self, store: Store, settings: Settings) -> None:
        super().__init__(store, settings)
        self.answer_prompt = PromptTemplate.load(ANSWER_PROMPT_NAME)
        self._kb: Any = None  # a KnowledgeAgent (its index cache), made on first use

    @activity.defn(name="draft_reply_answer")
    async def draft_reply_answer(self, inp: DraftAnswerInput) -> AnswerDraftOutcome:
        started = now_utc()
        row = await self.store.get_reply(inp.reply_id)
        if row is None or not (row.campaign_id and row.lead_id):
            raise permanent("NotFound", f"reply {inp.reply_id} not found or matched no lead")
        writer = OFFLINE_WRITER if self._client is None else f"{self.model}:{ANSWER_PROMPT_NAME}"
        existing = await self.store.get_reply_answer(row.reply_id)
        if existing is not None:  # drafted before (a retry, a second run) or a person's edit
            return AnswerDraftOutcome(reply_id=row.reply_id, status="kept", writer=writer)
        cid, lid = row.campaign_id, row.lead_id
        campaign = await self.store.get_campaign(cid)
        lead = await self.store.get_lead(cid, lid)
        if campaign is None or lead is None:
            raise permanent("NotFound", f"campaign {cid} / lead {lid} not found")
        intent = ReplyIntent(row.intent) if row.intent else ReplyIntent.INTERESTED
        if intent not in OFFLINE_OPENERS:
            intent = ReplyIntent.INTERESTED
        sent = await self._sent_thread(cid, lid)
        passages = await self._passages(campaign.kb_dir, row, cid, lid)
        subject = follow_up_subject(row.subject or (sent[0].subject if sent else ""))
        history = await self.store.audit(cid, lid)
        calls: list[CallOutcome] = []
        if self._client is None:
            draft = offline_answer(lead, intent, passages, subject,
                                   sender=signature_name(self.settings.mail_from))
            reasons = check_draft(draft, passages=passages, lead=lead, brief=campaign.brief,
                                  grounding=[OFFLINE_OPENERS[intent], OFFLINE_ASKS[intent]])
        else:
            maybe, reasons, calls = await self._write(row, lead, intent, campaign.brief,
                                                      passages, sent, subject, history)
            draft = maybe or DraftOutput.model_construct(subject=subject, body="", citations=[],
                                                         personal_points=[])
        status = "failed" if reasons or not draft.body.strip() else "drafted"
        data = {"status": status, "reply_id": row.reply_id, "intent": intent.value,
                "writer": writer, "subject": draft.subject, "body": draft.body,
                "citations": [c.model_dump() for c in draft.citations],
                "failed_reason": "; ".join(reasons) or None,
                "calls": [c.request_hash for c in calls],
                "thread": [d.step for d in sent],
                "passages": [p.get("passage_id") for p in passages]}
        record = Record(kind="reply_answer", key=row.reply_id, data=data,
                        provenance=self.provenance(
                            "llm:offline" if self._client is None else f"llm:{self.provider}",
                            {"reply": row.reply_id, "text": digest(row.text),
                             "thread": [d.step for d in sent]},
                            model=writer))
        ref = await self.keep(self.envelope(cid, [record], started), lid,
                              f"answer to reply {row.reply_id}: {status}")
        if status == "failed":
            return AnswerDraftOutcome(reply_id=row.reply_id, status="failed", writer=writer,
                                      envelope_id=ref.envelope_id)
        try:
            await self.store.save_reply_answer(row.reply_id, subject=draft.subject,
                                               body=draft.body, by=writer, drafted=True)
        except AnswerConflict:
            return AnswerDraftOutcome(reply_id=row.reply_id, status="kept", writer=writer,
                                      envelope_id=ref.envelope_id)
        except StoreError as exc:
            raise permanent("StoreError", str(exc)) from None
        await self.store.record_reply_intent(row.reply_id, intent.value, row.confidence,
                                             "answer_drafted")
        return AnswerDraftOutcome(reply_id=row.reply_id, status="drafted", writer=writer,
                                  envelope_id=ref.envelope_id)

    async def _sent_thread(self, campaign_id: str, lead_id: str) -> list[DraftRow]:
        """Our messages sent to the lead, oldest first (their drafts as approved)."""
        out = []
        for draft in await self.store.list_lead_drafts(campaign_id, lead_id):
            delivery = await self.store.get_delivery(message_key(campaign_id, lead_id,
                                                                 draft.step))
            if delivery is not None and delivery.status == "sent":
                out.append(draft)
        return out

    async def _passages(self, kb_dir: str | None, row: ReplyRow, campaign_id: str,
                        lead_id: str) -> list[dict[str, Any]]:
        """The knowledge base searched for the reply's own words (lexical), else the passages
        the lead's first draft was written from."""
        if kb_dir and Path(kb_dir).is_dir() and row.text.strip():
            if self._kb is None:
                from activities.knowledge import KnowledgeAgent
                self._kb = KnowledgeAgent(self.store, self.settings.model_copy(
                    update={"embedding_model": None}))
            _, index = await self._kb.index_for(Path(kb_dir))
            hits = await index.search(f"{row.subject}\n{row.text}"[:REPLY_CHARS],
                                      self.settings.retrieval_top_k)
            if hits:
                return [{"passage_id": h.chunk.chunk_id, "source": h.chunk.source,
                         "title": h.chunk.title, "text": h.chunk.text,
                         "score": round(h.score, 6)} for h in hits]
        return await self.store.get_retrieval(campaign_id, lead_id)

    async def _write(self, row: ReplyRow, lead: Lead, intent: ReplyIntent, brief: str,
                     passages: list[dict[str, Any]], sent: list[DraftRow], subject: str,
                     history: list[AuditEntry]
                     ) -> tuple[DraftOutput | None, list[str], list[CallOutcome]]:
        """One LLM draft and, when the guardrails refuse it, one repair."""
        assert row.campaign_id and row.lead_id
        prompt = self.answer_prompt
        thread = "\n\n".join(
            f'<our_message step="{d.step}">\nSubject: {fenced(d.subject)}\n\n{fenced(d.body)}\n'
            "</our_message>" for d in sent) or "(none recorded)"
        messages = [
            {"role": "system", "content": prompt.render("system")},
            {"role": "user", "content": prompt.render(
                "user", brief=brief.strip() or "(no brief)", lead=lead_block(lead),
                passages=passages_block(passages), thread=thread, intent=intent.value,
                reply=fenced(row.text[:REPLY_CHARS]) or "(empty)")},
        ]
        inp = LeadInput(campaign_id=row.campaign_id, lead_id=row.lead_id)
        first, _ = await self._complete(inp, self._request(messages), "reply_answer", history)
        calls = [first]
        draft, reasons = judge(first, passages=passages, lead=lead, brief=brief, subject=subject)
        if reasons:
            repair = self._repair_request(messages, first, prompt, reasons)
            second, _ = await self._complete(inp, repair, "reply_answer_repair", history)
            calls.append(second)
            draft, reasons = judge(second, passages=passages, lead=lead, brief=brief,
                                   subject=subject)
        return draft, reasons, calls
