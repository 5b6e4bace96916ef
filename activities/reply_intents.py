"""The reply-intent agent: what a stored reply means, from the offline rules and, with an
LLM configured, a structured-output call; one activity, `classify_reply`, on the llm queue.

It reads the reply from the store by its id (history carries ids only), reads it with the
rules (`campaign_core.reply_rules`), and, when an LLM is configured and the reply belongs
to a campaign (whose spend the call is counted in), asks the model with its own prompt
(`prompts/reply_intent_v1.md`), the reply fenced as data. A refusal, a label outside the
enum or an answer that is not the schema's JSON leaves the rules' reading (the reason is
kept in `why`); a rate limit or an unavailable provider is raised for Temporal to retry,
as the copywriter does. `campaign_core.intents.combine` merges the two readings and
applies CAMPAIGN_INTENT_MIN_CONFIDENCE. The whole classification (with a referral's
contact) goes to the audit log, record kind `reply_intent`; the workflow gets an
`IntentOutcome` without personal data. See docs/replies.md.
"""

from __future__ import annotations

import asyncio
import json
from datetime import date, datetime
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from temporalio import activity

from activities.base import Agent, permanent
from activities.copywriter import (
    CallOutcome,
    PromptTemplate,
    _find,
    fenced,
    ledger_key,
    may_have_been_billed,
)
from activities.llm_client import cost_usd, make_client, max_cost_nanousd, provider_call
from campaign_core.budget import to_nano
from campaign_core.envelope import Record, digest, now_utc
from campaign_core.intents import (
    ClassifyReplyInput,
    IntentOutcome,
    Referral,
    ReplyClassification,
    ReplyIntent,
    combine,
)
from campaign_core.metrics import process_metrics
from campaign_core.reply_rules import ReplyText, classify_reply_text
from campaign_core.settings import Settings
from campaign_core.store.base import Store
from campaign_core.store.rows import AuditEntry, ReplyRow

PROMPT_NAME = "reply_intent_v1"
#: The most a classification may write: a label, a number, a sentence, a date, a contact.
MAX_OUTPUT_TOKENS = 300
#: How much of the stored reply the model reads (the store keeps its first lines).
REPLY_PROMPT_CHARS = 4000


class ReplyIntentOutput(BaseModel):
    """The model's structured answer (strict JSON schema: every field, no others)."""

    model_config = ConfigDict(extra="forbid")

    intent: ReplyIntent = Field(description="One of the eleven intents.")
    confidence: float = Field(description="How sure: 0 to 1.")
    why: str = Field(description="One short sentence: why this intent.")
    date: str | None = Field(description="YYYY-MM-DD: the return date (out_of_office) or the "
                             "date to follow up (not_now); null when none is given.")
    referral_name: str | None = Field(description="referral: the person named, else null.")
    referral_email: str | None = Field(description="referral: their address, else null.")


async def reply_and_history(store: Store, reply_id: str) -> tuple[ReplyRow, list[AuditEntry]]:
    """The stored reply and its lead's audit trail (empty when it matched no lead): what the
    reply agents read first (NotFound, not retried, for an unknown reply)."""
    row = await store.get_reply(reply_id)
    if row is None:
        raise permanent("NotFound", f"reply {reply_id} not found")
    history = (await store.audit(row.campaign_id, row.lead_id)
               if row.campaign_id and row.lead_id else [])
    return row, history


@cache
def intent_prompt(name: str = PROMPT_NAME) -> PromptTemplate:
    return PromptTemplate.load(name, required=("system", "user"))


def read_answer(outcome: CallOutcome) -> tuple[ReplyClassification | None, str | None]:
    """The model's reading, or why it gives none (refused, off the enum, not the JSON)."""
    if outcome.refusal:
        return None, f"the model refused: {outcome.refusal[:120]}"
    if outcome.finish_reason in ("length", "content_filter"):
        return None, f"the answer stopped early ({outcome.finish_reason})"
    if not outcome.content:
        return None, "the answer was empty"
    try:
        raw = json.loads(outcome.content)
    except ValueError:
        return None, "the answer is not JSON"
    label = raw.get("intent") if isinstance(raw, dict) else None
    if not isinstance(label, str) or label not in {i.value for i in ReplyIntent}:
        return None, f"the label {str(label)[:40]!r} is not one of the intents"
    try:
        out = ReplyIntentOutput.model_validate(raw)
    except ValidationError as exc:
        return None, f"the answer does not fit the schema ({exc.error_count()} error(s))"
    if not 0.0 <= out.confidence <= 1.0:
        return None, f"the confidence {out.confidence} is outside [0, 1]"
    when: date | None = None
    if out.date:
        try:
            when = date.fromisoformat(out.date.strip()[:10])
        except ValueError:
            when = None
    referral = None
    if out.intent is ReplyIntent.REFERRAL and (out.referral_name or out.referral_email):
        referral = Referral(name=(out.referral_name or None) and out.referral_name[:200],
                            email=(out.referral_email or None) and out.referral_email[:320])
    return ReplyClassification(intent=out.intent, confidence=out.confidence,
                               why=out.why or out.intent.value, date=when, referral=referral,
                               classifier="llm"), None


