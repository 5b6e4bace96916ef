"""A mailbox's capacity: its caps, minimum gap and warm-up ramp, where a waiting send goes,
and its health (issue 28).

Every send of a sender, from every campaign, is a claim (`SenderClaim`) appended with
`seq = last + 1` at the moment it is made, so a mailbox shared by two campaigns has one
cap. The rules, for a send at time t:

- the minimum gap: `t - last.sent_at >= min_gap_seconds`;
- the hourly cap: fewer than `hourly_cap` sends in the rolling hour `(t - 1h, t]`;
- the daily cap: fewer than `today_cap` sends in the rolling 24 hours `(t - 24h, t]`, where
  under a warm-up ramp today's cap is `min(daily_cap, ramp_start + (n - 1) * ramp_step)` on
  the n-th UTC day on which the sender has sent anything (a day without sends does not
  advance the ramp: a mailbox's reputation grows with what it sends, not with the calendar).

The pure functions (`today_cap`, `earliest_send`, `plan_slot`, `SlotPlanner`) decide; the
async ones read and write through the `Store` protocol's sender methods. A send that finds
no capacity is given a planned slot after every send made *and* every send already waiting
(their planned times count as future sends), plus a little jitter so sends do not land on
exact minutes; the delivery workflow sleeps on a durable timer until then.
"""

from __future__ import annotations

import asyncio
import bisect
import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta

from pydantic import BaseModel

from campaign_core.secret_refs import redact
from campaign_core.senders import (
    HEALTH_WINDOW,
    MAX_COMPLAINT_RATE,
    MIN_BOUNCES,
    MIN_COMPLAINTS,
    SenderClaim,
    SenderEventKind,
    SenderHealth,
    SenderRow,
    SenderStatus,
    SlotGranted,
    SlotWait,
)
from campaign_core.settings import Settings
from campaign_core.store.base import Store

HOUR = timedelta(hours=1)
DAY = timedelta(hours=24)
#: A waiter's jitter is uniform in [0, max(JITTER_SHARE * min_gap, JITTER_FLOOR)].
JITTER_SHARE = 0.2
JITTER_FLOOR = timedelta(seconds=5)
#: Two planned waiters are at least this far apart, even with no minimum gap, so the
#: planned slots are distinct and their order is the order they were planned in.
PLAN_SPACING = timedelta(seconds=1)
#: How many times a claim reads again after a concurrent writer took the next `seq`.
CLAIM_ATTEMPTS = 64


class SlotContention(RuntimeError):
    """Concurrent writers took the sender's next send slot first, every time: retry the
    activity (retryable; nothing was claimed)."""


class SenderPause(BaseModel):
    """A sender that `record_sender_event` has just paused: the caller audits it and meters
    it (`campaign_sender_paused`)."""

    sender: str
    reason: str
    bounces: int
    complaints: int
    sends: int
    paused_at: datetime


# -- the ramp ---------------------------------------------------------------------------------


def today_cap(row: SenderRow, day_number: int) -> int:
    """The cap of the rolling 24 hours on the sender's `day_number`-th sending day."""
    if row.ramp_start is None or row.ramp_step is None:
        return row.daily_cap
    return min(row.daily_cap, row.ramp_start + (max(day_number, 1) - 1) * row.ramp_step)


def day_number_for(last: SenderClaim | None, at: datetime) -> int:
    """The ramp day a send at `at` falls on: the last send's day number on the same UTC
    day, the next one on a later day, 1 for the first send ever."""
    if last is None:
        return 1
    return last.day_number + (1 if _utc_day(at) > _utc_day(last.sent_at) else 0)


def _utc_day(at: datetime) -> date:
    return _utc(at).date()


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _next_midnight(at: datetime) -> datetime:
    return datetime.combine(_utc_day(at) + timedelta(days=1), time(), tzinfo=UTC)


# -- when the next send may go -------------------------------------------------------------


