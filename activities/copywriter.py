"""The copywriter agent: one personalised draft per lead, from an LLM or a template.

Prompts are versioned files, guardrails get one repair call, no paid LLM call is made twice,
and Temporal owns retries. See "Agents" in docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import json
import re
import string
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from hashlib import sha256
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.base import Agent, permanent
from activities.guardrails import SUBJECT_MAX_CHARS, DraftOutput, check_draft
from activities.history_guard import PrivateReasonError
from activities.llm_client import cost_usd, make_client, max_cost_nanousd, provider_call
from activities.offline_writer import (  # OFFLINE_ASK: the edit check grounds on it too
    OFFLINE_ASK as OFFLINE_ASK,
)
from activities.offline_writer import (
    OFFLINE_FOLLOW_UP_ASK,
    OFFLINE_LAST_NOTE,
    SIGN_OFF,
    TEMPLATE_VERSION,
    offline_draft,
    offline_follow_up,
    signature_name,
)
from campaign_core.budget import BUDGET_EXHAUSTED, exhausted_message, from_nano, to_nano
from campaign_core.envelope import EnvelopeRef, Record, digest, now_utc
from campaign_core.leads import Lead
from campaign_core.metrics import process_metrics
from campaign_core.models import LeadInput
from campaign_core.settings import Settings
from campaign_core.store.base import Store
from campaign_core.store.rows import AuditEntry, DraftRow

OFFLINE_MODEL = "offline-template"
PROMPT_NAME = "copywriter_v2"
#: The prompt of steps 2, 3...: a reply in the thread, with the earlier messages as context.
FOLLOW_UP_PROMPT_NAME = "copywriter_followup_v1"
PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
PROVIDERS = ("openai", "offline")
#: Longest passage text put into a prompt; passages are chunks, this only bounds outliers.
PASSAGE_PROMPT_CHARS = 1500

_SECTION = re.compile(r"(?m)^\[(system|user|repair)\]\s*$")


@dataclass(frozen=True)
class PromptTemplate:
    """A versioned prompt file split into its `[system]`, `[user]` and `[repair]` sections."""

    name: str
    sha256: str
    sections: dict[str, str]

    @classmethod
    def load(cls, name: str, folder: Path = PROMPTS_DIR,
             required: tuple[str, ...] = ("system", "user", "repair")) -> PromptTemplate:
        raw = (folder / f"{name}.md").read_text(encoding="utf-8")
        parts = _SECTION.split(re.sub(r"(?s)\A\s*<!--.*?-->", "", raw))
        sections = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
        missing = set(required) - set(sections)
        if missing:
            raise ValueError(f"prompt {name}: missing section(s) {', '.join(sorted(missing))}")
        return cls(name, "sha256:" + sha256(raw.encode()).hexdigest(), sections)

    def render(self, section: str, **values: str) -> str:
        return string.Template(self.sections[section]).substitute(values)


@cache
def prompt_template(name: str = PROMPT_NAME) -> PromptTemplate:
    return PromptTemplate.load(name)


def fenced(text: str) -> str:
    """Text that cannot close (or open) the tags fencing it in the prompt: `<` and `>`
    are written as `&lt;` and `&gt;`, so `</lead_data>` in a lead's notes stays data."""
    return text.replace("<", "&lt;").replace(">", "&gt;")


def lead_block(lead: Lead) -> str:
    """The lead as the model sees it: personalisation fields only, never the email address.

    One `key: value` line per field, each value on one line and fenced (the prompt puts
    the block between `<lead_data>` tags and tells the model it is data).
    """
    fields = {"first_name": lead.first_name, "last_name": lead.last_name, "company": lead.company,
              "title": lead.title, "website": lead.website, "notes": lead.notes, **lead.custom}
    lines = [f"{fenced(' '.join(str(k).split()))}: {fenced(' '.join(str(v).split()))}"
             for k, v in fields.items() if v]
    return "\n".join(lines) or "(no details beyond the address)"


