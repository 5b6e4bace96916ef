"""Re-record the workflow histories that the replay test checks.

Run `.venv/bin/python -m tests.histories.record [SCENARIO ...]` after a deliberate,
compatible change to workflow code (or when adding a workflow); it runs real campaigns
with the real agents on the time-skipping server and writes one JSON history per
workflow run into this folder. Scenarios: `basic` (approve with a send window and
continue-as-new, reject, expire), `signals` (leads added while drafting, bounces
tripping the circuit breaker, resume), `scheduled` (one firing of a recurring
campaign) and `reviewed` (a draft edited, a lead excluded and included, another
excluded, then approved), `sequence` (two follow-ups, one lead replying after
step 1), `paced_sequence` (follow-ups falling due while a paced step 1 still goes out,
beside it, across continue-as-new; a reply signalled to the delivery run), `local`
(leads of two steps whose cheap store steps are local activities), `budget` (the LLM
test server's priced calls, a spend cap pausing drafting, `resume --budget-usd` finishing
it) and `replies` (after step 1 of two, the reply desk acts on an out-of-office with a
return date, signalled to the delivery run, and on an interested reply, stopped and
answered by the offline writer; the inbox sends that answer) and `senders` (leads spread
over two capped senders, one waiting a day on the schedule for its mailbox); all by default. Re-record
only the scenario you added: the older files are what proves new code still replays runs
of older code. Commit the files: CI replays
them, so a change that would break campaigns already running fails the build. A change
that is *meant* to alter history must be versioned with `workflow.patched(...)`
instead of re-recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from datetime import time, timedelta
from pathlib import Path

from pydantic import SecretStr
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.reply_intents import ReplyIntentAgent
from campaign_core.answers import answer_workflow_id
from campaign_core.ids import (
    campaign_workflow_id,
    delivery_workflow_id,
    lead_workflow_id,
    message_key,
)
from campaign_core.inbound import InboundMessage
from campaign_core.leads import IntakeResult, parse_lead_rows
from campaign_core.models import (
    CampaignInput,
    CampaignStatus,
    DeliveryEventKind,
    DeliveryEventSignal,
    ReplySignal,
    ScheduledCampaignInput,
    Stage,
)
from campaign_core.replies import ReplyDesk
from campaign_core.reply_actions import reply_action_id
from campaign_core.send_window import SendWindow
from campaign_core.senders import SenderRow
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from campaign_core.temporal import test_server_path
from starter.inbox import send_answer
from starter.manager import CampaignManager
from starter.start_options import CampaignOptions, EngineTuning
from tests.fakes.llm_server import LLMTestServer
from worker_main import build_agents, build_workers
from workflows.campaign import CampaignWorkflow
from workflows.scheduled import ScheduledCampaign
from workflows.signals import TemporalCampaignSignals

HERE = Path(__file__).resolve().parent
KB = HERE.parent.parent / "starter" / "demo_data" / "kb"
LEADS = [
    {"email": f"person{i}@example.com", "first_name": f"P{i}", "company": f"Co {i}",
     "title": "CTO", "timezone": "Europe/Berlin" if i % 2 else None}
    for i in range(5)
]


async def wait_stage(client: Client, cid: str, stage: Stage) -> None:
    handle = client.get_workflow_handle(campaign_workflow_id(cid))
    for _ in range(600):
        st = await handle.query("status", result_type=CampaignStatus)
        if st.stage is stage:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{cid} never reached {stage}")


async def save(client: Client, workflow_id: str, name: str, first_run: bool = False) -> None:
    handle = client.get_workflow_handle(workflow_id)
    if first_run:
        info = (await handle.describe()).raw_description.workflow_execution_info
        handle = client.get_workflow_handle(workflow_id, run_id=info.first_run_id)
    history = await handle.fetch_history()
    (HERE / f"{name}.json").write_text(history.to_json())
    print(f"wrote {name}.json ({len(history.events)} events)")


async def main(scenarios: list[str]) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=test_server_path())
    home = Path(tempfile.mkdtemp())
    settings = Settings(CAMPAIGN_HOME=home)
    store = SqliteStore(home / "campaign.db")
    await store.migrate()
    mgr = CampaignManager(settings, client=env.client, store=store, queue_prefix="rec-",
                          use_search_attributes=False)
    now = await env.get_current_time()
    opens = now + timedelta(days=1)
    window = SendWindow(start=time(0), end=time(23, 59),
                        days=[opens.weekday(), (opens.weekday() + 1) % 7], timezone="UTC")
    async with contextlib.AsyncExitStack() as stack:
        for w in build_workers(env.client, store, settings, prefix="rec-"):
            await stack.enter_async_context(w)
        if "basic" in scenarios:
            await basic(env, mgr, window)
        if "signals" in scenarios:
            await signals(env, mgr)
        if "scheduled" in scenarios:
            await scheduled(env, mgr)
        if "reviewed" in scenarios:
            await reviewed(env, mgr)
        if "sequence" in scenarios:
            await sequence(env, mgr)
        if "paced_sequence" in scenarios:
            await paced_sequence(env, mgr)
        if "local" in scenarios:
            await local(env, mgr)
        if "budget" in scenarios:
            await budget(env, settings, store)
        if "replies" in scenarios:
            await replies(env, settings, store)
        if "senders" in scenarios:
            await senders(env, mgr)
    await env.shutdown()


async def budget(env: WorkflowEnvironment, settings: Settings, store: SqliteStore) -> None:
    """Priced LLM calls (the test server) under a cap of about one call: drafting pauses,
    a lead returns `budget`, and a resume with a higher cap drafts the rest."""
    cid = "rec-budget"
    with LLMTestServer() as llm:
        priced = settings.model_copy(update={
            "llm_provider": "openai", "openai_api_key": SecretStr("test-key"),
            "openai_base_url": llm.base_url, "llm_model": "test-model",
            "llm_price_input": 1.0, "llm_price_output": 2.0})
        mgr = CampaignManager(priced, client=env.client, store=store, queue_prefix="recb-",
                              use_search_attributes=False)
        intake = parse_lead_rows(enumerate(LEADS[:3], start=2), cid)
        async with contextlib.AsyncExitStack() as stack:
            for w in build_workers(env.client, store, priced, prefix="recb-"):
                await stack.enter_async_context(w)
            await mgr.start(intake, CampaignOptions(budget_usd=0.006), name="budget", campaign_id=cid)
            for _ in range(600):
                st = await mgr.status(cid)
                if st.paused and (st.paused_reason or "").startswith("budget"):
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the budget did not pause drafting")
            await asyncio.sleep(2)  # the leads in flight finish
            stopped = [lid for lid in await store.list_lead_ids(cid, None, 10)
                       if (await store.get_draft(cid, lid)) is None]
            await mgr.control(cid, "resume", budget_usd=1.0)
            await wait_stage(env.client, cid, Stage.AWAITING_APPROVAL)
            await mgr.reject(cid, by="recorder", reason="recorded")
            await wait_stage(env.client, cid, Stage.REJECTED)
    await save(env.client, campaign_workflow_id(cid), "campaign_budget")
    # The first run of a lead the budget stopped: it ended with status `budget`.
    lead_wf = lead_workflow_id(cid, stopped[0])
    campaign = await env.client.get_workflow_handle(campaign_workflow_id(cid)).fetch_history()
    runs = [e.child_workflow_execution_started_event_attributes.workflow_execution.run_id
            for e in campaign.events if e.HasField("child_workflow_execution_started_event_attributes")
            and e.child_workflow_execution_started_event_attributes.workflow_execution.workflow_id
            == lead_wf]
    history = await env.client.get_workflow_handle(lead_wf, run_id=runs[0]).fetch_history()
    (HERE / "lead_budget.json").write_text(history.to_json())
    print(f"wrote lead_budget.json ({len(history.events)} events)")


async def replies(env: WorkflowEnvironment, settings: Settings, store: SqliteStore) -> None:
    """Two steps an hour apart; after step 1 the real reply desk records an out-of-office
    with a return date (the offline rules read it: the reply action signals the delivery
    run, which moves the step) and an interested reply (the LLM test server reads it: the
    sequence stops and the offline writer drafts an answer); the inbox sends that answer
    over the outbox channel and the campaign completes. The reply-intent agent alone is
    given the LLM, on queues of its own (`recr-`), so the answer is the offline writer's."""
    cid = "rec-replies"
    with LLMTestServer() as llm:
        reading = settings.model_copy(update={
            "llm_provider": "openai", "openai_api_key": SecretStr("test-key"),
            "openai_base_url": llm.base_url, "llm_model": "test-model"})
        agents = build_agents(store, settings)
        agents[ReplyIntentAgent] = ReplyIntentAgent(store, reading)
        mgr = CampaignManager(settings, client=env.client, store=store, queue_prefix="recr-",
                              use_search_attributes=False)
        async with contextlib.AsyncExitStack() as stack:
            for w in build_workers(env.client, store, settings, prefix="recr-", agents=agents):
                await stack.enter_async_context(w)
            intake = parse_lead_rows(enumerate(LEADS[:2], start=2), cid)
            await approved_and_sent(env, mgr, cid, intake, [3600])
            counts = await store.counts(cid)
            assert counts.sent == 2, f"step 1 not sent to both leads: {counts}"
            away, keen = await store.list_lead_ids(cid, None, 10)  # the campaign's salted ids
            desk = ReplyDesk(store, TemporalCampaignSignals(env.client), source="webhook")
            email = {lid: lead.email for lid in (away, keen)
                     if (lead := await store.get_lead(cid, lid)) is not None}

            async def answering(lead_id: str, subject: str, text: str, mid: str) -> str:
                sent = await store.get_delivery(message_key(cid, lead_id))
                assert sent is not None and sent.message_id, f"step 1 to {lead_id} not sent"
                got = await desk.process(InboundMessage.model_validate({
                    "from": email[lead_id], "to": "replies@ours.test", "subject": subject,
                    "message_id": f"<{mid}@mail.example>", "in_reply_to": [sent.message_id],
                    "text": text}))
                reply_id = got.matches[0].reply_id
                result = await env.client.get_workflow_handle(reply_action_id(reply_id)).result()
                print(f"reply {mid}: {result}")
                return reply_id

            back = (await env.get_current_time() + timedelta(days=4)).date()
            ooo = await answering(away, "Automatic reply: hello", (
                f"Thank you for your email. I am out of the office until {back:%d %B %Y} with "
                "limited access to email."), "ooo")
            yes = await answering(keen, "Re: hello", (
                "Sounds good, this could help our finance team."), "yes")
            row = await store.get_reply(ooo)
            assert row is not None and (row.intent, row.action) == ("out_of_office", "moved")
            row = await store.get_reply(yes)
            assert row is not None and (row.intent, row.action) == ("interested", "answer_drafted")
            answer = await store.get_reply_answer(yes)
            assert answer is not None and answer.drafted_by == "offline-answer-v1"
            sent = await send_answer(mgr, yes, by="recorder")
            assert sent.status == "sent", sent
            await env.sleep(timedelta(days=6))
            await wait_stage(env.client, cid, Stage.COMPLETED)
    await save(env.client, reply_action_id(ooo), "reply_action_ooo")
    await save(env.client, reply_action_id(yes), "reply_action_interested")
    await save(env.client, answer_workflow_id(yes), "answer_sent")
    history = await env.client.get_workflow_handle(delivery_workflow_id(cid)).fetch_history()
    assert any(e.workflow_execution_signaled_event_attributes.signal_name == "out_of_office"
               for e in history.events), "the delivery run saved did not get the signal"
    await save(env.client, delivery_workflow_id(cid), "delivery_out_of_office")