def _earliest(row: SenderRow, times: Sequence[datetime], last_at: datetime | None,
              last_day: int, start: datetime, spacing: timedelta = timedelta(0)) -> datetime:
    """The earliest t >= start at which one more send keeps every rule, given every send's
    time (`times`, ascending, UTC) and the latest send's time and ramp day.

    The hourly rule `#{s in times: s > t - 1h} < hourly_cap` holds exactly from the
    hourly_cap-th latest send plus an hour on (counting sends after t too, which only errs
    on the safe side when clocks disagree); the same for the day with today's cap, which
    may rise at a UTC midnight under the ramp, so a midnight before the 24-hour bound is
    tried first. Every rule, once it holds, holds at any later t: one pass, no search."""
    t = start
    if last_at is not None:
        t = max(t, last_at + max(timedelta(seconds=row.min_gap_seconds), spacing))
    if len(times) >= row.hourly_cap:
        t = max(t, times[-row.hourly_cap] + HOUR)

    def ramp_day(at: datetime) -> int:
        if last_at is None:
            return 1
        return last_day + (1 if _utc_day(at) > _utc_day(last_at) else 0)

    while True:
        cap = today_cap(row, ramp_day(t))
        if len(times) < cap:
            return t
        bound = times[-cap] + DAY
        if bound <= t:
            return t
        # Under a ramp, the next UTC day may raise the cap before the window frees; on
        # [t, midnight) the cap is the same, and the window is full there.
        midnight = _next_midnight(t)
        if midnight < bound and today_cap(row, ramp_day(midnight)) > cap:
            t = midnight
            continue
        return bound


def earliest_send(row: SenderRow, recent: Sequence[SenderClaim], last: SenderClaim | None,
                  now: datetime) -> datetime:
    """The earliest t >= now at which one more send keeps the minimum gap after `last`,
    the hourly cap and today's cap (under the ramp), given the sends of the last 24 hours
    (`recent`, oldest first). `now` itself when it may go now."""
    times = sorted(_utc(c.sent_at) for c in recent)
    last_at = _utc(last.sent_at) if last is not None else None
    return _earliest(row, times, last_at, last.day_number if last is not None else 1, _utc(now))


class SlotPlanner:
    """Where waiting sends go, simulated once: built from the sends made and the slots
    already planned (taken as future sends), each `next()` places one more waiter in
    O(1) amortised, after all of them. `plan_slot` is one `next()`; a caller placing
    many waiters at once keeps the planner."""

    def __init__(self, row: SenderRow, recent: Sequence[SenderClaim], last: SenderClaim | None,
                 planned: Sequence[datetime], now: datetime) -> None:
        self.row = row
        self.now = _utc(now)
        self.times: list[datetime] = sorted(_utc(c.sent_at) for c in recent)
        self.last_at: datetime | None = _utc(last.sent_at) if last is not None else None
        self.last_day = last.day_number if last is not None else 1
        for at in sorted(_utc(p) for p in planned):
            self._add(at)

    def _add(self, at: datetime) -> None:
        """Count a send at `at` (a planned waiter): its time, and the ramp day it is on."""
        if self.last_at is None:
            self.last_day = 1
        elif _utc_day(at) > _utc_day(self.last_at):
            self.last_day += 1
        if self.times and at < self.times[-1]:
            bisect.insort(self.times, at)
        else:
            self.times.append(at)
        if self.last_at is None or at >= self.last_at:
            self.last_at = at

    def next(self, rng: random.Random | None = None) -> datetime:
        """The next waiter's slot: the earliest time keeping every rule after all the sends
        and waiters so far (at least PLAN_SPACING after the last), plus jitter."""
        rng = rng or random.Random()
        at = _earliest(self.row, self.times, self.last_at, self.last_day, self.now,
                       spacing=PLAN_SPACING)
        jitter = max(JITTER_SHARE * timedelta(seconds=self.row.min_gap_seconds), JITTER_FLOOR)
        at += timedelta(seconds=rng.uniform(0, jitter.total_seconds()))
        self._add(at)
        return at


def plan_slot(row: SenderRow, recent: Sequence[SenderClaim], last: SenderClaim | None,
              planned: Sequence[datetime], now: datetime,
              rng: random.Random | None = None) -> datetime:
    """Where a new waiter goes: after the sends made and the waiters already planned
    (`planned`: their due times), at the earliest time every rule allows, plus jitter of
    up to 20% of the minimum gap (at least up to 5 s) so sends do not land on exact
    minutes. O(n log n) in the planned waiters."""
    return SlotPlanner(row, recent, last, planned, now).next(rng)


