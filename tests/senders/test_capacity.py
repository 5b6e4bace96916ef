"""A mailbox's capacity (campaign_core/sender_capacity.py): the caps, the minimum gap and the
warm-up ramp hold in every rolling window, waiting sends are planned where they may go, and
two campaigns claiming one mailbox at once, on the real SQLite and PostgreSQL stores, share
its cap and never double a send.

The rules are checked by a reference (`allowed`) written from their definition, not from
the module's shortcuts: a send at t keeps the gap after the previous one, and fewer than the
cap of sends lie in (t - 1h, t] and (t - 24h, t], the 24-hour cap being today's under the
ramp on the n-th UTC day the sender sent anything.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from campaign_core.ids import message_key
from campaign_core.leads import parse_lead_rows
from campaign_core.sender_capacity import (
    JITTER_FLOOR,
    SlotPlanner,
    claim_slot,
    day_number_for,
    earliest_send,
    plan_slot,
    sender_status,
    today_cap,
)
from campaign_core.senders import SenderClaim, SenderRow, SlotGranted, SlotWait
from campaign_core.settings import Settings
from campaign_core.store.base import Store
from tests.fakes import pg_fixtures

pg_cluster = pg_fixtures.pg_cluster
pg_url = pg_fixtures.pg_url

HOUR = timedelta(hours=1)
DAY = timedelta(hours=24)
START = datetime(2025, 3, 3, 7, 30, tzinfo=UTC)  # a Monday morning, UTC


def sender(**kw: object) -> SenderRow:
    fields: dict[str, object] = {"name": "ana", "from_addr": "Ana Ruiz <ana@acme.io>",
                                 "transport": "outbox", "created_at": START - DAY}
    return SenderRow.model_validate(fields | kw)


# -- the reference ----------------------------------------------------------------------------


def ramp_days(sends: list[SenderClaim]) -> list[int]:
    """The ramp day of each send, from the definition: the number of distinct UTC days on
    which the sender had sent anything, up to and including this send's day."""
    days: list[int] = []
    seen: set[object] = set()
    for c in sends:
        seen.add(c.sent_at.date())
        days.append(len(seen))
    return days


def allowed(row: SenderRow, sends: list[SenderClaim], t: datetime) -> bool:
    """Whether one more send at t keeps every rule (sends: every earlier send, in order)."""
    if sends and t - sends[-1].sent_at < timedelta(seconds=row.min_gap_seconds):
        return False
    if sum(1 for c in sends if c.sent_at > t - HOUR) >= row.hourly_cap:
        return False
    day = len({c.sent_at.date() for c in sends} | {t.date()})
    return sum(1 for c in sends if c.sent_at > t - DAY) < today_cap(row, day)


def check_windows(row: SenderRow, sends: list[SenderClaim]) -> None:
    """Every rolling hour and 24 hours ending at a send holds at most its cap (a window
    ending elsewhere holds no more than the one ending at its latest send), every gap holds,
    and the day numbers written are the definition's."""
    for i, (c, day) in enumerate(zip(sends, ramp_days(sends), strict=True)):
        assert c.day_number == day, f"send {i}: day {c.day_number}, expected {day}"
        in_hour = [s for s in sends[: i + 1] if s.sent_at > c.sent_at - HOUR]
        in_day = [s for s in sends[: i + 1] if s.sent_at > c.sent_at - DAY]
        assert len(in_hour) <= row.hourly_cap, f"send {i}: {len(in_hour)} in an hour"
        assert len(in_day) <= today_cap(row, day), f"send {i}: {len(in_day)} in 24 h"
        if i:
            gap = c.sent_at - sends[i - 1].sent_at
            assert gap >= timedelta(seconds=row.min_gap_seconds), f"send {i}: gap {gap}"


def recent_of(sends: list[SenderClaim], now: datetime) -> list[SenderClaim]:
    return [c for c in sends if c.sent_at > now - DAY]


def send(row: SenderRow, sends: list[SenderClaim], at: datetime) -> SenderClaim:
    last = sends[-1] if sends else None
    claim = SenderClaim(sender=row.name, seq=len(sends) + 1, message_key=f"m{len(sends) + 1}",
                        sent_at=at, day_number=day_number_for(last, at))
    sends.append(claim)
    return claim


# -- pure: caps, gap, ramp ------------------------------------------------------------------------


