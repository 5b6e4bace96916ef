"""The HTTP API (`campaign api`): the CLI's commands over HTTP, plus what the outside calls.

Same `CampaignManager` as the CLI; bearer-token auth on every route but `/health` and
`/unsubscribe`, signed webhooks. See "HTTP API and unsubscribe" in docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from standardwebhooks import Webhook

from campaign_core.events import DeliveryEvent, DeliveryEventResult
from campaign_core.ids import CAMPAIGN_ID_PATTERN
from campaign_core.leads import parse_lead_rows
from campaign_core.models import CampaignStatus, Channel
from campaign_core.replies import InboundResult
from campaign_core.sequence import MAX_FOLLOW_UPS, FollowUpError, follow_up_seconds
from campaign_core.settings import Settings
from campaign_core.store.rows import DraftView, ReportRow
from campaign_core.temporal import TemporalUnreachable
from campaign_core.webhook_signature import (
    INBOUND_SECRET,
    SignatureError,
    WebhookSecretError,
    signer,
    verify,
)
from starter import unsubscribe_page as unsub_pages
from starter.actor import acting_as
from starter.api_admin import router as admin_router
from starter.api_deps import Manager, authorised
from starter.api_gate import RequestGate
from starter.api_metrics import RequestMetrics
from starter.limits import MAX_BODY, MAX_PAGE_NUMBER, MAX_STEP, MAX_SUBJECT, MAX_VERSION
from starter.manager import (
    MAX_PAGE,
    BadInput,
    CampaignManager,
    Conflict,
    NotFound,
    campaign_id_for,
    parse_duration,
)
from starter.replies import InboundBodyError, process_inbound, read_inbound_body
from starter.review_auth import TOKEN_PREFIX, Reviewers
from starter.review_pages import install as install_review_pages
from starter.start_options import CampaignOptions, KbOutsideRoot

log = logging.getLogger("campaign.api")

#: Webhook sources that report what happened to a message after it was sent.
EVENT_SOURCES = ("bounce", "complaint", "events")
#: The webhook source that starts a campaign (an external trigger, e.g. a CRM export).
CAMPAIGN_SOURCE = "campaign"
#: The most events one webhook call may carry.
MAX_EVENTS = 1000


# -- request and response bodies --------------------------------------------------------------


class StartRequest(CampaignOptions):
    """`POST /campaigns`: the same choices as `campaign start` (the knowledge base, send
    window and pacing come from `CampaignOptions`, shared with `POST /schedules`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    leads: list[dict[str, Any]] = Field(
        min_length=1, max_length=100_000,
        description="Lead rows, as the CSV's columns; `row` in `leads_rejected` is the "
        "1-based position in this list.",
    )
    brief: str = Field(default="", max_length=20_000)
    channel: Channel = Channel.OUTBOX
    id: str | None = Field(default=None, pattern=CAMPAIGN_ID_PATTERN,
                           description="Makes the start idempotent.")
    approval_timeout: str = Field(default="72h", pattern=r"^\s*\d+\s*[smhdwSMHDW]?\s*$",
                                  description="e.g. 72h, 3d, 90m.")
    follow_ups: list[str] = Field(
        default_factory=list, max_length=MAX_FOLLOW_UPS,
        description="Follow-up delays, each after the previous step's send: 30s, 2m, 12h, 3d.")
    stop_on_company_reply: bool = Field(
        default=False, description="A reply from a company domain stops its other leads too.")


class StartResponse(BaseModel):
    campaign_id: str
    workflow_id: str
    ui_url: str
    leads_accepted: int
    leads_rejected: list[dict[str, Any]]
    leads_needing_smtputf8: list[dict[str, Any]] = Field(
        default_factory=list, description="Accepted addresses not ASCII before the @ "
        "(`row`, `email`): delivered only if the SMTP server offers SMTPUTF8.")


class AddLeadsRequest(BaseModel):
    """`POST /campaigns/{id}/leads`: more lead rows for a campaign still drafting."""

    model_config = ConfigDict(extra="forbid")

    leads: list[dict[str, Any]] = Field(min_length=1, max_length=100_000)


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


class UnsubscribeResponse(BaseModel):
    unsubscribed: bool


class AddLeadsResponse(BaseModel):
    campaign_id: str
    leads_accepted: int
    leads_already_present: int
    leads_rejected: list[dict[str, Any]]
    leads_needing_smtputf8: list[dict[str, Any]] = Field(
        default_factory=list, description="As in the start response.")


class WebhookSeenBefore(BaseModel):
    """The answer to a `webhook-id` already handled: nothing was done again."""

    webhook_id: str
    duplicate: Literal[True] = True


class HealthResponse(BaseModel):
    status: Literal["ok", "unavailable"]
    temporal: str
    store: str




# -- dependencies: `authorised` and `Manager` live in starter/api_deps.py (shared by routers) --


# -- the app ------------------------------------------------------------------------------------


def create_app(
    settings: Settings, *, manager: CampaignManager | None = None, insecure_dev: bool = False,
    manager_factory: Callable[[Settings], CampaignManager] = CampaignManager,
) -> FastAPI:
    """The API for `settings`; refuses to exist without a token unless `insecure_dev`."""
    token = settings.api_token.get_secret_value() if settings.api_token else None
    if not token and not insecure_dev:
        raise BadInput("CAMPAIGN_API_TOKEN is not set: set it (every route but /health and "
                       "/unsubscribe needs it), or pass --insecure-dev on a private machine")
    try:
        inbound = (signer(settings.webhook_secret.get_secret_value(), INBOUND_SECRET)
                   if settings.webhook_secret else None)
    except WebhookSecretError as err:
        raise BadInput(str(err)) from err
    state: dict[str, CampaignManager] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["manager"] = manager or manager_factory(settings)
        yield
        if manager is None:
            await state["manager"].store.close()

    app = FastAPI(
        title="Campaign engine API",
        description="Start campaigns, follow them, approve delivery; webhooks for bounces "
        "and complaints; one-click unsubscribe.",
        version="1",
        lifespan=lifespan,
    )

    app.state.token = token
    app.state.managers = state
    async def reviewer_named(given: str) -> str | None:
        found = await Reviewers(state["manager"].store).by_token(given)
        return found.name if found else None

    # Outside the routing: no token, no parsing; no body past the cap (see api_gate).
    app.add_middleware(RequestGate, token=token, max_body=settings.api_max_body,
                       reviewer=reviewer_named, reviewer_prefix=TOKEN_PREFIX)
    install_review_pages(app)  # /review/...: the reviewers' pages (starter/review_pages.py)
    # GET /campaigns, audit, suppressions, erasure, schedules (starter/api_admin.py)
    app.include_router(admin_router, dependencies=[Depends(authorised)])
    app.add_middleware(RequestMetrics)  # outermost: refusals by the gate count too
    auth = [Depends(authorised)]

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, err: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=404)

    @app.exception_handler(BadInput)
    async def _conflict(_: Request, err: BadInput) -> JSONResponse:
        # Valid JSON asking for something the campaign's state refuses (e.g. approving
        # while drafting, or a second decision): a conflict with that state.
        return JSONResponse({"detail": str(err)}, status_code=409)

    @app.exception_handler(TemporalUnreachable)
    async def _unreachable(_: Request, err: TemporalUnreachable) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=503)

    # -- campaigns ------------------------------------------------------------------------

    @app.post("/campaigns", status_code=201, response_model=StartResponse, dependencies=auth,
              responses={200: {"description": "The campaign with this id already runs, "
                                              "started with the same options"},
                         409: {"description": "The id is taken (other options, or no "
                                              "workflow) or reserved for schedules"}})
    async def start_campaign(body: StartRequest, m: Manager, response: Response) -> dict[str, Any]:
        return await _start(m, body, response)

    @app.get("/campaigns/{campaign_id}", response_model=CampaignStatus, dependencies=auth)
    async def campaign_status(campaign_id: str, m: Manager) -> CampaignStatus:
        return await m.status(campaign_id)

    @app.get("/campaigns/{campaign_id}/drafts", response_model=list[DraftView], dependencies=auth)
    async def campaign_drafts(
        campaign_id: str, m: Manager,
        page: Annotated[int, Query(ge=1, le=MAX_PAGE_NUMBER)] = 1,  # the offset fits an int64
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    ) -> list[DraftView]:
        return await m.drafts(campaign_id, page=page, limit=limit)

    @app.patch("/campaigns/{campaign_id}/drafts/{lead_id}", response_model=DraftView,
               dependencies=auth, responses={409: {"description": "Not awaiting approval, "
                                                   "already decided, or a stale version"}})
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

    @app.post("/campaigns/{campaign_id}/drafts/{lead_id}/{action}", response_model=DraftView,
              dependencies=auth)
    async def exclude_draft(campaign_id: str, lead_id: str,
                            action: Literal["exclude", "include"], request: Request, m: Manager,
                            body: ExclusionRequest | None = None) -> DraftView:
        """Leave the lead out of the approval (or put it back); only while awaiting approval."""
        body = body or ExclusionRequest()
        return await _refusing(m.set_excluded(
            campaign_id, lead_id, excluded=action == "exclude", step=body.step,
            by=acting_as(request, body.by)), "step")

    @app.get("/campaigns/{campaign_id}/report", response_model=list[ReportRow], dependencies=auth)
    async def campaign_report(campaign_id: str, m: Manager) -> list[ReportRow]:
        return await m.report(campaign_id)

    @app.post("/campaigns/{campaign_id}/approval", status_code=202,
              response_model=ApprovalResponse, dependencies=auth)
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

    @app.post("/campaigns/{campaign_id}/leads", status_code=202, response_model=AddLeadsResponse,
              dependencies=auth)
    async def campaign_add_leads(campaign_id: str, body: AddLeadsRequest,
                                 m: Manager) -> dict[str, Any]:
        """Add leads to a campaign that is still drafting (as `campaign add-leads`)."""
        intake = parse_lead_rows(enumerate(body.leads, start=1), campaign_id)
        if not intake.leads:
            raise HTTPException(422, [
                {"loc": ["body", "leads", r.row - 1], "type": "value_error", "msg": r.error}
                for r in intake.rejected[:100]])
        return (await m.add_leads(campaign_id, intake)).to_json()

    @app.post("/campaigns/{campaign_id}/{action}", status_code=202,
              response_model=ControlResponse, dependencies=auth)
    async def campaign_control(campaign_id: str, action: Literal["pause", "resume", "cancel"],
                               m: Manager, body: ControlRequest | None = None) -> ControlResponse:
        budget = body.budget_usd if body is not None else None
        if budget is not None and action != "resume":
            raise HTTPException(422, [{"loc": ["body", "budget_usd"], "type": "value_error",
                                       "msg": f"only resume takes a budget, not {action}"}])
        await m.control(campaign_id, action, budget_usd=budget)
        return ControlResponse(campaign_id=campaign_id, action=action)

    # -- webhooks ---------------------------------------------------------------------------

    @app.post("/webhooks/inbound", dependencies=auth,
              response_model=list[InboundResult] | WebhookSeenBefore,
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
        webhook_id = _verified(inbound, raw, request)
        if not await m.store.claim_webhook_id(webhook_id):
            log.info("webhook inbound: webhook-id already handled; nothing done again")
            response.status_code = 200
            return WebhookSeenBefore(webhook_id=webhook_id)
        try:
            return await _act_on_inbound(m, raw)
        except BaseException:
            await m.store.release_webhook_id(webhook_id)  # the sender's retry is acted on
            raise

    @app.post("/webhooks/{source}", dependencies=auth,
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
        webhook_id = _verified(inbound, raw, request)
        if not await m.store.claim_webhook_id(webhook_id):
            log.info("webhook %s: webhook-id already handled; nothing done again", source)
            response.status_code = 200
            return WebhookSeenBefore(webhook_id=webhook_id)
        try:
            return await _act_on_webhook(m, source, raw, response)
        except BaseException:
            await m.store.release_webhook_id(webhook_id)  # the sender's retry is acted on
            raise

    # -- unsubscribe ------------------------------------------------------------------------

    @app.get("/unsubscribe", response_class=HTMLResponse)
    async def unsubscribe_page(m: Manager, token: str = "") -> HTMLResponse:
        """The link in every message's footer and List-Unsubscribe header: a confirmation
        page whose button POSTs; it changes nothing, since mail link scanners fetch every
        link (starter/unsubscribe_page.py)."""
        try:
            email = await m.unsubscribe_address(token)
        except BadInput as err:
            return unsub_pages.refused(str(err), 404 if isinstance(err, NotFound) else 400)
        return unsub_pages.confirm(email, token)

    @app.post("/unsubscribe", response_model=UnsubscribeResponse,
              responses={200: {"content": {"text/html": {}},
                               "description": "JSON for RFC 8058 one-click; a page for the "
                                              "confirmation page's button (confirm=page)"}})
    async def unsubscribe_one_click(request: Request, m: Manager,
                                    token: str = "") -> UnsubscribeResponse | HTMLResponse:
        """RFC 8058 one-click (the mail client POSTs `List-Unsubscribe=One-Click`), or the
        confirmation page's button: either suppresses the address."""
        page = await unsub_pages.from_the_page(request)
        try:
            email = await m.unsubscribe(token)
        except BadInput as err:
            code = 404 if isinstance(err, NotFound) else 400
            if page:
                return unsub_pages.refused(str(err), code)
            raise HTTPException(code, str(err)) from err
        if page:
            return unsub_pages.done(email)
        return UnsubscribeResponse(unsubscribed=True)

    # -- health -------------------------------------------------------------------------------

    @app.get("/health", response_model=HealthResponse,
             responses={503: {"model": HealthResponse, "description": "Temporal or the store "
                                                                     "does not answer"}})
    async def health(m: Manager, response: Response) -> HealthResponse:
        """200 when Temporal and the store both answer; 503 naming the one that does not."""
        checks: dict[str, str] = {}
        try:
            client = await m.client()
            await client.service_client.check_health()
            checks["temporal"] = "ok"
        except Exception as err:  # any failure means "not healthy", reported, not raised
            checks["temporal"] = f"unreachable: {type(err).__name__}"
        try:
            await m.store.schema_version()
            checks["store"] = "ok"
        except Exception as err:
            checks["store"] = f"unreachable: {type(err).__name__}"
        ok = all(v == "ok" for v in checks.values())
        response.status_code = 200 if ok else 503
        return HealthResponse(status="ok" if ok else "unavailable", **checks)

    return app


# -- serving ------------------------------------------------------------------------------------


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's proxy options for `campaign api` and `campaign dev`: X-Forwarded-Proto and
    -For are believed only from CAMPAIGN_TRUSTED_PROXIES. Said explicitly, not left to
    uvicorn's default (127.0.0.1): the scheme they give decides whether the review pages'
    session cookie is Secure, so a TLS proxy elsewhere must be named to be believed."""
    return {"proxy_headers": True, "forwarded_allow_ips": settings.trusted_proxies}


# -- helpers ------------------------------------------------------------------------------------


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


async def _start(m: CampaignManager, body: StartRequest, response: Response) -> dict[str, Any]:
    """Validate the leads like the CLI does, then start (idempotently with an id)."""
    try:
        timeout = parse_duration(body.approval_timeout)
    except BadInput as err:
        raise HTTPException(422, [{"loc": ["body", "approval_timeout"], "type": "value_error",
                                   "msg": str(err)}]) from err
    delays: list[int] = []
    for i, text in enumerate(body.follow_ups):
        try:
            delays.append(follow_up_seconds(text))
        except FollowUpError as err:
            raise HTTPException(422, [{"loc": ["body", "follow_ups", i], "type": "value_error",
                                       "msg": str(err)}]) from err
    try:
        options = body.start_kwargs(m.settings.kb_root)  # kb, send window, pacing
    except KbOutsideRoot as err:
        raise HTTPException(422, [{"loc": ["body", "kb"], "type": "value_error",
                                   "msg": str(err)}]) from err
    cid = campaign_id_for(body.name, body.id)
    intake = parse_lead_rows(enumerate(body.leads, start=1), cid)
    if not intake.leads:
        raise HTTPException(422, [
            {"loc": ["body", "leads", r.row - 1], "type": "value_error", "msg": r.error}
            for r in intake.rejected[:100]
        ] or [{"loc": ["body", "leads"], "type": "value_error", "msg": "no valid lead"}])
    try:
        result = await m.start(intake, name=body.name, brief=body.brief, channel=body.channel,
                               campaign_id=cid, approval_timeout_seconds=timeout,
                               follow_up_seconds=delays,
                               stop_on_company_reply=body.stop_on_company_reply, **options)
    except (NotFound, Conflict):  # 409: the id is taken with other options, or reserved
        raise
    except BadInput as err:
        raise HTTPException(422, [{"loc": ["body"], "type": "value_error",
                                   "msg": str(err)}]) from err
    if result.already_running:
        response.status_code = 200
    return result.to_json()


async def _act_on_webhook(m: CampaignManager, source: str, raw: bytes, response: Response) -> Any:
    """Act on one verified webhook call: start a campaign, or record delivery events."""
    try:
        data = json.loads(raw)
    except ValueError as err:
        raise HTTPException(422, [{"loc": ["body"], "type": "json_invalid",
                                   "msg": f"not JSON: {err}"}]) from err
    if source == CAMPAIGN_SOURCE:
        try:
            start = StartRequest.model_validate(data)
        except ValidationError as err:
            raise HTTPException(422, _errors(err)) from err
        response.status_code = 201
        return await _start(m, start, response)
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
                                    trusted_authserv_id=m.settings.trusted_authserv_id)
    log.info("webhook inbound: %d message(s), %d matched", len(results),
             sum(r.status == "matched" for r in results))
    return [r.model_dump() for r in results]


def _verified(inbound: Webhook | None, raw: bytes, request: Request) -> str:
    """The call's `webhook-id`, or 401 unless its Standard Webhooks signature verifies."""
    if inbound is None:
        raise HTTPException(401, f"webhooks are off: {INBOUND_SECRET} is not set")
    try:
        return verify(inbound, raw, request.headers)
    except SignatureError as err:
        raise HTTPException(401, str(err)) from err


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
