"""`campaign codec-server`: serve `starter.codec_app` so the Web UI decodes encrypted payloads."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from campaign_core.codec import EncryptionKeyError, codec_from_setting
from campaign_core.settings import load_settings
from starter.cli.app import fail
from starter.codec_app import create_codec_app, is_loopback, origin_of, ui_origins

log = logging.getLogger("campaign.codec")


def codec_server(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8081,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    ui_origin: Annotated[list[str] | None, typer.Option(
        "--ui-origin",
        help="Another browser origin allowed to call it (repeatable); the UI at "
        "TEMPORAL_UI_URL or the one `campaign dev` recorded is always allowed.")] = None,
    require_token: Annotated[bool, typer.Option(
        "--require-token",
        help="Demand 'Authorization: Bearer $CAMPAIGN_API_TOKEN' on every call (required "
        "to listen on anything but loopback).")] = False,
    allowed_host: Annotated[list[str] | None, typer.Option(
        "--allowed-host",
        help="Another host name the server may be called by (repeatable); localhost, "
        "127.0.0.1 and ::1 always are.")] = None,
) -> None:
    """Temporal codec endpoints for the Web UI (when encryption is on)."""
    import uvicorn

    if not is_loopback(host) and not require_token:
        fail(2, f"--host {host}: listening beyond loopback needs --require-token "
                "(anyone who reaches the port could decrypt payloads)")
    origins = ui_origin or []
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    raw = settings.encryption_key.get_secret_value() if settings.encryption_key else None
    try:
        codec = codec_from_setting(raw, require=settings.require_encryption)
    except EncryptionKeyError as exc:
        fail(2, str(exc))
    if codec is None:
        fail(2, "CAMPAIGN_ENCRYPTION_KEY is not set: payloads are not encrypted, so there is "
                "nothing to decode (set it to KEY_ID:BASE64 entries of 32-byte keys)")
    for origin in origins:
        if origin_of(origin) is None:
            fail(2, f"--ui-origin: {origin!r} is not an origin like http://localhost:8080")
    token: str | None = None
    if require_token:
        if settings.api_token is None or not settings.api_token.get_secret_value():
            fail(2, "--require-token: set CAMPAIGN_API_TOKEN")
        token = settings.api_token.get_secret_value()
    application = create_codec_app(settings, codec, extra_origins=origins, token=token,
                                   allowed_hosts=allowed_host or [])
    log.info("codec server for key ids %s on http://%s:%d (UI origins: %s)",
             ", ".join(codec.keyring.ids), host, port,
             ", ".join(sorted(ui_origins(settings, origins))))
    uvicorn.run(application, host=host, port=port, log_level="info", access_log=False)
