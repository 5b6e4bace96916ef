"""What every agent shares: its dependencies and how it writes its envelope.

Agents are classes so the worker can hand them the store and settings once; each
public method is one activity, named in the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from campaign_core.envelope import (
    Envelope,
    EnvelopeMetadata,
    EnvelopeRef,
    Provenance,
    Record,
    digest,
    now_utc,
)
from campaign_core.settings import Settings
from campaign_core.store.base import Store

#: Heartbeat period when the activity has no heartbeat timeout (outside tests, rare).
DEFAULT_HEARTBEAT_EVERY = 10.0
T = TypeVar("T")


def permanent(kind: str, message: str) -> ApplicationError:
    """An error no retry can fix; the registry lists these types as non-retryable."""
    return ApplicationError(message, type=kind, non_retryable=True)


class Agent:
    """Base of every operational agent."""

    name = "agent"
    version = "1"

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    def provenance(
        self, source: str, inputs: Any, model: str | None = None, *,
        prompt_hash: str | None = None, tokens: int | None = None, cost_usd: float | None = None,
    ) -> Provenance:
        return Provenance(
            source=source,
            agent=self.name,
            created_at=now_utc(),
            inputs_digest=digest(inputs),
            model=model,
            prompt_hash=prompt_hash,
            tokens=tokens,
            cost_usd=cost_usd,
        )

    def envelope(self, campaign_id: str, records: list[Record], started: datetime) -> Envelope:
        """Wrap records with who/when/which attempt, from the running activity's info."""
        info = activity.info()
        return Envelope(
            metadata=EnvelopeMetadata(
                campaign_id=campaign_id,
                run_id=info.workflow_run_id or info.activity_id,
                agent=f"{self.name}.{info.activity_type}",
                agent_version=self.version,
                attempt=info.attempt,
                started_at=started,
                ended_at=now_utc(),
            ),
            records=records,
        )

    async def keep(self, envelope: Envelope, lead_id: str | None, summary: str) -> EnvelopeRef:
        """Store the envelope in the audit log and return only its reference."""
        envelope_id = await self.store.save_envelope(envelope, lead_id)
        return EnvelopeRef(
            envelope_id=envelope_id,
            agent=envelope.metadata.agent,
            record_count=len(envelope.records),
            summary=summary,
        )


async def heartbeating(aw: Awaitable[T], *, details: str = "waiting for the provider") -> T:
    """Await `aw` while heartbeating, so long calls survive the heartbeat timeout.

    A short heartbeat timeout is what lets Temporal retry the work of a worker that
    died quickly; heartbeating while waiting keeps a live but slow call from looking dead.

    The period is a third of the activity's heartbeat timeout; outside an activity the
    awaitable is simply awaited. If the activity is cancelled, so is the call.
    """
    if not activity.in_activity():
        return await aw
    timeout = activity.info().heartbeat_timeout
    every = timeout.total_seconds() / 3 if timeout else DEFAULT_HEARTBEAT_EVERY
    task: asyncio.Future[T] = asyncio.ensure_future(aw)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=max(every, 0.01))
            if done:
                return task.result()
            activity.heartbeat(details)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
