"""Does a campaign use the LLM rate the user pays for? (issue 14, item 3)

The embedded stack (the server `campaign dev` starts, same flags), the OpenAI-compatible
test server answering every request after `--latency` seconds, and `--workers` separate
worker processes (`python worker_main.py`, as a user runs them) sharing the SQLite store
and `CAMPAIGN_LLM_RATE_LIMIT=--rate`. A campaign of `--leads` leads is drafted with the
demo knowledge base; the test server logs when each chat request arrived, and from that:

- achieved calls/s over the drafting span (first call to last) against the limit
  (target: >= 0.9 of it), and
- the busiest five-second window, as calls/s against the limit (target: <= 1.1: the
  limit is the provider's, and a burst above it costs 429s).

    .venv/bin/python -m bench.bench_llm_rate                      # 600 leads, 10/s, 2 workers
    .venv/bin/python -m bench.bench_llm_rate --leads 60 --json    # short mode
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.bench_workers import spawn_worker
from bench.docs import write_section
from campaign_core.leads import parse_lead_rows
from campaign_core.models import Stage
from campaign_core.ports import free_port
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.devstack import embedded_stack
from starter.manager import CampaignManager
from starter.start_options import CampaignOptions
from tests.fakes.llm_server import LLMTestServer
from worker_main import WINDOW_S  # the window the worker keeps the limit over

ROOT = Path(__file__).resolve().parent.parent
KB = ROOT / "starter" / "demo_data" / "kb"
BRIEF = (ROOT / "starter" / "demo_data" / "brief.md").read_text()


@dataclass
class RateResult:
    """What the provider saw, against the limit."""

    leads: int
    workers: int
    limit_per_s: float
    latency_s: float
    calls: int
    span_s: float
    achieved_per_s: float
    achieved_ratio: float
    busiest_window_per_s: float
    busiest_window_ratio: float
    drafted: int
    stage: str
    elapsed_s: float


def busiest_window(times: list[float], width: float = WINDOW_S) -> int:
    """Most calls that arrived within any `width` seconds (windows start at a call)."""
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + width) - i for i, t in enumerate(ordered)),
               default=0)


def worker_env(home: Path, server: LLMTestServer, rate: float) -> dict[str, str]:
    """A worker's environment: this stack (via CAMPAIGN_HOME's dev.json), the test server."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TEMPORAL_", "CAMPAIGN_", "OPENAI_"))}
    env.update({
        "CAMPAIGN_HOME": str(home), "CAMPAIGN_LLM_PROVIDER": "openai",
        "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": server.base_url,
        "CAMPAIGN_LLM_MODEL": "bench-model", "CAMPAIGN_LLM_RATE_LIMIT": str(rate),
        "CAMPAIGN_LLM_TIMEOUT": "10",
    })
    return env


async def run(leads: int, workers: int, rate: float, latency: float,
              limit_s: float) -> RateResult:
    home = Path(tempfile.mkdtemp(prefix="bench-llm-rate-"))
    server = LLMTestServer(latency=latency).start()
    settings = Settings(CAMPAIGN_HOME=home)
    store = SqliteStore(home / "campaign.db")
    await store.migrate()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        async with embedded_stack(settings, free_port(), free_port()) as stack:
            env = worker_env(home, server, rate)
            procs = [spawn_worker(None, env, home / f"worker{i}.log") for i in range(workers)]
            mgr = CampaignManager(settings, client=stack.client, store=store,
                                  use_search_attributes=True)
            cid = f"llm-rate-{int(time.time())}"
            rows = [{"email": f"lead{i:04d}@rate{i % 50}.example", "first_name": f"Lead{i:04d}",
                     "company": f"Co {i}", "title": "CTO"} for i in range(leads)]
            started = time.monotonic()
            await mgr.start(parse_lead_rows(enumerate(rows, start=2), cid),
                            CampaignOptions(brief=BRIEF, kb=str(KB)), name=cid, campaign_id=cid)
            status = await mgr.status(cid)
            while time.monotonic() - started < limit_s:
                status = await mgr.status(cid)
                if status.stage is not Stage.DRAFTING:
                    break
                await asyncio.sleep(0.5)
            elapsed = time.monotonic() - started
            for p in procs:
                p.terminate()
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        server.stop()
        await store.close()
    times = [c.at for c in server.calls("chat")]
    span = (max(times) - min(times)) if len(times) > 1 else 0.0
    achieved = (len(times) - 1) / span if span else 0.0
    busiest = busiest_window(times) / WINDOW_S
    return RateResult(
        leads=leads, workers=workers, limit_per_s=rate, latency_s=latency, calls=len(times),
        span_s=round(span, 1), achieved_per_s=round(achieved, 2),
        achieved_ratio=round(achieved / rate, 3), busiest_window_per_s=round(busiest, 2),
        busiest_window_ratio=round(busiest / rate, 3), drafted=status.counts.drafted,
        stage=status.stage.value, elapsed_s=round(elapsed, 1))


def report(r: RateResult) -> str:
    return "\n".join([
        f"{r.leads} leads, {r.workers} worker processes, limit {r.limit_per_s:g}/s, "
        f"LLM latency {r.latency_s * 1000:.0f} ms: {r.drafted} drafted, stage {r.stage}",
        "| figure | value | target |", "| --- | ---: | --- |",
        f"| LLM calls | {r.calls} | |",
        f"| achieved calls/s | {r.achieved_per_s:.2f} ({r.achieved_ratio:.2f} of the limit) "
        f"| >= 0.9 of the limit |",
        f"| busiest {WINDOW_S:g} s window | {r.busiest_window_per_s:.2f}/s "
        f"({r.busiest_window_ratio:.2f} of the limit) | <= 1.1 of the limit |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=600)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write", action="store_true", help="write docs/performance.md")
    args = parser.parse_args()
    result = asyncio.run(run(args.leads, args.workers, args.rate, args.latency, args.timeout))
    print(json.dumps(asdict(result)) if args.json else report(result))
    if args.write:
        write_section("bench_llm_rate", "The LLM rate the user pays for",
                      "the embedded server, separate worker processes sharing the SQLite "
                      "store, the OpenAI-compatible test server, the demo knowledge base.",
                      report(result))
    sys.exit(0 if result.drafted == result.leads else 1)


if __name__ == "__main__":
    main()
