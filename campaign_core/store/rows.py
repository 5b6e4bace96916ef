"""The rows the store returns: one pydantic model per kind, the same on every backend.

Times are ISO 8601 text in UTC with microseconds (as every backend returns them), JSON
columns are parsed, and fields are in the table's column order, so `model_dump()`
gives the JSON the CLI and the API have always printed. Leads are `leads.Lead`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from campaign_core.models import DeliveryEventKind, Stage
from campaign_core.senders import WaitReason

#: A lead's drafting status in the store.
LeadStatus = Literal["pending", "drafting", "drafted", "failed"]
#: A delivery's status in the store (`committing`: the provider call is under way).
DeliveryState = Literal["sending", "committing", "sent", "suppressed", "failed"]
#: The outcomes `campaign report` gives (the contract's).
DraftOutcome = Literal["drafted", "failed", "pending"]
DeliveryOutcomeName = Literal["sent", "suppressed", "not_approved", "failed", "pending",
                              "stopped", "excluded", "rejected"]
#: A follow-up's state in the store's schedule (`sequence_steps`).
StepState = Literal["scheduled", "sent", "stopped", "failed"]
#: Where a suppression-list entry came from (schema 14): an unsubscribe asked for in a reply,
#: the unsubscribe link's confirmation page, its RFC 8058 one-click POST, mail to the
#: List-Unsubscribe address, a hard bounce, a complaint, by hand, or an erasure request.
SuppressionSource = Literal["reply", "unsubscribe_link", "one_click", "mailto", "bounce",
                            "complaint", "manual", "erasure"]
SUPPRESSION_SOURCES: tuple[SuppressionSource, ...] = (
    "reply", "unsubscribe_link", "one_click", "mailto", "bounce", "complaint", "manual",
    "erasure")


class Row(BaseModel):
    model_config = ConfigDict(frozen=True)


class CampaignRow(Row):
    campaign_id: str
    name: str
    brief: str = ""
    channel: str
    kb_dir: str | None = None
    workflow_id: str
    stage: Stage
    created_at: str
    updated_at: str
    lead_id_salt: str | None = None  # None: a campaign of the unsalted lead-id scheme
    budget_usd: float | None = None  # the LLM spend cap (None: no cap)


class DraftRow(Row):
    """A draft with its lead's address (drafts are read joined to their lead)."""

    campaign_id: str
    lead_id: str
    step: int
    subject: str
    body: str
    citations: list[str]
    provenance: dict[str, Any]
    envelope_id: str
    approved: bool
    created_at: str
    email: str
    version: int = 1
    edited_by: str | None = None
    excluded: bool = False
    approved_version: int | None = None
    #: Why this step failed (a guardrail's reasons, a writer's error); None when it passed.
    failed_reason: str | None = None


class DeliveryRow(Row):
    message_key: str
    campaign_id: str
    lead_id: str
    step: int
    channel: str
    status: DeliveryState
    message_id: str | None = None
    error: str | None = None
    created_at: str
    updated_at: str


class DeliveryEventRow(Row):
    event_id: str
    kind: DeliveryEventKind
    email: str
    campaign_id: str | None = None
    lead_id: str | None = None
    message_key: str | None = None
    source: str
    detail: str | None = None
    created_at: str


class AuditEntry(Row):
    """One agent step: its envelope (parsed JSON) and the node trace lifted out of it."""

    envelope_id: str
    campaign_id: str
    lead_id: str | None = None
    agent: str
    envelope: dict[str, Any]
    created_at: str
    run_id: str | None = None
    attempt: int | None = None
    agent_version: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    duration_ms: int | None = None
    record_count: int | None = None
    outcome: str | None = None
    inputs_digest: str | None = None


class SequenceStepRow(Row):
    """One step in the schedule: due at `due_at`, then sent, stopped or failed.

    Follow-ups are scheduled when the step before is sent; step 1 has a row once it went
    out or stopped, or while it waits for its sender's capacity (schema 16). `sender` and
    `wait_reason` (schema 16) say which mailbox a waiting send waits for and why:
    `capacity` (until `due_at`, its planned slot) or `paused` (until the sender is
    resumed); None once it is no longer waiting."""

    campaign_id: str
    lead_id: str
    step: int
    due_at: str
    status: StepState
    stop_reason: str | None = None
    created_at: str
    updated_at: str
    sender: str | None = None
    wait_reason: WaitReason | None = None


