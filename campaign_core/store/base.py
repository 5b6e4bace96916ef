"""The store interface (`Store`), its two errors, and helpers every backend shares.

Backends: `sqlite.py`, `postgres.py` (both on the shared SQL of `sql.py`) and
`supabase.py` (REST); `factory.open_store` picks one. This module imports none of them.
Design notes: docs/architecture.md ("The store").
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from campaign_core.envelope import Envelope, digest
from campaign_core.leads import Lead, address_forms, campaign_salt, normalise_email
from campaign_core.models import Counts
from campaign_core.senders import (
    HEALTH_WINDOW,
    SenderClaim,
    SenderEventKind,
    SenderHealth,
    SenderRow,
    WaitReason,
)
from campaign_core.store.outcomes import DECIDED, ReplyFigures
from campaign_core.store.rows import (
    AuditEntry,
    CampaignRow,
    DeliveryEventRow,
    DeliveryRow,
    DraftEditRow,
    DraftRow,
    InboxAnswer,
    InboxItem,
    ReplyAnswerRow,
    ReplyRow,
    ReportRow,
    Reservation,
    ReviewerRow,
    ReviewPage,
    SequenceStepRow,
    Spend,
    SuggestedLeadRow,
    SuppressionRow,
    SuppressionSource,
)

#: The schema this code reads and writes: the highest migration number shipped.
SCHEMA_VERSION = 16

#: Addresses per statement of the overlap queries (`emails_in_active_sequences`,
#: `emails_replied_since`): each address is looked up under its stored forms too.
OVERLAP_BATCH = 500
#: The campaigns whose leads may be in a sequence still going on (a schedule's template
#: is in none: its id starts with `SCHEDULE_TEMPLATE_PREFIX`).
ACTIVE_STAGES = ("drafting", "awaiting_approval", "delivering")
#: Reply intents (schema 14) that say no person wrote the reply: it counts for no cooldown.
MACHINE_INTENTS = ("out_of_office", "auto_reply", "bounce")
#: The intents (schema 14) of the replies that need a person: listed in the inbox (schema 15),
#: with the snoozed ones that are due and the unverified matches awaiting confirmation.
INBOX_INTENTS = ("interested", "meeting_request", "question", "unclear", "referral")
#: The action recorded for a reply matched by an address nobody vouched for: nothing is done
#: until a person confirms it (it is listed in the inbox meanwhile).
AWAITING_CONFIRMATION = "awaiting_confirmation"
#: How much of a reply's text an inbox item carries.
EXCERPT_CHARS = 500
#: The reserved prefix of the schedules' template campaigns (starter/schedules.py).
SCHEDULE_TEMPLATE_PREFIX = "sched-"

#: The statuses a review page filters by: a lead's drafting status, or its first draft's
#: state (approved, excluded, edited by a reviewer).
REVIEW_STATUSES = ("drafted", "failed", "pending", "approved", "excluded", "edited")

#: Stages after which a draft that was not approved will never be sent.
DECIDED_STAGES = DECIDED
#: Decisions that approve drafts: the campaign's approval, and a selection approved during
#: the review (`approve_leads`), after which the campaign still awaits its decision.
APPROVALS = frozenset({"approve", "approve_leads"})


class StoreError(Exception):
    """A store problem no retry will fix (bad row, constraint, wrong schema).

    `table` and `key` say which row, so that an operator can find it; both are also
    in the message, which is what ends up in Temporal's failure and the lead's error.
    """

    def __init__(self, message: str, *, table: str | None = None, key: str | None = None) -> None:
        if table is not None:
            message = f"{table}[{key}]: {message}" if key else f"{table}: {message}"
        super().__init__(message)
        self.table = table
        self.key = key


class AnswerConflict(StoreError):
    """The answer to a reply is being sent or was sent: it can no longer be changed."""


class StoreUnavailable(Exception):
    """The store cannot be reached right now: retryable, and says which store and why.

    Deliberately not a StoreError: Temporal retries it like any ordinary exception,
    so a database that is down delays leads instead of failing them.
    """


class Store(Protocol):
    """What the engine needs from its durable record."""

    async def migrate(self, target: int | None = None) -> int:
        """Apply pending migrations (up to `target`, default all); return the version."""
        ...

    async def schema_version(self) -> int: ...

    async def ensure_schema(self) -> int:
        """Make sure the schema is the code's: embedded stores migrate, shared ones refuse."""
        ...

    async def close(self) -> None:
        """Release connections; the store may be used again afterwards (it reconnects)."""
        ...

    async def upsert_campaign(
        self, *, campaign_id: str, name: str, brief: str, channel: str,
        kb_dir: str | None, workflow_id: str, lead_id_salt: str | None = None,
        budget_usd: float | None = None,
    ) -> None:
        """Create the campaign row once; an existing row is left as it is (its salt too).

        `lead_id_salt` is the new row's lead-id salt (`new_lead_id_salt`); None writes a
        row of the old, unsalted scheme. `budget_usd` caps its LLM spend (None: no cap).
        """
        ...

    async def get_campaign(self, campaign_id: str) -> CampaignRow | None: ...

    async def set_stage(self, campaign_id: str, stage: str) -> None: ...

    # -- LLM spend caps (schema 11) -------------------------------------------------------

    async def set_budget(self, campaign_id: str, budget_usd: float | None) -> bool:
        """Set (or lift, None) the campaign's LLM spend cap; False when there is no such
        campaign."""
        ...

    async def reserve_llm_call(self, campaign_id: str, call_key: str, amount_nanousd: int
                               ) -> Reservation:
        """Hold `amount_nanousd` (the call's worst case) for one LLM call, iff recorded spend
        + what calls in flight hold + it stays within the budget; atomic across processes.
        A `call_key` already in the ledger (a retried activity) is granted again and holds
        nothing more."""
        ...

    async def settle_llm_call(self, campaign_id: str, call_key: str,
                              cost_nanousd: int | None) -> None:
        """Record what the call cost, replacing its reservation (idempotent)."""
        ...

    async def release_llm_call(self, campaign_id: str, call_key: str) -> None:
        """Drop the reservation of a call that was not answered (a settled one stays)."""
        ...

    async def spend(self, campaign_id: str) -> Spend:
        """The campaign's budget, recorded spend and reservations in flight."""
        ...

    async def list_campaigns(self, limit: int = 200) -> list[CampaignRow]:
        """The most recently created campaigns first, at most `limit`."""
        ...

    async def upsert_leads(self, campaign_id: str, leads: list[Lead]) -> int: ...

    async def get_lead(self, campaign_id: str, lead_id: str) -> Lead | None: ...

    async def list_lead_ids(self, campaign_id: str, after: str | None, limit: int) -> list[str]: ...

    async def set_lead_status(
        self, campaign_id: str, lead_id: str, status: str, error: str | None = None
    ) -> None: ...

    async def save_envelope(self, envelope: Envelope, lead_id: str | None = None) -> str: ...

    async def get_envelope(self, envelope_id: str) -> Envelope | None: ...

    async def save_retrieval(
        self, campaign_id: str, lead_id: str, passages: list[dict[str, Any]], envelope_id: str
    ) -> None: ...

    async def get_retrieval(self, campaign_id: str, lead_id: str) -> list[dict[str, Any]]: ...

    async def upsert_draft(
        self, *, campaign_id: str, lead_id: str, step: int, subject: str, body: str,
        citations: list[str], provenance: dict[str, Any], envelope_id: str,
        failed_reason: str | None = None,
    ) -> None:
        """Store a step's draft; `failed_reason` when it failed (its text kept for a fix)."""
        ...

    async def list_drafts(
        self, campaign_id: str, *, offset: int = 0, limit: int | None = None
    ) -> list[DraftRow]:
        """The campaign's drafts in lead order (then step); a page of them with `limit`."""
        ...

    async def get_draft(self, campaign_id: str, lead_id: str, step: int = 1) -> DraftRow | None: ...

    async def list_lead_drafts(self, campaign_id: str, lead_id: str) -> list[DraftRow]:
        """Every step's draft of one lead, in step order (the lead page shows them all)."""
        ...

    # -- reviewers' edits and exclusions (schema 6) --------------------------------------

    async def add_draft_edit(
        self, *, edit_id: str, campaign_id: str, lead_id: str, step: int, subject: str | None,
        body: str | None, base_version: int | None, by: str,
    ) -> None:
        """Record an edit as `pending` (None: that part unchanged); idempotent by `edit_id`."""
        ...

    async def get_draft_edit(self, edit_id: str) -> DraftEditRow | None: ...

    async def apply_draft_edit(
        self, edit_id: str, *, subject: str, body: str, expected_version: int
    ) -> DraftRow | None:
        """Make the pending edit the draft's next version, if the draft is still at
        `expected_version` (None otherwise: someone else's edit came first); keeps the
        replaced version. An edit already applied returns the draft as it is."""
        ...

    async def refuse_draft_edit(self, edit_id: str, reason: str) -> None:
        """Mark a pending edit refused, with the reason (an applied one stays applied)."""
        ...

    async def get_draft_version(
        self, campaign_id: str, lead_id: str, step: int, version: int
    ) -> DraftRow | None:
        """The draft as it was at `version` (the current row when that is its version)."""
        ...

    async def list_draft_versions(
        self, campaign_id: str, lead_id: str, step: int | None = None
    ) -> list[DraftEditRow]:
        """Every version and edit of the lead's drafts, oldest first."""
        ...

    async def set_draft_excluded(
        self, campaign_id: str, lead_id: str, step: int | None, excluded: bool
    ) -> list[int]:
        """Exclude (or include again) the lead's draft of `step`, or of every step (None);
        returns the steps that exist. An excluded draft is never approved."""
        ...

    async def record_decision(
        self, *, campaign_id: str, decision_id: str, decision: str, lead_ids: list[str] | None,
        by: str, note: str | None, send_passing: bool = False,
    ) -> int:
        """Record a decision; an approval (`APPROVALS`) approves drafts, each at its current
        version, and returns how many leads are approved in all. Never approved: excluded
        drafts, failed ones (`failed_reason`), and the steps of a held lead (a failed step
        not excluded), unless `send_passing` with named `lead_ids`: then those leads' passing
        steps are. A draft approved before keeps its approved version."""
        ...

    async def list_approved_lead_ids(
        self, campaign_id: str, after: str | None, limit: int
    ) -> list[str]:
        """Leads whose step 1 is approved, in lead-id order after `after`."""
        ...

    async def add_suppressions(self, emails: list[str], reason: str, *,
                               source: SuppressionSource) -> int:
        """Put the addresses on the suppression list (normalised) with `reason` and where
        the entry came from (`source`); an address already there keeps its entry. Returns
        how many were added."""
        ...

    async def is_suppressed(self, email: str) -> bool: ...

    async def list_suppressions(self) -> list[SuppressionRow]:
        """The whole suppression list, newest first (then by address)."""
        ...

    async def get_suppression(self, email: str) -> SuppressionRow | None:
        """The address's entry (under any of its stored forms), or None."""
        ...

    async def lift_suppression(self, email: str) -> list[SuppressionRow]:
        """Remove the address's entries (every stored form) unless one was made by an
        erasure request: then nothing is removed. Returns the entries removed."""
        ...

    async def get_delivery(self, message_key: str) -> DeliveryRow | None: ...

    async def upsert_delivery(
        self, *, message_key: str, campaign_id: str, lead_id: str, step: int, channel: str,
        status: str, message_id: str | None = None, error: str | None = None,
    ) -> None: ...

    async def find_delivery_by_message_id(self, message_id: str) -> DeliveryRow | None:
        """The delivery row whose RFC 5322 Message-ID this is (with or without <>)."""
        ...

    async def record_delivery_event(
        self, *, event_id: str, kind: str, email: str, source: str,
        campaign_id: str | None = None, lead_id: str | None = None,
        message_key: str | None = None, detail: str | None = None,
    ) -> bool:
        """Record a bounce/complaint/unsubscribe once; True when it was new."""
        ...

    async def list_delivery_events(self, campaign_id: str, lead_id: str | None = None
                                   ) -> list[DeliveryEventRow]:
        """The campaign's events (with `lead_id`, that lead's alone), oldest first."""
        ...

    async def get_or_create_secret(self, name: str, candidate: str) -> str:
        """The shared secret `name`; `candidate` becomes it if none exists yet.

        Concurrent callers with different candidates all get the one that was stored
        first, so every worker and API process signs and checks with the same key.
        """
        ...

    async def claim_webhook_id(self, webhook_id: str) -> bool:
        """Record a signed webhook's `webhook-id`; False when it was recorded before
        (a retry or a replay: answer it without acting again). Atomic (schema 5)."""
        ...

    async def release_webhook_id(self, webhook_id: str) -> None:
        """Forget a claimed id whose handling failed, so the sender's retry is acted on."""
        ...

    # -- sequences (schema 10): who is due when -------------------------------------

    async def schedule_step(self, campaign_id: str, lead_id: str, step: int,
                            due_at: datetime) -> None:
        """Put a follow-up on the schedule; a row already there (sent, stopped) is kept."""
        ...

    async def get_step(self, campaign_id: str, lead_id: str, step: int) -> SequenceStepRow | None:
        ...

    async def move_open_step(self, campaign_id: str, lead_id: str, not_before: datetime
                             ) -> bool:
        """Move the lead's scheduled follow-up to `not_before` if it is due earlier (an
        out-of-office reply, schema 10's rows); True when one moved. Never earlier."""
        ...

    async def set_step_status(self, campaign_id: str, lead_id: str, step: int, status: str,
                              stop_reason: str | None = None) -> None:
        """Record a follow-up `sent`, `stopped` (with its reason) or `failed`, or step 1
        `stopped` (the person replied to another campaign first, issue 27); a step that
        was sent stays sent whatever comes later."""
        ...

    async def due_steps(self, campaign_id: str, before: datetime, after: str | None,
                        limit: int) -> list[SequenceStepRow]:
        """Scheduled follow-ups due by `before`, by lead id after `after` (one open step a lead)."""
        ...

    async def next_due_at(self, campaign_id: str, after: datetime) -> datetime | None:
        """The earliest due time of a scheduled follow-up later than `after`."""
        ...

    async def stop_open_steps(self, campaign_id: str, reason: str) -> int:
        """Stop every scheduled follow-up of the campaign (cancel); how many."""
        ...

    async def last_sent_step(self, campaign_id: str, lead_id: str) -> int:
        """The highest step sent (or suppressed) to the lead; 0 when none."""
        ...

    async def lead_ids_at_domain(self, campaign_id: str, domain: str) -> list[str]:
        """The campaign's leads whose address is at `domain` (a company reply stops them)."""
        ...

    async def suppression_reason(self, email: str) -> str | None:
        """Why the address is suppressed (`unsubscribe (...)`, `bounce (...)`...), or None."""
        ...

    async def counts(self, campaign_id: str) -> Counts: ...

    async def status_figures(self, campaign_id: str) -> tuple[Counts, ReplyFigures]:
        """`counts` and the reply figures `status` shows (replies by intent, the positive
        rate, each step's sent and positive replies), computed by `outcomes.status_figures`
        from one read of the report's facts and one grouped read of the replies."""
        ...

    async def held_leads(self, campaign_id: str) -> list[str]:
        """The leads a failed step holds (`outcomes.held_lead_ids`), in report order."""
        ...

    async def report(self, campaign_id: str) -> list[ReportRow]: ...

    async def audit(self, campaign_id: str, lead_id: str | None = None) -> list[AuditEntry]: ...

    # -- reviewers and sign-in codes (schema 7) -----------------------------------------

    async def add_reviewer(self, name: str, token_hash: str) -> bool:
        """Create reviewer `name` with this token hash; False if an active one has the name.
        A removed reviewer's name may be given again: it gets the new token."""
        ...

    async def get_reviewer(self, name: str) -> ReviewerRow | None:
        """The reviewer, unless unknown or removed."""
        ...

    async def reviewer_by_token(self, token_hash: str) -> ReviewerRow | None:
        """The active reviewer whose token has this hash, or None."""
        ...

    async def list_reviewers(self) -> list[ReviewerRow]:
        """The active reviewers, by name."""
        ...

    async def remove_reviewer(self, name: str) -> bool:
        """Mark the reviewer removed (their token and sessions stop working) and bump their
        session epoch, so a session from before stays dead if the name is given again;
        False if there was no active reviewer of that name."""
        ...

    async def bump_session_epoch(self, name: str) -> bool:
        """Move the active reviewer's session epoch on by one (sign-out): every session
        cookie issued under an older epoch stops working, wherever it was copied. False if
        there is no active reviewer of that name."""
        ...

    async def add_sign_in_code(self, code_hash: str, reviewer: str, expires_at: datetime) -> None:
        """Record a one-time sign-in code (its hash) for an active reviewer."""
        ...

    async def take_sign_in_code(self, code_hash: str) -> str | None:
        """Delete the code and return its reviewer, or None when unknown, used or expired.
        Atomic: of two concurrent takers only one gets the reviewer."""
        ...

    async def review_page(
        self, campaign_id: str, *, status: str | None = None, search: str | None = None,
        step_status: str | None = None, lead_id: str | None = None, offset: int = 0,
        limit: int = 50,
    ) -> ReviewPage:
        """A page of the campaign's leads in intake order, each with its first draft and
        every step of its sequence (`review.review_items`): only those of `status` (one of
        `REVIEW_STATUSES`), with a step of `step_status` (one of `review.STEP_STATUSES`),
        whose email, name, company or title contains `search` (ignoring case and accents),
        and `lead_id` itself, when given; `total` counts every match. `decisions` are the
        campaign's."""
        ...

    # -- embeddings (schema 4) --------------------------------------------------------

    async def get_embeddings(self, model: str, hashes: list[str]) -> dict[str, list[float]]:
        """The stored vectors of `model` for those text hashes that have one."""
        ...

    async def put_embeddings(self, model: str, vectors: dict[str, list[float]]) -> None:
        """Store vectors by text hash; a hash already stored keeps its vector (idempotent)."""
        ...

    async def vector_search(
        self, model: str, query_vector: list[float], hashes: list[str], k: int
    ) -> list[tuple[str, float]] | None:
        """The `k` hashes among `hashes` most similar to the query, as (hash, cosine), best
        first; or None when this backend cannot search vectors itself (SQLite, Postgres
        without pgvector, Supabase without `match_embeddings`): the caller searches in memory.
        """
        ...

    # -- replies (schema 8) --------------------------------------------------------------

    async def record_reply(
        self, *, message_id: str, kind: str, email: str, source: str,
        campaign_id: str | None = None, lead_id: str | None = None, step: int | None = None,
        subject: str = "", text: str = "", matched_by: str | None = None,
        verified: bool = True, headers: dict[str, str] | None = None,
    ) -> tuple[str, bool]:
        """Record a message that came back, once per (Message-ID, campaign, lead):
        returns its `reply_id` and whether it was new. No lead: an unmatched message.
        `verified` False: matched by an address nobody vouched for; such a row counts for
        nothing (not replied, no stop) until `confirm_reply`. `headers`: those the
        classifier reads (schema 15), kept as JSON."""
        ...

    async def get_reply(self, reply_id: str) -> ReplyRow | None:
        """One recorded message by its id."""
        ...

    async def record_reply_intent(self, reply_id: str, intent: str, confidence: float | None,
                                  action: str | None) -> bool:
        """Record what the reply classifier made of a reply (schema 14), replacing an
        earlier reading; False when there is no such reply."""
        ...

    # -- what is done with a reply (schema 15) -------------------------------------------

    async def snooze_reply(self, reply_id: str, until: datetime) -> bool:
        """List the reply in the inbox again from `until` (a `not_now` with a date); False
        when there is no such reply."""
        ...

    async def mark_reply_done(self, reply_id: str, *, by: str) -> bool:
        """A person took the reply off the inbox; False when there is no such reply."""
        ...

    async def set_reply_intent_by_person(self, reply_id: str, intent: str, *, by: str) -> bool:
        """A person's reading of the reply (confidence 1, the action to be taken again by
        the reply action workflow: None until then); False when there is no such reply."""
        ...

    async def inbox(self, *, campaign_id: str | None, intents: list[str] | None,
                    now: datetime) -> list[InboxItem]:
        """The replies that need a person, newest first: a person's reply (not done) whose
        intent is one of `INBOX_INTENTS`, or that is snoozed until `now` or earlier, or that
        awaits a person's confirmation (`AWAITING_CONFIRMATION`); of the campaign and the
        `intents` given (None: all). Each with its answer, if one was drafted."""
        ...

    async def save_reply_answer(self, reply_id: str, *, subject: str, body: str,
                                by: str | None, drafted: bool = False) -> None:
        """Store the answer to a reply: the agent's draft (`drafted`, `by` names the writer;
        a person's edit already there is kept) or a person's edit (`by`). AnswerConflict
        once it is being sent or was sent; StoreError when there is no such reply."""
        ...

    async def get_reply_answer(self, reply_id: str) -> ReplyAnswerRow | None: ...

    async def claim_answer_send(self, reply_id: str, *, by: str) -> ReplyAnswerRow | None:
        """Mark a drafted answer `sending` for this caller alone (atomic) and return it;
        None when there is none, or it is already being sent or sent."""
        ...

    async def release_answer_send(self, reply_id: str) -> bool:
        """Put an answer whose send failed back to `drafted` (a sent one stays sent)."""
        ...

    async def mark_answer_sent(self, reply_id: str, *, message_id: str, by: str) -> None:
        """Record the answer sent, with its Message-ID (idempotent: a sent one stays as it was)."""
        ...

    async def add_suggested_lead(self, *, campaign_id: str | None, reply_id: str,
                                 referred_by: str | None, name: str | None,
                                 email: str | None) -> tuple[str, bool]:
        """Record a contact a reply named, once per reply and contact: its id and whether it
        was new. Nothing is sent to them."""
        ...

    async def list_suggested_leads(self, campaign_id: str | None = None
                                   ) -> list[SuggestedLeadRow]:
        """The suggested leads (of the campaign, or all), newest first."""
        ...

    async def mark_suggested_lead_added(self, suggestion_id: str, campaign_id: str) -> bool:
        """Record that a person added the suggested lead to `campaign_id`."""
        ...

    async def confirm_reply(self, reply_id: str) -> bool:
        """A person vouches for an unverified message: it is verified from now on (and so
        counts as the lead's reply). True when it was unverified before."""
        ...

    async def lead_replied(self, campaign_id: str, lead_id: str) -> bool:
        """Whether a person's verified reply (not an automatic one, not a bounce, not one
        matched by an address nobody vouched for, not one the classifier read as
        `MACHINE_INTENTS`: an out-of-office stops nothing) is recorded for the lead."""
        ...

    async def list_replies(self, campaign_id: str | None) -> list[ReplyRow]:
        """The campaign's replies, oldest first; `None`: the messages that matched no lead."""
        ...

    async def find_leads_by_email(self, email: str, stages: Iterable[str]) -> list[tuple[str, str]]:
        """(campaign_id, lead_id) of the leads with this stored (normalised) address in the
        campaigns at one of `stages`: never by recomputing lead ids."""
        ...

    async def emails_in_active_sequences(self, emails: Sequence[str], *,
                                         exclude_campaign: str | None = None) -> dict[str, str]:
        """Of `emails` (addresses, normalised here), those that are a lead of a campaign
        other than `exclude_campaign` whose sequence is not over: the campaign is drafting
        or awaiting approval (the lead's drafting did not fail), or it is delivering and
        the lead's step 1 is approved and not yet sent, or a follow-up is still scheduled.
        Schedule templates (`SCHEDULE_TEMPLATE_PREFIX`) are no campaign. Each address (as
        normalised) maps to one such campaign's id. One query per `OVERLAP_BATCH`
        addresses, not one per address."""
        ...

    async def emails_replied_since(self, emails: Sequence[str], since: datetime
                                   ) -> dict[str, str]:
        """Of `emails` (normalised here), those from which a person's verified reply (not
        an automatic one, not a bounce, not an unverified match, not one the classifier read
        as `MACHINE_INTENTS`) to one of our campaigns
        was received at or after `since`: each address maps to the campaign of its latest
        such reply. One query per `OVERLAP_BATCH` addresses."""
        ...

    async def get_imap_state(self, mailbox: str) -> tuple[int, int] | None:
        """(UIDVALIDITY, last UID processed) of an IMAP mailbox, if it was polled before."""
        ...

    async def save_imap_state(self, mailbox: str, uidvalidity: int, last_uid: int) -> None: ...

    # -- senders (issue 28, schema 16): campaign_core/senders.py --------------------------

    async def add_sender(self, row: SenderRow) -> bool:
        """Insert a sender (its secrets already sealed); False when a sender of that name
        exists and is not removed (a removed one's name may be taken again: the row is
        replaced, its past sends stay under the name)."""
        ...

    async def get_sender(self, name: str) -> SenderRow | None:
        """The sender of that name, removed or not (`removed_at` says)."""
        ...

    async def list_senders(self, *, include_removed: bool = False) -> list[SenderRow]:
        """Senders by name."""
        ...

    async def set_sender_paused(self, name: str, paused: bool, reason: str | None, *,
                                if_not_paused: bool = False) -> bool:
        """Pause (with the reason and `paused_at` now) or resume (reason and time cleared)
        a sender that is not removed; False for an unknown or removed one, and with
        `if_not_paused` for one already paused (so of two events that pause it at once,
        one only reports the pause)."""
        ...

    async def remove_sender(self, name: str) -> bool:
        """Mark the sender removed (`removed_at`); False if unknown or already removed."""
        ...

    async def last_sender_claim(self, sender: str) -> SenderClaim | None:
        """The sender's latest send (highest `seq`)."""
        ...

    async def sender_claims_since(self, sender: str, since: datetime) -> list[SenderClaim]:
        """The sender's sends with `sent_at > since`, oldest first (by `seq`)."""
        ...

    async def sender_claim_for(self, message_key: str) -> SenderClaim | None:
        """The send recorded for this message, if any (a retry's claim is already made)."""
        ...

    async def insert_sender_claim(self, claim: SenderClaim) -> bool:
        """Append a send. False when another writer took `claim.seq` first (read the last
        claim again and retry); True when written, or when a claim for the same
        `message_key` already exists (idempotent)."""
        ...

    async def mark_sender_event(self, message_key: str, kind: SenderEventKind) -> str | None:
        """Flag the send of this message bounced or complained; the sender's name, or None
        when no send of a sender has that key."""
        ...

    async def sender_health(self, sender: str, window: int = HEALTH_WINDOW) -> SenderHealth:
        """Sends, bounces and complaints over the sender's last `window` sends."""
        ...

    async def assign_senders(self, campaign_id: str, assignments: dict[str, str]) -> int:
        """Give leads (id -> sender name) their sender, only where they have none yet;
        how many were set."""
        ...

    async def lead_sender(self, campaign_id: str, lead_id: str) -> str | None:
        """The lead's sender (None: not assigned)."""
        ...

    async def sender_assignment_counts(self, campaign_id: str) -> dict[str, int]:
        """Leads of the campaign per assigned sender."""
        ...

    async def defer_step(self, campaign_id: str, lead_id: str, step: int, due_at: datetime,
                         sender: str, reason: WaitReason) -> None:
        """Put a step that cannot go now on the schedule (`sequence_steps`, status
        `scheduled`) at `due_at`, with `sender` and `wait_reason`: inserts step 1's row,
        moves a follow-up's row. A row already `sent`, `stopped` or `failed` is kept."""
        ...

    async def clear_step_wait(self, campaign_id: str, lead_id: str, step: int) -> None:
        """The step went out (or stopped): its `wait_reason` is cleared."""
        ...

    async def capacity_waits(self, campaign_id: str) -> tuple[int, datetime | None]:
        """Steps of the campaign scheduled with a `wait_reason`, and the earliest due time
        of those waiting for capacity (`status`'s `waiting_for_capacity`, `next_slot`)."""
        ...

    async def planned_waits(self, sender: str, after: datetime) -> list[datetime]:
        """Due times after `after` of every campaign's steps waiting for this sender's
        capacity, oldest first: where the next waiter is planned."""
        ...

    async def release_sender_holds(self, sender: str, due_at: datetime) -> list[str]:
        """A resumed sender: its steps held for `paused` are due at `due_at` (waiting for
        capacity again); the campaigns they belong to."""
        ...

    # -- erasure (`campaign forget`) ---------------------------------------------------

    async def forget(
        self, email: str, *, derived_text_hashes: DerivedHashes | None = None
    ) -> dict[str, int]:
        """Erase everything the store holds about the person with this address, in every
        campaign, and suppress the address; returns how many rows each table lost.

        See campaign_core/store/erasure.py for what is deleted, what is redacted and what is kept.
        `derived_text_hashes(lead, brief)` names the text hashes of caches built from
        the lead (the dense-retrieval query's embedding), which are deleted too.
        Idempotent: forgetting the same address again erases nothing more.
        """
        ...


