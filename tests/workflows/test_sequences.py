"""Sequences on the time-skipping server: follow-ups on durable timers, stopped the moment
a step is due when the person replied, unsubscribed or was cancelled (issue 13).

The agents are the test doubles of tests/fakes/doubles.py (whose `deliver_message` runs the
real stop check against the real SQLite store), except where the .eml is the point.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import os
from collections import Counter
from datetime import datetime, timedelta
from email import policy
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from campaign_core.events import DeliveryEvent
from campaign_core.ids import campaign_workflow_id, delivery_workflow_id, message_key
from campaign_core.inbound import InboundMessage
from campaign_core.leads import parse_lead_rows
from campaign_core.models import DeliveryEventKind, ReplySignal, Stage
from campaign_core.replies import ReplyDesk
from campaign_core.store.base import Store
from campaign_core.temporal import run_history_lengths
from starter.manager import CampaignManager
from starter.start_options import CampaignOptions, EngineTuning
from tests.fakes.doubles import fast_agents
from tests.fakes.sequence_scale import run_sequence
from tests.workflows.test_orchestration import finish, handle, wait_stage
from workflows.signals import TemporalCampaignSignals

DAY = timedelta(days=1)


async def started(env: WorkflowEnvironment, settings: Any, store: Store, prefix: str, cid: str,
                  rows: list[dict[str, Any]], tuning: EngineTuning | None = None,
                  **options: Any) -> tuple[CampaignManager, list[str]]:
    """Start with these `CampaignOptions` fields, wait for the drafts, approve everything;
    the manager and the lead ids."""
    mgr = CampaignManager(settings, client=env.client, store=store, queue_prefix=prefix,
                          use_search_attributes=False)
    intake = parse_lead_rows(enumerate(rows, start=2), cid)
    await mgr.start(intake, CampaignOptions(**options), name=cid, campaign_id=cid, tuning=tuning)
    await wait_stage(env, cid, Stage.AWAITING_APPROVAL)
    assert await mgr.approve(cid, by="tester") == len(rows)
    await wait_stage(env, cid, Stage.DELIVERING)
    keyed = await mgr._keyed(cid, intake)  # the campaign's (salted) ids, in row order
    return mgr, [lead.lead_id for lead in keyed]


async def until(check: Any, what: str, seconds: float = 60) -> None:
    """Poll (real time) until `await check()` is true."""
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def sent_count(store: Store, cid: str, n: int) -> None:
    async def check() -> bool:
        return (await store.counts(cid)).sent >= n
    await until(check, f"{n} messages sent in {cid}")


async def reply(env: WorkflowEnvironment, cid: str, lead_id: str, kind: str = "reply") -> None:
    """What the replies ingestion does for a matched reply: signal the campaign."""
    await env.client.get_workflow_handle(campaign_workflow_id(cid)).signal(
        "reply", ReplySignal(lead_id=lead_id, kind=kind, reply_id=f"r-{lead_id}"))


def rows(n: int, domain: str = "co{i}.example") -> list[dict[str, Any]]:
    return [{"email": f"lead{i}@{domain.format(i=i)}", "company": f"Co {i}"} for i in range(n)]


async def test_reply_stops_the_sequence_out_of_office_does_not_unsubscribe_stops_step_3(
    ts_env, settings, store, prefix, run_workers
):
    sent: list[str] = []
    async with run_workers(ts_env.client, overrides=fast_agents(store, sent)):
        _, (replier, ooo, leaver, quiet) = await started(ts_env, settings, store, prefix, "c-seq", rows(4),
                                                         follow_ups=["1d", "2d"])
        await sent_count(store, "c-seq", 4)  # step 1 to everyone
        await reply(ts_env, "c-seq", replier)
        await reply(ts_env, "c-seq", ooo, "auto_reply")  # out of office: recorded, no stop

        async def replier_stopped() -> bool:
            row = await store.get_step("c-seq", replier, 2)
            return row is not None and row.status == "stopped"
        await until(replier_stopped, "the reply to stop step 2 at once")
        await ts_env.sleep(DAY + timedelta(hours=1))
        await sent_count(store, "c-seq", 7)  # step 2 to the three others
        lead = await store.get_lead("c-seq", leaver)
        assert lead is not None
        await store.add_suppressions([lead.email], "unsubscribe (c-seq)",
                                     source="unsubscribe_link")  # after step 2
        final = await finish(ts_env, "c-seq", DAY)
    assert final.stage is Stage.COMPLETED
    got = Counter(sent)
    assert all(n == 1 for n in got.values()), got  # every step exactly once
    assert set(got) == {replier, ooo, f"{ooo}#2", f"{ooo}#3", leaver, f"{leaver}#2",
                        quiet, f"{quiet}#2", f"{quiet}#3"}
    report = {(r.lead_id, r.step): (r.delivery_status, r.stop_reason)
              for r in await store.report("c-seq")}
    assert report[(replier, 2)] == ("stopped", "replied")
    assert report[(replier, 3)] == ("stopped", "replied")
    assert report[(leaver, 3)] == ("stopped", "unsubscribed")
    assert report[(ooo, 3)] == report[(quiet, 3)] == ("sent", None)
    counts = await store.counts("c-seq")
    assert (counts.sent, counts.stopped, counts.approved) == (9, 3, 4)
    # `status` counts are tallies of the report's rows: the two cannot disagree.
    assert counts.stopped == sum(v[0] == "stopped" for v in report.values())
    assert final.counts.stopped == 1  # the unsubscribe, stopped at due time (the reply at once)


async def test_replies_and_bounces_go_to_the_delivery_run_not_the_campaign_history(
    ts_env, settings, store, prefix, run_workers
):
    """Replies (the inbound path) and bounces (the webhook path) signal the running
    delivery orchestrator directly: the campaign run's history, which never continues as
    new while a sequence waits, stays flat however many arrive (forwarded, each cost it
    about six events: some 1,500 took it past 10,000)."""
    sent: list[str] = []
    n = 48
    async with run_workers(ts_env.client, overrides=fast_agents(store, sent)):
        mgr, ids = await started(ts_env, settings, store, prefix, "c-flat", rows(n), follow_ups=["1d"])
        await sent_count(store, "c-flat", n)
        before = await run_history_lengths(ts_env.client, campaign_workflow_id("c-flat"))
        delivery_before = await run_history_lengths(ts_env.client,
                                                    delivery_workflow_id("c-flat"))
        desk = ReplyDesk(store, TemporalCampaignSignals(ts_env.client), source="webhook")
        repliers, bounced = ids[:46], ids[46:]  # 2 bounces: under the breaker's 5%
        for lead_id in repliers:
            lead = await store.get_lead("c-flat", lead_id)
            assert lead is not None
            got = await desk.process(InboundMessage.model_validate({
                "from": lead.email, "subject": "Re: s", "message_id": f"<in-{lead_id}@x>",
                "in_reply_to": [f"<{message_key('c-flat', lead_id)}>"],  # our Message-ID
                "text": "Interested."}))
            assert [m.notified for m in got.matches] == [True], got
        for lead_id in bounced:
            lead = await store.get_lead("c-flat", lead_id)
            assert lead is not None
            event = await mgr.delivery_event(DeliveryEvent(
                type=DeliveryEventKind.BOUNCE, email=lead.email,
                message_id=message_key("c-flat", lead_id), event_id=f"b-{lead_id}"),
                source="webhook")
            assert event.campaign_notified

        async def acted_on() -> bool:  # each reply's action workflow signalled its stop
            return all(r.action is not None for r in await store.list_replies("c-flat"))
        await until(acted_on, "every reply acted on")
        after = await run_history_lengths(ts_env.client, campaign_workflow_id("c-flat"))
        delivery_after = await run_history_lengths(ts_env.client, delivery_workflow_id("c-flat"))
        final = await finish(ts_env, "c-flat", DAY)
    assert final.stage is Stage.COMPLETED
    assert after[-1] - before[-1] < 10, (before, after)  # was about 6 a signal: 288 here
    assert sum(delivery_after) - sum(delivery_before) >= n  # one signal event each, at least
    assert sorted(sent) == sorted(ids)  # every follow-up stopped: replied or bounced
    report = {(r.lead_id, r.step): r.stop_reason for r in await store.report("c-flat")}
    # The stop reason is the reply's intent (issue 27): "Interested." alone is `unclear` to
    # the offline rules, which leave it to a person.
    assert {report[(lid, 2)] for lid in repliers} == {"unclear"}
    assert {report[(lid, 2)] for lid in bounced} == {"bounced"}


async def test_a_follow_up_due_while_step_1_is_still_going_out_is_sent_on_time(
    ts_env, settings, store, prefix, run_workers
):
    """Paced at one send every 10 minutes, step 1 to five leads spans 40 minutes; the first
    lead's step 2 falls due after 25. It goes at the first free slot of the pace after that
    (30 minutes), before step 1 has reached the last leads, not after the last step 1."""
    sent: list[str] = []
    gap, first, second = 600, 1500, 3600
    async with run_workers(ts_env.client, overrides=fast_agents(store, sent)):
        _, ids = await started(ts_env, settings, store, prefix, "c-due", rows(5),
                               follow_ups=[f"{first}s", f"{second}s"], send_rate=1 / gap)
        final = await finish(ts_env, "c-due", timedelta(minutes=5))
    assert final.stage is Stage.COMPLETED
    assert sorted(sent) == sorted(ids + [f"{lid}#{s}" for lid in ids for s in (2, 3)])

    async def due(lead_id: str, step: int) -> datetime:
        row = await store.get_step("c-due", lead_id, step)
        assert row is not None
        return datetime.fromisoformat(row.due_at)
    # Workflow times of the sends, from the due times they scheduled (a send at t
    # schedules the next step at t + its delay).
    step_1 = {lid: await due(lid, 2) - timedelta(seconds=first) for lid in ids}
    earliest, latest = min(ids, key=step_1.__getitem__), max(ids, key=step_1.__getitem__)
    assert step_1[latest] - step_1[earliest] >= timedelta(seconds=4 * gap)
    step_2 = await due(earliest, 3) - timedelta(seconds=second)
    on_time = step_1[earliest] + timedelta(seconds=first)
    assert on_time <= step_2 <= on_time + timedelta(seconds=gap), (step_1, step_2)
    assert step_2 < step_1[latest]  # not held back until step 1 reached everyone


async def test_pause_holds_follow_ups_and_cancel_stops_them(
    ts_env, settings, store, prefix, run_workers
):
    sent: list[str] = []
    async with run_workers(ts_env.client, overrides=fast_agents(store, sent)):
        mgr, held = await started(ts_env, settings, store, prefix, "c-hold", rows(2), follow_ups=["1d"])
        mgr2, cut = await started(ts_env, settings, store, prefix, "c-cut", rows(2, "x{i}.example"),
                                  follow_ups=["1d"])
        await sent_count(store, "c-hold", 2)
        await sent_count(store, "c-cut", 2)
        await mgr.control("c-hold", "pause")
        await mgr2.control("c-cut", "cancel")
        await asyncio.sleep(0.5)  # the signals reach the delivery orchestrators
        await ts_env.sleep(3 * DAY)
        await asyncio.sleep(0.5)
        assert sorted(sent) == sorted(held + cut)  # nothing more while paused or cancelled
        cancelled = await finish(ts_env, "c-cut", timedelta(hours=1))
        await mgr.control("c-hold", "resume")
        final = await finish(ts_env, "c-hold", timedelta(hours=1))
    assert cancelled.stage is Stage.CANCELLED
    assert final.stage is Stage.COMPLETED
    assert sorted(sent) == sorted(held + cut + [f"{lid}#2" for lid in held])
    report = {(r.lead_id, r.step): (r.delivery_status, r.stop_reason)
              for r in await store.report("c-cut")}
    assert report == {**{(lid, 1): ("sent", None) for lid in cut},
                      **{(lid, 2): ("stopped", "cancelled") for lid in cut}}


async def sends_per_run(env: WorkflowEnvironment, workflow_id: str) -> list[int]:
    """`deliver_message` activities scheduled in each run of `workflow_id`, first run first."""
    counts: list[int] = []
    run_id: str | None = None
    while True:
        events = [e async for e in env.client.get_workflow_handle(
            workflow_id, run_id=run_id).fetch_history_events()]
        counts.append(sum(
            e.activity_task_scheduled_event_attributes.activity_type.name == "deliver_message"
            for e in events if e.HasField("activity_task_scheduled_event_attributes")))
        run_id = events[0].workflow_execution_started_event_attributes.continued_execution_run_id
        if not run_id:
            return counts[::-1]


async def test_follow_ups_falling_due_together_are_spread_over_runs(
    dev_env, settings, store, prefix, run_workers
):
    """Twenty step 2s due at one moment (held by a pause, as thousands are when step 1
    went out in minutes): no run starts more than its share of sends; the next run takes
    the rest. With 20,000 leads one pass used to start them all, and a delivery run reached
    19,649 events. On the dev server in real time, like the test below: the time-skipping
    server's clock is not reliable across continue-as-new."""
    sent: list[str] = []
    n, per_run, delay = 20, 5, 15
    async with run_workers(dev_env.client, overrides=fast_agents(store, sent)):
        mgr, ids = await started(dev_env, settings, store, prefix, "c-bunch", rows(n),
                                 follow_ups=[f"{delay}s"],
                                 tuning=EngineTuning(leads_per_run=per_run, page_size=per_run))
        await sent_count(store, "c-bunch", n)
        await mgr.control("c-bunch", "pause")
        assert len(sent) == n  # step 1 only: the pause came before any step 2 was due
        await asyncio.sleep(delay + 1)  # every step 2 is due now
        await mgr.control("c-bunch", "resume")
        final = await asyncio.wait_for(handle(dev_env, "c-bunch").result(), 120)
    assert final.stage is Stage.COMPLETED
    assert sorted(sent) == sorted(ids + [f"{lid}#2" for lid in ids])  # each step once
    runs = await sends_per_run(dev_env, delivery_workflow_id("c-bunch"))
    assert sum(runs) == 2 * n, runs
    assert max(runs) <= per_run, runs


