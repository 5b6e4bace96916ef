"""The IMAP reply mailbox (`CAMPAIGN_IMAP_URL`): read each new message once, mark it seen.

Progress is the mailbox's UIDVALIDITY and the last UID processed, kept in the store
(`imap_state`, keyed by host, user and mailbox, never the password). A poll takes the
messages with a higher UID, in order; for each it records the reply (`ReplyDesk`),
sets `\\Seen`, then advances the cursor. A crash between recording and marking is
harmless: the message is processed again and recorded once (by Message-ID). A new
UIDVALIDITY starts over from the first message, with the same protection. Nothing is
ever deleted or expunged (the session ends with LOGOUT, never CLOSE).

Each message is handled on its own (issue 25): one that cannot be parsed, or that the
server sends more bytes of than a message may have, is recorded as kind `unparseable`,
marked `\\Seen`, and the cursor moves past it, so no message can stop the ones behind it.
The server is not trusted either: a response may bring at most MAX_RESPONSE_BYTES (imaplib
would read a literal of any announced size into memory), and a UID or UIDVALIDITY outside
RFC 3501's 32-bit range is refused before it can reach the store.

The stdlib's blocking `imaplib` runs on a thread (`asyncio.to_thread`), and so does
parsing: the event loop that heartbeats (and, in `campaign dev`, serves HTTP) stays free.
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

from campaign_core.envelope import digest
from campaign_core.inbound import MAX_RAW_BYTES, UNKNOWN_SENDER, InboundMessage, parse_raw
from campaign_core.metrics import process_metrics
from campaign_core.replies import InboundResult, ReplyDesk
from campaign_core.store.base import Store

log = logging.getLogger("campaign.imap")

SETTING = "CAMPAIGN_IMAP_URL"
#: The most messages one poll processes (the next poll goes on from there).
POLL_LIMIT = 200
#: The first bytes of a message read (attachments past them are not needed); all that
#: `parse_raw` reads.
MAX_MESSAGE_BYTES = MAX_RAW_BYTES
#: The most one command's response may bring (bytes): one message's partial FETCH, and
#: room for the lines around it. A server announcing a larger literal is refused.
MAX_RESPONSE_BYTES = MAX_MESSAGE_BYTES + 1_000_000
#: UIDs and UIDVALIDITY are 32-bit (RFC 3501 `nz-number`): what the store keeps fits.
MAX_UID = 2**32 - 1


class ImapError(Exception):
    """The mailbox cannot be read: unreachable, refused, or misconfigured (never the password)."""


class ResponseTooLarge(ImapError):
    """The server sent more for one command than MAX_RESPONSE_BYTES; the session is dropped
    (the rest of its response is still on the wire)."""


class _Bounded(imaplib.IMAP4):
    """An imaplib session whose every response is bounded: imaplib reads a literal of
    whatever size the server announces (`{N}`) into memory at once, and any number of
    lines. `left` is what the current command's response may still bring; the Mailbox
    resets it before each command."""

    left: int = MAX_RESPONSE_BYTES

    def read(self, size: int) -> bytes:
        if size > self.left:
            raise ResponseTooLarge(f"the server announced a literal of {size} bytes; at most "
                                   f"{MAX_RESPONSE_BYTES} are read for one command")
        self.left -= size
        return super().read(size)

    def readline(self) -> bytes:
        line = super().readline()
        self.left -= len(line)
        if self.left < 0:
            raise ResponseTooLarge(f"the server sent more than {MAX_RESPONSE_BYTES} bytes "
                                   "for one command")
        return line


class _BoundedSSL(_Bounded, imaplib.IMAP4_SSL):
    """`_Bounded` over TLS."""


def _number(value: object, what: str, key: str) -> int:
    """A UID or UIDVALIDITY from the server: 1 to 2**32-1 (RFC 3501), else ImapError. A
    larger one would overflow the store's INTEGER (`save_imap_state`) or, past 4,300
    digits, int() itself."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    if not re.fullmatch(r"[0-9]{1,10}", text) or not 0 < int(text) <= MAX_UID:
        raise ImapError(f"{key}: the server gave {what} {text[:40]!r}, not a number from 1 to "
                        f"{MAX_UID} (RFC 3501): nothing is processed or recorded from it")
    return int(text)


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


