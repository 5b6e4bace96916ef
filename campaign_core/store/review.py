"""The review pages' read model, shared by every backend's `review_page`.

A page of a campaign's leads, each with every step of its sequence: the step's draft
state (version, editor, excluded, approved, why it failed) and its outcome as
`campaign report` gives it (`outcomes.report_rows` over the same joined facts, so the
page and the report cannot disagree), when it goes or went, and what came back for it.

The search ignores case and accents ("jose" finds "José") over the lead's email, name,
company and title. Accents are folded here, in Python, so that SQLite, Postgres and
PostgREST answer alike without an extension or a folded column: a backend reads the
few searched fields of the campaign's leads that pass the other filters and keeps
those that match, which is cheap at campaign scale (docs/performance.md, "Large campaigns,
and the test servers").
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from itertools import groupby
from typing import Any

from campaign_core.ids import message_key
from campaign_core.store.base import StoreError, iso
from campaign_core.store.outcomes import held_lead_ids, report_rows
from campaign_core.store.rows import ReviewDecision, ReviewItem, ReviewPage, ReviewStep

#: The step statuses a review page filters by: a lead matches when any of its steps has
#: it (`failed`: a guardrail or the writer failed it; `edited`: a reviewer made a new
#: version; `excluded`; `replied`: the lead answered), or (`held`) when a failed step
#: holds the lead back from the campaign's approval.
STEP_STATUSES = ("failed", "edited", "excluded", "replied", "held")
#: The lead fields the search looks in, besides the email.
SEARCHED = ("first_name", "last_name", "company", "title")

#: What came back for a step's message, as the page names it.
_REPLY_EVENTS = {"reply": "replied", "auto_reply": "auto_reply", "bounce": "bounced"}
_DELIVERY_EVENTS = {"bounce": "bounced", "complaint": "complained",
                    "unsubscribe": "unsubscribed"}


def fold(text: str) -> str:
    """`text` for a search that ignores case and accents: "José Muñoz" -> "jose munoz"."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def search_key(search: str | None) -> str | None:
    """A review page's search as matched: trimmed, case and accents folded; None when empty."""
    text = fold((search or "").strip())
    return text or None


def lead_matches(row: Mapping[str, Any], key: str) -> bool:
    """Whether the folded `key` is in the lead's email, name ("first last"), company or title."""
    name = " ".join(str(row[f]) for f in ("first_name", "last_name") if row.get(f))
    fields = [row.get("email"), name, row.get("company"), row.get("title")]
    return any(key in fold(str(f)) for f in fields if f)


def lead_fields(data: Any) -> dict[str, Any]:
    """The searched fields of a lead's stored `data` (JSON text or a parsed object)."""
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError:
            data = {}
    if not isinstance(data, dict):
        return {}
    return {f: data.get(f) for f in SEARCHED}


def _step_events(campaign_id: str, facts: Iterable[Mapping[str, Any]],
                 replies: Iterable[Mapping[str, Any]], events: Iterable[Mapping[str, Any]],
                 ) -> dict[tuple[str, int | None], list[str]]:
    """(lead, step) -> what came back for that step's message; step None: matched by address."""
    out: dict[tuple[str, int | None], list[str]] = {}
    for r in replies:
        step = r.get("step")
        out.setdefault((str(r["lead_id"]), None if step is None else int(step)), []).append(
            _REPLY_EVENTS.get(str(r.get("kind")), str(r.get("kind"))))
    keys = {message_key(campaign_id, str(f["lead_id"]), int(f["step"])):
            (str(f["lead_id"]), int(f["step"])) for f in facts if f.get("step") is not None}
    for e in events:
        where: tuple[str, int | None] = keys.get(str(e.get("message_key")),
                                                 (str(e.get("lead_id")), None))
        out.setdefault(where, []).append(
            _DELIVERY_EVENTS.get(str(e.get("kind")), str(e.get("kind"))))
    return {k: list(dict.fromkeys(v)) for k, v in out.items()}


