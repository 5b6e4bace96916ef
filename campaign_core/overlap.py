"""One person across campaigns (issue 27): who a new campaign leaves out at intake.

A start (`campaign start`, `POST /campaigns`), `add-leads` and each firing of a schedule
skip, unless they allow overlap, the people who are
- in another campaign's sequence still going on (`active_sequence`): a lead of a campaign
  drafting or awaiting approval, or of one delivering whose step 1 is still to go or
  whose follow-up is still scheduled (`Store.emails_in_active_sequences`);
- or who replied, as a person (not an automatic reply, not an unverified match), within
  `CAMPAIGN_REPLY_COOLDOWN` (`replied`, `Store.emails_replied_since`).

Each skipped person is reported with the campaign that made them skipped. The lookups are
by normalised address, one store query per batch of addresses (a 10,000-lead file is a
few dozen queries, not 10,000). Skipping happens where leads enter the store (the control
plane, the schedule agent), so it never reaches a workflow: no address is in any history.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from campaign_core.envelope import now_utc
from campaign_core.leads import Lead
from campaign_core.store.base import Store

SkipReason = Literal["active_sequence", "replied"]


class SkippedLead(BaseModel):
    """A person left out of a campaign, and why (`start --json` `leads_skipped`)."""

    email: str
    reason: SkipReason = Field(description="active_sequence: in another campaign's sequence "
                               "still going on; replied: replied within the cooldown.")
    campaign_id: str = Field(description="The other campaign (where the sequence goes on, or "
                             "the one replied to).")


async def overlapping(store: Store, emails: Sequence[str], *, campaign_id: str | None,
                      cooldown: timedelta, now: datetime | None = None) -> list[SkippedLead]:
    """Of `emails` (normalised addresses), those to skip, in their order: in another
    campaign's active sequence first, else replied within `cooldown` (none when it is 0).
    `campaign_id` is the campaign being filled: its own leads are not "another" one's."""
    if not emails:
        return []
    active = await store.emails_in_active_sequences(emails, exclude_campaign=campaign_id)
    rest = [e for e in emails if e not in active]
    replied = (await store.emails_replied_since(rest, (now or now_utc()) - cooldown)
               if rest and cooldown > timedelta(0) else {})
    skipped = []
    for email in dict.fromkeys(emails):
        if email in active:
            skipped.append(SkippedLead(email=email, reason="active_sequence",
                                       campaign_id=active[email]))
        elif email in replied:
            skipped.append(SkippedLead(email=email, reason="replied", campaign_id=replied[email]))
    return skipped


async def without_overlap(store: Store, leads: list[Lead], *, campaign_id: str | None,
                          cooldown: timedelta) -> tuple[list[Lead], list[SkippedLead]]:
    """`leads` without those to skip (`overlapping`), and the skipped."""
    skipped = await overlapping(store, [lead.email for lead in leads], campaign_id=campaign_id,
                                cooldown=cooldown)
    gone = {s.email for s in skipped}
    return [lead for lead in leads if lead.email not in gone], skipped


def describe_skipped(skipped: Sequence[SkippedLead]) -> str:
    """'3 in another active sequence, 1 replied within the cooldown'."""
    active = sum(1 for s in skipped if s.reason == "active_sequence")
    parts = ([f"{active} in another active sequence"] if active else []) + (
        [f"{len(skipped) - active} replied within the cooldown"]
        if len(skipped) > active else [])
    return ", ".join(parts) or "none"
