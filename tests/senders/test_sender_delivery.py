"""Senders on the time-skipping server (issue 28): the real agents (offline writer, outbox
channel, the real delivery agent and its capacity claims on the real SQLite store) send a
campaign from its mailboxes, day after day of workflow time.

What is checked is what was sent: the .eml files in the outbox (From, threading) and the
mailbox's sends as the store recorded them (`sender_sends`, at the workflow's clock), never
the engine's own counters alone.
"""

from __future__ import annotations

import asyncio
import email
import email.message
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import policy
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from campaign_core.ids import campaign_workflow_id, delivery_workflow_id
from campaign_core.leads import parse_lead_rows
from campaign_core.models import Stage
from campaign_core.senders import SenderClaim, SenderRow
from campaign_core.settings import Settings
from campaign_core.store.base import Store
from campaign_core.temporal import run_history_lengths
from starter.manager import CampaignManager
from starter.start_options import CampaignOptions, EngineTuning
from tests.workflows.test_orchestration import finish, handle, wait_stage
from tests.workflows.test_sequences import started
from workflows.campaign import CampaignWorkflow

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


async def add_sender(store: Store, name: str, *, daily: int = 40, hourly: int = 12,
                     gap: int = 60, ramp: tuple[int, int] | None = None,
                     paused: bool = False) -> None:
    assert await store.add_sender(SenderRow(
        name=name, from_addr=f"{name.title()} Example <{name}@acme.example>",
        transport="outbox", daily_cap=daily, hourly_cap=hourly, min_gap_seconds=gap,
        ramp_start=ramp[0] if ramp else None, ramp_step=ramp[1] if ramp else None,
        created_at=datetime.now(UTC)))
    if paused:
        assert await store.set_sender_paused(name, True, "paused by tester")


def people(n: int, company: str | None = None, first: int = 0) -> list[dict[str, Any]]:
    return [{"email": f"p{i}@{'same' if company else f'co{i}'}.example", "first_name": f"P{i}",
             "company": company or f"Co {i}"} for i in range(first, first + n)]


def outbox(settings: Settings) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(p.read_bytes(), policy=policy.default)
            for p in Path(settings.outbox_dir).glob("*.eml")]


async def sends(store: Store, sender: str) -> list[SenderClaim]:
    return await store.sender_claims_since(sender, datetime(2000, 1, 1, tzinfo=UTC))


def assert_caps(claims: list[SenderClaim], *, daily: int, hourly: int, gap: int) -> None:
    """Every rolling 24 hours and hour ending at a send holds at most the cap; consecutive
    sends are at least the gap apart."""
    times = sorted(c.sent_at for c in claims)
    for i, t in enumerate(times):
        in_day = [u for u in times[: i + 1] if u > t - DAY]
        in_hour = [u for u in times[: i + 1] if u > t - HOUR]
        assert len(in_day) <= daily, (t, len(in_day))
        assert len(in_hour) <= hourly, (t, len(in_hour))
        if i:
            assert (t - times[i - 1]).total_seconds() >= gap, (times[i - 1], t)


async def test_caps_and_gap_hold_over_days_of_a_sequence_and_follow_ups_thread_from_the_same_mailbox(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store, prefix: str, run_workers: Any
) -> None:
    await add_sender(store, "ana", daily=6, hourly=3, gap=600)
    await add_sender(store, "bo", daily=6, hourly=3, gap=600)
    async with run_workers(ts_env.client):
        _, ids = await started(ts_env, settings, store, prefix, "c-caps", people(8),
                               follow_ups=["1d"], senders=["ana", "bo"])
        final = await finish(ts_env, "c-caps", 2 * HOUR, limit=timedelta(minutes=4))
    assert final.stage is Stage.COMPLETED
    assert final.counts.sent == 16
    msgs = outbox(settings)
    assert len(msgs) == 16
    assert len({m["Message-ID"] for m in msgs}) == 16  # nothing sent twice
    claims = {name: await sends(store, name) for name in ("ana", "bo")}
    assert sum(len(c) for c in claims.values()) == 16
    for c in claims.values():
        assert_caps(c, daily=6, hourly=3, gap=600)
    # 16 sends at 6 a day per mailbox need a third day: the caps did hold them back.
    first = min(c.sent_at for cs in claims.values() for c in cs)
    last = max(c.sent_at for cs in claims.values() for c in cs)
    assert last - first > DAY
    # Each lead's follow-up left from its first step's mailbox, in its thread.
    by_id = {m["Message-ID"]: m for m in msgs}
    follow_ups = [m for m in msgs if m["In-Reply-To"]]
    assert len(follow_ups) == 8
    for m in follow_ups:
        first_msg = by_id[m["In-Reply-To"]]
        assert parseaddr(m["From"]) == parseaddr(first_msg["From"])
        assert m["To"] == first_msg["To"]
    report = await store.report("c-caps")
    assert {r.sender for r in report} == {"ana", "bo"}
    assert {lid: {r.sender for r in report if r.lead_id == lid} for lid in ids} == {
        lid: {(await store.lead_sender("c-caps", lid))} for lid in ids}
    # Spread: both mailboxes got leads, and the drafts sign with their sender's name.
    assert Counter(r.sender for r in report if r.step == 1) == {"ana": 4, "bo": 4}
    for d in await store.list_drafts("c-caps"):
        name = await store.lead_sender("c-caps", d.lead_id)
        assert name is not None and name.title() in d.body


