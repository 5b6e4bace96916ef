"""Worker Versioning: the Worker Deployment Version a worker serves, and how each
orchestrator moves between versions on a deploy.

Off unless CAMPAIGN_DEPLOYMENT_VERSION is set (then workers are unversioned, as before).
Campaigns and their delivery wait days for approval and follow-ups, so they AUTO_UPGRADE:
they move to the current version at their next workflow task, and every change to their
code is guarded with `workflow.patched` and held by tests/workflows/test_replay.py. Per-lead
drafting, a schedule's firing and a mailbox poll take minutes at most, so they are PINNED:
each finishes on the version that started it. Why, and the procedure: README "Deploying a
new version" and docs/architecture.md ("Safe deploys").
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING

from temporalio.common import VersioningBehavior, WorkerDeploymentVersion

if TYPE_CHECKING:
    from temporalio.client import Client
    from temporalio.worker import WorkerDeploymentConfig

    from campaign_core.settings import Settings

DEFAULT_DEPLOYMENT_NAME = "campaign-engine"

#: Campaigns, delivery: days to weeks long. Pinning them would keep every old build alive for
#: the approval timeout plus the whole follow-up sequence (plus any pause); they upgrade instead.
LONG_RUNNING = VersioningBehavior.AUTO_UPGRADE
#: Lead drafting, a schedule's firing, a mailbox poll: minutes. They never see a code change.
SHORT_LIVED = VersioningBehavior.PINNED

#: What a deployment name or build id may hold: what `temporal worker deployment` accepts
#: on a command line without quoting, and no `:` (it separates the two in Temporal's notation).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/+-]{0,199}$")


class DeploymentSettingError(ValueError):
    """CAMPAIGN_DEPLOYMENT_VERSION or CAMPAIGN_DEPLOYMENT_NAME cannot be used."""


def parse_version(value: str, default_name: str = DEFAULT_DEPLOYMENT_NAME) -> (
    WorkerDeploymentVersion
):
    """`BUILD_ID`, or `NAME:BUILD_ID` (Temporal's notation), as a deployment version."""
    name, sep, build_id = value.strip().rpartition(":")
    name = name if sep else default_name
    for what, text, var in (("deployment name", name, "CAMPAIGN_DEPLOYMENT_NAME"),
                            ("build id", build_id, "CAMPAIGN_DEPLOYMENT_VERSION")):
        if not _NAME.match(text):
            raise DeploymentSettingError(
                f"{var}: the {what} {text!r} must start with a letter or digit and hold only "
                f"letters, digits and . _ / + - (at most 200)")
    return WorkerDeploymentVersion(deployment_name=name, build_id=build_id)


def deployment_version(settings: Settings) -> WorkerDeploymentVersion | None:
    """The version this build serves, or None: CAMPAIGN_DEPLOYMENT_VERSION is unset."""
    if not settings.deployment_version:
        return None
    return parse_version(settings.deployment_version, settings.deployment_name)


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    """Every worker's Worker Versioning options, or None (unversioned, as before)."""
    from temporalio.worker import WorkerDeploymentConfig

    version = deployment_version(settings)
    if version is None:
        return None
    # Each orchestrator's versioned twin declares its behavior (workflows/versioned.py); this
    # default only covers a workflow added without one (tests/ops/test_deploys.py fails for that).
    return WorkerDeploymentConfig(version=version, use_worker_versioning=True,
                                  default_versioning_behavior=LONG_RUNNING)


def describe(version: WorkerDeploymentVersion | None) -> str:
    """`name:build`, as the server writes it in the TemporalWorkerDeploymentVersion search
    attribute (the SDK's `to_canonical_string` writes `name.build`, which queries miss)."""
    return "unversioned" if version is None else f"{version.deployment_name}:{version.build_id}"


def set_current_command(version: WorkerDeploymentVersion) -> str:
    """The command that routes new work (and upgrading runs) to `version`."""
    return (f"temporal worker deployment set-current-version --deployment-name "
            f"{version.deployment_name} --build-id {version.build_id}")


async def set_current_version(client: Client, version: WorkerDeploymentVersion, *,
                              wait_s: float = 30.0, identity: str = "campaign") -> None:
    """Make `version` current, once its workers have polled (the server knows a version only
    from its pollers); what `temporal worker deployment set-current-version` does."""
    from temporalio.api.workflowservice.v1 import SetWorkerDeploymentCurrentVersionRequest
    from temporalio.service import RPCError, RPCStatusCode

    request = SetWorkerDeploymentCurrentVersionRequest(
        namespace=client.namespace, deployment_name=version.deployment_name,
        build_id=version.build_id, identity=identity)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            await client.workflow_service.set_worker_deployment_current_version(request)
            return
        except RPCError as exc:
            waiting = exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION)
            if not waiting or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


async def current_version(client: Client, deployment_name: str) -> str | None:
    """The deployment's current version as `name:build`, None while unversioned."""
    from temporalio.api.workflowservice.v1 import DescribeWorkerDeploymentRequest

    info = (await client.workflow_service.describe_worker_deployment(
        DescribeWorkerDeploymentRequest(namespace=client.namespace,
                                        deployment_name=deployment_name))).worker_deployment_info
    current = info.routing_config.current_deployment_version
    return f"{current.deployment_name}:{current.build_id}" if current.build_id else None
