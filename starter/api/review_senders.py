"""What the review pages show of senders (issue 28): each lead's mailbox, and the
mailboxes' capacity for today.

A lead is given its sender when it is drafted and keeps it for its whole sequence, so a
reviewer sees which mailbox each lead's messages leave from, and with which From. A lead
without one, in a campaign that sends through senders (the smtp and outbox channels, some of
its leads given one), gets its sender when its first step goes out: "assigned at send". The
campaign page also shows, for each mailbox its leads use, how much of today's cap is left
(every campaign's sends count against a shared mailbox's cap), so a reviewer approving
a campaign sees when it can go out.

Secrets stay out: a SenderRow's URLs and key are never read here, only its name, From and
state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from campaign_core.settings import Settings
from campaign_core.store.base import Store
from campaign_core.store.rows import CampaignRow

#: The channels whose messages leave through senders (the webhook channel ignores them).
SENDER_CHANNELS = frozenset({"smtp", "outbox"})
#: What the pages say of a lead whose sender is chosen when its first step goes out.
AT_SEND = "assigned at send"


@dataclass(frozen=True)
class LeadSender:
    """A lead's sender as the pages show it; `name` None: assigned at send."""

    name: str | None
    from_addr: str | None = None
    paused: bool = False
    removed: bool = False

    @property
    def at_send(self) -> bool:
        return self.name is None


@dataclass(frozen=True)
class SenderCapacity:
    """One row of the campaign page's capacity table."""

    name: str
    from_addr: str
    leads: int  # the campaign's leads assigned to it
    today_cap: int
    sent_24h: int
    remaining: int
    next_slot: str  # "now", a time, or "" (paused: when a person resumes it)
    paused: bool
    paused_reason: str | None
    removed: bool


class LeadSenders:
    """The senders of one campaign's leads, each sender row read once per page."""

    def __init__(self, store: Store, campaign: CampaignRow) -> None:
        self.store = store
        self.campaign = campaign
        self._rows: dict[str, LeadSender] = {}
        self._pool: bool | None = None

    async def _through_senders(self) -> bool:
        """Whether the campaign's messages leave through senders: its channel takes them
        and some of its leads were given one (a campaign started without senders, before
        any was defined or on the webhook channel, sends as CAMPAIGN_FROM: nothing to show,
        whatever senders exist now)."""
        if self._pool is None:
            self._pool = self.campaign.channel in SENDER_CHANNELS and bool(
                await self.store.sender_assignment_counts(self.campaign.campaign_id))
        return self._pool

    async def of(self, lead_id: str) -> LeadSender | None:
        """The lead's sender; `LeadSender(None)` when it is assigned at send; None when the
        campaign sends through no sender (nothing to show)."""
        name = await self.store.lead_sender(self.campaign.campaign_id, lead_id)
        if name is None:
            return LeadSender(None) if await self._through_senders() else None
        if name not in self._rows:
            row = await self.store.get_sender(name)
            self._rows[name] = LeadSender(
                name, row.from_addr if row else None, paused=bool(row and row.paused),
                removed=row is None or row.removed_at is not None)
        return self._rows[name]


async def capacity(store: Store, settings: Settings, campaign_id: str,
                   now: datetime | None = None) -> list[SenderCapacity]:
    """Today's capacity of each sender the campaign's leads use, by name."""
    from campaign_core.sender_capacity import sender_status

    now = now or datetime.now(UTC)
    rows = []
    for name, leads in sorted((await store.sender_assignment_counts(campaign_id)).items()):
        row = await store.get_sender(name)
        if row is None:
            continue
        status = await sender_status(store, row, settings, now)
        slot = status.next_slot
        rows.append(SenderCapacity(
            name=row.name, from_addr=row.from_addr, leads=leads, today_cap=status.today_cap,
            sent_24h=status.sent_24h, remaining=max(0, status.today_cap - status.sent_24h),
            next_slot="" if status.paused or slot is None else (
                "now" if slot <= now else f"{slot.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"),
            paused=status.paused, paused_reason=status.paused_reason,
            removed=row.removed_at is not None))
    return rows