ROWS = {
    "caps": sender(daily_cap=30, hourly_cap=6, min_gap_seconds=90),
    "ramp": sender(daily_cap=20, hourly_cap=8, min_gap_seconds=60, ramp_start=5, ramp_step=2),
    "no gap": sender(daily_cap=10, hourly_cap=4, min_gap_seconds=0),
    "tight hour": sender(daily_cap=100, hourly_cap=1, min_gap_seconds=0),
}


@pytest.mark.parametrize("kind", list(ROWS))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_attempts_over_days_keep_every_cap(kind: str, seed: int) -> None:
    """Send attempts at random moments over six days (bursts and quiet spells): a send goes
    exactly when `earliest_send` says it may go now, which the reference must allow, and
    the reference must refuse every moment before a later answer."""
    row, rng = ROWS[kind], random.Random(seed)
    sends: list[SenderClaim] = []
    now, refused = START, 0
    while now < START + 6 * DAY:
        last = sends[-1] if sends else None
        at = earliest_send(row, recent_of(sends, now), last, now)
        assert at >= now
        if at == now:
            assert allowed(row, sends, now)
            send(row, sends, now)
        else:
            refused += 1
            assert allowed(row, sends, at), f"{at} given but not allowed"
            for back in (timedelta(microseconds=1), timedelta(seconds=1),
                         (at - now) * rng.random()):
                if at - back >= now:
                    assert not allowed(row, sends, at - back), f"{at - back} was free already"
        # Bursts of attempts seconds apart, then pauses up to several hours.
        now += timedelta(seconds=rng.choice([0, 1, 5, 30, 61, 600]) if rng.random() < 0.85
                         else rng.uniform(3600, 9 * 3600))
    check_windows(row, sends)
    assert refused and len(sends) > 20  # the caps bit, and sends went out
    assert len({c.sent_at.date() for c in sends}) > 3


def test_the_minimum_gap_is_kept_to_the_second() -> None:
    row = sender(min_gap_seconds=90)
    sends: list[SenderClaim] = []
    first = send(row, sends, START)
    assert earliest_send(row, sends, first, START + timedelta(seconds=10)) == \
        START + timedelta(seconds=90)
    assert earliest_send(row, sends, first, START + timedelta(seconds=90)) == \
        START + timedelta(seconds=90)
    # An old last send (no sends in the window) still sets the gap.
    assert earliest_send(row, [], first, START + timedelta(seconds=30)) == \
        START + timedelta(seconds=90)


def test_the_hourly_and_daily_windows_free_when_their_oldest_send_leaves() -> None:
    row = sender(daily_cap=3, hourly_cap=2, min_gap_seconds=0)
    sends: list[SenderClaim] = []
    for minutes in (0, 10):
        send(row, sends, START + timedelta(minutes=minutes))
    now = START + timedelta(minutes=20)
    assert earliest_send(row, sends, sends[-1], now) == START + HOUR  # (t - 1h, t] drops 0:00
    send(row, sends, START + HOUR)
    assert earliest_send(row, sends, sends[-1], START + HOUR) == START + DAY


def test_the_ramp_raises_the_cap_day_by_day() -> None:
    row = sender(daily_cap=15, hourly_cap=1000, min_gap_seconds=60, ramp_start=5, ramp_step=2)
    assert [today_cap(row, n) for n in range(1, 10)] == [5, 7, 9, 11, 13, 15, 15, 15, 15]
    assert today_cap(sender(daily_cap=15), 1) == 15  # no ramp: the daily cap from day one
    # Sending whenever allowed for nine days from midnight: each UTC day sends its cap.
    start = datetime(2025, 3, 3, tzinfo=UTC)
    sends: list[SenderClaim] = []
    now = start
    while now < start + 9 * DAY:
        now = earliest_send(row, recent_of(sends, now), sends[-1] if sends else None, now)
        if now >= start + 9 * DAY:
            break
        send(row, sends, now)
    per_day = [sum(1 for c in sends if c.sent_at.date() == (start + i * DAY).date())
               for i in range(9)]
    assert per_day == [5, 7, 9, 11, 13, 15, 15, 15, 15]
    check_windows(row, sends)


def test_a_day_without_sends_does_not_advance_the_ramp() -> None:
    first = SenderClaim(sender="ana", seq=1, message_key="m1", sent_at=START, day_number=3)
    assert day_number_for(None, START) == 1
    assert day_number_for(first, START + timedelta(hours=10)) == 3  # same UTC day
    assert day_number_for(first, START + 5 * DAY) == 4  # days off do not count
    row = sender(daily_cap=40, ramp_start=5, ramp_step=5)
    assert today_cap(row, day_number_for(first, START + 5 * DAY)) == 20


