"""What a reply means: its intent, how sure we are, and the date or contact it names.

Two classifiers produce a `ReplyClassification`: the offline rules
(`campaign_core.reply_rules`, pure Python, always available) and, with an LLM configured,
a structured-output call (`activities.reply_intents`). `combine` merges them and applies
CAMPAIGN_INTENT_MIN_CONFIDENCE: below it a reading is `unclear`, except an unsubscribe,
which is always honoured, and when the two disagree on `unsubscribe` the stricter reading
(unsubscribe) wins. Light: pydantic and the standard library only, so the control plane
can import it. See docs/replies.md.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: CAMPAIGN_INTENT_MIN_CONFIDENCE's default.
DEFAULT_MIN_CONFIDENCE = 0.7
#: The longest `why` kept (it is shown in the inbox and the audit, never in history).
WHY_CHARS = 300


class ReplyIntent(StrEnum):
    """The eleven things a reply can mean (the contract's `intent` values)."""

    INTERESTED = "interested"
    MEETING_REQUEST = "meeting_request"
    QUESTION = "question"
    NOT_NOW = "not_now"
    NOT_INTERESTED = "not_interested"
    UNSUBSCRIBE = "unsubscribe"
    OUT_OF_OFFICE = "out_of_office"
    REFERRAL = "referral"
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    UNCLEAR = "unclear"


#: The intents a person needs to answer (the inbox lists them).
POSITIVE_INTENTS = frozenset({ReplyIntent.INTERESTED, ReplyIntent.MEETING_REQUEST,
                              ReplyIntent.QUESTION})
#: The intents that carry a date: the return date, the date to follow up.
DATED_INTENTS = frozenset({ReplyIntent.OUT_OF_OFFICE, ReplyIntent.NOT_NOW})

Classifier = Literal["rules", "llm", "both"]


class Referral(BaseModel):
    """The contact a reply names instead of its sender (either may be missing)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)


class ReplyClassification(BaseModel):
    """One reply's intent, with a confidence in [0, 1] and a short reason.

    `date`: an out-of-office's return date, or the date a `not_now` asks to be contacted
    (None when the reply gives none). `referral`: the contact a `referral` names.
    `classifier`: which reading this is (`both`: the rules and the LLM agreed, or the
    stricter of the two was taken). Holds personal data (the referral, a `why` that may
    quote the reply): it is kept in the store and the audit log, never in workflow history.
    """

    model_config = ConfigDict(extra="forbid")

    intent: ReplyIntent
    confidence: float = Field(ge=0.0, le=1.0)
    why: str = Field(max_length=WHY_CHARS)
    date: dt.date | None = None
    referral: Referral | None = None
    classifier: Classifier = "rules"

    @field_validator("why", mode="before")
    @classmethod
    def _short(cls, value: object) -> object:
        return " ".join(value.split())[:WHY_CHARS] if isinstance(value, str) else value


class ClassifyReplyInput(BaseModel):
    """What `classify_reply` is given: the stored reply's id (history carries ids only)."""

    reply_id: str = Field(min_length=1, max_length=200)


class IntentOutcome(BaseModel):
    """What `classify_reply` returns to its workflow: no personal data (the referral's
    contact and the reason stay in the audit log, record kind `reply_intent`)."""

    reply_id: str
    intent: ReplyIntent
    confidence: float = Field(ge=0.0, le=1.0)
    classifier: Classifier
    date: dt.date | None = None
    referral_named: bool = Field(default=False, description="A referral's contact was found.")
    envelope_id: str | None = Field(default=None, description="The audit envelope holding the "
                                    "whole classification (None for a reply that matched no lead).")

    @classmethod
    def of(cls, reply_id: str, c: ReplyClassification, envelope_id: str | None) -> IntentOutcome:
        return cls(reply_id=reply_id, intent=c.intent, confidence=c.confidence,
                   classifier=c.classifier, date=c.date, referral_named=c.referral is not None,
                   envelope_id=envelope_id)


def thresholded(c: ReplyClassification, min_confidence: float) -> ReplyClassification:
    """`c`, or `unclear` when its confidence is below `min_confidence` (an unsubscribe
    stays: it is always honoured)."""
    if c.intent is ReplyIntent.UNSUBSCRIBE or c.intent is ReplyIntent.UNCLEAR:
        return c
    if c.confidence >= min_confidence:
        return c
    return c.model_copy(update={
        "intent": ReplyIntent.UNCLEAR, "date": None, "referral": None,
        "why": f"{c.intent.value} at confidence {c.confidence:.2f}, below {min_confidence:g}: "
               f"{c.why}"})


def combine(rules: ReplyClassification, llm: ReplyClassification | None,
            min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> ReplyClassification:
    """The one reading of a reply from the rules' and (when there is one) the LLM's.

    - Machine mail the rules recognise by its headers or a DSN (`bounce`, `auto_reply`,
      `out_of_office` read at full confidence) is what the rules say; the LLM may add the
      date they did not find.
    - Either says `unsubscribe`: unsubscribe (the stricter reading).
    - Otherwise the LLM's reading, below `min_confidence` `unclear`.
    """
    if llm is None:
        return thresholded(rules, min_confidence)
    if rules.intent is ReplyIntent.UNSUBSCRIBE or llm.intent is ReplyIntent.UNSUBSCRIBE:
        chosen = rules if rules.intent is ReplyIntent.UNSUBSCRIBE else llm
        agreed = rules.intent is llm.intent
        why = chosen.why if agreed else (
            f"{chosen.why} (the {'LLM' if chosen is rules else 'rules'} read "
            f"{(llm if chosen is rules else rules).intent.value}: the stricter reading wins)")
        return chosen.model_copy(update={
            "classifier": "both", "why": why,
            "confidence": max(rules.confidence if rules.intent is chosen.intent else 0.0,
                              llm.confidence if llm.intent is chosen.intent else 0.0)})
    machine = {ReplyIntent.BOUNCE, ReplyIntent.AUTO_REPLY, ReplyIntent.OUT_OF_OFFICE}
    if rules.intent in machine and rules.confidence >= 0.95:
        update: dict[str, object] = {"classifier": "both" if llm.intent is rules.intent else "rules"}
        if rules.date is None and llm.intent is rules.intent and llm.date is not None:
            update["date"] = llm.date
        return thresholded(rules.model_copy(update=update), min_confidence)
    if llm.intent is rules.intent:
        merged = llm.model_copy(update={
            "classifier": "both", "confidence": max(llm.confidence, rules.confidence),
            "date": llm.date or rules.date, "referral": llm.referral or rules.referral})
        return thresholded(merged, min_confidence)
    return thresholded(llm, min_confidence)
