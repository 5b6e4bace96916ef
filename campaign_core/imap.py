"""The IMAP reply mailbox (`CAMPAIGN_IMAP_URL`): read each new message once, mark it seen.

Progress is the mailbox's UIDVALIDITY and the last UID processed, kept in the store
(`imap_state`, keyed by host, user and mailbox, never the password). A poll takes the
messages with a higher UID, in order; for each it records the reply (`ReplyDesk`),
sets `\\Seen`, then advances the cursor. A crash between recording and marking is
harmless: the message is processed again and recorded once (by Message-ID). A new
UIDVALIDITY starts over from the first message, with the same protection. Nothing is
ever deleted or expunged (the session ends with LOGOUT, never CLOSE).

The stdlib's blocking `imaplib` runs on a thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import ipaddress
import logging
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field

from campaign_core.inbound import parse_raw
from campaign_core.replies import InboundResult, ReplyDesk
from campaign_core.store.base import Store

log = logging.getLogger("campaign.imap")

SETTING = "CAMPAIGN_IMAP_URL"
#: The most messages one poll processes (the next poll goes on from there).
POLL_LIMIT = 200
#: The first bytes of a message read (attachments past them are not needed).
MAX_MESSAGE_BYTES = 5_000_000


class ImapError(Exception):
    """The mailbox cannot be read: unreachable, refused, or misconfigured (never the password)."""


@dataclass(frozen=True)
class ImapConfig:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    mailbox: str = "INBOX"
    security: Literal["ssl", "starttls"] = "ssl"
    timeout: float = 30.0

    @property
    def key(self) -> str:
        """The mailbox's name in the store and the logs: no password."""
        return f"{self.user}@{self.host}:{self.port}/{self.mailbox}"


def parse_imap_url(url: str) -> ImapConfig:
    """`imaps://user:pass@host[:port]/MAILBOX` (TLS) or `imap://...` (STARTTLS when offered);
    the user and password percent-encoded. ValueError names the setting, never the password."""
    parts = urlsplit(url.strip())
    if parts.scheme not in {"imap", "imaps"}:
        raise ValueError(f"{SETTING} must start with imaps:// (or imap://), e.g. "
                         "imaps://user:password@mail.example.com/INBOX")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{SETTING}: the port is not a number") from None
    if not parts.hostname:
        raise ValueError(f"{SETTING}: no host")
    if not parts.username or parts.password is None:
        raise ValueError(f"{SETTING}: give the user and password (imaps://user:password@host/INBOX)")
    mailbox = unquote(parts.path.lstrip("/")) or "INBOX"
    if not mailbox.isascii() or any(c in mailbox for c in '"\\\r\n'):
        raise ValueError(f"{SETTING}: the mailbox name must be ASCII without quotes or backslashes")
    ssl_on = parts.scheme == "imaps"
    return ImapConfig(host=parts.hostname, port=port or (993 if ssl_on else 143),
                      user=unquote(parts.username), password=unquote(parts.password),
                      mailbox=mailbox, security="ssl" if ssl_on else "starttls")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Mailbox:
    """One blocking IMAP session on one mailbox (call it from a thread)."""

    def __init__(self, config: ImapConfig) -> None:
        self.config = config
        self.conn: imaplib.IMAP4 | None = None

    def open(self) -> int:
        """Connect, secure, log in and select the mailbox read-write; its UIDVALIDITY."""
        cfg = self.config
        context = ssl.create_default_context()
        try:
            if cfg.security == "ssl":
                conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(cfg.host, cfg.port, ssl_context=context,
                                                        timeout=cfg.timeout)
            else:
                conn = imaplib.IMAP4(cfg.host, cfg.port, timeout=cfg.timeout)
            self.conn = conn
            if cfg.security == "starttls":
                if "STARTTLS" in conn.capabilities:
                    conn.starttls(ssl_context=context)
                elif not is_loopback(cfg.host):
                    raise ImapError(f"{cfg.key}: the server offers no STARTTLS; the password is "
                                    "not sent in clear beyond this machine: use imaps://")
            conn.login(cfg.user, cfg.password)
            typ, data = conn.select(_quoted(cfg.mailbox))
            if typ != "OK":
                raise ImapError(f"{cfg.key}: cannot select the mailbox: {_said(data)}")
            _, found = conn.response("UIDVALIDITY")
            if not found or found[0] is None:
                raise ImapError(f"{cfg.key}: the server gave no UIDVALIDITY")
            return int(found[0])
        except imaplib.IMAP4.error as exc:  # refused login, protocol errors
            raise ImapError(f"{cfg.key}: {_clean(str(exc), cfg.password)}") from None
        except (OSError, ssl.SSLError) as exc:
            raise ImapError(f"{cfg.key}: not reachable: {exc.__class__.__name__}: "
                            f"{_clean(str(exc), cfg.password)}") from None

    def _conn(self) -> imaplib.IMAP4:
        if self.conn is None:
            raise ImapError(f"{self.config.key}: not open")
        return self.conn

    def uids_after(self, last: int) -> list[int]:
        """The UIDs above `last`, in order (`n:*` also names the highest: filtered out)."""
        typ, data = self._conn().uid("SEARCH", "UID", f"{last + 1}:*")
        if typ != "OK":
            raise ImapError(f"{self.config.key}: UID SEARCH failed: {_said(data)}")
        words = b" ".join(d for d in data if isinstance(d, bytes)).split()
        return sorted(u for u in (int(w) for w in words if w.isdigit()) if u > last)

    def fetch(self, uid: int) -> bytes | None:
        """The message's first bytes, without setting `\\Seen` (BODY.PEEK); None if gone."""
        typ, data = self._conn().uid("FETCH", str(uid), f"(BODY.PEEK[]<0.{MAX_MESSAGE_BYTES}>)")
        if typ != "OK":
            raise ImapError(f"{self.config.key}: UID FETCH {uid} failed: {_said(data)}")
        chunks = [d[1] for d in data if isinstance(d, tuple) and len(d) == 2]
        return chunks[0] if chunks and isinstance(chunks[0], bytes) else None

    def mark_seen(self, uid: int) -> None:
        typ, data = self._conn().uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Seen)")
        if typ != "OK":
            raise ImapError(f"{self.config.key}: cannot mark UID {uid} seen: {_said(data)}")

    def logout(self) -> None:
        """LOGOUT only: CLOSE would expunge messages someone else marked deleted."""
        if self.conn is not None:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                self.conn.logout()
            self.conn = None


