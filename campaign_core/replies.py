"""Replies in: match a received message to the lead it answers, record it, tell its campaign.

One path for both doors (`POST /webhooks/inbound` and the IMAP mailbox): `ReplyDesk`
classifies the message (`campaign_core.inbound`), finds its lead by the Message-IDs it
answers (In-Reply-To, then References, newest first; a DSN's returned Message-ID first),
else by the sender's stored address among the campaigns still sending, records one
`replies` row per lead (idempotent by Message-ID), writes the audit entry, turns a
bounce that arrived as mail into the same delivery event a bounce webhook makes, and
tells campaigns through the `CampaignSignals` it is given (`workflows.signals`): a reply
(a person's or an automatic one) starts its reply action workflow, once per reply
(`reply_recorded`; issue 27: it classifies the reply and acts on its intent — stops the
person's sequences with the intent as reason, moves the next step for an out-of-office,
suppresses an unsubscribe...), and a hard bounce signals the campaign (`reply`, a
`ReplySignal`). The store is the record (the send-time check reads it); the signal only
makes a step already waiting on its timer hear of it at once.

Anyone can send mail to the reply mailbox, so what a message claims is believed only as
far as it can be checked (issue 25):
- A match by Message-ID is trusted for the lead who received that message: the id is
  unguessable, and only that person (or someone they forwarded it to) has it.
- A match by the sender's address alone is `verified` only when the receiving server's
  Authentication-Results (`CAMPAIGN_TRUSTED_AUTHSERV_ID`, `campaign_core.auth_results`)
  vouches for the address. Otherwise it is recorded with `verified` false and changes
  nothing (no stop, no signal) until a person confirms it (`ReplyDesk.confirm`).
- A DSN is acted on only when it returns one of our Message-IDs and names that message's
  recipient; any other is recorded and suppresses nobody (a forged DSN naming
  `ceo@victim.example` once put that address on the global suppression list).
- Mail to the List-Unsubscribe `mailto:` (subject `unsubscribe <message key>`) unsubscribes
  the recipient of that message; it is not a reply.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from campaign_core.auth_results import HEADER as AUTH_RESULTS
from campaign_core.auth_results import sender_verified
from campaign_core.campaign_signals import CampaignSignals
from campaign_core.envelope import (
    Envelope,
    EnvelopeMetadata,
    Provenance,
    Record,
    digest,
    now_utc,
)
from campaign_core.events import DeliveryEvent, DeliveryEventResult, apply_delivery_event
from campaign_core.ids import message_key
from campaign_core.inbound import Classification, InboundMessage, ReplyKind, classify, excerpt
from campaign_core.leads import normalise_email
from campaign_core.metrics import process_metrics
from campaign_core.models import DeliveryEventKind, ReplySignal, Stage
from campaign_core.reply_actions import kept_headers
from campaign_core.store.base import Store

log = logging.getLogger("campaign.replies")

#: The campaigns a reply found by its sender's address may belong to: those still sending.
SENDING_STAGES = (Stage.AWAITING_APPROVAL.value, Stage.DELIVERING.value)
#: Where bounces that arrive as mail are recorded among delivery events.
DSN_SOURCE = "dsn"

#: Where unsubscribes by mail to the List-Unsubscribe `mailto:` are recorded.
MAILTO_SOURCE = "mailto"
#: The subject `activities.rendering.unsubscribe_mailto` asks for: `unsubscribe <message key>`
#: (`campaign_core.ids.message_key`, the key of the message that carried the link).
MAILTO_SUBJECT = re.compile(r"\bunsubscribe\s+(msg_[0-9a-f]{32})\b", re.IGNORECASE)

#: (campaign_id, lead_id, step, how it matched)
Match = tuple[str, str, int | None, Literal["message_id", "address"]]
__all__ = ["CampaignSignals", "ConfirmResult", "InboundResult", "ReplyDesk", "ReplyMatch",
           "UnsubscribeResult"]


class ReplyMatch(BaseModel):
    """The message as recorded for one lead."""

    campaign_id: str
    lead_id: str
    reply_id: str
    step: int | None = None
    matched_by: Literal["message_id", "address"]
    verified: bool = Field(default=True, description="False: matched by an address nobody "
                           "vouched for; recorded, and nothing done until confirmed.")
    duplicate: bool = Field(description="Recorded before (the same message processed again).")
    notified: bool = Field(description="A person's reply: its reply action workflow was "
                                       "started (now or before); a hard bounce: a running "
                                       "workflow of the campaign was signalled.")
    elsewhere: list[str] = Field(default_factory=list, description="The other campaigns "
                                 "still sending to this person: the reply's action stops "
                                 "their sequence there too (any intent but out-of-office "
                                 "and auto-reply).")


class UnsubscribeResult(BaseModel):
    """An unsubscribe by mail to the List-Unsubscribe `mailto:`: whose, and whether new."""

    campaign_id: str
    lead_id: str
    step: int
    suppressed: bool = Field(description="The address was added to the suppression list now.")
    duplicate: bool = Field(description="This message's unsubscribe was recorded before.")


class InboundResult(BaseModel):
    """What was done with one received message."""

    message_id: str
    kind: ReplyKind | Literal["unsubscribe"]
    reason: str = Field(description="Why it is that kind (a header, the subject, a DSN...).")
    status: Literal["matched", "unmatched", "unsubscribed"]
    trust: str | None = Field(default=None, description="Why an address-only match is or is "
                              "not verified, or why a bounce was not acted on.")
    matches: list[ReplyMatch] = Field(default_factory=list)
    reply_id: str | None = Field(default=None, description="The unmatched message's record.")
    duplicate: bool = False
    bounce: DeliveryEventResult | None = None
    unsubscribe: UnsubscribeResult | None = None


class ConfirmResult(BaseModel):
    """What confirming an unverified message did (`campaign replies confirm`)."""

    reply_id: str
    campaign_id: str
    lead_id: str
    kind: str
    confirmed: bool = Field(description="It was unverified and is verified now (False: it "
                                        "was verified already; nothing recorded again).")
    notified: bool = Field(description="A running workflow of the campaign was signalled.")


class UnknownReply(LookupError):
    """No recorded message has this id."""


class NothingToConfirm(ValueError):
    """The message matched no lead: there is nothing it would have done."""


@dataclass
class _Found:
    """Who a message is about, and whether that can be believed."""

    matches: list[Match] = field(default_factory=list)
    answered: str | None = None  # our Message-ID it names, when matched by one
    verified: bool = True
    trust: str | None = None


class ReplyDesk:
    """Processes received messages against the store, telling campaigns through `signals`.

    `trusted_authserv_id` is CAMPAIGN_TRUSTED_AUTHSERV_ID: whose Authentication-Results may
    vouch for a sender matched by address alone (None: nobody's).
    """

    def __init__(self, store: Store, signals: CampaignSignals, *, source: str,
                 trusted_authserv_id: str | None = None,
                 max_bounce_rate: float | None = None) -> None:
        self.store = store
        self.signals = signals
        self.source = source  # "webhook" or "imap", for the record
        self.trusted_authserv_id = trusted_authserv_id
        #: CAMPAIGN_SENDER_MAX_BOUNCE_RATE, for a DSN's sender (None: read the setting then).
        self.max_bounce_rate = max_bounce_rate

    async def process(self, msg: InboundMessage) -> InboundResult:
        unsubscribed = await self._mailto_unsubscribe(msg)
        if unsubscribed is not None:
            return unsubscribed
        c = classify(msg)
        found = await self._match(msg, c)
        mid = msg.key
        text = excerpt(msg.text)
        email = c.dsn.final_recipient if c.dsn and c.dsn.final_recipient else msg.from_
        headers = kept_headers(msg.headers)
        if not found.matches:
            reply_id, new = await self.store.record_reply(
                message_id=mid, kind=c.kind, email=email, source=self.source,
                subject=msg.subject, text=text, verified=found.verified, headers=headers)
            if new:
                process_metrics().reply(kind=c.kind, matched_by="none")
            log.info("inbound %s: %s matched no lead (%s)%s", self.source, c.kind, c.reason,
                     f"; {found.trust}" if found.trust else "")
            # A bounce that names none of our messages' recipients is acted on for nobody.
            return InboundResult(message_id=mid, kind=c.kind, reason=c.reason, status="unmatched",
                                 trust=found.trust, reply_id=reply_id, duplicate=not new)
        results: list[ReplyMatch] = []
        bounce: DeliveryEventResult | None = None
        for cid, lid, step, how in found.matches:
            reply_id, new = await self.store.record_reply(
                message_id=mid, kind=c.kind, email=email, source=self.source, campaign_id=cid,
                lead_id=lid, step=step, subject=msg.subject, text=text, matched_by=how,
                verified=found.verified, headers=headers)
            if new:
                await self.store.save_envelope(
                    self._audit(cid, reply_id, c, step, how, found.verified, found.trust), lid)
                # Counted once per lead and message: a provider's redelivery, a second poll
                # or a replay after a crash finds the row recorded and counts nothing. A
                # reply or auto-reply is counted by the reply action instead, once it is
                # read, so its `intent` label says what it meant.
                if c.kind not in ("reply", "auto_reply"):
                    process_metrics().reply(kind=c.kind, matched_by=how)
            notified = False
            if c.kind in ("reply", "auto_reply"):
                # What it means and what to do is the reply action workflow's (issue 27),
                # started once per reply: started again when recorded before (a crash may
                # have come between the record and the start), it is not started twice.
                # An unverified match is classified and changes nothing until confirmed.
                started = await self.signals.reply_recorded(cid, reply_id)
                notified = started and found.verified
            elif found.verified:
                if c.kind == "bounce" and bounce is None:
                    bounce = await self._bounce(c, mid, (cid, lid), found.answered)
                # Signalled even when recorded before: a crash may have come between the
                # record and the signal; the workflow's handler is idempotent per reply id.
                notified = await self._tell(cid, lid, c.kind, reply_id,
                                            permanent=c.permanent_bounce)
            elsewhere = (await self._elsewhere(cid, lid, {m[0] for m in found.matches})
                         if found.verified and c.kind == "reply" else [])
            results.append(ReplyMatch(campaign_id=cid, lead_id=lid, reply_id=reply_id, step=step,
                                      matched_by=how, verified=found.verified,
                                      duplicate=not new, notified=notified, elsewhere=elsewhere))
        log.info("inbound %s: %s matched %d lead(s) (%s)%s", self.source, c.kind, len(results),
                 c.reason, "" if found.verified else f", unverified: {found.trust}")
        return InboundResult(message_id=mid, kind=c.kind, reason=c.reason, status="matched",
                             trust=found.trust, matches=results,
                             duplicate=all(m.duplicate for m in results), bounce=bounce)

    async def confirm(self, reply_id: str, *, by: str) -> ConfirmResult:
        """A person vouches for a message recorded unverified: it is verified from now on
        and does what it would have done had it been verified on arrival (a person's reply
        stops the lead's sequence, and with stop-on-company-reply their colleagues').
        Confirming again records nothing more; the signal is sent again, as `process`
        does, in case a crash came between the record and the signal.
        """
        row = await self.store.get_reply(reply_id)
        if row is None:
            raise UnknownReply(f"no recorded message {reply_id!r}")
        if row.campaign_id is None or row.lead_id is None:
            raise NothingToConfirm(f"{reply_id} matched no lead: confirming it would do nothing")
        confirmed = await self.store.confirm_reply(reply_id)
        if confirmed:
            at = now_utc()
            data = {"status": "confirmed", "reply_id": reply_id, "kind": row.kind,
                    "matched_by": row.matched_by, "by": by}
            await self.store.save_envelope(self._envelope(
                row.campaign_id, "reply_confirmed", reply_id, data, at, source="cli"),
                row.lead_id)
        if row.kind in ("reply", "auto_reply"):
            # The reply's action, now that it is vouched for: once per confirmation.
            notified = await self.signals.reply_recorded(row.campaign_id, reply_id,
                                                         confirmed=True)
        else:
            notified = await self._tell(row.campaign_id, row.lead_id, row.kind, reply_id,
                                        permanent=False)
        log.info("reply %s confirmed by %s (%s)", reply_id, by,
                 "newly" if confirmed else "already verified")
        return ConfirmResult(reply_id=reply_id, campaign_id=row.campaign_id, lead_id=row.lead_id,
                             kind=row.kind, confirmed=confirmed, notified=notified)

    async def _tell(self, campaign_id: str, lead_id: str, kind: str, reply_id: str, *,
                    permanent: bool) -> bool:
        """Signal the campaign for a person's reply or a hard bounce; nothing for the rest."""
        if kind != "reply" and not (kind == "bounce" and permanent):
            return False
        return await self.signals.reply(
            campaign_id,
            ReplySignal(lead_id=lead_id, kind="bounce" if kind == "bounce" else "reply",
                        reply_id=reply_id))

    async def _elsewhere(self, campaign_id: str, lead_id: str, matched: set[str]) -> list[str]:
        """The other campaigns still sending to the person who replied to `campaign_id`
        (issue 27): the reply action (`activities.reply_actions`) stops their sequence there
        too, signalling each with `from_campaign` (its stop reason names the campaign replied
        to), unless the reply is an out-of-office. The delivery agent also reads such a reply
        when a follow-up falls due (`activities.sequence_agent.stop_reason_at_due`).
        Campaigns the message `matched` itself have their own record."""
        lead = await self.store.get_lead(campaign_id, lead_id)
        if lead is None:
            return []
        return [cid for cid, _ in await self.store.find_leads_by_email(lead.email, SENDING_STAGES)
                if cid not in matched]

    async def _match(self, msg: InboundMessage, c: Classification) -> _Found:
        """By a Message-ID of ours that the message answers (returned too); else, for a
        message that is not a bounce, by the sender's address among the campaigns still
        sending to it, verified only as far as the trusted Authentication-Results says.

        A bounce is matched by the Message-ID it returns only when it names that message's
        recipient (or names none); a bounce matched by nothing else is nobody's: any mail
        system, or anyone, can write a DSN naming any address."""
        ids: list[str] = []
        if c.dsn and c.dsn.original_message_id:
            ids.append(c.dsn.original_message_id)
        ids += msg.in_reply_to + list(reversed(msg.references))
        for mid in dict.fromkeys(ids):
            delivery = await self.store.find_delivery_by_message_id(mid)
            if delivery is None:
                continue
            if c.kind == "bounce" and c.dsn is not None and c.dsn.final_recipient:
                lead = await self.store.get_lead(delivery.campaign_id, delivery.lead_id)
                if lead is None or normalise_email(lead.email) != normalise_email(
                        c.dsn.final_recipient):
                    return _Found(verified=False, trust="a DSN for an address that is not the "
                                  "recipient of the message it returns: not acted on")
            return _Found(matches=[(delivery.campaign_id, delivery.lead_id, delivery.step,
                                    "message_id")], answered=mid)
        if c.kind == "bounce":
            return _Found(verified=False, trust="a DSN that returns none of our messages: "
                          "not acted on")
        leads = await self.store.find_leads_by_email(msg.from_, SENDING_STAGES)
        verdict = sender_verified(msg.header(AUTH_RESULTS), self.trusted_authserv_id, msg.from_)
        return _Found(matches=[(cid, lid, None, "address") for cid, lid in leads],
                      verified=verdict.verified, trust=verdict.reason)

    async def _bounce(self, c: Classification, mid: str, lead: tuple[str, str],
                      answered: str | None) -> DeliveryEventResult | None:
        """A DSN as a bounce delivery event: the same record, suppression and campaign signal
        as a bounce webhook, for our message it returned (`answered`, else the DSN's own id).
        The address that bounced is the DSN's (already checked to be the lead's), else the
        lead's."""
        dsn = c.dsn
        if dsn is None:
            return None
        email = dsn.final_recipient
        if email is None:
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
        return await apply_delivery_event(self.store, event, source=DSN_SOURCE,
                                          tell=self.signals.delivery_event,
                                          max_bounce_rate=self.max_bounce_rate)

    async def _mailto_unsubscribe(self, msg: InboundMessage) -> InboundResult | None:
        """Mail to the List-Unsubscribe `mailto:`: its subject names the message key of the
        message whose recipient asks to leave. A key is valid when it is the key of a
        message we recorded, rebuilt from that message's campaign, lead and step (as
        `campaign_core.ids.message_key` builds it): 128 bits that only the message's
        recipient (or whoever they passed it to) has, like the signed link's token.

        A valid key suppresses the recipient's address once (reason `unsubscribe (mailto,
        CAMPAIGN)`, an `unsubscribe` delivery event from source `mailto`, an audit entry);
        the message is not a reply and stops nothing as replied. An invalid key changes
        nothing. None: the subject carries no key, so the message is not an unsubscribe."""
        found = MAILTO_SUBJECT.search(msg.subject)
        if found is None:
            return None
        key = found.group(1).lower()
        delivery = await self.store.get_delivery(key)
        lead = (await self.store.get_lead(delivery.campaign_id, delivery.lead_id)
                if delivery is not None and message_key(
                    delivery.campaign_id, delivery.lead_id, delivery.step) == key else None)
        if delivery is None or lead is None:
            log.info("inbound %s: an unsubscribe by mail whose key is none of our messages'; "
                     "nothing done", self.source)
            return InboundResult(message_id=msg.key, kind="unsubscribe", status="unmatched",
                                 reason="unsubscribe by mail with a key that is not ours")
        cid, lid = delivery.campaign_id, delivery.lead_id
        added = await self.store.add_suppressions([lead.email], f"unsubscribe (mailto, {cid})",
                                                 source="mailto") > 0
        new = await self.store.record_delivery_event(
            event_id=f"{MAILTO_SOURCE}:{key}", kind=DeliveryEventKind.UNSUBSCRIBE.value,
            email=lead.email, source=MAILTO_SOURCE, campaign_id=cid, lead_id=lid,
            message_key=key)
        if new:
            process_metrics().delivery_event(DeliveryEventKind.UNSUBSCRIBE.value)
            at = now_utc()
            data = {"status": "unsubscribed", "source": MAILTO_SOURCE, "message_key": key,
                    "step": delivery.step, "via": self.source, "suppressed": added}
            await self.store.save_envelope(
                self._envelope(cid, "unsubscribe", key, data, at, source=f"inbound:{self.source}"),
                lid)
        log.info("inbound %s: unsubscribe by mail for a lead of %s (%s)", self.source, cid,
                 "new" if new else "recorded before")
        return InboundResult(
            message_id=msg.key, kind="unsubscribe", status="unsubscribed",
            reason="unsubscribe by mail to the List-Unsubscribe address", duplicate=not new,
            unsubscribe=UnsubscribeResult(campaign_id=cid, lead_id=lid, step=delivery.step,
                                          suppressed=added, duplicate=not new))

    def _audit(self, campaign_id: str, reply_id: str, c: Classification, step: int | None,
               how: str, verified: bool, trust: str | None) -> Envelope:
        """The reply in the campaign's audit trail: what and how it matched, whether it was
        verified and why, no text or address."""
        data = {"status": c.kind, "reply_id": reply_id, "reason": c.reason, "step": step,
                "matched_by": how, "source": self.source, "verified": verified,
                "trust": trust}
        return self._envelope(campaign_id, "reply", reply_id, data, now_utc(),
                              source=f"inbound:{self.source}")

    def _envelope(self, campaign_id: str, kind: str, key: str, data: dict[str, Any],
                  at: datetime, *, source: str) -> Envelope:
        return Envelope(
            metadata=EnvelopeMetadata(campaign_id=campaign_id, run_id=f"inbound-{self.source}",
                                      agent="replies.inbound", agent_version="1", attempt=1,
                                      started_at=at, ended_at=at),
            records=[Record(kind=kind, key=key, data=data, provenance=Provenance(
                source=source, agent="replies", created_at=at, inputs_digest=digest([key])))])
