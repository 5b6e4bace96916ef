"""Workflow and API data shapes shared by workflows, activities and the control plane.

Workflows carry ids and counters only; lead data, passages and drafts stay in the
store. These models are the inputs, signals and query answers that do travel
through Temporal history.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from campaign_core.send_window import SendWindow

DEFAULT_APPROVAL_TIMEOUT_SECONDS = 72 * 3600


class Stage(StrEnum):
    """A campaign's stage, as `campaign status` reports it."""

    DRAFTING = "drafting"
    AWAITING_APPROVAL = "awaiting_approval"
    DELIVERING = "delivering"
    COMPLETED = "completed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Channel(StrEnum):
    OUTBOX = "outbox"
    SMTP = "smtp"
    WEBHOOK = "webhook"


class Counts(BaseModel):
    leads: int = 0
    drafted: int = 0
    draft_failed: int = 0
    approved: int = 0
    suppressed: int = 0
    sent: int = 0
    send_failed: int = 0
    replied: int = 0
    stopped: int = Field(default=0, description="Follow-up steps not sent: a stop condition held.")
    excluded: int = Field(default=0, description="Messages (lead steps) a reviewer excluded.")
    not_approved: int = Field(default=0, description="Messages not approved (or rejected).")
    pending: int = Field(default=0, description="Messages not yet at a final outcome.")
    messages: int = Field(default=0, description="Messages in all: one per lead and step.")
    held: int = Field(default=0, description="Leads held by a failed step: not sent unless a "
                                             "reviewer fixes the step or sends the passing ones.")


class Approval(BaseModel):
    """The approval signal/update: all drafts (no lead ids) or only the listed leads."""

    model_config = ConfigDict(extra="forbid")

    lead_ids: list[str] | None = None
    by: str = Field(default="unknown", min_length=1, max_length=200)
    note: str | None = Field(default=None, max_length=2000)
    request_id: str | None = Field(
        default=None, max_length=100,
        description="The audit entry where the control plane recorded who decided and their "
        "note; with it, `by` and `note` hold no name or text, so history holds neither.",
    )
    send_passing: bool = Field(
        default=False, description="With `lead_ids`: send the passing steps of those leads "
        "even if another of their steps failed (that step ends `failed`). Without it a lead "
        "with a failed step is held, not approved.")


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str = Field(default="unknown", min_length=1, max_length=200)
    reason: str | None = Field(default=None, max_length=2000)
    request_id: str | None = Field(
        default=None, max_length=100,
        description="The audit entry where the control plane recorded who decided and their "
        "note; with it, `by` and `note` hold no name or text, so history holds neither.",
    )


class CampaignCarry(BaseModel):
    """What a campaign run hands to its continuation: a cursor and counters, no lead data."""

    after: str | None = None
    counts: Counts = Field(default_factory=Counts)
    runs: int = 1
    paused: bool = False
    cancelled: bool = False
    approval: Approval | None = None
    rejection: Rejection | None = None
    paused_reason: str | None = None
    added_lead_ids: list[str] = Field(
        default_factory=list,
        description="Leads added while drafting (`add-leads`), drafted after the paged ones.",
    )
    budget_lead_ids: list[str] = Field(
        default_factory=list,
        description="Leads the spend cap stopped mid-draft: drafted again first on resume.",
    )


class AddLeads(BaseModel):
    """The `add_leads` Update: ids of leads already stored, to draft in this campaign."""

    model_config = ConfigDict(extra="forbid")

    lead_ids: list[str] = Field(min_length=1, max_length=5000)


