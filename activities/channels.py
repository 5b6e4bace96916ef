"""The delivery channels: where one rendered message goes.

* `outbox`: one `<key>.eml` file, written atomically (temp file + rename).
* `smtp`: `aiosmtplib` to `CAMPAIGN_SMTP_URL` (`smtp://user:pass@host:port`, STARTTLS
  when the server offers it; `smtps://` for implicit TLS; AUTH when a user is given).
  The transaction is split so the caller can record "committing" after the server has
  accepted the envelope (MAIL/RCPT) and just before DATA: see `activities.delivery`.
* `webhook`: a JSON POST to `CAMPAIGN_WEBHOOK_URL` signed with
  `X-Signature: sha256=<hex HMAC-SHA256 of the body with CAMPAIGN_WEBHOOK_SECRET>` and
  carrying `Idempotency-Key: <message key>`, so the receiver can drop a resend.

Errors: `ChannelRefused` says the provider answered and will never take this message
(permanent) or asked to try later (retryable); any other exception is a transport
failure and is retried by the activity's retry policy.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib
import httpx

SMTP_TIMEOUT_SECONDS = 30.0
WEBHOOK_TIMEOUT_SECONDS = 20.0


class ChannelConfigError(ValueError):
    """The channel's configuration is missing or malformed (no retry can fix it)."""


class ChannelRefused(Exception):
    """The provider answered and refused: `permanent` when it will never accept it."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Accepted:
    """The provider took the message; `provider_id` is its reference, when it gives one."""

    provider_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


# -- outbox ----------------------------------------------------------------------------


def write_outbox(outbox: Path, key: str, msg: EmailMessage) -> Path:
    """Write atomically: readers never see a half-written file, retries overwrite."""
    outbox.mkdir(parents=True, exist_ok=True)
    target = outbox / f"{key}.eml"
    fd, tmp = tempfile.mkstemp(dir=outbox, prefix=".tmp-", suffix=".eml")
    with os.fdopen(fd, "wb") as fh:
        fh.write(bytes(msg))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    return target


# -- smtp ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    implicit_tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_smtp_url(url: str) -> SmtpConfig:
    """`smtp://[user[:pass]@]host[:port]` (STARTTLS if offered) or `smtps://...` (TLS)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in {"smtp", "smtps"}:
        raise ChannelConfigError("CAMPAIGN_SMTP_URL must start with smtp:// or smtps://")
    if not parts.hostname:
        raise ChannelConfigError("CAMPAIGN_SMTP_URL has no host")
    try:
        port = parts.port
    except ValueError as err:
        raise ChannelConfigError("CAMPAIGN_SMTP_URL has an invalid port") from err
    implicit = scheme == "smtps"
    return SmtpConfig(
        host=parts.hostname,
        port=port or (465 if implicit else 587),
        implicit_tls=implicit,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def _refused(err: aiosmtplib.SMTPResponseException) -> ChannelRefused:
    return ChannelRefused(f"SMTP {err.code}: {err.message}", permanent=500 <= err.code < 600)


async def send_smtp(
    config: SmtpConfig, msg: EmailMessage, *, recipient: str,
    before_data: Callable[[], Awaitable[None]],
    data_refused: Callable[[str], Awaitable[None]],
) -> Accepted:
    """Send one message; `before_data` runs after MAIL/RCPT were accepted, before DATA.

    If DATA gets an explicit refusal, `data_refused` runs (the server certainly did not
    take the message) before `ChannelRefused` is raised. A transport failure during DATA
    raises as is: whether the server queued the message is then unknown.
    """
    sender = parseaddr(str(msg["From"]))[1]
    smtp = aiosmtplib.SMTP(
        hostname=config.host, port=config.port, use_tls=config.implicit_tls,
        start_tls=False if config.implicit_tls else None, timeout=SMTP_TIMEOUT_SECONDS,
    )
    try:
        await smtp.connect()
        if config.username:
            await smtp.login(config.username, config.password or "")
        await smtp.mail(sender)
        await smtp.rcpt(recipient)
    except aiosmtplib.SMTPResponseException as err:
        raise _refused(err) from err
    try:
        await before_data()
        try:
            response = await smtp.data(bytes(msg))
        except aiosmtplib.SMTPResponseException as err:
            refused = _refused(err)
            await data_refused(str(refused))
            raise refused from err
        return Accepted(provider_id=response.message or None,
                        detail={"smtp_code": response.code, "smtp_reply": response.message})
    finally:
        if smtp.is_connected:
            try:
                await smtp.quit()
            except aiosmtplib.SMTPException:
                smtp.close()


# -- webhook ---------------------------------------------------------------------------


def sign_body(body: bytes, secret: str) -> str:
    """The `X-Signature` value: `sha256=` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_payload(msg: EmailMessage, *, key: str, campaign_id: str, lead_id: str, step: int,
                    recipient: str) -> dict[str, Any]:
    """What the webhook receives: the same document on every attempt for one key."""
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    return {
        "message_key": key,
        "message_id": str(msg["Message-ID"]),
        "campaign_id": campaign_id,
        "lead_id": lead_id,
        "step": step,
        "from": str(msg["From"]),
        "to": recipient,
        "to_header": str(msg["To"]),
        "subject": str(msg["Subject"]),
        "text": text.get_content() if isinstance(text, EmailMessage) else None,
        "html": html.get_content() if isinstance(html, EmailMessage) else None,
        "headers": {
            "List-Unsubscribe": str(msg["List-Unsubscribe"]),
            "List-Unsubscribe-Post": str(msg["List-Unsubscribe-Post"]),
        },
    }


async def send_webhook(
    url: str, payload: dict[str, Any], *, key: str, secret: str | None,
    client: httpx.AsyncClient | None = None,
) -> Accepted:
    """POST the payload; 2xx is accepted, 408/409/425/429/5xx retried, other 4xx refused."""
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": key}
    if secret:
        headers["X-Signature"] = sign_body(body, secret)
    own = client is None
    http = client or httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_SECONDS)
    try:
        response = await http.post(url, content=body, headers=headers)
    finally:
        if own:
            await http.aclose()
    code = response.status_code
    if 200 <= code < 300:
        provider_id: str | None = None
        try:
            data = response.json()
            if isinstance(data, dict) and data.get("id") is not None:
                provider_id = str(data["id"])
        except ValueError:
            pass
        return Accepted(provider_id=provider_id, detail={"http_status": code})
    retryable = code in {408, 409, 425, 429} or code >= 500
    raise ChannelRefused(f"webhook answered HTTP {code}", permanent=not retryable)
