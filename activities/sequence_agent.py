"""The sequence agent: the store side of follow-ups (who is due when, who has stopped).

The delivery orchestrator pages due follow-ups and sleeps until the next due time; this
agent answers those reads and records stops. `stop_reason_at_due` is the check the
delivery agent makes at the moment a follow-up is due, just before it would be sent;
`stop_reason_before_first` the one it makes before step 1 (a reply to another campaign).
See "Sequences" in docs/architecture.md.
"""

from __future__ import annotations

from datetime import datetime

from temporalio import activity

from activities.base import Agent
from campaign_core.envelope import Record, now_utc
from campaign_core.leads import Lead, normalise_email
from campaign_core.models import (
    AssignSenders,
    DueRequest,
    DueStep,
    MoveSteps,
    NextDueRequest,
    StepFailure,
    StopSequence,
)
from campaign_core.sender_assignment import assign, company_key
from campaign_core.sequence import company_domain, replied_in, stop_reason_for_suppression
from campaign_core.store.base import Store, as_time
from campaign_core.store.rows import DraftRow


async def replied_elsewhere(store: Store, campaign_id: str, lead: Lead) -> str | None:
    """`replied in campaign <id>` when the person replied (a person's reply, as
    `emails_replied_since` counts one) to another campaign since this one was created,
    else None (issue 27). The delivery agent reads it before step 1 too: a campaign that
    awaited approval while the person replied elsewhere does not open a sequence."""
    campaign = await store.get_campaign(campaign_id)
    created = as_time(campaign.created_at) if campaign is not None else None
    if created is None:
        return None
    elsewhere = await store.emails_replied_since([lead.email], created)
    replied_to = elsewhere.get(normalise_email(lead.email))
    if replied_to is not None and replied_to != campaign_id:
        return replied_in(replied_to)
    return None


async def stop_reason_before_first(store: Store, campaign_id: str, lead: Lead) -> str | None:
    """Why step 1 of `lead` must not be sent now, or None to send it (issue 27): a stop
    already recorded on step 1 (a retried attempt says the same), else the person's reply
    to another campaign since this one was created (`replied_elsewhere`)."""
    row = await store.get_step(campaign_id, lead.lead_id, 1)
    if row is not None and row.status == "stopped":
        return row.stop_reason or "stopped"
    return await replied_elsewhere(store, campaign_id, lead)


async def stop_reason_at_due(store: Store, campaign_id: str, lead: Lead, step: int,
                             draft: DraftRow | None, *, company: bool) -> str | None:
    """Why the follow-up `step` of `lead` must not be sent now, or None to send it.

    Read at the moment the step is due: a stop already recorded (a reply signal, a
    cancel), exclusion, a reply (the lead's own, or a colleague's with `company`), the
    person's reply to another campaign since this one was created (issue 27: the signal
    that stops it at once can find no delivery running, before approval), then the
    suppression list (unsubscribe, hard bounce, complaint, manual suppression).
    """
    row = await store.get_step(campaign_id, lead.lead_id, step)
    if row is not None and row.status == "stopped":
        return row.stop_reason or "suppressed"
    if draft is None or not draft.approved or draft.excluded:  # a reviewer left it out
        return "excluded"
    if await store.lead_replied(campaign_id, lead.lead_id):
        return "replied"
    if company and (domain := company_domain(lead.email)) is not None:
        for other in await store.lead_ids_at_domain(campaign_id, domain):
            if other != lead.lead_id and await store.lead_replied(campaign_id, other):
                return "replied"
    elsewhere = await replied_elsewhere(store, campaign_id, lead)
    if elsewhere is not None:
        return elsewhere
    reason = await store.suppression_reason(lead.email)
    if reason is not None:
        return stop_reason_for_suppression(reason)
    return None


