"""The headers every server-rendered page of ours carries (review pages, unsubscribe page).

One place, so a page added later cannot forget one: never cached (a page may show personal
data, or carry a token in its URL), never framed, no script at all (the CSP allows inline
styles and posting forms back to this origin only).
"""

from __future__ import annotations

from fastapi.responses import HTMLResponse

#: No script, no outside resource; forms post only back here.
PAGE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")


def html_page(html: str, *, status_code: int = 200, referrer: str = "same-origin",
              robots: str | None = None) -> HTMLResponse:
    """`html` as a response with our page headers; `referrer` is the Referrer-Policy (a
    page whose URL carries a token sends none), `robots` an X-Robots-Tag if any."""
    response = HTMLResponse(html, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["Referrer-Policy"] = referrer
    if robots:
        response.headers["X-Robots-Tag"] = robots
    return response
