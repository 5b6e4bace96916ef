"""Orchestration at campaign scale on the time-skipping server, agents doubled.

Send windows delay by exactly the right amount, continue-as-new keeps counters
exact, pause holds drafting, decisions are validated, cancel stops everything,
a bad LLM key is one campaign-level error.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from campaign_core.envelope import EnvelopeRef
from campaign_core.ids import campaign_workflow_id, delivery_workflow_id
from campaign_core.leads import parse_lead_rows
from campaign_core.models import CampaignStatus, LeadInput, PageRequest, Stage
from campaign_core.send_window import SendWindow
from campaign_core.temporal import run_history_lengths
from starter.manager import BadInput, CampaignManager
from starter.start_options import CampaignOptions, EngineTuning
from tests.fakes.doubles import fast_agents


def leads(n: int, tz: str | None = None) -> list[dict[str, Any]]:
    return [{"email": f"lead{i}@co{i}.example", "company": f"Co {i}", "timezone": tz}
            for i in range(n)]


async def start(env: WorkflowEnvironment, settings, store, prefix, cid: str, rows,
                tuning: EngineTuning | None = None, **options: Any):
    """Start `cid` with these `CampaignOptions` fields; its manager."""
    mgr = CampaignManager(settings, client=env.client, store=store, queue_prefix=prefix,
                          use_search_attributes=False)
    intake = parse_lead_rows(enumerate(rows, start=2), cid)
    await mgr.start(intake, CampaignOptions(**options), name=cid, campaign_id=cid, tuning=tuning)
    return mgr


def handle(env: WorkflowEnvironment, cid: str) -> WorkflowHandle[Any, CampaignStatus]:
    return env.client.get_workflow_handle(campaign_workflow_id(cid), result_type=CampaignStatus)


async def result_of(h: WorkflowHandle[Any, CampaignStatus]) -> CampaignStatus:
    """`h.result()`, re-polling when the time-skipping server ends a long poll early.

    Skipping days of timers can outrun the server's long-poll deadline, which then
    answers with no close event; the workflow is still running, so ask again.
    """
    for _ in range(50):
        try:
            return await h.result()
        except RuntimeError as err:
            if "No completion event found" not in str(err):
                raise
    raise AssertionError("workflow did not complete")


async def query_status(env: WorkflowEnvironment, cid: str) -> CampaignStatus:
    """The status query, asked again if a loaded machine lets the query deadline pass."""
    for attempt in range(10):
        try:
            return await handle(env, cid).query("status", result_type=CampaignStatus)
        except RPCError as err:
            # "deadline exceeded" / "Timeout expired": the worker did not answer in time.
            transient = "deadline" in str(err).lower() or "timeout" in str(err).lower()
            if not transient or attempt == 9:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def finish(env: WorkflowEnvironment, cid: str, step: timedelta,
                 limit: timedelta = timedelta(minutes=3)) -> CampaignStatus:
    """Skip workflow time a step at a time until the campaign closes, then its result.

    Bounded in real time, so a stuck campaign fails the test instead of hanging it.
    """
    deadline = datetime.now(UTC) + limit
    h = handle(env, cid)
    while datetime.now(UTC) < deadline:
        if (await h.describe()).status != WorkflowExecutionStatus.RUNNING:
            return await result_of(h)
        await env.sleep(step)
    raise AssertionError(f"{cid} still running after {limit} of real time")


async def wait_stage(env: WorkflowEnvironment, cid: str, stage: Stage) -> CampaignStatus:
    st = None
    for _ in range(600):
        st = await query_status(env, cid)
        if st.stage is stage:
            return st
        await asyncio.sleep(0.05)
    raise AssertionError(f"{cid} never reached {stage}: last {st}")


async def test_send_window_two_days_out_delays_two_days_and_no_more(
    ts_env, settings, store, prefix, run_workers
):
    now = await ts_env.get_current_time()
    opens = (now + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    window = SendWindow(start=time(opens.hour), end=time(opens.hour, 59),
                        days=[opens.weekday()], timezone="UTC")
    async with run_workers(ts_env.client, overrides=fast_agents(store)):
        mgr = await start(ts_env, settings, store, prefix, "c-window", leads(3), send_window=window.spec())
        await wait_stage(ts_env, "c-window", Stage.AWAITING_APPROVAL)
        assert await mgr.approve("c-window", by="tester") == 3
        await wait_stage(ts_env, "c-window", Stage.DELIVERING)
        final = await finish(ts_env, "c-window", timedelta(hours=6))  # the timers fire
    assert final.counts.sent == 3
    events = [e async for e in ts_env.client.get_workflow_handle(
        delivery_workflow_id("c-window")).fetch_history_events()]
    sends = [e.event_time.ToDatetime(tzinfo=UTC) for e in events
             if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
             and e.activity_task_scheduled_event_attributes.activity_type.name == "deliver_message"]
    assert len(sends) == 3
    for sent_at in sends:
        assert opens <= sent_at < opens + timedelta(minutes=5), (opens, sent_at)


async def test_continue_as_new_keeps_counters_exact(ts_env, settings, store, prefix, run_workers):
    sent: list[str] = []
    async with run_workers(ts_env.client, overrides=fast_agents(store, sent)):
        mgr = await start(ts_env, settings, store, prefix, "c-can", leads(23),
                          tuning=EngineTuning(window=3, leads_per_run=5, page_size=3))
        st = await wait_stage(ts_env, "c-can", Stage.AWAITING_APPROVAL)
        assert (st.counts.leads, st.counts.drafted, st.counts.draft_failed) == (23, 23, 0)
        await mgr.approve("c-can", by="tester")
        final = await result_of(handle(ts_env, "c-can"))
    assert final.counts.sent == 23 and final.counts.approved == 23
    assert sorted(sent) == sorted(set(sent)) and len(sent) == 23
    runs = await run_history_lengths(ts_env.client, campaign_workflow_id("c-can"))
    assert len(runs) >= 2, "the campaign should have continued as new"
    deliveries = await run_history_lengths(ts_env.client, delivery_workflow_id("c-can"))
    assert len(deliveries) >= 2, "delivery should have continued as new"


async def test_pause_holds_drafting_until_resume(ts_env, settings, store, prefix, run_workers):
    gate = asyncio.Event()
    doubles = fast_agents(store)

    @activity.defn(name="list_lead_ids")
    async def slow_list(page: PageRequest) -> list[str]:
        await gate.wait()
        return await store.list_lead_ids(page.campaign_id, page.after, page.limit)

    async with run_workers(ts_env.client, overrides={**doubles, "list_lead_ids": slow_list}):
        mgr = await start(ts_env, settings, store, prefix, "c-pause", leads(6))
        await mgr.control("c-pause", "pause")
        gate.set()
        for _ in range(20):
            st = await query_status(ts_env, "c-pause")
            assert st.stage is Stage.DRAFTING and st.paused
            assert st.counts.leads == 0 and (await store.counts("c-pause")).drafted == 0
            await asyncio.sleep(0.05)
        status = await mgr.status("c-pause")
        assert status.paused
        await mgr.control("c-pause", "resume")
        st = await wait_stage(ts_env, "c-pause", Stage.AWAITING_APPROVAL)
        assert st.counts.drafted == 6 and not st.paused
        await mgr.reject("c-pause", by="tester")
        await result_of(handle(ts_env, "c-pause"))


async def test_decisions_are_validated(ts_env, settings, store, prefix, run_workers):
    gate = asyncio.Event()
    doubles = fast_agents(store)
    real_write = doubles["write_draft"]

    @activity.defn(name="write_draft")
    async def held_write(inp: LeadInput) -> EnvelopeRef:
        await gate.wait()
        result: EnvelopeRef = await real_write(inp)
        return result

    async with run_workers(ts_env.client, overrides={**doubles, "write_draft": held_write}):
        mgr = await start(ts_env, settings, store, prefix, "c-valid", leads(2))
        await asyncio.sleep(0.3)
        with pytest.raises(BadInput, match="still drafting"):
            await mgr.approve("c-valid", by="early")
        gate.set()
        await wait_stage(ts_env, "c-valid", Stage.AWAITING_APPROVAL)
        with pytest.raises(BadInput, match="no draft for lead id"):
            await mgr.approve("c-valid", lead_ids=["ld_unknown"], by="x")
        assert await mgr.approve("c-valid", by="first") == 2
        with pytest.raises(BadInput, match=r"already been decided|completed|delivering"):
            await mgr.reject("c-valid", by="second")
        final = await result_of(handle(ts_env, "c-valid"))
    assert final.stage is Stage.COMPLETED and final.counts.sent == 2


async def test_cancel_while_awaiting_approval_sends_nothing(
    ts_env, settings, store, prefix, run_workers
):
    sent: list[str] = []
    async with run_workers(ts_env.client, overrides=fast_agents(store, sent)):
        mgr = await start(ts_env, settings, store, prefix, "c-cancel", leads(4))
        await wait_stage(ts_env, "c-cancel", Stage.AWAITING_APPROVAL)
        await mgr.control("c-cancel", "cancel")
        final = await result_of(handle(ts_env, "c-cancel"))
        assert (await mgr.status("c-cancel")).stage is Stage.CANCELLED
        with pytest.raises(BadInput, match="cancelled"):
            await mgr.approve("c-cancel", by="late")
    assert final.stage is Stage.CANCELLED and sent == []


async def test_cancel_while_paused_in_delivery_sends_nothing_more(
    ts_env, settings, store, prefix, run_workers
):
    sent: list[str] = []
    now = await ts_env.get_current_time()
    later = now + timedelta(days=1)
    window = SendWindow(start=time(later.hour), end=time(later.hour, 59),
                        days=[later.weekday()], timezone="UTC")
    async with run_workers(ts_env.client, overrides=fast_agents(store, sent)):
        mgr = await start(ts_env, settings, store, prefix, "c-cdel", leads(4), send_window=window.spec())
        await wait_stage(ts_env, "c-cdel", Stage.AWAITING_APPROVAL)
        await mgr.approve("c-cdel", by="tester")
        await wait_stage(ts_env, "c-cdel", Stage.DELIVERING)
        await mgr.control("c-cdel", "cancel")
        final = await result_of(handle(ts_env, "c-cdel"))
    assert final.stage is Stage.CANCELLED
    assert sent == [] and final.counts.sent == 0


async def test_bad_llm_key_is_one_campaign_level_error(ts_env, settings, store, prefix, run_workers):
    doubles = fast_agents(store)
    calls: list[str] = []

    @activity.defn(name="write_draft")
    async def unauthorised(inp: LeadInput) -> EnvelopeRef:
        calls.append(inp.lead_id)
        raise ApplicationError("LLM provider refused the API key (401)", type="LLMAuthError",
                               non_retryable=True)

    async with run_workers(ts_env.client, overrides={**doubles, "write_draft": unauthorised}):
        mgr = await start(ts_env, settings, store, prefix, "c-auth", leads(40),
                          tuning=EngineTuning(window=2))
        with pytest.raises(Exception) as failure:
            await result_of(handle(ts_env, "c-auth"))
        assert "refused the API key" in str(failure.value.__cause__)
        status = await mgr.status("c-auth")
    assert status.stage is Stage.FAILED
    assert len(calls) <= 3, "drafting stops at the first bad-key error, not once per lead"


@pytest.mark.slow
@pytest.mark.timeout(900)  # CPU-bound (about 12,000 tasks): minutes on a shared 2-core machine
async def test_1200_leads_complete_with_small_histories(ts_env, settings, store, prefix, run_workers):
    """A full run of 1,000 leads (the default per run) and a second one, for drafting and
    for delivery: each run's history stays small. (2,500 leads proved nothing more and
    took six minutes of the suite; bench/bench_campaign_scale.py runs 20,000.)"""
    n = 1200
    sent: list[str] = []
    async with run_workers(ts_env.client, overrides=fast_agents(store, sent)):
        mgr = await start(ts_env, settings, store, prefix, "c-scale", leads(n),
                          tuning=EngineTuning(leads_per_run=1000))
        st = await wait_stage_long(ts_env, "c-scale", Stage.AWAITING_APPROVAL)
        assert st.counts.drafted == n
        await mgr.approve("c-scale", by="tester")
        final = await result_of(handle(ts_env, "c-scale"))
    assert final.counts.sent == n and len(set(sent)) == n
    for wid in (campaign_workflow_id("c-scale"), delivery_workflow_id("c-scale")):
        lengths = await run_history_lengths(ts_env.client, wid)
        assert len(lengths) >= 2 and max(lengths) < 10_000, (wid, lengths)


async def wait_stage_long(env: WorkflowEnvironment, cid: str, stage: Stage) -> CampaignStatus:
    deadline = datetime.now(UTC) + timedelta(minutes=8)
    while datetime.now(UTC) < deadline:
        st = await query_status(env, cid)
        if st.stage is stage:
            return st
        await asyncio.sleep(0.5)
    raise AssertionError(f"{cid} did not reach {stage}")


async def scheduled_sends(env: WorkflowEnvironment, cid: str) -> list[datetime]:
    """The workflow clock at each send decision, across all runs: the start of the workflow
    task that scheduled each `deliver_message` (what `workflow.now()` read when pacing).

    Not the scheduled event's own time: that is when the server processed the task's
    completion, later by however long the task took, so under load two sends paced exactly
    2 s apart could show 1.94 s between their events."""
    times = []
    task_started: datetime | None = None
    async for e in env.client.get_workflow_handle(delivery_workflow_id(cid)).fetch_history_events():
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            task_started = None  # a new run (the handle follows continue-as-new)
        elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            task_started = e.event_time.ToDatetime(tzinfo=UTC)
        elif (e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                and e.activity_task_scheduled_event_attributes.activity_type.name
                == "deliver_message"):
            assert task_started is not None
            times.append(task_started)
    return sorted(times)


async def test_domain_limit_and_campaign_pace_hold(ts_env, settings, store, prefix, run_workers):
    rows = [{"email": f"p{i}@same.example", "company": "Same"} for i in range(12)]
    rows += [{"email": f"q{i}@other{i}.example", "company": f"Other {i}"} for i in range(3)]
    async with run_workers(ts_env.client, overrides=fast_agents(store)):
        mgr = await start(ts_env, settings, store, prefix, "c-pace", rows, domain_limit=5)
        await wait_stage(ts_env, "c-pace", Stage.AWAITING_APPROVAL)
        await mgr.approve("c-pace", by="tester")
        await wait_stage(ts_env, "c-pace", Stage.DELIVERING)
        final = await finish(ts_env, "c-pace", timedelta(seconds=20))
        assert final.counts.sent == 15
        sends = await scheduled_sends(ts_env, "c-pace")
        assert len(sends) == 15
        # Any 60-second span holds at most 5 sends to same.example (+3 to other domains).
        for i, t in enumerate(sends):
            in_minute = [u for u in sends[i:] if u < t + timedelta(minutes=1)]
            assert len(in_minute) <= 5 + 3, (t, in_minute)
        assert sends[-1] - sends[0] >= timedelta(minutes=2), "12 sends at 5/min take > 2 min"

        rows = [{"email": f"r{i}@d{i}.example", "company": "R"} for i in range(4)]
        mgr = await start(ts_env, settings, store, prefix, "c-rate", rows, send_rate=0.5)
        await wait_stage(ts_env, "c-rate", Stage.AWAITING_APPROVAL)
        await mgr.approve("c-rate", by="tester")
        await wait_stage(ts_env, "c-rate", Stage.DELIVERING)
        await finish(ts_env, "c-rate", timedelta(seconds=5))
        sends = await scheduled_sends(ts_env, "c-rate")
        gaps = [b - a for a, b in itertools.pairwise(sends)]
        assert len(sends) == 4 and all(g >= timedelta(seconds=2) for g in gaps), gaps
