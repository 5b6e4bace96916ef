"""`GET /health`: whether Temporal and the store answer. Public, for load balancers."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel

from starter.api.deps import Manager

router = APIRouter()


class HealthResponse(BaseModel):
    status: Literal["ok", "unavailable"]
    temporal: str
    store: str


@router.get("/health", response_model=HealthResponse,
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
