"""Safe deploys: Worker Versioning on the real dev server (the time-skipping server has no
Worker Deployments).

Two builds of the same workflow types run side by side, as in a deploy: a campaign that
waits for its approval moves to the new build once that build is current and takes the
branch the new build adds behind `workflow.patched`; a lead drafted when the deploy
happened finishes on the build that started it; new campaigns start on the new build. Then
the engine's own workers, built by `worker_main.build_workers` from
CAMPAIGN_DEPLOYMENT_VERSION, carry a real campaign through the same deploy.
Each test has its own deployment name, so setting a current version touches no other test.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.api.enums.v1 import VersioningBehavior as BehaviorProto
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker, WorkerDeploymentConfig

import worker_main
from campaign_core.deployment import (
    DeploymentSettingError,
    current_version,
    deployment_config,
    deployment_version,
    parse_version,
    set_current_version,
)
from campaign_core.ids import campaign_workflow_id, delivery_workflow_id, lead_workflow_id
from campaign_core.leads import parse_lead_rows
from campaign_core.models import Stage
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.manager import CampaignManager
from starter.start_options import CampaignOptions
from tests.conftest import KB
from tests.fakes.deploy_probe import CAMPAIGN, CampaignV1, CampaignV2, LeadV1, LeadV2, probe_step
from worker_main import (
    WORKFLOWS,
    build_agents,
    build_workers,
    registered_workflows,
    serving_line,
)
from workflows.versioned import VERSIONED

#: A bound, not a wait: on a loaded 2-core machine a retried workflow task took over 30 s.
DEADLINE_S = 120.0


# -- helpers ----------------------------------------------------------------------------------

async def versioning(handle: WorkflowHandle[Any, Any]) -> tuple[str, str]:
    """(behavior, build id) of the run as the server records it; ("", "") before its first
    workflow task has completed on a versioned worker."""
    info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
    behavior = BehaviorProto.Name(info.behavior) if info.behavior else ""
    return behavior, info.deployment_version.build_id


async def make_current(client: Client, version: WorkerDeploymentVersion) -> None:
    """Make `version` current and wait until every task queue of the version routes to it
    (each queue's own `versioning_info`, which matching routes by).

    Not the deployment's `routing_config_update_state`: on this server it can stay
    IN_PROGRESS for good while every queue already routes to the new version (seen here:
    revision 1, both queue types on the new build, the flag still IN_PROGRESS after 120 s)."""
    from temporalio.api.deployment.v1 import WorkerDeploymentVersion as VersionProto
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import (
        DescribeTaskQueueRequest,
        DescribeWorkerDeploymentVersionRequest,
    )

    await set_current_version(client, version)
    service, namespace = client.workflow_service, client.namespace
    queues = (await service.describe_worker_deployment_version(
        DescribeWorkerDeploymentVersionRequest(
            namespace=namespace, deployment_version=VersionProto(
                deployment_name=version.deployment_name, build_id=version.build_id)))
              ).version_task_queues
    assert queues, f"{version} has no task queues"

    async def routed() -> bool:
        for q in queues:
            info = (await service.describe_task_queue(DescribeTaskQueueRequest(
                namespace=namespace, task_queue=TaskQueue(name=q.name), task_queue_type=q.type,
            ))).versioning_info
            if info.current_deployment_version.build_id != version.build_id:
                return False
        return True
    await until(f"{version.build_id} current on {len(queues)} task queues", routed)


async def until(what: str, check: Callable[[], Awaitable[bool]],
                explain: Callable[[], Awaitable[str]] | None = None) -> None:
    """Poll `check` until it holds; fail after DEADLINE_S with `what` and, if given, what
    `explain` says of the state at that moment."""
    deadline = time.monotonic() + DEADLINE_S
    while not await check():
        if time.monotonic() > deadline:
            state = f"; {await explain()}" if explain else ""
            raise AssertionError(f"not within {DEADLINE_S}s: {what}{state}")
        await asyncio.sleep(0.1)


async def story(handle: WorkflowHandle[Any, Any]) -> str:
    """A run's status, pending workflow task and event kinds, for a failure message."""
    description = await handle.describe()
    pending = description.raw_description.pending_workflow_task
    kinds = [EventType.Name(e.event_type).removeprefix("EVENT_TYPE_")
             for e in (await handle.fetch_history()).events]
    return (f"{handle.id} {description.status.name if description.status else '?'}, "
            f"workflow task attempt {pending.attempt}, events {kinds}")


async def reaches(handle: WorkflowHandle[Any, Any], behavior: str, build_id: str) -> None:
    async def check() -> bool:
        try:
            return await versioning(handle) == (behavior, build_id)
        except RPCError as exc:  # a lead the campaign has not started yet
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise
            return False
    await until(f"{handle.id} on {behavior} {build_id}", check)


@contextlib.asynccontextmanager
async def running(workers: Sequence[Worker]) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for w in workers:
            await stack.enter_async_context(w)
        yield


def probe_worker(client: Client, queue: str, version: WorkerDeploymentVersion,
                 workflows: Sequence[type]) -> Worker:
    return Worker(client, task_queue=queue, workflows=list(workflows), activities=[probe_step],
                  deployment_config=WorkerDeploymentConfig(version=version,
                                                           use_worker_versioning=True))


async def start_probe(client: Client, prefix: str, queue: str, key: str
                      ) -> tuple[WorkflowHandle[Any, list[str]], WorkflowHandle[Any, str]]:
    """Start a probe campaign; its handle and its lead's (the lead starts as its child)."""
    campaign = await client.start_workflow(CAMPAIGN, f"{prefix}lead-{key}",
                                           id=f"{prefix}{key}", task_queue=queue,
                                           result_type=list[str])
    return campaign, client.get_workflow_handle(f"{prefix}lead-{key}", result_type=str)


# -- the deploy, on probe workflows -------------------------------------------------------------

async def test_running_campaigns_upgrade_and_leads_in_flight_stay_pinned(
    dev_env: WorkflowEnvironment, prefix: str,
) -> None:
    client = dev_env.client
    queue, name = f"{prefix}workflows", f"{prefix}engine"
    v1, v2 = WorkerDeploymentVersion(name, "v1"), WorkerDeploymentVersion(name, "v2")

    async def start(key: str) -> tuple[WorkflowHandle[Any, list[str]], WorkflowHandle[Any, str]]:
        return await start_probe(client, prefix, queue, key)

    async with running([probe_worker(client, queue, v1, [CampaignV1, LeadV1])]):
        await make_current(client, v1)
        assert await current_version(client, name) == f"{name}:v1"
        waiting, waiting_lead = await start("waiting")  # waits for its approval over the deploy
        sent, sent_lead = await start("sent")  # approved and sent on v1, waits for its lead
        await sent.signal("approve")
        for campaign in (waiting, sent):
            await reaches(campaign, "VERSIONING_BEHAVIOR_AUTO_UPGRADE", "v1")
        for lead in (waiting_lead, sent_lead):
            await reaches(lead, "VERSIONING_BEHAVIOR_PINNED", "v1")

        async def sent_on_v1() -> bool:
            history = await sent.fetch_history()
            return any(e.activity_task_completed_event_attributes.HasField("result")
                       for e in history.events)
        await until("the send on v1", sent_on_v1)

        # The deploy: v2 workers start beside v1's, then v2 becomes current.
        async with running([probe_worker(client, queue, v2, [CampaignV2, LeadV2])]):
            await make_current(client, v2)
            assert await current_version(client, name) == f"{name}:v2"
            new, new_lead = await start("new")
            await reaches(new, "VERSIONING_BEHAVIOR_AUTO_UPGRADE", "v2")
            await reaches(new_lead, "VERSIONING_BEHAVIOR_PINNED", "v2")

            # Leads in flight finish on the build that started them ...
            for lead in (waiting_lead, sent_lead):
                await lead.signal("go")
                assert await asyncio.wait_for(lead.result(), DEADLINE_S) == "drafted by v1"
                assert await versioning(lead) == ("VERSIONING_BEHAVIOR_PINNED", "v1")
            # ... the campaign that had sent on v1 replays on v2 without the new step ...
            assert await asyncio.wait_for(sent.result(), DEADLINE_S) == ["drafted by v1", "send"]
            assert await versioning(sent) == ("VERSIONING_BEHAVIOR_AUTO_UPGRADE", "v2")
            # ... the one still waiting for approval moves to v2 and takes it.
            await waiting.signal("approve")
            assert await asyncio.wait_for(waiting.result(), DEADLINE_S) == [
                "drafted by v1", "check", "send"]
            assert await versioning(waiting) == ("VERSIONING_BEHAVIOR_AUTO_UPGRADE", "v2")

            await new_lead.signal("go")
            await new.signal("approve")
            assert await asyncio.wait_for(new.result(), DEADLINE_S) == [
                "drafted by v2", "check", "send"]


async def test_rollback_moves_campaigns_back_but_a_new_step_needs_its_build(
    dev_env: WorkflowEnvironment, prefix: str,
) -> None:
    """Rollback is `set-current-version` to the old build: campaigns follow at their next
    task. One that already ran a step only the new build has cannot be replayed by the old
    build: its workflow task fails and is retried (nothing is lost or repeated) until a build
    with that step is current again: roll forward."""
    client = dev_env.client
    queue, name = f"{prefix}workflows", f"{prefix}engine"
    v1, v2 = WorkerDeploymentVersion(name, "v1"), WorkerDeploymentVersion(name, "v2")

    async def start(key: str) -> tuple[WorkflowHandle[Any, list[str]], WorkflowHandle[Any, str]]:
        return await start_probe(client, prefix, queue, key)

    async def events(handle: WorkflowHandle[Any, Any], kind: EventType.ValueType) -> int:
        history = await handle.fetch_history()
        return sum(1 for e in history.events if e.event_type == kind)

    async with running([probe_worker(client, queue, v1, [CampaignV1, LeadV1]),
                        probe_worker(client, queue, v2, [CampaignV2, LeadV2])]):
        await make_current(client, v2)
        took, took_lead = await start("took")  # approved on v2: runs "check" and "send"
        await took.signal("approve")

        async def both_steps_ran() -> bool:
            return await events(took, EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED) == 2
        await until("check and send on v2", both_steps_ran)
        waiting, waiting_lead = await start("waiting")
        await reaches(waiting, "VERSIONING_BEHAVIOR_AUTO_UPGRADE", "v2")

        await make_current(client, v1)  # the rollback
        for lead in (took_lead, waiting_lead):  # pinned: they finish where they started
            await lead.signal("go")
            assert await asyncio.wait_for(lead.result(), DEADLINE_S) == "drafted by v2"
        await waiting.signal("approve")
        assert await asyncio.wait_for(waiting.result(), DEADLINE_S) == ["drafted by v2", "send"]
        assert await versioning(waiting) == ("VERSIONING_BEHAVIOR_AUTO_UPGRADE", "v1")

        async def refused_by_v1() -> bool:
            """v1's failure is in history, or (a first attempt that timed out on a loaded
            machine: later failures are transient, never written) the task is retried."""
            description = await took.describe()
            return (await events(took, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED) > 0
                    or description.raw_description.pending_workflow_task.attempt >= 2)
        await until("v1 refuses the history with v2's step", refused_by_v1,
                    lambda: story(took))
        history = await took.fetch_history()
        failures = [e.workflow_task_failed_event_attributes.failure.message
                    for e in history.events
                    if e.HasField("workflow_task_failed_event_attributes")]
        assert all("Nondeterminism" in message for message in failures), failures
        if not failures:  # the loaded-machine path: the first attempt timed out
            assert any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
                       for e in history.events), await story(took)
        assert (await took.describe()).status == WorkflowExecutionStatus.RUNNING

        await make_current(client, v2)  # roll forward
        assert await asyncio.wait_for(took.result(), DEADLINE_S) == [
            "drafted by v2", "check", "send"]