#: `derived_text_hashes(lead, campaign_brief)`: hashes of cached texts made from the lead.
DerivedHashes = Callable[[Lead, str], Iterable[str]]


# -- migrations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file; the number is the schema version it brings the store to."""

    version: int
    name: str
    sql: str


def migrations(dialect: str) -> list[Migration]:
    """The migrations shipped for `dialect` ("sqlite" or "postgres"), in order.

    They are package data next to this module, so they are found the same way in a
    checkout, an editable install and an installed wheel (which pip always unpacks).
    """
    folder = Path(__file__).resolve().parent.parent / "migrations" / dialect
    found = [
        Migration(int(f.name.split("_", 1)[0]), f.name, f.read_text(encoding="utf-8"))
        for f in folder.glob("[0-9]*.sql")
    ]
    return sorted(found, key=lambda m: m.version)


def check_version(version: int, where: str, *, how_to_migrate: str = "run `campaign db migrate`") -> int:
    """Refuse a schema that is not the code's, saying what to do; return it otherwise."""
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"store {where} has schema version {version}, newer than this code "
            f"({SCHEMA_VERSION}): upgrade campaign-engine"
        )
    if version < SCHEMA_VERSION:
        state = "no campaign schema yet" if version == 0 else (
            f"schema version {version}, older than this code's ({SCHEMA_VERSION})")
        raise StoreError(f"store {where} has {state}: {how_to_migrate}")
    return version