def test_the_ramp_lets_a_new_utc_day_send_before_the_window_frees() -> None:
    """Day 1 sent its 5 in the evening: at midnight day 2's cap of 7 allows two more,
    although none of the 5 has left the rolling 24 hours."""
    row = sender(daily_cap=20, hourly_cap=100, min_gap_seconds=0, ramp_start=5, ramp_step=2)
    sends: list[SenderClaim] = []
    evening = datetime(2025, 3, 3, 21, 0, tzinfo=UTC)
    for i in range(5):
        send(row, sends, evening + timedelta(minutes=i))
    now = evening + timedelta(minutes=30)
    midnight = datetime(2025, 3, 4, tzinfo=UTC)
    assert earliest_send(row, sends, sends[-1], now) == midnight
    send(row, sends, midnight)
    send(row, sends, midnight)
    assert earliest_send(row, sends, sends[-1], midnight) == evening + DAY  # 7 in 24 h
    check_windows(row, sends)


# -- pure: planning waiters ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(ROWS))
def test_planned_slots_are_increasing_distinct_and_valid_when_sent(kind: str) -> None:
    """A full mailbox and 300 sends that wait, each planned after the sends and the waiters
    before it: their slots increase, and sent at their times they keep every rule, none
    later than the earliest allowed moment plus the jitter."""
    row, rng = ROWS[kind], random.Random(7)
    sends: list[SenderClaim] = []
    now = START
    while (at := earliest_send(row, sends, sends[-1] if sends else None, now)) == now or \
            at < START + HOUR:
        send(row, sends, at)
        now = at
    planned: list[datetime] = []
    for _ in range(300):
        planned.append(plan_slot(row, recent_of(sends, now), sends[-1], planned, now, rng))
    assert planned == sorted(planned) and len(set(planned)) == len(planned)
    assert planned[0] > now
    jitter = max(timedelta(seconds=0.2 * row.min_gap_seconds), JITTER_FLOOR)
    for slot in planned:
        recent = recent_of(sends, slot)
        earliest = earliest_send(row, recent, sends[-1], slot - jitter - timedelta(seconds=1))
        assert allowed(row, sends, slot), f"planned {slot} is not allowed when it comes"
        assert slot <= earliest + jitter + timedelta(seconds=1), "planned later than needed"
        send(row, sends, slot)
    check_windows(row, sends)


def test_a_planner_kept_places_waiters_as_one_call_each_would() -> None:
    row = ROWS["ramp"]
    sends: list[SenderClaim] = []
    for i in range(5):
        send(row, sends, START + timedelta(minutes=i))
    now = START + timedelta(minutes=10)
    one_by_one: list[datetime] = []
    rng = random.Random(3)
    for _ in range(60):
        one_by_one.append(plan_slot(row, sends, sends[-1], one_by_one, now, rng))
    planner, rng = SlotPlanner(row, sends, sends[-1], [], now), random.Random(3)
    assert [planner.next(rng) for _ in range(60)] == one_by_one


def test_jitter_keeps_sends_off_exact_minutes() -> None:
    row = sender(daily_cap=1000, hourly_cap=1000, min_gap_seconds=60)
    sends: list[SenderClaim] = []
    send(row, sends, START)
    slots: list[datetime] = []
    rng = random.Random(11)
    for _ in range(50):
        slots.append(plan_slot(row, sends, sends[-1], slots, START, rng))
    gaps = {(b - a).total_seconds() for a, b in zip([START, *slots], slots, strict=False)}
    assert len(gaps) > 40 and min(gaps) >= 60 and max(gaps) <= 72


# -- against the real stores ---------------------------------------------------------------------


store = pg_fixtures.sql_store  # SQLite, then PostgreSQL


async def campaign_with_leads(store: Store, cid: str, n: int) -> list[str]:
    rows = [{"email": f"p{i}@{cid}.example", "company": f"Co {i}"} for i in range(n)]
    intake = parse_lead_rows(enumerate(rows, start=2), cid)
    await store.upsert_campaign(campaign_id=cid, name=cid, brief="", channel="outbox",
                                kb_dir=None, workflow_id=f"campaign:{cid}")
    await store.upsert_leads(cid, intake.leads)
    return [lead.lead_id for lead in intake.leads]