async def test_continue_as_new_in_the_middle_of_a_sequence_sends_every_step_once(
    dev_env, settings, store, prefix, run_workers
):
    """On the dev server, in real time, seconds-long follow-ups. On the time-skipping server
    a wait for the campaign's result must unlock its clock (`TimeSkippingServer.unlocked`:
    a handle from `get_workflow_handle` waits with it locked, which looked like a server
    that stopped skipping once a child continued as new); unlocked, it skips across every
    run, but on a loaded machine a run now and then still found the clock held (a timer
    pending, time at wall speed), so this test stays on the real server."""
    sent: list[str] = []
    n = 24
    async with run_workers(dev_env.client, overrides=fast_agents(store, sent)):
        _, ids = await started(dev_env, settings, store, prefix, "c-can", rows(n), follow_ups=["2s", "3s"],
                               tuning=EngineTuning(leads_per_run=5, page_size=5))
        final = await asyncio.wait_for(handle(dev_env, "c-can").result(), 240)
    assert final.stage is Stage.COMPLETED
    expected = ids + [f"{lid}#{step}" for lid in ids for step in (2, 3)]
    assert sorted(sent) == sorted(expected)  # every step once, none twice
    runs = await run_history_lengths(dev_env.client, delivery_workflow_id("c-can"))
    # Step 1 alone spans five runs (24 leads, five a run, follow-ups counted with it while
    # they run beside it); the 48 follow-ups take more, so boundaries fall among them.
    assert len(runs) >= 6, runs
    assert max(runs) < 10_000
    assert (await store.counts("c-can")).sent == 3 * n