async def test_the_ramp_raises_the_cap_day_by_day(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store, prefix: str, run_workers: Any
) -> None:
    await add_sender(store, "ramp", daily=10, hourly=10, gap=60, ramp=(2, 2))
    async with run_workers(ts_env.client):
        await started(ts_env, settings, store, prefix, "c-ramp", people(12), senders=["ramp"])
        final = await finish(ts_env, "c-ramp", 3 * HOUR, limit=timedelta(minutes=4))
    assert final.counts.sent == 12
    claims = await sends(store, "ramp")
    per_day = Counter(c.day_number for c in claims)
    assert per_day == {1: 2, 2: 4, 3: 6}
    assert_caps(claims, daily=10, hourly=10, gap=60)
    # Day numbers are UTC days with a send: each day's sends fall on one UTC date.
    for n in per_day:
        assert len({c.sent_at.date() for c in claims if c.day_number == n}) == 1


async def test_two_campaigns_sharing_a_mailbox_share_its_cap(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store, prefix: str, run_workers: Any
) -> None:
    await add_sender(store, "shared", daily=5, hourly=5, gap=60)
    async with run_workers(ts_env.client):
        mgr, _ = await started(ts_env, settings, store, prefix, "c-one", people(4),
                               senders=["shared"])
        await started(ts_env, settings, store, prefix, "c-two", people(4, first=4),
                      senders=["shared"])
        await ts_env.sleep(6 * HOUR)  # the day's 5 went out; later the same day, no more
        assert len(await sends(store, "shared")) == 5
        one, two = await mgr.status("c-one"), await mgr.status("c-two")  # `campaign status`
        assert one.waiting_for_capacity + two.waiting_for_capacity == 3
        slots = [s.next_slot for s in (one, two) if s.waiting_for_capacity]
        assert slots and all(slot is not None for slot in slots)
        final_one = await finish(ts_env, "c-one", 3 * HOUR, limit=timedelta(minutes=4))
        final_two = await finish(ts_env, "c-two", 3 * HOUR, limit=timedelta(minutes=4))
    assert final_one.counts.sent == final_two.counts.sent == 4
    claims = await sends(store, "shared")
    assert len(claims) == 8 and len({c.message_key for c in claims}) == 8
    assert_caps(claims, daily=5, hourly=5, gap=60)
    assert len(outbox(settings)) == 8


