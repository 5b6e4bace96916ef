"""A sequence at scale: N leads x 3 steps with 10% replies, test-double agents.

Prints the events of every delivery run (the bound is 10,000 per run), the campaign run's
events, the elapsed time, and checks that nobody who replied got a follow-up. Runs on the
time-skipping server by default, with follow-ups a day and two days apart; the wait for the
result unlocks its clock (`tests.fakes.time_skipping.TimeSkippingServer.unlocked`: a handle from
`get_workflow_handle` waits with the clock locked, which once looked like a server that
stopped skipping after a child continued as new). `--dev-server` uses the real dev server,
with follow-ups two minutes apart in real time.

    .venv/bin/python -m bench.bench_sequences --leads 5000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from starter.devstack import in_memory_dev_server
from tests.fakes.sequence_scale import run_sequence
from tests.fakes.time_skipping import TimeSkippingServer


async def main(n: int, dev_server: bool) -> None:
    env: WorkflowEnvironment
    if not dev_server:
        env = await TimeSkippingServer.start()
        delays = [86400, 2 * 86400]
    else:
        env = await in_memory_dev_server()
        delays = [120, 120]
    try:
        result = await run_sequence(env, Path(tempfile.mkdtemp()), n, delays=delays)
    finally:
        await env.shutdown()
    print(f"{result.leads} leads x 3 steps, {result.replied} replied: {result.sent} sends "
          f"in {result.seconds:.0f} s; follow-ups to repliers: {result.follow_ups_to_repliers}")
    print(f"delivery runs: {len(result.delivery_runs)}, events per run max "
          f"{max(result.delivery_runs)}: {result.delivery_runs}")
    print(f"campaign runs: {len(result.campaign_runs)}, events per run max "
          f"{max(result.campaign_runs)}: {result.campaign_runs}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=20000)
    parser.add_argument("--dev-server", action="store_true",
                        help="the real dev server, follow-ups 2 minutes apart in real time")
    args = parser.parse_args()
    asyncio.run(main(args.leads, args.dev_server))
