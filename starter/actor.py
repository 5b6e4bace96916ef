"""Who a request acts as: the reviewer its token or session names, else the `by` it gives."""

from __future__ import annotations

from starlette.requests import Request


def acting_as(request: Request, by: str | None, default: str = "api") -> str:
    """The signed-in reviewer (set by the API gate or the pages), whatever `by` says;
    otherwise `by`, or `default` when it is not given."""
    reviewer: str | None = getattr(request.state, "reviewer", None)
    return reviewer or by or default
