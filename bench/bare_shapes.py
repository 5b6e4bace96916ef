"""The bare shapes the engine is measured against: what Temporal itself costs per lead.

`BareParent` starts one `BareChild` per lead, `window` at a time, each running three
no-op activities (the engine's lead orchestrator runs store, retrieve, write and store
draft); `BareFlat` runs the same three no-op activities per lead in one workflow. Both
continue as new every `per_run` leads, as the engine does, so their histories stay
bounded like the engine's.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow

NOOP_TIMEOUT = timedelta(seconds=60)


class BareInput(BaseModel):
    leads: int
    window: int = 200
    per_run: int = 1000
    done: int = 0
    activity_queue: str


@activity.defn(name="bare_noop")
async def bare_noop(lead: int) -> int:
    return lead


@workflow.defn(name="BareChild")
class BareChild:
    @workflow.run
    async def run(self, lead: int, queue: str) -> int:
        for _ in range(3):
            await workflow.execute_activity(bare_noop, lead, task_queue=queue,
                                            start_to_close_timeout=NOOP_TIMEOUT)
        return lead


async def _windowed(inp: BareInput, one: object) -> int:
    """Run `one(lead)` for this run's leads, `window` at a time; returns the next lead."""
    end = min(inp.leads, inp.done + inp.per_run)
    pending: set[asyncio.Task[object]] = set()
    for lead in range(inp.done, end):
        if len(pending) >= inp.window:
            _, rest = await workflow.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            pending = set(rest)
        pending.add(asyncio.create_task(one(lead)))  # type: ignore[operator]
    if pending:
        await workflow.wait(pending)
    return end


@workflow.defn(name="BareParent")
class BareParent:
    @workflow.run
    async def run(self, inp: BareInput) -> int:
        info = workflow.info()

        async def one(lead: int) -> int:
            return await workflow.execute_child_workflow(
                BareChild.run, args=[lead, inp.activity_queue],
                id=f"{info.workflow_id}:lead:{lead}", task_queue=info.task_queue)

        end = await _windowed(inp, one)
        if end < inp.leads:
            workflow.continue_as_new(inp.model_copy(update={"done": end}))
        return end


@workflow.defn(name="BareFlat")
class BareFlat:
    @workflow.run
    async def run(self, inp: BareInput) -> int:
        async def one(lead: int) -> int:
            for _ in range(3):
                await workflow.execute_activity(bare_noop, lead, task_queue=inp.activity_queue,
                                                start_to_close_timeout=NOOP_TIMEOUT)
            return lead

        end = await _windowed(inp, one)
        if end < inp.leads:
            workflow.continue_as_new(inp.model_copy(update={"done": end}))
        return end
