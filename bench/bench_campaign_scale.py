"""A big campaign on the real dev server with test-double agents.

Measures the orchestration alone: wall time to draft and deliver N leads, how many
runs continue-as-new made, and the largest history of any run (the bound the
orchestrators promise is 10,000 events per run).

    .venv/bin/python -m bench.bench_campaign_scale --leads 20000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

from campaign_core.ids import campaign_workflow_id, delivery_workflow_id
from campaign_core.leads import parse_lead_rows
from campaign_core.models import CampaignStatus, Stage
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from campaign_core.temporal import run_history_lengths
from starter.devstack import in_memory_dev_server
from starter.manager import CampaignManager
from starter.start_options import EngineTuning
from tests.fakes.doubles import fast_agents
from worker_main import build_workers


async def wait(mgr: CampaignManager, cid: str, stages: set[Stage]) -> CampaignStatus:
    while True:
        st = await mgr.status(cid)
        if st.stage in stages:
            return st
        await asyncio.sleep(2)


async def main(n: int, window: int) -> None:
    env = await in_memory_dev_server()
    home = Path(tempfile.mkdtemp())
    # The doubles cost nothing: lift the LLM and send rate limits so the orchestration is measured.
    settings = Settings(CAMPAIGN_HOME=home, CAMPAIGN_SEND_RATE_LIMIT=1000, CAMPAIGN_LLM_RATE_LIMIT=1000)
    store = SqliteStore(home / "campaign.db")
    await store.migrate()
    mgr = CampaignManager(settings, client=env.client, store=store, queue_prefix="bench-")
    cid = f"bench-{n}"
    rows = [{"email": f"lead{i}@example.com", "company": f"Co {i}"} for i in range(n)]
    intake = parse_lead_rows(enumerate(rows, start=2), cid)
    async with contextlib.AsyncExitStack() as stack:
        for w in build_workers(env.client, store, settings, prefix="bench-",
                               overrides=fast_agents(store)):
            await stack.enter_async_context(w)
        t0 = time.monotonic()
        await mgr.start(intake, name=cid, campaign_id=cid,  # every lead is @example.com
                        tuning=EngineTuning(window=window, per_domain_pacing=False))
        drafted = await wait(mgr, cid, {Stage.AWAITING_APPROVAL, Stage.FAILED})
        t1 = time.monotonic()
        await mgr.approve(cid, by="bench")
        final = await wait(mgr, cid, {Stage.COMPLETED, Stage.FAILED})
        t2 = time.monotonic()
        campaign_runs = await run_history_lengths(env.client, campaign_workflow_id(cid))
        delivery_runs = await run_history_lengths(env.client, delivery_workflow_id(cid))
    await env.shutdown()
    print(f"leads: {n}, window: {window}")
    print(f"drafting: {t1 - t0:.1f} s ({n / (t1 - t0):.1f} leads/s), "
          f"delivery: {t2 - t1:.1f} s ({n / (t2 - t1):.1f} sends/s), total {t2 - t0:.1f} s")
    print(f"final: {final.stage.value}, drafted {drafted.counts.drafted}, sent {final.counts.sent}")
    print(f"campaign runs: {len(campaign_runs)}, max events per run: {max(campaign_runs)}")
    print(f"delivery runs: {len(delivery_runs)}, max events per run: {max(delivery_runs)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=20000)
    parser.add_argument("--window", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.leads, args.window))
