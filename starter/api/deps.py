"""What the API's routes depend on, in one module: the service token, the app's
`CampaignManager` (and through it the settings and the store), the `ScheduleManager`, the
reviewer lookup of the gate, and the inbound webhooks' signature check.

The routers (`starter/api/*.py`) import from here and never from each other's internals.
Module level, not closures: FastAPI resolves annotations against the module's globals.
`create_app` (starter/api/main.py) puts what these read into `app.state`.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from standardwebhooks import Webhook

from campaign_core.settings import Settings
from campaign_core.webhook_signature import (
    INBOUND_SECRET,
    SignatureError,
    WebhookSecretError,
    signer,
    verify,
)
from starter.api.gate import ReviewerLookup
from starter.manager import BadInput, CampaignManager
from starter.review_auth import Reviewers
from starter.schedules import ScheduleManager

_bearer = HTTPBearer(auto_error=False)


# -- built once, by create_app --------------------------------------------------------------------


def service_token(settings: Settings, *, insecure_dev: bool) -> str | None:
    """The bearer token of the service routes; None only when `insecure_dev` allows it."""
    token = settings.api_token.get_secret_value() if settings.api_token else None
    if not token and not insecure_dev:
        raise BadInput("CAMPAIGN_API_TOKEN is not set: set it (every route but /health and "
                       "/unsubscribe needs it), or pass --insecure-dev on a private machine")
    return token


def inbound_signer(settings: Settings) -> Webhook | None:
    """The verifier of signed webhooks (CAMPAIGN_WEBHOOK_SECRET); None while it is unset."""
    try:
        return (signer(settings.webhook_secret.get_secret_value(), INBOUND_SECRET)
                if settings.webhook_secret else None)
    except WebhookSecretError as err:
        raise BadInput(str(err)) from err


def lifespan(settings: Settings, manager: CampaignManager | None,
             manager_factory: Callable[[Settings], CampaignManager],
             ) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: the manager given, or one made for `settings` (and closed after)."""

    @asynccontextmanager
    async def running(app: FastAPI) -> AsyncIterator[None]:
        managers: dict[str, CampaignManager] = app.state.managers
        managers["manager"] = manager or manager_factory(settings)
        yield
        if manager is None:
            await managers["manager"].store.close()

    return running


# -- per request ----------------------------------------------------------------------------------


def authorised(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless the bearer token matches CAMPAIGN_API_TOKEN (constant-time compare), or
    the gate has let a reviewer's token through to a review route."""
    token: str | None = request.app.state.token
    if token is None or getattr(request.state, "reviewer", None):
        return  # --insecure-dev
    given = creds.credentials if creds is not None else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                            "missing or wrong bearer token (Authorization: Bearer ...)",
                            headers={"WWW-Authenticate": "Bearer"})


#: What every service route depends on: the bearer token (the gate has checked it already).
AUTHORISED = [Depends(authorised)]


def manager_of(request: Request) -> CampaignManager:
    """The app's `CampaignManager` (set by the lifespan)."""
    managers: dict[str, CampaignManager] = request.app.state.managers
    return managers["manager"]


def current_manager(request: Request) -> CampaignManager:
    return manager_of(request)


Manager = Annotated[CampaignManager, Depends(current_manager)]


async def current_schedules(m: Manager) -> ScheduleManager:
    """A `ScheduleManager` on the app's Temporal client and store (503 if Temporal is down)."""
    return ScheduleManager(m.settings, client=await m.client(), store=m.store,
                           queue_prefix=m.queue_prefix,
                           use_search_attributes=m.use_search_attributes)


Schedules = Annotated[ScheduleManager, Depends(current_schedules)]


def reviewer_named(app: FastAPI) -> ReviewerLookup:
    """The gate's lookup: the name of the (active) reviewer a token belongs to, or None."""

    async def named(given: str) -> str | None:
        managers: dict[str, CampaignManager] = app.state.managers
        found = await Reviewers(managers["manager"].store).by_token(given)
        return found.name if found else None

    return named


def verified_webhook(request: Request, raw: bytes) -> str:
    """The call's `webhook-id`, or 401 unless its Standard Webhooks signature verifies."""
    inbound: Webhook | None = request.app.state.inbound
    if inbound is None:
        raise HTTPException(401, f"webhooks are off: {INBOUND_SECRET} is not set")
    try:
        return verify(inbound, raw, request.headers)
    except SignatureError as err:
        raise HTTPException(401, str(err)) from err
