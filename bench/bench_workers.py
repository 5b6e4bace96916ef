"""More machines: one worker process, two, and two on separate queues (issue 14, item 4).

A real PostgreSQL store (a throwaway cluster, durable settings), the embedded Temporal
server (`campaign dev`'s flags) and worker *processes* (`python worker_main.py [--queues
...]`, as a user runs them), with the offline writer so the engine itself is measured.
For each layout, a campaign of `--leads` leads is drafted; printed: leads/s, the CPU
seconds of the Temporal server, PostgreSQL and each worker, and each worker's peak RSS
(VmHWM). The CPU columns say what stops it scaling: on a machine whose cores are all
busy, a second worker process only splits the same CPU.

    .venv/bin/python -m bench.bench_workers                  # 1,000 leads, three layouts
    .venv/bin/python -m bench.bench_workers --peak-rss --leads 20000   # peak RSS at 20k

`--peak-rss` runs one worker process only and writes its own section, so `make bench` can
measure memory on a large campaign (issue 14: under 400 MB at 20,000 leads) without
repeating the three layouts at that size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client

from bench.docs import write_section
from campaign_core.leads import parse_lead_rows
from campaign_core.models import Stage
from campaign_core.ports import free_port
from campaign_core.settings import Settings
from campaign_core.store.factory import open_store
from starter.devstack import embedded_stack
from starter.manager import CampaignManager
from starter.start_options import CampaignOptions
from tests.fakes.pg_fixtures import TempPostgres

ROOT = Path(__file__).resolve().parent.parent
#: The peak RSS a worker process should stay under on a 20,000-lead campaign (issue 14).
RSS_TARGET_MB = 400
TICK = os.sysconf("SC_CLK_TCK")

#: name -> the `--queues` of each worker process (None: every queue).
LAYOUTS: dict[str, list[str | None]] = {
    "1": [None],
    "2": [None, None],
    "2-split": ["workflows,store", "knowledge,llm,delivery"],
}
LABELS = {"1": "1 worker process", "2": "2 worker processes",
          "2-split": "2 processes, split queues (workflows,store / knowledge,llm,delivery)"}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (0 when it is gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    return 0.0


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children(ppid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == ppid:
                out.append(int(stat.parent.name))
    return out


def postgres_cpu(pg: TempPostgres) -> float:
    """CPU of the cluster: the postmaster and its backends."""
    postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    return cpu_seconds(postmaster) + sum(cpu_seconds(p) for p in children(postmaster))


def spawn_worker(queues: str | None, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`python worker_main.py [--queues ...]`, its output in `log`."""
    cmd = [sys.executable, "worker_main.py", *(["--queues", queues] if queues else [])]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


@dataclass
class LayoutResult:
    layout: str
    leads: int
    seconds: float
    server_cpu: float
    postgres_cpu: float
    worker_cpu: list[float] = field(default_factory=list)
    worker_rss_mb: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.leads / self.seconds


async def run_layout(name: str, n: int, settings: Settings, client: Client, store_url: str,
                     pg: TempPostgres, server_pids: list[int]) -> LayoutResult:
    home = settings.campaign_home
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "CAMPAIGN_"))}
    env.update({"CAMPAIGN_HOME": str(home), "CAMPAIGN_STORE_URL": store_url,
                "CAMPAIGN_LLM_PROVIDER": "offline"})
    procs = [spawn_worker(queues, env, home / f"worker-{name}-{i}.log")
             for i, queues in enumerate(LAYOUTS[name])]
    store = open_store(store_url)
    try:
        await asyncio.sleep(5)  # the workers connect and start polling
        mgr = CampaignManager(settings, client=client, store=store, use_search_attributes=True)
        cid = f"workers-{name}-{int(time.time())}"
        rows = [{"email": f"lead{i}@co{i % 500}.example", "company": f"Co {i}",
                 "first_name": f"Lead{i}"} for i in range(n)]
        intake = parse_lead_rows(enumerate(rows, start=2), cid)
        server0 = sum(cpu_seconds(p) for p in server_pids)
        pg0 = postgres_cpu(pg)
        w0 = [cpu_seconds(p.pid) for p in procs]
        t0 = time.monotonic()
        # Each layout's campaign takes the same people while the last may still be going on.
        await mgr.start(intake, CampaignOptions(brief="Book a short intro call.",
                                                allow_overlap=True), name=cid, campaign_id=cid)
        while True:
            if (await mgr.status(cid)).stage is not Stage.DRAFTING:
                break
            await asyncio.sleep(0.5)
        seconds = time.monotonic() - t0
        result = LayoutResult(
            LABELS[name], n, seconds, sum(cpu_seconds(p) for p in server_pids) - server0,
            postgres_cpu(pg) - pg0, [cpu_seconds(p.pid) - c for p, c in zip(procs, w0,
                                                                              strict=True)],
            [peak_rss_mb(p.pid) for p in procs])
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        await store.close()
    return result


