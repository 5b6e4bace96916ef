"""Senders in the store (issue 28, schema 16) on every backend: the mailboxes, their sends
(appended in order, one writer per seq however many race), the leads' assigned senders,
the sends waiting on the schedule for capacity or a paused sender, the report's `sender`,
and the migration from 15 to 16 of a store that holds data."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from campaign_core.senders import SenderClaim, SenderRow
from campaign_core.store.base import SCHEMA_VERSION, Store
from campaign_core.store.postgres import PostgresStore
from campaign_core.store.sqlite import SqliteStore
from campaign_core.store.supabase import SupabaseStore
from tests.fakes import pg_fixtures
from tests.fakes.fake_postgrest import FakePostgrest
from tests.store import test_store
from tests.store.test_store import (
    SERVICE_KEY,
    SUPABASE_TEST_URL,
    Backend,
    draft,
    new_campaign,
    open_migrating,
)

pg_cluster = pg_fixtures.pg_cluster
pg_url = pg_fixtures.pg_url
backend = test_store.backend
migrating = test_store.migrating
fake_supabase = test_store.fake_supabase

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


def sender(name: str = "ana", **kw: object) -> SenderRow:
    values: dict[str, object] = {
        "name": name, "from_addr": f"{name.title()} <{name}@acme.test>", "transport": "smtp",
        "smtp_url": f"env:{name.upper()}_SMTP_URL", "daily_cap": 40, "hourly_cap": 12,
        "min_gap_seconds": 60, "created_at": T0}
    return SenderRow.model_validate({**values, **kw})


def claim(seq: int, key: str | None = None, *, who: str = "ana", minutes: int | None = None,
          campaign_id: str | None = "c1", lead_id: str | None = None) -> SenderClaim:
    return SenderClaim(sender=who, seq=seq, message_key=key or f"mk-{who}-{seq}",
                       campaign_id=campaign_id, lead_id=lead_id,
                       sent_at=T0 + timedelta(minutes=seq if minutes is None else minutes),
                       day_number=1)


def second_store(b: Backend, tmp_path: Path) -> Store:
    """Another store on the same data: its own connections (or HTTP client)."""
    if b.kind == "sqlite":
        return SqliteStore(b.target)
    if b.kind == "postgres":
        return PostgresStore(b.target)
    assert b.fake is not None
    return SupabaseStore(SUPABASE_TEST_URL, SERVICE_KEY, transport=b.fake.transport())


# -- the mailboxes ---------------------------------------------------------------------------


async def test_a_sender_is_added_once_listed_paused_resumed_and_removed(backend: Backend) -> None:
    s = backend.store
    ana = sender("ana", ramp_start=5, ramp_step=2, dkim_selector="s1", dkim_key="enc:k1:abc",
                 imap_url="env:ANA_IMAP_URL")
    assert await s.add_sender(ana) is True
    assert await s.add_sender(sender("ana", daily_cap=5)) is False  # the name is taken
    assert await s.add_sender(sender("bo", transport="outbox", smtp_url=None)) is True
    got = await s.get_sender("ana")
    assert got == ana
    assert (got.address, got.display_name, got.domain) == ("ana@acme.test", "Ana", "acme.test")
    assert await s.get_sender("nobody") is None
    assert [r.name for r in await s.list_senders()] == ["ana", "bo"]

    assert await s.set_sender_paused("ana", True, "bounce rate 5% over the last 60 sends")
    paused = await s.get_sender("ana")
    assert paused is not None and paused.paused and paused.paused_at is not None
    assert paused.paused_reason == "bounce rate 5% over the last 60 sends"
    assert await s.set_sender_paused("ana", False, "ignored on resume")
    resumed = await s.get_sender("ana")
    assert resumed is not None and (resumed.paused, resumed.paused_reason,
                                    resumed.paused_at) == (False, None, None)
    assert await s.set_sender_paused("nobody", True, "x") is False
    # Two events pausing it at once: only the first one pauses it (and reports it).
    assert await s.set_sender_paused("ana", True, "first", if_not_paused=True) is True
    assert await s.set_sender_paused("ana", True, "second", if_not_paused=True) is False
    again = await s.get_sender("ana")
    assert again is not None and again.paused_reason == "first"
    assert await s.set_sender_paused("ana", False, None)

    assert await s.remove_sender("bo") is True
    assert await s.remove_sender("bo") is False
    assert await s.remove_sender("nobody") is False
    assert await s.set_sender_paused("bo", True, "x") is False
    assert [r.name for r in await s.list_senders()] == ["ana"]
    listed = await s.list_senders(include_removed=True)
    assert [(r.name, r.removed_at is not None) for r in listed] == [("ana", False), ("bo", True)]
    # A removed sender's name may be taken again: the row is replaced.
    assert await s.add_sender(sender("bo", daily_cap=7)) is True
    again = await s.get_sender("bo")
    assert again is not None and (again.daily_cap, again.transport, again.removed_at) == (
        7, "smtp", None)
    assert await backend.rows("senders") == 2


# -- sends ---------------------------------------------------------------------------------


async def test_sends_append_in_order_and_a_message_is_claimed_once(backend: Backend) -> None:
    s = backend.store
    assert await s.last_sender_claim("ana") is None
    for seq in (1, 2, 3):
        assert await s.insert_sender_claim(claim(seq, lead_id=f"ld_{seq}")) is True
    assert await s.insert_sender_claim(claim(1, who="bo")) is True  # bo's own counter
    last = await s.last_sender_claim("ana")
    assert last == claim(3, lead_id="ld_3")
    since = await s.sender_claims_since("ana", T0 + timedelta(minutes=1))
    assert [c.seq for c in since] == [2, 3]  # strictly after
    assert await s.sender_claims_since("ana", T0 + timedelta(minutes=3)) == []
    assert await s.sender_claim_for("mk-ana-2") == claim(2, lead_id="ld_2")
    assert await s.sender_claim_for("mk-none") is None

    # Another writer took seq 4 first: False, nothing written.
    assert await s.insert_sender_claim(claim(4, "mk-first")) is True
    assert await s.insert_sender_claim(claim(4, "mk-second")) is False
    assert await s.sender_claim_for("mk-second") is None
    # A retried send: its message is claimed already, whatever seq it tries now.
    assert await s.insert_sender_claim(claim(5, "mk-first")) is True
    assert await s.insert_sender_claim(claim(4, "mk-first")) is True
    assert await s.insert_sender_claim(claim(2, "mk-first")) is True
    assert await s.last_sender_claim("ana") == claim(4, "mk-first")
    assert await backend.rows("sender_sends") == 5


async def test_racing_writers_never_share_a_seq(backend: Backend, tmp_path: Path) -> None:
    """Two stores (their own connections) claim the same seq at once: exactly one wins.
    Then eight writers append by reading the last send and retrying on False, as
    `sender_capacity.claim_slot` does: the seqs are 1..n, one message each."""
    other = second_store(backend, tmp_path)
    stores = [backend.store, other]
    try:
        for seq in (1, 2, 3):
            won = await asyncio.gather(*(st.insert_sender_claim(claim(seq, f"race-{seq}-{i}"))
                                         for i, st in enumerate(stores)))
            assert sorted(won) == [False, True]

        async def append(st: Store, key: str) -> int:
            while True:
                last = await st.last_sender_claim("ana")
                seq = (last.seq if last else 0) + 1
                if await st.insert_sender_claim(claim(seq, key)):
                    return seq

        seqs = await asyncio.gather(*(append(stores[i % 2], f"w-{i}") for i in range(8)))
        assert sorted(seqs) == list(range(4, 12))
        rows = await backend.store.sender_claims_since("ana", T0 - timedelta(days=1))
        assert [c.seq for c in rows] == list(range(1, 12))
        assert sorted(c.message_key for c in rows[3:]) == sorted(f"w-{i}" for i in range(8))
    finally:
        await other.close()


async def test_bounces_and_complaints_mark_a_send_and_health_counts_the_last_window(
        backend: Backend) -> None:
    s = backend.store
    for seq in range(1, 7):
        await s.insert_sender_claim(claim(seq))
    assert await s.mark_sender_event("mk-ana-1", "bounce") == "ana"
    assert await s.mark_sender_event("mk-ana-5", "bounce") == "ana"
    assert await s.mark_sender_event("mk-ana-5", "bounce") == "ana"  # a second webhook
    assert await s.mark_sender_event("mk-ana-6", "complaint") == "ana"
    assert await s.mark_sender_event("mk-unknown", "bounce") is None
    marked = await s.sender_claim_for("mk-ana-5")
    assert marked is not None and (marked.bounced, marked.complained) == (True, False)
    health = await s.sender_health("ana")
    assert (health.sends, health.bounces, health.complaints) == (6, 2, 1)
    recent = await s.sender_health("ana", window=3)  # seqs 4, 5, 6
    assert (recent.sends, recent.bounces, recent.complaints) == (3, 1, 1)
    assert recent.bounce_rate == pytest.approx(1 / 3)
    none = await s.sender_health("bo")
    assert (none.sends, none.bounce_rate) == (0, 0.0)


# -- assignments -------------------------------------------------------------------------------


async def test_a_lead_keeps_the_first_sender_it_is_given(backend: Backend) -> None:
    s = backend.store
    a, b, c, d = (lead.lead_id for lead in await new_campaign(s, n=4))
    await new_campaign(s, "c2", n=2)
    assert await s.assign_senders("c1", {a: "ana", b: "bo", c: "ana"}) == 3
    assert await s.assign_senders("c1", {a: "bo", d: "bo"}) == 1  # a keeps ana
    assert await s.assign_senders("c1", {}) == 0
    assert await s.assign_senders("c1", {"ld_missing": "ana"}) == 0
    assert [await s.lead_sender("c1", x) for x in (a, b, c, d)] == ["ana", "bo", "ana", "bo"]
    assert await s.lead_sender("c1", "ld_missing") is None
    assert await s.sender_assignment_counts("c1") == {"ana": 2, "bo": 2}
    assert await s.sender_assignment_counts("c2") == {}
    c2_lead = (await s.list_lead_ids("c2", None, 1))[0]
    assert await s.lead_sender("c2", c2_lead) is None


# -- waiting on the schedule -------------------------------------------------------------------


async def test_sends_wait_for_capacity_or_a_paused_sender_and_are_released(
        backend: Backend) -> None:
    s = backend.store
    a, b, c, d = (lead.lead_id for lead in await new_campaign(s, n=4))
    await new_campaign(s, "c2", n=1)
    (e,) = await s.list_lead_ids("c2", None, 5)
    assert await s.capacity_waits("c1") == (0, None)

    await s.defer_step("c1", a, 1, T0 + timedelta(hours=2), "ana", "capacity")  # inserts step 1
    await s.defer_step("c1", a, 1, T0 + timedelta(hours=1), "ana", "capacity")  # moves it
    await s.defer_step("c1", b, 1, T0 + timedelta(hours=3), "ana", "capacity")
    await s.schedule_step("c1", c, 2, T0)  # a follow-up on the schedule, moved when deferred
    await s.defer_step("c1", c, 2, T0 + timedelta(days=1), "bo", "paused")
    await s.defer_step("c2", e, 1, T0 + timedelta(minutes=30), "ana", "capacity")
    await s.schedule_step("c1", d, 2, T0 + timedelta(days=3))  # not waiting: not counted

    row = await s.get_step("c1", a, 1)
    assert row is not None and (row.status, row.sender, row.wait_reason) == (
        "scheduled", "ana", "capacity")
    assert row.due_at == (T0 + timedelta(hours=1)).isoformat(timespec="microseconds")
    held = await s.get_step("c1", c, 2)
    assert held is not None and (held.sender, held.wait_reason) == ("bo", "paused")
    plain = await s.get_step("c1", d, 2)
    assert plain is not None and (plain.sender, plain.wait_reason) == (None, None)
    assert await s.capacity_waits("c1") == (3, T0 + timedelta(hours=1))
    assert await s.capacity_waits("c2") == (1, T0 + timedelta(minutes=30))
    # Every campaign's sends planned on ana, after a time.
    assert await s.planned_waits("ana", T0) == [
        T0 + timedelta(minutes=30), T0 + timedelta(hours=1), T0 + timedelta(hours=3)]
    assert await s.planned_waits("ana", T0 + timedelta(hours=1)) == [T0 + timedelta(hours=3)]
    assert await s.planned_waits("bo", T0) == []  # paused is not planned
    # The schedule hands out step 1 rows like any other.
    due = await s.due_steps("c1", T0 + timedelta(hours=2), None, 10)
    assert [(r.lead_id, r.step) for r in due] == [(a, 1)]

    # Sent: no longer waiting. Stopped: neither. Cleared by hand: neither.
    await s.set_step_status("c1", a, 1, "sent")
    sent = await s.get_step("c1", a, 1)
    assert sent is not None and (sent.status, sent.wait_reason, sent.sender) == (
        "sent", None, "ana")
    await s.defer_step("c1", a, 1, T0 + timedelta(days=2), "ana", "capacity")  # kept as sent
    kept = await s.get_step("c1", a, 1)
    assert kept is not None and (kept.status, kept.wait_reason, kept.due_at) == (
        "sent", None, sent.due_at)
    assert await s.capacity_waits("c1") == (2, T0 + timedelta(hours=3))
    await s.clear_step_wait("c1", b, 1)
    assert await s.capacity_waits("c1") == (1, None)  # only the paused one is left
    await s.defer_step("c1", b, 1, T0 + timedelta(hours=4), "ana", "capacity")
    await s.set_step_status("c1", b, 1, "stopped", "replied in campaign c9")
    assert await s.capacity_waits("c1") == (1, None)

    # bo is resumed: its held sends wait for capacity again, due then.
    assert await s.release_sender_holds("bo", T0 + timedelta(hours=5)) == ["c1"]
    released = await s.get_step("c1", c, 2)
    assert released is not None and (released.wait_reason, released.due_at) == (
        "capacity", (T0 + timedelta(hours=5)).isoformat(timespec="microseconds"))
    assert await s.capacity_waits("c1") == (1, T0 + timedelta(hours=5))
    assert await s.release_sender_holds("bo", T0 + timedelta(hours=6)) == []
    assert await s.planned_waits("bo", T0) == [T0 + timedelta(hours=5)]
    # A cancelled campaign stops what waits: nothing waits any more.
    assert await s.stop_open_steps("c1", "cancelled") == 2
    assert await s.capacity_waits("c1") == (0, None)


async def test_release_names_each_campaign_once(backend: Backend) -> None:
    s = backend.store
    ids = {}
    for cid in ("c1", "c2"):
        ids[cid] = [lead.lead_id for lead in await new_campaign(s, cid, n=2)]
        for lid in ids[cid]:
            await s.defer_step(cid, lid, 1, T0 + timedelta(days=30), "ana", "paused")
    await s.defer_step("c1", ids["c1"][0], 2, T0, "bo", "paused")  # another sender's
    assert await s.release_sender_holds("ana", T0) == ["c1", "c2"]
    assert await s.capacity_waits("c2") == (2, T0)
    row = await s.get_step("c1", ids["c1"][0], 2)
    assert row is not None and row.wait_reason == "paused"


# -- the report -----------------------------------------------------------------------------


async def test_the_report_names_each_leads_sender_and_a_waiting_step_1_stays_pending(
        backend: Backend) -> None:
    s = backend.store
    a, b, c = (lead.lead_id for lead in await new_campaign(s, n=3))
    for lid in (a, b, c):
        for step in (1, 2):
            await draft(s, "c1", lid, step)
        await s.set_lead_status("c1", lid, "drafted")
    await s.assign_senders("c1", {a: "ana", b: "bo"})
    await s.record_decision(campaign_id="c1", decision_id="d1", decision="approve",
                            lead_ids=None, by="ops", note=None)
    await s.set_stage("c1", "delivering")
    await s.upsert_delivery(message_key="k-b-1", campaign_id="c1", lead_id=b, step=1,
                            channel="smtp", status="sent", message_id="<b1@x>")
    await s.set_step_status("c1", b, 1, "sent")
    await s.schedule_step("c1", b, 2, T0 + timedelta(days=3))
    before = await s.counts("c1")
    figures_before = await s.status_figures("c1")

    await s.defer_step("c1", a, 1, T0 + timedelta(hours=1), "ana", "capacity")
    rows = {(r.lead_id, r.step): r for r in await s.report("c1")}
    assert {k: (r.delivery_status, r.sender, r.due_at) for k, r in rows.items()} == {
        (a, 1): ("pending", "ana", "2025-03-03T10:00:00Z"),  # its planned slot
        (a, 2): ("pending", "ana", None),
        (b, 1): ("sent", "bo", None),
        (b, 2): ("pending", "bo", "2025-03-06T09:00:00Z"),
        (c, 1): ("pending", None, None),
        (c, 2): ("pending", None, None),
    }
    assert rows[(a, 1)].model_dump()["sender"] == "ana"
    after = await s.counts("c1")
    assert after == before
    assert (after.sent, after.pending, after.stopped, after.messages) == (1, 5, 0, 6)
    assert await s.status_figures("c1") == figures_before
    page = await s.review_page("c1", lead_id=a)
    (item,) = page.items
    assert [(st.step, st.outcome) for st in item.steps] == [(1, "pending"), (2, "pending")]

    # Sent from its slot: step 1 is sent, and no longer waits.
    await s.upsert_delivery(message_key="k-a-1", campaign_id="c1", lead_id=a, step=1,
                            channel="smtp", status="sent", message_id="<a1@x>")
    await s.set_step_status("c1", a, 1, "sent")
    row = {(r.lead_id, r.step): r for r in await s.report("c1")}[(a, 1)]
    assert (row.delivery_status, row.due_at, row.sender) == ("sent", None, "ana")
    assert (await s.counts("c1")).sent == 2
    assert await s.capacity_waits("c1") == (0, None)


# -- the migration ------------------------------------------------------------------------------


async def test_a_store_with_data_migrates_from_15_to_16(migrating: tuple[str, str]) -> None:
    kind, target = migrating
    old = open_migrating(kind, target)
    assert await old.migrate(target=15) == 15
    # Schema 15's own writes, with its own SQL (no sender columns yet).
    b = Backend(kind, old, target)
    await b.execute(
        "INSERT INTO campaigns(campaign_id, name, workflow_id, stage, created_at, updated_at) "
        "VALUES ('c1', 'Old', 'campaign:c1', 'delivering', '2025-01-01T00:00:00.000000+00:00', "
        "'2025-01-01T00:00:00.000000+00:00')",
        "INSERT INTO campaigns(campaign_id, name, workflow_id, stage) "
        "VALUES ('c1', 'Old', 'campaign:c1', 'delivering')")
    await b.execute(
        "INSERT INTO leads(campaign_id, lead_id, email, data, draft_status, created_at, "
        "updated_at) VALUES ('c1', 'ld_1', 'ana@example.com', "
        "'{\"email\": \"ana@example.com\", \"lead_id\": \"ld_1\"}', 'drafted', "
        "'2025-01-01T00:00:00.000000+00:00', '2025-01-01T00:00:00.000000+00:00')",
        "INSERT INTO leads(campaign_id, lead_id, email, data, draft_status) VALUES "
        "('c1', 'ld_1', 'ana@example.com', "
        "'{\"email\": \"ana@example.com\", \"lead_id\": \"ld_1\"}'::jsonb, 'drafted')")
    await b.execute(
        "INSERT INTO sequence_steps(campaign_id, lead_id, step, due_at, status, created_at, "
        "updated_at) VALUES ('c1', 'ld_1', 2, '2025-03-03T09:00:00.000000+00:00', 'scheduled', "
        "'2025-01-01T00:00:00.000000+00:00', '2025-01-01T00:00:00.000000+00:00')",
        "INSERT INTO sequence_steps(campaign_id, lead_id, step, due_at, status) "
        "VALUES ('c1', 'ld_1', 2, '2025-03-03T09:00:00+00:00', 'scheduled')")
    await old.close()

    store = open_migrating(kind, target)
    try:
        assert await store.migrate() == SCHEMA_VERSION == 16
        assert await store.schema_version() == 16
        assert await store.migrate() == 16  # again: nothing changes
        step = await store.get_step("c1", "ld_1", 2)
        assert step is not None and (step.status, step.sender, step.wait_reason) == (
            "scheduled", None, None)
        assert await store.lead_sender("c1", "ld_1") is None
        assert await store.capacity_waits("c1") == (0, None)
        assert [r.sender for r in await store.report("c1")] == [None]
        # The new tables and columns work on the migrated store.
        assert await store.assign_senders("c1", {"ld_1": "ana"}) == 1
        assert await store.add_sender(sender("ana")) is True
        assert await store.insert_sender_claim(claim(1, lead_id="ld_1")) is True
        await store.defer_step("c1", "ld_1", 2, T0 + timedelta(hours=1), "ana", "capacity")
        assert await store.capacity_waits("c1") == (1, T0 + timedelta(hours=1))
        assert [r.sender for r in await store.report("c1")] == ["ana"]
    finally:
        await store.close()


# -- Supabase specifics -------------------------------------------------------------------------


async def test_supabase_pages_the_sends_and_waits_and_names_the_message_as_the_conflict(
        fake_supabase: tuple[SupabaseStore, FakePostgrest]) -> None:
    """With two rows a page, every read that pages gets every row; a claim is an insert
    that ignores only a duplicate `message_key` (a taken seq must fail, not be ignored)."""
    s, fake = fake_supabase
    leads = await new_campaign(s, n=5)
    for seq in range(1, 6):
        assert await s.insert_sender_claim(claim(seq)) is True
    (insert, *_) = fake.calls_to("sender_sends", "POST")
    assert insert.param("on_conflict") == "message_key"
    assert "resolution=ignore-duplicates" in insert.prefer
    assert [c.seq for c in await s.sender_claims_since("ana", T0)] == [1, 2, 3, 4, 5]
    assert await s.assign_senders("c1", {lead.lead_id: ("ana", "bo")[i % 2]
                                         for i, lead in enumerate(leads)}) == 5
    assert await s.sender_assignment_counts("c1") == {"ana": 3, "bo": 2}
    for i, lead in enumerate(leads):
        await s.defer_step("c1", lead.lead_id, 1, T0 + timedelta(hours=5 - i), "ana", "capacity")
    assert await s.capacity_waits("c1") == (5, T0 + timedelta(hours=1))
    assert await s.planned_waits("ana", T0) == [T0 + timedelta(hours=h) for h in range(1, 6)]
