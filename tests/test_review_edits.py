"""Reviewers' edits and exclusions on the time-skipping server, with the real agents and store.

An edit makes a new version (the old one kept, the diff in the audit trail) and is what
gets delivered; a guardrail or the campaign's state refuses an edit with the reason and
changes nothing; an excluded lead is not approved, so not sent.
"""

from __future__ import annotations

import pytest

from campaign_core.models import Stage
from starter.manager import BadInput, Conflict, NotFound
from tests.test_campaign_workflow import outbox, result_handle, start, wait_stage

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
    assert report["bo@example.org"] == "not_approved"


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
        draft = await store.get_draft("c-early", lead_id)
        assert draft is not None and (draft.version, draft.body, draft.excluded) == (1, "b", False)
        await mgr.control("c-early", "cancel")
