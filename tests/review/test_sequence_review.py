"""A whole sequence through the human loop, with the real agents on the time-skipping server
(issue 24, items 2, 4, 5 and 7, and the rule that no campaign ends with a row `pending`).

Which step fails is chosen by a thin wrapper around the real copywriter: it writes the
real draft, then marks the chosen (lead, step) as failed its checks, exactly as the writer
records a guardrail failure (the text kept, with its reason), so everything after the writer
(storing, holding, approving, editing, sending, reporting) is the real code.
"""

from __future__ import annotations

import email
import os
from datetime import timedelta
from email import policy
from typing import Any

import pytest
from temporalio import activity

from activities.copywriter import CopywriterAgent
from campaign_core.envelope import Envelope, EnvelopeRef, Record
from campaign_core.ids import message_key
from campaign_core.leads import parse_lead_rows
from campaign_core.models import LeadInput, Stage
from campaign_core.settings import Settings
from campaign_core.store.base import Store
from campaign_core.store.outcomes import TERMINAL
from starter.manager import CampaignManager, Conflict
from starter.start_options import CampaignOptions
from tests.cli.test_cli_e2e import cli
from tests.conftest import KB
from tests.workflows.test_campaign_workflow import outbox, wait_stage
from tests.workflows.test_orchestration import finish

DAY = timedelta(days=1)
FAILED = "guardrail (step {step}): a claim cites no passage"

LEADS = [
    {"email": "ana@northwind.example", "first_name": "Ana", "company": "Northwind Freight",
     "title": "VP Operations"},
    {"email": "bo@ledgerly.example", "first_name": "Bo", "company": "Ledgerly", "title": "CTO"},
    {"email": "cy@carely.example", "first_name": "Cy", "company": "Carely",
     "title": "Head of Growth"},
    {"email": "di@brightpath.example", "first_name": "Di", "company": "BrightPath Logistics",
     "title": "COO"},
    {"email": "ed@relay.example", "first_name": "Ed", "company": "Relay Health",
     "title": "Director of Sales"},
]


def failing_writer(store: Store, settings: Settings, fail: set[tuple[str, int]],
                   reason: str = FAILED) -> Any:
    """The real `write_draft`, with the drafts of `fail` ((email, step)) marked failed with
    `reason` (`{step}` filled in)."""
    real = CopywriterAgent(store, settings)

    @activity.defn(name="write_draft")
    async def write_draft(inp: LeadInput) -> EnvelopeRef:
        ref = await real.write_draft(inp)
        lead = await store.get_lead(inp.campaign_id, inp.lead_id)
        assert lead is not None
        if (lead.email, inp.step) not in fail:
            return ref
        env = await store.get_envelope(ref.envelope_id)
        assert env is not None
        records = [Record.model_validate({**r.model_dump(), "data": {
            **r.data, "failed_reason": reason.format(step=inp.step), "guardrails": "failed"}})
            for r in env.records]
        failed = Envelope(metadata=env.metadata.model_copy(update={"run_id": "failing"}),
                          records=records)
        return await real.keep(failed, inp.lead_id, "draft failed its checks")

    return write_draft


async def started(env: Any, settings: Settings, store: Store, prefix: str, cid: str,
                  **kw: Any) -> tuple[CampaignManager, dict[str, str]]:
    """A 3-step campaign (follow-ups a day apart) awaiting approval; lead ids by email."""
    mgr = CampaignManager(settings, client=env.client, store=store, queue_prefix=prefix,
                          use_search_attributes=False)
    intake = parse_lead_rows(enumerate(LEADS, start=2), cid)
    await mgr.start(intake,
                    CampaignOptions(brief="Book a 20-minute call.", kb=str(KB),
                                    follow_ups=["1d"] * 2, **kw),
                    name=cid, campaign_id=cid)
    await wait_stage(env, cid, Stage.AWAITING_APPROVAL)
    keyed = await mgr._keyed(cid, intake)
    return mgr, {lead.email: lead.lead_id for lead in keyed}


def sent_keys(settings: Settings) -> set[str]:
    return {p.stem for p in outbox(settings)}


def keys(cid: str, lead_id: str, *steps: int) -> set[str]:
    return {message_key(cid, lead_id, s) for s in steps}


async def assert_settled(mgr: CampaignManager, cid: str) -> dict[tuple[str, int], Any]:
    """Every row has a final outcome, a failed one its error, and `status` tallies the
    report: one place computes both."""
    report = await mgr.report(cid)
    assert all(r.delivery_status in TERMINAL for r in report), [
        (r.email, r.step, r.delivery_status) for r in report]
    assert all(r.error for r in report if r.delivery_status == "failed")
    counts = (await mgr.status(cid)).counts
    tally = {s: sum(r.delivery_status == s for r in report) for s in TERMINAL | {"pending"}}
    assert (counts.sent, counts.suppressed, counts.send_failed, counts.stopped,
            counts.excluded, counts.pending, counts.messages) == (
        tally["sent"], tally["suppressed"], tally["failed"], tally["stopped"],
        tally["excluded"], 0, len(report))
    assert counts.not_approved == tally["not_approved"] + tally["rejected"]
    return {(r.email, r.step): r for r in report}


