"""Reviewers, one-time sign-in codes and the review pages' filtered page, on every backend
(SQLite, PostgreSQL, Supabase REST through the fake PostgREST): same answers everywhere."""

from __future__ import annotations

from datetime import timedelta

from campaign_core.store.base import now_utc
from tests.fakes import pg_fixtures
from tests.store.test_store import backend, draft, new_campaign

pg_cluster = pg_fixtures.pg_cluster
pg_url = pg_fixtures.pg_url
__all__ = ["backend"]


async def test_reviewers_are_added_once_found_by_token_hash_and_removed(backend) -> None:
    s = backend.store
    assert await s.add_reviewer("ana", "sha256:a1")
    assert not await s.add_reviewer("ana", "sha256:a2"), "an active name is taken"
    assert await s.add_reviewer("bo", "sha256:b1")
    assert [r.name for r in await s.list_reviewers()] == ["ana", "bo"]
    found = await s.reviewer_by_token("sha256:a1")
    assert found is not None and found.name == "ana" and found.removed_at is None
    assert await s.reviewer_by_token("sha256:a2") is None
    first = await s.get_reviewer("ana")
    assert first is not None

    await s.add_sign_in_code("sha256:code-ana", "ana", now_utc() + timedelta(minutes=15))
    assert await s.remove_reviewer("ana")
    assert not await s.remove_reviewer("ana")
    assert await s.get_reviewer("ana") is None
    assert await s.reviewer_by_token("sha256:a1") is None
    assert await s.take_sign_in_code("sha256:code-ana") is None, "removal kills their codes"
    assert [r.name for r in await s.list_reviewers()] == ["bo"]

    assert await s.add_reviewer("ana", "sha256:a3"), "a removed name may be given again"
    again = await s.get_reviewer("ana")
    assert again is not None and again.created_at >= first.created_at
    assert await s.reviewer_by_token("sha256:a1") is None
    assert (await s.reviewer_by_token("sha256:a3")) is not None


async def test_a_sign_in_code_works_once_and_not_after_it_expires(backend) -> None:
    s = backend.store
    await s.add_reviewer("dev", "sha256:d")
    await s.add_sign_in_code("sha256:c1", "dev", now_utc() + timedelta(minutes=15))
    await s.add_sign_in_code("sha256:old", "dev", now_utc() - timedelta(seconds=1))
    assert await s.take_sign_in_code("sha256:c1") == "dev"
    assert await s.take_sign_in_code("sha256:c1") is None
    assert await s.take_sign_in_code("sha256:old") is None
    assert await s.take_sign_in_code("sha256:nope") is None


async def test_review_page_filters_searches_pages_and_counts(backend) -> None:
    s = backend.store
    leads = await new_campaign(s)  # ana@Northwind, bo@Ledgerly, cy, di, ed
    for lead in leads[:3]:
        await draft(s, "c1", lead.lead_id, subject=f"Hi {lead.first_name}")
        await s.set_lead_status("c1", lead.lead_id, "drafted")
    await s.set_lead_status("c1", leads[3].lead_id, "failed", "guardrail")
    await s.record_decision(campaign_id="c1", decision_id="d1", decision="approve",
                            lead_ids=[leads[0].lead_id], by="ops", note=None)

    order = [lead.email for lead in sorted(leads, key=lambda x: x.lead_id)]  # one batch: by id
    everything = await s.review_page("c1", limit=2)
    assert everything.total == 5
    assert [i.email for i in everything.items] == order[:2]
    second = await s.review_page("c1", offset=2, limit=2)
    assert [i.email for i in second.items] == order[2:4]
    beyond = await s.review_page("c1", offset=10, limit=2)
    assert (beyond.total, beyond.items) == (5, [])
    ana = next(i for i in (await s.review_page("c1")).items if i.email == leads[0].email)
    assert (ana.company, ana.subject, ana.draft_status, ana.approved) == (
        "Northwind", "Hi Ana", "drafted", True)

    assert {i.email for i in (await s.review_page("c1", status="drafted")).items} == {
        lead.email for lead in leads[:3]}
    assert [i.email for i in (await s.review_page("c1", status="failed")).items] == [leads[3].email]
    assert [i.email for i in (await s.review_page("c1", status="pending")).items] == [leads[4].email]
    assert [i.email for i in (await s.review_page("c1", status="approved")).items] == [leads[0].email]
    await s.set_draft_excluded("c1", leads[2].lead_id, 1, True)
    await s.add_draft_edit(edit_id="e1", campaign_id="c1", lead_id=leads[1].lead_id, step=1,
                           subject=None, body="Edited", base_version=1, by="rita")
    assert await s.apply_draft_edit("e1", subject="Hi Bo", body="Edited", expected_version=1)
    excluded = (await s.review_page("c1", status="excluded")).items
    assert [(i.email, i.excluded) for i in excluded] == [(leads[2].email, True)]
    edited = (await s.review_page("c1", status="edited")).items
    assert [(i.email, i.version) for i in edited] == [(leads[1].email, 2)]
    by_company = await s.review_page("c1", search="  LEDGER ")
    assert (by_company.total, [i.email for i in by_company.items]) == (1, [leads[1].email])
    by_email = await s.review_page("c1", search="example.com")
    assert by_email.total == 3
    assert (await s.review_page("c1", search="100%_")).total == 0, "no wildcards"
    assert (await s.review_page("c1", status="drafted", search="cy@")).total == 1
    assert (await s.review_page("other")).total == 0


async def test_list_campaigns_newest_first(backend) -> None:
    await new_campaign(backend.store, "c1", 1)
    await new_campaign(backend.store, "c2", 1)
    assert [c.campaign_id for c in await backend.store.list_campaigns()] == ["c2", "c1"]
    assert [c.campaign_id for c in await backend.store.list_campaigns(limit=1)] == ["c2"]
