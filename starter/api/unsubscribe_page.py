"""The pages behind the unsubscribe link: a GET asks, only a POST acts.

Mail link scanners (Microsoft Safe Links, Mimecast, many corporate gateways) fetch every
link of a message as it arrives, so a link that acted on GET would unsubscribe people who
never clicked. GET /unsubscribe therefore shows a confirmation page whose button POSTs the
same URL (token included) with the form field `confirm=page`; that POST suppresses the
address and answers with a page. RFC 8058's one-click POST (`List-Unsubscribe=One-Click`,
sent by the mail client itself) acts at once and keeps its JSON answer.

The pages carry no script, no outside resource and the same restrictive headers as the
review pages; the address is shown masked and everything is escaped by Jinja.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from starter.api.page_headers import html_page

#: The form field the confirmation page's button sends, telling it apart from RFC 8058.
CONFIRM_FIELD = "confirm"

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)

_EMAIL_USER = re.compile(r"^(.)(.*)(@.*)$")


def masked(email: str) -> str:
    """a***@example.com: enough for the person to recognise, little for a shoulder-surfer."""
    return _EMAIL_USER.sub(lambda mt: mt.group(1) + "***" + mt.group(3), email)


def _render(title: str, text: str, *, token: str | None = None,
            status_code: int = 200) -> HTMLResponse:
    html = _templates.get_template("unsubscribe.html").render(
        title=title, text=text, token=token, confirm_field=CONFIRM_FIELD)
    # The URL carries the token: it never leaves in a Referer, nor lands in an index.
    return html_page(html, status_code=status_code, referrer="no-referrer", robots="noindex")


def confirm(email: str, token: str) -> HTMLResponse:
    """What GET shows: who would be unsubscribed, and the button that does it."""
    return _render("Unsubscribe?", f"Stop all messages to {masked(email)}?", token=token)


def done(email: str) -> HTMLResponse:
    """What the button's POST shows once the address is suppressed."""
    return _render("You are unsubscribed", f"We will send no more messages to {masked(email)}.")


def refused(reason: str, status_code: int) -> HTMLResponse:
    """A link whose token does not verify, or whose message is no longer on record."""
    return _render("This link does not work",
                   f"{reason}. Reply to the message to ask us to stop.", status_code=status_code)


async def from_the_page(request: Request) -> bool:
    """True for the confirmation page's form post (it sends `confirm=page`); False for an
    RFC 8058 one-click POST or anything else, which keep the JSON answer."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return False
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    return fields.get(CONFIRM_FIELD) == ["page"]