# -- claiming a send ------------------------------------------------------------------------


async def claim_slot(store: Store, row: SenderRow, *, message_key: str,
                     campaign_id: str | None, lead_id: str | None, now: datetime,
                     rng: random.Random | None = None, was_planned: bool = False
                     ) -> SlotGranted | SlotWait:
    """Claim the sender's next send for this message, or say how long to wait.

    A paused sender holds every send (`paused`). A message that already has a claim is a
    retry of a send already counted: granted again, no second row. Otherwise the sends of
    the last 24 hours are read and, if one more may go now, the claim is appended as
    `last.seq + 1`; a concurrent writer that took that seq first makes this read again
    (bounded: `SlotContention`). No capacity: wait until a planned slot, after every
    waiter already planned for this sender. A send that was itself planned and is now
    due (`was_planned`) but finds the mailbox not yet free (the previous waiter went out a
    little late, or a resumed sender's held sends were all released at once) goes behind
    only the waiters packed back to back from the moment the mailbox frees (`packed_from`),
    not behind every other waiter: a second or two of lateness must not send a lead to the
    back of a queue days long."""
    if row.paused:
        return SlotWait(reason="paused", next_slot=None,
                        detail=f"sender {row.name} is paused: {row.paused_reason or 'by a person'}")
    existing = await store.sender_claim_for(message_key)
    if existing is not None:
        return SlotGranted(claim=existing)
    now = _utc(now)
    rng = rng or random.Random()
    for attempt in range(CLAIM_ATTEMPTS):
        last = await store.last_sender_claim(row.name)
        recent = await store.sender_claims_since(row.name, now - DAY)
        free_at = earliest_send(row, recent, last, now)
        if free_at > now:
            planned = await store.planned_waits(row.name, now)
            if was_planned:
                planned = packed_from(row, free_at, planned)
            slot = plan_slot(row, recent, last, planned, now, rng)
            return SlotWait(reason="capacity", next_slot=slot,
                            detail=_wait_detail(row, recent, last, now, len(planned)))
        claim = SenderClaim(sender=row.name, seq=(last.seq + 1) if last else 1,
                            message_key=message_key, campaign_id=campaign_id, lead_id=lead_id,
                            sent_at=now, day_number=day_number_for(last, now))
        if await store.insert_sender_claim(claim):
            # True also when a concurrent retry of this message wrote its claim first.
            return SlotGranted(claim=await store.sender_claim_for(message_key) or claim)
        if attempt >= 3:  # many writers on one mailbox: spread their next reads out
            await asyncio.sleep(rng.uniform(0, min(0.001 * 2 ** attempt, 0.05)))
    raise SlotContention(
        f"sender {row.name}: {CLAIM_ATTEMPTS} concurrent sends took the next slot first; "
        "retrying")


def packed_from(row: SenderRow, free_at: datetime, planned: Sequence[datetime]
                ) -> list[datetime]:
    """The waiters planned back to back from the moment the mailbox frees (each within a
    gap and its jitter of the one before), which a planned send that found its mailbox
    taken goes behind: the first free place, not the back of a queue days long (a waiter a
    second late), and not the same instant as every other (a resumed sender's held sends,
    all released at once, then spread out a gap apart instead of all retrying together)."""
    step = timedelta(seconds=row.min_gap_seconds) + max(
        JITTER_SHARE * timedelta(seconds=row.min_gap_seconds), JITTER_FLOOR) + PLAN_SPACING
    run: list[datetime] = []
    end = _utc(free_at) + step
    for at in sorted(_utc(p) for p in planned):
        if at > end:
            break
        run.append(at)
        end = at + step
    return run


def _wait_detail(row: SenderRow, recent: Sequence[SenderClaim], last: SenderClaim | None,
                 now: datetime, waiting: int) -> str:
    """Why a send waits, in a person's words (no address, no secret)."""
    sent_1h = sum(1 for c in recent if _utc(c.sent_at) > now - HOUR)
    cap = today_cap(row, day_number_for(last, now))
    parts = [f"{len(recent)}/{cap} in 24 h", f"{sent_1h}/{row.hourly_cap} in the hour"]
    if row.min_gap_seconds and last is not None:
        parts.append(f"gap {row.min_gap_seconds}s")
    behind = f"; {waiting} already waiting" if waiting else ""
    return f"sender {row.name} is at capacity ({', '.join(parts)}){behind}"