async def test_a_paused_sender_holds_its_leads_and_resuming_it_releases_them(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store, prefix: str, run_workers: Any
) -> None:
    await add_sender(store, "held", daily=40, hourly=40, gap=60)
    await add_sender(store, "free", daily=40, hourly=40, gap=60)
    async with run_workers(ts_env.client):
        mgr = CampaignManager(settings, client=ts_env.client, store=store, queue_prefix=prefix,
                              use_search_attributes=False)
        intake = parse_lead_rows(enumerate(people(6), start=2), "c-hold")
        await mgr.start(intake, CampaignOptions(senders=["held", "free"]), name="c-hold",
                        campaign_id="c-hold")
        await wait_stage(ts_env, "c-hold", Stage.AWAITING_APPROVAL)
        ids = [lead.lead_id for lead in await mgr._keyed("c-hold", intake)]
        assignment = {lid: await store.lead_sender("c-hold", lid) for lid in ids}
        held = sum(v == "held" for v in assignment.values())
        assert 0 < held < 6
        # Paused after its leads were given to it: they wait, the other mailbox's go.
        assert await store.set_sender_paused("held", True, "paused by tester")
        assert await mgr.approve("c-hold", by="tester") == 6
        await ts_env.sleep(HOUR)
        assert len(await sends(store, "free")) == 6 - held
        await ts_env.sleep(2 * DAY)
        assert await sends(store, "held") == []
        status = await mgr.status("c-hold")  # what `campaign status` shows
        assert status.stage is Stage.DELIVERING
        assert status.counts.sent == 6 - held
        assert status.waiting_for_capacity == held
        assert status.paused_senders == {"held": "paused by tester"}
        # Resumed: what `campaign sender resume` does — the store releases the holds and
        # the campaigns are told.
        assert await store.set_sender_paused("held", False, None)
        campaigns = await store.release_sender_holds("held", await ts_env.get_current_time())
        assert campaigns == ["c-hold"]
        await ts_env.client.get_workflow_handle(campaign_workflow_id("c-hold")).signal(
            CampaignWorkflow.senders_changed)
        final = await finish(ts_env, "c-hold", HOUR, limit=timedelta(minutes=3))
    assert final.counts.sent == 6
    assert (await mgr.status("c-hold")).paused_senders == {}
    assert len(await sends(store, "held")) == held
    froms = Counter(parseaddr(m["From"])[1] for m in outbox(settings))
    assert froms == {"held@acme.example": held, "free@acme.example": 6 - held}


async def test_continue_as_new_while_sends_wait_for_their_mailbox_loses_and_doubles_nothing(
    dev_env: WorkflowEnvironment, settings: Settings, store: Store, prefix: str,
    run_workers: Any
) -> None:
    """On the dev server in real time (continue-as-new on the time-skipping server is not
    reliable: tests/workflows/test_sequences.py says why): a 1 s gap makes most of 6 sends
    wait on the schedule while runs of 2 continue as new."""
    await add_sender(store, "gap", daily=100, hourly=100, gap=1)
    async with run_workers(dev_env.client):
        _, ids = await started(dev_env, settings, store, prefix, "c-gap", people(6),
                               senders=["gap"],
                               tuning=EngineTuning(leads_per_run=2, page_size=2))
        final = await asyncio.wait_for(handle(dev_env, "c-gap").result(), 120)
    assert final.stage is Stage.COMPLETED and final.counts.sent == 6
    claims = await sends(store, "gap")
    assert sorted(str(c.lead_id) for c in claims) == sorted(ids)  # each lead once
    assert_caps(claims, daily=100, hourly=100, gap=1)
    assert len(outbox(settings)) == 6
    runs = await run_history_lengths(dev_env.client, delivery_workflow_id("c-gap"))
    assert len(runs) >= 2, runs


async def test_a_send_planned_outside_the_send_window_waits_for_the_window_too(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store, prefix: str, run_workers: Any
) -> None:
    """One send an hour from a mailbox, and a send window one hour a day wide: the second
    lead's slot (an hour after the first send) falls after the window closes, so it goes in
    the next day's window, not at its slot."""
    now = await ts_env.get_current_time()
    opens = (now + HOUR).replace(minute=0, second=0, microsecond=0)
    window = f"{opens:%H}:00-{opens:%H}:59"  # every day, UTC (the leads have no zone)
    await add_sender(store, "hourly", daily=10, hourly=1, gap=60)
    async with run_workers(ts_env.client):
        await started(ts_env, settings, store, prefix, "c-win", people(3), senders=["hourly"],
                      send_window=window)
        final = await finish(ts_env, "c-win", 2 * HOUR, limit=timedelta(minutes=4))
    assert final.counts.sent == 3
    claims = await sends(store, "hourly")
    assert len(claims) == 3
    assert_caps(claims, daily=10, hourly=1, gap=60)
    for c in claims:  # every send inside the window
        assert c.sent_at.astimezone(UTC).hour == opens.hour, c.sent_at
    assert len({c.sent_at.date() for c in claims}) == 3  # one a day: the window is an hour