class ReportRow(Row):
    """One lead's outcome at one step, in the contract's `report --json` shape."""

    lead_id: str
    email: str
    draft_status: DraftOutcome
    delivery_status: DeliveryOutcomeName
    message_id: str | None = None
    error: str | None = None
    step: int = 1
    stop_reason: str | None = None
    #: When a step not yet sent is due (ISO 8601, UTC, `...Z`): a scheduled follow-up's
    #: time, or the planned slot of a step 1 waiting for its sender's capacity; None for
    #: every other row (step 1 otherwise waits for approval, not for a time).
    due_at: str | None = None
    #: The lead's assigned sender (schema 16), or None: not assigned (no senders, or not
    #: yet drafted).
    sender: str | None = None


class ReplyRow(Row):
    """A message that came back: a person's reply, an automatic one, or a bounce (DSN).

    `campaign_id` and `lead_id` are None for a message that matched no lead; `step` is
    the step whose Message-ID it answered (None when matched by the sender's address).
    `text` is only the first lines; `email` is the sender (a bounce's final recipient).
    """

    reply_id: str
    message_id: str
    campaign_id: str | None = None
    lead_id: str | None = None
    step: int | None = None
    kind: Literal["reply", "auto_reply", "bounce", "unparseable"]
    email: str
    subject: str = ""
    text: str = ""
    matched_by: Literal["message_id", "address"] | None = None
    source: str
    received_at: str
    #: False: matched by an address nobody vouched for (no passing, aligned
    #: Authentication-Results from CAMPAIGN_TRUSTED_AUTHSERV_ID); it changed nothing (schema 13).
    verified: bool = True
    #: What the reply classifier made of it (schema 14): its intent, how sure it was, and
    #: the action taken; None until it has read the reply.
    intent: str | None = None
    confidence: float | None = None
    action: str | None = None
    #: The headers the classifier reads (Date, Auto-Submitted, X-Autoreply...), as the desk
    #: recorded them (schema 15); None for a reply recorded before.
    headers: dict[str, str] | None = None
    #: Listed in the inbox again from then (a `not_now` with a date), schema 15.
    snooze_until: str | None = None
    #: A person took it off the inbox.
    done_at: str | None = None
    done_by: str | None = None
    #: The person who set `intent` by hand (None: the classifier's reading).
    intent_by: str | None = None


#: An answer's state (schema 15): drafted (by the agent or edited by a person), being sent
#: by one caller, or sent.
AnswerStatus = Literal["drafted", "sending", "sent"]


class ReplyAnswerRow(Row):
    """The answer to a reply (schema 15): the agent's draft, a person's edit, then sent once."""

    reply_id: str
    campaign_id: str | None = None
    lead_id: str | None = None
    subject: str = ""
    body: str = ""
    status: AnswerStatus
    drafted_by: str | None = None  # the writer that drafted it (copywriter, offline writer)
    drafted_at: str | None = None
    edited_by: str | None = None
    edited_at: str | None = None
    sent_by: str | None = None
    sent_at: str | None = None
    message_id: str | None = None
    updated_at: str


class SuggestedLeadRow(Row):
    """A contact a reply named (a referral, schema 15): nothing is sent to them until a
    person adds them to a campaign (`added_campaign_id`)."""

    id: str
    campaign_id: str | None = None
    reply_id: str | None = None
    referred_by: str | None = None  # the address of the person who named them
    name: str | None = None
    email: str | None = None
    created_at: str
    added_campaign_id: str | None = None


class InboxAnswer(Row):
    """An inbox item's answer: `none` when nothing was drafted."""

    status: Literal["none", "drafted", "sending", "sent"] = "none"
    subject: str = ""
    body: str = ""


