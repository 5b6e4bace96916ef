"""A sequence at scale with test-double agents: the shared body of the slow test in
tests/workflows/test_sequences.py and bench/bench_sequences.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from campaign_core.ids import campaign_workflow_id, delivery_workflow_id
from campaign_core.leads import parse_lead_rows
from campaign_core.models import CampaignStatus, ReplySignal, Stage
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from campaign_core.temporal import run_history_lengths
from starter.manager import CampaignManager
from starter.start_options import CampaignOptions, EngineTuning
from tests.fakes.doubles import fast_agents
from tests.fakes.time_skipping import skipping
from worker_main import build_workers
from workflows.signals import TemporalCampaignSignals


@dataclass
class SequenceRun:
    leads: int
    replied: int
    sent: int
    follow_ups_to_repliers: int
    delivery_runs: list[int]
    campaign_runs: list[int]
    seconds: float


async def wait_stage(mgr: CampaignManager, cid: str, stages: set[Stage]) -> CampaignStatus:
    while True:
        st = await mgr.status(cid)
        if st.stage in stages:
            return st
        await asyncio.sleep(0.5)


async def until_sent(store: SqliteStore, cid: str, n: int) -> None:
    """Poll the store every half second until `n` messages are sent: for at most an hour,
    or half a second a message when that is longer (20,000 leads: 10,000 s), since on the
    time-skipping server a large run's sends slow down as the run goes on
    (bench/bench_time_skipping.py)."""
    deadline = time.monotonic() + max(3600.0, 0.5 * n)
    while time.monotonic() < deadline:
        if (await store.counts(cid)).sent >= n:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{cid}: {n} sends not reached")


async def run_sequence(env: WorkflowEnvironment, home: Path, n: int, *, delays: list[int],
                       reply_share: float = 0.1, prefix: str = "seq-") -> SequenceRun:
    """Start N leads with `delays`, approve, answer `reply_share` of them after step 1."""
    settings = Settings(CAMPAIGN_HOME=home, CAMPAIGN_SEND_RATE_LIMIT=1000,
                        CAMPAIGN_LLM_RATE_LIMIT=1000)
    store = SqliteStore(home / "campaign.db")
    await store.migrate()
    mgr = CampaignManager(settings, client=env.client, store=store, queue_prefix=prefix,
                          use_search_attributes=False)
    cid = f"seq-{n}"
    rows = [{"email": f"lead{i}@co{i}.example", "company": f"Co {i}"} for i in range(n)]
    intake = parse_lead_rows(enumerate(rows, start=2), cid)
    # Step 1 goes out in lead-id order, so the last ids are the last sent: their replies,
    # signalled as soon as step 1 has reached everyone, arrive before their step 2 is due.
    repliers: list[str] = []
    sent: list[str] = []
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        for w in build_workers(env.client, store, settings, prefix=prefix,
                               overrides=fast_agents(store, sent)):
            await stack.enter_async_context(w)
        await mgr.start(intake, CampaignOptions(follow_ups=[f"{s}s" for s in delays]), name=cid,
                        campaign_id=cid, tuning=EngineTuning(per_domain_pacing=False))
        ids = sorted(lead.lead_id for lead in await mgr._keyed(cid, intake))  # salted ids
        repliers += ids[len(ids) - max(1, round(n * reply_share)):]
        await wait_stage(mgr, cid, {Stage.AWAITING_APPROVAL})
        await mgr.approve(cid, by="bench")
        handle = env.client.get_workflow_handle(campaign_workflow_id(cid))
        await until_sent(store, cid, n)  # step 1 to everyone first
        signals = TemporalCampaignSignals(env.client)
        for lead_id in repliers:  # as the replies ingestion does
            await signals.reply(cid, ReplySignal(
                lead_id=lead_id, kind="reply", reply_id=f"r-{lead_id}"))
        async with skipping(env):  # on the time-skipping server, let it skip while we wait
            for _ in range(100):
                try:
                    await handle.result()
                    break
                except RuntimeError as err:  # skipping outran the long poll: ask again
                    if "No completion event found" not in str(err):
                        raise
    elapsed = time.monotonic() - started
    replied = set(repliers)
    to_repliers = 0
    for lead_id in replied:  # from the store: the doubles' list also holds retried calls
        to_repliers += await store.last_sent_step(cid, lead_id) > 1
    return SequenceRun(
        leads=n, replied=len(replied), sent=(await store.counts(cid)).sent,
        follow_ups_to_repliers=to_repliers,
        delivery_runs=await run_history_lengths(env.client, delivery_workflow_id(cid)),
        campaign_runs=await run_history_lengths(env.client, campaign_workflow_id(cid)),
        seconds=elapsed)