async def signals(env: WorkflowEnvironment, mgr: CampaignManager) -> None:
    """Leads added while drafting; bounces trip the breaker; a person resumes."""
    cid = "rec-signals"
    rows = [{"email": f"s{i}@d{i}.example", "company": f"Co {i}"} for i in range(22)]
    await mgr.start(parse_lead_rows(enumerate(rows[:20], start=2), cid), CampaignOptions(send_rate=0.1),
                    name="signals", campaign_id=cid, tuning=EngineTuning(leads_per_run=15, page_size=5))
    await mgr.control(cid, "pause")
    await mgr.add_leads(cid, parse_lead_rows(enumerate(rows[20:], start=2), cid))
    await mgr.control(cid, "resume")
    await wait_stage(env.client, cid, Stage.AWAITING_APPROVAL)
    await mgr.approve(cid, by="recorder")
    await wait_stage(env.client, cid, Stage.DELIVERING)
    while (await mgr.store.counts(cid)).sent < 20:
        await env.sleep(timedelta(seconds=10))
    handle = env.client.get_workflow_handle(campaign_workflow_id(cid))
    for kind in (DeliveryEventKind.BOUNCE, DeliveryEventKind.COMPLAINT, DeliveryEventKind.BOUNCE,
                 DeliveryEventKind.BOUNCE):
        await handle.signal("delivery_event", DeliveryEventSignal(kind=kind))
    for _ in range(600):
        if (await mgr.status(cid)).paused_reason:
            break
        await asyncio.sleep(0.05)
    else:
        raise RuntimeError("the circuit breaker did not trip")
    await mgr.control(cid, "resume")
    await env.sleep(timedelta(minutes=2))
    await wait_stage(env.client, cid, Stage.COMPLETED)
    await save(env.client, campaign_workflow_id(cid), "campaign_added_leads")
    await save(env.client, delivery_workflow_id(cid), "delivery_breaker")


