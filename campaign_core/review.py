"""What travels through Temporal for reviewers' edits and exclusions: ids, never text.

The control plane stores an edit's text as a pending version first (`Store.add_draft_edit`)
and hands the campaign workflow only the edit's id; the workflow's store activity checks
it with the guardrails and makes it the next version. So draft text stays out of history
even without an encryption key.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

#: The Temporal failure type of a refusal caused by the campaign's state or a stale
#: version (not awaiting approval, already decided, someone else's edit came first):
#: HTTP 409 and exit 2.
CONFLICT = "Conflict"
#: The failure type of an edit the guardrails refuse: HTTP 422 and exit 2.
GUARDRAIL = "GuardrailViolation"


class DraftEditRef(BaseModel):
    """The `edit_draft` Update: apply the pending edit `edit_id` of this lead and step."""

    model_config = ConfigDict(extra="forbid")

    campaign_id: str
    edit_id: str = Field(min_length=1, max_length=200)
    lead_id: str = Field(min_length=1, max_length=200)
    step: int = Field(default=1, ge=1, le=100)


class DraftVersionRef(BaseModel):
    """A draft's identity and version, as the `edit_draft` Update answers."""

    lead_id: str
    step: int
    version: int


class Exclusion(BaseModel):
    """The `set_excluded` Update: leave a lead's draft out of the approval, or put it back."""

    model_config = ConfigDict(extra="forbid")

    campaign_id: str
    lead_id: str = Field(min_length=1, max_length=200)
    step: int | None = Field(default=None, ge=1, le=100, description="None: every step.")
    excluded: bool
    by: str = Field(min_length=1, max_length=200)
    request_id: str | None = Field(
        default=None, max_length=200,
        description="The control plane's stored request naming who: `by` stays out of history.")
