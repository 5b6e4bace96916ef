"""CampaignManager: the one place that turns user intent into workflows and signals.

The CLI and the HTTP API both go through it, so validation, deterministic ids,
idempotent starts and approval checks behave the same whichever door a user uses.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.workflow import UpdateMethodMultiParam

from campaign_core.budget import check_budget, usd
from campaign_core.decisions import IN_THE_STORE, decision_request
from campaign_core.envelope import digest
from campaign_core.events import DeliveryEvent, DeliveryEventResult, apply_delivery_event
from campaign_core.ids import (
    CAMPAIGN_ID_PATTERN,
    campaign_workflow_id,
    message_key,
    new_campaign_id,
)
from campaign_core.leads import (
    IntakeResult,
    Lead,
    RejectedRow,
    Utf8Address,
    needs_smtputf8_leads,
    rekeyed,
)
from campaign_core.metrics import process_metrics
from campaign_core.models import (
    AddLeads,
    Approval,
    CampaignStatus,
    Channel,
    DeliveryEventKind,
    DeliveryEventSignal,
    Rejection,
    Stage,
)
from campaign_core.overlap import SkippedLead, describe_skipped, without_overlap
from campaign_core.queues import WORKFLOW_QUEUE, queue_name
from campaign_core.review import CONFLICT, DraftEditRef, Exclusion
from campaign_core.sequence import describe_seconds
from campaign_core.settings import Settings
from campaign_core.store.base import Store, new_lead_id_salt
from campaign_core.store.factory import open_store
from campaign_core.store.rows import AuditEntry, CampaignRow, DraftRow, DraftView, ReportRow
from campaign_core.temporal import connect
from campaign_core.unsubscribe import BadToken, Claims, read_token, signing_key
from campaign_core.webhook_signature import DELIVERY_SECRET, WebhookSecretError, signer
from starter.errors import BadInput as BadInput
from starter.errors import Conflict as Conflict
from starter.errors import NotFound as NotFound
from starter.limits import MAX_BODY, MAX_SUBJECT
from starter.senders import one_mailbox_warning, preflight, resolve
from starter.start_options import DIGESTED_WHEN_SET, CampaignOptions, EngineTuning
from workflows.campaign import CampaignWorkflow, search_attributes
from workflows.signals import TemporalCampaignSignals

#: The most drafts one page may hold.
MAX_PAGE = 1000


def budget_option(value: float | None, field: str = "budget_usd") -> float | None:
    """A budget as given (None: no cap); BadInput naming `field` unless more than 0."""
    if value is None:
        return None
    try:
        return check_budget(value, field)
    except ValueError as err:  # "<field>: <why>": the field travels apart, for each door
        raise BadInput(str(err).removeprefix(f"{field}: "), field=field) from err


def check_campaign_id(campaign_id: str) -> str:
    if not re.match(CAMPAIGN_ID_PATTERN, campaign_id):
        raise BadInput(f"{campaign_id!r} must be 1-64 letters, digits, '.', '_' or '-'",
                       field="id")
    return campaign_id


#: The prefix of the schedules' template campaigns (`sched-NAME-<hex>`, starter/schedules.py).
#: Reserved: a start naming a template would add its leads to the template, and so to every
#: later firing of the schedule.
TEMPLATE_ID_PREFIX = "sched-"


def check_start_id(campaign_id: str) -> str:
    """An id a start may take: valid, and not in the schedules' reserved prefix (Conflict,
    409 / exit 2, whether or not such a template exists: the answer must not depend on it)."""
    check_campaign_id(campaign_id)
    if campaign_id.lower().startswith(TEMPLATE_ID_PREFIX):
        raise Conflict(f"{campaign_id!r}: ids starting with {TEMPLATE_ID_PREFIX!r} are "
                       "reserved for the templates of recurring campaigns (schedules); "
                       "choose another id", field="id")
    return campaign_id


def campaign_id_for(name: str, given: str | None) -> str:
    """The id a new campaign will have: the one given (checked), else a fresh one (never in
    the schedules' reserved prefix, whatever the name)."""
    if given:
        return check_start_id(given)
    fresh = new_campaign_id(name)
    return f"campaign-{fresh}" if fresh.startswith(TEMPLATE_ID_PREFIX) else fresh


#: The memo key on a campaign's workflow holding a digest of each option it started with, so
#: a later start with the same `--id` can tell a retry (same options) from a clash (others).
START_MEMO_KEY = "campaign_start"


def stored_digests(row: CampaignRow) -> dict[str, str]:
    """The digests of what a campaign row keeps of its start (name, brief, channel, kb,
    budget): the comparison for a campaign whose workflow carries no start memo (started
    before the memo, or by a schedule's firing)."""
    return {"name": digest(row.name), "brief": digest(row.brief), "channel": digest(row.channel),
            "kb": digest(row.kb_dir), "budget_usd": digest(row.budget_usd)}


#: Lead ids per `add_leads` Update (the model's limit): keeps each history event small.
ADD_LEADS_CHUNK = 5000

#: `control`'s actions (`campaign pause|resume|cancel`, POST /campaigns/{id}/{action}) and
#: the campaign workflow's signal each one sends.
CONTROL_SIGNALS: dict[str, Callable[[CampaignWorkflow], Awaitable[None]]] = {
    "pause": CampaignWorkflow.pause,
    "resume": CampaignWorkflow.resume,
    "cancel": CampaignWorkflow.cancel,
}

#: An Update's argument (`CampaignManager._update`). Its result is Any: the SDK types an
#: `async` handler declared with `@workflow.update(name=...)` as returning its coroutine.
A = TypeVar("A")


def _innermost(err: WorkflowUpdateFailedError) -> BaseException:
    cause: BaseException | None = err.cause
    while getattr(cause, "cause", None) is not None:
        cause = getattr(cause, "cause", None)
    return cause or err


def _root_cause(err: WorkflowUpdateFailedError) -> str:
    """The workflow's own message for a refused Update (its innermost cause)."""
    return str(_innermost(err))


def _refused(err: WorkflowUpdateFailedError) -> BadInput:
    """A refused Update as the control plane's error: Conflict for the campaign's state."""
    cause = _innermost(err)
    if getattr(cause, "type", None) == CONFLICT:
        return Conflict(str(cause))
    if getattr(cause, "type", None) == "NotFound":
        return NotFound(str(cause))
    return BadInput(str(cause))


@dataclass
class AddLeadsResult:
    campaign_id: str
    leads_accepted: int
    leads_already_present: int
    leads_rejected: list[RejectedRow] = field(default_factory=list)
    #: Accepted addresses that only an SMTP server offering SMTPUTF8 can take.
    leads_needing_smtputf8: list[Utf8Address] = field(default_factory=list)
    #: People left out: in another campaign's active sequence, or replied within the cooldown.
    leads_skipped: list[SkippedLead] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign_id,
            "leads_accepted": self.leads_accepted,
            "leads_already_present": self.leads_already_present,
            "leads_rejected": [r.model_dump() for r in self.leads_rejected],
            "leads_needing_smtputf8": [a.model_dump() for a in self.leads_needing_smtputf8],
            "leads_skipped": [s.model_dump() for s in self.leads_skipped],
        }


