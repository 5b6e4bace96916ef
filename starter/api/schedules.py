"""Recurring campaigns on Temporal Schedules, as `campaign schedule ...`: create, list,
describe, pause, resume, trigger and delete. Service token only (the gate answers 403 to a
reviewer's); each answers its command's `--json` document."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from starter.api.deps import AUTHORISED, Schedules
from starter.api.errors import body_leads, invalid
from starter.manager import BadInput, Conflict, NotFound
from starter.schedules import SCHEDULE_NAME_PATTERN, BadCron, template_id_for
from starter.start_options import KbOutsideRoot, ScheduleOptions

router = APIRouter(dependencies=AUTHORISED)

ScheduleName = Annotated[str, Path(pattern=SCHEDULE_NAME_PATTERN,
                                   description="The schedule's name.")]


# -- bodies and answers -------------------------------------------------------------------------


class ScheduleRequest(ScheduleOptions):
    """`POST /schedules`: the options of `campaign schedule create` (`ScheduleOptions`: the
    cron and those of every campaign it starts), the name and the leads."""

    name: str = Field(pattern=SCHEDULE_NAME_PATTERN, description="1-40 letters, digits, '.', "
                      "'_' or '-'; each campaign it starts is named NAME-YYYYMMDD-HHMMSS.")
    leads: list[dict[str, Any]] = Field(
        min_length=1, max_length=100_000,
        description="Lead rows, stored once; `row` in `leads_rejected` is the 1-based position.")
    brief: str = Field(default="", max_length=20_000, description="What the messages are "
                       "to say.")


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
    senders: list[str] | None = Field(
        default=None, description="The senders every firing's campaign starts with, "
        "resolved at creation (null: none defined, or the webhook channel).")
    warnings: list[str] = Field(
        default_factory=list, description="A chosen sender failing its DNS check "
        "(`strict_senders` refuses instead), a named sender paused.")


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
        options = ScheduleOptions.of(body).under_kb_root(s.settings.kb_root)
    except KbOutsideRoot as err:
        raise invalid("kb", err) from err
    template_id = template_id_for(body.name)
    intake = body_leads(body.leads, template_id)
    try:
        created = await s.create(body.name, intake, options, template_id=template_id,
                                 source="api")
    except (NotFound, Conflict):
        raise
    except BadCron as err:
        raise invalid("cron", err) from err
    except BadInput as err:  # the channel's settings, the senders
        raise invalid(err.field or "channel", err) from err
    return created.to_json()


@router.get("/schedules/{name}", response_model=ScheduleResponse)
async def describe_schedule(name: ScheduleName, s: Schedules) -> dict[str, Any]:
    """One schedule (404 for an unknown name)."""
    return (await s.describe(name)).to_json()


@router.post("/schedules/{name}/pause", response_model=ScheduleActionResponse)
async def pause_schedule(name: ScheduleName, s: Schedules,
                         body: ScheduleNote | None = None) -> ScheduleActionResponse:
    """Stop firing until resumed; campaigns already started go on."""
    await s.pause(name, (body.note if body else None) or f"paused by POST /schedules/{name}/pause")
    return ScheduleActionResponse(name=name, action="pause")


@router.post("/schedules/{name}/resume", response_model=ScheduleActionResponse)
async def resume_schedule(name: ScheduleName, s: Schedules,
                          body: ScheduleNote | None = None) -> ScheduleActionResponse:
    """Fire again on the schedule's cron."""
    await s.resume(name, (body.note if body else None) or f"resumed by POST /schedules/{name}/resume")
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
