"""The API's front door: the bearer token and a body-size cap, checked before anything parses.

A pure ASGI middleware, outside FastAPI's routing: a request without the token is
answered 401 before its body is read (so a stranger's malformed JSON gets 401, not a
422 that proves the route exists, and costs nothing to parse), and a body larger than
`CAMPAIGN_API_MAX_BODY` is refused 413: at once when its Content-Length says so, and
otherwise as soon as the bytes streamed so far pass the cap (chunked uploads too).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Routes anyone may call: the health probe and the unsubscribe link (its signed token
#: is its authorisation). Everything else, the OpenAPI document and docs included,
#: needs the bearer token.
PUBLIC_PATHS: frozenset[str] = frozenset({"/health", "/unsubscribe"})


class BodyTooLarge(HTTPException):
    """The body passed the cap while streaming (FastAPI lets an HTTPException through)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes (CAMPAIGN_API_MAX_BODY)",
                         headers={"Connection": "close"})


class RequestGate:
    """401 without the bearer token (unless `token` is None: --insecure-dev), 413 past
    `max_body` bytes; both decided before the app reads a byte of the body."""

    def __init__(self, app: ASGIApp, *, token: str | None, max_body: int,
                 public_paths: Collection[str] = PUBLIC_PATHS) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        if not self._authorised(scope, headers):
            await _answer(send, 401, "missing or wrong bearer token (Authorization: Bearer ...)",
                          {"www-authenticate": "Bearer"})
            return
        length = headers.get("content-length", "").strip()
        if length and (not length.isdigit() or int(length) > self.max_body):
            code = 413 if length.isdigit() else 400
            await _answer(send, code, BodyTooLarge(self.max_body).detail if code == 413
                          else "invalid Content-Length", {"connection": "close"})
            return
        await self._call_counting(scope, receive, send)

    def _authorised(self, scope: Scope, headers: dict[str, str]) -> bool:
        if self.token is None or scope.get("path", "") in self.public_paths:
            return True
        scheme, _, given = headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), self.token.encode())

    async def _call_counting(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge as exc:  # only if the app did not answer it itself
            if started:
                raise
            await _answer(send, 413, str(exc.detail), {"connection": "close"})


async def _answer(send: Send, status: int, detail: str, headers: dict[str, str]) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           *((k.encode(), v.encode()) for k, v in headers.items())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