@dataclass
class StartResult:
    campaign_id: str
    workflow_id: str
    ui_url: str
    leads_accepted: int
    leads_rejected: list[RejectedRow] = field(default_factory=list)
    already_running: bool = False
    #: Accepted addresses that only an SMTP server offering SMTPUTF8 can take (a key
    #: added to the contract's start JSON; the others are unchanged).
    leads_needing_smtputf8: list[Utf8Address] = field(default_factory=list)
    #: People left out unless the start allows overlap (issue 27): in another campaign's
    #: active sequence, or replied within CAMPAIGN_REPLY_COOLDOWN.
    leads_skipped: list[SkippedLead] = field(default_factory=list)
    #: What the start went on despite (issue 28): a chosen sender failing its DNS check, a
    #: named sender that is paused.
    warnings: list[str] = field(default_factory=list)
    #: The senders the campaign started with (None: none, the implicit sender).
    senders: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign_id,
            "workflow_id": self.workflow_id,
            "ui_url": self.ui_url,
            "leads_accepted": self.leads_accepted,
            "leads_rejected": [r.model_dump() for r in self.leads_rejected],
            "leads_needing_smtputf8": [a.model_dump() for a in self.leads_needing_smtputf8],
            "leads_skipped": [s.model_dump() for s in self.leads_skipped],
            "senders": self.senders,
            "warnings": self.warnings,
        }


