"""The drafts under review: read them a page at a time, edit one, leave a lead out of the
approval or put it back; only while the campaign awaits approval (409 otherwise)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from campaign_core.store.rows import DraftView
from starter.actor import acting_as
from starter.api.deps import AUTHORISED, Manager
from starter.limits import MAX_BODY, MAX_PAGE_NUMBER, MAX_STEP, MAX_SUBJECT, MAX_VERSION
from starter.manager import MAX_PAGE, BadInput, Conflict, NotFound

router = APIRouter(dependencies=AUTHORISED)


class DraftEditRequest(BaseModel):
    """`PATCH /campaigns/{id}/drafts/{lead_id}`: a new subject and/or body for one step."""

    model_config = ConfigDict(extra="forbid")

    step: int = Field(default=1, ge=1, le=MAX_STEP)
    subject: str | None = Field(default=None, max_length=MAX_SUBJECT)
    body: str | None = Field(default=None, max_length=MAX_BODY)
    version: int | None = Field(default=None, ge=1, le=MAX_VERSION,
                                description="The version this edit is based on: 409 if the "
                                "draft has moved on since.")
    by: str | None = Field(default=None, min_length=1, max_length=200)


class ExclusionRequest(BaseModel):
    """`POST .../exclude` and `.../include`: one step, or every step of the lead."""

    model_config = ConfigDict(extra="forbid")

    step: int | None = Field(default=None, ge=1, le=MAX_STEP)
    by: str | None = Field(default=None, min_length=1, max_length=200)


@router.get("/campaigns/{campaign_id}/drafts", response_model=list[DraftView])
async def campaign_drafts(
    campaign_id: str, m: Manager,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE_NUMBER)] = 1,  # the offset fits an int64
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> list[DraftView]:
    return await m.drafts(campaign_id, page=page, limit=limit)


@router.patch("/campaigns/{campaign_id}/drafts/{lead_id}", response_model=DraftView,
               responses={409: {"description": "Not awaiting approval, already decided, "
                                               "or a stale version"}})
async def edit_draft(campaign_id: str, lead_id: str, body: DraftEditRequest,
                     request: Request, m: Manager) -> DraftView:
    """A new version of the lead's draft, checked by the guardrails (422 with the
    reasons if they refuse it); only while the campaign awaits approval."""
    if body.subject is None and body.body is None:
        raise HTTPException(422, [{"loc": ["body", "subject"], "type": "value_error",
                                   "msg": "give a new subject, a new body, or both"}])
    return await _refusing(m.edit_draft(
        campaign_id, lead_id, step=body.step, subject=body.subject, body=body.body,
        by=acting_as(request, body.by), base_version=body.version),
        "body" if body.body is not None else "subject")


@router.post("/campaigns/{campaign_id}/drafts/{lead_id}/{action}", response_model=DraftView)
async def exclude_draft(campaign_id: str, lead_id: str,
                        action: Literal["exclude", "include"], request: Request, m: Manager,
                        body: ExclusionRequest | None = None) -> DraftView:
    """Leave the lead out of the approval (or put it back); only while awaiting approval."""
    body = body or ExclusionRequest()
    return await _refusing(m.set_excluded(
        campaign_id, lead_id, excluded=action == "exclude", step=body.step,
        by=acting_as(request, body.by)), "step")


async def _refusing(call: Awaitable[DraftView], field: str) -> DraftView:
    """A review action's answer: 404 unknown, 409 the campaign's state refuses it, 422
    invalid (a guardrail's reasons), located at `field` of the body."""
    try:
        return await call
    except (NotFound, Conflict):
        raise
    except BadInput as err:
        raise HTTPException(422, [{"loc": ["body", field], "type": "value_error",
                                   "msg": str(err)}]) from err
