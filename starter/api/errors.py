"""How the API answers the services' errors: the exception handlers every route shares.

A service error carries its facts; here they become status codes: `NotFound` 404, any other
`BadInput` 409 (valid JSON asking for something the campaign's state refuses, e.g. approving
while drafting, or a second decision), `TemporalUnreachable` 503. Errors about one field of
a body are answered 422 by the routes themselves, located at that field (`invalid`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, Response

from campaign_core.leads import IntakeResult, parse_lead_rows
from campaign_core.temporal import TemporalUnreachable
from starter.manager import BadInput, NotFound


async def _not_found(_: Request, err: NotFound) -> JSONResponse:
    return JSONResponse({"detail": str(err)}, status_code=404)


async def _conflict(_: Request, err: BadInput) -> JSONResponse:
    # Valid JSON asking for something the campaign's state refuses (e.g. approving
    # while drafting, or a second decision): a conflict with that state.
    return JSONResponse({"detail": str(err)}, status_code=409)


async def _unreachable(_: Request, err: TemporalUnreachable) -> JSONResponse:
    return JSONResponse({"detail": str(err)}, status_code=503)


Handler = Callable[[Request, Any], Coroutine[Any, Any, Response]]

#: The app's exception handlers for the services' errors (`FastAPI(exception_handlers=...)`).
HANDLERS: dict[int | type[Exception], Handler] = {
    NotFound: _not_found,
    BadInput: _conflict,
    TemporalUnreachable: _unreachable,
}


def invalid(field: str | int, err: Exception, *where: str | int) -> HTTPException:
    """422 for one field of the body (`where` the path down to it), with the error's message."""
    return HTTPException(422, [{"loc": ["body", field, *where], "type": "value_error",
                                "msg": str(err)}])


def body_leads(rows: list[dict[str, Any]], campaign_id: str) -> IntakeResult:
    """The body's `leads` read for `campaign_id` (start, add-leads, schedules); a 422 naming
    each rejected row (the first 100) when none of them is a valid lead."""
    intake = parse_lead_rows(enumerate(rows, start=1), campaign_id)
    if not intake.leads:
        raise HTTPException(422, [
            {"loc": ["body", "leads", r.row - 1], "type": "value_error", "msg": r.error}
            for r in intake.rejected[:100]
        ] or [{"loc": ["body", "leads"], "type": "value_error", "msg": "no valid lead"}])
    return intake
