"""Who is acting on an API request: the signed-in reviewer wins over any `by` in the body."""
from fastapi import Request


def acting_as(request: Request, by: str | None, default: str = "api") -> str:
    """The reviewer the auth layer put on request.state, else the given `by`, else `default`."""
    reviewer = getattr(request.state, "reviewer", None)
    return reviewer or by or default