REVIEWED_BODY = ("Hello,\n\nA reviewer rewrote this message by hand, so that it says plainly "
                 "what we offer and why it may help your team this quarter.\n\nBest regards")


async def reviewed(env: WorkflowEnvironment, mgr: CampaignManager) -> None:
    """Edits and exclusions through the campaign's Updates, then approval and delivery."""
    cid = "rec-reviewed"
    intake = parse_lead_rows(enumerate(LEADS[:3], start=2), cid)
    await mgr.start(intake, CampaignOptions(kb=str(KB)), name="reviewed", campaign_id=cid)
    await wait_stage(env.client, cid, Stage.AWAITING_APPROVAL)
    first, second, third = (lead.lead_id for lead in intake.leads)
    await mgr.edit_draft(cid, first, subject="A reviewed note", body=REVIEWED_BODY, by="recorder")
    with contextlib.suppress(Exception):  # refused by a guardrail: recorded as a failed update
        await mgr.edit_draft(cid, first, body=REVIEWED_BODY + " https://evil.example.net",
                             by="recorder")
    await mgr.set_excluded(cid, second, excluded=True, by="recorder")
    await mgr.set_excluded(cid, second, excluded=False, by="recorder")
    await mgr.set_excluded(cid, third, excluded=True, by="recorder")
    await mgr.approve(cid, by="recorder")
    await wait_stage(env.client, cid, Stage.COMPLETED)
    await save(env.client, campaign_workflow_id(cid), "campaign_reviewed")


