"""Each (lead, step)'s outcome, and a campaign's counts, computed in one place.

`report`, `status` (and so `status --watch`), the review pages and the tests of the
metrics all read these two functions, so what one says cannot disagree with another: the
counts are tallies of the report's rows. Every backend feeds them the same joined facts
(`OutcomeFacts` below), so every backend reports the same outcome for the same facts.
`status_figures` adds what `status` says of replies (by intent, the positive reply rate,
each step's sent and positive replies) from the same pass, so a step's `sent` is the
report's `sent` rows of that step.

The rule that no campaign ends with a row `pending` lives here: once a campaign is
decided and no longer delivering, every row has one of the terminal outcomes (`sent`,
`suppressed`, `stopped`, `excluded`, `not_approved`, `failed` with its error, `rejected`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from itertools import groupby
from typing import Any, NamedTuple

from campaign_core.intents import POSITIVE_INTENTS
from campaign_core.models import Counts, StepFigures
from campaign_core.store.rows import DeliveryOutcomeName, DraftOutcome, ReportRow

#: Stages in which a person has decided and delivery has started or will never start.
DECIDED = frozenset({"delivering", "completed", "rejected", "expired"})
#: Stages after which nothing moves: a row not yet settled is settled by the stage.
FINAL = frozenset({"completed", "rejected", "expired", "cancelled", "failed"})
#: The outcomes a row can end with.
TERMINAL = frozenset({"sent", "suppressed", "stopped", "excluded", "not_approved", "failed",
                      "rejected"})
#: Why a held lead's rows were not sent.
HELD = "a step failed"
#: A row approved for sending that the campaign ended without any delivery record for.
NO_RECORD = "not delivered: no send was confirmed before the campaign ended"


def _fact(r: Mapping[str, Any], key: str) -> Any:
    return r.get(key)


#: One row's outcome: (facts, step, draft status, delivery status, error, stop reason).
Outcome = tuple[Mapping[str, Any], int, DraftOutcome, DeliveryOutcomeName, str | None, str | None]


def _lead_rows(rows: list[Mapping[str, Any]], stage: str | None) -> list[Outcome]:
    """One lead's rows (ordered by step), each with its outcome."""
    decided = stage in DECIDED
    final = stage in FINAL
    approved_any = any(_fact(r, "approved") for r in rows)
    failed_steps = [int(_fact(r, "step") or 1) for r in rows
                    if _fact(r, "failed_reason") and not _fact(r, "excluded")]
    held = bool(failed_steps) and not approved_any
    step_1 = next((r for r in rows if int(_fact(r, "step") or 1) == 1), None)
    # Step 1 never went out: its follow-ups have nothing to follow.
    first_unsent = step_1 is not None and step_1.get("delivery") is None and not (
        _fact(step_1, "approved"))
    out: list[Outcome] = []
    # An earlier step ended the sequence: (outcome, why) of the steps after it.
    chain: tuple[DeliveryOutcomeName, str | None] | None = None
    for r in rows:
        step = int(_fact(r, "step") or 1)
        raw_draft = _fact(r, "draft_status")
        draft_status: DraftOutcome = raw_draft if raw_draft in {"drafted", "failed"} else "pending"
        if _fact(r, "failed_reason"):
            draft_status = "failed"
        elif _fact(r, "step") is not None and raw_draft == "failed" and failed_steps:
            draft_status = "drafted"  # this step is fine; another one failed
        delivery, reason = _row_outcome(r, step, stage, decided=decided, final=final,
                                        approved_any=approved_any, held=held, chain=chain,
                                        first_unsent=first_unsent)
        error = _fact(r, "delivery_error") if delivery in {"sent", "failed"} else None
        if delivery == "failed" and not error:
            error = _fact(r, "failed_reason") or _fact(r, "draft_error") or NO_RECORD
        elif delivery == "not_approved" and held:
            error = (_fact(r, "failed_reason") if step in failed_steps
                     else f"{HELD} (step {', '.join(map(str, failed_steps))})")
        elif delivery in {"not_approved", "pending"} and draft_status == "failed":
            error = _fact(r, "failed_reason") or _fact(r, "draft_error")
        if chain is None:
            if delivery == "stopped" or (delivery == "suppressed" and step == 1):
                chain = ("stopped", reason or "suppressed")
            elif delivery == "failed" and _fact(r, "delivery") == "failed":
                chain = ("stopped", f"step {step} failed")
            elif delivery in {"excluded", "failed"} and approved_any and decided:
                chain = ("stopped", f"step {step} not sent")  # nothing for the next to follow
        out.append((r, step, draft_status, delivery, error,
                    reason if delivery == "stopped" else None))
    return out