async def test_a_campaign_whose_leads_all_failed_sends_nothing(
        ts_env, settings, store, prefix, run_workers):
    """Item 2: every lead has a failed step 3: the campaign approval approves none of them,
    nothing is sent, and every row ends `not_approved` with the reason."""
    fail = {(lead["email"], 3) for lead in LEADS}
    async with run_workers(ts_env.client,
                           overrides={"write_draft": failing_writer(store, settings, fail)}):
        mgr, ids = await started(ts_env, settings, store, prefix, "c-allfail")
        before = (await mgr.status("c-allfail")).counts
        assert (before.drafted, before.draft_failed, before.held) == (0, 5, 5)
        assert sorted(await mgr.held_leads("c-allfail")) == sorted(ids.values())
        assert await mgr.approve("c-allfail", by="tester") == 0
        final = await finish(ts_env, "c-allfail", DAY)
    assert final.stage is Stage.COMPLETED
    assert outbox(settings) == []
    rows = await assert_settled(mgr, "c-allfail")
    assert {r.delivery_status for r in rows.values()} == {"not_approved"}
    assert rows[("ana@northwind.example", 1)].error == "a step failed (step 3)"
    assert rows[("ana@northwind.example", 3)].error == FAILED.format(step=3)


async def test_held_fixed_passing_excluded_and_the_subject_sent(
        ts_env, settings, store, prefix, run_workers):
    """Items 2, 4, 5: Ana's failed step 2 is fixed by an edit and she is sent like anyone;
    Bo's failed step 3 is approved by selection with "send the passing steps" (1 and 2 go,
    step 3 ends `failed` with its reason); Cy stays held; Di is excluded (every step); Ed's
    step 1 subject is edited and his follow-ups go out as `Re:` that subject."""
    cid = "c-loop"
    fail = {("ana@northwind.example", 2), ("bo@ledgerly.example", 3), ("cy@carely.example", 2)}
    async with run_workers(ts_env.client,
                           overrides={"write_draft": failing_writer(store, settings, fail)}):
        mgr, ids = await started(ts_env, settings, store, prefix, cid)
        ana, bo, cy, di, ed = (ids[lead["email"]] for lead in LEADS)
        assert (await mgr.status(cid)).counts.held == 3
        # Ana: the failed step's own text, fixed by an edit, makes her an ordinary lead.
        step_2 = await store.get_draft(cid, ana, 2)
        assert step_2 is not None and step_2.failed_reason == FAILED.format(step=2)
        await mgr.edit_draft(cid, ana, step=2, body=step_2.body + "\n", by="rita")
        fixed = await store.get_draft(cid, ana, 2)
        assert fixed is not None and fixed.failed_reason is None
        counts = (await mgr.status(cid)).counts
        assert (counts.drafted, counts.draft_failed, counts.held) == (3, 2, 2)  # Ana drafted
        # Bo: by selection, sending the passing steps; Cy: by selection without it stays held.
        await mgr.approve_leads(cid, [bo], by="rita", send_passing=True)
        await mgr.approve_leads(cid, [cy], by="rita")
        assert await mgr.held_leads(cid) == [cy]
        # Di: "Exclude lead" leaves out every step.
        await mgr.set_excluded(cid, di, excluded=True, by="rita")
        assert [d.excluded for d in await store.list_lead_drafts(cid, di)] == [True] * 3
        # Ed: a new subject for step 1, written after his follow-ups were.
        await mgr.edit_draft(cid, ed, step=1, subject="Shipment exceptions at Relay", by="rita")
        assert await mgr.approve(cid, by="tester") == 3  # Ana, Bo, Ed
        final = await finish(ts_env, cid, DAY)
    assert final.stage is Stage.COMPLETED
    assert sent_keys(settings) == (keys(cid, ana, 1, 2, 3) | keys(cid, bo, 1, 2)
                                   | keys(cid, ed, 1, 2, 3))
    rows = await assert_settled(mgr, cid)
    assert [rows[("bo@ledgerly.example", s)].delivery_status for s in (1, 2, 3)] == [
        "sent", "sent", "failed"]
    assert rows[("bo@ledgerly.example", 3)].error == FAILED.format(step=3)
    assert {rows[("cy@carely.example", s)].delivery_status for s in (1, 2, 3)} == {"not_approved"}
    assert {rows[("di@brightpath.example", s)].delivery_status for s in (1, 2, 3)} == {"excluded"}
    subjects = {}
    for path in outbox(settings):
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        subjects[path.stem] = str(msg["Subject"])
    assert subjects[message_key(cid, ed, 1)] == "Shipment exceptions at Relay"
    assert subjects[message_key(cid, ed, 2)] == "Re: Shipment exceptions at Relay"
    assert subjects[message_key(cid, ed, 3)] == "Re: Shipment exceptions at Relay"