def passages_block(passages: list[dict[str, Any]]) -> str:
    """Each passage between `<passage>` tags; its text fenced so it cannot close them."""
    if not passages:
        return "(none: make no product claims)"
    return "\n\n".join(
        f'<passage id="{fenced(str(p["passage_id"]))}" source="{fenced(str(p.get("source", "")))}">\n'
        f"{fenced(str(p.get('text', ''))[:PASSAGE_PROMPT_CHARS])}\n</passage>"
        for p in passages
    )


class CallOutcome(BaseModel):
    """One answered LLM request, as kept in the audit log (the raw output, not just the parse)."""

    request_hash: str
    purpose: str  # "draft" | "repair"
    model: str
    content: str | None = None
    refusal: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    response_id: str | None = None


def interpret(outcome: CallOutcome) -> tuple[DraftOutput | None, str | None]:
    """The draft in an answer, or why there is none (the reason goes to the repair call)."""
    if outcome.refusal:
        return None, f"the model refused: {outcome.refusal[:200]}"
    if outcome.finish_reason == "length":
        return None, "the output was cut off at the token limit: write a shorter draft"
    if outcome.finish_reason == "content_filter":
        return None, "the provider's content filter stopped the output"
    if not outcome.content:
        return None, "the output was empty"
    try:
        return DraftOutput.model_validate_json(outcome.content), None
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or 'output'}: {e['msg']}" for e in exc.errors()[:5])
        return None, f"the output is not valid JSON for the draft schema ({errors})"


def signed(body: str, name: str) -> str:
    """An LLM draft signed by the lead's sender (issue 28): the prompt asks for no
    signature, so the mailbox's name is added as the offline writer signs, unless the
    model already ended with it; the review then shows exactly who the message is from."""
    text = body.rstrip()
    if not text or text.splitlines()[-1].strip() == name:
        return body
    return f"{text}\n\n{SIGN_OFF}\n{name}"


def judge(
    outcome: CallOutcome, *, passages: list[dict[str, Any]], lead: Lead, brief: str,
    subject: str | None = None,
) -> tuple[DraftOutput | None, list[str]]:
    """The answer's draft and every guardrail reason against it (none: it may be kept).

    `subject` replaces the model's subject first (a follow-up keeps its thread's subject).
    """
    draft, malformed = interpret(outcome)
    if draft is None:
        return None, [malformed or "the output was empty"]
    if subject is not None:
        draft = draft.model_copy(update={"subject": subject})
    return draft, check_draft(draft, passages=passages, lead=lead, brief=brief)


def follow_up_subject(first_subject: str) -> str:
    """`Re: <step 1 subject>`: a follow-up is a reply in the first message's thread."""
    base = re.sub(r"^(\s*re\s*:\s*)+", "", first_subject.strip(), flags=re.IGNORECASE)
    return f"Re: {base}"[:SUBJECT_MAX_CHARS]


def earlier_block(earlier: list[DraftRow]) -> str:
    """The earlier messages of the thread, each fenced as data, oldest first."""
    return "\n\n".join(
        f'<earlier_message step="{d.step}">\nSubject: {fenced(d.subject)}\n\n{fenced(d.body)}\n'
        "</earlier_message>" for d in earlier)


def failed_reason(reasons: list[str], what: str) -> str | None:
    """Why a draft failed its guardrails, for the store (never history: the reasons quote
    the draft); None when it passed. The step is kept as a failed draft, not raised, so the
    reviewer sees its text and reasons and can fix it by an edit."""
    return f"{what}: " + "; ".join(reasons) if reasons else None


def guardrail_failure(reasons: list[str], what: str) -> PrivateReasonError:
    """A guardrail failure: the reasons quote the draft (claims, links), so history gets
    their count and the store the reasons themselves."""
    return PrivateReasonError(
        f"{what}: {len(reasons)} check(s) failed (the reasons are in the lead's report "
        "and audit trail)", type="GuardrailViolation", private=f"{what}: " + "; ".join(reasons))


def _nano_or_none(cost: float | None) -> int | None:
    """A call's cost for the ledger; None when the model's price is unknown."""
    return None if cost is None else to_nano(cost)