async def test_two_campaigns_claiming_one_mailbox_at_once_share_its_cap(store: Store) -> None:
    """Forty claims from two campaigns at once, on a mailbox with room for 12 in the hour:
    exactly 12 are granted (one row each, seqs 1..12); the others wait, planned in order
    one after another after every waiter before them, as the delivery agent records them."""
    row = sender(daily_cap=40, hourly_cap=12, min_gap_seconds=0)
    assert await store.add_sender(row)
    leads = {cid: await campaign_with_leads(store, cid, 20) for cid in ("c-one", "c-two")}
    now = datetime.now(UTC)

    async def one(cid: str, lead_id: str) -> SlotGranted | SlotWait:
        slot = await claim_slot(store, row, message_key=message_key(cid, lead_id),
                                campaign_id=cid, lead_id=lead_id, now=now)
        if isinstance(slot, SlotWait):
            assert slot.next_slot is not None
            await store.defer_step(cid, lead_id, 1, slot.next_slot, row.name, slot.reason)
        return slot

    results = await asyncio.gather(*(one(cid, lead_id) for lead_id_pair in
                                     zip(leads["c-one"], leads["c-two"], strict=True)
                                     for cid, lead_id in zip(leads, lead_id_pair, strict=True)))
    granted = [r for r in results if isinstance(r, SlotGranted)]
    waits = [r for r in results if isinstance(r, SlotWait)]
    assert len(granted) == 12 and len(waits) == 28
    claims = await store.sender_claims_since(row.name, now - HOUR)
    assert [c.seq for c in claims] == list(range(1, 13))
    assert {c.message_key for c in claims} == {g.claim.message_key for g in granted}
    assert {c.campaign_id for c in claims} == {"c-one", "c-two"}
    assert all(w.reason == "capacity" for w in waits)
    planned = await store.planned_waits(row.name, now)
    # Waiters planned one after another are spread; concurrent ones may share a moment.
    assert len(planned) == 28 and planned == sorted(planned)
    assert all(t >= claims[0].sent_at + HOUR for t in planned)


async def test_claims_over_days_keep_every_cap_on_the_store(store: Store) -> None:
    """Two campaigns take turns at random moments over three days, claiming through the
    store: what it holds keeps every cap, gap and ramp day."""
    row = sender(daily_cap=12, hourly_cap=4, min_gap_seconds=120, ramp_start=4, ramp_step=3)
    assert await store.add_sender(row)
    rng = random.Random(5)
    now, n = START, 0
    while now < START + 3 * DAY:
        cid = rng.choice(["c-one", "c-two"])
        n += 1
        await claim_slot(store, row, message_key=f"msg-{n}", campaign_id=cid,
                         lead_id=f"l{n}", now=now, rng=rng)
        now += timedelta(seconds=rng.choice([30, 90, 600, 1800, 5400]))
    claims = await store.sender_claims_since(row.name, START - DAY)
    assert len(claims) > 20
    check_windows(row, claims)
    assert max(c.day_number for c in claims) == len({c.sent_at.date() for c in claims}) == 4


async def test_a_retry_is_granted_again_without_a_second_row(store: Store) -> None:
    row = sender(daily_cap=2, hourly_cap=2, min_gap_seconds=0)
    assert await store.add_sender(row)
    first = await claim_slot(store, row, message_key="msg-1", campaign_id="c", lead_id="l1",
                             now=START)
    await claim_slot(store, row, message_key="msg-2", campaign_id="c", lead_id="l2", now=START)
    full = await claim_slot(store, row, message_key="msg-3", campaign_id="c", lead_id="l3",
                            now=START)
    assert isinstance(first, SlotGranted) and isinstance(full, SlotWait)
    again = await claim_slot(store, row, message_key="msg-1", campaign_id="c", lead_id="l1",
                             now=START + timedelta(minutes=5))
    assert isinstance(again, SlotGranted) and again.claim == first.claim
    retries = await asyncio.gather(*(claim_slot(store, row, message_key="msg-2",
                                                campaign_id="c", lead_id="l2", now=START)
                                     for _ in range(5)))
    assert all(isinstance(r, SlotGranted) and r.claim.seq == 2 for r in retries)
    assert len(await store.sender_claims_since(row.name, START - DAY)) == 2


async def test_a_paused_sender_holds_every_send(store: Store) -> None:
    row = sender()
    assert await store.add_sender(row)
    assert await store.set_sender_paused(row.name, True, "paused by Ana")
    paused = await store.get_sender(row.name)
    assert paused is not None and paused.paused
    slot = await claim_slot(store, paused, message_key="msg-1", campaign_id="c",
                            lead_id="l1", now=START)
    assert isinstance(slot, SlotWait) and slot.reason == "paused" and slot.next_slot is None
    assert "paused by Ana" in slot.detail
    assert await store.last_sender_claim(row.name) is None


