"""Runs the workers: one per task queue in the registry, all built from it.

`python worker_main.py` (or `campaign worker`) connects to TEMPORAL_ADDRESS and
polls every queue, or only those named with `--queues`. Each queue's concurrency
and task-queue-wide rate limit come from the registry; the LLM rate from
CAMPAIGN_LLM_RATE_LIMIT.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
from collections.abc import Callable, Iterable
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.base import Agent
from campaign_core.registry import AGENTS, FLOWS, QUEUES, WORKFLOW_QUEUE, queue_name
from campaign_core.settings import Settings, load_settings
from campaign_core.store.base import Store
from campaign_core.store.factory import open_store
from campaign_core.temporal import connect
from campaign_core.tracing import is_traced

log = logging.getLogger("campaign.worker")


def _resolve(path: str) -> Any:
    module, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def build_agents(store: Store, settings: Settings) -> dict[str, Agent]:
    """One instance per agent class named in the registry, sharing the store."""
    agents: dict[str, Agent] = {}
    for spec in AGENTS.values():
        cls_path = spec.impl.rsplit(".", 1)[0]
        if cls_path not in agents:
            agents[cls_path] = _resolve(cls_path)(store, settings)
    return agents


def workflow_runner(client: Client) -> WorkflowRunner:
    """The sandbox; with tracing on, `opentelemetry` passes through it (Temporal's OTel sample)."""
    if is_traced(client.config()["interceptors"]):
        return SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules("opentelemetry"))
    return SandboxedWorkflowRunner()


def build_workers(
    client: Client,
    store: Store,
    settings: Settings,
    *,
    prefix: str | None = None,
    queues: Iterable[str] | None = None,
    agents: dict[str, Agent] | None = None,
    overrides: dict[str, Callable[..., Any]] | None = None,
) -> list[Worker]:
    """A worker per queue; `overrides` replaces activities by name (test doubles)."""
    prefix = settings.task_queue_prefix if prefix is None else prefix
    wanted = set(queues) if queues else set(QUEUES)
    unknown = wanted - set(QUEUES)
    if unknown:
        raise ValueError(f"unknown queue(s): {', '.join(sorted(unknown))}; known: {', '.join(QUEUES)}")
    agents = agents if agents is not None else build_agents(store, settings)
    overrides = overrides or {}
    runner = workflow_runner(client)  # the client's converter and interceptors reach every worker
    workers = []
    for q in QUEUES.values():
        if q.name not in wanted:
            continue
        activities = [
            overrides.get(a.name) or getattr(agents[a.impl.rsplit(".", 1)[0]], a.impl.rsplit(".", 1)[1])
            for a in AGENTS.values() if a.queue == q.name
        ]
        workflows = [_resolve(f.impl) for f in FLOWS.values() if f.queue == q.name]
        rate = {"llm": settings.llm_rate_limit, "delivery": settings.send_rate_limit}.get(
            q.name, q.rate_per_second)
        workers.append(Worker(
            client,
            task_queue=queue_name(q.name, prefix),
            workflows=workflows,
            activities=activities,
            workflow_runner=runner,
            max_concurrent_activities=q.max_concurrent,
            max_task_queue_activities_per_second=rate,
            # Eager execution would bypass the task-queue rate limits.
            disable_eager_activity_execution=q.name == WORKFLOW_QUEUE or bool(rate),
        ))
    return workers


async def run_workers(
    client: Client, settings: Settings, queues: Iterable[str] | None, stop: asyncio.Event
) -> None:
    """Run until `stop` is set, then shut every worker down gracefully."""
    store = open_store(settings)
    # The embedded store migrates itself; a shared one must already be current
    # (`campaign db migrate`): a worker never changes a schema other workers use.
    await store.ensure_schema()
    workers = build_workers(client, store, settings, queues=queues)
    names = ", ".join(w.task_queue for w in workers)
    log.info("workers polling: %s", names)
    tasks = [asyncio.create_task(w.run()) for w in workers]
    await stop.wait()
    await asyncio.gather(*(w.shutdown() for w in workers))
    await asyncio.gather(*tasks, return_exceptions=True)
    await store.close()


def install_stop_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def main(queues: list[str] | None = None) -> None:
    settings = load_settings()
    client = await connect(settings)
    stop = asyncio.Event()
    install_stop_handlers(stop)
    await run_workers(client, settings, queues, stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queues", help="comma-separated queue names (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main(args.queues.split(",") if args.queues else None))
