"""The senders (mailboxes, issue 28), as `campaign sender ...`: add, list, pause, resume,
remove, check; through the same `starter.senders.Senders`. Service token only (the gate
answers 403 to a reviewer's): a sender holds the secrets every campaign sends with.

A body the service refuses for one field (a clear URL without CAMPAIGN_ENCRYPTION_KEY, a
DKIM key that is not one) is a 422 located at that field; an unknown name 404; a taken
one 409."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from campaign_core.senders import SenderSpec, SenderStatus
from starter.actor import acting_as
from starter.api.deps import AUTHORISED, Manager
from starter.api.errors import invalid
from starter.errors import BadInput, Conflict, NotFound
from starter.manager import CampaignManager
from starter.senders import MAX_NOTE, SenderChange, SenderCheckReport, Senders

router = APIRouter(dependencies=AUTHORISED)

SenderName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
                                 description="The sender's name.")]
UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"description": "No sender of that name (or it was removed)"}}


class SenderRequest(SenderSpec):
    """`POST /senders`: the sender as `campaign sender add` gives it. `"outbox": true` for a
    sender that writes to the outbox (no `smtp_url`); `smtp_url`, `imap_url` as URLs or
    `env:VARIABLE`, `dkim_key` as PEM text (stored encrypted, never answered)."""

    outbox: bool = Field(default=False, description="Write to the outbox instead of sending "
                         "over SMTP (as `transport: outbox`).")

    @model_validator(mode="before")
    @classmethod
    def _outbox_transport(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("outbox") is True and "transport" not in data:
            return {**data, "transport": "outbox"}
        return data


class PauseRequest(BaseModel):
    """The optional body of `POST /senders/{name}/pause`: why (shown in the list)."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=MAX_NOTE)
    by: str | None = Field(default=None, min_length=1, max_length=200,
                           description="Who pauses it (default: `api`).")


def _senders(m: CampaignManager) -> Senders:
    return Senders(m.settings, m.store, m.client)


@router.get("/senders", response_model=list[SenderStatus])
async def list_senders(m: Manager) -> list[SenderStatus]:
    """Every sender not removed, by name (as `campaign sender list --json`): `name`, `from`,
    `daily_cap`, `hourly_cap`, `today_cap`, `sent_24h`, `sent_1h`, `next_slot`,
    `bounce_rate`, `complaint_rate`, `paused`, `paused_reason`, the URLs redacted."""
    return await _senders(m).list()


@router.post("/senders", status_code=201, response_model=SenderStatus,
             responses={409: {"description": "A sender of that name exists"}})
async def add_sender(body: SenderRequest, request: Request, m: Manager) -> SenderStatus:
    """Add a sender (as `campaign sender add --json`); its secrets are sealed before they are
    stored: a URL in clear needs CAMPAIGN_ENCRYPTION_KEY (422 naming the field without it)."""
    try:
        return await _senders(m).add(body, by=acting_as(request, None))
    except (NotFound, Conflict):
        raise
    except BadInput as err:
        raise invalid(err.field or "name", err) from err


@router.post("/senders/{name}/pause", response_model=SenderChange, responses=UNKNOWN)
async def pause_sender(name: SenderName, request: Request, m: Manager,
                       body: PauseRequest | None = None) -> SenderChange:
    """Pause the sender: its sends wait, their leads keep it, until it is resumed."""
    by = acting_as(request, body.by if body else None)
    return await _senders(m).pause(name, body.note if body else None, by=by)


@router.post("/senders/{name}/resume", response_model=SenderChange, responses=UNKNOWN)
async def resume_sender(name: SenderName, request: Request, m: Manager) -> SenderChange:
    """Resume the sender: the sends its pause held go out as its capacity allows (the
    running campaigns they belong to are told, `campaigns_signalled`)."""
    return await _senders(m).resume(name, by=acting_as(request, None))


@router.delete("/senders/{name}", response_model=SenderChange, responses=UNKNOWN)
async def remove_sender(name: SenderName, request: Request, m: Manager) -> SenderChange:
    """Remove the sender: no new start uses it, and the steps still to go from it in
    running campaigns are stopped; its past sends stay on record."""
    return await _senders(m).remove(name, by=acting_as(request, None))


@router.get("/senders/{name}/check", response_model=SenderCheckReport, responses=UNKNOWN)
async def check_sender(name: SenderName, m: Manager) -> SenderCheckReport:
    """The DNS preflight of the sender's From domain (as `campaign sender check --json`):
    `mx`, `spf`, `dkim`, `dmarc`, each `ok`, `warn` or `fail` with one line of why, and the
    DKIM record to publish. `ok` is false when a check fails."""
    return await _senders(m).check(name)