async def test_sender_status_shows_capacity_and_hides_secrets(
        store: Store, settings: Settings) -> None:
    from pydantic import SecretStr

    from campaign_core.secret_refs import seal

    keyed = settings.model_copy(update={"encryption_key": SecretStr(
        "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")})
    row = sender(transport="smtp", smtp_url=seal("smtps://ana:hunter2@smtp.acme.io", keyed),
                 imap_url="env:ANA_IMAP_URL", daily_cap=10, hourly_cap=3, min_gap_seconds=60,
                 ramp_start=2, ramp_step=2)
    assert await store.add_sender(row)
    for i, minutes in enumerate((0, 5)):
        await claim_slot(store, row, message_key=f"msg-{i}", campaign_id="c", lead_id=f"l{i}",
                         now=START - timedelta(hours=2) + timedelta(minutes=minutes))
    now = START
    status = await sender_status(store, row, keyed, now)
    assert (status.today_cap, status.sent_24h, status.sent_1h) == (2, 2, 0)
    # Day 1's cap of 2 is used; day 2 (cap 4) starts at the next UTC midnight.
    assert status.next_slot == datetime(2025, 3, 4, tzinfo=UTC)
    tomorrow = await sender_status(store, row, keyed, datetime(2025, 3, 4, 1, tzinfo=UTC))
    assert tomorrow.today_cap == 4 and tomorrow.next_slot == datetime(2025, 3, 4, 1, tzinfo=UTC)
    assert status.smtp_url == "smtps://ana:***@smtp.acme.io"
    assert status.imap_url == "env:ANA_IMAP_URL"
    dumped = status.model_dump_json(by_alias=True)
    assert "hunter2" not in dumped and '"from":"Ana Ruiz <ana@acme.io>"' in dumped
    assert await store.set_sender_paused(row.name, True, "bounces")
    paused = await store.get_sender(row.name)
    assert paused is not None
    held = await sender_status(store, paused, keyed, now)
    assert held.paused and held.paused_reason == "bounces" and held.next_slot is None


class NoJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


def test_waiters_stay_apart_without_a_gap_or_jitter() -> None:
    """With no minimum gap and a jitter that happens to be 0, two waiters still get
    distinct slots, in the order they were planned."""
    row = sender(daily_cap=1000, hourly_cap=2, min_gap_seconds=0)
    sends: list[SenderClaim] = []
    send(row, sends, START)
    send(row, sends, START)
    slots: list[datetime] = []
    for _ in range(6):
        slots.append(plan_slot(row, sends, sends[-1], slots, START, NoJitter()))
    assert slots == sorted(set(slots))
    assert slots[0] == START + HOUR


async def test_sends_released_at_once_spread_out_instead_of_retrying_together(
        store: Store) -> None:
    """A resumed sender's 20 held sends all fall due at one instant, each a planned waiter.
    Served one at a time as the delivery loop does (the earliest due first, the clock at its
    due time), they go out a gap apart with a few claims each, not 20 x 20: each waiter that
    finds the mailbox taken goes behind the ones planned around that moment."""
    row = sender(daily_cap=1000, hourly_cap=1000, min_gap_seconds=60)
    assert await store.add_sender(row)
    leads = await campaign_with_leads(store, "c-held", 20)
    due = {lid: START for lid in leads}  # released: all due now
    rng = random.Random(7)
    calls = 0
    while due:
        lid = min(due, key=lambda k: (due[k], k))
        now = due.pop(lid)
        calls += 1
        got = await claim_slot(store, row, message_key=message_key("c-held", lid, 1),
                               campaign_id="c-held", lead_id=lid, now=now, rng=rng,
                               was_planned=True)
        if isinstance(got, SlotWait):
            assert got.next_slot is not None and got.next_slot > now
            await store.defer_step("c-held", lid, 1, got.next_slot, row.name, "capacity")
            due[lid] = got.next_slot
        else:
            await store.clear_step_wait("c-held", lid, 1)
    sends = await store.sender_claims_since(row.name, START - DAY)
    assert len(sends) == 20
    gaps = [(b.sent_at - a.sent_at).total_seconds() for a, b in itertools.pairwise(sends)]
    assert min(gaps) >= 60
    assert calls <= 3 * 20, calls  # all retrying together took 20 + 19 + ... = 210
