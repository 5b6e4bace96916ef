"""`campaign codec-server`: Temporal's remote codec endpoints, for the Web UI.

With CAMPAIGN_ENCRYPTION_KEY set, every payload in history is encrypted and the Web
UI shows ciphertext unless it can ask a codec server to decode. This serves
`POST /decode` and `POST /encode` in Temporal's codec-server format (a JSON
`Payloads` message: `{"payloads": [{"metadata": {...}, "data": "<base64>"}]}`),
with the CORS answers the UI needs (its origin, `X-Namespace`, credentials).

Only the UI's own origin may call it from a browser: TEMPORAL_UI_URL (or the UI a
running `campaign dev` recorded, looked up at each request), its other loopback
spelling, and any `--ui-origin`. It listens on 127.0.0.1 unless `--host` says
otherwise. The Web UI can send an `Authorization` header ("pass the user access
token") only when the UI itself has a login, so a bearer token is opt-in:
`--require-token` demands `Authorization: Bearer $CAMPAIGN_API_TOKEN`.
"""

# No `from __future__ import annotations`: FastAPI reads the route handlers' annotations,
# and `Request` is imported inside `create_codec_app` so the CLI starts without FastAPI.
import hmac
import json
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import typer

if TYPE_CHECKING:
    from fastapi import FastAPI

    from campaign_core.codec import EncryptionCodec
    from campaign_core.settings import Settings

log = logging.getLogger("campaign.codec")

ALLOWED_HEADERS = "Content-Type, X-Namespace, Authorization"
_LOOPBACK = {"localhost": "127.0.0.1", "127.0.0.1": "localhost"}


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
) -> "FastAPI":
    """The FastAPI app serving /encode and /decode with `codec`."""
    from fastapi import FastAPI, Request, Response
    from google.protobuf import json_format
    from temporalio.api.common.v1 import Payloads

    from campaign_core.codec import DecryptionError

    app = FastAPI(
        title="campaign-engine codec server",
        description="Temporal remote codec endpoints (AES-GCM payload encryption).",
        docs_url=None, redoc_url=None,
    )

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


def register(app: typer.Typer) -> None:
    """Add `codec-server` to the `campaign` app."""

    @app.command("codec-server")
    def codec_server(
        port: int = typer.Option(8081, help="Port to listen on."),
        host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
        ui_origin: list[str] = typer.Option(
            [], "--ui-origin",
            help="Another browser origin allowed to call it (repeatable); the UI at "
            "TEMPORAL_UI_URL or the one `campaign dev` recorded is always allowed."),
        require_token: bool = typer.Option(
            False, "--require-token",
            help="Demand 'Authorization: Bearer $CAMPAIGN_API_TOKEN' on every call."),
    ) -> None:
        """Temporal codec endpoints for the Web UI (when encryption is on)."""
        import uvicorn

        from campaign_core.codec import EncryptionKeyError, codec_from_setting
        from campaign_core.settings import load_settings
        from starter.cli import fail

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        settings = load_settings()
        raw = settings.encryption_key.get_secret_value() if settings.encryption_key else None
        try:
            codec = codec_from_setting(raw)
        except EncryptionKeyError as exc:
            fail(2, str(exc))
        if codec is None:
            fail(2, "CAMPAIGN_ENCRYPTION_KEY is not set: payloads are not encrypted, so there is "
                    "nothing to decode (set it to KEY_ID:BASE64 entries of 32-byte keys)")
        for origin in ui_origin:
            if origin_of(origin) is None:
                fail(2, f"--ui-origin: {origin!r} is not an origin like http://localhost:8080")
        token: str | None = None
        if require_token:
            if settings.api_token is None or not settings.api_token.get_secret_value():
                fail(2, "--require-token: set CAMPAIGN_API_TOKEN")
            token = settings.api_token.get_secret_value()
        application = create_codec_app(settings, codec, extra_origins=ui_origin, token=token)
        log.info("codec server for key ids %s on http://%s:%d (UI origins: %s)",
                 ", ".join(codec.keyring.ids), host, port,
                 ", ".join(sorted(ui_origins(settings, ui_origin))))
        uvicorn.run(application, host=host, port=port, log_level="info", access_log=False)