def parse_imap_url(url: str, *, setting: str = SETTING) -> ImapConfig:
    """`imaps://user:pass@host[:port]/MAILBOX` (TLS) or `imap://...` (STARTTLS when offered);
    the user and password percent-encoded. ValueError names the `setting` the URL came from
    (CAMPAIGN_IMAP_URL, or a sender's imap_url), never the password."""
    parts = urlsplit(url.strip())
    if parts.scheme not in {"imap", "imaps"}:
        raise ValueError(f"{setting} must start with imaps:// (or imap://), e.g. "
                         "imaps://user:password@mail.example.com/INBOX")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{setting}: the port is not a number") from None
    if not parts.hostname:
        raise ValueError(f"{setting}: no host")
    if not parts.username or parts.password is None:
        raise ValueError(f"{setting}: give the user and password (imaps://user:password@host/INBOX)")
    mailbox = unquote(parts.path.lstrip("/")) or "INBOX"
    if not mailbox.isascii() or any(c in mailbox for c in '"\\\r\n'):
        raise ValueError(f"{setting}: the mailbox name must be ASCII without quotes or backslashes")
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
                conn: _Bounded = _BoundedSSL(cfg.host, cfg.port, ssl_context=context,
                                             timeout=cfg.timeout)
            else:
                conn = _Bounded(cfg.host, cfg.port, timeout=cfg.timeout)
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
            return _number(found[0], "UIDVALIDITY", cfg.key)
        except imaplib.IMAP4.error as exc:  # refused login, protocol errors
            raise ImapError(f"{cfg.key}: {_clean(str(exc), cfg.password)}") from None
        except (OSError, ssl.SSLError) as exc:
            raise ImapError(f"{cfg.key}: not reachable: {exc.__class__.__name__}: "
                            f"{_clean(str(exc), cfg.password)}") from None

    def _conn(self) -> imaplib.IMAP4:
        """The session, its response budget renewed for the next command."""
        if self.conn is None:
            raise ImapError(f"{self.config.key}: not open")
        if isinstance(self.conn, _Bounded):
            self.conn.left = MAX_RESPONSE_BYTES
        return self.conn

    def uids_after(self, last: int) -> list[int]:
        """The UIDs above `last`, in order (`n:*` also names the highest: filtered out).
        ImapError if the server names a UID outside 1..2**32-1."""
        if last >= MAX_UID:
            return []
        typ, data = self._conn().uid("SEARCH", "UID", f"{last + 1}:*")
        if typ != "OK":
            raise ImapError(f"{self.config.key}: UID SEARCH failed: {_said(data)}")
        words = b" ".join(d for d in data if isinstance(d, bytes)).split()
        uids = [_number(w, "UID", self.config.key) for w in words if w.isdigit()]
        return sorted(u for u in uids if u > last)

    def fetch(self, uid: int) -> bytes | None:
        """The message's first bytes, without setting `\\Seen` (BODY.PEEK); None if gone.
        ResponseTooLarge (the session dropped) if the server sends more than a message."""
        try:
            typ, data = self._conn().uid("FETCH", str(uid),
                                         f"(BODY.PEEK[]<0.{MAX_MESSAGE_BYTES}>)")
        except ResponseTooLarge as exc:
            self.drop()
            raise ResponseTooLarge(f"{self.config.key}: UID FETCH {uid}: {exc}") from None
        if typ != "OK":
            raise ImapError(f"{self.config.key}: UID FETCH {uid} failed: {_said(data)}")
        chunks = [d[1] for d in data if isinstance(d, tuple) and len(d) == 2]
        return chunks[0] if chunks and isinstance(chunks[0], bytes) else None

    def mark_seen(self, uid: int) -> None:
        typ, data = self._conn().uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Seen)")
        if typ != "OK":
            raise ImapError(f"{self.config.key}: cannot mark UID {uid} seen: {_said(data)}")

    def drop(self) -> None:
        """Close the socket without a word: the session is out of step with the server."""
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.shutdown()
            self.conn = None

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


class MailboxPoll(BaseModel):
    """One mailbox of a pass (issue 28): the shared one (`sender` None) or a sender's."""

    sender: str | None = Field(default=None, description="None: CAMPAIGN_IMAP_URL's mailbox.")
    mailbox: str | None = Field(default=None, description="user@host:port/MAILBOX (no "
                                "password); None when its URL could not be read.")
    processed: int = 0
    last_uid: int = 0
    more: bool = False
    error: str | None = Field(default=None, description="Why it was skipped this time "
                              "(never the password).")


class PollReport(BaseModel):
    """One pass over the reply mailboxes. With only CAMPAIGN_IMAP_URL's, exactly that
    mailbox's pass; with senders' mailboxes too (issue 28), `mailbox` names every one read,
    `uidvalidity` and `last_uid` are the first one's, the counts and `results` are of all
    of them, and `mailboxes` has each one's (a skipped one with its `error`)."""

    mailbox: str
    uidvalidity: int
    last_uid: int
    processed: int = 0
    more: bool = Field(default=False, description="More new messages than one poll takes.")
    results: list[InboundResult] = Field(default_factory=list)
    mailboxes: list[MailboxPoll] = Field(default_factory=list)


