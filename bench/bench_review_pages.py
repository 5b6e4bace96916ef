"""Response times of the review pages over a 2,000-lead campaign awaiting approval.

By default the store is seeded directly (leads, drafts, retrievals, stage
`awaiting_approval`) and the dev server answers the pages' status lookups; `--drafting`
runs the real workflows with test-double agents instead (slow on a busy machine). The API
(uvicorn, loopback) then serves the pages to a signed-in reviewer, and each page is
fetched `--requests` times with httpx: p50 and p95 per page, against the issue's target
of 300 ms. Not part of the test suite.

    .venv/bin/python -m bench.bench_review_pages [--leads 2000] [--requests 30] [--drafting]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import uvicorn
from pydantic import SecretStr

from campaign_core.leads import parse_lead_rows
from campaign_core.models import Stage
from campaign_core.ports import free_port
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.api import create_app
from starter.devstack import in_memory_dev_server
from starter.manager import CampaignManager
from starter.review_auth import SESSION_COOKIE, Reviewers, session_signer
from tests.fakes.doubles import fast_agents
from worker_main import build_workers

TARGET_MS = 300.0


async def seed(store: SqliteStore, cid: str, rows: list[dict[str, str]]) -> None:
    """The campaign as drafting leaves it, written straight into the store."""
    intake = parse_lead_rows(enumerate(rows, start=2), cid)
    await store.upsert_campaign(campaign_id=cid, name="Review bench", brief="", channel="outbox",
                                kb_dir=None, workflow_id=f"campaign:{cid}")
    await store.upsert_leads(cid, intake.leads)
    passages = [{"passage_id": "pricing.md#1", "source": "pricing.md", "title": "Pricing",
                 "text": "Plans start at 49 EUR a month."}]
    for lead in intake.leads:
        await store.save_retrieval(cid, lead.lead_id, passages, f"env-kb-{lead.lead_id}")
        await store.upsert_draft(
            campaign_id=cid, lead_id=lead.lead_id, step=1, subject=f"Hello {lead.company}",
            body="A body of a reasonable length for a first message. " * 8,
            citations=["pricing.md#1"], provenance={"agent": "bench"},
            envelope_id=f"env-draft-{lead.lead_id}")
        await store.set_lead_status(cid, lead.lead_id, "drafted")
    await store.set_stage(cid, Stage.AWAITING_APPROVAL.value)


async def bench(n_leads: int, n_requests: int, drafting: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        settings = Settings(CAMPAIGN_HOME=str(home))
        settings.api_token = SecretStr("bench-service-token")
        store = SqliteStore(home / "campaign.db")
        await store.migrate()
        env = await in_memory_dev_server()
        try:
            doubles = fast_agents(store)
            del doubles["deliver_message"]
            workers = build_workers(env.client, store, settings, prefix="bench-",
                                    overrides=doubles)
            async with contextlib.AsyncExitStack() as stack:
                for w in workers:
                    await stack.enter_async_context(w)
                mgr = CampaignManager(settings, client=env.client, store=store,
                                      queue_prefix="bench-", use_search_attributes=False)
                rows = [{"email": f"lead{i:05d}@d{i % 97}.example.com",
                         "company": f"Company {i:05d}"} for i in range(n_leads)]
                started = time.perf_counter()
                if drafting:
                    intake = parse_lead_rows(enumerate(rows, start=2), "bench-review")
                    await mgr.start(intake, name="Review bench", campaign_id="bench-review")
                    for _ in range(3600):
                        if (await mgr.status("bench-review")).stage is Stage.AWAITING_APPROVAL:
                            break
                        await asyncio.sleep(1)
                else:
                    await seed(store, "bench-review", rows)
                print(f"{n_leads} leads ready in {time.perf_counter() - started:.1f} s "
                      f"({'drafted by the workflows' if drafting else 'seeded'})")
                await measure(settings, mgr, n_requests)
                if drafting:
                    await mgr.reject("bench-review", by="bench")
        finally:
            await env.shutdown()
            await store.close()


async def measure(settings: Settings, mgr: CampaignManager, n_requests: int) -> None:
    await Reviewers(mgr.store).add("bench")
    cookie = (await session_signer(mgr.store)).issue("bench")
    lead_id = (await mgr.store.review_page("bench-review", limit=1, offset=777)).items[0].lead_id
    pages = {
        "campaigns list": "/review",
        "campaign page 1": "/review/campaigns/bench-review",
        "campaign page 40": "/review/campaigns/bench-review?page=40",
        "search": "/review/campaigns/bench-review?q=company+0123",
        "lead page": f"/review/campaigns/bench-review/leads/{lead_id}",
    }
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, manager=mgr), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     cookies={SESSION_COOKIE: cookie}, timeout=30) as http:
            print(f"{'page':<18} {'p50 ms':>8} {'p95 ms':>8}  target < {TARGET_MS:.0f} ms")
            for name, path in pages.items():
                r = await http.get(path)
                assert r.status_code == 200, (path, r.status_code, r.text[:300])
                times = []
                for _ in range(n_requests):
                    t0 = time.perf_counter()
                    r = await http.get(path)
                    times.append((time.perf_counter() - t0) * 1000)
                    assert r.status_code == 200
                p50 = statistics.median(times)
                p95 = statistics.quantiles(times, n=20)[18]
                flag = "ok" if p95 < TARGET_MS else "SLOW"
                print(f"{name:<18} {p50:8.1f} {p95:8.1f}  {flag}")
    finally:
        server.should_exit = True
        await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--drafting", action="store_true",
                        help="draft through the workflows instead of seeding the store")
    args = parser.parse_args()
    asyncio.run(bench(args.leads, args.requests, args.drafting))


if __name__ == "__main__":
    main()