def review_items(campaign_id: str, leads: Sequence[Mapping[str, Any]],
                 facts: Sequence[Mapping[str, Any]], stage: str | None, *,
                 replies: Iterable[Mapping[str, Any]] = (),
                 events: Iterable[Mapping[str, Any]] = ()) -> list[ReviewItem]:
    """The page's items, in the order of `leads`.

    `leads`: lead_id, email, company, first_name, last_name, title, draft_status, error.
    `facts`: the rows `outcomes.report_rows` reads for these leads (ordered by lead, then
    step), each also with subject, version, edited_by, due_at (the schedule's) and
    sent_at (the delivery row's last change, when sent). `replies`: lead_id, step, kind.
    `events`: lead_id, message_key, kind (bounces, complaints, unsubscribes).
    """
    came_back = _step_events(campaign_id, facts, replies, events)
    by_lead: dict[str, Sequence[Mapping[str, Any]]] = {
        str(k): list(g) for k, g in groupby(facts, key=lambda r: r["lead_id"])}
    held = set(held_lead_ids(facts))
    items = []
    for lead in leads:
        lead_id = str(lead["lead_id"])
        rows = by_lead.get(lead_id, [])
        outcomes = {r.step: r for r in report_rows(rows, stage)}
        steps = []
        for r in rows:
            if r.get("step") is None:
                continue
            n = int(r["step"])
            outcome = outcomes.get(n)
            sent = r.get("delivery") == "sent"
            steps.append(ReviewStep(
                step=n, subject=str(r.get("subject") or ""), version=int(r.get("version") or 1),
                edited_by=r.get("edited_by"), approved=bool(r.get("approved")),
                excluded=bool(r.get("excluded")), failed_reason=r.get("failed_reason"),
                outcome=outcome.delivery_status if outcome else "pending",
                error=outcome.error if outcome else None,
                stop_reason=outcome.stop_reason if outcome else None,
                due_at=iso(r.get("due_at")) if r.get("due_at") else None,
                sent_at=iso(r.get("sent_at")) if sent and r.get("sent_at") else None,
                events=came_back.get((lead_id, n), [])))
        first = next((s for s in steps if s.step == 1), None)
        unmatched = came_back.get((lead_id, None), [])
        items.append(ReviewItem(
            lead_id=lead_id, email=str(lead["email"]), company=lead.get("company"),
            first_name=lead.get("first_name"), last_name=lead.get("last_name"),
            title=lead.get("title"), draft_status=str(lead["draft_status"]),
            error=lead.get("error"), subject=first.subject if first else None,
            approved=bool(first and first.approved), version=first.version if first else None,
            excluded=bool(first and first.excluded), held=lead_id in held,
            replied="replied" in unmatched or any("replied" in s.events for s in steps),
            steps=steps))
    return items


def review_decisions(rows: Iterable[Mapping[str, Any]]) -> list[ReviewDecision]:
    """The campaign's decisions from its `approvals` rows, oldest first."""
    out = []
    for r in rows:
        ids = r.get("lead_ids")
        if isinstance(ids, str | bytes):
            try:
                ids = json.loads(ids)
            except ValueError:
                ids = None
        out.append(ReviewDecision(
            decision=str(r["decision"]), by=str(r.get("decided_by") or "unknown"),
            note=r.get("note"), lead_count=len(ids) if isinstance(ids, list) else None,
            decided_at=iso(r.get("created_at")) if r.get("created_at") else None))
    return sorted(out, key=lambda d: d.decided_at or "")


def page_of(campaign_id: str, total: int, leads: Sequence[Mapping[str, Any]],
            facts: Sequence[Mapping[str, Any]], stage: str | None, *,
            replies: Iterable[Mapping[str, Any]] = (), events: Iterable[Mapping[str, Any]] = (),
            decisions: Iterable[Mapping[str, Any]] = ()) -> ReviewPage:
    """The page: `review_items` of `leads`, `total` matches in all, the campaign's decisions."""
    try:
        return ReviewPage(total=total, items=review_items(campaign_id, leads, facts, stage,
                                                          replies=replies, events=events),
                          decisions=review_decisions(decisions))
    except ValueError as exc:
        raise StoreError(f"malformed review row: {exc}", table="leads", key=campaign_id) from exc
