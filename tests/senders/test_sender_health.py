"""A sender's health (campaign_core/sender_capacity.py, record_sender_event): bounces and
complaints over its last 100 sends, on the real SQLite and PostgreSQL stores. It pauses
itself once bounces pass CAMPAIGN_SENDER_MAX_BOUNCE_RATE with at least 3 of them, or
complaints pass 0.1% with at least one, says why in a person's words, and reports the
pause once (the caller audits and meters it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from campaign_core.sender_capacity import (
    SenderPause,
    claim_slot,
    pause_reason,
    record_sender_event,
)
from campaign_core.senders import (
    SenderClaim,
    SenderEventKind,
    SenderHealth,
    SenderRow,
    SlotWait,
)
from campaign_core.store.base import Store
from tests.fakes import pg_fixtures

pg_cluster = pg_fixtures.pg_cluster
pg_url = pg_fixtures.pg_url

START = datetime(2025, 3, 3, 7, 30, tzinfo=UTC)
MAX_BOUNCE_RATE = 0.03


store = pg_fixtures.sql_store  # SQLite, then PostgreSQL


async def sender_with_sends(store: Store, name: str, sends: int) -> SenderRow:
    """A sender with `sends` sends recorded, a minute apart (keys `<name>-1`...)."""
    row = SenderRow(name=name, from_addr=f"{name.title()} <{name}@acme.io>", transport="outbox",
                    daily_cap=1000, hourly_cap=1000, created_at=START)
    assert await store.add_sender(row)
    for seq in range(1, sends + 1):
        assert await store.insert_sender_claim(SenderClaim(
            sender=name, seq=seq, message_key=f"{name}-{seq}", campaign_id="c",
            lead_id=f"l{seq}", sent_at=START + timedelta(minutes=seq)))
    return row


async def event(store: Store, key: str, kind: SenderEventKind = "bounce") -> SenderPause | None:
    return await record_sender_event(store, key, kind, max_bounce_rate=MAX_BOUNCE_RATE,
                                     now=START + timedelta(days=1))


async def test_bounces_over_the_rate_pause_the_sender_once(store: Store) -> None:
    await sender_with_sends(store, "ana", 100)
    for seq in (1, 2, 3):  # 3 of 100: 3.0% is not over 3%
        assert await event(store, f"ana-{seq}") is None
    row = await store.get_sender("ana")
    assert row is not None and not row.paused
    pause = await event(store, "ana-4")
    expected = ("bounces: 4 of the last 100 sends (4.0%) are over 3%; paused — check the "
                "list, then `campaign sender resume ana`")
    assert pause is not None and pause.model_dump(exclude={"paused_at"}) == {
        "sender": "ana", "reason": expected, "bounces": 4, "complaints": 0, "sends": 100}
    row = await store.get_sender("ana")
    assert row is not None and row.paused and row.paused_reason == expected
    assert await event(store, "ana-5") is None  # already paused: reported once
    held = await claim_slot(store, row, message_key="new", campaign_id="c", lead_id="x",
                            now=START + timedelta(days=1))
    assert isinstance(held, SlotWait) and held.reason == "paused"
    assert expected in held.detail


async def test_one_complaint_in_a_hundred_pauses_the_sender(store: Store) -> None:
    await sender_with_sends(store, "bo", 100)
    pause = await event(store, "bo-50", "complaint")
    assert pause is not None
    assert pause.reason.startswith("complaints: 1 of the last 100 sends (1.0%) are over 0.1%")
    assert pause.reason.endswith("`campaign sender resume bo`")
    health = await store.sender_health("bo")
    assert (health.sends, health.bounces, health.complaints) == (100, 0, 1)


async def test_only_the_last_hundred_sends_count(store: Store) -> None:
    """Four bounces among the oldest sends of 200 are outside the window: no pause."""
    await sender_with_sends(store, "cy", 200)
    for seq in (1, 2, 3, 4):
        assert await event(store, f"cy-{seq}") is None
    row = await store.get_sender("cy")
    assert row is not None and not row.paused
    health = await store.sender_health("cy")
    assert (health.sends, health.bounces) == (100, 0)


async def test_few_sends_need_at_least_three_bounces(store: Store) -> None:
    await sender_with_sends(store, "di", 10)
    assert await event(store, "di-1") is None
    assert await event(store, "di-2") is None  # 20%, but only 2 bounces
    pause = await event(store, "di-3")
    assert pause is not None and pause.reason.startswith(
        "bounces: 3 of the last 10 sends (30.0%) are over 3%")


async def test_an_event_for_a_message_sent_without_a_sender_changes_nothing(
        store: Store) -> None:
    await sender_with_sends(store, "ed", 3)
    assert await event(store, "unknown-message-key") is None
    assert (await store.sender_health("ed")).bounces == 0


async def test_a_person_resuming_clears_the_pause_and_the_next_event_can_pause_again(
        store: Store) -> None:
    await sender_with_sends(store, "fe", 100)
    for seq in range(1, 5):
        await event(store, f"fe-{seq}")
    assert await store.set_sender_paused("fe", False, None)
    row = await store.get_sender("fe")
    assert row is not None and not row.paused and row.paused_reason is None
    assert await event(store, "fe-5") is not None  # still unhealthy: paused again, reported


def test_the_reason_names_both_when_both_are_over() -> None:
    reason = pause_reason("ana", SenderHealth(sends=50, bounces=5, complaints=1), 0.05)
    assert reason == ("complaints: 1 of the last 50 sends (2.0%) are over 0.1%; bounces: 5 of "
                      "the last 50 sends (10.0%) are over 5%; paused — check the list and the "
                      "copy, then `campaign sender resume ana`")
    assert pause_reason("ana", SenderHealth(sends=100, bounces=3, complaints=0), 0.03) is None
    assert pause_reason("ana", SenderHealth(), 0.03) is None
