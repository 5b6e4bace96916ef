"""Reviewers' edits and exclusions on the time-skipping server, with the real agents and store.

An edit makes a new version (the old one kept, the diff in the audit trail) and is what
gets delivered; a guardrail or the campaign's state refuses an edit with the reason and
changes nothing; an excluded lead is not approved, so not sent.
"""

from __future__ import annotations

import asyncio
from datetime import time, timedelta

import pytest
from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError

from activities.store_agent import StoreAgent
from campaign_core.ids import campaign_workflow_id
from campaign_core.leads import parse_lead_rows
from campaign_core.models import Stage
from campaign_core.review import DraftEditRef, DraftVersionRef
from campaign_core.send_window import SendWindow
from starter.manager import BadInput, CampaignManager, Conflict, NotFound
from starter.start_options import CampaignOptions
from tests.conftest import KB
from tests.workflows.test_campaign_workflow import LEADS, outbox, result_handle, start, wait_stage
from tests.workflows.test_orchestration import finish

NEW_BODY = ("Hi Ana,\n\nI rewrote this note by hand: our freight planning checks catch late "
            "loads before your customers notice them, and the first month is on us.\n\n"
            "Best regards")


async def test_edit_exclude_and_approve_deliver_exactly_what_was_decided(
        ts_env, settings, store, prefix, run_workers):
    async with run_workers(ts_env.client):
        mgr = await start(ts_env, settings, store, prefix, "c-edit")
        await wait_stage(ts_env, "c-edit", Stage.AWAITING_APPROVAL)
        drafts = {d.email: d for d in await mgr.drafts("c-edit")}
        ana, bo = drafts["ana@example.com"], drafts["bo@example.org"]
        assert (ana.step, ana.version, ana.edited_by, ana.excluded) == (1, 1, None, False)

        edited = await mgr.edit_draft("c-edit", ana.lead_id, body=NEW_BODY, by="rita",
                                      subject="A hand-written idea", base_version=1)
        assert (edited.version, edited.edited_by) == (2, "rita")
        assert edited.body == NEW_BODY and edited.subject == "A hand-written idea"

        with pytest.raises(Conflict, match="version 2"):
            await mgr.edit_draft("c-edit", ana.lead_id, body=NEW_BODY + " x", by="sam",
                                 base_version=1)
        with pytest.raises(BadInput, match="link") as refused:
            await mgr.edit_draft("c-edit", ana.lead_id, by="sam",
                                 body=NEW_BODY + "\nSee https://evil.example.net/offer")
        assert not isinstance(refused.value, Conflict)
        with pytest.raises(NotFound):
            await mgr.edit_draft("c-edit", "lead_nope", body=NEW_BODY, by="sam")
        current = await store.get_draft("c-edit", ana.lead_id)
        assert current is not None and current.version == 2 and current.body == NEW_BODY

        excluded = await mgr.set_excluded("c-edit", bo.lead_id, excluded=True, by="rita")
        assert excluded.excluded
        approved = await mgr.approve("c-edit", by="rita")
        assert approved == 2
        with pytest.raises(Conflict, match="decided"):
            await mgr.edit_draft("c-edit", ana.lead_id, body=NEW_BODY, by="sam")
        final = await result_handle(ts_env, "c-edit").result()
    assert final.stage is Stage.COMPLETED and final.counts.sent == 2
    files = outbox(settings)
    texts = [f.read_text() for f in files]
    assert len(files) == 2
    assert not any("bo@example.org" in t for t in texts)
    ana_text = next(t for t in texts if "ana@example.com" in t)
    assert "I rewrote this note by hand" in ana_text and "A hand-written idea" in ana_text
    row = await store.get_draft("c-edit", ana.lead_id)
    assert row is not None and row.approved_version == 2
    v1 = await store.get_draft_version("c-edit", ana.lead_id, 1, 1)
    assert v1 is not None and v1.body == ana.body
    versions = await store.list_draft_versions("c-edit", ana.lead_id)
    assert [v.status for v in versions if v.status != "pending"].count("refused") == 2
    trail = await store.audit("c-edit", ana.lead_id)
    edits = [r for e in trail for r in e.envelope["records"] if r["kind"] == "draft_edit"]
    assert len(edits) == 1 and edits[0]["data"]["by"] == "rita"
    assert "+I rewrote this note by hand" in edits[0]["data"]["diff"]
    report = {r.email: r.delivery_status for r in await mgr.report("c-edit")}
    assert report["bo@example.org"] == "excluded"  # every step of an excluded lead


