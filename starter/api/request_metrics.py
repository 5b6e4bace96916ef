"""Request counts and latency of the HTTP API, by route template (never the raw path).

Every label takes its value from a fixed set, whatever the request carries, so nobody can
grow the series without bound (uvicorn accepts any token as a method, and a stranger's
requests are counted too: refusals by the gate count):

- `method`: GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS; anything else is `OTHER`.
- `route`: the matched route's template (`/campaigns/{campaign_id}`), so ids never become
  label values; a path that matches no route counts as `unmatched`.
- `status`: the status code the app answered (the app's own, finite set); a value outside
  100-599, which no server would send, is counted as 0.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from campaign_core.metrics import process_metrics

#: The methods counted under their own name; every other method is `OTHER`.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"
UNMATCHED_ROUTE = "unmatched"


def method_label(method: Any) -> str:
    """The request's method if it is a standard one, else `OTHER` (case-sensitive, as HTTP
    methods are: `get` is not GET)."""
    return method if isinstance(method, str) and method in KNOWN_METHODS else OTHER_METHOD


def route_label(route: Any) -> str:
    """The matched route's template; `unmatched` when no route of the app matched."""
    path = getattr(route, "path", None) if isinstance(route, BaseRoute) else None
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


def status_label(status: int) -> int:
    """The answered status; 0 for a value outside 100-599 (the label stays bounded)."""
    return status if 100 <= status <= 599 else 0


class RequestMetrics:
    """ASGI middleware: one `campaign_api_requests` count and latency point per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            process_metrics().api_request(
                method=method_label(scope.get("method")), route=route_label(scope.get("route")),
                status=status_label(status),
                seconds=time.perf_counter() - started)
