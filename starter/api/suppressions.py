"""The suppression list and erasure requests, as `campaign suppress`, `suppressions`,
`unsuppress` and `forget`: through the same `starter.suppression`. Service token only (the
gate answers 403 to a reviewer's)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from campaign_core.leads import valid_email
from campaign_core.store.rows import SuppressionRow
from starter import suppression
from starter.actor import acting_as
from starter.api.deps import AUTHORISED, Manager
from starter.suppression import MAX_LIFT_REASON, ErasureReport, SuppressionResult, Unsuppressed

router = APIRouter(dependencies=AUTHORISED)

#: The most addresses one `POST /suppressions` may carry.
MAX_SUPPRESSIONS = 10_000

Email = Annotated[str, Field(min_length=1, max_length=320), AfterValidator(valid_email)]


class SuppressRequest(BaseModel):
    """`POST /suppressions`: addresses never to send to again, in any campaign."""

    model_config = ConfigDict(extra="forbid")

    emails: list[Email] = Field(min_length=1, max_length=MAX_SUPPRESSIONS)


class UnsuppressRequest(BaseModel):
    """The optional body of `DELETE /suppressions/{email}` (or give both as query parameters)."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, min_length=1, max_length=MAX_LIFT_REASON,
                               description="Why the suppression is lifted (audited).")
    by: str | None = Field(default=None, min_length=1, max_length=200,
                           description="Who lifts it (default: `api`).")


class ErasureRequest(BaseModel):
    """`POST /erasure`: the address of the person whose data is to be erased."""

    model_config = ConfigDict(extra="forbid")

    email: Email



@router.post("/suppressions", response_model=SuppressionResult)
async def add_suppressions(body: SuppressRequest, m: Manager) -> SuppressionResult:
    """Add addresses to the suppression list (as `campaign suppress --json`): never sent to
    again, in any campaign; an address already there is counted, not added twice."""
    return await suppression.suppress(m.store, body.emails)


@router.get("/suppressions", response_model=list[SuppressionRow])
async def list_suppressions(m: Manager) -> list[SuppressionRow]:
    """The suppression list, newest first (as `campaign suppressions --json`): each entry's
    `email`, `reason`, `source` and `created_at`."""
    return await suppression.list_suppressions(m.store)


@router.delete("/suppressions/{email}", response_model=Unsuppressed,
               responses={404: {"description": "The address is not on the suppression list"},
                          409: {"description": "The address is an erased person's: its "
                                               "suppression is never lifted"}})
async def lift_suppression(
    request: Request, m: Manager,
    email: Annotated[str, Path(min_length=1, max_length=320)],
    reason: Annotated[str | None, Query(min_length=1, max_length=MAX_LIFT_REASON,
                                        description="Why it is lifted (or in the body).")] = None,
    by: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    body: UnsuppressRequest | None = None,
) -> Unsuppressed:
    """Lift an address's suppression (as `campaign unsuppress EMAIL --reason TEXT`): campaigns
    may email it again. `reason` is required (query or body); the audit entries name `by`
    (the caller's, default `api`). 404 when the address is not on the list, 409 for an
    erased person's address."""
    try:
        valid_email(email)
    except ValueError as err:
        raise HTTPException(422, [{"loc": ["path", "email"], "type": "value_error",
                                   "msg": str(err)}]) from err
    given = reason or (body.reason if body else None)
    if not given or not given.strip():
        raise HTTPException(422, [{"loc": ["query", "reason"], "type": "missing",
                                   "msg": "say why the suppression is lifted (reason, in the "
                                          "query or the body)"}])
    who = acting_as(request, by or (body.by if body else None))
    return await suppression.unsuppress(m.store, email, reason=given, by=who)


@router.post("/erasure", response_model=ErasureReport)
async def erase_person(body: ErasureRequest, m: Manager) -> ErasureReport:
    """Erase everything stored about the person, in every campaign, and keep the address
    suppressed (as `campaign forget --yes --json`; idempotent)."""
    return await suppression.forget(m.settings, m.store, body.email)


