"""Temporal's remote codec endpoints (`POST /encode`, `POST /decode`) for the Web UI.

Served by `campaign codec-server` when CAMPAIGN_ENCRYPTION_KEY is set, so the UI shows
decrypted payloads. Only the UI's own origins may call it from a browser, and only under
an allowed Host name (loopback names, plus those configured), so a DNS-rebinding page
cannot reach it; a bearer token is required off loopback. See docs/architecture.md ("The command line").
"""

# No `from __future__ import annotations`: FastAPI reads the route handlers' annotations,
# and `Request` is imported inside `create_codec_app` so the CLI starts without FastAPI.
import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from fastapi import FastAPI

    from campaign_core.codec import EncryptionCodec
    from campaign_core.settings import Settings

log = logging.getLogger("campaign.codec")

ALLOWED_HEADERS = "Content-Type, X-Namespace, Authorization"
_LOOPBACK = {"localhost": "127.0.0.1", "127.0.0.1": "localhost"}
#: Host names always allowed in the Host header.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(header: str) -> str:
    """The name in a Host header, without port or IPv6 brackets, lower-cased."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    name, _, port = value.rpartition(":")
    return name if name and port.isdigit() else value


def is_loopback(host: str) -> bool:
    """Whether a bind address or host name is this machine only."""
    name = host_name(host) if host.startswith("[") else host.strip().lower()
    if name in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of a URL, as a browser sends it in `Origin`."""
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def ui_origins(settings: "Settings", extra: Sequence[str] = ()) -> set[str]:
    """The UI origins allowed now: the configured/recorded UI, its loopback twin, extras."""
    origins = {o for o in (origin_of(u) for u in [settings.resolved_ui_url, *extra]) if o}
    for origin in list(origins):
        parts = urlsplit(origin)
        twin = _LOOPBACK.get(parts.hostname or "")
        if twin:
            port = f":{parts.port}" if parts.port else ""
            origins.add(f"{parts.scheme}://{twin}{port}")
    return origins


def create_codec_app(
    settings: "Settings",
    codec: "EncryptionCodec",
    *,
    extra_origins: Sequence[str] = (),
    token: str | None = None,
    allowed_hosts: Sequence[str] = (),
) -> "FastAPI":
    """The FastAPI app serving /encode and /decode with `codec`, under the loopback host
    names and `allowed_hosts` only (400 for any other Host header)."""
    from fastapi import FastAPI, Request, Response
    from google.protobuf import json_format
    from temporalio.api.common.v1 import Payloads

    from campaign_core.codec import DecryptionError

    app = FastAPI(
        title="campaign-engine codec server",
        description="Temporal remote codec endpoints (AES-GCM payload encryption).",
        docs_url=None, redoc_url=None, openapi_url=None,
    )
    hosts = LOOPBACK_HOSTS | {host_name(h) for h in allowed_hosts}

    @app.middleware("http")
    async def host_allow_list(request: Request, call_next: Callable[[Request], Awaitable[Response]],
                              ) -> Response:
        # A DNS-rebinding page reaches us under its own name: refuse it before anything.
        if host_name(request.headers.get("host", "")) not in hosts:
            return Response(json.dumps({"detail": "Host header not allowed (use --allowed-host)"}),
                            status_code=400, media_type="application/json")
        return await call_next(request)

    def cors(request: Request, response: Response) -> Response:
        origin = request.headers.get("origin")
        if origin and origin.lower().rstrip("/") in ui_origins(settings, extra_origins):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
            response.headers["Vary"] = "Origin"
        return response

    def authorised(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def error(request: Request, status: int, detail: str, **headers: str) -> Response:
        body = json.dumps({"detail": detail})
        return cors(request, Response(body, status_code=status, media_type="application/json",
                                      headers=headers or None))

    async def apply(request: Request, fn: Callable[[Payloads], Payloads]) -> Response:
        if not authorised(request):
            return error(request, 401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})
        try:
            payloads = json_format.Parse(await request.body(), Payloads(), ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            return error(request, 400, f"body is not a Temporal Payloads JSON document: {exc}")
        try:
            result = fn(payloads)
        except DecryptionError as exc:
            return error(request, 400, str(exc))
        return cors(request, Response(json_format.MessageToJson(result), media_type="application/json"))

    @app.post("/encode")
    async def encode(request: Request) -> Response:
        return await apply(request, lambda p: Payloads(payloads=[codec.encrypt(x) for x in p.payloads]))

    @app.post("/decode")
    async def decode(request: Request) -> Response:
        return await apply(request, lambda p: Payloads(payloads=[codec.decrypt(x) for x in p.payloads]))

    @app.options("/encode")
    @app.options("/decode")
    async def preflight(request: Request) -> Response:
        return cors(request, Response(status_code=204))

    return app