async def test_excluding_step_1_alone_stops_the_follow_ups(
        ts_env, settings, store, prefix, run_workers):
    """Item 4: excluding one step is its own action; with step 1 left out the follow-ups
    have nothing to follow: they end `stopped`, never `pending`, and nothing is sent."""
    cid = "c-step1"
    async with run_workers(ts_env.client):
        mgr, ids = await started(ts_env, settings, store, prefix, cid)
        ana = ids["ana@northwind.example"]
        await mgr.set_excluded(cid, ana, excluded=True, step=1, by="rita")
        assert [d.excluded for d in await store.list_lead_drafts(cid, ana)] == [True, False, False]
        await mgr.approve(cid, by="tester")
        await finish(ts_env, cid, DAY)
    assert not any(k in sent_keys(settings) for k in keys(cid, ana, 1, 2, 3))
    rows = await assert_settled(mgr, cid)
    assert [rows[("ana@northwind.example", s)].delivery_status for s in (1, 2, 3)] == [
        "excluded", "stopped", "stopped"]
    assert rows[("ana@northwind.example", 2)].stop_reason == "step 1 not sent"
    assert len(sent_keys(settings)) == 12  # the four others, three steps each


async def test_expired_and_rejected_campaigns_settle_every_row(
        ts_env, settings, store, prefix, run_workers):
    """An expired campaign's rows end `not_approved`, a rejected one's `rejected`."""
    async with run_workers(ts_env.client):
        mgr, _ = await started(ts_env, settings, store, prefix, "c-exp", approval_timeout="1m")
        await ts_env.sleep(timedelta(minutes=2))
        expired = await finish(ts_env, "c-exp", DAY)
        mgr, _ = await started(ts_env, settings, store, prefix, "c-rej")
        await mgr.reject("c-rej", by="tester", reason="off-brand")
        rejected = await finish(ts_env, "c-rej", DAY)
    assert (expired.stage, rejected.stage) == (Stage.EXPIRED, Stage.REJECTED)
    assert {r.delivery_status for r in (await assert_settled(mgr, "c-exp")).values()} == {
        "not_approved"}
    assert {r.delivery_status for r in (await assert_settled(mgr, "c-rej")).values()} == {
        "rejected"}
    assert outbox(settings) == []


async def test_the_cli_approval_names_the_held_leads(
        ts_env, settings, store, prefix, run_workers, home):
    """`campaign approve` says which leads it holds back; --send-passing needs --lead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "CAMPAIGN_"))}
    env.update({"TEMPORAL_ADDRESS": ts_env.client.service_client.config.target_host,
                "CAMPAIGN_HOME": str(home), "CAMPAIGN_TASK_QUEUE_PREFIX": prefix,
                "NO_COLOR": "1", "COLUMNS": "400"})
    fail = {("ana@northwind.example", 3)}
    async with run_workers(ts_env.client,
                           overrides={"write_draft": failing_writer(store, settings, fail)}):
        mgr, ids = await started(ts_env, settings, store, prefix, "c-cli")
        code, _, err = await cli(env, "approve", "c-cli", "--send-passing")
        assert code == 2 and "--lead" in err, err
        code, _, err = await cli(env, "approve", "c-cli", "--by", "rita")
        assert code == 0, err
        assert "Approved 4 lead(s) of c-cli" in err, err
        assert "Held, not sent (1 lead(s) with a failed step)" in err, err
        assert ids["ana@northwind.example"] in err, err
        await finish(ts_env, "c-cli", DAY)
    rows = await assert_settled(mgr, "c-cli")
    assert {rows[("ana@northwind.example", s)].delivery_status for s in (1, 2, 3)} == {
        "not_approved"}


async def test_an_update_racing_the_campaigns_end_is_a_conflict(
        ts_env, settings, store, prefix, run_workers, monkeypatch):
    """An exclusion checked while the campaign still ran, arriving once it has closed, is a
    Conflict (HTTP 409, exit 2), not the server's raw 'update not found' (a 500): a small
    campaign can finish delivering in between (seen once in a clean-clone run)."""
    async with run_workers(ts_env.client):
        mgr, ids = await started(ts_env, settings, store, prefix, "c-race")
        await mgr.approve("c-race", by="tester")
        await finish(ts_env, "c-race", DAY)

    async def still_running(campaign_id: str, action: str) -> Any:
        return await mgr._handle(campaign_id)  # as if the run had not closed yet

    monkeypatch.setattr(mgr, "_running_handle", still_running)
    with pytest.raises(Conflict, match="completed"):
        await mgr.set_excluded("c-race", ids["ana@northwind.example"], excluded=True, by="rita")
