"""What the outside sends us, signed as Standard Webhooks: replies (`/webhooks/inbound`),
delivery events (`bounce`, `complaint`, `events`) and campaign starts (`campaign`). A
`webhook-id` is acted on once; a call that fails releases it for the sender's retry."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ValidationError

from campaign_core.events import DeliveryEvent, DeliveryEventResult
from campaign_core.replies import InboundResult
from starter.api.campaigns import StartRequest, StartResponse, start
from starter.api.deps import AUTHORISED, Manager, verified_webhook
from starter.manager import CampaignManager
from starter.replies import InboundBodyError, process_inbound, read_inbound_body

log = logging.getLogger("campaign.api")

router = APIRouter(dependencies=AUTHORISED)


#: Webhook sources that report what happened to a message after it was sent.
EVENT_SOURCES = ("bounce", "complaint", "events")
#: The webhook source that starts a campaign (an external trigger, e.g. a CRM export).
CAMPAIGN_SOURCE = "campaign"
#: The most events one webhook call may carry.
MAX_EVENTS = 1000


class WebhookSeenBefore(BaseModel):
    """The answer to a `webhook-id` already handled: nothing was done again."""

    webhook_id: str
    duplicate: Literal[True] = True


@router.post("/webhooks/inbound", response_model=list[InboundResult] | WebhookSeenBefore,
             responses={401: {"description": "Signature headers missing, wrong, or more "
                                             "than 5 minutes old"},
                        200: {"description": "What was done with each message; or, for a "
                                             "webhook-id handled before, nothing done again"}})
async def inbound_mail(request: Request, m: Manager, response: Response) -> Any:
    """Replies that came back (a person's, automatic ones, bounces as DSNs): one message
    in the neutral shape `{"from", "to", "subject", "message_id", "in_reply_to",
    "references", "headers", "text"}` or a list, signed as Standard Webhooks. Each is
    matched to its lead, recorded once, and signalled to its campaign."""
    raw = await request.body()
    webhook_id = verified_webhook(request, raw)
    if not await m.store.claim_webhook_id(webhook_id):
        log.info("webhook inbound: webhook-id already handled; nothing done again")
        response.status_code = 200
        return WebhookSeenBefore(webhook_id=webhook_id)
    try:
        return await _act_on_inbound(m, raw)
    except BaseException:
        await m.store.release_webhook_id(webhook_id)  # the sender's retry is acted on
        raise


@router.post("/webhooks/{source}",
             response_model=list[DeliveryEventResult] | StartResponse | WebhookSeenBefore,
             responses={401: {"description": "Signature headers missing, wrong, or more "
                                             "than 5 minutes old"},
                        200: {"description": "This webhook-id was handled before: "
                                             "nothing done again"}})
async def webhook(source: str, request: Request, m: Manager, response: Response) -> Any:
    """External triggers: `bounce`, `complaint`, `events` (delivery events, one or a
    list) and `campaign` (a start request, as `POST /campaigns`), signed as Standard
    Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`)."""
    if source not in (*EVENT_SOURCES, CAMPAIGN_SOURCE):
        raise HTTPException(404, f"/webhooks/{source}: unknown source; use one of "
                                 f"{', '.join((*EVENT_SOURCES, CAMPAIGN_SOURCE))}")
    raw = await request.body()
    webhook_id = verified_webhook(request, raw)
    if not await m.store.claim_webhook_id(webhook_id):
        log.info("webhook %s: webhook-id already handled; nothing done again", source)
        response.status_code = 200
        return WebhookSeenBefore(webhook_id=webhook_id)
    try:
        return await _act_on_webhook(m, source, raw, response)
    except BaseException:
        await m.store.release_webhook_id(webhook_id)  # the sender's retry is acted on
        raise


async def _act_on_webhook(m: CampaignManager, source: str, raw: bytes, response: Response) -> Any:
    """Act on one verified webhook call: start a campaign, or record delivery events."""
    try:
        data = json.loads(raw)
    except ValueError as err:
        raise HTTPException(422, [{"loc": ["body"], "type": "json_invalid",
                                   "msg": f"not JSON: {err}"}]) from err
    if source == CAMPAIGN_SOURCE:
        try:
            body = StartRequest.model_validate(data)
        except ValidationError as err:
            raise HTTPException(422, _errors(err)) from err
        response.status_code = 201
        return await start(m, body, response)
    events = _events(data, default_type=source if source != "events" else None)
    results: list[DeliveryEventResult] = []
    for event in events:
        results.append(await m.delivery_event(event, source=source))
    log.info("webhook %s: %d event(s), %d new", source, len(results),
             sum(not r.duplicate for r in results))
    return [r.model_dump() for r in results]


async def _act_on_inbound(m: CampaignManager, raw: bytes) -> list[dict[str, Any]]:
    """Validate every message first (422 naming the field; nothing is recorded), then act.
    The body is read on a worker thread: /health and the heartbeats go on meanwhile."""
    try:
        messages = await asyncio.to_thread(read_inbound_body, raw)
    except InboundBodyError as err:
        raise HTTPException(422, err.errors) from err
    results = await process_inbound(m.store, await m.client(), messages,
                                    trusted_authserv_id=m.settings.trusted_authserv_id,
                                    prefix=m.queue_prefix)
    log.info("webhook inbound: %d message(s), %d matched", len(results),
             sum(r.status == "matched" for r in results))
    return [r.model_dump() for r in results]


def _errors(err: ValidationError, *where: str | int) -> list[dict[str, Any]]:
    """pydantic's errors, located under `body` as FastAPI does for its own bodies."""
    return [{"loc": ["body", *where, *e["loc"]], "type": e["type"], "msg": e["msg"]}
            for e in err.errors(include_url=False, include_input=False)]


def _events(data: Any, *, default_type: str | None) -> list[DeliveryEvent]:
    """One event or a list of them; every invalid one named by its position and field."""
    items = data if isinstance(data, list) else [data]
    if len(items) > MAX_EVENTS:
        raise HTTPException(422, [{"loc": ["body"], "type": "too_long",
                                   "msg": f"at most {MAX_EVENTS} events per call"}])
    events: list[DeliveryEvent] = []
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if isinstance(item, dict) and default_type:
            item = {"type": default_type, **item}
        try:
            events.append(DeliveryEvent.model_validate(item))
        except ValidationError as err:
            errors += _errors(err, *([i] if isinstance(data, list) else []))
    if errors:
        raise HTTPException(422, errors[:100])
    return events
