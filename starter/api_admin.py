"""The API routes for what the CLI does beside running one campaign: the campaign list, the
audit trail, the suppression list, erasure requests and recurring campaigns.

Each goes through the same code as its command (`CampaignManager`, `starter.suppression`,
`ScheduleManager`) and answers its `--json` document. The campaign list and the audit
trail are review routes (a reviewer's token reaches them); suppressions, erasure and
schedules need the service token (starter/api_gate.py answers 403 to a reviewer's).
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from campaign_core.leads import parse_lead_rows, valid_email
from campaign_core.models import Channel, Stage
from campaign_core.send_window import zone
from campaign_core.store.rows import AuditEntry, CampaignRow
from starter import suppression
from starter.api_deps import Manager
from starter.manager import MAX_PAGE, BadInput, Conflict, NotFound, parse_duration
from starter.schedules import SCHEDULE_NAME_PATTERN, BadCron, ScheduleManager, template_id_for
from starter.start_options import ApprovalTimeout, CampaignOptions, KbOutsideRoot
from starter.suppression import ErasureReport, SuppressionResult

router = APIRouter()

#: The most addresses one `POST /suppressions` may carry.
MAX_SUPPRESSIONS = 10_000

Email = Annotated[str, Field(min_length=1, max_length=320), AfterValidator(valid_email)]
ScheduleName = Annotated[str, Path(pattern=SCHEDULE_NAME_PATTERN,
                                   description="The schedule's name.")]


# -- bodies and answers -------------------------------------------------------------------------


class CampaignSummary(BaseModel):
    """One campaign in `GET /campaigns`: the stored stage (`GET /campaigns/{id}` has the live one)."""

    campaign_id: str
    name: str
    channel: str
    stage: Stage
    workflow_id: str
    knowledge_base: str | None = Field(description="The knowledge-base folder's name.")
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, row: CampaignRow) -> CampaignSummary:
        kb = PurePath(row.kb_dir).name if row.kb_dir else None
        return cls(campaign_id=row.campaign_id, name=row.name, channel=row.channel,
                   stage=row.stage, workflow_id=row.workflow_id, knowledge_base=kb,
                   created_at=row.created_at, updated_at=row.updated_at)


class SuppressRequest(BaseModel):
    """`POST /suppressions`: addresses never to send to again, in any campaign."""

    model_config = ConfigDict(extra="forbid")

    emails: list[Email] = Field(min_length=1, max_length=MAX_SUPPRESSIONS)


class ErasureRequest(BaseModel):
    """`POST /erasure`: the address of the person whose data is to be erased."""

    model_config = ConfigDict(extra="forbid")

    email: Email


class ScheduleRequest(CampaignOptions):
    """`POST /schedules`: the same choices as `campaign schedule create`."""

    name: str = Field(pattern=SCHEDULE_NAME_PATTERN, description="1-40 letters, digits, '.', "
                      "'_' or '-'; each campaign it starts is named NAME-YYYYMMDD-HHMMSS.")
    cron: str = Field(min_length=1, max_length=200, description="When to fire, e.g. "
                      "'0 9 * * MON'; @daily, @weekly and '@every 24h' work too.")
    cron_timezone: str = Field(default="UTC", max_length=100,
                               description="IANA zone the cron expression is read in.")
    leads: list[dict[str, Any]] = Field(
        min_length=1, max_length=100_000,
        description="Lead rows, stored once; `row` in `leads_rejected` is the 1-based position.")
    brief: str = Field(default="", max_length=20_000)
    channel: Channel = Channel.OUTBOX
    approval_timeout: ApprovalTimeout
    paused: bool = Field(default=False, description="Create it paused (resume to start).")
    total_budget_usd: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="Cap on what all the schedule's campaigns spend on the LLM together: once "
        "spent, no firing starts a campaign and the schedule pauses.")

    @field_validator("cron_timezone")
    @classmethod
    def _known_cron_zone(cls, value: str) -> str:
        zone(value)
        return value


class ScheduleNote(BaseModel):
    """`POST /schedules/{name}/pause` and `/resume`: why (shown in the list and the Web UI)."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=500)


class ScheduleCreatedResponse(BaseModel):
    """As `campaign schedule create --json`."""

    name: str
    schedule_id: str
    template_id: str
    cron: str
    timezone: str
    paused: bool
    next_runs: list[str]
    ui_url: str
    leads_accepted: int
    leads_rejected: list[dict[str, Any]]


class ScheduleResponse(BaseModel):
    """One schedule, as an item of `campaign schedule list --json`."""

    name: str
    schedule_id: str
    cron: str
    timezone: str
    paused: bool
    note: str | None
    next_runs: list[str]
    recent_campaigns: list[str]
    template_id: str | None
    leads: int | None
    channel: str | None
    ui_url: str
    total_budget_usd: float | None = None


class ScheduleActionResponse(BaseModel):
    name: str
    action: str


# -- dependencies -------------------------------------------------------------------------------


async def current_schedules(m: Manager) -> ScheduleManager:
    """A `ScheduleManager` on the app's Temporal client and store (503 if Temporal is down)."""
    return ScheduleManager(m.settings, client=await m.client(), store=m.store,
                           queue_prefix=m.queue_prefix,
                           use_search_attributes=m.use_search_attributes)


Schedules = Annotated[ScheduleManager, Depends(current_schedules)]