class ReplyIntentAgent(Agent):
    name = "reply_intent"
    version = "1"

    def __init__(self, store: Store, settings: Settings) -> None:
        super().__init__(store, settings)
        self.provider = settings.resolved_llm_provider
        self.model = settings.llm_model if self.provider == "openai" else "offline-rules"
        self.prompt = intent_prompt()
        self._client = make_client(settings) if self.provider == "openai" else None

    @activity.defn(name="classify_reply")
    async def classify_reply(self, inp: ClassifyReplyInput) -> IntentOutcome:
        """Classify the stored reply `inp.reply_id`; the reading goes to the audit log."""
        started = now_utc()
        row, history = await reply_and_history(self.store, inp.reply_id)
        found = _find(history, "reply_intent", "reply_id", row.reply_id, self.model)
        if found is not None:  # classified before (a retry after the record was written)
            entry, kept_record = found
            kept = ReplyClassification.model_validate(kept_record["data"]["classification"])
            return IntentOutcome.of(row.reply_id, kept, entry.envelope_id)
        c, call = await self.classify(row, history)
        # TODO(issue 27, schema 14): also write c.intent and c.confidence on the replies row
        # (`replies.intent`, `replies.confidence`) once that migration has landed.
        if not (row.campaign_id and row.lead_id):
            return IntentOutcome.of(row.reply_id, c, None)
        data = {"reply_id": row.reply_id, "model": self.model,
                "classification": c.model_dump(mode="json"),
                "template": self.prompt.name if call else None,
                "template_hash": self.prompt.sha256 if call else None,
                "cost_usd": call.cost_usd if call else 0.0}
        record = Record(kind="reply_intent", key=row.reply_id, data=data,
                        provenance=self.provenance(
                            f"llm:{self.provider}" if call else "rules",
                            {"reply": row.reply_id, "text": digest(row.text)},
                            model=self.model if call else "offline-rules",
                            tokens=(call.prompt_tokens + call.completion_tokens) if call else 0,
                            cost_usd=call.cost_usd if call else 0.0))
        ref = await self.keep(self.envelope(row.campaign_id, [record], started), row.lead_id,
                              f"reply {row.reply_id}: {c.intent.value}")
        return IntentOutcome.of(row.reply_id, c, ref.envelope_id)

    async def classify(self, row: ReplyRow, history: list[AuditEntry] | None = None
                       ) -> tuple[ReplyClassification, CallOutcome | None]:
        """The combined reading of a stored reply, and the LLM call it took (None: none)."""
        minimum = self.settings.intent_min_confidence
        rules = classify_reply_text(ReplyText.of_row(row))
        certain = rules.intent in (ReplyIntent.BOUNCE, ReplyIntent.AUTO_REPLY) or (
            rules.intent is ReplyIntent.OUT_OF_OFFICE and rules.date is not None)
        if self._client is None or not (row.campaign_id and row.lead_id) or (
                certain and rules.confidence >= 0.95):
            return combine(rules, None, minimum), None
        call = await self._ask(row, history or [])
        if call is None:
            return self._fallback(rules, "the campaign's LLM budget is spent", minimum), None
        llm, failed = read_answer(call)
        if llm is None:
            return self._fallback(rules, failed or "no answer", minimum), call
        return combine(rules, llm, minimum), call

    @staticmethod
    def _fallback(rules: ReplyClassification, reason: str, minimum: float
                  ) -> ReplyClassification:
        kept = combine(rules, None, minimum)
        return kept.model_copy(update={"why": f"{kept.why} (LLM: {reason}; the rules' reading)"})

    def _messages(self, row: ReplyRow) -> list[dict[str, str]]:
        try:
            sent = datetime.fromisoformat(row.received_at).date().isoformat()
        except ValueError:
            sent = "unknown"
        return [
            {"role": "system", "content": self.prompt.render("system")},
            {"role": "user", "content": self.prompt.render(
                "user", sent=sent, subject=fenced(" ".join(row.subject.split())[:300]),
                reply=fenced(row.text[:REPLY_PROMPT_CHARS]) or "(empty)")},
        ]

    async def _ask(self, row: ReplyRow, history: list[AuditEntry]) -> CallOutcome | None:
        """One paid call (or its recorded answer); None when the budget does not allow it."""
        assert self._client is not None and row.campaign_id and row.lead_id
        messages = self._messages(row)
        request = {"model": self.model, "messages": messages,
                   "max_completion_tokens": MAX_OUTPUT_TOKENS,
                   "schema": ReplyIntentOutput.model_json_schema()}
        request_hash = digest(request)
        found = _find(history, "llm_call", "request_hash", request_hash, self.model)
        if found is not None:  # answered before: reused, never paid twice
            return CallOutcome.model_validate(found[1]["data"])
        key = ledger_key(row.lead_id, request_hash)
        prompt_bytes = sum(len(m["content"].encode()) for m in messages) + len(
            json.dumps(request["schema"]).encode())
        worst = max_cost_nanousd(self.model, self.settings, prompt_bytes, len(messages),
                                 MAX_OUTPUT_TOKENS)
        grant = await self.store.reserve_llm_call(row.campaign_id, key, worst or 0)
        if not grant.granted or (grant.budget_usd is not None and worst is None):
            await self.store.release_llm_call(row.campaign_id, key)
            return None
        started = now_utc()
        metrics = process_metrics()
        try:
            raw = await provider_call(
                self._client.chat.completions.with_raw_response.parse(
                    model=self.model, messages=messages,  # type: ignore[arg-type]
                    response_format=ReplyIntentOutput, max_completion_tokens=MAX_OUTPUT_TOKENS),
                what="LLM", settings=self.settings, details=f"intent of reply {row.reply_id}")
        except asyncio.CancelledError:
            await asyncio.shield(self.store.settle_llm_call(row.campaign_id, key, worst))
            raise
        except Exception as err:
            metrics.llm_call(purpose="reply_intent", outcome="error", prompt_tokens=0,
                             completion_tokens=0, cost_usd=None)
            if may_have_been_billed(err):
                await self.store.settle_llm_call(row.campaign_id, key, worst)
            else:
                await self.store.release_llm_call(row.campaign_id, key)
            raise
        try:
            outcome = self._outcome(raw, request_hash)
        except Exception:
            await self.store.settle_llm_call(row.campaign_id, key, worst)
            raise
        metrics.llm_call(purpose="reply_intent",
                         outcome="refused" if outcome.refusal else "answered",
                         prompt_tokens=outcome.prompt_tokens,
                         completion_tokens=outcome.completion_tokens, cost_usd=outcome.cost_usd)
        record = Record(kind="llm_call", key=f"{row.reply_id}:reply_intent:{request_hash[7:23]}",
                        data={**outcome.model_dump(), "ledger_key": key},
                        provenance=self.provenance(f"llm:{self.provider}", request,
                                                   model=self.model))
        await self.keep(self.envelope(row.campaign_id, [record], started), row.lead_id,
                        f"LLM reply_intent call, {outcome.prompt_tokens}+"
                        f"{outcome.completion_tokens} tokens")
        await self.store.settle_llm_call(row.campaign_id, key, None if outcome.cost_usd is None
                                         else to_nano(outcome.cost_usd))
        return outcome

    def _outcome(self, raw: Any, request_hash: str) -> CallOutcome:
        """What came back, from the HTTP body itself: a label outside the enum must reach
        `read_answer` as sent, not as the SDK's parse error."""
        body: dict[str, Any] = raw.http_response.json()
        choice = (body.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        usage = body.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        return CallOutcome(
            request_hash=request_hash, purpose="reply_intent", model=self.model,
            content=message.get("content"), refusal=message.get("refusal"),
            finish_reason=choice.get("finish_reason"), prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, response_id=body.get("id"),
            cost_usd=cost_usd(self.model, self.settings, prompt_tokens, completion_tokens))