# -- the engine's own workers -----------------------------------------------------------------

LEADS = [
    {"email": "ana@example.com", "first_name": "Ana", "company": "Northwind Freight"},
    {"email": "bo@example.org", "first_name": "Bo", "company": "Ledgerly"},
]


async def test_engine_workers_serve_their_version_through_a_deploy(
    dev_env: WorkflowEnvironment, settings: Settings, store: SqliteStore, prefix: str,
) -> None:
    client = dev_env.client
    name = f"{prefix}engine"
    s1 = settings.model_copy(update={"deployment_version": "build-1", "deployment_name": name})
    s2 = settings.model_copy(update={"deployment_version": f"{name}:build-2"})
    v1, v2 = deployment_version(s1), deployment_version(s2)
    assert v1 == WorkerDeploymentVersion(name, "build-1")
    assert v2 == WorkerDeploymentVersion(name, "build-2")
    agents = build_agents(store, settings)
    mgr = CampaignManager(settings, client=client, store=store, queue_prefix=prefix,
                          use_search_attributes=False)
    cid = f"{prefix}c"
    campaign = client.get_workflow_handle(campaign_workflow_id(cid))

    async def stage_is(stage: Stage) -> bool:
        return (await mgr.status(cid)).stage is stage

    async with running(build_workers(client, store, s1, prefix=prefix, agents=agents)):
        await make_current(client, v1)
        await mgr.start(parse_lead_rows(enumerate(LEADS, start=2), cid),
                        CampaignOptions(brief="Book a call.", kb=str(KB)), name="deploy", campaign_id=cid)
        await until("awaiting approval on build-1",
                    lambda: stage_is(Stage.AWAITING_APPROVAL))
        assert await versioning(campaign) == ("VERSIONING_BEHAVIOR_AUTO_UPGRADE", "build-1")
        lead_id = (await store.report(cid))[0].lead_id
        lead = client.get_workflow_handle(lead_workflow_id(cid, lead_id))
        assert await versioning(lead) == ("VERSIONING_BEHAVIOR_PINNED", "build-1")

        async with running(build_workers(client, store, s2, prefix=prefix, agents=agents)):
            await make_current(client, v2)
            await mgr.approve(cid, by="tester")
            await until("completed", lambda: stage_is(Stage.COMPLETED))
            assert (await mgr.status(cid)).counts.sent == len(LEADS)
            assert await versioning(campaign) == ("VERSIONING_BEHAVIOR_AUTO_UPGRADE", "build-2")
            delivery = client.get_workflow_handle(delivery_workflow_id(cid))
            assert await versioning(delivery) == ("VERSIONING_BEHAVIOR_AUTO_UPGRADE", "build-2")