async def poll_mailbox(config: ImapConfig, store: Store, desk: ReplyDesk, *,
                       limit: int = POLL_LIMIT, progress: Callable[[int], None] | None = None
                       ) -> PollReport:
    """Process the mailbox's new messages, each once, in UID order (see the module doc).

    Each message on its own: fetched and parsed on a worker thread, then matched and
    recorded (`ReplyDesk`), or recorded as unparseable; either way marked seen and passed.
    What stops a pass is the mailbox or the store failing, never a message's content."""
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
            try:
                raw = await asyncio.to_thread(box.fetch, uid)
            except ResponseTooLarge as exc:
                log.warning("imap %s: %s", config.key, exc)
                report.results.append(await record_unparseable(
                    store, key=_uid_key(config, uidvalidity, uid), reason=str(exc)))
                if await asyncio.to_thread(box.open) != uidvalidity:
                    raise ImapError(f"{config.key}: UIDVALIDITY changed during the poll; the "
                                    "next poll reads the mailbox again") from None
            else:
                if raw is not None:
                    report.results.append(await _process(store, desk, raw))
            await asyncio.to_thread(box.mark_seen, uid)
            await store.save_imap_state(config.key, uidvalidity, uid)
            report.last_uid, report.processed = uid, report.processed + 1
            if progress is not None:
                progress(uid)
        return report
    finally:
        await asyncio.to_thread(box.logout)


async def _process(store: Store, desk: ReplyDesk, raw: bytes) -> InboundResult:
    """Parse on a worker thread (`parse_raw` never raises), then match and record; a message
    that cannot be parsed is recorded as such, by its Message-ID or its bytes' digest."""
    msg: InboundMessage = await asyncio.to_thread(parse_raw, raw)
    if msg.unparseable is not None:
        return await record_unparseable(store, key=msg.key, reason=msg.unparseable,
                                        email=msg.from_, subject=msg.subject)
    return await desk.process(msg)


def _uid_key(config: ImapConfig, uidvalidity: int, uid: int) -> str:
    """The record's key for a message we have no bytes of: its place in this mailbox."""
    return f"{digest([config.key, uidvalidity, uid])[7:39]}@unparseable.invalid"


async def record_unparseable(store: Store, *, key: str, reason: str,
                             email: str = UNKNOWN_SENDER, subject: str = "") -> InboundResult:
    """A message that cannot be read, recorded once (by `key`) as kind `unparseable` and
    matched to no lead: nothing it says is believed, so it stops no sequence and suppresses
    nobody; a person finds it among the unmatched (`campaign replies --json`)."""
    reply_id, new = await store.record_reply(message_id=key, kind="unparseable", email=email,
                                             source="imap", subject=subject, text="")
    if new:
        process_metrics().reply(kind="unparseable", matched_by="none")
    log.warning("inbound imap: a message that cannot be parsed (%s) recorded as unparseable",
                reason)
    return InboundResult(message_id=key, kind="unparseable", reason=f"cannot be parsed: {reason}",
                         status="unmatched", reply_id=reply_id, duplicate=not new)


class ReplyPollInput(BaseModel):
    """What the reply-mailbox schedule starts its workflow with: no address, no password
    (the worker reads CAMPAIGN_IMAP_URL itself)."""

    queue_prefix: str = ""
    limit: int = Field(default=POLL_LIMIT, ge=1, le=5000)


class PollSummary(BaseModel):
    """A poll as Temporal history keeps it: counts only, no address or text (a mailbox's
    user@host, never its password; a skipped sender by name only, its reason in the log)."""

    mailbox: str
    processed: int
    replies: int
    auto_replies: int
    bounces: int
    unmatched: int
    more: bool
    last_uid: int
    unparseable: int = Field(default=0, description="Messages that could not be parsed "
                             "(recorded as such, and passed over).")
    mailboxes: int = Field(default=1, description="Mailboxes read (issue 28: the shared one "
                           "and each sender's).")
    skipped: list[str] = Field(default_factory=list, description="Senders whose mailbox "
                               "could not be read this time (the worker's log says why).")

    @classmethod
    def of(cls, report: PollReport) -> PollSummary:
        kinds = [r.kind for r in report.results]
        read = [m for m in report.mailboxes if m.error is None]
        return cls(mailbox=report.mailbox, processed=report.processed,
                   replies=kinds.count("reply"), auto_replies=kinds.count("auto_reply"),
                   bounces=kinds.count("bounce"), unparseable=kinds.count("unparseable"),
                   unmatched=sum(r.status == "unmatched" for r in report.results),
                   more=report.more, last_uid=report.last_uid,
                   mailboxes=len(read) if report.mailboxes else 1,
                   skipped=[m.sender or "" for m in report.mailboxes if m.error is not None])
