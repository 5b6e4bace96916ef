"""The campaigns: start one, list them, follow one (status, report, audit), decide (approve
or reject), add leads, pause, resume or cancel. As the CLI's commands, through the same
`CampaignManager`; which of these a reviewer's token reaches is listed in gate.py."""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from campaign_core.ids import CAMPAIGN_ID_PATTERN
from campaign_core.models import CampaignStatus, Stage
from campaign_core.overlap import SkippedLead
from campaign_core.store.rows import AuditEntry, CampaignRow, ReportRow
from starter.actor import acting_as
from starter.api.deps import AUTHORISED, Manager
from starter.api.errors import body_leads
from starter.manager import (
    MAX_PAGE,
    BadInput,
    CampaignManager,
    Conflict,
    NotFound,
    campaign_id_for,
)
from starter.start_options import CampaignOptions, KbOutsideRoot

router = APIRouter(dependencies=AUTHORISED)


# -- request and response bodies --------------------------------------------------------------


class StartRequest(CampaignOptions):
    """`POST /campaigns` and the campaign webhook: the options of `campaign start`
    (`CampaignOptions`, shared with `POST /schedules`), the name, the leads and an id."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    leads: list[dict[str, Any]] = Field(
        min_length=1, max_length=100_000,
        description="Lead rows, as the CSV's columns; `row` in `leads_rejected` is the "
        "1-based position in this list.",
    )
    brief: str = Field(default="", max_length=20_000, description="What the messages are "
                       "to say.")
    id: str | None = Field(default=None, pattern=CAMPAIGN_ID_PATTERN,
                           description="Makes the start idempotent.")


class StartResponse(BaseModel):
    campaign_id: str
    workflow_id: str
    ui_url: str
    leads_accepted: int
    leads_rejected: list[dict[str, Any]]
    leads_needing_smtputf8: list[dict[str, Any]] = Field(
        default_factory=list, description="Accepted addresses not ASCII before the @ "
        "(`row`, `email`): delivered only if the SMTP server offers SMTPUTF8.")
    leads_skipped: list[SkippedLead] = Field(
        default_factory=list, description="People left out (unless `allow_overlap`): "
        "`reason` `active_sequence` (in the sequence still going on of `campaign_id`) or "
        "`replied` (replied to `campaign_id` within CAMPAIGN_REPLY_COOLDOWN).")
    senders: list[str] | None = Field(
        default=None, description="The senders the campaign started with (null: no sender "
        "is defined, or the webhook channel: CAMPAIGN_FROM as before senders).")
    warnings: list[str] = Field(
        default_factory=list, description="What the start went on despite: a chosen sender "
        "failing its DNS check (`strict_senders` refuses instead), a named sender paused.")


class AddLeadsRequest(BaseModel):
    """`POST /campaigns/{id}/leads`: more lead rows for a campaign still drafting."""

    model_config = ConfigDict(extra="forbid")

    leads: list[dict[str, Any]] = Field(min_length=1, max_length=100_000)
    allow_overlap: bool = Field(default=False, description="Keep the people in another "
                                "campaign's active sequence or who replied within the "
                                "cooldown (skipped otherwise, as at the start).")


class ApprovalRequest(BaseModel):
    """`POST /campaigns/{id}/approval`: approve (all, or some leads) or reject."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    lead_ids: list[str] | None = Field(default=None, min_length=1, max_length=100_000)
    by: str | None = Field(default=None, min_length=1, max_length=200,
                           description="Who decides (a reviewer's token names the reviewer "
                           "instead; default `api`).")
    note: str | None = Field(default=None, max_length=2000)
    send_passing: bool = Field(
        default=False, description="With `lead_ids`: send the passing steps of those leads "
        "even where another step failed (that step ends `failed`).")


class ApprovalResponse(BaseModel):
    campaign_id: str
    decision: str
    approved: int | None = None
    held: list[str] = Field(default_factory=list, description="Leads held by a failed step: "
                            "not approved, so not sent.")


class ControlRequest(BaseModel):
    """The optional body of `POST /campaigns/{id}/resume`: a new LLM spend cap first."""

    model_config = ConfigDict(extra="forbid")

    budget_usd: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="Set the campaign's LLM budget to this (USD) before resuming; refused "
        "(409) below what it has already spent.")


class ControlResponse(BaseModel):
    campaign_id: str
    action: str


class AddLeadsResponse(BaseModel):
    campaign_id: str
    leads_accepted: int
    leads_already_present: int
    leads_rejected: list[dict[str, Any]]
    leads_needing_smtputf8: list[dict[str, Any]] = Field(
        default_factory=list, description="As in the start response.")
    leads_skipped: list[SkippedLead] = Field(default_factory=list,
                                             description="As in the start response.")


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


# -- the routes: `approval` and `leads` come before `{action}`, which would match them too ------


