"""Events recipients' mail systems send back (bounces, complaints), as the API accepts them.

They arrive from outside by webhook, so they are validated here at the boundary: a
body that does not fit is refused with the field named, and nothing is recorded.
The shape is deliberately small and provider-neutral (`type`, `email`, and the
`message_id` we set on the message, which is how an event finds its campaign); a
provider's own format is mapped onto it by whatever relays the webhook.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from campaign_core.envelope import (
    Envelope,
    EnvelopeMetadata,
    Provenance,
    Record,
    digest,
    now_utc,
)
from campaign_core.leads import normalise_email, valid_email
from campaign_core.metrics import process_metrics
from campaign_core.models import DeliveryEventKind, DeliveryEventSignal

if TYPE_CHECKING:
    from campaign_core.sender_capacity import SenderPause
    from campaign_core.senders import SenderEventKind
    from campaign_core.store.base import Store

log = logging.getLogger(__name__)


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
    sender_paused: str | None = Field(
        default=None, description="The sender this event paused (its health passed a limit).")


#: Signals a running campaign; False when it no longer runs.
TellCampaign = Callable[[str, DeliveryEventSignal], Awaitable[bool]]
#: Appended to the recorded detail of a soft bounce, which counts for nothing.
SOFT_BOUNCE = " (soft bounce)"
#: Appended to the recorded detail of an event whose address is not the recipient of the
#: message it names: it suppresses nobody and counts for nothing.
NOT_THE_RECIPIENT = " (not the recipient of the message it names: nothing done)"


async def apply_delivery_event(store: Store, event: DeliveryEvent, *, source: str,
                               tell: TellCampaign,
                               max_bounce_rate: float | None = None) -> DeliveryEventResult:
    """Record a bounce or complaint, suppress the address, tell its campaign, and count it
    against the sender the message left from.

    Hard bounces and complaints suppress the address for every campaign; a soft
    (temporary) bounce is recorded only. When the event names one of our messages
    (by Message-ID), its campaign's delivery orchestrator hears of it, and its bounce
    circuit breaker counts it, once per lead: not again when the provider delivers the
    same event twice, nor for a second bounce (another DSN, another provider event) of a
    lead already counted. An event that names one of our messages but another address
    than that message's recipient is recorded and does nothing else: whoever made it
    cannot put an address that never received our message on the suppression list, nor
    trip a campaign's breaker. One path for webhook events and bounces that arrive as
    mail (DSNs).

    An event that counts also flags the send in the sender's health (`sender_capacity.
    record_sender_event`), which pauses the sender when its bounces pass `max_bounce_rate`
    (CAMPAIGN_SENDER_MAX_BOUNCE_RATE; None: read that setting now) or its complaints pass
    0.1% over its last 100 sends; the pause is audited in the message's campaign, logged and
    counted. A message sent by the implicit sender (no senders defined) has no send on
    record, and nothing changes.
    """
    email = normalise_email(event.email)
    delivery = (await store.find_delivery_by_message_id(event.message_id)
                if event.message_id else None)
    mismatch = False
    if delivery is not None:
        lead = await store.get_lead(delivery.campaign_id, delivery.lead_id)
        mismatch = lead is None or normalise_email(lead.email) != email
    campaign_id = delivery.campaign_id if delivery and not mismatch else None
    lead_id = delivery.lead_id if delivery and not mismatch else None
    event_id = event.event_id or "evt_" + digest(
        [source, event.type.value, email, event.message_id, event.detail]
    ).removeprefix("sha256:")[:32]
    counts = (event.type is DeliveryEventKind.COMPLAINT or event.permanent) and not mismatch
    stored_id = f"{source}:{event_id}"
    new = await store.record_delivery_event(
        event_id=stored_id, kind=event.type.value, email=email, source=source,
        campaign_id=campaign_id, lead_id=lead_id,
        message_key=delivery.message_key if delivery else None,
        detail=(event.detail or "") + (NOT_THE_RECIPIENT if mismatch else
                                       "" if counts else SOFT_BOUNCE) or None)
    if new and counts:
        process_metrics().delivery_event(event.type.value)
    suppressed = False
    if counts:
        suppressed = await store.add_suppressions(
            [email], f"{event.type.value} ({source})",
            source="complaint" if event.type is DeliveryEventKind.COMPLAINT else "bounce") > 0
    paused: SenderPause | None = None
    if new and counts and delivery is not None and campaign_id and lead_id:
        paused = await _count_for_sender(store, event, source, delivery.message_key,
                                         campaign_id, lead_id, max_bounce_rate)
    signalled = False
    if new and counts and campaign_id and lead_id and await _first_for_lead(
            store, campaign_id, lead_id, event.type, stored_id):
        signalled = await tell(campaign_id, DeliveryEventSignal(kind=event.type, lead_id=lead_id))
    return DeliveryEventResult(event_id=event_id, duplicate=not new, suppressed=suppressed,
                               campaign_id=campaign_id, lead_id=lead_id,
                               campaign_notified=signalled,
                               sender_paused=paused.sender if paused else None)


async def _count_for_sender(store: Store, event: DeliveryEvent, source: str, message_key: str,
                            campaign_id: str, lead_id: str,
                            max_bounce_rate: float | None) -> SenderPause | None:
    """Flag the message's send as bounced or complained; when that pauses its sender, put
    the pause in the campaign's audit trail (the figures and the reason; no address), warn
    and count it. Recorded after the event, so a crash in between leaves the event recorded
    and its sender unflagged: a provider's retry of the same event is a duplicate and does
    not flag it again (the health then undercounts by one; it never double-counts)."""
    from campaign_core.sender_capacity import record_sender_event

    if max_bounce_rate is None:
        from campaign_core.settings import load_settings

        max_bounce_rate = load_settings().sender_max_bounce_rate
    at = now_utc()
    kind: SenderEventKind = ("complaint" if event.type is DeliveryEventKind.COMPLAINT
                             else "bounce")
    pause = await record_sender_event(store, message_key, kind,
                                      max_bounce_rate=max_bounce_rate, now=at)
    if pause is None:
        return None
    data = {"sender": pause.sender, "by": "health", "reason": pause.reason,
            "bounces": pause.bounces, "complaints": pause.complaints, "sends": pause.sends,
            "max_bounce_rate": max_bounce_rate, "event": event.type.value, "source": source,
            "message_key": message_key}
    await store.save_envelope(Envelope(
        metadata=EnvelopeMetadata(campaign_id=campaign_id, run_id=f"sender-health-{source}",
                                  agent="sender_health", agent_version="1", attempt=1,
                                  started_at=at, ended_at=at),
        records=[Record(kind="sender_paused", key=pause.sender, data=data, provenance=Provenance(
            source=f"delivery_event:{source}", agent="sender_health", created_at=at,
            inputs_digest=digest([pause.sender, message_key, event.type.value])))]), lead_id)
    log.warning("sender %s paused itself: %s", pause.sender, pause.reason)
    process_metrics().sender_paused(pause.sender)
    return pause


async def _first_for_lead(store: Store, campaign_id: str, lead_id: str, kind: DeliveryEventKind,
                          event_id: str) -> bool:
    """Whether `event_id` is the lead's first counted event of this kind (oldest first): the
    circuit breaker counts bouncing leads, not bounce messages, so a lead that bounced
    twice (two DSNs, a DSN and a provider webhook) is one bounce in "N bounces in M sent".

    Decided by reading what is recorded (no schema change): two events of one lead
    recorded at the same instant by two processes may both count (the breaker then
    over-counts by one; it never under-counts). The IMAP poll processes one message at a
    time, so only concurrent webhook calls for the same lead can do that.
    """
    for e in await store.list_delivery_events(campaign_id, lead_id=lead_id):
        detail = e.detail or ""
        if e.kind == kind.value and not detail.endswith((SOFT_BOUNCE, NOT_THE_RECIPIENT)):
            return e.event_id == event_id
    return True
