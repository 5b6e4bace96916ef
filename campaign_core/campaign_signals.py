"""What tells a running campaign of a reply or a delivery event from outside: the port
`CampaignSignals`, which `ReplyDesk` and `apply_delivery_event` are given.

The core knows no workflow (tests/shape/test_layering.py), so it cannot name their signal
handlers; the implementation that signals by handler reference is the workflows' own:
`workflows.signals.TemporalCampaignSignals`, built by whoever holds a Temporal client (the
control plane, the worker). Which workflow each signal goes to, and why, is said there.
"""

from __future__ import annotations

from typing import Protocol

from campaign_core.models import DeliveryEventSignal, ReplySignal


class CampaignSignals(Protocol):
    """Tells a campaign's running workflows; each method is True when a running workflow of
    the campaign was signalled, False when none runs (nothing to tell)."""

    async def reply(self, campaign_id: str, signal: ReplySignal) -> bool:
        """A person's reply, or a hard bounce that came back as mail, from one of its leads."""
        ...

    async def delivery_event(self, campaign_id: str, signal: DeliveryEventSignal) -> bool:
        """A bounce or complaint for one of its messages (counted by the circuit breaker)."""
        ...
