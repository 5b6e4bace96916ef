"""The sequence schedule (`sequence_steps`, schema 10) on every backend: who is due when,
stops that a later send cannot undo, and the report per lead and step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.fakes import pg_fixtures
from tests.store import test_store
from tests.store.test_store import Backend, draft, new_campaign

pg_cluster = pg_fixtures.pg_cluster
pg_url = pg_fixtures.pg_url
backend = test_store.backend

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


async def test_due_steps_page_by_lead_and_next_due_skips_what_is_due(backend: Backend) -> None:
    s = backend.store
    a, b, c, d = (lead.lead_id for lead in await new_campaign(s, n=4))
    await s.schedule_step("c1", a, 2, T0)
    await s.schedule_step("c1", b, 2, T0 + timedelta(hours=1))
    await s.schedule_step("c1", c, 3, T0 - timedelta(days=1))
    await s.schedule_step("c1", d, 2, T0 + timedelta(days=3))
    await s.schedule_step("c1", a, 2, T0 + timedelta(days=9))  # already there: kept as is
    due = await s.due_steps("c1", T0 + timedelta(hours=1), None, 10)
    assert [(r.lead_id, r.step) for r in due] == sorted([(a, 2), (b, 2), (c, 3)])
    first = await s.due_steps("c1", T0 + timedelta(hours=1), None, 2)
    rest = await s.due_steps("c1", T0 + timedelta(hours=1), first[-1].lead_id, 2)
    assert [r.lead_id for r in first + rest] == [r.lead_id for r in due]
    assert await s.next_due_at("c1", T0) == T0 + timedelta(hours=1)
    assert await s.next_due_at("c1", T0 + timedelta(hours=1)) == T0 + timedelta(days=3)
    assert await s.next_due_at("c1", T0 + timedelta(days=3)) is None
    assert await s.due_steps("other", T0 + timedelta(days=9), None, 10) == []


async def test_a_stop_is_never_reopened_and_a_sent_step_stays_sent(backend: Backend) -> None:
    s = backend.store
    a, b, c = (lead.lead_id for lead in await new_campaign(s, n=3))
    # A reply stops step 2 before step 1's send has scheduled it: scheduling keeps the stop.
    await s.set_step_status("c1", a, 2, "stopped", "replied")
    await s.schedule_step("c1", a, 2, T0)
    row = await s.get_step("c1", a, 2)
    assert row is not None and (row.status, row.stop_reason) == ("stopped", "replied")
    assert await s.due_steps("c1", T0 + timedelta(days=1), None, 10) == []
    # A step sent stays sent when a late stop arrives.
    await s.schedule_step("c1", b, 2, T0)
    await s.set_step_status("c1", b, 2, "sent")
    await s.set_step_status("c1", b, 2, "stopped", "replied")
    row = await s.get_step("c1", b, 2)
    assert row is not None and row.status == "sent"
    # Cancel stops what is open, nothing else.
    await s.schedule_step("c1", c, 2, T0)
    assert await s.stop_open_steps("c1", "cancelled") == 1
    row = await s.get_step("c1", c, 2)
    assert row is not None and (row.status, row.stop_reason) == ("stopped", "cancelled")
    # (`counts` tallies the report's rows, which need drafts: test_report_has_a_row_... .)


async def test_report_has_a_row_per_lead_and_step_with_stop_reasons(backend: Backend) -> None:
    s = backend.store
    a, b, c = (lead.lead_id for lead in await new_campaign(s, n=3))
    for lid in (a, b, c):
        for step in (1, 2, 3):
            await draft(s, "c1", lid, step)
        await s.set_lead_status("c1", lid, "drafted")
    await s.record_decision(campaign_id="c1", decision_id="d1", decision="approve", lead_ids=None,
                            by="ana", note=None)
    for lid, steps in ((a, (1,)), (b, (1, 2, 3)), (c, (1, 2))):
        for step in steps:
            await s.upsert_delivery(message_key=f"k-{lid}-{step}", campaign_id="c1", lead_id=lid,
                                    step=step, channel="outbox", status="sent",
                                    message_id=f"<{lid}-{step}@x>")
    await s.set_step_status("c1", a, 2, "stopped", "replied")
    await s.set_step_status("c1", c, 3, "stopped", "unsubscribed")
    assert await s.last_sent_step("c1", b) == 3
    await s.set_stage("c1", "completed")
    got = {(r.lead_id, r.step): (r.delivery_status, r.stop_reason) for r in await s.report("c1")}
    assert got == {
        (a, 1): ("sent", None), (a, 2): ("stopped", "replied"), (a, 3): ("stopped", "replied"),
        (b, 1): ("sent", None), (b, 2): ("sent", None), (b, 3): ("sent", None),
        (c, 1): ("sent", None), (c, 2): ("sent", None), (c, 3): ("stopped", "unsubscribed"),
    }
    counts = await s.counts("c1")
    assert (counts.approved, counts.sent, counts.stopped) == (3, 6, 3)  # the report's rows


async def test_suppression_reason_and_leads_at_a_domain(backend: Backend) -> None:
    s = backend.store
    leads = await new_campaign(s, n=3)
    await s.add_suppressions([leads[0].email], "unsubscribe (c1)", source="unsubscribe_link")
    assert await s.suppression_reason(leads[0].email.upper()) == "unsubscribe (c1)"
    assert await s.suppression_reason(leads[1].email) is None
    domain = leads[0].email.rpartition("@")[2]
    assert sorted(await s.lead_ids_at_domain("c1", domain)) == sorted(
        lead.lead_id for lead in leads if lead.email.endswith("@" + domain))
    assert await s.lead_ids_at_domain("c1", "nowhere.example") == []
