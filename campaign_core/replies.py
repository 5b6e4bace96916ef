"""Replies in: match a received message to the lead it answers, record it, tell its campaign.

One path for both doors (`POST /webhooks/inbound` and the IMAP mailbox): `ReplyDesk`
classifies the message (`campaign_core.inbound`), finds its lead by the Message-IDs it
answers (In-Reply-To, then References, newest first; a DSN's returned Message-ID first),
else by the sender's stored address among the campaigns still sending, records one
`replies` row per lead (idempotent by Message-ID), writes the audit entry, turns a
bounce that arrived as mail into the same delivery event a bounce webhook makes, and
signals each campaign (`reply`, with a `ReplySignal`) for a person's reply or a hard
bounce (to its delivery orchestrator while that runs: `campaign_core.campaign_signals`).
The store is the record (the send-time check reads it); the signal only makes a step
already waiting on its timer hear of it at once.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import BaseModel, Field

from campaign_core.campaign_signals import Signal, signal_campaign, temporal_signal
from campaign_core.envelope import (
    Envelope,
    EnvelopeMetadata,
    Provenance,
    Record,
    digest,
    now_utc,
)
from campaign_core.events import DeliveryEvent, DeliveryEventResult, apply_delivery_event
from campaign_core.inbound import Classification, InboundMessage, ReplyKind, classify, excerpt
from campaign_core.metrics import process_metrics
from campaign_core.models import DeliveryEventKind, DeliveryEventSignal, ReplySignal, Stage
from campaign_core.store.base import Store

log = logging.getLogger("campaign.replies")

#: The campaigns a reply found by its sender's address may belong to: those still sending.
SENDING_STAGES = (Stage.AWAITING_APPROVAL.value, Stage.DELIVERING.value)
#: The signal a campaign workflow receives for a person's reply or a hard bounce.
REPLY_SIGNAL = "reply"
#: Where bounces that arrive as mail are recorded among delivery events.
DSN_SOURCE = "dsn"

#: (campaign_id, lead_id, step, how it matched)
Match = tuple[str, str, int | None, Literal["message_id", "address"]]
__all__ = ["InboundResult", "ReplyDesk", "ReplyMatch", "Signal", "temporal_signal"]


class ReplyMatch(BaseModel):
    """The message as recorded for one lead."""

    campaign_id: str
    lead_id: str
    reply_id: str
    step: int | None = None
    matched_by: Literal["message_id", "address"]
    duplicate: bool = Field(description="Recorded before (the same message processed again).")
    notified: bool = Field(description="A running workflow of the campaign (its delivery "
                                       "orchestrator, else the campaign) was signalled.")


class InboundResult(BaseModel):
    """What was done with one received message."""

    message_id: str
    kind: ReplyKind
    reason: str = Field(description="Why it is that kind (a header, the subject, a DSN...).")
    status: Literal["matched", "unmatched"]
    matches: list[ReplyMatch] = Field(default_factory=list)
    reply_id: str | None = Field(default=None, description="The unmatched message's record.")
    duplicate: bool = False
    bounce: DeliveryEventResult | None = None


class ReplyDesk:
    """Processes received messages against the store, signalling campaigns with `signal`."""

    def __init__(self, store: Store, signal: Signal, *, source: str) -> None:
        self.store = store
        self.signal = signal
        self.source = source  # "webhook" or "imap", for the record

    async def process(self, msg: InboundMessage) -> InboundResult:
        c = classify(msg)
        matches, answered = await self._match(msg, c)
        mid = msg.key
        text = excerpt(msg.text)
        email = c.dsn.final_recipient if c.dsn and c.dsn.final_recipient else msg.from_
        if not matches:
            reply_id, new = await self.store.record_reply(
                message_id=mid, kind=c.kind, email=email, source=self.source,
                subject=msg.subject, text=text)
            if new:
                process_metrics().reply(kind=c.kind, matched_by="none")
            log.info("inbound %s: %s matched no lead (%s)", self.source, c.kind, c.reason)
            event = await self._bounce(c, mid, None, None) if c.kind == "bounce" else None
            return InboundResult(message_id=mid, kind=c.kind, reason=c.reason, status="unmatched",
                                 reply_id=reply_id, duplicate=not new, bounce=event)
        found: list[ReplyMatch] = []
        bounce: DeliveryEventResult | None = None
        for cid, lid, step, how in matches:
            reply_id, new = await self.store.record_reply(
                message_id=mid, kind=c.kind, email=email, source=self.source, campaign_id=cid,
                lead_id=lid, step=step, subject=msg.subject, text=text, matched_by=how)
            if new:
                await self.store.save_envelope(self._audit(cid, reply_id, c, step, how), lid)
                # Counted once per lead and message: a provider's redelivery, a second poll
                # or a replay after a crash finds the row recorded and counts nothing.
                process_metrics().reply(kind=c.kind, matched_by=how)
            if c.kind == "bounce" and bounce is None:
                bounce = await self._bounce(c, mid, (cid, lid), answered)
            notified = False
            # Signalled even when recorded before: a crash may have come between the record
            # and the signal; the workflow's handler is idempotent per reply id.
            if c.kind == "reply" or c.permanent_bounce:
                notified = await signal_campaign(
                    self.signal, cid, REPLY_SIGNAL,
                    ReplySignal(lead_id=lid, kind=c.kind, reply_id=reply_id))
            found.append(ReplyMatch(campaign_id=cid, lead_id=lid, reply_id=reply_id, step=step,
                                    matched_by=how, duplicate=not new, notified=notified))
        log.info("inbound %s: %s matched %d lead(s) (%s)", self.source, c.kind, len(found), c.reason)
        return InboundResult(message_id=mid, kind=c.kind, reason=c.reason, status="matched",
                             matches=found, duplicate=all(m.duplicate for m in found), bounce=bounce)

    async def _match(self, msg: InboundMessage, c: Classification) -> tuple[list[Match], str | None]:
        """By a Message-ID of ours that the message answers (returned too); else by address
        (the sender, or a bounce's final recipient) among the campaigns still sending to it."""
        ids: list[str] = []
        if c.dsn and c.dsn.original_message_id:
            ids.append(c.dsn.original_message_id)
        ids += msg.in_reply_to + list(reversed(msg.references))
        for mid in dict.fromkeys(ids):
            delivery = await self.store.find_delivery_by_message_id(mid)
            if delivery is not None:
                return [(delivery.campaign_id, delivery.lead_id, delivery.step, "message_id")], mid
        address = c.dsn.final_recipient if c.kind == "bounce" and c.dsn else msg.from_
        if not address:
            return [], None
        return [(cid, lid, None, "address") for cid, lid in
                await self.store.find_leads_by_email(address, SENDING_STAGES)], None

    async def _bounce(self, c: Classification, mid: str, lead: tuple[str, str] | None,
                      answered: str | None) -> DeliveryEventResult | None:
        """A DSN as a bounce delivery event: the same record, suppression and campaign signal
        as a bounce webhook, for our message it returned (`answered`, else the DSN's own id).
        Needs the address that bounced (the DSN's, else the lead's)."""
        dsn = c.dsn
        if dsn is None:
            return None
        email = dsn.final_recipient
        if email is None and lead is not None:
            found = await self.store.get_lead(*lead)
            email = found.email if found else None
        if email is None:
            return None
        detail = " ".join(x for x in (dsn.status, dsn.diagnostic) if x) or "delivery status notification"
        try:
            event = DeliveryEvent(type=DeliveryEventKind.BOUNCE, email=email,
                                  message_id=answered or dsn.original_message_id,
                                  permanent=dsn.permanent, event_id="dsn_" + digest(mid)[7:39],
                                  detail=detail[:2000])
        except ValueError:
            log.info("inbound %s: a DSN for an address that is not valid; not a bounce event",
                     self.source)
            return None

        async def tell(campaign_id: str, signal: DeliveryEventSignal) -> bool:
            return await signal_campaign(self.signal, campaign_id, "delivery_event", signal)

        return await apply_delivery_event(self.store, event, source=DSN_SOURCE, tell=tell)

    def _audit(self, campaign_id: str, reply_id: str, c: Classification, step: int | None,
               how: str) -> Envelope:
        """The reply in the campaign's audit trail: what and how it matched, no text or address."""
        at = now_utc()
        data = {"status": c.kind, "reply_id": reply_id, "reason": c.reason, "step": step,
                "matched_by": how, "source": self.source}
        return Envelope(
            metadata=EnvelopeMetadata(campaign_id=campaign_id, run_id=f"inbound-{self.source}",
                                      agent="replies.inbound", agent_version="1", attempt=1,
                                      started_at=at, ended_at=at),
            records=[Record(kind="reply", key=reply_id, data=data, provenance=Provenance(
                source=f"inbound:{self.source}", agent="replies", created_at=at,
                inputs_digest=digest([reply_id])))])