def ledger_key(lead_id: str, request_hash: str) -> str:
    """The spend-ledger line of this attempt at the call: opaque, the same if the store
    write is repeated within the attempt, distinct for every attempt (Temporal's retries,
    and the same activity scheduled again by a later workflow run)."""
    info = activity.info()
    return digest([lead_id, request_hash, info.workflow_id, info.workflow_run_id,
                   info.activity_id, info.attempt])


#: The transport's errors raised before a byte of the request went out: connection refused,
#: no route or name, a failed TLS handshake, a connect or pool timeout, a URL the client
#: cannot use. By name: the SDK's transport is httpx or, in newer SDKs, its fork httpx2,
#: whose classes are distinct but named alike.
_NOT_SENT = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout", "UnsupportedProtocol"})


def _never_sent(transport_error: BaseException | None) -> bool:
    return transport_error is not None and any(
        kind.__name__ in _NOT_SENT for kind in type(transport_error).__mro__)


def may_have_been_billed(err: BaseException) -> bool:
    """Whether a failed provider call may have been processed (and billed) by the provider.

    Only a call that certainly did not reach it is not: refused before sending (no
    connection, a connect timeout), or answered with a 4xx (refused, rate-limited, not
    processed). Anything else (a read timeout after the request was sent, a connection
    dropped mid-answer, a 5xx, an error this code does not know) may have been billed.
    `provider_call` raises its ApplicationError `from None`; the SDK's error stays its
    context, and the SDK's own cause is the transport's error.
    """
    import openai  # here, not at the top: see activities/llm_client.py

    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, openai.APIError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, openai.APIStatusError):
        return cause.status_code >= 500
    if isinstance(cause, openai.APIConnectionError):  # APITimeoutError too
        return not _never_sent(cause.__cause__)
    return True


def _find(history: list[AuditEntry], kind: str, key: str, value: str, model: str) -> (
    tuple[AuditEntry, dict[str, Any]] | None
):
    """The newest (audit entry, record) of `kind` whose data[key] == value for `model`."""
    for entry in reversed(history):
        for record in entry.envelope.get("records", []):
            data = record.get("data", {})
            if record.get("kind") == kind and data.get(key) == value and data.get("model") == model:
                return entry, record
    return None


