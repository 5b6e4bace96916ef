"""How orchestrators call agents: by registry name, on the agent's own queue.

Queue, timeouts and retry policy all come from the registry, so a workflow never
repeats wiring that the worker also needs.
"""

from __future__ import annotations

from typing import Any, TypeVar

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from campaign_core.registry import AGENTS, queue_name

T = TypeVar("T")


async def call_agent(
    name: str, arg: Any, *, result_type: type[T], prefix: str, summary: str
) -> T:
    """Run the agent `name` as an activity and return its typed result."""
    spec = AGENTS[name]
    result: T = await workflow.execute_activity(
        name,
        arg,
        task_queue=queue_name(spec.queue, prefix),
        start_to_close_timeout=spec.start_to_close,
        heartbeat_timeout=spec.heartbeat,
        retry_policy=spec.retry,
        result_type=result_type,
        summary=summary[:200],
    )
    return result