@router.get("/campaigns", response_model=list[CampaignSummary])
async def list_campaigns(
    m: Manager, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 200,
) -> list[CampaignSummary]:
    """The campaigns, newest first (at most `limit`)."""
    return [CampaignSummary.of(row) for row in await m.list_campaigns(limit)]


@router.post("/campaigns", status_code=201, response_model=StartResponse,
             responses={200: {"description": "The campaign with this id already runs, "
                                             "started with the same options"},
                        409: {"description": "The id is taken (other options, or no "
                                             "workflow) or reserved for schedules"}})
async def start_campaign(body: StartRequest, m: Manager, response: Response) -> dict[str, Any]:
    return await start(m, body, response)


@router.get("/campaigns/{campaign_id}", response_model=CampaignStatus)
async def campaign_status(campaign_id: str, m: Manager) -> CampaignStatus:
    return await m.status(campaign_id)


@router.get("/campaigns/{campaign_id}/report", response_model=list[ReportRow])
async def campaign_report(campaign_id: str, m: Manager) -> list[ReportRow]:
    return await m.report(campaign_id)


@router.get("/campaigns/{campaign_id}/audit", response_model=list[AuditEntry])
async def campaign_audit(
    campaign_id: str, m: Manager,
    lead_id: Annotated[str | None, Query(max_length=200, description="Only this lead's trail.")]
    = None,
) -> list[AuditEntry]:
    """The trail of agent steps and decisions, with provenance (as `campaign audit --json`)."""
    return await m.audit(campaign_id, lead_id)


@router.post("/campaigns/{campaign_id}/approval", status_code=202,
             response_model=ApprovalResponse)
async def campaign_approval(campaign_id: str, body: ApprovalRequest, request: Request,
                            m: Manager) -> ApprovalResponse:
    by = acting_as(request, body.by)
    if body.decision == "approve":
        if body.send_passing and not body.lead_ids:
            raise HTTPException(422, [{"loc": ["body", "send_passing"], "type": "value_error",
                                       "msg": "send_passing needs the leads it applies to "
                                              "(lead_ids)"}])
        n = await m.approve(campaign_id, lead_ids=body.lead_ids, by=by, note=body.note,
                            send_passing=body.send_passing)
        held = await m.held_leads(campaign_id)
        if body.lead_ids:
            held = [h for h in held if h in set(body.lead_ids)]
        return ApprovalResponse(campaign_id=campaign_id, decision="approve", approved=n,
                                held=held)
    if body.lead_ids:
        raise HTTPException(422, [{"loc": ["body", "lead_ids"], "type": "value_error",
                                   "msg": "a rejection is for the whole campaign: "
                                          "send no lead_ids"}])
    await m.reject(campaign_id, by=by, reason=body.note)
    return ApprovalResponse(campaign_id=campaign_id, decision="reject")


@router.post("/campaigns/{campaign_id}/leads", status_code=202, response_model=AddLeadsResponse)
async def campaign_add_leads(campaign_id: str, body: AddLeadsRequest,
                             m: Manager) -> dict[str, Any]:
    """Add leads to a campaign that is still drafting (as `campaign add-leads`)."""
    intake = body_leads(body.leads, campaign_id)
    return (await m.add_leads(campaign_id, intake,
                              allow_overlap=body.allow_overlap)).to_json()


@router.post("/campaigns/{campaign_id}/{action}", status_code=202,
             response_model=ControlResponse)
async def campaign_control(campaign_id: str, action: Literal["pause", "resume", "cancel"],
                           m: Manager, body: ControlRequest | None = None) -> ControlResponse:
    budget = body.budget_usd if body is not None else None
    if budget is not None and action != "resume":
        raise HTTPException(422, [{"loc": ["body", "budget_usd"], "type": "value_error",
                                   "msg": f"only resume takes a budget, not {action}"}])
    await m.control(campaign_id, action, budget_usd=budget)
    return ControlResponse(campaign_id=campaign_id, action=action)


# -- helpers ------------------------------------------------------------------------------------


async def start(m: CampaignManager, body: StartRequest, response: Response) -> dict[str, Any]:
    """Validate the leads like the CLI does, then start (idempotently with an id)."""
    try:
        options = CampaignOptions.of(body).under_kb_root(m.settings.kb_root)
    except KbOutsideRoot as err:
        raise HTTPException(422, [{"loc": ["body", "kb"], "type": "value_error",
                                   "msg": str(err)}]) from err
    cid = campaign_id_for(body.name, body.id)
    intake = body_leads(body.leads, cid)
    try:
        result = await m.start(intake, options, name=body.name, campaign_id=cid)
    except (NotFound, Conflict):  # 409: the id is taken with other options, or reserved
        raise
    except BadInput as err:
        raise HTTPException(422, [{"loc": ["body", *([err.field] if err.field else [])],
                                   "type": "value_error", "msg": str(err)}]) from err
    if result.already_running:
        response.status_code = 200
    return result.to_json()