class CampaignInput(BaseModel):
    """The campaign workflow's input: settings of the run, never the leads themselves."""

    campaign_id: str
    name: str
    channel: Channel = Channel.OUTBOX
    approval_timeout_seconds: int = Field(default=DEFAULT_APPROVAL_TIMEOUT_SECONDS, gt=0)
    send_window: SendWindow | None = None
    queue_prefix: str = ""
    window: int = Field(default=200, ge=1, le=1000, description="Lead orchestrators in flight.")
    page_size: int = Field(default=100, ge=1, le=1000)
    leads_per_run: int = Field(
        default=1000, ge=1, description="Leads one run starts before it continues as new."
    )
    sends_per_run: int = Field(default=1000, ge=1)
    domain_limit_per_minute: int | None = Field(default=20, ge=1)
    send_rate_per_second: float | None = Field(default=None, gt=0)
    bounce_threshold: float = Field(default=0.05, gt=0, le=1)
    bounce_min_sends: int = Field(default=20, ge=1)
    use_search_attributes: bool = True
    carry: CampaignCarry | None = None
    follow_up_seconds: list[int] = Field(
        default_factory=list, max_length=3,
        description="Delay of each follow-up after the previous step's send (`--follow-up`).")
    stop_on_company_reply: bool = Field(
        default=False, description="A reply from a company domain stops its other leads too.")
    senders: list[str] | None = Field(
        default=None, max_length=1000,
        description="The senders (mailboxes) the leads are spread over (issue 28), resolved "
        "at start; None: no senders (the implicit CAMPAIGN_FROM sender, the webhook channel, "
        "or a run started before senders existed).")

    @property
    def steps(self) -> int:
        """Messages in each lead's sequence: the first and its follow-ups."""
        return 1 + len(self.follow_up_seconds)

    def delivery_input(self, *, paused: bool = False) -> DeliveryInput:
        """The delivery workflow's input for this campaign: the one place its settings pass
        from the campaign's input to its delivery's (both names are in recorded histories)."""
        return DeliveryInput(campaign_id=self.campaign_id, channel=self.channel,
                             queue_prefix=self.queue_prefix, page_size=self.page_size,
                             send_window=self.send_window, sends_per_run=self.sends_per_run,
                             domain_limit_per_minute=self.domain_limit_per_minute,
                             send_rate_per_second=self.send_rate_per_second,
                             bounce_threshold=self.bounce_threshold,
                             bounce_min_sends=self.bounce_min_sends, paused=paused,
                             follow_up_seconds=self.follow_up_seconds,
                             stop_on_company_reply=self.stop_on_company_reply,
                             senders=self.senders)


class LeadInput(BaseModel):
    campaign_id: str
    lead_id: str
    queue_prefix: str = ""
    steps: int = Field(default=1, ge=1, description="Drafts to write: step 1 and follow-ups.")
    step: int = Field(default=1, ge=1, description="The step `write_draft` writes.")


class LeadResult(BaseModel):
    lead_id: str
    status: str  # "drafted" | "failed" | "budget" (a refused LLM call: drafted again on resume)
    error: str | None = None
    error_type: str | None = None


class ApprovedLead(BaseModel):
    """What delivery needs to plan a send: the id, its window's zone, its mail domain."""

    lead_id: str
    timezone: str | None = None
    domain: str | None = Field(default=None, description="Recipient domain, for per-domain pacing.")
    sender: str | None = Field(
        default=None, description="The lead's sender (issue 28): one send of a mailbox at a "
        "time per delivery run, so each sees the waits planned before it.")


class DeliveryOutcome(BaseModel):
    """What one delivery attempt decided for one lead."""

    lead_id: str
    status: str  # "sent" | "suppressed" | "failed" | "stopped" | "waiting" (issue 28)
    message_id: str | None = None
    error: str | None = None
    stop_reason: str | None = None
    sender: str | None = Field(default=None, description="The sender it went (or waits) on.")
    next_slot: datetime | None = Field(
        default=None, description="`waiting`: when the step is planned to go (None: its "
        "sender is paused).")


class DeliveryResult(BaseModel):
    sent: int = 0
    suppressed: int = 0
    failed: int = 0
    bounced: int = 0
    complaints: int = 0
    stopped: int = 0


class DeliveryInput(BaseModel):
    campaign_id: str
    channel: Channel = Channel.OUTBOX
    queue_prefix: str = ""
    page_size: int = Field(default=100, ge=1, le=1000)
    send_window: SendWindow | None = None
    in_flight: int = Field(default=50, ge=1, le=500)
    sends_per_run: int = Field(default=1000, ge=1)
    domain_limit_per_minute: int | None = Field(
        default=20, ge=1, description="At most this many sends a minute to one domain."
    )
    send_rate_per_second: float | None = Field(
        default=None, gt=0, description="Campaign-wide pace, on top of the queue's limit."
    )
    after: str | None = None
    result: DeliveryResult = Field(default_factory=DeliveryResult)
    runs: int = 1
    paused: bool = False
    recent_by_domain: dict[str, list[datetime]] = Field(
        default_factory=dict, description="Sends in the last minute, carried across runs."
    )
    bounce_threshold: float = Field(
        default=0.05, gt=0, le=1,
        description="The circuit breaker pauses delivery when bounces pass this share of sends.",
    )
    bounce_min_sends: int = Field(
        default=20, ge=1, description="The breaker only judges a campaign after this many sends."
    )
    breaker_tripped: bool = False
    follow_up_seconds: list[int] = Field(default_factory=list, max_length=3)
    stop_on_company_reply: bool = False
    follow_ups_phase: bool = Field(
        default=False, description="Step 1 went to every approved lead; this run sends the "
        "follow-ups as they fall due.")
    senders: list[str] | None = Field(
        default=None, description="The campaign's senders (issue 28): sends wait on the "
        "schedule for their mailbox's capacity; None: no senders.")


