"""A sequence at scale: N leads x 3 steps with 10% replies, test-double agents.

Prints the events of every delivery run (the bound is 10,000 per run), the elapsed
time, and checks that nobody who replied got a follow-up. Runs on the dev server by
default, with follow-ups seconds apart in real time (the time-skipping server stops
skipping once a child workflow has continued as new, see tests/test_sequences.py);
`--time-skipping` uses it anyway, with day-long delays.

    .venv/bin/python -m bench.bench_sequences --leads 20000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from campaign_core.temporal import dev_server_path, test_server_path
from tests.sequence_scale import run_sequence


async def main(n: int, time_skipping: bool) -> None:
    if time_skipping:
        env = await WorkflowEnvironment.start_time_skipping(
            data_converter=pydantic_data_converter, test_server_existing_path=test_server_path())
        delays = [86400, 2 * 86400]
    else:
        env = await WorkflowEnvironment.start_local(
            data_converter=pydantic_data_converter, dev_server_existing_path=dev_server_path(),
            dev_server_log_level="error")
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
          f"{max(result.campaign_runs)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=20000)
    parser.add_argument("--time-skipping", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.leads, args.time_skipping))