def table(results: list[LayoutResult]) -> str:
    lines = ["| layout | leads | leads/s | Temporal server CPU (s) | PostgreSQL CPU (s) "
             "| worker CPU (s) | worker peak RSS (MB) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r.layout} | {r.leads} | {r.rate:.1f} | {r.server_cpu:.0f} "
                     f"| {r.postgres_cpu:.0f} | {' + '.join(f'{c:.0f}' for c in r.worker_cpu)} "
                     f"| {' / '.join(f'{m:.0f}' for m in r.worker_rss_mb)} |")
    return "\n".join(lines)


def peak_rss_summary(r: LayoutResult) -> str:
    """The figure against its target; the window of leads in flight, not the campaign's
    size, should bound it."""
    rss = r.worker_rss_mb[0]
    verdict = "under" if rss < RSS_TARGET_MB else "OVER"
    return (f"Peak worker RSS on a {r.leads}-lead campaign: **{rss:.0f} MB** ({verdict} the "
            f"target of {RSS_TARGET_MB} MB).")


async def main(n: int, layouts: list[str]) -> list[LayoutResult]:
    home = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    settings = Settings(CAMPAIGN_HOME=home)
    results = []
    with TempPostgres(durable=True) as pg:
        store_url = pg.create_database()
        store = open_store(store_url, auto_migrate=True)
        await store.migrate()
        await store.close()
        async with embedded_stack(settings, free_port(), free_port()) as stack:
            server_pids = children(os.getpid())
            for name in layouts:
                r = await run_layout(name, n, settings, stack.client, store_url, pg, server_pids)
                print(table([r]).splitlines()[-1], flush=True)
                results.append(r)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=1000)
    parser.add_argument("--layouts", default="1,2,2-split",
                        help=f"comma-separated, of: {', '.join(LAYOUTS)}")
    parser.add_argument("--peak-rss", action="store_true",
                        help="one worker process only, judged by its peak RSS (own section)")
    parser.add_argument("--write", action="store_true", help="write docs/performance.md")
    args = parser.parse_args()
    chosen = ["1"] if args.peak_rss else args.layouts.split(",")
    unknown = set(chosen) - set(LAYOUTS)
    if unknown:
        parser.error(f"unknown layout(s): {', '.join(sorted(unknown))}")
    results = asyncio.run(main(args.leads, chosen))
    print(table(results))
    if args.peak_rss:
        summary = peak_rss_summary(results[0])
        print(summary)
        if args.write:
            write_section("bench_workers_rss", "Worker memory on a large campaign",
                          "the same stack as above (PostgreSQL store, embedded server, "
                          "`python worker_main.py`, offline writer), one worker process, "
                          "one campaign.", f"{table(results)}\n\n{summary}",
                          script="bench_workers")
    elif args.write:
        write_section("bench_workers", "One worker process, two, two on split queues",
                      "a durable throwaway PostgreSQL store, the embedded Temporal server, "
                      "worker processes as `python worker_main.py [--queues ...]`, offline "
                      "writer, one campaign per layout.", table(results))