class InboxItem(Row):
    """A reply that needs a person (`Store.inbox`)."""

    reply_id: str
    campaign_id: str | None = None
    lead_id: str | None = None
    email: str
    intent: str | None = None
    confidence: float | None = None
    action: str | None = None
    received_at: str
    excerpt: str = ""
    verified: bool = True
    subject: str = ""
    step: int | None = None
    snooze_until: str | None = None
    answer: InboxAnswer = InboxAnswer()
    #: The contact a referral named (filled by the inbox service, not a column): nothing is
    #: sent to them until a person adds them to a campaign.
    suggested_lead: SuggestedLeadRow | None = None


class SuppressionRow(Row):
    """An address on the suppression list (never sent to, in any campaign): why, where the
    entry came from (schema 14), and since when."""

    email: str
    reason: str
    source: SuppressionSource
    created_at: str


class DraftView(Row):
    """A draft waiting for review, in the contract's `drafts --json` shape."""

    lead_id: str
    email: str
    subject: str
    body: str
    citations: list[str]
    step: int = 1
    version: int = 1
    edited_by: str | None = None
    excluded: bool = False

    @classmethod
    def of(cls, d: DraftRow) -> DraftView:
        return cls(lead_id=d.lead_id, email=d.email, subject=d.subject, body=d.body,
                   citations=d.citations, step=d.step, version=d.version,
                   edited_by=d.edited_by, excluded=d.excluded)


#: An edit's state: written by the control plane, then applied or refused by the workflow;
#: `original` is version 1 as the copywriter wrote it, kept when first replaced.
EditStatus = Literal["pending", "applied", "refused", "original"]


class DraftEditRow(Row):
    """One version of a draft, or an edit on its way to becoming one (schema 6)."""

    edit_id: str
    campaign_id: str
    lead_id: str
    step: int
    version: int | None = None
    base_version: int | None = None
    subject: str | None = None
    body: str | None = None
    edited_by: str | None = None
    status: EditStatus
    reason: str | None = None
    created_at: str
    updated_at: str


class ReviewerRow(Row):
    """A named reviewer (schema 7); the token is never stored, only its hash."""

    name: str
    created_at: str
    removed_at: str | None = None
    #: Bumped by sign-out: session cookies minted under an older epoch are refused (schema 13).
    session_epoch: int = 0


class ReviewStep(Row):
    """One step of a lead on a review page: its draft's state and what became of it.

    `outcome`, `error` and `stop_reason` are the report's for this (lead, step), so the
    page and `campaign report` cannot disagree; `events` are what came back for this
    step's message (`replied`, `auto_reply`, `bounced`, `unsubscribed`, `complained`)."""

    step: int
    subject: str = ""
    version: int = 1
    edited_by: str | None = None
    approved: bool = False
    excluded: bool = False
    failed_reason: str | None = None
    outcome: str = "pending"
    error: str | None = None
    stop_reason: str | None = None
    due_at: str | None = None
    sent_at: str | None = None
    events: list[str] = []


class ReviewItem(Row):
    """One lead on a review page: who it is, its first draft (if any) and where it stands,
    and (`steps`) every step of its sequence."""

    lead_id: str
    email: str
    company: str | None = None
    draft_status: str
    subject: str | None = None
    approved: bool = False
    version: int | None = None
    excluded: bool = False
    first_name: str | None = None
    last_name: str | None = None
    title: str | None = None
    error: str | None = None
    held: bool = False
    replied: bool = False
    steps: list[ReviewStep] = []


class ReviewDecision(Row):
    """A reviewer's decision on the campaign (`approve`, `approve_leads`, `reject`)."""

    decision: str
    by: str
    note: str | None = None
    lead_count: int | None = None  # None: every lead
    decided_at: str | None = None


class ReviewPage(Row):
    """One page of a campaign's leads as the review pages show it, and how many match in all;
    `decisions` are the campaign's decisions so far, oldest first."""

    total: int
    items: list[ReviewItem]
    decisions: list[ReviewDecision] = []


class Spend(Row):
    """A campaign's LLM spend: its cap, what answered calls cost, what calls in flight hold.

    The ledger counts in nano-USD (integers, so sums are exact); these are the USD values.
    """

    budget_usd: float | None = None
    spent_usd: float = 0.0
    reserved_usd: float = 0.0


class Reservation(Spend):
    """The answer to a reservation: granted or not, and the campaign's spend as it stood
    (a granted one includes its own worst case in `reserved_usd`)."""

    granted: bool