class ControlPlane:
    """What every manager of the control plane holds: settings, the store, and a
    Temporal client made on first use (so commands that need only the store work
    while Temporal is down)."""

    def __init__(
        self, settings: Settings, *, client: Client | None = None, store: Store | None = None,
        queue_prefix: str | None = None, use_search_attributes: bool = True,
    ) -> None:
        self.settings = settings
        self._client = client
        self._owns_store = store is None
        self.store = store or open_store(settings)  # connects on first use
        self.queue_prefix = settings.task_queue_prefix if queue_prefix is None else queue_prefix
        self.use_search_attributes = use_search_attributes

    async def client(self) -> Client:
        if self._client is None:
            self._client = await connect(self.settings)
        return self._client

    async def close(self) -> None:
        """Release the store's connections, if this manager opened the store."""
        if self._owns_store:
            await self.store.close()

    def check_options(self, channel: Channel, kb_dir: Path | None, *,
                      senders: list[str] | None = None) -> None:
        """Refuse (BadInput, exit 2) a channel without its settings or a missing --kb.

        The smtp and webhook channels reach real people, so they need a postal address
        for the footer; the outbox (files for review) may go without. The smtp channel
        needs CAMPAIGN_SMTP_URL only when it has no `senders` (each sends its own way).
        """
        if channel is Channel.SMTP and self.settings.smtp_url is None and not senders:
            raise BadInput("set CAMPAIGN_SMTP_URL (smtp://user:pass@host:port, or smtps:// "
                           "for TLS)", field="channel", value="smtp")
        if channel is Channel.WEBHOOK and not self.settings.webhook_url:
            raise BadInput("set CAMPAIGN_WEBHOOK_URL", field="channel", value="webhook")
        if channel is Channel.WEBHOOK:
            secret = self.settings.delivery_webhook_secret
            if secret is None:
                raise BadInput(f"set {DELIVERY_SECRET} (whsec_<base64>; it signs every post)",
                               field="channel", value="webhook")
            try:
                signer(secret.get_secret_value(), DELIVERY_SECRET)
            except WebhookSecretError as err:
                raise BadInput(str(err), field="channel", value="webhook") from err
        if channel is not Channel.OUTBOX and not (self.settings.postal_address or "").strip():
            raise BadInput("set CAMPAIGN_POSTAL_ADDRESS (the sender's physical postal address, "
                           "which CAN-SPAM requires in every message)", field="channel",
                           value=channel.value)
        if kb_dir is not None and not kb_dir.is_dir():
            raise BadInput(f"{kb_dir} is not a directory", field="kb")

    def ui_link(self, kind: str, ident: str) -> str:
        """The Web UI page of a workflow or schedule (`kind`: workflows, schedules)."""
        ns = quote(self.settings.temporal_namespace, safe="")
        return f"{self.settings.resolved_ui_url}/namespaces/{ns}/{kind}/{quote(ident, safe='')}"


