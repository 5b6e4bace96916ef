"""DeliveryOrchestrator: sends a campaign's approved drafts, inside their send windows.

Pages approved leads, waits durably for each lead's send window, paces sends, and
pauses itself when bounces pass the circuit breaker's threshold. A sequence's
follow-ups are sent as they fall due (`workflows/sequence.py`), by a loop that runs beside
step 1, so that a follow-up due while step 1 is still going out is not held back. See
docs/architecture.md ("Orchestration and wiring", "Sequences").
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.delivery import DeliveryAgent
    from activities.sequence_agent import SequenceAgent
    from activities.store_agent import StoreAgent
    from campaign_core.metrics import EngineMetrics
    from campaign_core.models import (
        ApprovedLead,
        DeliverInput,
        DeliveryEventKind,
        DeliveryEventSignal,
        DeliveryInput,
        DeliveryResult,
        MoveSteps,
        OutOfOfficeSignal,
        PageRequest,
        ReplySignal,
        StepFailure,
        StepMove,
        StopSequence,
    )
    from campaign_core.send_window import next_open
    from campaign_core.sequence import replied_in
    from workflows.agents import call_agent
    from workflows.breaker import BreakerListener
    from workflows.lead import failure_reason
    from workflows.sequence import (
        OOO_MOVES,
        REPLY_STOPS,
        STOP_BATCH,
        FollowUps,
        RunState,
        run_is_full,
    )


MINUTE = timedelta(minutes=1)
#: The follow-up loop runs beside step 1 instead of after it (a run recorded before this
#: marker replays the old order: step 1 to everyone, then the follow-ups).
FOLLOW_UPS_ALONGSIDE = "follow-ups-alongside-step-1"


@workflow.defn(name="DeliveryOrchestrator")
class DeliveryOrchestrator:
    @workflow.init
    def __init__(self, inp: DeliveryInput) -> None:
        """The state a run starts from, set before any signal of the run's first task is
        handled: a pause, resume, reply or bounce that arrives right after a
        continue-as-new must change the carried state, not be overwritten by it (a pause
        there was lost, and the follow-ups it should have held went out)."""
        self._inp = inp
        self._result = inp.result.model_copy()
        #: Paused, cancelled, replies to record, and what step 1 and the follow-up loop share.
        self._state = RunState(paused=inp.paused)
        self._waiting_for_window = 0
        self._recent: dict[str, list[datetime]] = {
            d: list(ts) for d, ts in inp.recent_by_domain.items()}
        self._next_send_at: datetime | None = None
        self._breaker_tripped = inp.breaker_tripped
        #: Leads whose sequence a reply stopped during this run: their next step is not sent.
        self._stopped: dict[str, str] = {}
        self._follow_ups: FollowUps | None = None
        #: Step 1 beside the follow-ups: where step 1 goes on in the next run.
        self._after: str | None = None
        #: Follow-ups waiting for the campaign pace: step 1 lets them go first.
        self._follow_ups_pacing = 0
        #: One send of a mailbox at a time in this run (issue 28): each send's claim, or
        #: its planned wait, sees the waits planned before it, so a run's many sends of one
        #: mailbox are not all planned into the same slot (a mailbox sends one at a time
        #: anyway, its minimum gap apart).
        self._sender_locks: dict[str, asyncio.Lock] = {}

    @workflow.query(name="progress")
    def progress(self) -> DeliveryResult:
        return self._result

    @workflow.signal(name="pause")
    def pause(self) -> None:
        self._state.paused = True

    @workflow.signal(name="resume")
    def resume(self) -> None:
        self._state.paused = False
        self._breaker_tripped = False  # a person looked and chose to go on

    @workflow.signal(name="senders_changed")
    def senders_changed(self) -> None:
        """A sender was resumed: wake the follow-up loop, whose schedule holds the sends
        that waited for it (issue 28)."""
        self._state.wake = True

    @workflow.signal(name="delivery_event")
    async def delivery_event(self, event: DeliveryEventSignal) -> None:
        """Count a bounce or complaint; trip the breaker when bounces pass the threshold."""
        r = self._result
        if event.kind is DeliveryEventKind.BOUNCE:
            r.bounced += 1
        elif event.kind is DeliveryEventKind.COMPLAINT:
            r.complaints += 1
        self._details()
        inp = self._inp
        if self._breaker_tripped or event.kind is not DeliveryEventKind.BOUNCE:
            return
        if r.sent < inp.bounce_min_sends or r.bounced <= inp.bounce_threshold * r.sent:
            return
        self._breaker_tripped = True
        self._state.paused = True
        reason = (f"circuit breaker: {r.bounced} bounces in {r.sent} sent "
                  f"({r.bounced / r.sent:.1%}) is over {inp.bounce_threshold:.0%}; delivery "
                  f"paused — check the list, then `campaign resume {inp.campaign_id}`")
        workflow.logger.warning(reason)
        self._details()
        parent = workflow.info().parent
        if parent is not None:
            await workflow.get_external_workflow_handle(parent.workflow_id).signal(
                BreakerListener.circuit_breaker, reason)

    @workflow.signal(name="cancel")
    def cancel(self) -> None:
        self._state.cancelled = True

    @workflow.signal(name="reply")
    def reply(self, signal: ReplySignal) -> None:
        """A reply (or a bounce that came back as mail) from a lead: stop its sequence now,
        so that a step already waiting for its due time never fires. Automatic replies
        (out of office) stop nothing. The stop is recorded by the run's loop, which the
        signal wakes: many replies at once are one store call, not one each."""
        reason = REPLY_STOPS.get(signal.kind)
        inp = self._inp
        if reason is None or not inp.follow_up_seconds:
            return
        if (reason == "replied" and signal.from_campaign is not None
                and signal.from_campaign != inp.campaign_id):
            reason = replied_in(signal.from_campaign)  # a reply to another campaign (issue 27)
        elif reason == "replied" and signal.reason:
            reason = signal.reason  # the reply's intent, read by its reply action (issue 27)
        self._state.moves.pop(signal.lead_id, None)
        self._stopped[signal.lead_id] = reason
        self._state.stop_queue.setdefault(reason, []).append(signal.lead_id)

    @workflow.signal(name="out_of_office")
    def out_of_office(self, signal: OutOfOfficeSignal) -> None:
        """An out-of-office reply (issue 27): the lead's next step moves to `not_before`
        (recorded by the run's loop, which the signal wakes); nothing stops. A second one
        moves it again, never earlier."""
        if not self._inp.follow_up_seconds or signal.lead_id in self._stopped:
            return
        moves = self._state.moves
        known = moves.get(signal.lead_id)
        moves[signal.lead_id] = (signal.not_before if known is None
                                 else max(known, signal.not_before))

    async def _flush_stops(self, inp: DeliveryInput) -> None:
        """Record the stops that replies asked for since the last flush, in batches, and
        the out-of-office moves."""
        await self._flush_moves(inp)
        queue = self._state.stop_queue
        while queue:
            reason = next(iter(queue))
            lead_ids = queue[reason][:STOP_BATCH]
            del queue[reason][:STOP_BATCH]
            if not queue[reason]:
                del queue[reason]
            stopped = await call_agent(
                SequenceAgent.stop_sequence,
                StopSequence(campaign_id=inp.campaign_id, lead_ids=lead_ids, reason=reason,
                             steps=1 + len(inp.follow_up_seconds),
                             company=inp.stop_on_company_reply and reason != "bounced"
                             and not reason.startswith("replied in ")),
                prefix=inp.queue_prefix, summary=f"stop {len(lead_ids)} sequence(s): {reason}")
            for lead_id in stopped:
                self._stopped.setdefault(lead_id, reason)
        self._details()

    async def _flush_moves(self, inp: DeliveryInput) -> None:
        """Move the next steps of the leads whose out-of-office replies came in."""
        moves = self._state.moves
        while moves and workflow.patched(OOO_MOVES):
            batch = [StepMove(lead_id=lid, not_before=at)
                     for lid, at in list(moves.items())[:STOP_BATCH]]
            for m in batch:
                del moves[m.lead_id]
            await call_agent(
                SequenceAgent.move_steps, MoveSteps(campaign_id=inp.campaign_id, moves=batch),
                prefix=inp.queue_prefix,
                summary=f"out of office: move {len(batch)} next step(s)")

    def _details(self) -> None:
        r = self._result
        state = " (paused by the bounce circuit breaker)" if self._breaker_tripped else (
            " (paused)" if self._state.paused else "")
        stopped = f", stopped {r.stopped}" if r.stopped else ""
        follow_ups = self._follow_ups.describe() if self._follow_ups else ""
        workflow.set_current_details(
            f"sent {r.sent}, suppressed {r.suppressed}, failed {r.failed}, "
            f"bounced {r.bounced}, complaints {r.complaints}{stopped}; "
            f"{self._waiting_for_window} waiting for their send window{state}{follow_ups}"
        )

    async def _sleep(self, duration: timedelta, summary: str) -> None:
        """A durable timer that a cancel cuts short."""
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: self._state.cancelled, timeout=duration,
                                          timeout_summary=summary)

    async def _wait_for_window(self, inp: DeliveryInput, lead: ApprovedLead) -> None:
        """Sleep (durably) until the lead's send window opens; no-op without a window."""
        if inp.send_window is None:
            return
        now = workflow.now()
        opens = next_open(now, inp.send_window, lead.timezone)
        if opens > now:
            self._waiting_for_window += 1
            self._details()
            try:
                await self._sleep(opens - now, f"send window for {lead.lead_id}")
            finally:
                self._waiting_for_window -= 1

    async def _deliver(self, inp: DeliveryInput, lead: ApprovedLead, slots: asyncio.Semaphore,
                       step: int = 1) -> None:
        while True:
            await self._wait_for_window(inp, lead)
            await workflow.wait_condition(lambda: not self._state.paused or self._state.cancelled)
            if self._state.cancelled:
                return
            async with self._one_per_sender(lead.sender), slots:
                window = inp.send_window
                if window is not None and next_open(workflow.now(), window, lead.timezone) > (
                    workflow.now()
                ):
                    continue  # the window closed while this send was queued
                if not await self._pace(inp, lead, step):
                    return
                if self._state.paused:
                    continue  # paused (by a person or the breaker) while waiting its turn
                await self._send(inp, lead.lead_id, step)
                return

    def _one_per_sender(self, sender: str | None) -> contextlib.AbstractAsyncContextManager[
            object]:
        """The lock of the lead's mailbox (taken before a slot of the window, so a send
        waiting for it holds no slot); no lock for a lead without a sender."""
        if sender is None:
            return contextlib.nullcontext()
        return self._sender_locks.setdefault(sender, asyncio.Lock())

    def _pace_wait(self, inp: DeliveryInput, domain: str | None) -> timedelta:
        """How long until this send keeps both the campaign pace and the domain limit."""
        now = workflow.now()
        wait = timedelta(0)
        if self._next_send_at is not None:
            wait = max(wait, self._next_send_at - now)
        if domain and inp.domain_limit_per_minute:
            recent = [t for t in self._recent.get(domain, []) if t > now - MINUTE]
            self._recent[domain] = recent
            if len(recent) >= inp.domain_limit_per_minute:
                wait = max(wait, recent[-inp.domain_limit_per_minute] + MINUTE - now)
        return wait

    async def _pace(self, inp: DeliveryInput, lead: ApprovedLead, step: int = 1) -> bool:
        """Wait (durably) for pacing; record the send slot. False if cancelled meanwhile.

        A follow-up is due at a time and step 1 is not, so step 1 lets follow-ups that wait
        for the campaign's pace go first (they only overlap in runs where the follow-up
        loop runs beside step 1)."""
        if step > 1:
            self._follow_ups_pacing += 1
        try:
            while True:
                wait = self._pace_wait(inp, lead.domain)
                if wait > timedelta(0):
                    await self._sleep(wait, "pacing")
                elif step == 1 and self._follow_ups_pacing and inp.send_rate_per_second:
                    await workflow.wait_condition(
                        lambda: not self._follow_ups_pacing or self._state.cancelled)
                else:
                    break
                if self._state.cancelled:
                    return False
        finally:
            if step > 1:
                self._follow_ups_pacing -= 1
        now = workflow.now()
        if lead.domain and inp.domain_limit_per_minute:
            self._recent.setdefault(lead.domain, []).append(now)
        if inp.send_rate_per_second:
            self._next_send_at = now + timedelta(seconds=1 / inp.send_rate_per_second)
        return True

    def _deliver_input(self, inp: DeliveryInput, lead_id: str, step: int) -> DeliverInput:
        """What one send needs; in a sequence also when its next step falls due."""
        senders = bool(inp.senders)
        now = workflow.now() if senders else None
        if not inp.follow_up_seconds:
            return DeliverInput(campaign_id=inp.campaign_id, lead_id=lead_id, channel=inp.channel,
                                senders=senders, now=now)
        steps = 1 + len(inp.follow_up_seconds)
        return DeliverInput(
            campaign_id=inp.campaign_id, lead_id=lead_id, channel=inp.channel, step=step,
            steps=steps, stop_on_company_reply=inp.stop_on_company_reply,
            next_due_at=workflow.now() + timedelta(seconds=inp.follow_up_seconds[step - 1])
            if step < steps else None,
            stop_reason=self._stopped.get(lead_id) if step > 1 else None, senders=senders,
            now=now,
        )

    async def _send(self, inp: DeliveryInput, lead_id: str, step: int = 1) -> None:
        what = f"step {step} " if step > 1 else ""
        deliver = self._deliver_input(inp, lead_id, step)
        try:
            out = await call_agent(
                DeliveryAgent.deliver_message, deliver, prefix=inp.queue_prefix,
                summary=f"deliver {what}to lead {lead_id} via {inp.channel.value}",
            )
        except ActivityError as err:
            self._result.failed += 1
            EngineMetrics(workflow.metric_meter()).message(inp.channel.value, "failed", step)
            workflow.logger.warning("delivery of %sto %s failed: %s", what, lead_id,
                                    failure_reason(err))
            if step > 1:  # off the schedule, so the next page does not pick it up again
                await call_agent(
                    SequenceAgent.record_step_failure,
                    StepFailure(campaign_id=inp.campaign_id, lead_id=lead_id, step=step),
                    prefix=inp.queue_prefix, summary=f"step {step} of {lead_id} failed")
            return
        if out.status == "waiting":
            # No capacity in its mailbox now (issue 28): the step is on the store's schedule
            # at its planned slot; the follow-up loop sends it then.
            if self._follow_ups is not None and out.next_slot is not None:
                self._follow_ups.scheduled(out.next_slot)
            self._details()
            return
        if out.status == "sent":
            self._result.sent += 1
            if self._follow_ups is not None and deliver.next_due_at is not None:
                self._follow_ups.scheduled(deliver.next_due_at)
        elif out.status == "suppressed":
            self._result.suppressed += 1
        elif out.status == "stopped":
            self._result.stopped += 1
        else:
            self._result.failed += 1
        outcome = out.status if out.status in ("sent", "suppressed", "stopped") else "failed"
        EngineMetrics(workflow.metric_meter()).message(inp.channel.value, outcome, step,
                                                       sender=out.sender)
        self._details()

    async def _continue_as_new(self, inp: DeliveryInput, **update: object) -> None:
        """Continue as new with the counters, the pause state and recent sends per domain
        (replies waiting to be recorded are recorded first)."""
        await self._flush_stops(inp)
        await workflow.wait_condition(workflow.all_handlers_finished)
        while self._state.stop_queue or self._state.moves:  # a reply arrived during the flush
            await self._flush_stops(inp)
        workflow.continue_as_new(inp.model_copy(update={
            "result": self._result, "runs": inp.runs + 1,
            "paused": self._state.paused, "breaker_tripped": self._breaker_tripped,
            "recent_by_domain": {
                d: [t for t in ts if t > workflow.now() - MINUTE]
                for d, ts in self._recent.items()
            },
            **update,
        }))

    @workflow.run
    async def run(self, inp: DeliveryInput) -> DeliveryResult:
        slots = asyncio.Semaphore(inp.in_flight)
        # A campaign with senders runs the follow-up loop even for one step: the sends
        # that wait for their mailbox's capacity are on the store's schedule (issue 28).
        if (inp.follow_up_seconds or inp.senders) and not inp.follow_ups_phase and (
                workflow.patched(FOLLOW_UPS_ALONGSIDE)):
            # Follow-ups get their own window of sends, so that step 1 queued for its
            # pace does not hold the ones falling due.
            self._follow_ups = self._follow_up_loop(inp, asyncio.Semaphore(inp.in_flight))
            await self._step_1_with_follow_ups(inp, slots, self._follow_ups)
            self._details()
            return self._result
        if inp.follow_up_seconds or inp.senders:
            self._follow_ups = self._follow_up_loop(inp, slots)
        if not inp.follow_ups_phase:
            await self._first_steps(inp, slots)
        if self._follow_ups is not None:
            await self._follow_ups.run()
        self._details()
        return self._result

    def _follow_up_loop(self, inp: DeliveryInput, slots: asyncio.Semaphore) -> FollowUps:
        """The run's follow-up loop: it sends through `_deliver` in `slots` (a window of its
        own beside step 1), and shares the run's state."""
        return FollowUps(
            inp, self._state,
            send=lambda lead, step: self._deliver(inp, lead, slots, step),
            flush_stops=lambda: self._flush_stops(inp),
            continue_as_new=lambda: self._continue_as_new(inp, follow_ups_phase=True),
            changed=self._details)

    async def _step_1_with_follow_ups(self, inp: DeliveryInput, slots: asyncio.Semaphore,
                                      follow_ups: FollowUps) -> None:
        """Step 1 and the follow-up loop side by side, so a follow-up falls due on time even
        while step 1 is still going out (send windows, pacing). When either loop finds the
        run full, both stop starting sends and wait for theirs, then one continue-as-new
        carries step 1's cursor and whether step 1 is done (then the next runs are the
        follow-up loop alone)."""
        loop = asyncio.create_task(follow_ups.run(alongside=True))
        await self._first_steps_alongside(inp, slots)
        await loop
        if self._state.cancelled:  # after step 1's last sends, which may have scheduled steps
            await self._flush_stops(inp)
            await call_agent(
                SequenceAgent.stop_sequence,
                StopSequence(campaign_id=inp.campaign_id, reason="cancelled"),
                prefix=inp.queue_prefix, summary="cancelled: stop every open follow-up")
        elif self._state.handoff:
            await self._continue_as_new(inp, after=self._after,
                                        follow_ups_phase=self._state.first_done)

    async def _first_steps_alongside(self, inp: DeliveryInput, slots: asyncio.Semaphore) -> None:
        """Step 1 to every approved lead, page by page, beside the follow-up loop; stops
        starting sends once a continue-as-new is asked for (`_handoff`), keeping in
        `_after` the last lead it started."""
        self._after = inp.after
        pending: set[asyncio.Task[None]] = set()
        max_pending = max(inp.in_flight, inp.page_size) * 2
        exhausted = False
        while not self._state.cancelled and not self._state.handoff:
            page = await call_agent(
                StoreAgent.list_approved_leads,
                PageRequest(campaign_id=inp.campaign_id, after=self._after, limit=inp.page_size),
                prefix=inp.queue_prefix, summary="next approved leads",
            )
            whole_page = True
            for lead in page:
                if len(pending) >= max_pending:
                    _, rest = await workflow.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    pending = set(rest)
                if self._state.cancelled or self._state.handoff:
                    whole_page = False
                    break
                pending.add(asyncio.create_task(self._deliver(inp, lead, slots)))
                self._after = lead.lead_id
                self._state.sends += 1
            if self._state.stop_queue or self._state.moves:
                await self._flush_stops(inp)
            if whole_page and len(page) < inp.page_size:
                exhausted = True
                break
            if self._state.sends >= inp.sends_per_run or run_is_full():
                self._state.handoff = True
        if pending:
            await workflow.wait(pending)
        self._state.first_done = exhausted

    async def _first_steps(self, inp: DeliveryInput, slots: asyncio.Semaphore) -> None:
        """Step 1 to every approved lead, page by page; may continue as new."""
        after = inp.after
        pending: set[asyncio.Task[None]] = set()
        started = 0
        max_pending = max(inp.in_flight, inp.page_size) * 2
        while not self._state.cancelled:
            page = await call_agent(
                StoreAgent.list_approved_leads,
                PageRequest(campaign_id=inp.campaign_id, after=after, limit=inp.page_size),
                prefix=inp.queue_prefix, summary="next approved leads",
            )
            for lead in page:
                if len(pending) >= max_pending:
                    _, rest = await workflow.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    pending = set(rest)
                pending.add(asyncio.create_task(self._deliver(inp, lead, slots)))
                started += 1
            if page:
                after = page[-1].lead_id
            if self._state.stop_queue or self._state.moves:
                await self._flush_stops(inp)
            if len(page) < inp.page_size:
                break
            if started >= inp.sends_per_run or run_is_full():
                if pending:
                    await workflow.wait(pending)
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._state.cancelled:
                    await self._continue_as_new(inp, after=after)
        if pending:
            await workflow.wait(pending)