async def test_unset_version_leaves_workers_unversioned(
    dev_env: WorkflowEnvironment, settings: Settings, store: SqliteStore, prefix: str,
) -> None:
    """Unset: today's behavior. The server refuses any task an unversioned worker completes
    with a versioning behavior, so the plain classes must declare none (they do not)."""
    client = dev_env.client
    mgr = CampaignManager(settings, client=client, store=store, queue_prefix=prefix,
                          use_search_attributes=False)
    cid = f"{prefix}plain"

    async def awaiting() -> bool:
        return (await mgr.status(cid)).stage is Stage.AWAITING_APPROVAL

    async with running(build_workers(client, store, settings, prefix=prefix)):
        await mgr.start(parse_lead_rows(enumerate(LEADS, start=2), cid),
                        CampaignOptions(brief="Book a call.", kb=str(KB)), name="plain", campaign_id=cid)
        await until("awaiting approval, unversioned", awaiting)
    assert await versioning(client.get_workflow_handle(campaign_workflow_id(cid))) == ("", "")


async def test_embedded_stack_makes_its_own_version_current(
    dev_env: WorkflowEnvironment, settings: Settings, prefix: str,
) -> None:
    """`campaign dev` (and the demo) own their server: nobody else would set the version."""
    name = f"{prefix}engine"
    s = settings.model_copy(update={"deployment_version": "local-1", "deployment_name": name,
                                    "task_queue_prefix": prefix})
    stop = asyncio.Event()
    workers = asyncio.create_task(
        worker_main.run_workers(dev_env.client, s, None, stop, make_current=True))

    async def current() -> bool:
        try:
            return await current_version(dev_env.client, name) == f"{name}:local-1"
        except RPCError:
            return False  # no such deployment until the workers have polled
    try:
        await until("local-1 current", current)
    finally:
        stop.set()
        await workers


