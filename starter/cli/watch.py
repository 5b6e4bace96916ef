"""`campaign status ID --watch`: follow a campaign until it waits for approval or ends.

Polls the same `status` the one-shot command shows (a query to the running workflow,
counts from the store) and reports only changes: Rich progress bars for drafting and
delivery on a terminal, or one JSON document per change (JSON Lines) with `--json`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from campaign_core.budget import usd
from campaign_core.models import CampaignStatus, Stage
from starter.cli.app import shown
from starter.manager import CampaignManager

#: Stages after which nothing moves without a person: the watch ends there.
RESTING = {Stage.AWAITING_APPROVAL, Stage.COMPLETED, Stage.REJECTED, Stage.EXPIRED,
           Stage.FAILED, Stage.CANCELLED}


async def changes(manager: CampaignManager, campaign_id: str,
                  interval: float = 1.0) -> AsyncIterator[CampaignStatus]:
    """Each status that differs from the last one, ending at a resting stage."""
    last: CampaignStatus | None = None
    while True:
        status = await manager.status(campaign_id)
        if status != last:
            yield status
            last = status
        if status.stage in RESTING:
            return
        await asyncio.sleep(interval)


async def watch_json(manager: CampaignManager, campaign_id: str, interval: float) -> None:
    """JSON Lines: one status document per change, flushed as it happens."""
    async for status in changes(manager, campaign_id, interval):
        print(json.dumps(status.model_dump(mode="json")), flush=True)


def by_intent(status: CampaignStatus) -> str:
    """The replies by intent, most first (`interested 2, question 1`); "" when none."""
    ranked = sorted(status.replies_by_intent.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{shown(intent)} {n}" for intent, n in ranked)


def positive_rate(status: CampaignStatus) -> str:
    """The positive reply rate as a percentage (`12.5%`), or "" before any first step."""
    rate = status.positive_reply_rate
    return "" if rate is None else f"{rate * 100:.1f}%"


def capacity_wait(status: CampaignStatus) -> str:
    """`27 waiting for capacity, next slot 2026-12-08 09:14 UTC` (issue 28): the sends that
    wait for their mailbox's capacity or for a paused sender; "" when none wait."""
    if not status.waiting_for_capacity:
        return ""
    slot = status.next_slot
    when = (f", next slot {slot.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if slot is not None
            else " (their senders are paused: `campaign sender resume NAME`)")
    return f"{status.waiting_for_capacity} waiting for capacity{when}"


def _line(status: CampaignStatus) -> str:
    c = status.counts
    paused = " [yellow]paused[/]" if status.paused else ""
    reason = f" ({shown(status.paused_reason)})" if status.paused_reason else ""
    spend = ""
    if status.budget_usd is not None or status.spend_usd:
        cap = f" of {usd(status.budget_usd)}" if status.budget_usd is not None else ""
        spend = f" · LLM spend {shown(usd(status.spend_usd or 0.0) + cap)}"
    held = f" · held {c.held}" if c.held else ""
    intents = by_intent(status)
    rate = positive_rate(status)
    replies = (f" · replies {intents}" + (f" (positive {rate})" if rate else "")
               if intents else "")
    waiting = capacity_wait(status)
    replies += f" · {waiting}" if waiting else ""
    for name, why in status.paused_senders.items():
        replies += f" · [yellow]sender {shown(name)} paused[/] ({shown(why)})"
    return (f"[bold]{shown(status.campaign_id)}[/]: {shown(status.stage.value)}{paused}{reason}"
            f" · drafted {c.drafted} · failed drafts {c.draft_failed}{held}"
            f" · sent {c.sent} · replied {c.replied} · stopped {c.stopped}"
            f" · suppressed {c.suppressed} · send failures {c.send_failed}"
            f" · pending {c.pending} of {c.messages}{replies}{spend}")


async def watch_progress(manager: CampaignManager, campaign_id: str, interval: float,
                         console: Console) -> CampaignStatus | None:
    """Progress bars (done / total, rate, ETA) until the campaign rests; its last status."""
    columns = (TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
               TextColumn("{task.fields[note]}"))
    last: CampaignStatus | None = None
    with Progress(*columns, console=console, transient=False) as progress:
        drafting: TaskID = progress.add_task("drafting", total=None, rate="", note="")
        delivery: TaskID = progress.add_task("delivery", total=None, rate="", note="",
                                             visible=False)
        async for status in changes(manager, campaign_id, interval):
            c = status.counts
            progress.update(drafting, total=max(c.leads, 1), completed=c.drafted + c.draft_failed,
                            note=f"{c.draft_failed} failed" if c.draft_failed else "")
            if c.approved or status.stage in (Stage.DELIVERING, Stage.COMPLETED):
                # Every message (lead step) that is to go out; it is done once it has its
                # final outcome (sent, suppressed, stopped, failed), as the report says.
                total = c.messages - c.excluded - c.not_approved
                done = total - c.pending
                progress.update(delivery, visible=True, total=max(total, 1), completed=done,
                                note=f"{c.send_failed} failed" if c.send_failed else "")
            for task in progress.tasks:
                speed = task.finished_speed or task.speed
                progress.update(task.id, rate=f"{speed:.1f}/s" if speed else "")
            progress.console.print(_line(status), highlight=False)
            last = status
    return last
