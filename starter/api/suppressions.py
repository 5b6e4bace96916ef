"""The suppression list and erasure requests, as `campaign suppress` and `campaign forget`:
through the same `starter.suppression`. Service token only (the gate answers 403 to a
reviewer's)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from campaign_core.leads import valid_email
from starter import suppression
from starter.api.deps import AUTHORISED, Manager
from starter.suppression import ErasureReport, SuppressionResult

router = APIRouter(dependencies=AUTHORISED)

#: The most addresses one `POST /suppressions` may carry.
MAX_SUPPRESSIONS = 10_000

Email = Annotated[str, Field(min_length=1, max_length=320), AfterValidator(valid_email)]


class SuppressRequest(BaseModel):
    """`POST /suppressions`: addresses never to send to again, in any campaign."""

    model_config = ConfigDict(extra="forbid")

    emails: list[Email] = Field(min_length=1, max_length=MAX_SUPPRESSIONS)


class ErasureRequest(BaseModel):
    """`POST /erasure`: the address of the person whose data is to be erased."""

    model_config = ConfigDict(extra="forbid")

    email: Email



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