# -- settings and declarations (no server) ------------------------------------------------------

def test_unset_means_unversioned(settings: Settings) -> None:
    assert settings.deployment_version is None
    assert deployment_config(settings) is None
    assert "unversioned" in serving_line(settings)


def test_version_from_the_environment(monkeypatch: pytest.MonkeyPatch, home: Any) -> None:
    monkeypatch.setenv("CAMPAIGN_DEPLOYMENT_VERSION", "2026-11-30.1")
    config = deployment_config(Settings())
    assert config is not None and config.use_worker_versioning
    assert config.version == WorkerDeploymentVersion("campaign-engine", "2026-11-30.1")
    line = serving_line(Settings())
    assert "campaign-engine:2026-11-30.1" in line
    assert "set-current-version --deployment-name campaign-engine --build-id 2026-11-30.1" in line
    monkeypatch.setenv("CAMPAIGN_DEPLOYMENT_NAME", "outreach")
    assert deployment_version(Settings()) == WorkerDeploymentVersion("outreach", "2026-11-30.1")


@pytest.mark.parametrize("bad", ["", " ", "build id", "engine:", ":b1", "-b1", "b1;rm"])
def test_bad_versions_are_refused(bad: str) -> None:
    with pytest.raises(DeploymentSettingError, match="CAMPAIGN_DEPLOYMENT_"):
        parse_version(bad)


