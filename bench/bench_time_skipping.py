"""Why 20,000 leads x 3 steps does not finish on the time-skipping server (issue 13).

Runs the bare child-per-lead shape (bench/bare_shapes.py: a child workflow per lead, three
no-op activities each; none of the engine's code) in successive batches on ONE
time-skipping server, and prints each batch's leads/s and the server's resident memory.
On a server that kept no state per finished operation every batch would run at the same
speed. The Java test server does not: `SelfAdvancingTimerImpl` appends an event to a
`LinkedList` (`lockEvents`, "debugging purposes only") for every time-skipping lock and
unlock that names its caller (each activity, workflow task and child start does both),
never removes those, and every lock released through its handle (each state update)
does `lockEvents.remove(event)`, a scan from the head of that list. So every operation
costs time in proportion to all the operations the server has served before it, and a
run's total time grows with the square of its size.

    .venv/bin/python -m bench.bench_time_skipping --batch 1000 --batches 6
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.bare_shapes import BareChild, BareInput, BareParent, bare_noop
from bench.bench_workers import children, peak_rss_mb
from campaign_core.temporal import test_server_path
from worker_main import workflow_runner


def test_server_rss_mb() -> float:
    """Peak resident memory of the time-skipping server this process started (the only
    child process here)."""
    return max((peak_rss_mb(pid) for pid in children(os.getpid())), default=0.0)


async def batches(client: Client, batch: int, count: int) -> list[tuple[int, float, float]]:
    """(leads served before the batch, the batch's leads/s, server RSS MB) per batch."""
    rows = []
    async with contextlib.AsyncExitStack() as workers:
        await workers.enter_async_context(Worker(
            client, task_queue="ts-bare", workflows=[BareParent, BareChild],
            workflow_runner=workflow_runner(client)))
        await workers.enter_async_context(Worker(
            client, task_queue="ts-bare-activities", activities=[bare_noop],
            max_concurrent_activities=20))
        for i in range(count):
            started = time.monotonic()
            await client.execute_workflow(
                BareParent.run, BareInput(leads=batch, activity_queue="ts-bare-activities"),
                id=f"ts-bare-{i}", task_queue="ts-bare")
            rate = batch / (time.monotonic() - started)
            rows.append((i * batch, rate, test_server_rss_mb()))
            print(f"batch {i + 1}: after {i * batch} leads, {rate:.1f} leads/s, "
                  f"test server RSS {rows[-1][2]:.0f} MB", flush=True)
    return rows


async def main(batch: int, count: int) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=test_server_path())
    try:
        rows = await batches(env.client, batch, count)
    finally:
        await env.shutdown()
    first, last = rows[0][1], rows[-1][1]
    print(f"the last batch ran at {last / first:.2f} of the first's speed "
          f"({first:.1f} -> {last:.1f} leads/s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1000, help="leads per batch")
    parser.add_argument("--batches", type=int, default=6)
    args = parser.parse_args()
    asyncio.run(main(args.batch, args.batches))
    # Leave without interpreter finalization: the SDK's Rust runtime keeps native threads
    # that can still call into Python while it tears down, which now and then aborted the
    # process after its figures were printed ("PyGILState_Release: thread state ... must
    # be current", exit -6) and failed tests/shape/test_bench_short.py at random.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
