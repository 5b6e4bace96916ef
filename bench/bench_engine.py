"""`make bench`: the engine's own speed against the bare shapes it is built on.

On the embedded stack (the persistent dev server `campaign dev` starts, same flags) and
on the same server in the same run: (a) a campaign drafted with the offline writer,
(b) the bare child-per-lead shape, (c) the bare flat shape (bench/bare_shapes.py).
Prints leads/s, the ratios, events per lead, mean workflow-task and activity
schedule-to-start latencies (from the SDK's own metrics) and the CPU seconds of the
server and of the worker process; with --runs > 1, the medians. `--write` writes them
to docs/performance.md with the machine and the versions.

    .venv/bin/python -m bench.bench_engine --leads 2000 --runs 3 --write
    .venv/bin/python -m bench.bench_engine --short      # CI: proves it still runs
    py-spy record --format raw -o prof.txt -- .venv/bin/python -m bench.bench_engine \
        --leads 400 --runs 1 --engine-only              # profile the engine's shape alone
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client
from temporalio.worker import Worker

from bench.bare_shapes import BareChild, BareFlat, BareInput, BareParent, bare_noop
from bench.docs import write_section
from campaign_core.leads import parse_lead_rows
from campaign_core.metrics import install, metrics_address, telemetry_runtime
from campaign_core.models import Stage
from campaign_core.ports import free_port
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.devstack import embedded_stack
from starter.manager import CampaignManager
from starter.start_options import CampaignOptions
from worker_main import build_workers, workflow_runner

ROOT = Path(__file__).resolve().parent.parent
LATENCIES = {"workflow task s2s": "temporal_workflow_task_schedule_to_start_latency",
             "activity s2s": "temporal_activity_schedule_to_start_latency"}


@dataclass
class Phase:
    """One measured shape: how long, how many events, what it cost."""

    name: str
    leads: int
    seconds: float
    events: int
    latencies_ms: dict[str, float] = field(default_factory=dict)
    server_cpu: float = 0.0
    worker_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.leads / self.seconds


def scrape(port: int) -> dict[str, float]:
    """Sum of every `_sum` and `_count` sample by name, across label sets."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith(("_sum", "_count")):
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def server_cpu_seconds() -> float:
    """CPU (user + system) of this process's children: the dev server and its UI."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == os.getpid():
                total += (int(fields[11]) + int(fields[12])) / tick
    return total


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def events_of(client: Client, query: str) -> int:
    total = 0
    async for execution in client.list_workflows(query):
        total += execution.history_length or 0
    return total


async def measure(name: str, leads: int, metrics_port: int, client: Client, query: str,
                  run: Callable[[], Awaitable[None]]) -> Phase:
    before, cpu0, own0 = scrape(metrics_port), server_cpu_seconds(), own_cpu_seconds()
    t0 = time.monotonic()
    await run()
    seconds = time.monotonic() - t0
    after, cpu1, own1 = scrape(metrics_port), server_cpu_seconds(), own_cpu_seconds()
    latencies = {}
    for label, metric in LATENCIES.items():
        n = after.get(f"{metric}_count", 0) - before.get(f"{metric}_count", 0)
        s = after.get(f"{metric}_sum", 0) - before.get(f"{metric}_sum", 0)
        latencies[label] = 1000 * s / n if n else 0.0
    await asyncio.sleep(1.5)  # visibility lags a little behind the histories
    return Phase(name, leads, seconds, await events_of(client, query), latencies,
                 cpu1 - cpu0, own1 - own0)


async def engine_phase(client: Client, settings: Settings, store: SqliteStore, n: int,
                       tag: str, metrics_port: int) -> Phase:
    cid = f"bench-{tag}"
    mgr = CampaignManager(settings, client=client, store=store, queue_prefix="bench-",
                          use_search_attributes=True)
    rows = [{"email": f"lead{i}@co{i % 500}.example", "company": f"Co {i}",
             "first_name": f"Lead{i}"} for i in range(n)]
    intake = parse_lead_rows(enumerate(rows, start=2), cid)

    async def run() -> None:
        await mgr.start(intake, CampaignOptions(brief="Book a short intro call."), name=cid,
                        campaign_id=cid)
        while True:
            if (await mgr.status(cid)).stage is not Stage.DRAFTING:
                return
            await asyncio.sleep(0.2)

    phase = await measure("engine (offline writer)", n, metrics_port, client,
                          f'CampaignId = "{cid}"', run)
    # The writer and the guardrails must agree on every lead: a failed step holds a lead.
    c = (await mgr.status(cid)).counts
    print(f"engine: {c.drafted} of {c.leads} leads drafted, {c.draft_failed} with a failed "
          f"step ({c.held} held)", flush=True)
    return phase


async def bare_phase(client: Client, shape: str, n: int, tag: str, metrics_port: int) -> Phase:
    workflow_id = f"bare-{shape}-{tag}"
    inp = BareInput(leads=n, activity_queue="bench-bare-activities")
    run_fn = BareParent.run if shape == "child" else BareFlat.run

    async def run() -> None:
        await client.execute_workflow(run_fn, inp, id=workflow_id, task_queue="bench-bare")

    label = "bare child-per-lead" if shape == "child" else "bare flat"
    return await measure(label, n, metrics_port, client,
                         f'WorkflowId STARTS_WITH "{workflow_id}"', run)


async def one_round(n: int, tag: str, engine_only: bool = False) -> list[Phase]:
    home = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    metrics_port = free_port()
    settings = Settings(CAMPAIGN_HOME=home, CAMPAIGN_LLM_PROVIDER="offline")
    runtime = install(telemetry_runtime(settings, metrics_address("127.0.0.1", metrics_port)))
    del runtime
    store = SqliteStore(home / "campaign.db")
    await store.migrate()
    async with embedded_stack(settings, free_port(), free_port()) as stack, \
            contextlib.AsyncExitStack() as workers:
        client = stack.client
        for w in build_workers(client, store, settings, prefix="bench-"):
            await workers.enter_async_context(w)
        await workers.enter_async_context(Worker(
            client, task_queue="bench-bare", workflows=[BareParent, BareChild, BareFlat],
            workflow_runner=workflow_runner(client)))
        await workers.enter_async_context(Worker(
            client, task_queue="bench-bare-activities", activities=[bare_noop],
            max_concurrent_activities=20))
        phases = [await engine_phase(client, settings, store, n, tag, metrics_port)]
        if not engine_only:
            phases += [await bare_phase(client, "child", n, tag, metrics_port),
                       await bare_phase(client, "flat", n, tag, metrics_port)]
    await store.close()
    install(None)
    return phases


def medians(rounds: list[list[Phase]]) -> list[Phase]:
    out = []
    for i, first in enumerate(rounds[0]):
        runs = [r[i] for r in rounds]
        out.append(Phase(
            first.name, first.leads, statistics.median(p.seconds for p in runs),
            int(statistics.median(p.events for p in runs)),
            {k: statistics.median(p.latencies_ms[k] for p in runs) for k in first.latencies_ms},
            statistics.median(p.server_cpu for p in runs),
            statistics.median(p.worker_cpu for p in runs)))
    return out


def table(phases: list[Phase]) -> str:
    lines = ["| shape | leads/s | events/lead | workflow task s2s (ms) | activity s2s (ms) "
             "| server CPU (s) | worker CPU (s) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for p in phases:
        lines.append(f"| {p.name} | {p.rate:.1f} | {p.events / p.leads:.1f} "
                     f"| {p.latencies_ms['workflow task s2s']:.1f} "
                     f"| {p.latencies_ms['activity s2s']:.1f} "
                     f"| {p.server_cpu:.1f} | {p.worker_cpu:.1f} |")
    if len(phases) < 3:  # --engine-only: no bare shapes to compare with
        return "\n".join(lines)
    engine, child, flat = phases
    lines.append("")
    lines.append(f"Ratio to the bare child shape: **{engine.rate / child.rate:.2f}** "
                 f"(target >= 1.0); to the flat shape: **{engine.rate / flat.rate:.2f}**.")
    return "\n".join(lines)


def write_docs(phases: list[Phase], n: int, runs: int) -> None:
    write_section("bench_engine", "Engine against the bare shapes (`make bench`)",
                  f"{n} leads, medians of {runs} runs, each shape on the same embedded server "
                  "(the one `campaign dev` starts) in the same run.", table(phases))


async def main(n: int, runs: int, write: bool, engine_only: bool = False) -> None:
    rounds = []
    for i in range(runs):
        phases = await one_round(n, f"{int(time.time())}-{i}", engine_only)
        print(f"run {i + 1}/{runs}:\n{table(phases)}\n", flush=True)
        rounds.append(phases)
    result = medians(rounds)
    print(f"medians of {runs} run(s), {n} leads:\n{table(result)}")
    if write:
        write_docs(result, n, runs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="write docs/performance.md")
    parser.add_argument("--short", action="store_true", help="100 leads, one run (CI)")
    parser.add_argument("--engine-only", action="store_true",
                        help="the engine's shape only (profiling it); never written")
    args = parser.parse_args()
    if args.short:
        args.leads, args.runs, args.write = 100, 1, False
    if args.engine_only:
        args.write = False
    asyncio.run(main(args.leads, args.runs, args.write, args.engine_only))