class CampaignManager(ControlPlane):
    """Starts campaigns, reads their state and passes on people's decisions."""

    def ui_url(self, workflow_id: str) -> str:
        return self.ui_link("workflows", workflow_id)

    async def _handle(self, campaign_id: str) -> WorkflowHandle[Any, Any]:
        client = await self.client()
        return client.get_workflow_handle(campaign_workflow_id(campaign_id))

    async def start(
        self, intake: IntakeResult, options: CampaignOptions | None = None, *, name: str,
        campaign_id: str, tuning: EngineTuning | None = None,
    ) -> StartResult:
        """Store the campaign and its leads, then start its workflow; idempotent by id.

        `options` are the start's choices as every door builds them (the defaults when
        None); `tuning` the engine's paging, which only tests and benchmarks change. The
        leads must have been read for this `campaign_id` (`campaign_id_for`), since a lead's
        id is derived from its campaign and email.

        An id that names a campaign already started with the same options (a retry) returns
        that campaign and starts nothing. Conflict (409 / exit 2), with nothing written,
        when that campaign started with other options (naming them), when the id is in the
        store without a workflow (Temporal's retention purged it, or it never started: the
        store's row would otherwise be silently reused, dropping the options given and adding
        the leads to whatever the row is), or when it is in the schedules' reserved prefix.

        Unless `options.allow_overlap`, the people in another campaign's sequence still
        going on, or who replied within CAMPAIGN_REPLY_COOLDOWN, are left out and listed in
        `leads_skipped` (campaign_core/overlap.py); BadInput when that leaves nobody. A
        retry is recognised by the leads given, whatever was skipped.
        """
        if options is None:
            options = CampaignOptions()
        check_start_id(campaign_id)
        senders = await resolve(self.store, options.channel, options.senders)
        self.check_options(options.channel, options.kb_dir(), senders=senders)
        if not intake.leads:
            raise BadInput("no valid lead to start a campaign with")
        cid = campaign_id
        wid = campaign_workflow_id(cid)
        client = await self.client()
        wanted = options.digests(intake, name=name)
        existing = await self.store.get_campaign(cid)
        described = await self._describe(cid)
        if described is not None:
            return await self._same_start(cid, described, existing, wanted)
        if existing is not None:
            raise Conflict(f"campaign {cid!r} is in the store but Temporal has no workflow "
                           "for it (its history was deleted after the retention period, or it "
                           "never started): it cannot be started again; choose another id",
                           field="id")
        warnings = await preflight(self.settings, self.store, senders,
                                   strict=options.strict_senders)
        if (crowded := one_mailbox_warning(options.channel, senders, len(intake.leads))):
            warnings.append(crowded)
        skipped = await self._overlap(cid, intake.leads, options.allow_overlap)
        stored = options.stored()
        await self.store.upsert_campaign(
            campaign_id=cid, name=name, workflow_id=wid,
            lead_id_salt=await new_lead_id_salt(self.store, cid), **stored)
        row = await self.store.get_campaign(cid)
        if row is None or stored_digests(row) != {
                key: wanted[key] for key in ("name", "brief", "channel", "budget_usd")} | {
                "kb": digest(stored["kb_dir"])}:
            # Another start of this id, with other options, stored its row first: ours was
            # not written (the upsert keeps the first row), and neither are our leads.
            raise Conflict(f"campaign {cid!r} is being started by another request with "
                           "other options; choose another id", field="id")
        gone = {s.email for s in skipped}
        leads = [lead for lead in await self._keyed(cid, intake) if lead.email not in gone]
        await self.store.upsert_leads(cid, leads)
        inp = options.model_copy(update={"senders": senders}).campaign_input(
            campaign_id=cid, name=name, queue_prefix=self.queue_prefix,
            use_search_attributes=self.use_search_attributes, tuning=tuning)
        follow_ups = inp.follow_up_seconds
        try:
            await client.start_workflow(
                CampaignWorkflow.run,
                inp,
                id=wid,
                task_queue=queue_name(WORKFLOW_QUEUE, self.queue_prefix),
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=f"Campaign {name!r} ({len(leads)} leads, {inp.channel.value})",
                static_details=(
                    f"**Campaign** `{cid}`\n\n* leads: {len(leads)}\n"
                    f"* channel: {inp.channel.value}\n{options.describe()}"
                    + (f"\n* LLM budget: {usd(options.budget_usd)}"
                       if options.budget_usd is not None else "")
                    + (f"\n* follow-ups: {', '.join(map(describe_seconds, follow_ups))}"
                       + (" (a company reply stops colleagues)" if inp.stop_on_company_reply
                          else "")
                       if follow_ups else "")
                    + (f"\n* senders: {', '.join(senders)}" if senders else "")
                ),
                search_attributes=search_attributes(cid, "campaign", Stage.DRAFTING)
                if self.use_search_attributes else None,
                memo={START_MEMO_KEY: {"options": wanted}},
            )
        except WorkflowAlreadyStartedError:
            described = await self._describe(cid)  # a concurrent start of the same id won
            if described is None:
                raise Conflict(f"campaign {cid!r} was started meanwhile by another "
                               "request, and is gone already; choose another id",
                               field="id") from None
            return await self._same_start(cid, described, row, wanted)
        return StartResult(cid, wid, self.ui_url(wid), len(leads), list(intake.rejected),
                           leads_needing_smtputf8=needs_smtputf8_leads(leads),
                           leads_skipped=skipped, warnings=warnings, senders=senders)

    async def _overlap(self, campaign_id: str, leads: list[Lead], allow: bool
                       ) -> list[SkippedLead]:
        """Who of `leads` to leave out (none when overlap is allowed); BadInput naming
        `allow_overlap` when that is every one of them."""
        if allow:
            return []
        kept, skipped = await without_overlap(self.store, leads, campaign_id=campaign_id,
                                              cooldown=self.settings.reply_cooldown_delta)
        if not kept:
            raise BadInput(f"every lead was skipped ({describe_skipped(skipped)}); allow "
                           "overlap to keep them", field="allow_overlap")
        return skipped

    async def _keyed(self, campaign_id: str, intake: IntakeResult) -> list[Lead]:
        """The intake's leads with the ids of the stored campaign's lead-id scheme: salted
        for campaigns created with a salt, the plain hash for older ones."""
        row = await self.store.get_campaign(campaign_id)
        return rekeyed(intake, campaign_id, row.lead_id_salt if row else None).leads

    async def _describe(self, campaign_id: str) -> WorkflowExecutionDescription | None:
        """The campaign's workflow as Temporal describes it, or None when it has none."""
        handle = await self._handle(campaign_id)
        try:
            return await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    async def _describe_status(self, campaign_id: str) -> WorkflowExecutionStatus | None:
        """The workflow's execution status, or None when Temporal has no such workflow."""
        desc = await self._describe(campaign_id)
        return None if desc is None else desc.status

    async def _same_start(
        self, campaign_id: str, described: WorkflowExecutionDescription,
        row: CampaignRow | None, wanted: dict[str, str],
    ) -> StartResult:
        """The campaign a start with an existing id names, if it was started with the
        options `wanted` (their digests): a retry, answered idempotently. Otherwise Conflict
        naming the options that differ. The workflow's start memo is the record; a workflow
        without one (from before it, or a schedule's firing) is compared on what the store's
        row keeps (name, brief, channel, kb, budget)."""
        wid = campaign_workflow_id(campaign_id)
        if row is None:
            raise Conflict(f"campaign {campaign_id!r} has a workflow in Temporal but is not "
                           "in this store (another deployment's?); choose another id",
                           field="id")
        memo = await described.memo_value(START_MEMO_KEY, default=None)
        options = memo.get("options") if isinstance(memo, dict) else None
        have: dict[str, str] = options if isinstance(options, dict) else stored_digests(row)
        differ = [key for key in have if wanted.get(key) != have[key]]
        if isinstance(options, dict):  # a memo leaves out an option at its default
            differ += [key for key in DIGESTED_WHEN_SET if key in wanted and key not in have]
        if differ:
            raise Conflict(f"campaign {campaign_id!r} already exists with other options "
                           f"({', '.join(differ)} differ): starting it again must repeat its "
                           "options (leads are added to the running campaign, not by a new "
                           "start); choose another id for a new campaign", field="id")
        counts = await self.store.counts(campaign_id)
        return StartResult(campaign_id, wid, self.ui_url(wid), counts.leads, [], True)

    async def status(self, campaign_id: str) -> CampaignStatus:
        """Stage from the workflow (or the store once it has closed), counts and the reply
        figures from the store (`outcomes.status_figures`)."""
        campaign = await self.store.get_campaign(campaign_id)
        exec_status = await self._describe_status(campaign_id)
        if campaign is None and exec_status is None:
            raise NotFound(f"unknown campaign {campaign_id!r}")
        stage = campaign.stage if campaign else Stage.FAILED
        paused, error, reason = False, None, None
        if exec_status == WorkflowExecutionStatus.RUNNING:
            handle = await self._handle(campaign_id)
            try:
                live = await handle.query(CampaignWorkflow.status,
                                          rpc_timeout=timedelta(seconds=10))
                stage, paused, error = live.stage, live.paused, live.error
                reason = live.paused_reason
            except RPCError:
                pass  # no worker answering right now: the stored stage is the next best
        elif exec_status == WorkflowExecutionStatus.CANCELED:
            stage = Stage.CANCELLED
        elif exec_status not in (None, WorkflowExecutionStatus.COMPLETED):
            stage = Stage.FAILED
        counts, replies = await self.store.status_figures(campaign_id)
        spend = await self.store.spend(campaign_id)
        waiting, next_slot = await self.store.capacity_waits(campaign_id)
        paused_senders = {}
        for name in sorted(await self.store.sender_assignment_counts(campaign_id)):
            sender = await self.store.get_sender(name)
            if sender is not None and sender.paused and sender.removed_at is None:
                paused_senders[name] = sender.paused_reason or "paused"
        return CampaignStatus(campaign_id=campaign_id, stage=stage, counts=counts,
                              paused=paused, error=error, paused_reason=reason,
                              spend_usd=spend.spent_usd, budget_usd=spend.budget_usd,
                              writer=await self.writer(campaign_id),
                              replies_by_intent=replies.replies_by_intent,
                              positive_reply_rate=replies.positive_reply_rate,
                              steps=replies.steps, waiting_for_capacity=waiting,
                              next_slot=next_slot, paused_senders=paused_senders)

    async def writer(self, campaign_id: str) -> str | None:
        """Who wrote the campaign's drafts, read from the first draft's provenance (the
        workers' settings decide it, not this process's): `offline` or `<provider>:<model>`."""
        first = await self.store.list_drafts(campaign_id, limit=1)
        if not first:
            return None
        source = str(first[0].provenance.get("source", ""))
        if source == "llm:offline":
            return "offline"
        model = first[0].provenance.get("model")
        return source.removeprefix("llm:") + (f":{model}" if model else "") or None

    async def drafts(self, campaign_id: str, *, page: int = 1, limit: int = 50) -> list[DraftView]:
        """A page of the campaign's drafts (`limit` a page, pages from 1), in lead order."""
        if page < 1:
            raise BadInput(f"page: {page} must be 1 or more")
        if not 1 <= limit <= MAX_PAGE:
            raise BadInput(f"limit: {limit} must be between 1 and {MAX_PAGE}")
        await self._require(campaign_id)
        rows = await self.store.list_drafts(campaign_id, offset=(page - 1) * limit, limit=limit)
        return [DraftView.of(d) for d in rows]

    # -- reviewers' edits and exclusions ----------------------------------------------

    async def _draft(self, campaign_id: str, lead_id: str, step: int) -> DraftRow:
        await self._require(campaign_id)
        if await self.store.get_lead(campaign_id, lead_id) is None:
            raise NotFound(f"lead: {lead_id!r} is not in campaign {campaign_id!r}")
        draft = await self.store.get_draft(campaign_id, lead_id, step)
        if draft is None:
            raise NotFound(f"lead: {lead_id!r} has no draft for step {step}")
        return draft

    async def edit_draft(
        self, campaign_id: str, lead_id: str, *, step: int = 1, subject: str | None = None,
        body: str | None = None, by: str, base_version: int | None = None,
    ) -> DraftView:
        """Make a new version of a draft, checked by the guardrails; returns it.

        The text is stored first as a pending version; the campaign workflow's
        `edit_draft` Update then takes only its id, refuses it unless the campaign
        awaits approval undecided (Conflict), and has the store agent check and apply
        it (BadInput with the guardrail's reasons; Conflict when `base_version` is stale).
        """
        if step < 1:
            raise BadInput(f"step: {step} must be 1 or more")
        if subject is None and body is None:
            raise BadInput("subject, body: give a new subject, a new body, or both")
        for name, text, limit in (("subject", subject, MAX_SUBJECT), ("body", body, MAX_BODY)):
            if text is not None and len(text) > limit:  # before the text is stored
                raise BadInput(f"{name}: {len(text):,} characters; an edit may have at most "
                               f"{limit:,}")
        if not by.strip():
            raise BadInput("by: say who edits")
        if base_version is not None and base_version < 1:
            raise BadInput(f"version: {base_version} must be 1 or more")
        draft = await self._draft(campaign_id, lead_id, step)
        if base_version is not None and base_version != draft.version:
            raise Conflict(f"version: the draft is at version {draft.version}, not "
                           f"{base_version}: someone edited it meanwhile; reload it")
        handle = await self._running_handle(campaign_id, "edit drafts of")
        edit_id = f"edit-{uuid.uuid4().hex}"
        await self.store.add_draft_edit(
            edit_id=edit_id, campaign_id=campaign_id, lead_id=lead_id, step=step,
            subject=subject, body=body, base_version=base_version, by=by.strip())
        try:
            await handle.execute_update(  # type: ignore[unused-coroutine]  # see `A`
                CampaignWorkflow.edit_draft,
                DraftEditRef(campaign_id=campaign_id, edit_id=edit_id, lead_id=lead_id, step=step))
        except WorkflowUpdateFailedError as err:
            refused = _refused(err)
            stored = await self.store.get_draft_edit(edit_id)
            if stored is not None and stored.status == "refused" and stored.reason:
                refused = type(refused)(stored.reason)  # the guardrail's reasons, kept out of history
            else:
                await self.store.refuse_draft_edit(edit_id, str(refused))
            raise refused from err
        return DraftView.of(await self._draft(campaign_id, lead_id, step))

    async def set_excluded(
        self, campaign_id: str, lead_id: str, *, excluded: bool, step: int | None = None, by: str,
    ) -> DraftView:
        """Leave a lead's draft (of `step`, or every step) out of the approval, or put it
        back; through the workflow's `set_excluded` Update, so only while awaiting approval.
        Returns the draft of `step` (or step 1)."""
        if step is not None and step < 1:
            raise BadInput(f"step: {step} must be 1 or more")
        if not by.strip():
            raise BadInput("by: say who excludes")
        await self._draft(campaign_id, lead_id, step or 1)
        request = await self.store.save_envelope(decision_request(
            campaign_id, "exclude" if excluded else "include", by.strip(), None, [lead_id]))
        await self._update(campaign_id, CampaignWorkflow.set_excluded, Exclusion(
            campaign_id=campaign_id, lead_id=lead_id, step=step, excluded=excluded,
            by=IN_THE_STORE, request_id=request),
            action="exclude drafts of" if excluded else "include drafts of")
        return DraftView.of(await self._draft(campaign_id, lead_id, step or 1))

    async def report(self, campaign_id: str) -> list[ReportRow]:
        await self._require(campaign_id)
        return await self.store.report(campaign_id)

    async def audit(self, campaign_id: str, lead_id: str | None = None) -> list[AuditEntry]:
        """The campaign's trail of agent steps and decisions (only `lead_id`'s, if given)."""
        await self._require(campaign_id)
        return await self.store.audit(campaign_id, lead_id)

    async def list_campaigns(self, limit: int = 200) -> list[CampaignRow]:
        """The most recently created campaigns first (the store's stage, not the live one)."""
        if not 1 <= limit <= MAX_PAGE:
            raise BadInput(f"limit: {limit} must be between 1 and {MAX_PAGE}")
        return await self.store.list_campaigns(limit)

    async def _require(self, campaign_id: str) -> CampaignRow:
        campaign = await self.store.get_campaign(campaign_id)
        if campaign is None:
            raise NotFound(f"unknown campaign {campaign_id!r}")
        return campaign

    async def _running_handle(self, campaign_id: str, action: str) -> WorkflowHandle[Any, Any]:
        """The campaign's handle if it still runs; else a Conflict naming its stage."""
        await self._require(campaign_id)
        exec_status = await self._describe_status(campaign_id)
        if exec_status != WorkflowExecutionStatus.RUNNING:
            status = await self.status(campaign_id)
            raise Conflict(f"campaign {campaign_id!r} is {status.stage.value}: cannot {action} it")
        return await self._handle(campaign_id)

    async def _update(self, campaign_id: str,
                      update: UpdateMethodMultiParam[[CampaignWorkflow, A], Any], arg: A, *,
                      action: str) -> Any:
        """The campaign workflow's `update` (`CampaignWorkflow.approve_update`) with `arg`;
        its refusal as Conflict or BadInput, and a run that is not (or no longer) running as
        a Conflict that says the campaign cannot `action` (`approve leads of`) now."""
        handle = await self._running_handle(campaign_id, action)
        try:
            return await handle.execute_update(update, arg)
        except WorkflowUpdateFailedError as err:
            raise _refused(err) from err
        except RPCError as err:
            # The run closed between the check above and the Update's arrival (a small
            # campaign can finish delivering in that instant): the server then answers
            # "update ... not found" or "workflow execution already completed".
            if err.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                raise
            status = await self.status(campaign_id)
            raise Conflict(f"campaign {campaign_id!r} is {status.stage.value}: cannot "
                           f"{action} it") from err

    async def approve(
        self, campaign_id: str, *, lead_ids: list[str] | None = None, by: str = "unknown",
        note: str | None = None, send_passing: bool = False,
    ) -> int:
        """Approve all drafts, or only `lead_ids`; returns how many drafts are approved.

        Goes through the workflow's `approve` Update, so a decision the workflow would
        refuse (still drafting, already decided, unknown lead ids) is refused here with
        the workflow's own message.
        """
        Approval(lead_ids=lead_ids or None, by=by, note=note)  # the same checks, before storing
        await self._running_handle(campaign_id, "approve")
        request = await self.store.save_envelope(
            decision_request(campaign_id, "approve", by, note, lead_ids or None))
        approval = Approval(lead_ids=lead_ids or None, by=IN_THE_STORE, request_id=request,
                            send_passing=send_passing and bool(lead_ids))
        return int(await self._update(campaign_id, CampaignWorkflow.approve_update, approval,
                                      action="approve"))

    async def approve_leads(self, campaign_id: str, lead_ids: list[str], *, by: str,
                            note: str | None = None, send_passing: bool = False) -> int:
        """Approve a selection of leads during the review; the campaign still awaits its
        decision (`approve`), which sends them with the rest. Held leads (a failed step) are
        approved only with `send_passing` (their passing steps). Returns how many leads are
        approved so far. Through the workflow's `approve_leads` Update: only while
        awaiting approval."""
        if not lead_ids:
            raise BadInput("lead_ids: name the leads to approve")
        Approval(lead_ids=lead_ids, by=by, note=note)
        await self._running_handle(campaign_id, "approve leads of")
        unknown = [lid for lid in lead_ids if await self.store.get_draft(campaign_id, lid) is None]
        if unknown:
            raise NotFound(f"lead: no draft for lead id(s) {', '.join(unknown[:20])}")
        request = await self.store.save_envelope(
            decision_request(campaign_id, "approve_leads", by, note, lead_ids))
        return int(await self._update(campaign_id, CampaignWorkflow.approve_leads, Approval(
            lead_ids=lead_ids, by=IN_THE_STORE, request_id=request, send_passing=send_passing),
            action="approve leads of"))

    async def held_leads(self, campaign_id: str) -> list[str]:
        """The leads a failed step holds: a campaign approval does not send them."""
        await self._require(campaign_id)
        return await self.store.held_leads(campaign_id)

    async def reject(self, campaign_id: str, *, by: str = "unknown", reason: str | None = None) -> None:
        """Reject the campaign; who and why are stored, not put into history (as `approve`)."""
        Rejection(by=by, reason=reason)
        await self._running_handle(campaign_id, "reject")
        request = await self.store.save_envelope(
            decision_request(campaign_id, "reject", by, reason))
        await self._update(campaign_id, CampaignWorkflow.reject_update,
                           Rejection(by=IN_THE_STORE, request_id=request), action="reject")

    async def add_leads(self, campaign_id: str, intake: IntakeResult, *,
                        allow_overlap: bool = False) -> AddLeadsResult:
        """Add leads to a campaign that is still drafting; they are drafted like the rest.

        Leads already in the campaign (same normalised email, hence same id) are not
        added twice. The new leads are stored first, then handed to the workflow's
        `add_leads` Update (ids only, in chunks). Should the campaign leave drafting in
        between, the Update refuses and the stored leads are marked `failed` with the
        reason, so the record says what happened to every lead. Unless `allow_overlap`,
        the people in another campaign's active sequence or who replied within the cooldown
        are left out (`leads_skipped`), as at the start.
        """
        await self._require(campaign_id)
        if not intake.leads:
            raise BadInput("no valid lead to add")
        handle = await self._running_handle(campaign_id, "add leads to")
        live = await handle.query(CampaignWorkflow.status)
        if live.stage is not Stage.DRAFTING:
            raise BadInput(f"campaign {campaign_id!r} is {live.stage.value}: leads can be added "
                           "only while it is drafting")
        keyed = await self._keyed(campaign_id, intake)
        new = [lead for lead in keyed
               if await self.store.get_lead(campaign_id, lead.lead_id) is None]
        present = len(intake.leads) - len(new)
        skipped: list[SkippedLead] = []
        if new and not allow_overlap:
            new, skipped = await without_overlap(self.store, new, campaign_id=campaign_id,
                                                 cooldown=self.settings.reply_cooldown_delta)
        result = AddLeadsResult(campaign_id=campaign_id, leads_accepted=len(new),
                                leads_already_present=present,
                                leads_rejected=list(intake.rejected),
                                leads_needing_smtputf8=needs_smtputf8_leads(new),
                                leads_skipped=skipped)
        if not new:
            return result
        await self.store.upsert_leads(campaign_id, new)
        ids = [lead.lead_id for lead in new]
        for start in range(0, len(ids), ADD_LEADS_CHUNK):
            chunk = ids[start:start + ADD_LEADS_CHUNK]
            try:
                await handle.execute_update(CampaignWorkflow.add_leads, AddLeads(lead_ids=chunk))
            except WorkflowUpdateFailedError as err:
                reason = f"not drafted: {_root_cause(err)}"
                for lid in ids[start:]:
                    await self.store.set_lead_status(campaign_id, lid, "failed", reason)
                raise BadInput(f"{_root_cause(err)} ({len(ids) - start} lead(s) recorded as "
                               "failed, not drafted)") from err
        return result

    async def control(self, campaign_id: str, action: str, *,
                      budget_usd: float | None = None) -> None:
        """pause, resume or cancel a running campaign (a signal; takes effect at once).

        `resume` with `budget_usd` first sets the campaign's LLM spend cap to it (refused
        below what is already spent), then resumes: drafting the spend cap paused goes on.
        """
        signal = CONTROL_SIGNALS.get(action)
        if signal is None:
            raise BadInput(f"unknown action {action!r}")
        if budget_usd is not None and action != "resume":
            raise BadInput(f"only `resume` takes a budget, not `{action}`", field="budget_usd")
        budget_option(budget_usd)
        handle = await self._running_handle(campaign_id, action)
        if budget_usd is not None:
            spend = await self.store.spend(campaign_id)
            if budget_usd < spend.spent_usd:
                raise Conflict(f"{usd(budget_usd)} is less than the "
                               f"{usd(spend.spent_usd)} campaign {campaign_id!r} has already "
                               "spent; give more to let drafting go on", field="budget_usd")
            await self.store.set_budget(campaign_id, budget_usd)
        await handle.signal(signal)

    # -- what recipients tell us ----------------------------------------------------------

    async def _unsubscribe_claims(self, token: str) -> tuple[Claims, str]:
        """The verified claims of an unsubscribe token and the address they name."""
        try:
            claims = read_token(await signing_key(self.settings, self.store), token)
        except BadToken as err:
            raise BadInput(f"token: {err}") from err
        lead = await self.store.get_lead(claims.campaign_id, claims.lead_id)
        if lead is None:
            raise NotFound("token: the message it came from is no longer on record")
        return claims, lead.email

    async def unsubscribe_address(self, token: str) -> str:
        """The address an unsubscribe link was made for, changing nothing: what the link's
        confirmation page shows (a GET must not act: mail link scanners fetch every link)."""
        return (await self._unsubscribe_claims(token))[1]

    async def unsubscribe(self, token: str, *,
                          one_click: bool = False) -> str:
        """Suppress the address an unsubscribe link was made for; returns the address.
        `one_click`: the RFC 8058 POST of a mail client (the entry's source `one_click`),
        not the confirmation page's button (`unsubscribe_link`).

        Suppression is checked at the moment of sending, so this stops every pending
        send to the address, in every campaign, from now on. Idempotent: a second
        POST (the page's button pressed twice, or after the one-click POST) changes nothing.
        """
        claims, email = await self._unsubscribe_claims(token)
        await self.store.add_suppressions(
            [email], f"unsubscribe ({claims.campaign_id})",
            source="one_click" if one_click else "unsubscribe_link")
        key = message_key(claims.campaign_id, claims.lead_id, claims.step)
        new = await self.store.record_delivery_event(
            event_id=f"unsubscribe:{key}", kind=DeliveryEventKind.UNSUBSCRIBE.value,
            email=email, source="unsubscribe", campaign_id=claims.campaign_id,
            lead_id=claims.lead_id, message_key=key)
        if new:
            process_metrics().delivery_event("unsubscribe")
        return email

    async def delivery_event(self, event: DeliveryEvent, *, source: str) -> DeliveryEventResult:
        """Record a bounce or complaint, suppress the address, and tell its campaign
        (`campaign_core.events.apply_delivery_event`, shared with bounces that arrive as mail);
        the send is counted against its sender, which pauses itself past
        CAMPAIGN_SENDER_MAX_BOUNCE_RATE or 0.1% complaints."""
        return await apply_delivery_event(
            self.store, event, source=source, tell=self._tell_campaign,
            max_bounce_rate=self.settings.sender_max_bounce_rate)

    async def _tell_campaign(self, campaign_id: str, signal: DeliveryEventSignal) -> bool:
        """Signal a running campaign (its delivery orchestrator while that runs, so the
        campaign's own history does not grow with every bounce); False when it is no longer
        running (nothing to pause)."""
        return await TemporalCampaignSignals(await self.client()).delivery_event(campaign_id,
                                                                                signal)
