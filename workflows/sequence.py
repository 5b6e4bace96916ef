"""The DeliveryOrchestrator's follow-up loop: sends a sequence's later steps as they fall
due, on durable timers, without a workflow per lead.

The store holds who is due when (`sequence_steps`, written by the delivery agent when the
previous step is sent); this loop holds the clock. Each pass takes the time `tick`, pages
the steps due by then (by lead id, one open step a lead), starts their sends in the
orchestrator's sliding window, asks the store for the earliest later due time and sleeps
until then on a timer. A send that puts an earlier step on the schedule, a cancel or a
resume wakes it early. Stop conditions are read by the delivery agent at the moment of
sending. The loop runs beside step 1 (`DeliveryOrchestrator._step_1_with_follow_ups`), so
a follow-up due while step 1 is still going out is sent on time; it then does not end
before step 1 has reached everyone, and a full run is handed off to one continue-as-new for
both. A run continues as new before its history nears 10,000 events.
See "Sequences" in docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.sequence_agent import SequenceAgent
    from campaign_core.models import (
        ApprovedLead,
        DeliveryInput,
        DueRequest,
        DueStep,
        NextDueRequest,
        StopSequence,
    )
    from workflows.agents import call_agent


#: A run continues as new once its history passes this many events: the sends still in
#: flight then finish in it (at most a window of them), well under Temporal's 10,240
#: suggestion and its 51,200 limit, and under the 10,000 the issue sets.
EVENTS_PER_RUN = 7000

#: `workflow.patched` id: a pass over the due steps stops starting sends once the run is
#: full (before it, one pass started every step due at its tick, whatever their number).
BOUNDED_PASS = "follow-ups-bounded-pass"

#: Replies recorded per store call (one activity) when many arrive at once.
STOP_BATCH = 500

#: What a reply signal's kind stops a sequence with; automatic replies stop nothing.
REPLY_STOPS = {"reply": "replied", "bounce": "bounced"}

#: `workflow.patched` id: a run records out-of-office moves (issue 27) with its stops, an
#: activity no run before it scheduled (only runs that were sent the new signal call it).
OOO_MOVES = "out-of-office-moves"


def run_is_full() -> bool:
    """Time to continue as new: Temporal suggests it, or the history passed EVENTS_PER_RUN."""
    info = workflow.info()
    return info.is_continue_as_new_suggested() or info.get_current_history_length() > EVENTS_PER_RUN


@dataclass
class RunState:
    """What a delivery run's signal handlers set and its two loops (step 1 and the
    follow-ups) both read: the `DeliveryOrchestrator` owns it and hands it to its
    `FollowUps`, so neither reaches into the other's members."""

    paused: bool
    cancelled: bool = False
    #: Replies not yet recorded in the store, by stop reason.
    stop_queue: dict[str, list[str]] = field(default_factory=dict)
    #: Out-of-office replies not yet recorded (issue 27): lead id -> its next step's new
    #: earliest due time. Recorded with the stops (the orchestrator's `_flush_stops`).
    moves: dict[str, datetime] = field(default_factory=dict)
    #: Beside step 1: continue-as-new asked for (by either loop), step 1 sent to everyone,
    #: and sends started in this run by both loops.
    handoff: bool = False
    first_done: bool = False
    sends: int = 0
    #: A sender was resumed (issue 28): the follow-up loop asks the schedule again.
    wake: bool = False