def _row_outcome(r: Mapping[str, Any], step: int, stage: str | None, *, decided: bool,
                 final: bool, approved_any: bool, held: bool,
                 chain: tuple[DeliveryOutcomeName, str | None] | None, first_unsent: bool,
                 ) -> tuple[DeliveryOutcomeName, str | None]:
    """(outcome, stop reason) of one row, in order of precedence."""
    delivery = _fact(r, "delivery")
    if delivery in {"sent", "suppressed", "failed"}:
        return delivery, None
    if _fact(r, "excluded"):
        return "excluded", None
    approved = bool(_fact(r, "approved"))
    if decided and not approved and _fact(r, "failed_reason") and approved_any:
        return "failed", None  # the reviewer chose to send the passing steps only
    if _fact(r, "step_status") == "stopped":  # step 1 too: a reply elsewhere came first
        return "stopped", _fact(r, "stop_reason")
    if chain is not None:
        return chain
    if stage == "rejected":
        return "rejected", None
    if decided and not approved:
        if step > 1 and approved_any and first_unsent:
            return "stopped", "step 1 not sent"
        return "not_approved", None
    if stage == "cancelled":
        return ("stopped", "cancelled") if approved else ("not_approved", None)
    if final:
        if not approved or held or _fact(r, "step") is None:
            return "not_approved", None
        return "failed", None
    return "pending", None


def _outcomes(rows: Iterable[Mapping[str, Any]], stage: str | None) -> Iterator[Outcome]:
    for _, lead_rows in groupby(rows, key=lambda r: r["lead_id"]):
        yield from _lead_rows(list(lead_rows), stage)


def report_rows(rows: Iterable[Mapping[str, Any]], stage: str | None) -> list[ReportRow]:
    """One outcome per lead and step, in the contract's shape, from the joined store rows.

    Each input row has: lead_id, email, draft_status, draft_error, sender (the lead's,
    schema 16), and for a lead with drafts step, approved, excluded, failed_reason (the
    draft), delivery, message_id, delivery_error (the delivery row), step_status,
    stop_reason, due_at (the `sequence_steps` row).
    Rows come ordered by lead, then step. A lead with no draft has one row (step None).

    A lead with a failed step is held: none of its rows is sent (`not_approved`, the
    reason "a step failed"), unless a reviewer approved it to send its passing steps
    (then the failed step's row ends `failed` with its reason).
    """
    # Built without validation: every field is computed here, and a campaign of 20,000
    # leads has 60,000 rows.
    return [ReportRow.model_construct(
        lead_id=str(r["lead_id"]), email=str(r["email"]), draft_status=draft_status,
        delivery_status=delivery, message_id=r.get("message_id"), error=error, step=step,
        stop_reason=reason, due_at=_due_at(r, delivery), sender=r.get("sender"))
        for r, step, draft_status, delivery, error, reason in _outcomes(rows, stage)]


def _due_at(r: Mapping[str, Any], delivery: DeliveryOutcomeName) -> str | None:
    """When a step not yet sent is due (ISO 8601, UTC): its `sequence_steps` row's time
    while it is scheduled (a follow-up's, or the planned slot of a step 1 waiting for its
    sender's capacity: schema 16); None for any other row. A scheduled row changes no
    outcome: the step stays `pending` until it is sent, stopped or settled by the stage."""
    due = r.get("due_at")
    if delivery != "pending" or due is None or r.get("step_status") != "scheduled":
        return None
    when = due if isinstance(due, datetime) else datetime.fromisoformat(str(due))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def counts_of(rows: Iterable[Mapping[str, Any]], stage: str | None, *, leads: int,
              drafted: int, draft_failed: int, approved: int, replied: int) -> Counts:
    """A campaign's counts: the drafting figures as given, every message's figure tallied
    from the outcomes `report_rows` gives the same facts (without building its rows)."""
    facts = list(rows)
    tally: Counter[str] = Counter(outcome[3] for outcome in _outcomes(facts, stage))
    return _counts(facts, tally, leads=leads, drafted=drafted, draft_failed=draft_failed,
                   approved=approved, replied=replied)