class CopywriterAgent(Agent):
    name = "copywriter"
    version = "2"

    def __init__(self, store: Store, settings: Settings) -> None:
        super().__init__(store, settings)
        self.provider = settings.resolved_llm_provider
        if self.provider not in PROVIDERS:
            raise ValueError(f"CAMPAIGN_LLM_PROVIDER={self.provider!r}: use one of {', '.join(PROVIDERS)}")
        self.model = settings.llm_model if self.provider == "openai" else OFFLINE_MODEL
        self.prompt = prompt_template()
        self._client = make_client(settings) if self.provider == "openai" else None

    @activity.defn(name="write_draft")
    async def write_draft(self, inp: LeadInput) -> EnvelopeRef:
        """Write the lead's draft into an envelope in the audit log; return its reference."""
        started = now_utc()
        campaign = await self.store.get_campaign(inp.campaign_id)
        lead = await self.store.get_lead(inp.campaign_id, inp.lead_id)
        if campaign is None or lead is None:
            raise permanent("NotFound", f"campaign {inp.campaign_id} / lead {inp.lead_id} not found")
        passages = await self.store.get_retrieval(inp.campaign_id, inp.lead_id)
        brief = campaign.brief
        history = await self.store.audit(inp.campaign_id, inp.lead_id)
        if inp.step > 1:
            earlier = await self._earlier(inp)
            if self._client is None:
                return await self._write_offline_follow_up(inp, lead, passages, brief, earlier,
                                                           history, started)
            return await self._write_llm(inp, lead, passages, brief, history, started,
                                         earlier=earlier)
        if self._client is None:
            return await self._write_offline(inp, lead, passages, brief, history, started)
        return await self._write_llm(inp, lead, passages, brief, history, started)

    async def _earlier(self, inp: LeadInput) -> list[DraftRow]:
        """The drafts of the steps before `inp.step`: a follow-up is written after them."""
        earlier = []
        for step in range(1, inp.step):
            draft = await self.store.get_draft(inp.campaign_id, inp.lead_id, step)
            if draft is None:
                raise permanent("NotFound", f"lead {inp.lead_id}: step {step} has no draft, so "
                                f"step {inp.step} cannot follow it up")
            earlier.append(draft)
        return earlier

    async def _sender_name(self, campaign_id: str, lead_id: str) -> str | None:
        """The display name of the lead's sender (issue 28), None without one."""
        name = await self.store.lead_sender(campaign_id, lead_id)
        row = await self.store.get_sender(name) if name else None
        return signature_name(row.from_addr) if row is not None else None

    async def _signer(self, campaign_id: str, lead_id: str) -> str:
        """Who the lead's drafts are signed by: its sender's display name (issue 28: the
        review shows exactly what is sent), else CAMPAIGN_FROM's."""
        return (await self._sender_name(campaign_id, lead_id)
                or signature_name(self.settings.mail_from))

    # -- offline ---------------------------------------------------------------------

    async def _write_offline(
        self, inp: LeadInput, lead: Lead, passages: list[dict[str, Any]], brief: str,
        history: list[AuditEntry], started: datetime,
    ) -> EnvelopeRef:
        inputs = {"lead": lead.model_dump(mode="json"), "brief": digest(brief),
                  "passages": [p["passage_id"] for p in passages], "template": TEMPLATE_VERSION}
        prompt_hash = digest(inputs)
        cached = self._cached_draft(history, prompt_hash)
        if cached is not None:
            return cached
        draft = offline_draft(lead, passages, brief,
                              sender=await self._signer(inp.campaign_id, inp.lead_id))
        reasons = check_draft(draft, passages=passages, lead=lead, brief=brief, grounding=[OFFLINE_ASK])
        failed = failed_reason(reasons, "guardrail")
        if failed:  # deterministic: a repair would produce the same text
            process_metrics().guardrail(repaired=False, failed=True)
        data = self._draft_data(draft, prompt_hash=prompt_hash, template=TEMPLATE_VERSION,
                                template_hash=None, calls=[], cached_calls=0,
                                failed_reason=failed)
        record = Record(kind="draft", key=f"{inp.lead_id}:1", data=data,
                        provenance=self.provenance("llm:offline", inputs, model=OFFLINE_MODEL,
                                                   prompt_hash=prompt_hash, tokens=0, cost_usd=0.0))
        env = self.envelope(inp.campaign_id, [record], started)
        return await self.keep(env, inp.lead_id, "draft written")

    async def _write_offline_follow_up(
        self, inp: LeadInput, lead: Lead, passages: list[dict[str, Any]], brief: str,
        earlier: list[DraftRow], history: list[AuditEntry], started: datetime,
    ) -> EnvelopeRef:
        inputs = {"lead": lead.model_dump(mode="json"), "brief": digest(brief),
                  "passages": [p["passage_id"] for p in passages], "template": TEMPLATE_VERSION,
                  "step": inp.step, "steps": inp.steps,
                  "earlier": [digest([d.subject, d.body]) for d in earlier]}
        prompt_hash = digest(inputs)
        cached = self._cached_draft(history, prompt_hash)
        if cached is not None:
            return cached
        draft = offline_follow_up(lead, passages, earlier, inp.step, inp.steps,
                                  subject=follow_up_subject(earlier[0].subject), brief=brief,
                                  sender=await self._signer(inp.campaign_id, inp.lead_id))
        reasons = check_draft(draft, passages=passages, lead=lead, brief=brief,
                              grounding=[OFFLINE_FOLLOW_UP_ASK, OFFLINE_LAST_NOTE])
        failed = failed_reason(reasons, f"guardrail (step {inp.step})")
        if failed:
            process_metrics().guardrail(repaired=False, failed=True)
        data = self._draft_data(draft, prompt_hash=prompt_hash, template=TEMPLATE_VERSION,
                                template_hash=None, calls=[], cached_calls=0, step=inp.step,
                                failed_reason=failed)
        record = Record(kind="draft", key=f"{inp.lead_id}:{inp.step}", data=data,
                        provenance=self.provenance("llm:offline", inputs, model=OFFLINE_MODEL,
                                                   prompt_hash=prompt_hash, tokens=0, cost_usd=0.0))
        env = self.envelope(inp.campaign_id, [record], started)
        return await self.keep(env, inp.lead_id, f"draft of step {inp.step}")

    # -- LLM -------------------------------------------------------------------------

    def _repair_request(self, messages: list[dict[str, str]], first: CallOutcome,
                        prompt: PromptTemplate, reasons: list[str]) -> dict[str, Any]:
        """The one repair: the model sees its own answer and exactly what was wrong with it
        (the prompt's `repair` section)."""
        return self._request([
            *messages,
            {"role": "assistant", "content": first.content or first.refusal or "(no output)"},
            {"role": "user", "content": prompt.render(
                "repair", reasons="\n".join(f"- {r}" for r in reasons))},
        ])

    def _request(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """Everything that determines the answer; its digest is the request's identity."""
        return {"model": self.model, "messages": messages, "max_completion_tokens":
                self.settings.llm_max_output_tokens, "schema": DraftOutput.model_json_schema()}

    async def _write_llm(
        self, inp: LeadInput, lead: Lead, passages: list[dict[str, Any]], brief: str,
        history: list[AuditEntry], started: datetime, earlier: list[DraftRow] | None = None,
    ) -> EnvelopeRef:
        prompt = self.prompt
        subject: str | None = None
        values = {"brief": brief.strip() or "(no brief)", "lead": lead_block(lead),
                  "passages": passages_block(passages)}
        if earlier:
            prompt = prompt_template(FOLLOW_UP_PROMPT_NAME)
            subject = follow_up_subject(earlier[0].subject)
            values |= {"earlier": earlier_block(earlier), "step": str(inp.step),
                       "follow_up": str(inp.step - 1)}
        messages = [
            {"role": "system", "content": prompt.render("system")},
            {"role": "user", "content": prompt.render("user", **values)},
        ]
        request = self._request(messages)
        prompt_hash = digest(request)
        cached = self._cached_draft(history, prompt_hash)
        if cached is not None:
            activity.logger.info("lead %s: draft for prompt %s already written", inp.lead_id,
                                 prompt_hash[:19])
            return cached

        first, was_cached = await self._complete(inp, request, "draft", history)
        reused = int(was_cached)
        calls = [first]
        draft, reasons = judge(first, passages=passages, lead=lead, brief=brief, subject=subject)
        if reasons:
            repair = self._repair_request(messages, first, prompt, reasons)
            second, reused_again = await self._complete(inp, repair, "repair", history)
            calls.append(second)
            reused += reused_again
            draft, reasons = judge(second, passages=passages, lead=lead, brief=brief,
                                   subject=subject)
            process_metrics().guardrail(repaired=not reused_again, failed=bool(reasons))
        failed = failed_reason(reasons, "guardrail (after one repair attempt)")
        if draft is None:  # no usable answer at all: an empty step for the reviewer to write
            draft = DraftOutput.model_construct(subject="", body="", citations=[],
                                                personal_points=[])
        elif (signer := await self._sender_name(inp.campaign_id, inp.lead_id)) is not None:
            draft = draft.model_copy(update={"body": signed(draft.body, signer)})
        data = self._draft_data(draft, prompt_hash=prompt_hash, template=prompt.name,
                                template_hash=prompt.sha256, calls=calls, cached_calls=reused,
                                step=inp.step, failed_reason=failed)
        record = Record(kind="draft", key=f"{inp.lead_id}:{inp.step}", data=data,
                        provenance=self.provenance(
                            f"llm:{self.provider}", self._request(messages), model=self.model,
                            prompt_hash=prompt_hash, tokens=data["usage"]["total_tokens"],
                            cost_usd=data["cost_usd"]))
        env = self.envelope(inp.campaign_id, [record], started)
        return await self.keep(env, inp.lead_id, "draft written")

    async def _complete(
        self, inp: LeadInput, request: dict[str, Any], purpose: str, history: list[AuditEntry]
    ) -> tuple[CallOutcome, bool]:
        """Answer `request`: from the audit log if it was answered before, else one paid call."""
        request_hash = digest(request)
        found = _find(history, "llm_call", "request_hash", request_hash, self.model)
        if found is not None:
            cached = CallOutcome.model_validate(found[1]["data"])
            # Settles a reservation a crash left between the record and its settlement (the
            # record names its attempt's ledger line; older records used the call's key).
            key = found[1]["data"].get("ledger_key") or digest([inp.lead_id, request_hash])
            await self.store.settle_llm_call(inp.campaign_id, str(key),
                                             _nano_or_none(cached.cost_usd))
            return cached, True
        assert self._client is not None
        # This attempt's line in the spend ledger: one per attempt, never shared with a
        # retry, since an attempt that may have been billed keeps its worst case there.
        key = ledger_key(inp.lead_id, request_hash)
        worst = await self._reserve(inp, key, request)
        started = now_utc()
        metrics = process_metrics()
        try:
            raw = await provider_call(
                self._client.chat.completions.with_raw_response.parse(
                    model=self.model, messages=request["messages"],
                    response_format=DraftOutput,
                    max_completion_tokens=self.settings.llm_max_output_tokens,
                ),
                what="LLM", settings=self.settings, details=f"{purpose} for lead {inp.lead_id}",
            )
        except asyncio.CancelledError:
            # Cancelled by Temporal (a heartbeat or start-to-close timeout, or the workflow)
            # while the request may be at the provider: its worst case is spent. Shielded, so
            # a second cancellation cannot leave the ledger between hold and charge.
            await asyncio.shield(self.store.settle_llm_call(inp.campaign_id, key, worst))
            raise
        except Exception as err:
            metrics.llm_call(purpose=purpose, outcome="error", prompt_tokens=0,
                             completion_tokens=0, cost_usd=None)
            if may_have_been_billed(err):
                # Timed out after sending, connection lost after the request was written,
                # or a 5xx after processing: the provider may bill it and will not say how
                # much, so the hold becomes spend. Released, a retry could be granted the
                # same money again and the spend pass the cap unseen.
                await self.store.settle_llm_call(inp.campaign_id, key, worst)
            else:
                # Certainly not processed (no connection, or refused with a 4xx): nothing
                # to pay; the hold goes back (a retry reserves again, checking anew).
                await self.store.release_llm_call(inp.campaign_id, key)
            raise
        try:
            outcome = self._outcome(raw, request_hash, purpose)
        except Exception:
            # Answered, but its usage cannot be read: charged at the worst case.
            await self.store.settle_llm_call(inp.campaign_id, key, worst)
            raise
        metrics.llm_call(
            purpose=purpose, outcome="refused" if outcome.refusal else "answered",
            prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens,
            cost_usd=outcome.cost_usd)
        # Recorded at once: from here on a retry reuses this answer instead of paying again.
        record = Record(
            kind="llm_call", key=f"{inp.lead_id}:{purpose}:{request_hash[7:23]}",
            data={**outcome.model_dump(), "ledger_key": key},
            provenance=self.provenance(f"llm:{self.provider}", request, model=self.model),
        )
        await self.keep(self.envelope(inp.campaign_id, [record], started), inp.lead_id,
                        f"LLM {purpose} call, {outcome.prompt_tokens}+{outcome.completion_tokens} tokens")
        await self.store.settle_llm_call(inp.campaign_id, key, _nano_or_none(outcome.cost_usd))
        return outcome, False

    async def _reserve(self, inp: LeadInput, call_key: str, request: dict[str, Any]
                       ) -> int | None:
        """Hold the call's worst-case cost against the campaign's budget before it starts;
        BudgetExhausted (non-retryable, not a failure: the campaign pauses) when it does
        not fit. Returns the worst case held (None when the model's price is unknown):
        what the call is charged if it may have been billed with no usage to tell.
        See "Spend caps" in docs/architecture.md."""
        messages: list[dict[str, str]] = request["messages"]
        prompt_bytes = sum(len(m["content"].encode()) for m in messages) + len(
            json.dumps(request["schema"]).encode())
        worst = max_cost_nanousd(self.model, self.settings, prompt_bytes, len(messages),
                                 self.settings.llm_max_output_tokens)
        grant = await self.store.reserve_llm_call(inp.campaign_id, call_key, worst or 0)
        if grant.budget_usd is not None and worst is None:
            await self.store.release_llm_call(inp.campaign_id, call_key)
            raise permanent("LLMPriceUnknown", f"campaign {inp.campaign_id} has a budget, but "
                            f"the price of model {self.model!r} is unknown: set "
                            "CAMPAIGN_LLM_PRICE_INPUT and CAMPAIGN_LLM_PRICE_OUTPUT")
        if not grant.granted:
            # Benign: an expected stop, not an error (the SDK logs it quietly, no failure metric).
            raise ApplicationError(exhausted_message(grant, from_nano(worst or 0)),
                                   type=BUDGET_EXHAUSTED, non_retryable=True,
                                   category=ApplicationErrorCategory.BENIGN)
        return worst

    def _outcome(self, raw: Any, request_hash: str, purpose: str) -> CallOutcome:
        """What came back, whether or not the SDK could parse it into `DraftOutput`."""
        import openai

        try:
            completion = raw.parse()
            choice = completion.choices[0]
            usage = completion.usage
            content, refusal = choice.message.content, choice.message.refusal
            finish, response_id = choice.finish_reason, completion.id
            prompt_tokens = usage.prompt_tokens if usage else 0
            completion_tokens = usage.completion_tokens if usage else 0
        except (openai.LengthFinishReasonError, openai.ContentFilterFinishReasonError,
                ValidationError, ValueError):
            # The SDK refused to parse it; keep the raw answer so the repair and the audit see it.
            body: dict[str, Any] = raw.http_response.json()
            choice_raw = (body.get("choices") or [{}])[0]
            message = choice_raw.get("message") or {}
            content, refusal = message.get("content"), message.get("refusal")
            finish, response_id = choice_raw.get("finish_reason"), body.get("id")
            usage_raw = body.get("usage") or {}
            prompt_tokens = int(usage_raw.get("prompt_tokens") or 0)
            completion_tokens = int(usage_raw.get("completion_tokens") or 0)
        return CallOutcome(
            request_hash=request_hash, purpose=purpose, model=self.model, content=content,
            refusal=refusal, finish_reason=finish, prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, response_id=response_id,
            cost_usd=cost_usd(self.model, self.settings, prompt_tokens, completion_tokens),
        )

    # -- shared ----------------------------------------------------------------------

    def _cached_draft(self, history: list[AuditEntry], prompt_hash: str) -> EnvelopeRef | None:
        found = _find(history, "draft", "prompt_hash", prompt_hash, self.model)
        if found is None:
            return None
        entry, _ = found
        return EnvelopeRef(envelope_id=entry.envelope_id, agent=entry.agent,
                           record_count=len(entry.envelope.get("records", [])),
                           summary="draft already written")

    def _draft_data(
        self, draft: DraftOutput, *, prompt_hash: str, template: str, template_hash: str | None,
        calls: list[CallOutcome], cached_calls: int, step: int = 1,
        failed_reason: str | None = None,
    ) -> dict[str, Any]:
        """The draft record: the text, what it cites, and what it took to produce it; with
        `failed_reason` when it failed its guardrails (kept, so a reviewer can fix it)."""
        prompt_tokens = sum(c.prompt_tokens for c in calls)
        completion_tokens = sum(c.completion_tokens for c in calls)
        costs = [c.cost_usd for c in calls]
        return {
            "subject": draft.subject.strip(),
            "body": draft.body.strip(),
            "citations": list(dict.fromkeys(c.passage_id for c in draft.citations)),
            "claims": [c.model_dump() for c in draft.citations],
            "personal_points": draft.personal_points,
            "step": step,
            "template": template,
            "template_hash": template_hash,
            "prompt_hash": prompt_hash,
            "provider": self.provider,
            "model": self.model,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
            "cost_usd": None if None in costs else round(sum(c or 0.0 for c in costs), 8),
            "llm_calls": len(calls),
            "cached_calls": cached_calls,
            "repaired": len(calls) > 1,
            "guardrails": "failed" if failed_reason else "passed",
            **({"failed_reason": failed_reason} if failed_reason else {}),
        }
