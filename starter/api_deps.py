"""What every API route depends on: the bearer-token check and the app's `CampaignManager`.

A module of its own so the routers (`starter/api.py`, `starter/api_admin.py`) share them
without importing each other. Module level, not closures: FastAPI resolves annotations
against the module's globals.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from starter.manager import CampaignManager

_bearer = HTTPBearer(auto_error=False)


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


def current_manager(request: Request) -> CampaignManager:
    managers: dict[str, CampaignManager] = request.app.state.managers
    return managers["manager"]


Manager = Annotated[CampaignManager, Depends(current_manager)]
