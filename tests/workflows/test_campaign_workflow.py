"""The campaign workflow on the time-skipping server, with the real agents.

Checks the approval gate: nothing in the outbox before a decision, one message per
approved lead after approval, nothing at all after rejection or on timeout.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from campaign_core.envelope import EnvelopeRef
from campaign_core.ids import campaign_workflow_id
from campaign_core.leads import parse_lead_rows
from campaign_core.models import CampaignStatus, LeadInput, Stage
from starter.manager import CampaignManager
from starter.start_options import CampaignOptions
from tests.conftest import KB

LEADS = [
    {"email": "ana@example.com", "first_name": "Ana", "company": "Northwind Freight",
     "title": "VP Operations"},
    {"email": "bo@example.org", "first_name": "Bo", "company": "Ledgerly", "title": "CTO"},
    {"email": "cy@example.net", "first_name": "Cy", "company": "Carely", "title": "Head of Growth"},
]


async def start(env: WorkflowEnvironment, settings, store, prefix: str, cid: str,
                timeout_s: int = 3600, leads=LEADS) -> CampaignManager:
    mgr = CampaignManager(settings, client=env.client, store=store, queue_prefix=prefix,
                          use_search_attributes=False)
    intake = parse_lead_rows(enumerate(leads, start=2), cid)
    await mgr.start(intake,
                    CampaignOptions(brief="Book a 20-minute call.", kb=str(KB),
                                    approval_timeout=f"{timeout_s}s"),
                    name="test", campaign_id=cid)
    return mgr


async def wait_stage(env: WorkflowEnvironment, cid: str, stage: Stage) -> CampaignStatus:
    handle = env.client.get_workflow_handle(campaign_workflow_id(cid))
    for _ in range(400):
        st: CampaignStatus = await handle.query("status", result_type=CampaignStatus)
        if st.stage is stage:
            return st
        await asyncio.sleep(0.05)
    raise AssertionError(f"{cid} never reached {stage}: last {st}")


def result_handle(env: WorkflowEnvironment, cid: str):
    return env.client.get_workflow_handle(campaign_workflow_id(cid), result_type=CampaignStatus)


def outbox(settings) -> list[Path]:
    return sorted(settings.outbox_dir.glob("*.eml")) if settings.outbox_dir.exists() else []


async def test_approve_delivers_one_message_per_lead(ts_env, settings, store, prefix, run_workers):
    async with run_workers(ts_env.client):
        mgr = await start(ts_env, settings, store, prefix, "c-approve")
        st = await wait_stage(ts_env, "c-approve", Stage.AWAITING_APPROVAL)
        assert st.counts.leads == 3 and st.counts.drafted == 3
        assert outbox(settings) == [], "nothing may be sent before approval"
        drafts = await mgr.drafts("c-approve")
        assert {d.email for d in drafts} == {lead["email"] for lead in LEADS}
        assert all(d.citations for d in drafts), "offline drafts cite the knowledge base"
        await mgr.approve("c-approve", by="tester", note="ok")
        handle = result_handle(ts_env, "c-approve")
        final = await handle.result()
    assert final.stage is Stage.COMPLETED
    assert final.counts.sent == 3
    files = outbox(settings)
    assert len(files) == 3
    text = files[0].read_text()
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in text
    report = await mgr.report("c-approve")
    assert {r.delivery_status for r in report} == {"sent"}
    assert all(r.message_id for r in report)
    decisions = [a for a in await store.audit("c-approve") if a.agent.endswith("record_decision")]
    assert decisions[0].envelope["records"][0]["data"]["by"] == "tester"


async def test_approve_subset_sends_only_those(ts_env, settings, store, prefix, run_workers):
    async with run_workers(ts_env.client):
        mgr = await start(ts_env, settings, store, prefix, "c-subset")
        await wait_stage(ts_env, "c-subset", Stage.AWAITING_APPROVAL)
        drafts = await mgr.drafts("c-subset")
        chosen = drafts[0].lead_id
        await mgr.approve("c-subset", lead_ids=[chosen], by="tester")
        handle = result_handle(ts_env, "c-subset")
        final = await handle.result()
    assert final.counts.sent == 1 and final.counts.approved == 1
    report = {r.lead_id: r.delivery_status for r in await mgr.report("c-subset")}
    assert report.pop(chosen) == "sent"
    assert set(report.values()) == {"not_approved"}
    assert len(outbox(settings)) == 1


async def test_reject_sends_nothing(ts_env, settings, store, prefix, run_workers):
    async with run_workers(ts_env.client):
        mgr = await start(ts_env, settings, store, prefix, "c-reject")
        await wait_stage(ts_env, "c-reject", Stage.AWAITING_APPROVAL)
        await mgr.reject("c-reject", by="tester", reason="tone is off")
        handle = result_handle(ts_env, "c-reject")
        final = await handle.result()
    assert final.stage is Stage.REJECTED
    assert outbox(settings) == []
    assert {r.delivery_status for r in await mgr.report("c-reject")} == {"rejected"}
    assert (await mgr.status("c-reject")).stage is Stage.REJECTED


async def test_no_decision_expires_and_sends_nothing(ts_env, settings, store, prefix, run_workers):
    async with run_workers(ts_env.client):
        await start(ts_env, settings, store, prefix, "c-expire", timeout_s=72 * 3600)
        await wait_stage(ts_env, "c-expire", Stage.AWAITING_APPROVAL)
        await ts_env.sleep(timedelta(hours=71))  # skipped, not waited
        await wait_stage(ts_env, "c-expire", Stage.AWAITING_APPROVAL)
        await ts_env.sleep(timedelta(hours=1, minutes=1))
        handle = ts_env.client.get_workflow_handle(
            campaign_workflow_id("c-expire"), result_type=CampaignStatus)
        final = await handle.result()
    assert final.stage is Stage.EXPIRED
    assert outbox(settings) == []


async def test_failed_lead_does_not_fail_campaign(ts_env, settings, store, prefix, run_workers):
    from activities.copywriter import CopywriterAgent

    real = CopywriterAgent(store, settings)
    bad_lead: list[str] = []

    @activity.defn(name="write_draft")
    async def flaky_writer(inp: LeadInput) -> EnvelopeRef:
        lead = await store.get_lead(inp.campaign_id, inp.lead_id)
        assert lead is not None
        if lead.email.startswith("bo@"):
            bad_lead.append(inp.lead_id)
            raise ApplicationError("model refused the request", type="InvalidInput",
                                   non_retryable=True)
        return await real.write_draft(inp)

    async with run_workers(ts_env.client, overrides={"write_draft": flaky_writer}):
        mgr = await start(ts_env, settings, store, prefix, "c-fail")
        st = await wait_stage(ts_env, "c-fail", Stage.AWAITING_APPROVAL)
        assert (st.counts.drafted, st.counts.draft_failed) == (2, 1)
        await mgr.approve("c-fail", by="tester")
        handle = result_handle(ts_env, "c-fail")
        final = await handle.result()
    assert final.stage is Stage.COMPLETED and final.counts.sent == 2
    rows = {r.lead_id: r for r in await mgr.report("c-fail")}
    assert rows[bad_lead[0]].draft_status == "failed"
    assert "model refused" in (rows[bad_lead[0]].error or "")


@pytest.mark.parametrize("when", ["drafting-unknown-lead"])
async def test_approve_unknown_lead_is_bad_input(ts_env, settings, store, prefix, run_workers, when):
    from starter.manager import BadInput

    async with run_workers(ts_env.client):
        mgr = await start(ts_env, settings, store, prefix, "c-unknown")
        await wait_stage(ts_env, "c-unknown", Stage.AWAITING_APPROVAL)
        with pytest.raises(BadInput, match="ld_nope"):
            await mgr.approve("c-unknown", lead_ids=["ld_nope"], by="tester")
        await mgr.reject("c-unknown", by="tester")
        await ts_env.client.get_workflow_handle(campaign_workflow_id("c-unknown")).result()