def test_every_orchestrator_declares_its_behavior() -> None:
    """Versioned workers register a twin of every orchestrator with its behavior; a workflow
    added without one would silently take the worker's default."""
    assert set(VERSIONED) == set(WORKFLOWS)
    declared = {}
    for plain, twin in VERSIONED.items():
        defn, plain_defn = (workflow._Definition.must_from_class(c) for c in (twin, plain))
        assert defn.name == plain_defn.name  # the same workflow type
        assert set(defn.signals) == set(plain_defn.signals)
        assert set(defn.queries) == set(plain_defn.queries)
        assert set(defn.updates) == set(plain_defn.updates)
        assert not plain_defn.versioning_behavior  # unversioned workers must send none
        declared[defn.name] = defn.versioning_behavior
    assert VersioningBehavior.UNSPECIFIED not in declared.values(), declared
    assert declared | {
        "CampaignWorkflow": VersioningBehavior.AUTO_UPGRADE,
        "DeliveryOrchestrator": VersioningBehavior.AUTO_UPGRADE,
        "LeadOrchestrator": VersioningBehavior.PINNED,
        "ScheduledCampaign": VersioningBehavior.PINNED,
        "ReplyMailboxPoll": VersioningBehavior.PINNED,
    } == declared
    assert registered_workflows(False) == list(WORKFLOWS)
    assert registered_workflows(True) == [VERSIONED[w] for w in WORKFLOWS]