def redact_url(url: str) -> str:
    """A store URL fit for messages and logs: no password, and no query value (libpq takes
    `?password=`, `sslpassword=`...), is ever shown; a key=value DSN loses its password."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", url, flags=re.IGNORECASE)
    rest, qmark, query = rest.partition("?")
    if qmark:
        query = "&".join(p.split("=", 1)[0] + "=***" if "=" in p else p
                         for p in query.split("#", 1)[0].split("&"))
    if "@" in rest:
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        rest = f"{user}:***@{host}" if ":" in creds else f"{user}@{host}"
    return f"{scheme}://{rest}{qmark}{query}"


# -- helpers every backend shares -------------------------------------------------------------


def now_utc() -> datetime:
    """Wall-clock time of a write (the store is only called from activities and the CLI)."""
    return datetime.now(UTC)


#: Columns holding times; rows from every backend carry them as ISO 8601 text in UTC.
TIME_COLUMNS = frozenset({"created_at", "updated_at", "started_at", "ended_at", "applied_at",
                          "removed_at", "expires_at", "received_at", "due_at",
                          "snooze_until", "done_at", "drafted_at", "edited_at", "sent_at",
                          "paused_at"})


def iso(value: Any) -> Any:
    """A timestamp as ISO 8601 text in UTC with microseconds, whatever the backend returned.

    SQLite holds the text we wrote, psycopg returns datetimes and PostgREST returns
    Postgres's JSON rendering (which drops trailing zeros): one shape keeps sorting
    and comparing times the same on every backend. Anything else is returned as is.
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return value