async def approved_and_sent(env: WorkflowEnvironment, mgr: CampaignManager, cid: str,
                            intake: IntakeResult, follow_ups: list[int]) -> None:
    """Start a sequence of the intake's leads, approve it, wait for every first step."""
    name = cid.removeprefix("rec-")
    await mgr.start(intake, CampaignOptions(kb=str(KB), follow_ups=[f"{s}s" for s in follow_ups]),
                    name=name, campaign_id=cid)
    await wait_stage(env.client, cid, Stage.AWAITING_APPROVAL)
    await mgr.approve(cid, by="recorder")
    await wait_stage(env.client, cid, Stage.DELIVERING)
    for _ in range(600):
        if (await mgr.store.counts(cid)).sent >= len(intake.leads):
            break
        await asyncio.sleep(0.05)


async def sequence(env: WorkflowEnvironment, mgr: CampaignManager) -> None:
    """Three steps an hour apart; one lead replies after step 1, the other gets all three."""
    cid = "rec-sequence"
    intake = parse_lead_rows(enumerate(LEADS[:2], start=2), cid)
    await approved_and_sent(env, mgr, cid, intake, [3600, 3600])
    await env.client.get_workflow_handle(campaign_workflow_id(cid)).signal(
        "reply", ReplySignal(lead_id=intake.leads[0].lead_id, kind="reply", reply_id="r-1"))
    await asyncio.sleep(1)
    await env.sleep(timedelta(hours=3))
    await wait_stage(env.client, cid, Stage.COMPLETED)
    await save(env.client, campaign_workflow_id(cid), "campaign_sequence")
    await save(env.client, lead_workflow_id(cid, intake.leads[0].lead_id), "lead_sequence")
    await save(env.client, delivery_workflow_id(cid), "delivery_sequence")


