"""Which mailbox each lead is sent from (campaign_core/sender_assignment.py, issue 28):
spread by capacity, one company's leads over several mailboxes, the same on every retry."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from temporalio.testing import ActivityEnvironment

from activities.sequence_agent import SequenceAgent
from campaign_core.leads import parse_lead_rows
from campaign_core.models import AssignSenders
from campaign_core.sender_assignment import assign, company_key
from campaign_core.senders import SenderRow
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore


def test_leads_are_spread_in_proportion_to_capacity() -> None:
    leads = [(f"l{i:02}", f"co{i}") for i in range(40)]
    got = assign(leads, {"a": 10.0, "b": 10.0, "c": 6.0}, {})
    counts = Counter(got.values())
    assert set(got) == {lid for lid, _ in leads}
    for name, weight in (("a", 10), ("b", 10), ("c", 6)):  # each within one of its share
        assert abs(counts[name] - 40 * weight / 26) < 1, counts


def test_one_companys_leads_go_to_several_mailboxes() -> None:
    leads = [(f"l{i}", "northwind") for i in range(6)] + [(f"m{i}", f"other{i}") for i in range(6)]
    got = assign(leads, {"a": 1.0, "b": 1.0, "c": 1.0}, {})
    northwind = Counter(got[f"l{i}"] for i in range(6))
    assert northwind == {"a": 2, "b": 2, "c": 2}
    assert Counter(got.values()) == {"a": 4, "b": 4, "c": 4}


def test_earlier_pages_count_and_the_choice_is_deterministic() -> None:
    leads = [(f"l{i}", f"co{i}") for i in range(4)]
    weights = {"a": 1.0, "b": 1.0}
    got = assign(leads, weights, {"a": 5})  # a page before gave a five leads
    assert Counter(got.values()) == {"b": 4}
    assert assign(leads, weights, {"a": 5}) == got
    assert assign(leads, {}, {}) == {}


def test_colleagues_are_known_by_company_name_else_by_domain() -> None:
    assert company_key("ana@northwind.example", "Northwind  Freight") == "northwind freight"
    assert company_key("bo@Northwind.Example", None) == "northwind.example"
    assert company_key("cy@x.example", "  ") == "x.example"


async def test_a_mailbox_with_sends_already_waiting_gets_fewer_new_leads(
        store: SqliteStore, settings: Settings) -> None:
    """Two mailboxes with the same caps; one already has 70 sends of another campaign
    waiting for it: the new campaign's leads go mostly to the other (the agent reads the
    real store)."""
    now = datetime.now(UTC)
    for name in ("busy", "free"):
        assert await store.add_sender(SenderRow(
            name=name, from_addr=f"{name} <{name}@acme.example>", transport="outbox",
            daily_cap=40, created_at=now))
    for i in range(70):
        await store.defer_step("other", f"o{i}", 1, now + timedelta(hours=1, minutes=i), "busy",
                               "capacity")
    rows = [{"email": f"p{i}@co{i}.example"} for i in range(20)]
    leads = parse_lead_rows(enumerate(rows, start=2), "c-new").leads
    await store.upsert_campaign(campaign_id="c-new", name="n", brief="", channel="outbox",
                                kb_dir=None, workflow_id="campaign:c-new")
    await store.upsert_leads("c-new", leads)
    agent = SequenceAgent(store, settings)
    given = await ActivityEnvironment().run(agent.assign_senders, AssignSenders(
        campaign_id="c-new", lead_ids=[lead.lead_id for lead in leads], senders=["busy", "free"]))
    assert given == 20
    counts = await store.sender_assignment_counts("c-new")
    assert counts["free"] >= 18 and counts.get("busy", 0) <= 2, counts  # weights 80 vs 10