def reply_id_for(message_id: str, campaign_id: str | None, lead_id: str | None) -> str:
    """The id of one message matched to one lead (or to none): the same message processed
    twice, by webhook or by IMAP, gets the same id, so it is recorded once."""
    raw = f"{bare_message_id(message_id)}\n{campaign_id or ''}\n{lead_id or ''}".encode()
    return "rpl_" + hashlib.sha256(raw).hexdigest()[:32]


def bare_message_id(message_id: str) -> str:
    """A Message-ID as stored, without the angle brackets providers often drop or add."""
    return message_id.strip().removeprefix("<").removesuffix(">")


def overlap_forms(emails: Sequence[str]) -> list[dict[str, str]]:
    """`emails` in batches of `OVERLAP_BATCH`, each as {stored form: normalised address}:
    what the overlap queries look up, and how a row found maps back to the address asked
    about. An address that does not normalise is left out (it is no lead's)."""
    by_address: dict[str, list[str]] = {}
    for raw in dict.fromkeys(emails):
        try:
            canonical = normalise_email(raw)
        except ValueError:
            continue
        by_address.setdefault(canonical, []).extend(address_forms(raw))
    addresses = list(by_address)
    batches: list[dict[str, str]] = []
    for start in range(0, len(addresses), OVERLAP_BATCH):
        forms: dict[str, str] = {}
        for canonical in addresses[start:start + OVERLAP_BATCH]:
            for form in by_address[canonical]:
                forms.setdefault(form, canonical)
        batches.append(forms)
    return batches


