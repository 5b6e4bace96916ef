"""The embedded server gives each task queue one partition, except on an older database,
and reads its transfer queue as soon as there is something to read.

A rate-limited queue's limit is split between its read partitions, so one partition is what
lets the llm and delivery queues run at the rate the user set (starter/devstack.py). A
database created by an older `campaign dev` may hold tasks in partitions 1-3: it keeps four.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import ListTaskQueuePartitionsRequest
from temporalio.client import Client

from campaign_core.ports import free_port
from campaign_core.settings import Settings
from starter.devstack import (
    DEV_SERVER_PARTITIONS,
    DEV_SERVER_QUEUE_READS,
    PARTITIONS_MARKER,
    embedded_stack,
    partition_args,
)


def test_one_partition_for_a_new_database_or_one_created_so(tmp_path: Path) -> None:
    db = tmp_path / "temporal.db"
    assert partition_args(db) == DEV_SERVER_PARTITIONS  # new
    db.write_bytes(b"")
    assert partition_args(db) == []  # an older database: the server's default
    (tmp_path / PARTITIONS_MARKER).write_text("1\n")
    assert partition_args(db) == DEV_SERVER_PARTITIONS


async def activity_partitions(client: Client, queue: str) -> int:
    resp = await client.workflow_service.list_task_queue_partitions(
        ListTaskQueuePartitionsRequest(namespace=client.namespace, task_queue=TaskQueue(
            name=queue)))
    return len(resp.activity_task_queue_partitions)


def server_args(address: str) -> list[str]:
    """The command line of the dev server process serving `address` (host:port)."""
    port = address.rsplit(":", 1)[1].encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().split(b"\0")
            if b"start-dev" in args and port in args:
                return [a.decode() for a in args]
    raise AssertionError(f"no dev server process serves {address}")


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_the_embedded_server_partitions_as_its_database_was_created(
        tmp_path: Path) -> None:
    settings = Settings(CAMPAIGN_HOME=tmp_path / "home")
    async with embedded_stack(settings, free_port(), free_port()) as stack:
        assert await activity_partitions(stack.client, "llm") == 1
        # The shard's transfer queue read up to 1,000 times a second, not the default 20
        # (which holds every task up to 50 ms), whatever the database's age.
        args = server_args(stack.address)
        flag = DEV_SERVER_QUEUE_READS[1]
        assert flag in args and args[args.index(flag) - 1] == "--dynamic-config-value"
    marker = settings.campaign_home / PARTITIONS_MARKER
    assert marker.exists()
    async with embedded_stack(settings, free_port(), free_port()) as stack:  # a restart
        assert await activity_partitions(stack.client, "llm") == 1
    marker.unlink()  # as if an older `campaign dev` had created the database
    async with embedded_stack(settings, free_port(), free_port()) as stack:
        assert await activity_partitions(stack.client, "llm") == 4
        assert DEV_SERVER_QUEUE_READS[1] in server_args(stack.address)
    assert not marker.exists()
