"""What planning waiting sends costs when a mailbox has thousands of them (issue 28).

A send that finds its mailbox full is planned after every send made and every send already
waiting (`plan_slot`): the delivery agent calls it once per waiting send, with the due times
of all the waiters before it. This times, on a mailbox (daily cap 40, hourly 12, gap 60 s)
whose last 24 hours are full:

- one `plan_slot` call with N waiters already planned (what one more waiting send costs);
- placing N waiters with one kept `SlotPlanner` (the simulation done once);
- placing N waiters by N `plan_slot` calls, each given the waiters before it (what N
  sends deferred one at a time cost in all).

Pure computation, no store. Not part of the test suite.

    .venv/bin/python -m bench.bench_sender_capacity [--waiters 5000] [--repeat 5] [--write]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bench.docs import write_section
from campaign_core.sender_capacity import (
    SlotPlanner,
    day_number_for,
    earliest_send,
    plan_slot,
)
from campaign_core.senders import SenderClaim, SenderRow

NOW = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)


def full_mailbox() -> tuple[SenderRow, list[SenderClaim]]:
    """A sender whose rolling 24 hours hold its daily cap: 40 sends since yesterday noon."""
    row = SenderRow(name="ana", from_addr="Ana <ana@acme.io>", transport="outbox",
                    daily_cap=40, hourly_cap=12, min_gap_seconds=60, created_at=NOW)
    sends: list[SenderClaim] = []
    at = NOW - timedelta(hours=23)
    for seq in range(1, 41):
        last = sends[-1] if sends else None
        sends.append(SenderClaim(sender=row.name, seq=seq, message_key=f"m{seq}", sent_at=at,
                                 day_number=day_number_for(last, at)))
        at += timedelta(minutes=30)
    assert earliest_send(row, sends, sends[-1], NOW) > NOW
    return row, sends


def timed(repeat: int, work: Callable[[], None]) -> float:
    """The median seconds of `repeat` runs of `work()`."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main(waiters: int, repeat: int) -> dict[str, float]:
    row, sends = full_mailbox()
    rng = random.Random(1)
    planner = SlotPlanner(row, sends, sends[-1], [], NOW)
    planned = [planner.next(rng) for _ in range(waiters)]
    days = (planned[-1] - NOW) / timedelta(days=1)

    def one_call() -> None:
        plan_slot(row, sends, sends[-1], planned, NOW, rng)

    def kept_planner() -> None:
        p = SlotPlanner(row, sends, sends[-1], [], NOW)
        for _ in range(waiters):
            p.next(rng)

    def call_each() -> None:
        so_far: list[datetime] = []
        for _ in range(waiters):
            so_far.append(plan_slot(row, sends, sends[-1], so_far, NOW, rng))

    figures = {
        "one_call_ms": timed(repeat, one_call) * 1000,
        "planner_ms": timed(repeat, kept_planner) * 1000,
        "call_each_s": timed(max(1, repeat // 5), call_each),
        "days": days,
    }
    print(f"{waiters} waiters planned over {days:.0f} days (cap 40 a day):")
    print(f"  one plan_slot call with {waiters} already planned: {figures['one_call_ms']:.2f} ms")
    print(f"  {waiters} waiters with one kept SlotPlanner:      {figures['planner_ms']:.1f} ms")
    print(f"  {waiters} waiters by {waiters} plan_slot calls:      "
          f"{figures['call_each_s']:.2f} s")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--waiters", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--write", action="store_true",
                        help="write the figures into docs/performance.md")
    args = parser.parse_args()
    f = main(args.waiters, args.repeat)
    if args.write:
        table = "\n".join([
            "| what | time |", "|---|---|",
            f"| one `plan_slot` call, {args.waiters} waiters already planned | "
            f"{f['one_call_ms']:.2f} ms |",
            f"| {args.waiters} waiters, one kept `SlotPlanner` | {f['planner_ms']:.1f} ms |",
            f"| {args.waiters} waiters, one `plan_slot` call each | {f['call_each_s']:.2f} s |",
        ])
        write_section(
            "bench_sender_capacity", "Planning sends that wait for a mailbox's capacity",
            f"a mailbox (40 a day, 12 an hour, 60 s gap) with its 24 hours full and "
            f"{args.waiters} sends waiting (planned over {f['days']:.0f} days); median of "
            f"{args.repeat} runs.", table)
