"""The control plane's errors, which every door (CLI, HTTP API, schedules) turns into its own
answer: exit 2 or a 4xx. Kept apart from the services so the options model can raise them
without importing the manager that consumes the options.
"""

from __future__ import annotations


class BadInput(Exception):
    """The user asked for something invalid (exit 2, HTTP 4xx).

    `field` names the input at fault by its JSON name (`id`, `channel`, `budget_usd`, ...)
    and `value` what was given, when the error is about one: each door phrases them for its
    caller (the CLI as its flag, the API as the body's field), so no message here speaks of
    one door's spelling. `str()` is the API's phrasing: "field value: message".
    """

    def __init__(self, message: str, *, field: str | None = None,
                 value: str | None = None) -> None:
        self.reason, self.field, self.value = message, field, value
        named = " ".join(part for part in (field, value) if part)
        super().__init__(f"{named}: {message}" if named else message)


class NotFound(BadInput):
    """No such campaign (exit 2, HTTP 404)."""


class Conflict(BadInput):
    """The campaign's state refuses the request: not awaiting approval, already decided,
    an edit after approval, or a draft edited since the version given (exit 2, HTTP 409)."""