class SequenceAgent(Agent):
    name = "sequence"

    @activity.defn(name="list_due_steps")
    async def list_due_steps(self, req: DueRequest) -> list[DueStep]:
        """A page of follow-ups due by `req.before`, with what delivery needs to pace them."""
        rows = await self.store.due_steps(req.campaign_id, req.before, req.after, req.limit)
        out = []
        for row in rows:
            lead = await self.store.get_lead(req.campaign_id, row.lead_id)
            out.append(DueStep(lead_id=row.lead_id, step=row.step,
                               timezone=lead.timezone if lead else None,
                               domain=lead.email.rpartition("@")[2] if lead else None,
                               sender=row.sender or await self.store.lead_sender(
                                   req.campaign_id, row.lead_id)))
        return out

    @activity.defn(name="next_due_at")
    async def next_due_at(self, req: NextDueRequest) -> datetime | None:
        return await self.store.next_due_at(req.campaign_id, req.after)

    @activity.defn(name="move_steps")
    async def move_steps(self, req: MoveSteps) -> list[str]:
        """Move each lead's scheduled follow-up to its out-of-office return (issue 27), never
        earlier; returns the leads whose step moved (the audit says to when)."""
        started = now_utc()
        moved = [m for m in req.moves
                 if await self.store.move_open_step(req.campaign_id, m.lead_id, m.not_before)]
        for m in moved:
            record = Record(kind="sequence", key=f"{m.lead_id}:out_of_office", data={
                "status": "moved", "reason": "out_of_office",
                "not_before": m.not_before.isoformat()},
                provenance=self.provenance("reply:out_of_office",
                                           {"lead": m.lead_id, "at": m.not_before.isoformat()}))
            await self.keep(self.envelope(req.campaign_id, [record], started), m.lead_id,
                            "out of office: next step moved")
        return [m.lead_id for m in moved]

    @activity.defn(name="stop_sequence")
    async def stop_sequence(self, req: StopSequence) -> list[str]:
        """Stop one lead's open follow-up (and with `company` its colleagues'), or every
        open one of the campaign; returns the leads it stopped (none for a whole campaign).

        A lead's open step is the one after the last sent: recorded `stopped` even before
        it is scheduled, so the send still in flight cannot put it on the schedule again.
        """
        started = now_utc()
        repliers = list(dict.fromkeys(([req.lead_id] if req.lead_id else []) + req.lead_ids))
        if not repliers:
            await self.store.stop_open_steps(req.campaign_id, req.reason)
            return []
        lead_ids = list(repliers)
        if req.company:
            for replier in repliers:
                lead = await self.store.get_lead(req.campaign_id, replier)
                domain = company_domain(lead.email) if lead else None
                if domain is not None:
                    lead_ids += await self.store.lead_ids_at_domain(req.campaign_id, domain)
        stopped = []
        for lead_id in dict.fromkeys(lead_ids):
            step = max(2, await self.store.last_sent_step(req.campaign_id, lead_id) + 1)
            if step > req.steps:
                continue
            await self.store.set_step_status(req.campaign_id, lead_id, step, "stopped", req.reason)
            stopped.append(lead_id)
            record = Record(kind="sequence_stop", key=f"{lead_id}:{step}",
                            data={"status": "stopped", "step": step, "stop_reason": req.reason,
                                  "by_colleague": lead_id not in repliers},
                            provenance=self.provenance(f"signal:{req.reason}", req.model_dump()))
            await self.keep(self.envelope(req.campaign_id, [record], started), lead_id,
                            f"sequence stopped at step {step}: {req.reason}")
        return stopped

    @activity.defn(name="assign_senders")
    async def assign_senders(self, req: AssignSenders) -> int:
        """Give each lead of the page that has none its sender (issue 28), before it is
        drafted, so its drafts sign with that sender's name. Spread by capacity: a sender's
        weight is what it may still send today plus its cap for a day (so both today and
        the days after count), less the sends already waiting for it from any campaign (a
        mailbox shared with a big campaign is fuller than its cap says); paused and removed
        senders get no new leads while another one can take them. Returns how many leads
        were given one."""
        from campaign_core.sender_capacity import sender_status

        now = now_utc()
        weights: dict[str, float] = {}
        held: dict[str, float] = {}
        for name in dict.fromkeys(req.senders):
            row = await self.store.get_sender(name)
            if row is None or row.removed_at is not None:
                continue
            status = await sender_status(self.store, row, self.settings, now)
            backlog = len(await self.store.planned_waits(name, now))  # any campaign's
            weight = float(max(status.today_cap - status.sent_24h, 0) + status.today_cap
                           - backlog)
            (held if row.paused else weights)[name] = max(weight, 1.0)
        weights = weights or held
        if not weights:
            return 0
        leads = []
        for lead_id in req.lead_ids:
            if await self.store.lead_sender(req.campaign_id, lead_id) is not None:
                continue
            lead = await self.store.get_lead(req.campaign_id, lead_id)
            if lead is not None:
                leads.append((lead_id, company_key(lead.email, lead.company)))
        if not leads:
            return 0
        counts = await self.store.sender_assignment_counts(req.campaign_id)
        return await self.store.assign_senders(req.campaign_id, assign(leads, weights, counts))

    @activity.defn(name="record_step_failure")
    async def record_step_failure(self, inp: StepFailure) -> None:
        """Take a follow-up whose send failed for good off the schedule."""
        await self.store.set_step_status(inp.campaign_id, inp.lead_id, inp.step, "failed")