# -- what `sender list` shows -------------------------------------------------------------------


async def sender_status(store: Store, row: SenderRow, settings: Settings,
                        now: datetime) -> SenderStatus:
    """One item of `campaign sender list --json` / `GET /senders`: caps, today's cap under
    the ramp, the sends of the last 24 hours and hour, when the next send may go (None while
    paused), the health rates, and the URLs redacted."""
    now = _utc(now)
    last = await store.last_sender_claim(row.name)
    recent = await store.sender_claims_since(row.name, now - DAY)
    health = await store.sender_health(row.name, HEALTH_WINDOW)
    return SenderStatus(
        name=row.name, from_=row.from_addr, transport=row.transport,
        smtp_url=redact(row.smtp_url, settings), imap_url=redact(row.imap_url, settings),
        daily_cap=row.daily_cap, hourly_cap=row.hourly_cap,
        min_gap_seconds=row.min_gap_seconds, ramp_start=row.ramp_start,
        ramp_step=row.ramp_step, today_cap=today_cap(row, day_number_for(last, now)),
        sent_24h=sum(1 for c in recent if _utc(c.sent_at) > now - DAY),
        sent_1h=sum(1 for c in recent if _utc(c.sent_at) > now - HOUR),
        next_slot=None if row.paused else earliest_send(row, recent, last, now),
        bounce_rate=health.bounce_rate, complaint_rate=health.complaint_rate,
        paused=row.paused, paused_reason=row.paused_reason,
        dkim_selector=row.dkim_selector, created_at=row.created_at,
    )


# -- health ------------------------------------------------------------------------------------


def pause_reason(sender: str, health: SenderHealth, max_bounce_rate: float) -> str | None:
    """Why the sender should pause, in a person's words, or None while it is healthy:
    bounces over `max_bounce_rate` with at least MIN_BOUNCES of them, or complaints over
    MAX_COMPLAINT_RATE with at least MIN_COMPLAINTS (Gmail's bulk-sender rule)."""
    reasons = []
    if health.complaints >= MIN_COMPLAINTS and health.complaint_rate > MAX_COMPLAINT_RATE:
        reasons.append(_over("complaints", health.complaints, health.sends,
                             health.complaint_rate, MAX_COMPLAINT_RATE))
    if health.bounces >= MIN_BOUNCES and health.bounce_rate > max_bounce_rate:
        reasons.append(_over("bounces", health.bounces, health.sends, health.bounce_rate,
                             max_bounce_rate))
    if not reasons:
        return None
    what = "the list" if health.complaints < MIN_COMPLAINTS else "the list and the copy"
    return (f"{'; '.join(reasons)}; paused — check {what}, then "
            f"`campaign sender resume {sender}`")


def _over(kind: str, count: int, sends: int, rate: float, limit: float) -> str:
    return (f"{kind}: {count} of the last {sends} sends ({rate:.1%}) are over "
            f"{_percent(limit)}")


def _percent(rate: float) -> str:
    return f"{rate * 100:.4g}%"


async def record_sender_event(store: Store, message_key: str, kind: SenderEventKind, *,
                              max_bounce_rate: float, now: datetime) -> SenderPause | None:
    """A bounce or complaint came back for a message: flag its send, and pause its sender
    when its health over the last HEALTH_WINDOW sends crossed a threshold. Returns the
    pause only when this call paused it (not when it was paused already, nor for a message
    sent without a sender), so the caller audits and meters it once."""
    sender = await store.mark_sender_event(message_key, kind)
    if sender is None:
        return None
    health = await store.sender_health(sender, HEALTH_WINDOW)
    reason = pause_reason(sender, health, max_bounce_rate)
    if reason is None:
        return None
    row = await store.get_sender(sender)
    if row is None or row.paused or row.removed_at is not None:
        return None
    if not await store.set_sender_paused(sender, True, reason, if_not_paused=True):
        return None  # another event paused it first: that one reports the pause
    return SenderPause(sender=sender, reason=reason, bounces=health.bounces,
                       complaints=health.complaints, sends=health.sends, paused_at=_utc(now))
