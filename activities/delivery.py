"""The delivery agent: sends one approved message, exactly once in effect.

The message key (campaign, lead, step) is recorded as `sending` before the channel
is touched and `sent` after; a retry that finds `sent` does nothing. The outbox
channel writes `<key>.eml` atomically (temp file + rename), so even a crash between
writing and recording leaves one file with one Message-ID, never two.
"""

from __future__ import annotations

import os
import tempfile
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr, formatdate, parseaddr
from pathlib import Path

from temporalio import activity

from activities.base import Agent, permanent
from campaign_core.envelope import Record, now_utc
from campaign_core.ids import message_key
from campaign_core.models import Channel, DeliverInput, DeliveryOutcome

#: CRLF line ends (RFC 5322) and no folding of long URLs into encoded words.
MAIL_POLICY = SMTP.clone(max_line_length=998)


def header_safe(value: str) -> str:
    """No CR/LF from lead data may reach a header."""
    return " ".join(value.replace("\r", " ").replace("\n", " ").split())


def render_message(
    *, key: str, sender: str, to: str, to_name: str | None, subject: str, body: str,
    unsubscribe_url: str,
) -> EmailMessage:
    """An RFC 5322 message whose Message-ID is derived from the message key."""
    msg = EmailMessage(policy=MAIL_POLICY)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "campaign.local"
    msg["Message-ID"] = f"<{key}@{domain}>"
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["From"] = header_safe(sender)
    msg["To"] = formataddr((header_safe(to_name), to)) if to_name else to
    msg["Subject"] = header_safe(subject)
    msg["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["X-Campaign-Message-Key"] = key
    msg.set_content(f"{body}\n\n--\nTo stop receiving these messages: {unsubscribe_url}\n")
    return msg


def write_outbox(outbox: Path, key: str, msg: EmailMessage) -> Path:
    """Write atomically: readers never see a half-written file, retries overwrite."""
    outbox.mkdir(parents=True, exist_ok=True)
    target = outbox / f"{key}.eml"
    fd, tmp = tempfile.mkstemp(dir=outbox, prefix=".tmp-", suffix=".eml")
    with os.fdopen(fd, "wb") as fh:
        fh.write(bytes(msg))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    return target


class DeliveryAgent(Agent):
    name = "delivery"

    @activity.defn(name="deliver_message")
    async def deliver_message(self, inp: DeliverInput) -> DeliveryOutcome:
        started = now_utc()
        key = message_key(inp.campaign_id, inp.lead_id, inp.step)
        done = await self.store.get_delivery(key)
        if done and done["status"] in {"sent", "suppressed"}:
            return DeliveryOutcome(lead_id=inp.lead_id, status=done["status"],
                                   message_id=done["message_id"])
        draft = await self.store.get_draft(inp.campaign_id, inp.lead_id, inp.step)
        lead = await self.store.get_lead(inp.campaign_id, inp.lead_id)
        if draft is None or lead is None or not draft["approved"]:
            raise permanent("NotFound", f"no approved draft for lead {inp.lead_id}")
        common = {"message_key": key, "campaign_id": inp.campaign_id, "lead_id": inp.lead_id,
                  "step": inp.step, "channel": inp.channel.value}

        async def mark(status: str, message_id: str | None = None) -> None:
            await self.store.upsert_delivery(
                message_key=key, campaign_id=inp.campaign_id, lead_id=inp.lead_id, step=inp.step,
                channel=inp.channel.value, status=status, message_id=message_id)
        # Suppression is checked now, at the moment of sending, not when drafting.
        if await self.store.is_suppressed(lead.email):
            await mark("suppressed")
            return DeliveryOutcome(lead_id=inp.lead_id, status="suppressed")
        if inp.channel is not Channel.OUTBOX:
            raise permanent("InvalidInput", f"channel {inp.channel.value!r} is not available yet")
        await mark("sending")
        name = " ".join(p for p in (lead.first_name, lead.last_name) if p) or None
        msg = render_message(
            key=key, sender=self.settings.mail_from, to=lead.email, to_name=name,
            subject=draft["subject"], body=draft["body"],
            unsubscribe_url=f"{self.settings.public_url.rstrip('/')}/unsubscribe?token={key}",
        )
        path = write_outbox(self.settings.outbox_dir, key, msg)
        message_id = str(msg["Message-ID"])
        await mark("sent", message_id)
        record = Record(
            kind="delivery", key=key,
            data={"status": "sent", "message_id": message_id, "file": path.name},
            provenance=self.provenance(f"draft:{draft['envelope_id']}", common),
        )
        await self.keep(self.envelope(inp.campaign_id, [record], started), inp.lead_id, "sent")
        return DeliveryOutcome(lead_id=inp.lead_id, status="sent", message_id=message_id)
