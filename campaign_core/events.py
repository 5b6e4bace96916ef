"""Events recipients' mail systems send back (bounces, complaints), as the API accepts them.

They arrive from outside by webhook, so they are validated here at the boundary: a
body that does not fit is refused with the field named, and nothing is recorded.
The shape is deliberately small and provider-neutral (`type`, `email`, and the
`message_id` we set on the message, which is how an event finds its campaign); a
provider's own format is mapped onto it by whatever relays the webhook.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from campaign_core.leads import valid_email
from campaign_core.models import DeliveryEventKind


class DeliveryEvent(BaseModel):
    """One bounce or complaint about one address (and, ideally, one of our messages)."""

    model_config = ConfigDict(extra="ignore")

    type: DeliveryEventKind = Field(description="bounce or complaint")
    email: str = Field(max_length=320, description="The recipient the event is about.")
    message_id: str | None = Field(
        default=None, max_length=998,
        description="The Message-ID of our message (with or without <>), when known.",
    )
    permanent: bool = Field(
        default=True, description="False for a soft (temporary) bounce: recorded, not suppressed.",
    )
    event_id: str | None = Field(
        default=None, max_length=200,
        description="The provider's id of the event; resent events with the same id count once.",
    )
    detail: str | None = Field(default=None, max_length=2000, description="e.g. the SMTP reply.")

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return valid_email(value)

    @field_validator("type")
    @classmethod
    def _type(cls, value: DeliveryEventKind) -> DeliveryEventKind:
        if value is DeliveryEventKind.UNSUBSCRIBE:
            raise ValueError("unsubscribes come through /unsubscribe, not a webhook")
        return value


class DeliveryEventResult(BaseModel):
    """What the engine did with one event."""

    event_id: str
    duplicate: bool
    suppressed: bool
    campaign_id: str | None = None
    lead_id: str | None = None
    campaign_notified: bool = False
