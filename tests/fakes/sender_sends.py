"""A campaign whose messages were sent, recorded in a real store as the delivery agent
records them (a `sent` delivery with its Message-ID) and, for a sender, as its claims
(`sender_sends`), so bounce and complaint events find both the message and its mailbox."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from campaign_core.ids import message_key
from campaign_core.leads import parse_lead_rows
from campaign_core.senders import SenderClaim, SenderRow
from campaign_core.store.base import Store


@dataclass(frozen=True)
class Sent:
    """One message sent: to whom, its Message-ID (with <>), its key."""

    email: str
    message_id: str
    message_key: str


async def add_sender(store: Store, name: str, at: datetime, *, daily_cap: int = 100,
                     hourly_cap: int = 100) -> SenderRow:
    """An outbox sender named `name` (`Name <name@acme.io>`), added at `at`."""
    row = SenderRow(name=name, from_addr=f"{name.title()} <{name}@acme.io>", transport="outbox",
                    daily_cap=daily_cap, hourly_cap=hourly_cap, created_at=at)
    assert await store.add_sender(row)
    return row


async def sent_campaign(store: Store, campaign_id: str, sends: int, start: datetime, *,
                        sender: str | None, first_seq: int = 1) -> list[Sent]:
    """Campaign `campaign_id` with `sends` leads, each sent step 1 a minute apart from
    `start`; from `sender` (its claims numbered from `first_seq`), or from the implicit
    sender (None: no claim, as before senders)."""
    await store.upsert_campaign(campaign_id=campaign_id, name=campaign_id, brief="",
                                channel="outbox", kb_dir=None,
                                workflow_id=f"campaign:{campaign_id}")
    rows = [{"email": f"p{i}@{campaign_id}.example", "company": f"Co {i}"}
            for i in range(sends)]
    leads = parse_lead_rows(enumerate(rows, start=2), campaign_id).leads
    await store.upsert_leads(campaign_id, leads)
    out = []
    for i, lead in enumerate(leads):
        key = message_key(campaign_id, lead.lead_id, 1)
        mid = f"<{key}@acme.io>"
        await store.upsert_delivery(message_key=key, campaign_id=campaign_id,
                                    lead_id=lead.lead_id, step=1, channel="outbox",
                                    status="sent", message_id=mid)
        if sender is not None:
            assert await store.insert_sender_claim(SenderClaim(
                sender=sender, seq=first_seq + i, message_key=key, campaign_id=campaign_id,
                lead_id=lead.lead_id, sent_at=start + timedelta(minutes=i)))
        out.append(Sent(email=lead.email, message_id=mid, message_key=key))
    return out
