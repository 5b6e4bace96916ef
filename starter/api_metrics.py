"""Request counts and latency of the HTTP API, by route template (never the raw path).

Labelled by the route's template (`/campaigns/{campaign_id}`), so ids never become label
values; a path that matches no route counts as "unmatched".
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from campaign_core.metrics import process_metrics


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
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            process_metrics().api_request(method=scope["method"], route=template, status=status,
                                          seconds=time.perf_counter() - started)
