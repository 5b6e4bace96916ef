"""The delivery channels: where one rendered message goes (outbox, SMTP, webhook).

SMTP always verifies TLS and splits the transaction so delivery can record `committing`
before DATA; `ChannelRefused` is the provider's answer, `SmtpUtf8Required` a recipient the
server cannot take, anything else a retryable transport failure. See "Agents" in
docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import httpx
from standardwebhooks import Webhook

from activities.rendering import UTF8_MAIL_POLICY, header_safe
from campaign_core.leads import needs_smtputf8
from campaign_core.private_files import private_dir
from campaign_core.webhook_signature import sign

if TYPE_CHECKING:
    # aiosmtplib is imported where a message is sent: workflows and the CLI import the
    # agents' modules for their references, and need no SMTP client for that.
    import aiosmtplib
    from aiosmtplib.protocol import SMTPProtocol

SMTP_TIMEOUT_SECONDS = 30.0
WEBHOOK_TIMEOUT_SECONDS = 20.0


class ChannelConfigError(ValueError):
    """The channel's configuration is missing or malformed (no retry can fix it)."""


class ChannelRefused(Exception):
    """The provider answered and refused: `permanent` when it will never accept it."""

    def __init__(self, message: str, *, permanent: bool, summary: str | None = None,
                 mailbox: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        #: The answer without the provider's text (which may quote the address): for history.
        self.summary = summary or message.split(":", 1)[0]
        #: Refused for the sending mailbox, not for this recipient: the login, or MAIL FROM.
        #: Every message of the mailbox would be refused alike (issue 28 pauses the sender).
        self.mailbox = mailbox


@dataclass(frozen=True)
class Accepted:
    """The provider took the message; `provider_id` is its reference, when it gives one."""

    provider_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


# -- outbox ----------------------------------------------------------------------------


def write_outbox(outbox: Path, key: str, msg: EmailMessage) -> Path:
    """Write atomically: readers never see a half-written file, retries overwrite."""
    private_dir(outbox)  # 0700: the messages name their recipients
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
    require_tls: bool = True


def parse_smtp_url(url: str, *, require_tls: bool | None = None) -> SmtpConfig:
    """`smtp://[user[:pass]@]host[:port]` (STARTTLS if offered) or `smtps://...` (TLS).

    `require_tls` (CAMPAIGN_SMTP_REQUIRE_TLS): refuse a session without TLS; None means
    on for every host but loopback.
    """
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
        require_tls=not _is_loopback(parts.hostname) if require_tls is None else require_tls,
    )


class SmtpTlsError(ConnectionError):
    """TLS with the SMTP server failed, or would be needed and is not offered.

    Raised before MAIL FROM, so the server holds nothing: a transport failure that the
    activity retries. The message names host and port, never the URL's password.
    """


@functools.lru_cache(maxsize=4)
def _default_tls_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    # create_default_context() reads SSL_CERT_FILE / SSL_CERT_DIR (passed in only to key
    # the cache): CERT_REQUIRED, hostname checked, TLS 1.2 at least.
    del cafile, capath
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)


