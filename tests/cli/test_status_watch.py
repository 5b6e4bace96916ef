"""`campaign status ID --watch`: follows a campaign to approval (and to its end).

The JSON Lines form runs as the real console script against the real dev server while
the workers run in the test; the Rich form is rendered into a recording console.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from temporalio.testing import WorkflowEnvironment

from campaign_core.leads import parse_lead_rows
from campaign_core.models import Stage
from campaign_core.settings import Settings
from starter.cli.watch import watch_progress
from starter.manager import CampaignManager
from tests.fakes.doubles import fast_agents

CAMPAIGN = str(Path(sys.executable).parent / "campaign")


def rows(n: int) -> list[dict[str, Any]]:
    return [{"email": f"w{i}@co{i}.example", "company": f"Co {i}"} for i in range(n)]


async def start_paused(env: WorkflowEnvironment, settings: Settings, store: Any, prefix: str,
                       cid: str, n: int) -> CampaignManager:
    mgr = CampaignManager(settings, client=env.client, store=store, queue_prefix=prefix,
                          use_search_attributes=False)
    await mgr.start(parse_lead_rows(enumerate(rows(n), start=2), cid), name=cid, campaign_id=cid)
    await mgr.control(cid, "pause")
    return mgr


@pytest.mark.slow
async def test_json_watch_prints_one_document_per_change_until_approval(
    dev_env: WorkflowEnvironment, settings: Settings, store: Any, prefix: str,
    run_workers: Any, home: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "CAMPAIGN_"))}
    env.update({"TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
                "CAMPAIGN_HOME": str(home), "NO_COLOR": "1"})
    async with run_workers(dev_env.client, overrides=fast_agents(store)):
        mgr = await start_paused(dev_env, settings, store, prefix, "watch-json", 30)
        proc = await asyncio.create_subprocess_exec(
            CAMPAIGN, "status", "watch-json", "--watch", "--json", "--interval", "0.1",
            env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert json.loads(first)["paused"] is True
        await mgr.control("watch-json", "resume")
        rest, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    docs = [json.loads(first)] + [json.loads(line) for line in rest.decode().splitlines()]
    assert len(docs) >= 2
    assert all(a != b for a, b in itertools.pairwise(docs)), "only changes are printed"
    done = [d["counts"]["drafted"] + d["counts"]["draft_failed"] for d in docs]
    assert done == sorted(done), "progress never goes back"
    assert docs[-1]["stage"] == "awaiting_approval" and docs[-1]["counts"]["drafted"] == 30
    assert all(d["stage"] == "drafting" for d in docs[:-1])


async def test_progress_bars_follow_drafting_and_delivery(
    dev_env: WorkflowEnvironment, settings: Settings, store: Any, prefix: str,
    run_workers: Any,
) -> None:
    console = Console(record=True, width=140, force_terminal=False)
    async with run_workers(dev_env.client, overrides=fast_agents(store)):
        mgr = await start_paused(dev_env, settings, store, prefix, "watch-bars", 12)
        watcher = asyncio.create_task(watch_progress(mgr, "watch-bars", 0.1, console))
        await asyncio.sleep(0.3)
        await mgr.control("watch-bars", "resume")
        rested = await asyncio.wait_for(watcher, 60)
        assert rested is not None and rested.stage is Stage.AWAITING_APPROVAL
        await mgr.approve("watch-bars", by="tester")
        ended = await asyncio.wait_for(watch_progress(mgr, "watch-bars", 0.1, console), 60)
    assert ended is not None and ended.stage is Stage.COMPLETED and ended.counts.sent == 12
    text = console.export_text()
    assert "drafting" in text and "12/12" in text
    assert "delivery" in text and "awaiting_approval" in text and "completed" in text


def test_the_watch_line_shows_the_sends_waiting_for_their_mailbox_and_paused_senders() -> None:
    """Issue 28: `status --watch` says how many sends wait for capacity, when the next one
    is due, and which of the campaign's senders are paused, and why."""
    from datetime import UTC, datetime

    from campaign_core.models import CampaignStatus, Counts
    from starter.cli.watch import _line

    status = CampaignStatus(
        campaign_id="c1", stage=Stage.DELIVERING, counts=Counts(sent=13),
        waiting_for_capacity=27, next_slot=datetime(2026, 12, 8, 9, 14, 30, tzinfo=UTC),
        paused_senders={"ana": "bounces: 4 of the last 100 sends"})
    line = _line(status)
    assert "sent 13" in line
    assert "27 waiting for capacity, next slot 2026-12-08 09:14 UTC" in line
    assert "sender ana paused[/] (bounces: 4 of the last 100 sends)" in line
    quiet = _line(status.model_copy(update={"waiting_for_capacity": 0, "paused_senders": {}}))
    assert "waiting for capacity" not in quiet and "paused" not in quiet
