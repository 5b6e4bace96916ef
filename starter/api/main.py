"""`create_app`: the HTTP API of `campaign api` and `campaign dev`, put together.

It builds the app, installs the two middlewares and includes one router per resource; what
the routes depend on is in deps.py, how service errors become statuses in errors.py. Bearer
token on every route but `/health`, `/unsubscribe` and the review pages (which use their
session cookie). See "HTTP API and unsubscribe" in docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI

from campaign_core.settings import Settings
from starter.api import (
    campaigns,
    deps,
    drafts,
    errors,
    health,
    inbox,
    review_pages,
    schedules,
    senders,
    suppressions,
    unsubscribe,
    webhooks,
)
from starter.api.gate import RequestGate
from starter.api.request_metrics import RequestMetrics
from starter.manager import CampaignManager
from starter.review_auth import TOKEN_PREFIX

#: The routers, in matching order (a path two could match goes to the first: see campaigns.py).
ROUTERS: tuple[APIRouter, ...] = (
    review_pages.router, campaigns.router, drafts.router, schedules.router,
    suppressions.router, senders.router, inbox.router, webhooks.router, unsubscribe.router, health.router,
)


def create_app(
    settings: Settings, *, manager: CampaignManager | None = None, insecure_dev: bool = False,
    manager_factory: Callable[[Settings], CampaignManager] = CampaignManager,
) -> FastAPI:
    """The API for `settings`; refuses to exist without a token unless `insecure_dev`."""
    token = deps.service_token(settings, insecure_dev=insecure_dev)
    inbound = deps.inbound_signer(settings)
    app = FastAPI(
        title="Campaign engine API",
        description="Start campaigns, follow them, approve delivery; webhooks for bounces "
        "and complaints; one-click unsubscribe.",
        version="1",
        lifespan=deps.lifespan(settings, manager, manager_factory),
        exception_handlers={**errors.HANDLERS, **review_pages.HANDLERS},
    )
    app.state.token, app.state.inbound, app.state.managers = token, inbound, {}
    # Outside the routing: no token, no parsing; no body past the cap (see gate.py).
    app.add_middleware(RequestGate, token=token, max_body=settings.api_max_body,
                       reviewer=deps.reviewer_named(app), reviewer_prefix=TOKEN_PREFIX)
    app.add_middleware(RequestMetrics)  # outermost: refusals by the gate count too
    for router in ROUTERS:
        app.include_router(router)
    return app


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's proxy options for `campaign api` and `campaign dev`: X-Forwarded-Proto and
    -For are believed only from CAMPAIGN_TRUSTED_PROXIES. Said explicitly, not left to
    uvicorn's default (127.0.0.1): the scheme they give decides whether the review pages'
    session cookie is Secure, so a TLS proxy elsewhere must be named to be believed."""
    return {"proxy_headers": True, "forwarded_allow_ips": settings.trusted_proxies}