async def senders(env: WorkflowEnvironment, mgr: CampaignManager) -> None:
    """Issue 28: four leads of one step spread over two outbox senders capped at 1 and 2 a
    day: three go out on the first day, the fourth waits on the schedule for its mailbox
    and goes the next day; a `senders_changed` signal (a sender resumed) wakes the run."""
    cid = "rec-senders"
    for name, cap in (("rec-a", 1), ("rec-b", 2)):
        await mgr.store.add_sender(SenderRow(
            name=name, from_addr=f"{name} <{name}@senders.example>", transport="outbox",
            daily_cap=cap, hourly_cap=cap, min_gap_seconds=0,
            created_at=await env.get_current_time()))
    intake = parse_lead_rows(enumerate(LEADS[:4], start=2), cid)
    await mgr.start(intake, CampaignOptions(kb=str(KB), senders=["rec-a", "rec-b"]),
                    name="senders", campaign_id=cid)
    await wait_stage(env.client, cid, Stage.AWAITING_APPROVAL)
    await mgr.approve(cid, by="recorder")
    await wait_stage(env.client, cid, Stage.DELIVERING)
    for _ in range(600):
        if (await mgr.store.counts(cid)).sent >= 3:
            break
        await asyncio.sleep(0.05)
    await env.client.get_workflow_handle(campaign_workflow_id(cid)).signal(
        CampaignWorkflow.senders_changed)
    await asyncio.sleep(1)
    await env.sleep(timedelta(days=1, hours=1))
    await wait_stage(env.client, cid, Stage.COMPLETED)
    await save(env.client, campaign_workflow_id(cid), "campaign_senders")
    await save(env.client, delivery_workflow_id(cid), "delivery_senders")


async def local(env: WorkflowEnvironment, mgr: CampaignManager) -> None:
    """Two leads of two steps after the `local-store-steps` patch: the cheap store steps
    are local activities (marker events) in the campaign and the leads; both steps sent."""
    cid = "rec-local"
    intake = parse_lead_rows(enumerate(LEADS[:2], start=2), cid)
    await approved_and_sent(env, mgr, cid, intake, [3600])
    await env.sleep(timedelta(hours=2))
    await wait_stage(env.client, cid, Stage.COMPLETED)
    lead_id = (await mgr.store.list_lead_ids(cid, None, 10))[0]  # the campaign's salted ids
    await save(env.client, campaign_workflow_id(cid), "campaign_local_store")
    await save(env.client, lead_workflow_id(cid, lead_id), "lead_local_store")


async def paced_sequence(env: WorkflowEnvironment, mgr: CampaignManager) -> None:
    """Step 1 paced at one send per 10 minutes to four leads, follow-ups 25 minutes apart:
    the first lead's step 2 goes out before the last step 1, and the fifth send of the run
    hands off to continue-as-new with both loops running; the last lead replies, signalled
    to the delivery run."""
    cid = "rec-paced"
    intake = parse_lead_rows(enumerate(LEADS[:4], start=2), cid)
    await mgr.start(intake, CampaignOptions(follow_ups=["25m", "25m"], send_rate=1 / 600), name="paced",
                    campaign_id=cid, tuning=EngineTuning(leads_per_run=5, page_size=2))
    await wait_stage(env.client, cid, Stage.AWAITING_APPROVAL)
    await mgr.approve(cid, by="recorder")
    await wait_stage(env.client, cid, Stage.DELIVERING)
    for _ in range(600):
        if (await mgr.store.counts(cid)).sent >= 1:
            break
        await asyncio.sleep(0.05)
    await TemporalCampaignSignals(env.client).reply(cid, ReplySignal(
        lead_id=sorted(lead.lead_id for lead in intake.leads)[-1], kind="reply", reply_id="r-1"))
    await asyncio.sleep(1)
    await env.sleep(timedelta(hours=3))
    await wait_stage(env.client, cid, Stage.COMPLETED)
    await save(env.client, campaign_workflow_id(cid), "campaign_paced_sequence")
    await save(env.client, delivery_workflow_id(cid), "delivery_paced_first_run", True)
    await save(env.client, delivery_workflow_id(cid), "delivery_paced_sequence")