def normalise_address(email: str) -> str:
    """Suppressions are keyed like leads: on the normalised address (`normalise_email`)."""
    return normalise_email(email)


def trace_fields(envelope: Envelope) -> dict[str, Any]:
    """The node trace lifted out of an envelope into audit-log columns (schema 2).

    `outcome` lists each record's kind, with its `status` where it has one
    (`delivery:sent`, `lead:drafting`); `inputs_digest` is the records' shared
    inputs digest, or a digest of their distinct digests when they differ.
    """
    m = envelope.metadata
    outcomes: list[str] = []
    for r in envelope.records:
        status = r.data.get("status")
        label = f"{r.kind}:{status}" if isinstance(status, str) and status else r.kind
        if label not in outcomes:
            outcomes.append(label)
    digests = sorted({r.provenance.inputs_digest for r in envelope.records})
    return {
        "run_id": m.run_id,
        "attempt": m.attempt,
        "agent_version": m.agent_version,
        "started_at": m.started_at.astimezone(UTC),
        "ended_at": m.ended_at.astimezone(UTC),
        "duration_ms": round((m.ended_at - m.started_at).total_seconds() * 1000),
        "record_count": len(envelope.records),
        "outcome": ",".join(outcomes) or None,
        "inputs_digest": digests[0] if len(digests) == 1 else (digest(digests) if digests else None),
    }


