"""Signals to a running campaign from outside, by handler reference: replies, bounces and
complaints (`campaign_core.campaign_signals.CampaignSignals` through a Temporal client).

The delivery orchestrator is what acts on them (it stops a lead's sequence, counts a bounce
for the circuit breaker). Signalling the campaign workflow instead, which forwards each one
to its delivery child, costs the campaign's history about six events a signal, and a
campaign never continues as new while delivering (it waits days for follow-ups): some
1,500 replies and bounces would take it past 10,000 events. Signalled directly, each costs
the campaign nothing and the delivery orchestrator one event, which its continue-as-new
bounds. Before approval (no delivery yet) the campaign workflow is signalled: its handlers
stay, for that and for the runs and recorded histories that still forward.

The control plane (API, CLI) and the worker (the reply agent's activity, given this by
worker_main) build it; the core and the activities cannot import workflows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from campaign_core.ids import campaign_workflow_id, delivery_workflow_id
from campaign_core.models import DeliveryEventSignal, OutOfOfficeSignal, ReplySignal
from workflows.campaign import CampaignWorkflow
from workflows.delivery import DeliveryOrchestrator
from workflows.reply_actions import start_reply_action


class TemporalCampaignSignals:
    """Signals the campaign's running delivery orchestrator, else its campaign workflow; a
    workflow that is not running is not an error."""

    def __init__(self, client: Client, *, prefix: str | None = None) -> None:
        self.client = client
        #: The deployment's task-queue prefix: where a reply's action workflow starts when
        #: its campaign's workflow does not say (`start_reply_action`).
        self.prefix = prefix

    async def reply(self, campaign_id: str, signal: ReplySignal) -> bool:
        return (await self._send(delivery_workflow_id(campaign_id),
                                 DeliveryOrchestrator.reply, signal)
                or await self._send(campaign_workflow_id(campaign_id),
                                    CampaignWorkflow.reply, signal))

    async def delivery_event(self, campaign_id: str, signal: DeliveryEventSignal) -> bool:
        return (await self._send(delivery_workflow_id(campaign_id),
                                 DeliveryOrchestrator.delivery_event, signal)
                or await self._send(campaign_workflow_id(campaign_id),
                                    CampaignWorkflow.delivery_event, signal))

    async def out_of_office(self, campaign_id: str, signal: OutOfOfficeSignal) -> bool:
        """Only a running delivery moves steps: before one runs, none is scheduled."""
        return await self._send(delivery_workflow_id(campaign_id),
                                DeliveryOrchestrator.out_of_office, signal)

    async def reply_recorded(self, campaign_id: str, reply_id: str, *,
                             confirmed: bool = False) -> bool:
        return await start_reply_action(self.client, reply_id, campaign_id=campaign_id,
                                        confirmed=confirmed, prefix=self.prefix)

    async def _send(self, workflow_id: str, handler: Callable[..., Any], arg: object) -> bool:
        """Signal `handler` of the workflow `workflow_id`; False when it is not running."""
        try:
            await self.client.get_workflow_handle(workflow_id).signal(handler, arg)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True
