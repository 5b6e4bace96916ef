"""Rendering of one outgoing email: plain text and HTML, compliant headers, no injection.

Lead and draft text reaches headers only through `header_safe` and HTML only escaped; the
Message-ID comes from the message key and citation markers are removed.
See "Agents" in docs/architecture.md.
"""

from __future__ import annotations

import html
import re
import unicodedata
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import formatdate, parseaddr
from urllib.parse import quote

from campaign_core.leads import needs_smtputf8

#: CRLF line ends (RFC 5322) and no folding of long URLs into encoded words.
MAIL_POLICY = SMTP.clone(max_line_length=998)
#: The same for a recipient whose local part is not ASCII (RFC 6532): its address can be
#: written only as UTF-8, never as an encoded word, so the headers are raw UTF-8 and the
#: message can go over SMTP only with SMTPUTF8 (`channels.send_smtp` checks).
UTF8_MAIL_POLICY = SMTPUTF8.clone(max_line_length=998)

FOOTER_TEXT = "To stop receiving these messages: {url}"
#: Unicode categories never allowed in a header: controls, line and paragraph separators.
_UNSAFE = frozenset({"Cc", "Zl", "Zp"})

#: One passage id as chunking makes them (`<path>#<index>-<8 hex>`, the path may hold
#: spaces), or any other `x#y` token without spaces.
_CITED_ID = r"(?:[^\[\]#\n,;]+#\d+-[0-9a-f]{8}|[^\[\]\s,;]+#[^\[\]\s,;]+)"
#: An inline citation marker: one or more ids in brackets, `[a#1-..]` or `[a#1-.., b#2-..]`.
CITATION_MARKER = re.compile(rf"\[\s*{_CITED_ID}(?:\s*[,;]\s*{_CITED_ID})*\s*\]")
_MARKER_RUN = rf"{CITATION_MARKER.pattern}(?:[ \t]*{CITATION_MARKER.pattern})*"
_MARKER_AT_LINE_START = re.compile(rf"(?m)^([ \t]*){_MARKER_RUN}[ \t]*")
_MARKER_INLINE = re.compile(rf"[ \t]*{_MARKER_RUN}")


def strip_citations(text: str) -> str:
    """The text without inline citation markers, and without the spaces they leave."""
    text = _MARKER_AT_LINE_START.sub(r"\1", text)
    text = _MARKER_INLINE.sub("", text)
    return re.sub(r"\n{3,}", "\n\n", text)


def header_safe(value: str) -> str:
    """A header value with no control character, line break or encoded-word opener.

    Control characters (NUL, CR, LF, ...) and Unicode line separators become spaces and
    runs of spaces collapse; `=?` becomes `= ?`, so no encoded word given by lead data
    or a draft is ever decoded into header text.
    """
    cleaned = "".join(" " if unicodedata.category(ch) in _UNSAFE else ch for ch in value)
    return " ".join(cleaned.split()).replace("=?", "= ?")


def sender_domain(sender: str) -> str:
    """The domain of the `CAMPAIGN_FROM` address (used for Message-IDs and the mailto)."""
    return parseaddr(header_safe(sender))[1].rpartition("@")[2] or "campaign.local"


def message_id_for(key: str, sender: str) -> str:
    """The RFC 5322 Message-ID of the message with this key: the same on every attempt."""
    return f"<{key}@{sender_domain(sender)}>"


def unsubscribe_url(public_url: str, token: str) -> str:
    """The one-click unsubscribe link under CAMPAIGN_PUBLIC_URL, with its signed token."""
    return f"{public_url.rstrip('/')}/unsubscribe?token={quote(token, safe='')}"


def unsubscribe_mailto(sender: str, key: str) -> str:
    return f"mailto:unsubscribe@{sender_domain(sender)}?subject={quote('unsubscribe ' + key)}"


def _address(name: str | None, email: str) -> Address:
    addr = header_safe(email)
    display = header_safe(name) if name else ""
    if needs_smtputf8(addr):
        # `Address(addr_spec=...)` refuses a non-ASCII local part (NonASCIILocalPartDefect)
        # whatever the policy; given as its two halves it is kept, and quoted if need be.
        local, _, domain = addr.rpartition("@")
        return Address(display_name=display, username=local, domain=domain)
    return Address(display_name=display, addr_spec=addr)


def postal_lines(address: str | None) -> list[str]:
    """The postal address as footer lines: one per line of the setting, each with its
    runs of white space collapsed."""
    if not address:
        return []
    return [" ".join(line.split()) for line in address.splitlines() if line.strip()]


def _html_body(body: str, url: str, postal: list[str]) -> str:
    paragraphs = [p for p in body.replace("\r\n", "\n").split("\n\n") if p.strip()]
    parts = ["<p>" + html.escape(p.strip()).replace("\n", "<br>\n") + "</p>" for p in paragraphs]
    link = html.escape(url, quote=True)
    footer = (f'<p style="font-size:small;color:#666">To stop receiving these messages: '
              f'<a href="{link}">{link}</a></p>')
    if postal:
        footer = ('<p style="font-size:small;color:#666">'
                  + "<br>\n".join(html.escape(line) for line in postal) + "</p>\n" + footer)
    return ("<!DOCTYPE html>\n<html><body>\n" + "\n".join(parts)
            + "\n<hr>\n" + footer + "\n</body></html>\n")


def render_message(
    *, key: str, sender: str, to: str, to_name: str | None, subject: str, body: str,
    unsubscribe_url: str, mailto: str | None = None, postal_address: str | None = None,
    references: list[str] | None = None,
) -> EmailMessage:
    """An RFC 5322 multipart/alternative message whose Message-ID derives from the key.

    The footer of both parts carries `postal_address` (CAN-SPAM) and the unsubscribe link.
    A follow-up names the earlier messages of its thread (`references`, oldest first):
    `In-Reply-To` the last of them, `References` all (RFC 5322 3.6.4).
    A recipient whose local part is not ASCII gets a message in `UTF8_MAIL_POLICY`.
    """
    msg = EmailMessage(policy=UTF8_MAIL_POLICY if needs_smtputf8(to) else MAIL_POLICY)
    msg["Message-ID"] = message_id_for(key, sender)
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["From"] = header_safe(sender)
    msg["To"] = _address(to_name, to)
    msg["Subject"] = header_safe(strip_citations(subject))
    thread = [f"<{header_safe(m).strip('<>')}>" for m in references or [] if m.strip("<> ")]
    if thread:
        msg["In-Reply-To"] = thread[-1]
        msg["References"] = " ".join(thread)
    links = [f"<{header_safe(unsubscribe_url)}>"]
    if mailto:
        links.append(f"<{header_safe(mailto)}>")
    msg["List-Unsubscribe"] = ", ".join(links)
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["X-Campaign-Message-Key"] = header_safe(key)
    body = strip_citations(body.replace("\r\n", "\n"))
    text = body.rstrip("\n")
    postal = postal_lines(postal_address)
    footer = "\n".join([*postal, FOOTER_TEXT.format(url=unsubscribe_url)])
    msg.set_content(f"{text}\n\n--\n{footer}\n")
    msg.add_alternative(_html_body(body, unsubscribe_url, postal), subtype="html")
    return msg
