"""Inbound mail: the neutral shape replies arrive in, and what kind of reply each one is.

Replies reach the engine two ways, `POST /webhooks/inbound` (a relay maps SendGrid
Inbound Parse, Mailgun routes or Postmark inbound onto `InboundMessage`) and the IMAP
reply mailbox (`parse_raw` turns an RFC 5322 message into the same model). Both are
untrusted, so everything is validated here: sizes capped, addresses parsed with
`email.utils` and normalised like leads, header-unsafe characters removed. `classify`
then says whether a person replied, a machine did (RFC 3834, out-of-office), or a
mail system returned our message (an RFC 3464 delivery status notification).
Pure: no I/O, no store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.utils import getaddresses, parseaddr
from html import unescape
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from campaign_core.envelope import digest
from campaign_core.leads import normalise_email

ReplyKind = Literal["reply", "auto_reply", "bounce"]

#: Longest accepted text of one message (characters); only the first lines are kept.
MAX_TEXT = 1_000_000
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
    """The normalised addr-spec of an address header (`Ana <ana@x.org>` -> `ana@x.org`)."""
    _, addr = parseaddr(header_safe(value))
    addr = normalise_email(addr) if addr else ""
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
            pairs = getaddresses([header_safe(v) for v in value])
            return [normalise_email(a) for _, a in pairs if _ADDRESS.match(a.strip())]
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
    def key(self) -> str:
        """The message's identity for dedup: its Message-ID, or a digest of its content."""
        if self.message_id:
            return self.message_id
        return f"{digest([self.from_, self.subject, self.text])[7:39]}@inbound.invalid"


# -- classification --------------------------------------------------------------------------

_OOO_SUBJECT = re.compile(
    r"out of (the )?office|automatic reply|auto[- ]?reply|auto[- ]?respon[sd]|"
    r"abwesenheit|automatische antwort|r[ée]ponse automatique|absence du bureau|"
    r"respuesta autom[áa]tica|fuera de la oficina",
    re.IGNORECASE,
)
_MAIL_SYSTEM = re.compile(r"^(mailer-daemon|postmaster)@", re.IGNORECASE)


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
    or a person's reply. DSNs are checked first: they carry `Auto-Submitted` too."""
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
    for name in ("x-autoreply", "x-autorespond"):
        if name in msg.headers:
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
    """DSN fields from a relay's text of a multipart/report (its parts flattened)."""
    fields = [(m.group(1), m.group(2)) for m in re.finditer(
        r"^\s*([A-Za-z-]{2,40}):[ \t]*(.{1,1000})$", text[:200_000], re.MULTILINE)]
    return dsn_from_fields(fields) or DeliveryStatus()


# -- raw RFC 5322 messages (the IMAP mailbox) ------------------------------------------------


def parse_raw(data: bytes) -> InboundMessage:
    """An RFC 5322 message as the neutral shape; never raises for a malformed message
    (what cannot be read is left out, a missing sender becomes `unknown@invalid`)."""
    msg = message_from_bytes(data, policy=policy.default)
    headers: dict[str, str] = {}
    for name in msg.keys()[:MAX_HEADERS]:
        headers.setdefault(name.lower(), _header(msg, name)[:MAX_HEADER_VALUE])
    sender = _header(msg, "from") or _header(msg, "sender") or _header(msg, "return-path")
    try:
        sender = bare_address(sender, "from")
    except ValueError:
        sender = UNKNOWN_SENDER
    fields = {
        "from": sender,
        "to": [_header(msg, "to")] if _header(msg, "to") else [],
        "subject": _header(msg, "subject")[:998],
        "message_id": _header(msg, "message-id")[:998] or None,
        "in_reply_to": _header(msg, "in-reply-to"),
        "references": _header(msg, "references"),
        "headers": headers,
        "text": _body_text(msg)[:MAX_TEXT],
        "dsn": _dsn_part(msg),
    }
    try:
        return InboundMessage.model_validate(fields)
    except ValueError:  # e.g. a Message-ID that is not one: drop what does not validate
        fields["message_id"] = None
        fields["dsn"] = None
        return InboundMessage.model_validate(fields)


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except (ValueError, IndexError, TypeError):  # a header the parser cannot decode
        value = None
    return header_safe(str(value)) if value is not None else ""


def _body_text(msg: Message) -> str:
    """The first text/plain part that is not an attachment; else the first text/html, as text."""
    html: str | None = None
    for part in msg.walk():
        if part.get_content_maintype() == "multipart":
            continue
        if part.get_content_type() in {"message/delivery-status", "message/rfc822",
                                       "text/rfc822-headers"}:
            continue
        if part.get_content_disposition() == "attachment":
            continue
        if part.get_content_type() == "text/plain":
            return _content(part)
        if part.get_content_type() == "text/html" and html is None:
            html = _content(part)
    if html is None:
        return ""
    return unescape(re.sub(r"<[^>]*>", " ", re.sub(r"(?is)<(script|style).*?</\1>", " ", html)))


def _content(part: Message) -> str:
    try:
        if isinstance(part, EmailMessage):
            return str(part.get_content())
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    except (LookupError, ValueError, AssertionError):  # an unknown charset, a broken encoding
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def _dsn_part(msg: Message) -> dict[str, Any] | None:
    """The delivery-status fields of a multipart/report DSN, plus the returned message's id."""
    if not is_delivery_report(_header(msg, "content-type")):
        return None
    fields: list[tuple[str, str]] = []
    returned: list[tuple[str, str]] = []
    for part in msg.walk():
        ctype = part.get_content_type()
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
        return [(k, _header(block, k)) for block in payload if isinstance(block, Message)
                for k in block]
    text = payload if isinstance(payload, str) else ""
    return [(m.group(1), m.group(2)) for m in re.finditer(
        r"^([A-Za-z-]{2,40}):[ \t]*(.{1,1000})$", text, re.MULTILINE)]


def _returned_headers(part: Message) -> list[tuple[str, str]]:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        value = _header(payload[0], "message-id")
        return [("message-id", value)] if value else []
    text = payload if isinstance(payload, str) else ""
    found = re.search(r"^message-id:[ \t]*(.{1,998})$", text, re.IGNORECASE | re.MULTILINE)
    return [("message-id", found.group(1))] if found else []


# -- what is kept of a reply's text ---------------------------------------------------------------

_QUOTE_START = re.compile(
    r"^(on .{1,200} wrote:|am .{1,200} schrieb .{1,200}:|le .{1,200} a [ée]crit ?:|"
    r"el .{1,200} escribi[óo]:|-{2,} ?original message ?-{2,}|_{10,}|from: .{1,320})\s*$",
    re.IGNORECASE,
)


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The first lines of a reply: the person's own words, without the quoted thread
    (which would be our own message again), at most `limit` characters."""
    lines: list[str] = []
    size = 0
    for line in text.replace("\r\n", "\n").split("\n"):
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
