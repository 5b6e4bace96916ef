"""A real SMTP server on loopback for tests: aiosmtpd in its own thread.

`SmtpSink` collects every message the server accepted (envelope, raw bytes, receive
time and the session's TLS version), and optionally requires AUTH with one user, so the
client's login is exercised too. With `tls="starttls"` the server requires STARTTLS
before anything else; with `tls="implicit"` it speaks TLS from the first byte
(`smtps://`). `tls_context` is the server's context, e.g. from a `trustme` CA.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from campaign_core.ports import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    received_at: float = 0.0  # time.time() when DATA was accepted
    tls: str | None = None  # the session's TLS version ("TLSv1.3"), None in clear
    login: str | None = None  # the user the session authenticated as

    @property
    def message(self) -> EmailMessage:
        return BytesParser(policy=default).parsebytes(self.content)


@dataclass
class SmtpSink:
    """The aiosmtpd handler: keeps what DATA delivered, in order."""

    messages: list[Received] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        ssl_object = server.transport.get_extra_info("ssl_object") if server.transport else None
        login = session.auth_data if session.authenticated else None
        received = Received(
            envelope.mail_from, list(envelope.rcpt_tos),
            bytes(envelope.original_content or envelope.content), received_at=time.time(),
            tls=ssl_object.version() if ssl_object is not None else None,
            login=login if isinstance(login, str) else None)
        with self.lock:
            self.messages.append(received)
        return "250 OK queued"

    def with_message_id(self, message_id: str) -> list[Received]:
        return [m for m in self.messages if m.message["Message-ID"] == message_id]


@contextmanager
def smtp_server(user: str | None = None, password: str | None = None, *,
                tls: Literal["starttls", "implicit"] | None = None,
                tls_context: ssl.SSLContext | None = None, host: str = "127.0.0.1",
                sink: SmtpSink | None = None) -> Iterator[tuple[SmtpSink, str]]:
    """Run a server; yields the sink and the `CAMPAIGN_SMTP_URL` that reaches it.

    `host` is only the name put in the URL (the server listens on 127.0.0.1), so a test
    can reach it as `localhost` or by a name its certificate does not carry.
    """
    if tls is not None and tls_context is None:
        raise ValueError("tls needs the server's tls_context")
    sink = sink if sink is not None else SmtpSink()  # a subclass may refuse recipients
    kwargs: dict[str, Any] = {}
    if user is not None:
        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                          auth_data: Any) -> AuthResult:
            ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user
                  and auth_data.password.decode() == password)
            if ok:
                sink.logins.append(user)
            # handled=False on failure: aiosmtpd then answers 535 (handled=True stays silent).
            return AuthResult(success=ok, handled=ok, auth_data=user if ok else None)

        # aiosmtpd's auth_require_tls only knows STARTTLS; an smtps:// session is TLS anyway.
        kwargs = {"authenticator": authenticator, "auth_require_tls": tls == "starttls",
                  "auth_required": True}
    if tls == "starttls":
        kwargs |= {"tls_context": tls_context, "require_starttls": True}
    elif tls == "implicit":
        kwargs["ssl_context"] = tls_context
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        creds = f"{user}:{password}@" if user is not None else ""
        scheme = "smtps" if tls == "implicit" else "smtp"
        yield sink, f"{scheme}://{creds}{host}:{port}"
    finally:
        controller.stop()
