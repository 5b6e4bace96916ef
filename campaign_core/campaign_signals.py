"""Where replies, bounces and complaints from outside are signalled: the delivery
orchestrator while it runs, else the campaign workflow.

The delivery orchestrator is what acts on them (it stops a lead's sequence, counts a bounce
for the circuit breaker). Signalling the campaign workflow instead, which forwards each one
to its delivery child, costs the campaign's history about six events a signal, and a
campaign never continues as new while delivering (it waits days for follow-ups): some
1,500 replies and bounces would take it past 10,000 events. Signalled directly, each costs
the campaign nothing and the delivery orchestrator one event, which its continue-as-new
bounds. Before approval (no delivery yet) the campaign workflow is signalled: its handlers
stay, for that and for the runs and recorded histories that still forward.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pydantic import BaseModel
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from campaign_core.ids import campaign_workflow_id, delivery_workflow_id

#: `signal(workflow_id, name, arg)`: True when delivered, False when the workflow is not running.
Signal = Callable[[str, str, BaseModel], Awaitable[bool]]


def temporal_signal(client: Client) -> Signal:
    """Signals through a Temporal client; a workflow that is not running is not an error."""
    async def signal(workflow_id: str, name: str, arg: BaseModel) -> bool:
        try:
            await client.get_workflow_handle(workflow_id).signal(name, arg)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    return signal


async def signal_campaign(signal: Signal, campaign_id: str, name: str, arg: BaseModel) -> bool:
    """Signal `name` (`reply` or `delivery_event`) to the campaign's running delivery
    orchestrator, else to the campaign workflow; True when a running workflow of the
    campaign was signalled."""
    if await signal(delivery_workflow_id(campaign_id), name, arg):
        return True
    return await signal(campaign_workflow_id(campaign_id), name, arg)