class StepFigures(BaseModel):
    """One step of a campaign's sequence in `status`: messages sent, positive replies."""

    step: int
    sent: int = Field(default=0, description="Messages of this step sent (the report's `sent` "
                      "rows of this step).")
    positive_replies: int = Field(
        default=0, description="Replies read as interested, meeting_request or question that "
        "answered this step (the step whose message they replied to, else the lead's last "
        "step sent before).")


class CampaignStatus(BaseModel):
    campaign_id: str
    stage: Stage
    counts: Counts = Field(default_factory=Counts)
    paused: bool = False
    error: str | None = None
    paused_reason: str | None = Field(
        default=None, description="Why the campaign is paused when a person did not pause it "
        "(the bounce circuit breaker; `budget: ...` when the spend cap stopped drafting).",
    )
    spend_usd: float | None = Field(
        default=None, description="LLM spend recorded so far, in USD (the control plane "
        "fills it in from the store).")
    budget_usd: float | None = Field(default=None, description="The LLM spend cap, if any.")
    writer: str | None = Field(
        default=None, description="Who wrote the drafts, from their provenance: `offline` (the "
        "template writer, used when no LLM is configured) or `openai:<model>`; None before "
        "the first draft.")
    replies_by_intent: dict[str, int] = Field(
        default_factory=dict, description="The campaign's verified replies (messages, a "
        "person's and automatic ones) by intent; `unclassified` while the classifier has not "
        "read a person's reply. Only intents with a reply are listed.")
    positive_reply_rate: float | None = Field(
        default=None, description="Positive replies (interested, meeting_request, question) "
        "over first steps sent; None while no first step has been sent.")
    steps: list[StepFigures] = Field(
        default_factory=list, description="Each step of the sequence: sent, positive replies.")
    waiting_for_capacity: int = Field(
        default=0, description="Sends waiting on the schedule for their mailbox's capacity or "
        "for a paused sender to be resumed (issue 28).")
    next_slot: datetime | None = Field(
        default=None, description="When the next send waiting for capacity is planned to go.")
    paused_senders: dict[str, str] = Field(
        default_factory=dict, description="The campaign's senders that are paused (issue 28), "
        "each with why: their leads wait until `campaign sender resume`.")


class DeliveryEventKind(StrEnum):
    """What a recipient's mail system or the recipient told us after a send."""

    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"


class DeliveryEventSignal(BaseModel):
    """A new (never seen before) bounce or complaint for one of a campaign's messages."""

    kind: DeliveryEventKind
    lead_id: str | None = None


class ReplySignal(BaseModel):
    """A reply matched to one lead, sent to its campaign workflow as signal "reply": ids only."""
    lead_id: str
    kind: Literal["reply", "auto_reply", "bounce"]
    reply_id: str
    #: The person replied to another campaign (this id), not to this one: their sequence
    #: here stops too (issue 27), with a stop reason naming that campaign.
    from_campaign: str | None = None
    #: The stop reason, when the reply action workflow read the reply (issue 27): its
    #: intent (`not_interested`, `unsubscribe`...). None: `replied` (or `bounced`).
    reason: str | None = Field(default=None, max_length=100)


class OutOfOfficeSignal(BaseModel):
    """An out-of-office reply from one lead (issue 27): its next step moves to `not_before`
    (the day after the return date, or CAMPAIGN_OOO_DEFAULT_DELAY from now); nothing stops.
    Sent to the delivery orchestrator as signal "out_of_office": ids and a time only."""

    lead_id: str
    reply_id: str
    not_before: datetime


class StepMove(BaseModel):
    """Move a lead's open follow-up to `not_before` (only ever later)."""

    lead_id: str
    not_before: datetime


class MoveSteps(BaseModel):
    """The out-of-office moves a delivery run records in one store call."""

    campaign_id: str
    moves: list[StepMove] = Field(default_factory=list, max_length=1000)


