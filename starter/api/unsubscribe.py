"""The unsubscribe link of every message: GET shows a confirmation page, POST acts (RFC 8058
one-click, or the page's button). Public: the link's signed token is its authorisation."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from starter.api import unsubscribe_page as unsub_pages
from starter.api.deps import Manager
from starter.manager import BadInput, NotFound

router = APIRouter()


class UnsubscribeResponse(BaseModel):
    unsubscribed: bool


@router.get("/unsubscribe", response_class=HTMLResponse)
async def unsubscribe_page(m: Manager, token: str = "") -> HTMLResponse:
    """The link in every message's footer and List-Unsubscribe header: a confirmation
    page whose button POSTs; it changes nothing, since mail link scanners fetch every
    link (starter/unsubscribe_page.py)."""
    try:
        email = await m.unsubscribe_address(token)
    except BadInput as err:
        return unsub_pages.refused(str(err), 404 if isinstance(err, NotFound) else 400)
    return unsub_pages.confirm(email, token)


@router.post("/unsubscribe", response_model=UnsubscribeResponse,
             responses={200: {"content": {"text/html": {}},
                              "description": "JSON for RFC 8058 one-click; a page for the "
                                             "confirmation page's button (confirm=page)"}})
async def unsubscribe_one_click(request: Request, m: Manager,
                                token: str = "") -> UnsubscribeResponse | HTMLResponse:
    """RFC 8058 one-click (the mail client POSTs `List-Unsubscribe=One-Click`), or the
    confirmation page's button: either suppresses the address."""
    page = await unsub_pages.from_the_page(request)
    try:
        email = await m.unsubscribe(token, one_click=not page)
    except BadInput as err:
        code = 404 if isinstance(err, NotFound) else 400
        if page:
            return unsub_pages.refused(str(err), code)
        raise HTTPException(code, str(err)) from err
    if page:
        return unsub_pages.done(email)
    return UnsubscribeResponse(unsubscribed=True)