async def test_step_2_is_a_reply_in_the_thread_of_step_1(
    ts_env, settings, store, prefix, run_workers
):
    """Real agents (offline writer, outbox): the follow-up's .eml names step 1's Message-ID."""
    async with run_workers(ts_env.client):
        _, _ids = await started(ts_env, settings, store, prefix, "c-thread",
                                [{"email": "ana@northwind.example", "first_name": "Ana",
                                  "company": "Northwind"}],
                                follow_ups=["1h", "2h"])
        final = await finish(ts_env, "c-thread", timedelta(minutes=30))
    assert final.counts.sent == 3
    drafts = {d.step: d for d in await store.list_drafts("c-thread")}
    assert drafts[2].subject == f"Re: {drafts[1].subject}" == drafts[3].subject
    assert len({drafts[1].body, drafts[2].body, drafts[3].body}) == 3  # each step its own text
    msgs: dict[str, list[email.message.EmailMessage]] = {}
    for path in Path(settings.outbox_dir).glob("*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        msgs[msg["Subject"]] = [*msgs.get(msg["Subject"], []), msg]
    first = msgs[drafts[1].subject][0]
    later = sorted(msgs[drafts[2].subject], key=lambda m: len(str(m["References"])))
    assert first["In-Reply-To"] is None
    assert later[0]["In-Reply-To"] == first["Message-ID"]
    assert later[0]["References"] == first["Message-ID"]
    assert later[1]["In-Reply-To"] == later[0]["Message-ID"]
    assert later[1]["References"].split() == [first["Message-ID"], later[0]["Message-ID"]]
    assert len({first["Message-ID"], later[0]["Message-ID"], later[1]["Message-ID"]}) == 3


#: Leads in the scale test: 300 keeps the suite inside its 10 minutes on 2 cores (1,000
#: took 263 s alone, 551 s beside the 2,500-lead test); SEQUENCE_SCALE_LEADS=5000 runs the
#: size the issue names (bench/bench_sequences.py too).
SCALE_LEADS = int(os.environ.get("SEQUENCE_SCALE_LEADS", "300"))


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_many_leads_3_steps_10_percent_replies(dev_env, tmp_path) -> None:
    """Every delivery run under 10,000 events, zero follow-ups to anyone who replied."""
    n = SCALE_LEADS
    result = await run_sequence(dev_env, tmp_path, n, delays=[20, 20],
                                prefix=f"slow{tmp_path.name[-6:]}-")
    print(f"{n} x 3, 10% replies: {result.seconds:.0f} s, delivery runs {result.delivery_runs}")
    assert result.follow_ups_to_repliers == 0
    assert result.sent == n + 2 * (n - result.replied)
    assert max(result.delivery_runs) < 10_000
    assert max(result.campaign_runs) < 10_000