class FollowUps:
    """The follow-up loop of one delivery run (see the module docstring).

    It owns the follow-up state (the steps in flight, the next due time) and is given the
    rest explicitly: the run's shared `state`, and what it asks of the orchestrator —
    `send` one step to one lead (in the orchestrator's window, pace and send window),
    `flush_stops` (record the replies' stops), `continue_as_new` (the next run is the
    follow-up loop alone) and `changed` (the counts shown in the UI moved).
    """

    def __init__(self, inp: DeliveryInput, state: RunState, *,
                 send: Callable[[ApprovedLead, int], Awaitable[None]],
                 flush_stops: Callable[[], Awaitable[None]],
                 continue_as_new: Callable[[], Awaitable[None]],
                 changed: Callable[[], None]) -> None:
        self.inp = inp
        self.state = state
        self.send = send
        self.flush_stops = flush_stops
        self.continue_as_new = continue_as_new
        self.changed = changed
        self.in_flight: dict[str, int] = {}  # lead id -> step being sent
        #: The earliest due time put on the schedule by a send since the store was last asked.
        self.new_due: datetime | None = None
        self.next_due: datetime | None = None
        #: Running beside step 1 (see `run`).
        self.alongside = False

    def scheduled(self, due: datetime) -> None:
        """A send put the lead's next step on the schedule at `due`."""
        if self.new_due is None or due < self.new_due:
            self.new_due = due

    def describe(self) -> str:
        if self.next_due is None:
            return f"; follow-ups: {len(self.in_flight)} in flight"
        return (f"; follow-ups: {len(self.in_flight)} in flight, next due "
                f"{self.next_due.isoformat(timespec='seconds')}")

    async def _one(self, due: DueStep) -> None:
        try:
            await self.send(ApprovedLead(lead_id=due.lead_id, timezone=due.timezone,
                                         domain=due.domain, sender=due.sender), due.step)
        finally:
            self.in_flight.pop(due.lead_id, None)

    def _woken(self) -> bool:
        """Wake before the timer: cancelled, a reply to record, or a send scheduled a step
        due earlier."""
        state = self.state
        if (state.cancelled or state.stop_queue or state.moves or state.wake
                or self._handing_off()):
            return True
        if self.new_due is not None and (self.next_due is None or self.new_due < self.next_due):
            return True
        return (self.next_due is None and not self.in_flight
                and (not self.alongside or state.first_done))

    def _full(self, started: int) -> bool:
        """This run has started its share of sends (`started` by this loop; beside step 1,
        both loops' together) or its history is near the bound."""
        sends = self.state.sends if self.alongside else started
        return sends >= self.inp.sends_per_run or run_is_full()

    def _handing_off(self) -> bool:
        """Beside step 1: either loop asked for continue-as-new, so start nothing more."""
        return self.alongside and self.state.handoff

    async def run(self, alongside: bool = False) -> None:
        """The loop. `alongside`: step 1 is still going out in the same run, so the loop
        does not end before it has (`state.first_done`), a run that is full hands off
        (`state.handoff`) instead of continuing as new itself, and a cancel's final stop
        is left to the orchestrator, which waits for step 1's sends first."""
        inp, state = self.inp, self.state
        self.alongside = alongside
        pending: set[asyncio.Task[None]] = set()
        started = 0
        max_pending = max(inp.in_flight, inp.page_size) * 2
        while not state.cancelled and not self._handing_off():
            await workflow.wait_condition(
                lambda: not state.paused or state.cancelled or self._handing_off())
            if state.cancelled or self._handing_off():
                break
            if state.stop_queue or state.moves:
                await self.flush_stops()
            state.wake = False
            tick = workflow.now()
            after: str | None = None
            # Thousands of follow-ups can fall due at one tick (step 1 went out in minutes):
            # the pass stops starting sends once the run is full, so that no run grows past
            # its bound; the next run asks the store again. Older histories paged on.
            bounded = workflow.patched(BOUNDED_PASS)
            full = False
            while not state.cancelled and not self._handing_off():
                page = await call_agent(
                    SequenceAgent.list_due_steps,
                    DueRequest(campaign_id=inp.campaign_id, before=tick, after=after,
                               limit=inp.page_size),
                    prefix=inp.queue_prefix, summary="follow-ups due now")
                for due in page:
                    if bounded and self._full(started):
                        full = True
                        break
                    if due.lead_id in self.in_flight:
                        continue
                    if len(pending) >= max_pending:
                        _, rest = await workflow.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                        pending = set(rest)
                    self.in_flight[due.lead_id] = due.step
                    pending.add(asyncio.create_task(self._one(due)))
                    started += 1
                    if alongside:
                        state.sends += 1
                if page:
                    after = page[-1].lead_id
                if full or len(page) < inp.page_size:
                    break
            pending = {t for t in pending if not t.done()}
            if alongside:
                if self._full(started):
                    state.handoff = True
                if state.handoff:
                    break
            elif self._full(started):
                if pending:
                    await workflow.wait(pending)
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not state.cancelled:
                    await self.continue_as_new()
            idle = not pending
            self.new_due = None
            self.next_due = await call_agent(
                SequenceAgent.next_due_at,
                NextDueRequest(campaign_id=inp.campaign_id, after=tick),
                prefix=inp.queue_prefix, summary="when the next follow-up is due")
            self.changed()
            if (self.next_due is None and idle and self.new_due is None
                    and (not alongside or state.first_done)):
                break  # nothing scheduled, nothing in flight, step 1 done: the sequence is over
            timeout = (max(self.next_due - workflow.now(), timedelta(0))
                       if self.next_due is not None else None)
            if timeout == timedelta(0):
                continue
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(self._woken, timeout=timeout,
                                              timeout_summary="next follow-up due")
        if pending:
            await workflow.wait(pending)
        await self.flush_stops()
        if state.cancelled and not alongside:
            await call_agent(
                SequenceAgent.stop_sequence,
                StopSequence(campaign_id=inp.campaign_id, reason="cancelled"),
                prefix=inp.queue_prefix, summary="cancelled: stop every open follow-up")
