"""Inbound mail: the neutral shape replies arrive in, and what kind of reply each one is.

Replies reach the engine two ways, `POST /webhooks/inbound` (a relay maps SendGrid
Inbound Parse, Mailgun routes or Postmark inbound onto `InboundMessage`) and the IMAP
reply mailbox (`parse_raw` turns an RFC 5322 message into the same model). Both are
untrusted, so everything is validated here: sizes capped, addresses parsed with
`email.utils` and normalised like leads, header-unsafe characters removed. `classify`
then says whether a person replied, a machine did (RFC 3834, out-of-office), or a
mail system returned our message (an RFC 3464 delivery status notification).
Pure: no I/O, no store.

Anyone who can send an email controls what is parsed here (issue 25), so every step
takes time linear in its input, reads at most its cap, and `parse_raw` never raises:
a message it cannot read comes back marked `unparseable`, to be recorded as such and
passed over, never to stop the messages behind it. The callers run parsing on a worker
thread, so that even a large message leaves /health and activity heartbeats alone.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.feedparser import BytesFeedParser
from email.header import decode_header, make_header
from email.message import Message
from email.policy import Policy, compat32
from email.utils import getaddresses, parseaddr
from html import unescape
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from campaign_core.envelope import digest
from campaign_core.leads import normalise_email

#: `unparseable`: a raw message that could not be read at all (`parse_raw`); recorded, and
#: matched to no one.
ReplyKind = Literal["reply", "auto_reply", "bounce", "unparseable"]

#: Longest accepted text of one message (characters); only the first lines are kept.
MAX_TEXT = 1_000_000
#: The most of a raw message read (bytes): the IMAP mailbox fetches no more than this.
MAX_RAW_BYTES = 5_000_000
#: How deep MIME parts may nest, and how many a message may have, before it is not read:
#: a person's reply has a handful; 1,200 nested multiparts overflowed the parser's stack.
MAX_MIME_DEPTH = 20
MAX_MIME_PARTS = 200
#: Headers kept per part (the first ones), and the cap on the values the MIME parser
#: reads itself (Content-Type and its kin), whose parameter splitter is quadratic.
MAX_PART_HEADERS = 1000
MAX_STRUCTURE_HEADER = 1000
#: How much of an unparseable message is read for its headers (bytes).
MAX_HEADER_BYTES = 1_000_000
#: What classification and the kept excerpt read of a message's text: its first characters
#: (so at most as many lines).
CLASSIFY_CHARS = 65_536
#: How much of a reply's text is stored: its first lines, at most this many characters.
EXCERPT_CHARS = 2000
MAX_HEADERS = 500
MAX_HEADER_VALUE = 10_000
MAX_IDS = 100  # Message-IDs in References
#: The neutral shape's `from` when a raw message has none we can read.
UNKNOWN_SENDER = "unknown@invalid"

#: CR, LF and the other C0/C1 controls (tab excepted) have no place in a header value.
_HEADER_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_TEXT_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MSG_ID = re.compile(r"<([^<>\s]{1,990})>")
_ADDRESS = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


def header_safe(value: str) -> str:
    """A header value on one line: line breaks become spaces, other controls go."""
    return " ".join(_HEADER_UNSAFE.sub(" ", value).split())


def message_ids(value: str | list[str] | None) -> list[str]:
    """The bare Message-IDs in an In-Reply-To/References value (`<a@b> <c@d>`, or a list)."""
    if value is None:
        return []
    found: list[str] = []
    for text in value if isinstance(value, list) else [value]:
        # relays that drop the brackets: whitespace- or comma-separated
        found += _MSG_ID.findall(text) or [
            t for t in re.split(r"[\s,]+", header_safe(text)) if "@" in t]
    return list(dict.fromkeys(f.strip("<>") for f in found))[-MAX_IDS:]


def bare_address(value: str, field: str) -> str:
    """The normalised addr-spec of an address header (`Ana <ana@x.org>` -> `ana@x.org`).

    ValueError for anything that is not one, whatever the parser raised: `email.utils`
    recurses on nested comments (RecursionError), and a validator that lets that out
    turns a webhook call into a 500 that the relay retries for ever."""
    try:
        _, addr = parseaddr(header_safe(value))
        addr = normalise_email(addr) if addr and len(addr) <= 320 else ""
    except Exception:
        addr = ""
    if not _ADDRESS.match(addr):
        raise ValueError(f"{field}: {value[:80]!r} is not an email address")
    return addr


class DeliveryStatus(BaseModel):
    """The per-recipient fields of a delivery status notification (RFC 3464) we act on."""

    model_config = ConfigDict(extra="ignore")

    final_recipient: str | None = Field(default=None, max_length=320)
    original_message_id: str | None = Field(default=None, max_length=998)
    action: str | None = Field(default=None, max_length=40)
    status: str | None = Field(default=None, max_length=40)
    diagnostic: str | None = Field(default=None, max_length=1000)

    @field_validator("final_recipient")
    @classmethod
    def _recipient(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # "rfc822; ana@example.com"
        return bare_address(value.split(";", 1)[-1], "dsn.final_recipient")

    @field_validator("original_message_id")
    @classmethod
    def _mid(cls, value: str | None) -> str | None:
        ids = message_ids(value)
        return ids[0] if ids else None

    @field_validator("action", "status", "diagnostic")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        return header_safe(value).lower() if value is not None else None

    @property
    def permanent(self) -> bool:
        """A hard bounce: the action failed (or, without an action, a 5.x.x status)."""
        if self.action:
            return self.action.startswith("failed")
        return bool(self.status and self.status.startswith("5"))

    @property
    def is_failure(self) -> bool:
        """Failed or delayed; `delivered`, `relayed` and `expanded` are mere notices."""
        if self.action:
            return self.action.startswith(("failed", "delayed"))
        return bool(self.status and self.status[:1] in {"4", "5"})


class InboundMessage(BaseModel):
    """One received message in the neutral shape (`POST /webhooks/inbound` takes this).

    `from` and `to` hold bare, normalised addresses (display names are dropped: the
    engine needs the address only); `in_reply_to` and `references` the bare
    Message-IDs; `headers` lower-cased names. `dsn` is filled from a raw message's
    delivery-status part; a relay may send it too.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    from_: str = Field(alias="from", min_length=3, max_length=998,
                       description="The sender, e.g. `Ana <ana@example.com>`.")
    to: list[str] = Field(default_factory=list, max_length=100,
                          description="Recipients: a list, or one comma-separated string.")
    subject: str = Field(default="", max_length=998)
    message_id: str | None = Field(default=None, max_length=998,
                                   description="The message's own Message-ID.")
    in_reply_to: list[str] = Field(default_factory=list)
    references: list[str] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict, max_length=MAX_HEADERS)
    text: str = Field(default="", max_length=MAX_TEXT, description="The plain-text body.")
    dsn: DeliveryStatus | None = None
    #: Set by `parse_raw` alone (never from a webhook's body): why the message could not be
    #: read, and the key of its bytes when it has no Message-ID.
    _unparseable: str | None = PrivateAttr(default=None)
    _raw_key: str | None = PrivateAttr(default=None)

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        return bare_address(value, "from")

    @field_validator("to", mode="before")
    @classmethod
    def _to(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            try:
                pairs = getaddresses([header_safe(v) for v in value])
            except Exception:  # nested comments recurse in email.utils: no readable recipient
                return []
            return [normalise_email(a) for _, a in pairs[:100]
                    if len(a) <= 320 and _ADDRESS.match(a.strip())]
        return value

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        return header_safe(value)

    @field_validator("message_id")
    @classmethod
    def _message_id(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        ids = message_ids(value)
        if not ids:
            raise ValueError("message_id: not a Message-ID (expected <local@domain>)")
        return ids[0]

    @field_validator("in_reply_to", "references", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> Any:
        if value is None or isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return message_ids(value)
        return value

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out: dict[str, str] = {}
        for name, raw in value.items():
            if not isinstance(name, str) or not 0 < len(name) <= 200:
                raise ValueError(f"headers: a header name must be text of 1-200 characters, "
                                 f"not {str(name)[:40]!r}")
            if isinstance(raw, list):  # relays that keep repeated headers as a list
                raw = ", ".join(str(v) for v in raw)
            if not isinstance(raw, str):
                raise ValueError(f"headers.{name[:40]}: the value must be text")
            if len(raw) > MAX_HEADER_VALUE:
                raise ValueError(f"headers.{name[:40]}: longer than {MAX_HEADER_VALUE} characters")
            out.setdefault(header_safe(name).lower(), header_safe(raw))
        return out

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        return _TEXT_UNSAFE.sub("", value.replace("\r\n", "\n"))

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    @property
    def unparseable(self) -> str | None:
        """Why `parse_raw` could not read the message; None when it could."""
        return self._unparseable

    @property
    def key(self) -> str:
        """The message's identity for dedup: its Message-ID, or a digest of its content
        (of its bytes, for an unparseable message: its content is not known)."""
        if self.message_id:
            return self.message_id
        if self._raw_key:
            return self._raw_key
        return f"{digest([self.from_, self.subject, self.text])[7:39]}@inbound.invalid"


# -- classification --------------------------------------------------------------------------

_OOO_SUBJECT = re.compile(
    r"out of (the )?office|automatic reply|auto[- ]?reply|auto[- ]?respon[sd]|"
    r"abwesenheit|automatische antwort|r[ée]ponse automatique|absence du bureau|"
    r"respuesta autom[áa]tica|fuera de la oficina",
    re.IGNORECASE,
)
_MAIL_SYSTEM = re.compile(r"^(mailer-daemon|postmaster)@", re.IGNORECASE)
#: Headers that mark an automatic reply besides RFC 3834's `Auto-Submitted`: the common
#: vacation programs' and ticket systems', and Microsoft Exchange's inbox-rule replies.
AUTO_REPLY_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder", "x-autogenerated",
                      "x-auto-reply-from", "x-mail-autoreply", "x-ms-exchange-inbox-rules-loop",
                      "x-ms-exchange-generated-message-source",
                      "x-ms-exchange-organization-autoresponse")


@dataclass(frozen=True)
class Classification:
    """What a message is, and why we think so (for the audit trail and the answer)."""

    kind: ReplyKind
    reason: str
    dsn: DeliveryStatus | None = None

    @property
    def permanent_bounce(self) -> bool:
        return self.kind == "bounce" and self.dsn is not None and self.dsn.permanent


def is_delivery_report(content_type: str) -> bool:
    """`multipart/report; report-type=delivery-status` (RFC 3462/6522, RFC 3464)."""
    main, _, params = content_type.partition(";")
    if main.strip().lower() != "multipart/report":
        return False
    return bool(re.search(r"report-type\s*=\s*\"?delivery-status\"?", params, re.IGNORECASE))


def classify(msg: InboundMessage) -> Classification:
    """A bounce (DSN), an automatic reply (RFC 3834 headers, OOO subjects, mail systems),
    or a person's reply. DSNs are checked first: they carry `Auto-Submitted` too.
    A message `parse_raw` could not read is `unparseable`: nothing in it is believed."""
    if msg.unparseable is not None:
        return Classification("unparseable", f"cannot be parsed: {msg.unparseable}")
    dsn = msg.dsn
    if dsn is None and is_delivery_report(msg.header("content-type")):
        dsn = dsn_from_text(msg.text)
    if dsn is not None:
        if dsn.is_failure:
            return Classification("bounce", f"delivery status notification ({dsn.action or dsn.status})",
                                  dsn)
        return Classification("auto_reply", f"delivery status notice ({dsn.action or 'no action'})")
    auto = msg.header("auto-submitted").split(";", 1)[0].strip().lower()
    if auto and auto != "no":
        return Classification("auto_reply", f"Auto-Submitted: {auto}")
    for name in AUTO_REPLY_HEADERS:
        if name in msg.headers and msg.headers[name].strip().lower() not in ("no", "false"):
            return Classification("auto_reply", f"{name} header")
    precedence = msg.header("precedence").strip().lower()
    if precedence in {"auto_reply", "bulk", "junk"}:
        return Classification("auto_reply", f"Precedence: {precedence}")
    if _OOO_SUBJECT.search(msg.subject):
        return Classification("auto_reply", "out-of-office subject")
    if _MAIL_SYSTEM.match(msg.from_):
        return Classification("auto_reply", "from a mail system")
    return Classification("reply", "a person's reply")


_DSN_FIELDS = {
    "final-recipient": "final_recipient", "original-message-id": "original_message_id",
    "action": "action", "status": "status", "diagnostic-code": "diagnostic",
}


def dsn_from_fields(fields: list[tuple[str, str]]) -> DeliveryStatus | None:
    """The first recipient's fields (later ones are other recipients), or None if unusable."""
    found: dict[str, str] = {}
    for name, value in fields:
        key = _DSN_FIELDS.get(name.strip().lower())
        if key and key not in found:
            found[key] = value
        elif name.strip().lower() == "message-id" and "original_message_id" not in found:
            found["original_message_id"] = value  # the returned message's own header
    if not found:
        return None
    try:
        return DeliveryStatus.model_validate(found)
    except ValueError:
        found.pop("final_recipient", None)
        try:
            return DeliveryStatus.model_validate(found)
        except ValueError:
            return None


def dsn_from_text(text: str) -> DeliveryStatus:
    """DSN fields from a relay's text of a multipart/report (its parts flattened).

    Read line by line from the first CLASSIFY_CHARS characters: a MULTILINE `^\\s*` regex
    did this before, and it is quadratic in blank lines (`\\s` crosses them), so 60,000
    newlines froze the process that served /health for half a minute (issue 25)."""
    return dsn_from_fields(list(_field_lines(text[:CLASSIFY_CHARS], indented=True))) \
        or DeliveryStatus()


def with_report(msg: InboundMessage) -> InboundMessage:
    """`msg` with its DSN fields read from its text when its Content-Type says it is a
    delivery report and no `dsn` came with it: what `classify` would read, done here so
    the caller can do it on a worker thread, off the event loop that serves HTTP."""
    if msg.dsn is None and is_delivery_report(msg.header("content-type")):
        msg.dsn = dsn_from_text(msg.text)
    return msg


_FIELD_NAME = re.compile(r"[A-Za-z-]{2,40}")


def _field_lines(text: str, *, indented: bool) -> Iterator[tuple[str, str]]:
    """`Name: value` lines (a name of 2-40 letters or hyphens, a value of 1-1000
    characters); linear in the text, which the callers cap at CLASSIFY_CHARS."""
    for line in text.split("\n"):
        name, colon, value = (line.lstrip() if indented else line).partition(":")
        value = value.lstrip(" \t")
        if colon and 0 < len(value) <= 1000 and _FIELD_NAME.fullmatch(name):
            yield name, value


# -- raw RFC 5322 messages (the IMAP mailbox) ------------------------------------------------
#
# Anyone can put a message in the reply mailbox, so reading one must take time linear in
# its size, and no message may stop the ones behind it (issue 25). The stdlib's email
# package is used in its compat32 form, which keeps header values as the raw strings they
# arrived as: the modern policy's header parser is quadratic on values such as 4,000
# quotes in `From` and recurses on nested comments. The MIME parser itself is
# bounded before it can go deep: each part counts against MAX_MIME_PARTS and its depth
# against MAX_MIME_DEPTH as the parser creates it (1,200 nested multiparts raised
# RecursionError inside the parser), and every header value is cut to its cap as it is
# stored (the parser re-reads Content-Type values with a quadratic parameter splitter).


class MimeLimitError(ValueError):
    """The message's MIME structure is deeper or larger than a reply's ever is."""


#: The header values the MIME parser reads itself, for each part, with a parameter
#: splitter quadratic in the value: they are cut to MAX_STRUCTURE_HEADER characters.
_STRUCTURE_HEADERS = frozenset({"content-type", "content-disposition",
                                "content-transfer-encoding"})


class _Part(Message):
    """One part as the bounded reader builds it: it knows its depth, keeps its first
    MAX_PART_HEADERS headers, each value cut to its cap (References keeps its end: the
    newest Message-IDs are the ones a reply is matched by)."""

    depth: int = 1
    kept: int = 0

    def set_raw(self, name: str, value: str) -> None:
        if self.kept >= MAX_PART_HEADERS:
            return
        self.kept += 1
        key = name.strip().lower()
        if key in _STRUCTURE_HEADERS:
            value = value[:MAX_STRUCTURE_HEADER]
        elif key == "references":
            value = value[-MAX_HEADER_VALUE:]
        else:
            value = value[:MAX_HEADER_VALUE]
        super().set_raw(name, value)

    def attach(self, payload: Message) -> None:  # type: ignore[override]
        if isinstance(payload, _Part):
            payload.depth = self.depth + 1
            if payload.depth > MAX_MIME_DEPTH:
                raise MimeLimitError(f"MIME parts nested more than {MAX_MIME_DEPTH} deep")
        super().attach(payload)


class _Reader:
    """A compat32 MIME parse that counts the parts as the parser creates them."""

    def __init__(self) -> None:
        self.parts = 0

    def new_part(self, policy: Policy[Any] = compat32) -> _Part:
        self.parts += 1
        if self.parts > MAX_MIME_PARTS:
            raise MimeLimitError(f"more than {MAX_MIME_PARTS} MIME parts")
        return _Part(policy)

    def read(self, data: bytes, *, headers_only: bool = False) -> _Part:
        parser: BytesFeedParser[_Part] = BytesFeedParser(
            self.new_part, policy=cast("Policy[_Part]", compat32))
        self.parts = 0  # the parser calls the factory once to try it
        if headers_only:
            end = data.find(b"\n\n")
            end2 = data.find(b"\r\n\r\n")
            cut = min(e for e in (end, end2, len(data)) if e >= 0)
            data = data[:cut] + b"\r\n\r\n"
        parser.feed(data)
        return parser.close()


def parse_raw(data: bytes) -> InboundMessage:
    """An RFC 5322 message as the neutral shape. Never raises, whatever the bytes: what
    cannot be read of a message is left out (a missing sender becomes `unknown@invalid`),
    and a message that cannot be read at all comes back with `unparseable` saying why
    (its Message-ID and sender kept when they can be read), for the caller to record as
    kind `unparseable` and move past. At most MAX_RAW_BYTES are read."""
    data = bytes(data[:MAX_RAW_BYTES])
    try:
        return _parse_raw(data)
    except Exception as exc:  # any bytes at all: one message must not stop the mailbox
        reason = str(exc) if isinstance(exc, MimeLimitError) else (
            f"{type(exc).__name__} while parsing")
        return _unparseable(data, reason)


def _parse_raw(data: bytes) -> InboundMessage:
    msg = _Reader().read(data)
    raw = list(msg.raw_items())
    first: dict[str, str] = {}
    for name, value in raw:
        first.setdefault(name.strip().lower(), value)
    headers: dict[str, str] = {}
    for name, _ in raw[:MAX_HEADERS]:
        key = name.strip().lower()
        if 0 < len(key) <= 200 and key not in headers:
            headers[key] = _decoded(first[key])[:MAX_HEADER_VALUE]
    fields = {
        "from": _sender(first),
        "to": [_plain(first.get("to", ""))] if first.get("to") else [],
        "subject": _decoded(first.get("subject", ""))[:998],
        "message_id": _plain(first.get("message-id", ""))[:998] or None,
        "in_reply_to": _plain(first.get("in-reply-to", "")),
        "references": _plain(first.get("references", "")),
        "headers": headers,
        "text": _body_text(msg)[:MAX_TEXT],
        "dsn": _dsn_part(msg, headers.get("content-type", "")),
    }
    try:
        return InboundMessage.model_validate(fields)
    except ValueError:  # e.g. a Message-ID that is not one: drop what does not validate
        fields["message_id"] = None
        fields["dsn"] = None
        return InboundMessage.model_validate(fields)


def _unparseable(data: bytes, reason: str) -> InboundMessage:
    """The message that could not be parsed, as much of its envelope as can be read (its
    headers alone, each field on its own), keyed by its Message-ID or by its bytes."""
    fields: dict[str, Any] = {"from": UNKNOWN_SENDER}
    with contextlib.suppress(Exception):
        head = _Reader().read(data[:MAX_HEADER_BYTES], headers_only=True)
        first: dict[str, str] = {}
        for name, value in head.raw_items():
            first.setdefault(name.strip().lower(), value)
        with contextlib.suppress(Exception):
            fields["from"] = _sender(first)
        with contextlib.suppress(Exception):
            fields["subject"] = _decoded(first.get("subject", ""))[:998]
        with contextlib.suppress(Exception):
            ids = message_ids(_plain(first.get("message-id", "")))
            fields["message_id"] = ids[0] if ids else None
    try:
        msg = InboundMessage.model_validate(fields)
    except Exception:
        msg = InboundMessage.model_validate({"from": UNKNOWN_SENDER})
    msg._unparseable = header_safe(reason)[:300] or "unparseable"
    msg._raw_key = f"{hashlib.sha256(data).hexdigest()[:32]}@unparseable.invalid"
    return msg


def _plain(value: str) -> str:
    """A raw header value as text on one line: bytes that are not ASCII read as UTF-8."""
    if not value.isascii():
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return header_safe(value)


def _decoded(value: str) -> str:
    """`_plain`, with RFC 2047 encoded words decoded (never for addresses: a decoded
    display name could carry `<someone@else>`)."""
    text = _plain(value)
    if "=?" in text:
        with contextlib.suppress(Exception):  # an unknown charset, a broken encoding
            text = header_safe(str(make_header(decode_header(text))))
    return text


def _sender(first: dict[str, str]) -> str:
    """From, else Sender, else Return-Path, as a bare address; else `unknown@invalid`."""
    for name in ("from", "sender", "return-path"):
        value = _plain(first.get(name, ""))
        if value:
            try:
                return bare_address(value, "from")
            except ValueError:
                return UNKNOWN_SENDER
    return UNKNOWN_SENDER


def _parts(msg: Message) -> Iterator[Message]:
    """Every part, depth first in document order, without recursion (a delivery-status
    part's header blocks are not parts of the text); at most MAX_MIME_PARTS."""
    stack: list[Message] = [msg]
    seen = 0
    while stack and seen < MAX_MIME_PARTS:
        part = stack.pop()
        seen += 1
        yield part
        payload = part.get_payload()
        if isinstance(payload, list) and _ctype(part) != "message/delivery-status":
            stack.extend(reversed([p for p in payload if isinstance(p, Message)]))


def _ctype(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:  # a Content-Type the splitter cannot read: not a part we want
        return "application/octet-stream"


def _body_text(msg: Message) -> str:
    """The first text/plain part that is not an attachment; else the first text/html, as text."""
    html: str | None = None
    for part in _parts(msg):
        ctype = _ctype(part)
        if ctype.startswith(("multipart/", "message/")) or ctype == "text/rfc822-headers":
            continue
        try:
            if part.get_content_disposition() == "attachment":
                continue
        except Exception:
            continue
        if ctype == "text/plain":
            return _content(part)
        if ctype == "text/html" and html is None:
            html = _content(part)
    return html_text(html[:MAX_TEXT]) if html is not None else ""


#: Text codecs whose decoding is quadratic in the input (CPython's punycode), or that
#: are not a charset a mail part can mean.
_SLOW_CODECS = frozenset({"punycode", "idna"})


def _content(part: Message) -> str:
    """A text part's decoded text: its charset, else UTF-8; what does not decode is replaced."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # a broken transfer encoding
        return ""
    if not isinstance(payload, bytes):
        return ""
    charset = "utf-8"
    with contextlib.suppress(Exception):
        name = codecs.lookup(part.get_content_charset() or "utf-8").name
        if name not in _SLOW_CODECS:
            charset = name
    try:
        return payload.decode(charset, "replace")
    except Exception:  # a codec that fails even with errors="replace"
        return payload.decode("utf-8", "replace")


def _dsn_part(msg: Message, content_type: str) -> dict[str, Any] | None:
    """The delivery-status fields of a multipart/report DSN, plus the returned message's id."""
    if not is_delivery_report(content_type):
        return None
    fields: list[tuple[str, str]] = []
    returned: list[tuple[str, str]] = []
    for part in _parts(msg):
        ctype = _ctype(part)
        if ctype == "message/delivery-status":
            fields += _status_fields(part)
        elif ctype in {"message/rfc822", "text/rfc822-headers"} and not returned:
            returned = _returned_headers(part)
    dsn = dsn_from_fields(fields + returned)
    return dsn.model_dump() if dsn else {}


def _status_fields(part: Message) -> list[tuple[str, str]]:
    """The header-like blocks of a message/delivery-status part, in order."""
    payload = part.get_payload()
    if isinstance(payload, list):  # the email package parses it into header blocks
        return [(k, _plain(v)) for block in payload if isinstance(block, Message)
                for k, v in block.raw_items()]
    text = payload if isinstance(payload, str) else ""
    return list(_field_lines(text[:CLASSIFY_CHARS], indented=False))


def _returned_headers(part: Message) -> list[tuple[str, str]]:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        value = _plain(next((v for k, v in payload[0].raw_items()
                             if k.strip().lower() == "message-id"), ""))
        return [("message-id", value)] if value else []
    text = payload if isinstance(payload, str) else ""
    for line in text[:CLASSIFY_CHARS].split("\n"):
        name, colon, value = line.partition(":")
        value = value.strip(" \t\r")
        if colon and name.lower() == "message-id" and 0 < len(value) <= 998:
            return [("message-id", value)]
    return []


# -- HTML as text -------------------------------------------------------------------------------
#
# One forward pass with str.find: every search starts where the last one ended, so the
# work is linear in the HTML whatever it holds. The regexes this replaces
# (`<(script|style).*?</\1>`, `<[^>]*>`) were quadratic, and the stdlib's html.parser is
# no better on this interpreter: it rescans an unterminated tag from each `<` (the figures:
# docs/performance.md, "Reading hostile mail" and "Large campaigns, and the test servers").

#: Where a tag, comment, declaration or processing instruction may start.
_OPENS = re.compile(r"<(?:/?[A-Za-z]|!|\?)")
_TAG = re.compile(r"</?([A-Za-z][A-Za-z0-9-]{0,30})")
_BLOCK_TAGS = frozenset({
    "address", "article", "blockquote", "br", "dd", "div", "dl", "dt", "footer", "h1", "h2",
    "h3", "h4", "h5", "h6", "header", "hr", "li", "ol", "p", "pre", "section", "table", "tr",
    "ul"})
_CELL_TAGS = frozenset({"td", "th"})
_RAW_TEXT_END = {"script": re.compile(r"</script", re.IGNORECASE),
                 "style": re.compile(r"</style", re.IGNORECASE)}
_SPACES = re.compile(r"\s+")
#: A numeric character reference too long to be a character (`html.unescape` would
#: convert its digits to an int: past 4,300 digits that raises ValueError).
_LONG_CHARREF = re.compile(r"&#(?:[xX][0-9a-fA-F]{7,}|[0-9]{8,});?")


def html_text(html: str) -> str:
    """The text of an HTML body, in time linear in its length: tags removed, the content
    of script and style elements and of comments left out, block elements on lines of
    their own, whitespace collapsed, character references decoded."""
    out: list[str] = []
    i, end = 0, len(html)
    while i < end:
        opens = _OPENS.search(html, i)  # a `<` that opens no tag is text, as a browser shows it
        if opens is None:
            out.append(_SPACES.sub(" ", html[i:]))
            break
        lt = opens.start()
        out.append(_SPACES.sub(" ", html[i:lt]))
        if html.startswith("<!--", lt):
            close = html.find("-->", lt + 4)
            i = end if close < 0 else close + 3
            continue
        gt = html.find(">", lt + 1)
        if gt < 0:
            break  # a tag left open runs to the end: nothing after it is text
        i = gt + 1
        tag = _TAG.match(html, lt)
        name = tag.group(1).lower() if tag is not None else ""  # None: <!DOCTYPE>, <?xml?>
        if name in _BLOCK_TAGS:
            out.append("\n")
        elif name in _CELL_TAGS:
            out.append(" ")
        if name in _RAW_TEXT_END and html[lt + 1] != "/":
            found = _RAW_TEXT_END[name].search(html, i)
            close = html.find(">", found.end()) if found is not None else -1
            i = end if close < 0 else close + 1
    text = "\n".join(" ".join(line.split()) for line in "".join(out).split("\n"))
    return unescape(_LONG_CHARREF.sub("\ufffd", text))


# -- what is kept of a reply's text ---------------------------------------------------------------

_QUOTE_START = re.compile(
    r"^(on .{1,200} wrote:|am .{1,200} schrieb .{1,200}:|le .{1,200} a [ée]crit ?:|"
    r"el .{1,200} escribi[óo]:|-{2,} ?original message ?-{2,}|_{10,}|from: .{1,320})\s*$",
    re.IGNORECASE,
)


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The first lines of a reply: the person's own words, without the quoted thread
    (which would be our own message again), at most `limit` characters; it reads the
    first CLASSIFY_CHARS characters of the text."""
    lines: list[str] = []
    size = 0
    for line in text[:CLASSIFY_CHARS].replace("\r\n", "\n").split("\n"):
        stripped = line.strip()
        if stripped.startswith(">"):
            continue
        if _QUOTE_START.match(stripped):
            break
        if not stripped and (not lines or not lines[-1]):
            continue  # no leading or repeated blank lines
        lines.append(stripped)
        size += len(stripped) + 1
        if size >= limit:
            break
    return "\n".join(lines).strip()[:limit]
