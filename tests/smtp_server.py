"""A real SMTP server on loopback for tests: aiosmtpd in its own thread.

`SmtpSink` collects every message the server accepted (envelope and raw bytes), and
optionally requires AUTH with one user, so the client's login is exercised too.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

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
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                          bytes(envelope.original_content or envelope.content)))
        return "250 OK queued"

    def with_message_id(self, message_id: str) -> list[Received]:
        return [m for m in self.messages if m.message["Message-ID"] == message_id]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def smtp_server(user: str | None = None, password: str | None = None
                ) -> Iterator[tuple[SmtpSink, str]]:
    """Run a server; yields the sink and the `CAMPAIGN_SMTP_URL` that reaches it."""
    sink = SmtpSink()
    kwargs: dict[str, Any] = {}
    if user is not None:
        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                          auth_data: Any) -> AuthResult:
            ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user
                  and auth_data.password.decode() == password)
            if ok:
                sink.logins.append(user)
            return AuthResult(success=ok)

        kwargs = {"authenticator": authenticator, "auth_require_tls": False,
                  "auth_required": True}
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        creds = f"{user}:{password}@" if user is not None else ""
        yield sink, f"smtp://{creds}127.0.0.1:{port}"
    finally:
        controller.stop()