def smtp_tls_context() -> ssl.SSLContext:
    """The client context for STARTTLS and smtps://: verified against the system CAs."""
    return _default_tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ssl_error(err: BaseException) -> ssl.SSLError | None:
    """The `ssl.SSLError` behind `err` (aiosmtplib wraps the implicit-TLS one), if any."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ssl.SSLError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


class SmtpUtf8Required(Exception):
    """The address needs SMTPUTF8 (a non-ASCII local part) and the server does not offer it.

    Raised before MAIL FROM, so nothing was sent. No retry can change it (the address has
    no ASCII spelling, and the server's extensions stay what they are), so delivery
    records the send as failed at once instead of retrying it as a transport fault. The
    message names host and port, never the address (it goes to history).
    """


def _smtputf8_missing(config: SmtpConfig) -> SmtpUtf8Required:
    return SmtpUtf8Required(
        f"SMTP server {config.host}:{config.port} does not offer SMTPUTF8, which the "
        "recipient's address needs (it is not ASCII before the @). Nothing was sent; "
        "not retried: use a server that offers SMTPUTF8, or another address for this lead.")


async def _greet(smtp: aiosmtplib.SMTP) -> None:
    """EHLO (HELO if refused) unless this session already has: after STARTTLS the client
    must forget the server's extensions and ask again (RFC 3207), and SMTPUTF8 is read
    from that answer."""
    import aiosmtplib

    if not smtp.is_ehlo_or_helo_needed:
        return
    try:
        await smtp.ehlo()
    except aiosmtplib.SMTPHeloError:
        if not smtp.is_connected:
            raise
        await smtp.helo()


def _tls_failure(config: SmtpConfig, err: ssl.SSLError) -> SmtpTlsError:
    if isinstance(err, ssl.SSLCertVerificationError):
        reason = f"certificate not trusted: {err.verify_message or err.reason}"
        hint = ("; put in CAMPAIGN_SMTP_URL the host name the certificate is issued for"
                if "mismatch" in reason.lower() else
                "; trust its CA in the system store, or name it with SSL_CERT_FILE")
    else:
        reason = f"TLS handshake failed: {err.reason or err}"
        hint = ""
    return SmtpTlsError(f"SMTP server {config.host}:{config.port}: {reason}{hint}. "
                        "Nothing was sent; the send is retried.")


def _refused(err: aiosmtplib.SMTPResponseException, *, mailbox: bool = False
             ) -> ChannelRefused:
    return ChannelRefused(f"SMTP {err.code}: {err.message}", permanent=500 <= err.code < 600,
                          summary=f"SMTP {err.code}", mailbox=mailbox)


async def send_smtp(
    config: SmtpConfig, msg: EmailMessage, *, recipient: str,
    before_data: Callable[[], Awaitable[None]],
    data_refused: Callable[[str], Awaitable[None]],
) -> Accepted:
    """Send one message; `before_data` runs once the whole body is on the wire and
    just before the final `.` that commits the transaction (see `_data`).

    If DATA gets an explicit refusal, `data_refused` runs (the server certainly did not
    take the message) before `ChannelRefused` is raised. A transport failure after the
    final `.` raises as is: whether the server queued the message is then unknown.

    An address that is not ASCII before the @ goes with SMTPUTF8 (RFC 6531): MAIL FROM
    says so, the envelope is UTF-8 and the headers are raw UTF-8 (RFC 6532). A server
    that does not offer it raises `SmtpUtf8Required` before MAIL FROM.
    """
    import aiosmtplib

    sender = parseaddr(str(msg["From"]))[1]
    utf8 = needs_smtputf8(recipient) or needs_smtputf8(sender)
    smtp = aiosmtplib.SMTP(
        hostname=config.host, port=config.port, use_tls=config.implicit_tls,
        start_tls=False if config.implicit_tls else None, timeout=SMTP_TIMEOUT_SECONDS,
        tls_context=await asyncio.to_thread(smtp_tls_context), validate_certs=True,
    )
    try:
        try:
            await smtp.connect()  # smtp://: STARTTLS here when the server offers it
        except Exception as err:
            tls_err = _ssl_error(err)
            if tls_err is None:
                raise
            raise _tls_failure(config, tls_err) from err
        ssl_object = smtp.get_transport_info("ssl_object")
        tls_version = ssl_object.version() if isinstance(ssl_object, ssl.SSLObject) else None
        if tls_version is None and config.username and not _is_loopback(config.host):
            raise SmtpTlsError(
                f"SMTP server {config.host}:{config.port} offers no STARTTLS: not sending "
                "the password from CAMPAIGN_SMTP_URL in clear (use smtps:// or a server "
                "with STARTTLS). Nothing was sent; the send is retried.")
        if tls_version is None and config.require_tls:
            raise SmtpTlsError(
                f"SMTP server {config.host}:{config.port} offers no STARTTLS and "
                "CAMPAIGN_SMTP_REQUIRE_TLS is on: not sending the message in clear (use "
                "smtps:// or a server with STARTTLS; CAMPAIGN_SMTP_REQUIRE_TLS=false only for a "
                "relay on a trusted network). Nothing was sent; the send is retried.")
        options: list[str] = []
        if utf8:
            await _greet(smtp)
            if not smtp.supports_extension("smtputf8"):
                raise _smtputf8_missing(config)
            options.append("SMTPUTF8")
            if smtp.supports_extension("8bitmime"):
                options.append("BODY=8BITMIME")  # the UTF-8 headers are 8-bit data
        try:
            if config.username:
                await smtp.login(config.username, config.password or "")
            encoding = "utf-8" if utf8 else "ascii"
            await smtp.mail(sender, options=options, encoding=encoding)
        except aiosmtplib.SMTPResponseException as err:
            raise _refused(err, mailbox=True) from err  # the mailbox's login or address
        await smtp.rcpt(recipient, encoding=encoding)
    except aiosmtplib.SMTPResponseException as err:
        raise _refused(err) from err
    # A message built with the ASCII policy is serialised with UTF-8 headers all the
    # same: an address written as an encoded word is no address (RFC 2047 5).
    data = msg.as_bytes(policy=UTF8_MAIL_POLICY) if utf8 else bytes(msg)
    try:
        try:
            response = await _data(smtp, data, before_final_dot=before_data)
        except aiosmtplib.SMTPResponseException as err:
            refused = _refused(err)
            await data_refused(str(refused))
            raise refused from err
        return Accepted(provider_id=response.message or None,
                        detail={"smtp_code": response.code, "smtp_reply": response.message,
                                "tls": tls_version})
    finally:
        if smtp.is_connected:
            try:
                await smtp.quit()
            except aiosmtplib.SMTPException:
                smtp.close()


async def _data(smtp: aiosmtplib.SMTP, message: bytes, *,
                before_final_dot: Callable[[], Awaitable[None]]) -> aiosmtplib.SMTPResponse:
    """DATA with its commit point exposed: `before_final_dot` runs just before the `.`.

    An SMTP server takes a message only when it reads the line with the single `.`; a
    connection that drops before it (a worker killed mid-body) leaves no message. So
    the body is sent and flushed to the kernel first, then the caller records that the
    message is about to be committed, then the three bytes of the terminator go. A
    worker killed anywhere before that record leaves no message and no record, and the
    retry sends; killed after it, the terminator is already in the kernel's buffer and
    reaches the server when the socket is closed. This is aiosmtplib's own
    `execute_data_command`, split in two (hence the pinned major version).
    """
    import aiosmtplib
    from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
    from aiosmtplib.typing import SMTPStatus

    proto = smtp.protocol
    if proto is None or proto._command_lock is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    body = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message))
    async with proto._command_lock:
        proto._response_pending = True
        proto.write(b"DATA\r\n")
        start = await proto.read_response(timeout=SMTP_TIMEOUT_SECONDS)
        if start.code != SMTPStatus.start_input:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        try:
            await _flush_body(proto, body, before_final_dot)
        except BaseException:
            smtp.close()  # mid-body: drop the line, so the server discards the message
            raise
        proto._response_pending = True
        proto.write(b".\r\n")
        response = await proto.read_response(timeout=SMTP_TIMEOUT_SECONDS)
        if response.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPDataError(response.code, response.message)
    return response


async def _flush_body(proto: SMTPProtocol, body: bytes,
                      before_final_dot: Callable[[], Awaitable[None]]) -> None:
    """Send the body, wait until it has left our buffer, then run the commit hook."""
    proto.write(body)
    transport = proto.transport
    # No event says "write buffer empty" (pause/resume_writing only fire at the
    # high-water mark), so poll; it is empty at once unless the body is large.
    while isinstance(transport, asyncio.WriteTransport) and (  # noqa: ASYNC110
            transport.get_write_buffer_size()):
        await asyncio.sleep(0.001)
    await before_final_dot()


# -- webhook ---------------------------------------------------------------------------


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
        # Header values as decoded text, made header-safe again: a receiver that copies
        # them into its own headers gets no control character and no encoded word.
        "from": header_safe(str(msg["From"])),
        "to": recipient,
        "to_header": header_safe(str(msg["To"])),
        "subject": header_safe(str(msg["Subject"])),
        "text": text.get_content() if isinstance(text, EmailMessage) else None,
        "html": html.get_content() if isinstance(html, EmailMessage) else None,
        "headers": {
            "List-Unsubscribe": str(msg["List-Unsubscribe"]),
            "List-Unsubscribe-Post": str(msg["List-Unsubscribe-Post"]),
            # A follow-up's thread, so the receiver can send it as a reply.
            **{h: str(msg[h]) for h in ("In-Reply-To", "References") if msg[h] is not None},
        },
    }


async def send_webhook(
    url: str, payload: dict[str, Any], *, key: str, signer: Webhook,
    client: httpx.AsyncClient | None = None,
) -> Accepted:
    """POST the payload, signed with `webhook-id` = the message key (the same on every
    attempt; the timestamp is each attempt's own); 2xx is accepted, 408/409/425/429/5xx
    retried, other 4xx refused."""
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": key,
               **sign(signer, key, body)}
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