def _invalid(field: str, err: Exception) -> HTTPException:
    return HTTPException(422, [{"loc": ["body", field], "type": "value_error", "msg": str(err)}])


# -- campaigns: the list and the audit trail (review routes) ------------------------------------


@router.get("/campaigns", response_model=list[CampaignSummary])
async def list_campaigns(
    m: Manager, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 200,
) -> list[CampaignSummary]:
    """The campaigns, newest first (at most `limit`)."""
    return [CampaignSummary.of(row) for row in await m.list_campaigns(limit)]


@router.get("/campaigns/{campaign_id}/audit", response_model=list[AuditEntry])
async def campaign_audit(
    campaign_id: str, m: Manager,
    lead_id: Annotated[str | None, Query(max_length=200, description="Only this lead's trail.")]
    = None,
) -> list[AuditEntry]:
    """The trail of agent steps and decisions, with provenance (as `campaign audit --json`)."""
    return await m.audit(campaign_id, lead_id)


# -- the suppression list and erasure (service token only) --------------------------------------


@router.post("/suppressions", response_model=SuppressionResult)
async def add_suppressions(body: SuppressRequest, m: Manager) -> SuppressionResult:
    """Add addresses to the suppression list (as `campaign suppress --json`): never sent to
    again, in any campaign; an address already there is counted, not added twice."""
    return await suppression.suppress(m.store, body.emails)


@router.post("/erasure", response_model=ErasureReport)
async def erase_person(body: ErasureRequest, m: Manager) -> ErasureReport:
    """Erase everything stored about the person, in every campaign, and keep the address
    suppressed (as `campaign forget --yes --json`; idempotent)."""
    return await suppression.forget(m.settings, m.store, body.email)


# -- schedules (service token only) -------------------------------------------------------------


@router.get("/schedules", response_model=list[ScheduleResponse])
async def list_schedules(s: Schedules) -> list[dict[str, Any]]:
    """Every recurring campaign of this deployment, by name (as `campaign schedule list --json`)."""
    return [summary.to_json() for summary in await s.list()]


@router.post("/schedules", status_code=201, response_model=ScheduleCreatedResponse,
             responses={409: {"description": "A schedule of that name exists"}})
async def create_schedule(body: ScheduleRequest, s: Schedules) -> dict[str, Any]:
    """Store the leads once and start a new campaign from them on every cron tick (as
    `campaign schedule create --json`); the knowledge base lies under CAMPAIGN_KB_ROOT."""
    try:
        timeout = parse_duration(body.approval_timeout)
    except BadInput as err:
        raise _invalid("approval_timeout", err) from err
    try:
        options = body.start_kwargs(s.settings.kb_root)
    except KbOutsideRoot as err:
        raise _invalid("kb", err) from err
    template_id = template_id_for(body.name)
    intake = parse_lead_rows(enumerate(body.leads, start=1), template_id)
    if not intake.leads:
        raise HTTPException(422, [
            {"loc": ["body", "leads", r.row - 1], "type": "value_error", "msg": r.error}
            for r in intake.rejected[:100]
        ] or [{"loc": ["body", "leads"], "type": "value_error", "msg": "no valid lead"}])
    try:
        created = await s.create(
            body.name, intake, template_id=template_id, cron=body.cron,
            cron_timezone=body.cron_timezone, brief=body.brief, channel=body.channel,
            approval_timeout_seconds=timeout, paused=body.paused, source="api",
            total_budget_usd=body.total_budget_usd, **options)
    except (NotFound, Conflict):
        raise
    except BadCron as err:
        raise _invalid("cron", err) from err
    except BadInput as err:  # the channel's settings
        raise _invalid("channel", err) from err
    return created.to_json()


@router.get("/schedules/{name}", response_model=ScheduleResponse)
async def describe_schedule(name: ScheduleName, s: Schedules) -> dict[str, Any]:
    """One schedule (404 for an unknown name)."""
    return (await s.describe(name)).to_json()


@router.post("/schedules/{name}/pause", response_model=ScheduleActionResponse)
async def pause_schedule(name: ScheduleName, s: Schedules,
                         body: ScheduleNote | None = None) -> ScheduleActionResponse:
    """Stop firing until resumed; campaigns already started go on."""
    await s.pause(name, body.note if body else None)
    return ScheduleActionResponse(name=name, action="pause")


@router.post("/schedules/{name}/resume", response_model=ScheduleActionResponse)
async def resume_schedule(name: ScheduleName, s: Schedules,
                          body: ScheduleNote | None = None) -> ScheduleActionResponse:
    """Fire again on the schedule's cron."""
    await s.resume(name, body.note if body else None)
    return ScheduleActionResponse(name=name, action="resume")


@router.post("/schedules/{name}/trigger", status_code=202, response_model=ScheduleActionResponse)
async def trigger_schedule(name: ScheduleName, s: Schedules) -> ScheduleActionResponse:
    """Fire once now (even while paused): one new campaign from the schedule's leads."""
    await s.trigger(name)
    return ScheduleActionResponse(name=name, action="trigger")


@router.delete("/schedules/{name}", response_model=ScheduleActionResponse)
async def delete_schedule(name: ScheduleName, s: Schedules) -> ScheduleActionResponse:
    """Delete the schedule; the campaigns it started go on."""
    await s.delete(name)
    return ScheduleActionResponse(name=name, action="delete")