def parse_json(value: Any, table: str, key: str) -> Any:
    """A JSON column's value: parsed when stored as text (SQLite), as is otherwise."""
    if not isinstance(value, str | bytes):
        return value
    try:
        return json.loads(value)
    except ValueError as exc:
        raise StoreError(f"malformed JSON in stored row: {exc}", table=table, key=key) from exc


def parse_lead(value: Any, key: str) -> Lead:
    """A stored lead, or StoreError naming it if the row no longer fits the model."""
    try:
        return Lead.model_validate(parse_json(value, "leads", key))
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise StoreError(f"malformed lead row: {exc}", table="leads", key=key) from exc


def parse_envelope(value: Any, key: str) -> Envelope:
    """A stored envelope, or StoreError naming it if the row no longer fits the model."""
    try:
        return Envelope.model_validate(parse_json(value, "audit_log", key))
    except ValueError as exc:
        raise StoreError(f"malformed envelope row: {exc}", table="audit_log", key=key) from exc


def plain_row(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """A row with timestamps as ISO strings, so callers see one shape on every backend."""
    if row is None:
        return None
    return {k: iso(v) if k in TIME_COLUMNS else v for k, v in row.items()}


R = TypeVar("R", bound=BaseModel)


def typed(model: type[R], row: dict[str, Any], table: str, key: str,
          json_columns: tuple[str, ...] = ()) -> R:
    """A stored row as its model (times as text, JSON parsed), or StoreError naming it."""
    data = plain_row(row) or {}
    for col in json_columns:
        data[col] = parse_json(data[col], table, key)
    try:
        return model.model_validate(data)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise StoreError(f"malformed {table} row: {exc}", table=table, key=key) from exc


def campaign_row(row: dict[str, Any] | None) -> CampaignRow | None:
    return None if row is None else typed(CampaignRow, row, "campaigns", str(row.get("campaign_id")))


def reviewer_row(row: dict[str, Any] | None) -> ReviewerRow | None:
    return None if row is None else typed(ReviewerRow, row, "reviewers", str(row.get("name")))


def draft_row(row: dict[str, Any]) -> DraftRow:
    key = f"{row.get('campaign_id')}/{row.get('lead_id')}/{row.get('step')}"
    return typed(DraftRow, row, "drafts", key, ("citations", "provenance"))


def draft_edit_row(row: dict[str, Any]) -> DraftEditRow:
    return typed(DraftEditRow, row, "draft_versions", str(row.get("edit_id")))


def original_edit_id(campaign_id: str, lead_id: str, step: int) -> str:
    """The id under which version 1 (the copywriter's) is kept once it is replaced."""
    return f"original:{campaign_id}/{lead_id}/{step}"


def as_version(draft: DraftRow, edit: DraftEditRow) -> DraftRow:
    """`draft` with the text, version and editor of a stored version."""
    return draft.model_copy(update={"subject": edit.subject or "", "body": edit.body or "",
                                    "version": edit.version, "edited_by": edit.edited_by})


def delivery_row(row: dict[str, Any] | None) -> DeliveryRow | None:
    return None if row is None else typed(DeliveryRow, row, "deliveries", str(row.get("message_key")))


def event_row(row: dict[str, Any]) -> DeliveryEventRow:
    return typed(DeliveryEventRow, row, "delivery_events", str(row.get("event_id")))


def reply_row(row: dict[str, Any]) -> ReplyRow:
    return typed(ReplyRow, {"headers": None, **row}, "replies", str(row.get("reply_id")),
                 ("headers",))


def headers_json(headers: dict[str, str] | None) -> str | None:
    """The classifier's headers as stored (JSON text, keys sorted), or None."""
    return None if headers is None else json.dumps(dict(headers), sort_keys=True)


def answer_row(row: dict[str, Any]) -> ReplyAnswerRow:
    return typed(ReplyAnswerRow, row, "reply_answers", str(row.get("reply_id")))


def suggested_lead_row(row: dict[str, Any]) -> SuggestedLeadRow:
    return typed(SuggestedLeadRow, row, "suggested_leads", str(row.get("id")))


def suggested_lead_id(reply_id: str, name: str | None, email: str | None) -> str:
    """One suggestion per reply and contact: the same referral applied twice is recorded once."""
    who = (email or "").strip().lower() or (name or "").strip().lower()
    return "sug_" + hashlib.sha256(f"{reply_id}\n{who}".encode()).hexdigest()[:24]


def suggested_email(email: str | None) -> str | None:
    """A suggested lead's address as stored: normalised like a lead's, None when it is none."""
    if not email or not email.strip():
        return None
    try:
        return normalise_email(email)
    except ValueError:
        return None


def needs_person(reply: ReplyRow, now: datetime) -> bool:
    """Whether `Store.inbox` lists the reply (before the campaign and intent filters)."""
    if reply.done_at is not None or reply.kind != "reply":
        return False
    until = as_time(reply.snooze_until)
    snoozed = until is not None and until <= now
    return (reply.intent in INBOX_INTENTS or snoozed
            or reply.action == AWAITING_CONFIRMATION)


def inbox_item(reply: ReplyRow, answer: ReplyAnswerRow | None) -> InboxItem:
    return InboxItem(
        reply_id=reply.reply_id, campaign_id=reply.campaign_id, lead_id=reply.lead_id,
        email=reply.email, intent=reply.intent, confidence=reply.confidence,
        action=reply.action, received_at=reply.received_at,
        excerpt=reply.text[:EXCERPT_CHARS], verified=reply.verified, subject=reply.subject,
        step=reply.step, snooze_until=reply.snooze_until,
        answer=InboxAnswer() if answer is None else InboxAnswer(
            status=answer.status, subject=answer.subject, body=answer.body))


def inbox_of(replies: Iterable[ReplyRow], answers: dict[str, ReplyAnswerRow], *,
             campaign_id: str | None, intents: list[str] | None, now: datetime
             ) -> list[InboxItem]:
    """The inbox from candidate replies (every backend filters the same way here)."""
    wanted = None if intents is None else set(intents)
    chosen = [r for r in replies if needs_person(r, now)
              and (campaign_id is None or r.campaign_id == campaign_id)
              and (wanted is None or r.intent in wanted)]
    chosen.sort(key=lambda r: (r.received_at, r.reply_id), reverse=True)
    return [inbox_item(r, answers.get(r.reply_id)) for r in chosen]


def suppression_row(row: dict[str, Any]) -> SuppressionRow:
    return typed(SuppressionRow, row, "suppressions", str(row.get("email")))


def first_suppression(rows: list[SuppressionRow]) -> SuppressionRow | None:
    """The entry that speaks for an address stored under several forms: an erasure's (it
    may never be lifted), else the oldest."""
    return min(rows, key=lambda r: (r.source != "erasure", r.created_at), default=None)


def audit_entry(row: dict[str, Any]) -> AuditEntry:
    return typed(AuditEntry, row, "audit_log", str(row.get("envelope_id")), ("envelope",))


#: The store secret that new campaigns' lead-id salts are derived from.
LEAD_ID_SECRET = "lead-id-salt"


async def new_lead_id_salt(store: Store, campaign_id: str) -> str:
    """The lead-id salt a campaign created now gets: the store's secret keyed to the id.

    Derived, not random, so concurrent or retried creations of one campaign agree.
    """
    secret = await store.get_or_create_secret(LEAD_ID_SECRET, secrets.token_urlsafe(32))
    return campaign_salt(secret, campaign_id)
def sender_row(row: dict[str, Any]) -> SenderRow:
    return typed(SenderRow, row, "senders", str(row.get("name")))


def sender_claim(row: dict[str, Any]) -> SenderClaim:
    return typed(SenderClaim, row, "sender_sends", f"{row.get('sender')}/{row.get('seq')}")


def sender_values(row: SenderRow) -> dict[str, Any]:
    """A sender as its `senders` columns (times as ISO text): what every backend writes."""
    values = row.model_dump()
    for col in ("created_at", "paused_at", "removed_at"):
        values[col] = iso(values[col]) if values[col] is not None else None
    return values


def claim_values(claim: SenderClaim) -> dict[str, Any]:
    """A send as its `sender_sends` columns."""
    return {**claim.model_dump(), "sent_at": iso(claim.sent_at)}


def step_row(row: dict[str, Any]) -> SequenceStepRow:
    key = f"{row.get('campaign_id')}/{row.get('lead_id')}/{row.get('step')}"
    return typed(SequenceStepRow, row, "sequence_steps", key)


def as_time(value: Any) -> datetime | None:
    """A stored time (text or datetime) as an aware datetime, or None."""
    if value is None:
        return None
    return datetime.fromisoformat(iso(value))


