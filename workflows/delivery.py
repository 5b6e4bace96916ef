"""DeliveryOrchestrator: sends a campaign's approved drafts, inside their send windows.

Pages approved leads, waits durably for each lead's send window, paces sends, and
pauses itself when bounces pass the circuit breaker's threshold. See
docs/architecture.md ("Orchestration and wiring").
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.delivery import DeliveryAgent
    from activities.store_agent import StoreAgent
    from campaign_core.metrics import EngineMetrics
    from campaign_core.models import (
        ApprovedLead,
        DeliverInput,
        DeliveryEventKind,
        DeliveryEventSignal,
        DeliveryInput,
        DeliveryResult,
        PageRequest,
    )
    from campaign_core.send_window import next_open
    from workflows.agents import call_agent
    from workflows.lead import failure_reason


MINUTE = timedelta(minutes=1)


@workflow.defn(name="DeliveryOrchestrator")
class DeliveryOrchestrator:
    def __init__(self) -> None:
        self._result = DeliveryResult()
        self._paused = False
        self._cancelled = False
        self._waiting_for_window = 0
        self._recent: dict[str, list[datetime]] = {}
        self._next_send_at: datetime | None = None
        self._inp: DeliveryInput | None = None
        self._breaker_tripped = False

    @workflow.query(name="progress")
    def progress(self) -> DeliveryResult:
        return self._result

    @workflow.signal(name="pause")
    def pause(self) -> None:
        self._paused = True

    @workflow.signal(name="resume")
    def resume(self) -> None:
        self._paused = False
        self._breaker_tripped = False  # a person looked and chose to go on

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
        if inp is None or self._breaker_tripped or event.kind is not DeliveryEventKind.BOUNCE:
            return
        if r.sent < inp.bounce_min_sends or r.bounced <= inp.bounce_threshold * r.sent:
            return
        self._breaker_tripped = True
        self._paused = True
        reason = (f"circuit breaker: {r.bounced} bounces in {r.sent} sent "
                  f"({r.bounced / r.sent:.1%}) is over {inp.bounce_threshold:.0%}; delivery "
                  f"paused — check the list, then `campaign resume {inp.campaign_id}`")
        workflow.logger.warning(reason)
        self._details()
        parent = workflow.info().parent
        if parent is not None:
            await workflow.get_external_workflow_handle(parent.workflow_id).signal(
                "circuit_breaker", reason)

    @workflow.signal(name="cancel")
    def cancel(self) -> None:
        self._cancelled = True

    def _details(self) -> None:
        r = self._result
        state = " (paused by the bounce circuit breaker)" if self._breaker_tripped else (
            " (paused)" if self._paused else "")
        workflow.set_current_details(
            f"sent {r.sent}, suppressed {r.suppressed}, failed {r.failed}, "
            f"bounced {r.bounced}, complaints {r.complaints}; "
            f"{self._waiting_for_window} waiting for their send window{state}"
        )

    async def _sleep(self, duration: timedelta, summary: str) -> None:
        """A durable timer that a cancel cuts short."""
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: self._cancelled, timeout=duration,
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

    async def _deliver(self, inp: DeliveryInput, lead: ApprovedLead, slots: asyncio.Semaphore) -> None:
        while True:
            await self._wait_for_window(inp, lead)
            await workflow.wait_condition(lambda: not self._paused or self._cancelled)
            if self._cancelled:
                return
            async with slots:
                window = inp.send_window
                if window is not None and next_open(workflow.now(), window, lead.timezone) > (
                    workflow.now()
                ):
                    continue  # the window closed while this send was queued
                if not await self._pace(inp, lead):
                    return
                if self._paused:
                    continue  # paused (by a person or the breaker) while waiting its turn
                await self._send(inp, lead.lead_id)
                return

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

    async def _pace(self, inp: DeliveryInput, lead: ApprovedLead) -> bool:
        """Wait (durably) for pacing; record the send slot. False if cancelled meanwhile."""
        while (wait := self._pace_wait(inp, lead.domain)) > timedelta(0):
            await self._sleep(wait, "pacing")
            if self._cancelled:
                return False
        now = workflow.now()
        if lead.domain and inp.domain_limit_per_minute:
            self._recent.setdefault(lead.domain, []).append(now)
        if inp.send_rate_per_second:
            self._next_send_at = now + timedelta(seconds=1 / inp.send_rate_per_second)
        return True

    async def _send(self, inp: DeliveryInput, lead_id: str) -> None:
        try:
            out = await call_agent(
                DeliveryAgent.deliver_message,
                DeliverInput(campaign_id=inp.campaign_id, lead_id=lead_id, channel=inp.channel),
                prefix=inp.queue_prefix,
                summary=f"deliver to lead {lead_id} via {inp.channel.value}",
            )
        except ActivityError as err:
            self._result.failed += 1
            EngineMetrics(workflow.metric_meter()).message(inp.channel.value, "failed")
            workflow.logger.warning("delivery to %s failed: %s", lead_id, failure_reason(err))
            return
        if out.status == "sent":
            self._result.sent += 1
        elif out.status == "suppressed":
            self._result.suppressed += 1
        else:
            self._result.failed += 1
        outcome = out.status if out.status in ("sent", "suppressed") else "failed"
        EngineMetrics(workflow.metric_meter()).message(inp.channel.value, outcome)
        self._details()

    @workflow.run
    async def run(self, inp: DeliveryInput) -> DeliveryResult:
        self._inp = inp
        self._result = inp.result.model_copy()
        self._paused = inp.paused
        self._breaker_tripped = inp.breaker_tripped
        self._recent = {d: list(ts) for d, ts in inp.recent_by_domain.items()}
        slots = asyncio.Semaphore(inp.in_flight)
        after = inp.after
        pending: set[asyncio.Task[None]] = set()
        started = 0
        max_pending = max(inp.in_flight, inp.page_size) * 2
        while not self._cancelled:
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
            if len(page) < inp.page_size:
                break
            if started >= inp.sends_per_run or workflow.info().is_continue_as_new_suggested():
                if pending:
                    await workflow.wait(pending)
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._cancelled:
                    workflow.continue_as_new(inp.model_copy(update={
                        "after": after, "result": self._result, "runs": inp.runs + 1,
                        "paused": self._paused, "breaker_tripped": self._breaker_tripped,
                        "recent_by_domain": {
                            d: [t for t in ts if t > workflow.now() - MINUTE]
                            for d, ts in self._recent.items()
                        },
                    }))
        if pending:
            await workflow.wait(pending)
        self._details()
        return self._result
