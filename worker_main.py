"""Runs the workers: one per task queue in the registry, all built from it.

`python worker_main.py` (or `campaign worker`) polls every queue, or only those named
with `--queues`; each queue's limits come from the registry (the LLM and send rates
from CAMPAIGN_LLM_RATE_LIMIT and CAMPAIGN_SEND_RATE_LIMIT).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterable
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxRestrictions

from activities.base import Agent
from activities.history_guard import HistoryGuard
from activities.registry import AGENT_CLASSES, AGENTS, AgentMethod, AgentSpec, preload
from activities.replies import ReplyAgent
from activities.reply_actions import ReplyActionAgent
from campaign_core.deployment import (
    deployment_config,
    deployment_version,
    describe,
    set_current_command,
    set_current_version,
)
from campaign_core.metrics import install, telemetry_runtime, watch_backlog, watch_senders
from campaign_core.queues import QUEUES, WORKFLOW_QUEUE, queue_name
from campaign_core.sdk_patches import activity_name, sandbox_runner
from campaign_core.settings import Settings, load_settings
from campaign_core.store.base import Store
from campaign_core.store.factory import open_store
from campaign_core.temporal import connect
from campaign_core.tracing import is_traced
from workflows.answer import AnswerWorkflow
from workflows.campaign import CampaignWorkflow
from workflows.delivery import DeliveryOrchestrator
from workflows.lead import LeadOrchestrator
from workflows.replies import ReplyMailboxPoll
from workflows.reply_actions import ReplyActionWorkflow
from workflows.reply_schedule import ensure_reply_schedule
from workflows.scheduled import ScheduledCampaign
from workflows.signals import TemporalCampaignSignals

#: Every orchestrator; they all run on the workflow queue.
WORKFLOWS: tuple[type, ...] = (CampaignWorkflow, LeadOrchestrator, DeliveryOrchestrator,
                               ScheduledCampaign, ReplyMailboxPoll, AnswerWorkflow,
                               ReplyActionWorkflow)

log = logging.getLogger("campaign.worker")


def build_agents(store: Store, settings: Settings) -> dict[type[Agent], Agent]:
    """One instance of every agent class in the registry, sharing the store. The reply
    agent is also given how to signal campaigns: by the workflows' handlers, which only the
    worker knows beside the activities."""
    signalling: tuple[type[Agent], ...] = (ReplyAgent, ReplyActionAgent)
    return {cls: cls(store, settings, signals=TemporalCampaignSignals)  # type: ignore[call-arg]
            if cls in signalling else cls(store, settings) for cls in AGENT_CLASSES}


def bind(fn: AgentMethod, agents: dict[type[Agent], Agent]) -> AgentMethod:
    """The agent method `fn` bound to the instance of the class that defines it (not one
    that inherits it: `ReplyAnswerAgent` is a copywriter, but `write_draft` is the
    copywriter's activity)."""
    for cls, agent in agents.items():
        if vars(cls).get(fn.__name__) is fn:
            bound: AgentMethod = getattr(agent, fn.__name__)
            return bound
    raise LookupError(f"no agent instance for {fn.__qualname__}: add its class to AGENT_CLASSES")


def workflow_runner(client: Client) -> WorkflowRunner:
    """The sandbox, without its per-payload costs and with the SDK's idle payload walks
    skipped (campaign_core/sdk_patches.py); with tracing on, `opentelemetry` passes through
    it (Temporal's OTel sample)."""
    if is_traced(client.config()["interceptors"]):
        return sandbox_runner(SandboxRestrictions.default.with_passthrough_modules("opentelemetry"))
    return sandbox_runner()


def registered_workflows(versioned: bool) -> list[type]:
    """The orchestrators; a versioned worker registers their twins that declare a versioning
    behavior (workflows/versioned.py says why the plain classes cannot)."""
    if not versioned:
        return list(WORKFLOWS)
    from workflows.versioned import VERSIONED

    return [VERSIONED[w] for w in WORKFLOWS]


def llm_rate(settings: Settings) -> float | None:
    """The `llm` queue's rate: the provider's limit, none for the offline template writer.

    The offline writer calls no provider, so a provider's rate would only slow it down
    (at the default 5/s it bounded a campaign's drafting to 5 leads/s).
    """
    return None if settings.resolved_llm_provider == "offline" else settings.llm_rate_limit


#: The widest stretch a user's per-second limit is judged over: a provider counts calls in
#: windows of seconds to a minute, and five seconds may carry at most 1.1 times the limit.
WINDOW_S = 5.0
WINDOW_TOLERANCE = 1.1


def server_rate(limit: float | None) -> float | None:
    """The rate given to the Temporal server for a user's limit of `limit` calls a second.

    The server's limiter (the matching service's, with a burst of one second) lets a
    second's worth of tasks and one more go at once after a lull, then `rate` a second, so
    five seconds can carry six seconds of tasks and one: 1.2 times the rate (what was measured:
    docs/performance.md, "Rate limits that hold over five seconds"). With r = (5.5 * limit - 1) / 6,
    6 * r + 1 is 5.5 * limit, so no window passes 1.1 times the limit; a saturated queue
    then averages r (0.90 of a limit of 10). tests/drafting/test_copywriter.py holds this against the
    server's limiter written out as arithmetic. Under about 1/s a single burst task
    dominates, and half the limit is the floor.
    """
    if limit is None:
        return None
    tokens = WINDOW_S * WINDOW_TOLERANCE * limit  # the most one window may carry
    return max((tokens - 1) / (WINDOW_S + 1), limit / 2)


def build_workers(
    client: Client,
    store: Store,
    settings: Settings,
    *,
    prefix: str | None = None,
    queues: Iterable[str] | None = None,
    agents: dict[type[Agent], Agent] | None = None,
    overrides: dict[str, Callable[..., Any]] | None = None,
) -> list[Worker]:
    """A worker per queue; `overrides` replaces activities by activity name (test doubles)."""
    preload()  # the agents' libraries, before the first activity rather than during it
    prefix = settings.task_queue_prefix if prefix is None else prefix
    wanted = set(queues) if queues else set(QUEUES)
    unknown = wanted - set(QUEUES)
    if unknown:
        raise ValueError(f"unknown queue(s): {', '.join(sorted(unknown))}; known: {', '.join(QUEUES)}")
    agents = agents if agents is not None else build_agents(store, settings)
    overrides = overrides or {}
    unknown = set(overrides) - {activity_name(spec.activity) for spec in AGENTS.values()}
    if unknown:
        raise ValueError(f"overrides for unregistered activities: {', '.join(sorted(unknown))}")

    for name, double in overrides.items():
        if activity_name(double) != name:
            raise ValueError(f"the override for {name!r} is registered as {activity_name(double)!r}")

    def implementation(spec: AgentSpec) -> Callable[..., Any]:
        return overrides.get(activity_name(spec.activity)) or bind(spec.activity, agents)

    runner = workflow_runner(client)  # the client's converter and interceptors reach every worker
    versioning = deployment_config(settings)  # None: unversioned (CAMPAIGN_DEPLOYMENT_VERSION unset)
    workers = []
    for q in QUEUES.values():
        if q.name not in wanted:
            continue
        # The workflow worker also runs the local agents (local activities run where the
        # workflow runs); they stay on their own queue too, for runs from before the patch.
        activities = [implementation(a) for a in AGENTS.values()
                      if a.queue == q.name or (a.local and q.name == WORKFLOW_QUEUE)]
        workflows = registered_workflows(versioning is not None) if q.name == WORKFLOW_QUEUE else []
        rate = server_rate({"llm": llm_rate(settings), "delivery": settings.send_rate_limit}.get(
            q.name, q.rate_per_second))
        workers.append(Worker(
            client,
            task_queue=queue_name(q.name, prefix),
            workflows=workflows,
            activities=activities,
            workflow_runner=runner,
            # Failure messages enter history: no addresses or lead text (full reason: store).
            interceptors=[HistoryGuard(store)],
            max_concurrent_activities=q.max_concurrent,
            max_task_queue_activities_per_second=rate,
            # Eager execution would bypass the task-queue rate limits.
            disable_eager_activity_execution=q.name == WORKFLOW_QUEUE or bool(rate),
            deployment_config=versioning,
        ))
    return workers


async def run_workers(
    client: Client, settings: Settings, queues: Iterable[str] | None, stop: asyncio.Event,
    *, make_current: bool = False,
) -> None:
    """Run until `stop` is set, then shut every worker down gracefully.

    `make_current`: the embedded stack's workers make their deployment version current
    themselves (nobody else deploys there); production workers never do: docs/operations.md,
    "Deploying a new version".
    """
    store = open_store(settings)
    # The embedded store migrates itself; a shared one must already be current
    # (`campaign db migrate`): a worker never changes a schema other workers use.
    await store.ensure_schema()
    workers = build_workers(client, store, settings, queues=queues)
    polling = (not queues or WORKFLOW_QUEUE in queues) and await ensure_reply_schedule(
        client, settings, settings.task_queue_prefix, store=store)
    if polling:
        log.info("reply mailbox: polled every %ss", settings.imap_poll_seconds)
    names = ", ".join(w.task_queue for w in workers)
    log.info("workers polling: %s", names)
    log.info("%s", serving_line(settings))
    tasks = [asyncio.create_task(w.run()) for w in workers]
    version = deployment_version(settings)
    if make_current and version is not None:
        try:
            await set_current_version(client, version)
            log.info("deployment version %s is current", describe(version))
        except Exception:  # the workers still run; the line says how to route work to them
            log.exception("could not make %s current: %s", describe(version),
                          set_current_command(version))
    backlog = asyncio.create_task(watch_backlog(client, [w.task_queue for w in workers], stop))
    # The senders' capacity and paused gauges describe the shared store: every process
    # serving /metrics refreshes them in the background (a scrape never waits for it).
    senders = asyncio.create_task(watch_senders(store, settings, stop))
    mailboxes = asyncio.create_task(
        reply_schedule_when_needed(client, settings, store, stop)
        if not polling and (not queues or WORKFLOW_QUEUE in queues) else stop.wait())
    await stop.wait()
    await asyncio.gather(backlog, senders, mailboxes)
    await asyncio.gather(*(w.shutdown() for w in workers))
    await asyncio.gather(*tasks, return_exceptions=True)
    await store.close()


async def reply_schedule_when_needed(client: Client, settings: Settings, store: Store,
                                     stop: asyncio.Event, every: float = 60.0) -> None:
    """No mailbox to poll when the worker started: create the reply-poll schedule once a
    sender with a reply mailbox is added (issue 28), without a restart. One store read a
    minute until then; a failure is logged and tried again."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)
        if stop.is_set():
            return
        try:
            if await ensure_reply_schedule(client, settings, settings.task_queue_prefix,
                                           store=store):
                log.info("reply mailbox: a sender's mailbox appeared; polled every %ss",
                         settings.imap_poll_seconds)
                return
        except Exception:
            log.exception("reply mailbox: could not create the poll schedule; trying again")


def serving_line(settings: Settings) -> str:
    """What a worker says about the Worker Deployment Version it serves."""
    version = deployment_version(settings)
    if version is None:
        return "deployment version: unversioned (CAMPAIGN_DEPLOYMENT_VERSION unset)"
    return (f"deployment version: {describe(version)} (campaigns upgrade, leads pinned); it "
            f"gets new work once current: {set_current_command(version)}")


def install_stop_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def main(queues: list[str] | None = None, metrics_at: str | None = None,
               settings: Settings | None = None, *, metrics_installed: bool = False) -> None:
    """Workers for `queues` (default: all), with /metrics on `metrics_at` ("host:port");
    `settings` when the caller has loaded them already (the CLI, which checks the key);
    `metrics_installed` when the caller has installed the process's runtime itself (the
    CLI, which falls back to another port when the default one is taken)."""
    settings = settings or load_settings()
    if not metrics_installed:
        install(telemetry_runtime(settings, metrics_at))
    serving = serving_line(settings)  # a bad CAMPAIGN_DEPLOYMENT_VERSION fails before connecting
    client = await connect(settings)
    print(serving, flush=True)
    stop = asyncio.Event()
    install_stop_handlers(stop)
    await run_workers(client, settings, queues, stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queues", help="comma-separated queue names (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main(args.queues.split(",") if args.queues else None))
