"""One lead, start to draft stored: what the orchestration adds (issue 14, item 5).

On the embedded stack (`campaign dev`'s server and flags) with the offline writer, a
one-lead campaign is started `--runs` times, one after another. For each: the wall time
from `start` (the control plane storing the lead and starting the workflow) to the end
of `store_draft`, and the agents' own time: the union of every activity's execution
interval for that campaign, measured inside the worker by an activity interceptor (so
local activities count too). Orchestration = wall - agents. Printed: p50 and p95 of
each (target: orchestration p50 under 50 ms). Then, on the same server and worker
process, the bare child-per-lead shape with one lead (bench/bare_shapes.py: a parent,
one child, three no-op activities), start to result: what Temporal and the SDK cost for
a lead's chain of hand-offs, against which the engine's orchestration is read.

    .venv/bin/python -m bench.bench_latency --runs 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio import client as tclient
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    Worker,
)

from bench.bare_shapes import BareChild, BareInput, BareParent, bare_noop
from bench.docs import write_section
from campaign_core.ids import campaign_workflow_id
from campaign_core.leads import parse_lead_rows
from campaign_core.models import Stage
from campaign_core.ports import free_port
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.devstack import embedded_stack
from starter.manager import CampaignManager
from starter.start_options import CampaignOptions
from worker_main import build_workers, workflow_runner


class ActivityClock(tclient.Interceptor, Interceptor):
    """Records when each activity of each workflow ran (monotonic seconds); on the
    client so that every worker built from it installs it."""

    def __init__(self) -> None:
        self.spans: dict[str, list[tuple[float, float]]] = {}
        self.drafted: dict[str, asyncio.Event] = {}

    def campaign(self, workflow_id: str) -> str:
        return workflow_id.split(":lead:", 1)[0]

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        clock = self

        class Timed(ActivityInboundInterceptor):
            async def execute_activity(self, input: ExecuteActivityInput) -> Any:
                info = activity.info()
                start = time.monotonic()
                try:
                    return await self.next.execute_activity(input)
                finally:
                    key = clock.campaign(info.workflow_id or "")
                    clock.spans.setdefault(key, []).append((start, time.monotonic()))
                    if info.activity_type == "store_draft":
                        clock.drafted.setdefault(key, asyncio.Event()).set()

        return Timed(next)


def union_seconds(spans: list[tuple[float, float]], until: float) -> float:
    """Total time covered by the intervals, up to `until` (overlaps counted once)."""
    total, edge = 0.0, float("-inf")
    for start, end in sorted(spans):
        end = min(end, until)
        if end <= max(start, edge):
            continue
        total += end - max(start, edge)
        edge = end
    return total


@dataclass
class Sample:
    wall_ms: float
    agents_ms: float

    @property
    def orchestration_ms(self) -> float:
        return self.wall_ms - self.agents_ms


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Result:
    engine: list[Sample]
    bare_ms: list[float]


async def bare_one_lead(client: tclient.Client, runs: int, warmup: int) -> list[float]:
    """Start to result of the bare child-per-lead shape with one lead, `runs` times."""
    times: list[float] = []
    for i in range(warmup + runs):
        t0 = time.monotonic()
        await client.execute_workflow(
            BareParent.run, BareInput(leads=1, activity_queue="lat-bare-activities"),
            id=f"lat-bare-{i}", task_queue="lat-bare")
        if i >= warmup:
            times.append(1000 * (time.monotonic() - t0))
    return times


async def main(runs: int, warmup: int) -> Result:
    home = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    settings = Settings(CAMPAIGN_HOME=home, CAMPAIGN_LLM_PROVIDER="offline")
    store = SqliteStore(home / "campaign.db")
    await store.migrate()
    clock = ActivityClock()
    samples: list[Sample] = []
    async with embedded_stack(settings, free_port(), free_port()) as stack, \
            contextlib.AsyncExitStack() as workers:
        config = stack.client.config()
        config["interceptors"] = [*config["interceptors"], clock]
        client = tclient.Client(**config)
        for w in build_workers(client, store, settings, prefix="lat-"):
            await workers.enter_async_context(w)
        await workers.enter_async_context(Worker(
            client, task_queue="lat-bare", workflows=[BareParent, BareChild],
            workflow_runner=workflow_runner(client)))
        await workers.enter_async_context(Worker(
            client, task_queue="lat-bare-activities", activities=[bare_noop]))
        mgr = CampaignManager(settings, client=client, store=store, queue_prefix="lat-",
                              use_search_attributes=True)
        for i in range(warmup + runs):
            cid = f"lat-{i}"
            key = campaign_workflow_id(cid)
            done = clock.drafted.setdefault(key, asyncio.Event())
            intake = parse_lead_rows(enumerate([{"email": f"one{i}@example.com",
                                                 "company": "Co", "first_name": "One"}],
                                               start=2), cid)
            t0 = time.monotonic()
            await mgr.start(intake, CampaignOptions(brief="Book a short intro call."), name=cid,
                            campaign_id=cid)
            await asyncio.wait_for(done.wait(), 120)
            t1 = max(end for _, end in clock.spans[key])
            if i >= warmup:
                samples.append(Sample(1000 * (t1 - t0),
                                      1000 * union_seconds(clock.spans[key], t1)))
            while True:  # the next run starts once this one waits for approval
                if (await mgr.status(cid)).stage is not Stage.DRAFTING:
                    break
                await asyncio.sleep(0.05)
        bare = await bare_one_lead(client, runs, warmup)
    await store.close()
    return Result(samples, bare)


def report(result: Result) -> str:
    samples = result.engine
    rows = [("start to draft stored", [s.wall_ms for s in samples]),
            ("agents' own time", [s.agents_ms for s in samples]),
            ("orchestration (the difference)", [s.orchestration_ms for s in samples]),
            ("bare child shape, one lead: start to result", result.bare_ms)]
    lines = [f"one-lead campaigns, {len(samples)} runs (offline writer):",
             "| ms | p50 | p95 | mean |", "| --- | ---: | ---: | ---: |"]
    for label, values in rows:
        lines.append(f"| {label} | {pct(values, 0.5):.1f} | {pct(values, 0.95):.1f} "
                     f"| {statistics.fmean(values):.1f} |")
    lines.append("")
    lines.append(f"Orchestration p50 **{pct([s.orchestration_ms for s in samples], 0.5):.1f} ms**"
                 " (target < 50 ms); the bare child-per-lead shape, one lead with no-op "
                 f"activities, on the same server: p50 **{pct(result.bare_ms, 0.5):.1f} ms**.")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3,
                        help="runs first, not counted (imports, the sticky cache, the index)")
    parser.add_argument("--write", action="store_true", help="write docs/performance.md")
    args = parser.parse_args()
    text = report(asyncio.run(main(args.runs, args.warmup)))
    print(text)
    if args.write:
        write_section("bench_latency", "One lead: what the orchestration adds",
                      "the embedded server, in-process workers, offline writer, one-lead "
                      "campaigns one after another.", text)