def _counts(facts: list[Mapping[str, Any]], tally: Counter[str], *, leads: int, drafted: int,
            draft_failed: int, approved: int, replied: int) -> Counts:
    return Counts(leads=leads, drafted=drafted, draft_failed=draft_failed, approved=approved,
                  replied=replied, sent=tally["sent"], suppressed=tally["suppressed"],
                  send_failed=tally["failed"], stopped=tally["stopped"],
                  excluded=tally["excluded"], not_approved=tally["not_approved"] + tally[
                      "rejected"], pending=tally["pending"], messages=sum(tally.values()),
                  held=len(held_lead_ids(facts)))


#: The key of a person's reply the classifier has not read yet, in `replies_by_intent`.
UNCLASSIFIED = "unclassified"
#: The keys of `replies_by_intent` that count as positive.
POSITIVE = frozenset(i.value for i in POSITIVE_INTENTS)


class ReplyFigures(NamedTuple):
    """What `status` says about a campaign's replies, beside its counts."""

    replies_by_intent: dict[str, int]
    positive_reply_rate: float | None
    steps: list[StepFigures]


def reply_key(intent: str | None, kind: str | None) -> str:
    """A reply's key in `replies_by_intent`: its intent once read; a machine's message by
    its kind (`auto_reply`, `bounce`); else `unclassified`."""
    if intent:
        return str(intent)
    return str(kind) if kind in {"auto_reply", "bounce"} else UNCLASSIFIED


def status_figures(rows: Iterable[Mapping[str, Any]], stage: str | None,
                   replies: Iterable[Mapping[str, Any]], *, leads: int, drafted: int,
                   draft_failed: int, approved: int, replied: int,
                   ) -> tuple[Counts, ReplyFigures]:
    """`counts_of` and the reply figures from one pass over the same facts.

    `replies`: the campaign's verified replies grouped by `intent`, `kind`, `step` (the step
    whose Message-ID they answered, or None) and, where `step` is None, `lead_id`, each with
    its count `n`. A reply without a step is attributed to the lead's last step sent (its
    `sent` row with the highest step), else to step 1. Each step's `sent` is its `sent`
    rows, so the steps add up to the report's and the counts' `sent`; the rate is the
    positive replies over step 1's `sent`.
    """
    facts = list(rows)
    tally: Counter[str] = Counter()
    sent: Counter[int] = Counter()
    last_sent: dict[str, int] = {}
    steps: set[int] = set()
    for r, step, _, delivery, _, _ in _outcomes(facts, stage):
        tally[delivery] += 1
        if r.get("step") is not None:
            steps.add(step)
        if delivery == "sent":
            sent[step] += 1
            lead = str(r["lead_id"])
            last_sent[lead] = max(step, last_sent.get(lead, 0))
    counts = _counts(facts, tally, leads=leads, drafted=drafted, draft_failed=draft_failed,
                     approved=approved, replied=replied)
    by_intent: Counter[str] = Counter()
    positive: Counter[int] = Counter()
    for g in replies:
        key, n = reply_key(g.get("intent"), g.get("kind")), int(g["n"])
        by_intent[key] += n
        if key in POSITIVE:
            answered = g.get("step")
            step = int(answered) if answered is not None else last_sent.get(
                str(g.get("lead_id")), 1)
            positive[step] += n
            steps.add(step)
    rate = (sum(positive.values()) / sent[1]) if sent[1] else None
    return counts, ReplyFigures(
        dict(sorted(by_intent.items())), None if rate is None else round(rate, 4),
        [StepFigures(step=s, sent=sent[s], positive_replies=positive[s]) for s in sorted(steps)])


def held_lead_ids(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The leads held by a failed step: one not excluded, with no step of the lead approved
    (so approving the lead to send its passing steps releases it). Same facts as
    `report_rows`, in the same order."""
    held = []
    for lead_id, group in groupby(rows, key=lambda r: r["lead_id"]):
        lead = list(group)
        if any(r.get("failed_reason") and not r.get("excluded") for r in lead) and not any(
                r.get("approved") for r in lead):
            held.append(str(lead_id))
    return held
