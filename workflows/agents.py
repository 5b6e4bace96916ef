"""How orchestrators call agents: by method reference, on the agent's own queue.

`call_agent(StoreAgent.store_lead, inp, ...)` looks up queue, timeouts and retries in
the registry; the result type comes from the method's annotation. An agent the registry
marks `local` runs as a local activity on the workflow worker, in workflow runs that
started after that change (`workflow.patched`, so older histories still replay).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.registry import agent_spec
    from campaign_core.queues import queue_name

#: The patch that moved the registry's `local` agents from their queue to local activities.
LOCAL_STORE_STEPS = "local-store-steps"

A = TypeVar("A")
R = TypeVar("R")


async def call_agent(
    activity: Callable[[Any, A], Awaitable[R]], arg: A, *, prefix: str, summary: str
) -> R:
    """Run the agent method `activity` (e.g. `StoreAgent.store_lead`) and return its result."""
    spec = agent_spec(activity)
    if spec.local and workflow.patched(LOCAL_STORE_STEPS):
        return await workflow.execute_local_activity_method(
            activity,
            arg,
            start_to_close_timeout=spec.start_to_close,
            retry_policy=spec.retry,
            summary=summary[:200],
        )
    return await workflow.execute_activity_method(
        activity,
        arg,
        task_queue=queue_name(spec.queue, prefix),
        start_to_close_timeout=spec.start_to_close,
        heartbeat_timeout=spec.heartbeat,
        retry_policy=spec.retry,
        summary=summary[:200],
    )