class PageRequest(BaseModel):
    """Keyset pagination over a campaign's leads: ids after `after`, at most `limit`."""

    campaign_id: str
    after: str | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class StoreDraftInput(BaseModel):
    campaign_id: str
    lead_id: str
    envelope_id: str


class LeadFailure(BaseModel):
    campaign_id: str
    lead_id: str
    error: str
    steps: int = Field(default=0, ge=0, description="The sequence's steps: each one without a "
                                                     "draft is recorded as a failed step.")


class StageUpdate(BaseModel):
    campaign_id: str
    stage: Stage


class Decision(BaseModel):
    """An approval or rejection as recorded in the store, with its author."""

    campaign_id: str
    decision_id: str
    decision: str  # "approve" | "reject"
    lead_ids: list[str] | None = None
    by: str
    note: str | None = None
    request_id: str | None = None  # where `by` and `note` really are (see Approval)
    send_passing: bool = False  # see Approval


class DeliverInput(BaseModel):
    campaign_id: str
    lead_id: str
    channel: Channel = Channel.OUTBOX
    step: int = 1
    steps: int = Field(default=1, ge=1, description="Steps in the lead's sequence.")
    next_due_at: datetime | None = Field(
        default=None, description="When the next step falls due if this one is sent.")
    stop_on_company_reply: bool = False
    stop_reason: str | None = Field(
        default=None, description="The workflow already knows the sequence stopped (a reply "
        "signal): record the step stopped, send nothing.")
    senders: bool = Field(
        default=False, description="The campaign sends from senders (issue 28): the lead's "
        "mailbox, its caps and its DKIM key apply.")
    now: datetime | None = Field(
        default=None, description="The workflow's clock when it asked for the send: a "
        "mailbox's caps are counted at the later of this and the worker's clock, so the "
        "clock of a send never runs behind its workflow's (time-skipping tests run it ahead).")


class LeadIdsCheck(BaseModel):
    campaign_id: str
    lead_ids: list[str]


# -- recurring campaigns (Temporal Schedules) ---------------------------------------------


class ScheduledCampaignInput(BaseModel):
    """What every firing of a recurring campaign's schedule starts with: never the leads.

    `campaign` is the campaign's options with the template's id; each firing gives the
    copy its own id and name, so the leads are stored once, under `template_id`.
    """

    schedule: str
    template_id: str
    campaign: CampaignInput
    allow_overlap: bool = Field(
        default=False, description="Keep the people in another campaign's active sequence "
        "or who replied within CAMPAIGN_REPLY_COOLDOWN (each firing skips them otherwise).")


class CopyLeadsInput(BaseModel):
    """Copy a schedule template's campaign row and leads into a new campaign."""

    template_id: str
    campaign_id: str
    name: str
    schedule: str | None = None
    page_size: int = Field(default=500, ge=1, le=1000)
    allow_overlap: bool = False  # see ScheduledCampaignInput


class ScheduledRun(BaseModel):
    """What one firing did: the campaign it started (or found already started)."""

    schedule: str
    campaign_id: str
    leads: int
    already_started: bool = False


# -- sequences and replies ---------------------------------------------------------------


class DueRequest(BaseModel):
    """A page of follow-up steps due by `before`, keyset-paged by lead id after `after`."""

    campaign_id: str
    before: datetime
    after: str | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class DueStep(ApprovedLead):
    """One follow-up that is due: the lead (zone, domain, as delivery plans) and the step."""

    step: int


class NextDueRequest(BaseModel):
    """The earliest due time of a scheduled follow-up later than `after`."""

    campaign_id: str
    after: datetime


class AssignSenders(BaseModel):
    """Give these leads their sender, from the campaign's senders (issue 28)."""

    campaign_id: str
    lead_ids: list[str] = Field(max_length=1000)
    senders: list[str] = Field(min_length=1, max_length=1000)


class StopSequence(BaseModel):
    """Stop the sequences of these leads (replies), or every open one of a campaign (none)."""

    campaign_id: str
    lead_id: str | None = None
    lead_ids: list[str] = Field(default_factory=list, max_length=1000)
    reason: str
    steps: int = Field(default=1, ge=1)
    company: bool = Field(default=False, description="Stop the lead's company colleagues too.")


class StepFailure(BaseModel):
    """A follow-up whose send failed for good: taken off the schedule."""

    campaign_id: str
    lead_id: str
    step: int
