"""The API's front door: the bearer token and a body-size cap, checked before anything parses.

A pure ASGI middleware, outside FastAPI's routing: a request without the token is
answered 401 before its body is read (so a stranger's malformed JSON gets 401, not a
422 that proves the route exists, and costs nothing to parse), and a body larger than
`CAMPAIGN_API_MAX_BODY` is refused 413: at once when its Content-Length says so, and
otherwise as soon as the bytes streamed so far pass the cap (chunked uploads too).

A reviewer's token (`crt_...`) is accepted too, on the review routes only (`REVIEW_ROUTES`;
403 elsewhere): the gate then puts the reviewer's name in `request.state.reviewer`, to
which every decision and edit of the request is attributed. The review pages (`/review`,
`/review/...`) pass the gate: they authenticate by their own session cookie.

Without a token (`campaign api --insecure-dev`) the gate answers only requests whose `Host`
is loopback (`localhost`, `127.x.x.x`, `[::1]`, any port), and refuses any other with 421:
a web page that rebinds its own DNS name to 127.0.0.1 reaches the port, but its requests
carry its own name as `Host`, so it cannot drive an API that has no token to check.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
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
#: The review pages: public to the gate, each page checks its session itself.
PAGES_PREFIX = "/review"
#: What a reviewer's token may reach: reading campaigns, drafts, report and audit;
#: editing, excluding and including drafts; approving or rejecting; the inbox.
REVIEW_ROUTES: tuple[tuple[frozenset[str], re.Pattern[str]], ...] = tuple(
    (frozenset(methods), re.compile(pattern)) for methods, pattern in (
        ({"GET", "HEAD"}, r"/campaigns/?"),
        ({"GET", "HEAD"}, r"/campaigns/[^/]+/?"),
        ({"GET", "HEAD"}, r"/campaigns/[^/]+/(drafts|report|audit)/?"),
        ({"PATCH"}, r"/campaigns/[^/]+/drafts/[^/]+/?"),
        ({"POST"}, r"/campaigns/[^/]+/drafts/[^/]+/(exclude|include)/?"),
        ({"POST"}, r"/campaigns/[^/]+/approval/?"),
        # The inbox: reviewers read and answer the replies of every campaign (issue 27).
        ({"GET", "HEAD"}, r"/inbox/?"),
        ({"POST"}, r"/inbox/[^/]+/(answer|intent|done)/?"),
    ))
#: The name of a reviewer's token, or None when it is no (active) reviewer's.
ReviewerLookup = Callable[[str], Awaitable[str | None]]


def is_review_route(method: str, path: str) -> bool:
    return any(method in methods and pattern.fullmatch(path) for methods, pattern in REVIEW_ROUTES)


def is_page(path: str) -> bool:
    return path == PAGES_PREFIX or path.startswith(PAGES_PREFIX + "/")


def is_loopback_host(host: str) -> bool:
    """`Host` names this machine's loopback: `localhost` (or a name under it), an IPv4
    address in 127.0.0.0/8, or `[::1]`; with or without a port."""
    host = host.strip().lower()
    if host.startswith("["):  # [v6]:port
        name, sep, rest = host[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return False
    else:
        name, _, port = host.partition(":")
        if port and not port.isdigit():
            return False
    name = name.rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class BodyTooLarge(HTTPException):
    """The body passed the cap while streaming (FastAPI lets an HTTPException through)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes (CAMPAIGN_API_MAX_BODY)",
                         headers={"Connection": "close"})


class RequestGate:
    """401 without the bearer token (unless `token` is None: --insecure-dev), 413 past
    `max_body` bytes; both decided before the app reads a byte of the body."""

    def __init__(self, app: ASGIApp, *, token: str | None, max_body: int,
                 public_paths: Collection[str] = PUBLIC_PATHS,
                 reviewer: ReviewerLookup | None = None, reviewer_prefix: str = "crt_") -> None:
        self.app = app
        self.token = token
        self.max_body = max_body
        self.public_paths = public_paths
        self.reviewer = reviewer
        self.reviewer_prefix = reviewer_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        refusal = await self._refusal(scope, headers)
        if refusal is not None:
            await _answer(send, *refusal)
            return
        length = headers.get("content-length", "").strip()
        if length and (not length.isdigit() or int(length) > self.max_body):
            code = 413 if length.isdigit() else 400
            await _answer(send, code, BodyTooLarge(self.max_body).detail if code == 413
                          else "invalid Content-Length", {"connection": "close"})
            return
        await self._call_counting(scope, receive, send)

    async def _refusal(self, scope: Scope, headers: dict[str, str]
                       ) -> tuple[int, str, dict[str, str]] | None:
        """None when the request may go on (a reviewer's name then in its state), else
        (status, detail, headers) of the refusal."""
        path = scope.get("path", "")
        if self.token is None and not is_loopback_host(headers.get("host", "")):
            # --insecure-dev: no token stands between a DNS-rebinding page and the API.
            return (421, "without CAMPAIGN_API_TOKEN (--insecure-dev) the API answers only "
                         "requests to a loopback address (localhost, 127.0.0.1, [::1]); set "
                         "the token to serve it under another name", {})
        if path in self.public_paths or is_page(path):
            return None
        scheme, _, given = headers.get("authorization", "").strip().partition(" ")
        given = given.strip() if scheme.lower() == "bearer" else ""
        unauthorised = (401, "missing or wrong bearer token (Authorization: Bearer ...)",
                        {"www-authenticate": "Bearer"})
        if self.reviewer is not None and given.startswith(self.reviewer_prefix):
            name = await self.reviewer(given)
            if name is None:
                return unauthorised
            if not is_review_route(scope.get("method", ""), path):
                return (403, f"a reviewer's token reaches the review routes only (campaigns, "
                             f"drafts, report, audit, edits, decisions, inbox), not "
                             f"{scope.get('method', '')} {path}", {})
            scope.setdefault("state", {})["reviewer"] = name
            return None
        if self.token is None:
            return None  # --insecure-dev
        if given and hmac.compare_digest(given.encode(), self.token.encode()):
            return None
        return unauthorised

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
