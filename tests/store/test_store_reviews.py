"""Draft versions, reviewers' edits and exclusions in the store (schema 6), on every backend.

SQLite, PostgreSQL and the Supabase REST store (through tests/fakes/fake_postgrest.py) alike:
an edit is pending until applied, applied once, never over a newer version; version 1
is kept when replaced; excluded drafts are never approved; an approval records the
version it approved; drafts page in a stable order.
"""

from __future__ import annotations

from tests.fakes import pg_fixtures
from tests.store.test_store import Backend, backend, draft, new_campaign

pg_cluster = pg_fixtures.pg_cluster
pg_url = pg_fixtures.pg_url
__all__ = ["backend"]  # the fixture, made visible to this module


async def test_an_edit_is_pending_then_applied_once_and_version_1_is_kept(backend: Backend) -> None:
    s = backend.store
    leads = await new_campaign(s)
    lid = leads[0].lead_id
    await draft(s, "c1", lid, subject="First")
    await s.add_draft_edit(edit_id="e1", campaign_id="c1", lead_id=lid, step=1, subject=None,
                           body="A new body", base_version=1, by="rita")
    await s.add_draft_edit(edit_id="e1", campaign_id="c1", lead_id=lid, step=1, subject="x",
                           body="y", base_version=None, by="sam")  # a retry: the first stays
    pending = await s.get_draft_edit("e1")
    assert pending is not None
    assert (pending.status, pending.subject, pending.body, pending.edited_by, pending.version) == (
        "pending", None, "A new body", "rita", None)

    applied = await s.apply_draft_edit("e1", subject="First", body="A new body", expected_version=1)
    assert applied is not None
    assert (applied.version, applied.body, applied.edited_by, applied.email) == (
        2, "A new body", "rita", "ana@example.com")
    again = await s.apply_draft_edit("e1", subject="First", body="A new body", expected_version=1)
    assert again is not None and again.version == 2  # the retried activity changes nothing
    done = await s.get_draft_edit("e1")
    assert done is not None and (done.status, done.version, done.subject) == ("applied", 2, "First")

    await s.add_draft_edit(edit_id="e2", campaign_id="c1", lead_id=lid, step=1, subject="Late",
                           body=None, base_version=1, by="sam")
    assert await s.apply_draft_edit("e2", subject="Late", body="A new body",
                                    expected_version=1) is None  # the draft moved on
    await s.refuse_draft_edit("e2", "stale")
    await s.refuse_draft_edit("e1", "too late to refuse")  # an applied edit stays applied
    assert getattr(await s.get_draft_edit("e2"), "status", None) == "refused"
    assert getattr(await s.get_draft_edit("e1"), "status", None) == "applied"

    v1 = await s.get_draft_version("c1", lid, 1, 1)
    v2 = await s.get_draft_version("c1", lid, 1, 2)
    assert v1 is not None and (v1.version, v1.subject, v1.body) == (1, "First", f"Body for {lid}")
    assert v2 is not None and (v2.version, v2.body) == (2, "A new body")
    assert await s.get_draft_version("c1", lid, 1, 7) is None
    history = await s.list_draft_versions("c1", lid)
    assert sorted((h.status, h.version) for h in history) == [
        ("applied", 2), ("original", 1), ("refused", None)]
    current = await s.get_draft("c1", lid)
    assert current is not None and (current.version, current.subject) == (2, "First")


async def test_excluded_drafts_are_not_approved_and_approval_records_the_version(
        backend: Backend) -> None:
    s = backend.store
    leads = await new_campaign(s)
    ids = [lead.lead_id for lead in leads[:3]]
    for lid in ids:
        await draft(s, "c1", lid)
    await draft(s, "c1", ids[0], step=2)
    await s.add_draft_edit(edit_id="e1", campaign_id="c1", lead_id=ids[1], step=1, subject=None,
                           body="Edited", base_version=None, by="rita")
    await s.apply_draft_edit("e1", subject="Hello", body="Edited", expected_version=1)

    assert await s.set_draft_excluded("c1", ids[0], None, True) == [1, 2]
    assert await s.set_draft_excluded("c1", ids[2], 1, True) == [1]
    assert await s.set_draft_excluded("c1", ids[2], 1, False) == [1]  # included again
    assert await s.set_draft_excluded("c1", "nobody", None, True) == []
    assert [d.excluded for d in await s.list_drafts("c1") if d.lead_id == ids[0]] == [True, True]

    assert await s.record_decision(campaign_id="c1", decision_id="d1", decision="approve",
                                   lead_ids=None, by="rita", note=None) == 2
    rows = {(d.lead_id, d.step): d for d in await s.list_drafts("c1")}
    assert not rows[(ids[0], 1)].approved and not rows[(ids[0], 2)].approved
    assert rows[(ids[1], 1)].approved and rows[(ids[1], 1)].approved_version == 2
    assert rows[(ids[2], 1)].approved and rows[(ids[2], 1)].approved_version == 1
    assert await s.list_approved_lead_ids("c1", None, 10) == sorted(ids[1:])
    # An approval of listed leads leaves an excluded one out too.
    assert await s.record_decision(campaign_id="c1", decision_id="d2", decision="approve",
                                   lead_ids=[ids[0]], by="rita", note=None) == 2


async def test_drafts_page_in_a_stable_order(backend: Backend) -> None:
    s = backend.store
    leads = await new_campaign(s)
    for lead in leads:
        await draft(s, "c1", lead.lead_id)
    everything = [(d.lead_id, d.step) for d in await s.list_drafts("c1")]
    pages = [[(d.lead_id, d.step) for d in await s.list_drafts("c1", offset=o, limit=2)]
             for o in (0, 2, 4, 6)]
    assert [len(p) for p in pages] == [2, 2, 1, 0]
    assert [x for p in pages for x in p] == everything and len(everything) == len(leads)
    assert [(d.lead_id, d.step) for d in await s.list_drafts("c1", offset=3)] == everything[3:]


async def test_forget_erases_every_version_of_the_persons_drafts(backend: Backend) -> None:
    s = backend.store
    leads = await new_campaign(s)
    ana, bo = leads[0].lead_id, leads[1].lead_id
    for lid in (ana, bo):
        await draft(s, "c1", lid)
        await s.add_draft_edit(edit_id=f"e-{lid}", campaign_id="c1", lead_id=lid, step=1,
                               subject=None, body="Edited", base_version=None, by="rita")
        await s.apply_draft_edit(f"e-{lid}", subject="Hello", body="Edited", expected_version=1)
    erased = await s.forget("ana@example.com")
    assert erased["draft_versions"] == 2  # version 1 and the edit
    assert await s.list_draft_versions("c1", ana) == []
    assert len(await s.list_draft_versions("c1", bo)) == 2