def _quoted(mailbox: str) -> str:
    return mailbox if re.fullmatch(r"[A-Za-z0-9._/-]+", mailbox) else f'"{mailbox}"'


def _said(data: Sequence[object]) -> str:
    return " ".join(d.decode("utf-8", "replace") if isinstance(d, bytes) else str(d)
                    for d in data)[:300]


def _clean(text: str, password: str) -> str:
    return text.replace(password, "***") if password else text


class PollReport(BaseModel):
    """One pass over the mailbox."""

    mailbox: str
    uidvalidity: int
    last_uid: int
    processed: int = 0
    more: bool = Field(default=False, description="More new messages than one poll takes.")
    results: list[InboundResult] = Field(default_factory=list)


async def poll_mailbox(config: ImapConfig, store: Store, desk: ReplyDesk, *,
                       limit: int = POLL_LIMIT, progress: Callable[[int], None] | None = None
                       ) -> PollReport:
    """Process the mailbox's new messages, each once, in UID order (see the module doc)."""
    box = Mailbox(config)
    try:
        uidvalidity = await asyncio.to_thread(box.open)
        state = await store.get_imap_state(config.key)
        last = state[1] if state is not None and state[0] == uidvalidity else 0
        if state is not None and state[0] != uidvalidity:
            log.warning("imap %s: UIDVALIDITY changed (%s -> %s): reading the mailbox again; "
                        "messages already recorded are recognised by Message-ID",
                        config.key, state[0], uidvalidity)
        uids = await asyncio.to_thread(box.uids_after, last)
        report = PollReport(mailbox=config.key, uidvalidity=uidvalidity, last_uid=last,
                            more=len(uids) > limit)
        for uid in uids[:limit]:
            raw = await asyncio.to_thread(box.fetch, uid)
            if raw is not None:
                report.results.append(await desk.process(parse_raw(raw)))
            await asyncio.to_thread(box.mark_seen, uid)
            await store.save_imap_state(config.key, uidvalidity, uid)
            report.last_uid, report.processed = uid, report.processed + 1
            if progress is not None:
                progress(uid)
        return report
    finally:
        await asyncio.to_thread(box.logout)


class ReplyPollInput(BaseModel):
    """What the reply-mailbox schedule starts its workflow with: no address, no password
    (the worker reads CAMPAIGN_IMAP_URL itself)."""

    queue_prefix: str = ""
    limit: int = Field(default=POLL_LIMIT, ge=1, le=5000)


class PollSummary(BaseModel):
    """A poll as Temporal history keeps it: counts only, no address or text."""

    mailbox: str
    processed: int
    replies: int
    auto_replies: int
    bounces: int
    unmatched: int
    more: bool
    last_uid: int

    @classmethod
    def of(cls, report: PollReport) -> PollSummary:
        kinds = [r.kind for r in report.results]
        return cls(mailbox=report.mailbox, processed=report.processed,
                   replies=kinds.count("reply"), auto_replies=kinds.count("auto_reply"),
                   bounces=kinds.count("bounce"),
                   unmatched=sum(r.status == "unmatched" for r in report.results),
                   more=report.more, last_uid=report.last_uid)
