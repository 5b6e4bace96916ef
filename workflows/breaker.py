"""The campaign's `circuit_breaker` signal, declared apart from the campaign workflow.

The delivery orchestrator signals its parent campaign when its bounce breaker trips, and the
campaign workflow starts the delivery orchestrator: referencing `CampaignWorkflow` from the
delivery module would make the two import each other. So the handler is declared here, on a
base class the campaign workflow inherits, and both sides name it by reference
(`BreakerListener.circuit_breaker`); the wire name stays "circuit_breaker", as recorded
histories and running campaigns expect.
"""

from __future__ import annotations

from temporalio import workflow


class BreakerListener:
    """A workflow that hears its delivery child pause itself: `breaker_opened` says what to do."""

    @workflow.signal(name="circuit_breaker")
    def circuit_breaker(self, reason: str) -> None:
        """The delivery orchestrator paused itself: record why, for `status` and the UI."""
        self.breaker_opened(reason)

    def breaker_opened(self, reason: str) -> None:
        raise NotImplementedError