async def scheduled(env: WorkflowEnvironment, mgr: CampaignManager) -> None:
    """One firing of a recurring campaign, started directly (the time-skipping server has
    no Schedules; the firing falls back to its start time for the campaign's name)."""
    template = "rec-template"
    await mgr.store.upsert_campaign(campaign_id=template, name="weekly", brief="Hello.",
                                    channel="outbox", kb_dir=str(KB), workflow_id="template")
    await mgr.store.upsert_leads(template, parse_lead_rows(enumerate(LEADS[:2], start=2),
                                                           template).leads)
    run = await env.client.execute_workflow(
        ScheduledCampaign.run,
        ScheduledCampaignInput(schedule="weekly", template_id=template, campaign=CampaignInput(
            campaign_id=template, name="weekly", queue_prefix="rec-",
            use_search_attributes=False)),
        id="scheduled-campaign:weekly-rec", task_queue="rec-workflows")
    await wait_stage(env.client, run.campaign_id, Stage.AWAITING_APPROVAL)
    await mgr.reject(run.campaign_id, by="recorder", reason="recorded")
    await wait_stage(env.client, run.campaign_id, Stage.REJECTED)
    await save(env.client, "scheduled-campaign:weekly-rec", "scheduled_firing")


async def basic(env: WorkflowEnvironment, mgr: CampaignManager, window: SendWindow) -> None:
    """Approved (send window, small pages, continue-as-new), rejected, expired."""
    # Approved, with a send window, small pages and continue-as-new.
    intake = parse_lead_rows(enumerate(LEADS, start=2), "rec-approve")
    await mgr.start(intake, CampaignOptions(kb=str(KB), send_window=window.spec()), name="approve",
                    campaign_id="rec-approve", tuning=EngineTuning(leads_per_run=2, page_size=2))
    await wait_stage(env.client, "rec-approve", Stage.AWAITING_APPROVAL)
    await mgr.approve("rec-approve", by="recorder", note="recorded")
    await wait_stage(env.client, "rec-approve", Stage.DELIVERING)
    await env.sleep(timedelta(days=1, hours=1))
    await wait_stage(env.client, "rec-approve", Stage.COMPLETED)
    lead_id = intake.leads[0].lead_id
    await save(env.client, campaign_workflow_id("rec-approve"), "campaign_first_run", True)
    await save(env.client, campaign_workflow_id("rec-approve"), "campaign_approved")
    await save(env.client, lead_workflow_id("rec-approve", lead_id), "lead_drafted")
    await save(env.client, delivery_workflow_id("rec-approve"), "delivery_first_run", True)
    await save(env.client, delivery_workflow_id("rec-approve"), "delivery_windowed")
    # Rejected.
    intake = parse_lead_rows(enumerate(LEADS[:2], start=2), "rec-reject")
    await mgr.start(intake, CampaignOptions(kb=str(KB)), name="reject", campaign_id="rec-reject")
    await wait_stage(env.client, "rec-reject", Stage.AWAITING_APPROVAL)
    await mgr.reject("rec-reject", by="recorder", reason="recorded")
    await wait_stage(env.client, "rec-reject", Stage.REJECTED)
    await save(env.client, campaign_workflow_id("rec-reject"), "campaign_rejected")
    # Expired.
    intake = parse_lead_rows(enumerate(LEADS[:1], start=2), "rec-expire")
    await mgr.start(intake, CampaignOptions(approval_timeout="1h"), name="expire", campaign_id="rec-expire")
    await wait_stage(env.client, "rec-expire", Stage.AWAITING_APPROVAL)
    await env.sleep(timedelta(hours=2))
    await wait_stage(env.client, "rec-expire", Stage.EXPIRED)
    await save(env.client, campaign_workflow_id("rec-expire"), "campaign_expired")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or ["basic", "signals", "scheduled", "reviewed", "sequence",
                                              "paced_sequence", "local", "budget", "replies",
                                              "senders"]))
