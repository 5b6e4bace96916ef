"""Events recipients' mail systems send back (bounces, complaints), as the API accepts them.

They arrive from outside by webhook, so they are validated here at the boundary: a
body that does not fit is refused with the field named, and nothing is recorded.
The shape is deliberately small and provider-neutral (`type`, `email`, and the
`message_id` we set on the message, which is how an event finds its campaign); a
provider's own format is mapped onto it by whatever relays the webhook.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from campaign_core.envelope import digest
from campaign_core.leads import normalise_email, valid_email
from campaign_core.metrics import process_metrics
from campaign_core.models import DeliveryEventKind, DeliveryEventSignal

if TYPE_CHECKING:
    from campaign_core.store.base import Store


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


#: Signals a running campaign; False when it no longer runs.
TellCampaign = Callable[[str, DeliveryEventSignal], Awaitable[bool]]


async def apply_delivery_event(store: Store, event: DeliveryEvent, *, source: str,
                               tell: TellCampaign) -> DeliveryEventResult:
    """Record a bounce or complaint, suppress the address, and tell its campaign.

    Hard bounces and complaints suppress the address for every campaign; a soft
    (temporary) bounce is recorded only. When the event names one of our messages
    (by Message-ID), its campaign's delivery orchestrator hears of it once, even if
    the provider delivers the same event twice, and its bounce circuit breaker
    counts it. One path for webhook events and bounces that arrive as mail (DSNs).
    """
    email = normalise_email(event.email)
    delivery = (await store.find_delivery_by_message_id(event.message_id)
                if event.message_id else None)
    campaign_id = delivery.campaign_id if delivery else None
    lead_id = delivery.lead_id if delivery else None
    event_id = event.event_id or "evt_" + digest(
        [source, event.type.value, email, event.message_id, event.detail]
    ).removeprefix("sha256:")[:32]
    counts = event.type is DeliveryEventKind.COMPLAINT or event.permanent
    new = await store.record_delivery_event(
        event_id=f"{source}:{event_id}", kind=event.type.value, email=email, source=source,
        campaign_id=campaign_id, lead_id=lead_id,
        message_key=delivery.message_key if delivery else None,
        detail=(event.detail or "") + ("" if counts else " (soft bounce)") or None)
    if new and counts:
        process_metrics().delivery_event(event.type.value)
    suppressed = False
    if counts:
        suppressed = await store.add_suppressions([email], f"{event.type.value} ({source})") > 0
    signalled = False
    if new and counts and campaign_id:
        signalled = await tell(campaign_id, DeliveryEventSignal(kind=event.type, lead_id=lead_id))
    return DeliveryEventResult(event_id=event_id, duplicate=not new, suppressed=suppressed,
                               campaign_id=campaign_id, lead_id=lead_id,
                               campaign_notified=signalled)
