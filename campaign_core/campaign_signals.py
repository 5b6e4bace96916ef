"""What tells a running campaign of a reply or a delivery event from outside: the port
`CampaignSignals`, which `ReplyDesk` and `apply_delivery_event` are given.

The core knows no workflow (tests/shape/test_layering.py), so it cannot name their signal
handlers; the implementation that signals by handler reference is the workflows' own:
`workflows.signals.TemporalCampaignSignals`, built by whoever holds a Temporal client (the
control plane, the worker). Which workflow each signal goes to, and why, is said there.
"""

from __future__ import annotations

from typing import Protocol

from campaign_core.models import DeliveryEventSignal, OutOfOfficeSignal, ReplySignal


class CampaignSignals(Protocol):
    """Tells a campaign's running workflows; each method is True when a running workflow of
    the campaign was signalled, False when none runs (nothing to tell)."""

    async def reply(self, campaign_id: str, signal: ReplySignal) -> bool:
        """A person's reply, or a hard bounce that came back as mail, from one of its leads."""
        ...

    async def delivery_event(self, campaign_id: str, signal: DeliveryEventSignal) -> bool:
        """A bounce or complaint for one of its messages (counted by the circuit breaker)."""
        ...

    async def out_of_office(self, campaign_id: str, signal: OutOfOfficeSignal) -> bool:
        """An out-of-office reply: the lead's next step moves (issue 27); nothing stops."""
        ...

    async def reply_recorded(self, campaign_id: str, reply_id: str, *,
                             confirmed: bool = False) -> bool:
        """A person's (or an automatic) reply to the campaign was recorded: act on it once
        (the reply action workflow `reply-action:<reply_id>`, or `…:confirmed` once a person
        confirmed an unverified match). True when it was started now or before."""
        ...