async def test_edit_while_drafting_is_refused(ts_env, settings, store, prefix, run_workers):
    mgr = await start(ts_env, settings, store, prefix, "c-early")
    await mgr.control("c-early", "pause")  # before any worker: it stays drafting
    lead_id = (await store.list_lead_ids("c-early", None, 10))[0]
    await store.upsert_draft(campaign_id="c-early", lead_id=lead_id, step=1, subject="s",
                             body="b", citations=[], provenance={}, envelope_id="e")
    async with run_workers(ts_env.client):
        with pytest.raises(Conflict, match="awaiting_approval"):
            await mgr.edit_draft("c-early", lead_id, body=NEW_BODY, by="rita")
        with pytest.raises(Conflict, match="awaiting_approval"):
            await mgr.set_excluded("c-early", lead_id, excluded=True, by="rita")
        handle = ts_env.client.get_workflow_handle(campaign_workflow_id("c-early"))
        with pytest.raises(WorkflowUpdateFailedError) as other:  # another campaign's edit
            await handle.execute_update("edit_draft", DraftEditRef(
                campaign_id="c-other", edit_id="e-other", lead_id=lead_id))
        assert "not 'c-other'" in str(other.value.cause)
        draft = await store.get_draft("c-early", lead_id)
        assert draft is not None and (draft.version, draft.body, draft.excluded) == (1, "b", False)
        await mgr.control("c-early", "cancel")


async def test_delivery_sends_the_approved_version_whatever_the_draft_became(
        ts_env, settings, store, prefix, run_workers):
    """A change to the draft row after approval (by any path) is not what is sent."""
    cid = "c-frozen"
    mgr = CampaignManager(settings, client=ts_env.client, store=store, queue_prefix=prefix,
                          use_search_attributes=False)
    opens = await ts_env.get_current_time() + timedelta(days=1)
    window = SendWindow(start=time(0), end=time(23, 59), days=[opens.weekday()], timezone="UTC")
    intake = parse_lead_rows(enumerate(LEADS[:1], start=2), cid)
    async with run_workers(ts_env.client):
        await mgr.start(intake, CampaignOptions(brief="Book a call.", kb=str(KB), send_window=window.spec()),
                        name="frozen", campaign_id=cid)
        await wait_stage(ts_env, cid, Stage.AWAITING_APPROVAL)
        (lead_id,) = [d.lead_id for d in await store.list_drafts(cid)]  # ids are salted at start
        await mgr.edit_draft(cid, lead_id, body=NEW_BODY, by="rita")
        assert await mgr.approve(cid, by="rita") == 1
        await wait_stage(ts_env, cid, Stage.DELIVERING)
        await store.add_draft_edit(edit_id="behind-the-back", campaign_id=cid, lead_id=lead_id,
                                   step=1, subject=None, body="Tampered " + NEW_BODY,
                                   base_version=None, by="mallory")
        tampered = await store.apply_draft_edit("behind-the-back", subject="Tampered",
                                                body="Tampered " + NEW_BODY, expected_version=2)
        assert tampered is not None and tampered.version == 3
        final = await finish(ts_env, cid, timedelta(hours=1))
    assert final.counts.sent == 1
    [sent] = [f.read_text() for f in outbox(settings)]
    assert "I rewrote this note by hand" in sent and "Tampered" not in sent


async def test_an_edit_in_flight_when_approval_arrives_is_what_gets_approved(
        ts_env, settings, store, prefix, run_workers):
    """The approval is recorded in the workflow's order: after the edit accepted before it."""
    agent = StoreAgent(store, settings)
    applying = asyncio.Event()

    @activity.defn(name="apply_draft_edit")
    async def slow_apply(ref: DraftEditRef) -> DraftVersionRef:
        applying.set()
        await asyncio.sleep(1.5)  # the approval arrives meanwhile
        return await agent.apply_draft_edit(ref)

    async with run_workers(ts_env.client, overrides={"apply_draft_edit": slow_apply}):
        mgr = await start(ts_env, settings, store, prefix, "c-race", leads=LEADS[:1])
        await wait_stage(ts_env, "c-race", Stage.AWAITING_APPROVAL)
        lead_id = (await mgr.drafts("c-race"))[0].lead_id
        edit = asyncio.create_task(mgr.edit_draft("c-race", lead_id, body=NEW_BODY, by="rita"))
        await asyncio.wait_for(applying.wait(), 30)
        assert await mgr.approve("c-race", by="sam") == 1
        assert edit.done(), "the approval waited for the edit accepted before it"
        assert (await edit).version == 2
        final = await result_handle(ts_env, "c-race").result()
    assert final.counts.sent == 1
    row = await store.get_draft("c-race", lead_id)
    assert row is not None and row.approved_version == 2
    [sent] = [f.read_text() for f in outbox(settings)]
    assert "I rewrote this note by hand" in sent
