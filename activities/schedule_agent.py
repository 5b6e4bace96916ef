"""The schedule agent: turns a recurring campaign's template into one firing's campaign.

A schedule stores its leads once, under a template campaign. Each firing copies the
template's campaign row (brief, knowledge base, channel) and its leads into a new
campaign, re-keying every lead for the new campaign id. Every write is an idempotent
upsert, and the copy heartbeats its cursor, so a retry resumes where the last attempt
stopped and never duplicates a lead.

A schedule created with a total budget (`--total-budget-usd`) keeps it, and one record per
firing naming its campaign, in the template's audit trail. A firing first adds up what the
schedule's campaigns have spent (and hold for calls in flight): when that reaches the total,
it starts no campaign and fails for good (`ScheduleBudgetExhausted`), which pauses the
schedule (its policy pauses on a failed firing); otherwise its campaign's budget is what is
left of the total, or the schedule's per-campaign budget if smaller.

Unless the schedule allows overlap, each firing leaves out the people in another campaign's
sequence still going on (an earlier firing's, say) or who replied within
CAMPAIGN_REPLY_COOLDOWN (campaign_core/overlap.py), one store query per page of leads; the
firing's audit record counts them (no address). A firing that leaves out everyone starts
no campaign: its row is marked `completed` and the firing returns 0 leads.
"""

from __future__ import annotations

from temporalio import activity

from activities.base import Agent, permanent
from campaign_core.budget import from_nano, to_nano, usd
from campaign_core.envelope import Record, now_utc
from campaign_core.ids import campaign_workflow_id
from campaign_core.leads import lead_id_for
from campaign_core.models import CopyLeadsInput, Stage
from campaign_core.overlap import without_overlap
from campaign_core.store.base import new_lead_id_salt
from campaign_core.store.rows import AuditEntry

#: The template's audit record holding the schedule's total budget (written at creation).
SCHEDULE_BUDGET = "schedule_budget"
#: The template's audit record of one firing: the campaign it started.
SCHEDULE_FIRING = "schedule_firing"
#: A firing refused because the schedule's campaigns spent its total budget.
SCHEDULE_BUDGET_EXHAUSTED = "ScheduleBudgetExhausted"


def schedule_budget(history: list[AuditEntry]) -> tuple[float | None, list[str]]:
    """The schedule's total budget (None: none) and the campaigns its firings started,
    from its template's audit trail."""
    total: float | None = None
    fired: list[str] = []
    for entry in history:
        for record in entry.envelope.get("records", []):
            data = record.get("data", {})
            if record.get("kind") == SCHEDULE_BUDGET and data.get("total_budget_usd"):
                total = float(data["total_budget_usd"])
            elif record.get("kind") == SCHEDULE_FIRING and data.get("campaign_id") not in fired:
                fired.append(str(data.get("campaign_id")))
    return total, fired


class ScheduleAgent(Agent):
    name = "schedule"

    @activity.defn(name="copy_template_leads")
    async def copy_template_leads(self, inp: CopyLeadsInput) -> int:
        """Copy the template campaign and its leads into `inp.campaign_id`; the lead count."""
        started = now_utc()
        template = await self.store.get_campaign(inp.template_id)
        if template is None:
            raise permanent("NotFound", f"schedule template {inp.template_id!r} is not in the "
                            "store (was it created against another store?)")
        budget = await self._within_total(inp, template.budget_usd)
        await self.store.upsert_campaign(
            campaign_id=inp.campaign_id, name=inp.name, brief=template.brief,
            channel=template.channel, kb_dir=template.kb_dir,
            workflow_id=campaign_workflow_id(inp.campaign_id),
            lead_id_salt=await new_lead_id_salt(self.store, inp.campaign_id),
            budget_usd=budget,  # the schedule's cap, for each firing's campaign
        )
        row = await self.store.get_campaign(inp.campaign_id)
        salt = row.lead_id_salt if row else None  # a retried firing keeps its row's scheme
        details = activity.info().heartbeat_details
        after: str | None = str(details[0]) if len(details) >= 2 and details[0] else None
        copied = int(details[1]) if len(details) >= 2 else 0
        skipped: dict[str, int] = dict(details[2]) if len(details) >= 3 else {}
        while True:
            ids = await self.store.list_lead_ids(inp.template_id, after, inp.page_size)
            batch = []
            for lead_id in ids:
                lead = await self.store.get_lead(inp.template_id, lead_id)
                if lead is not None:
                    batch.append(lead.model_copy(
                        update={"lead_id": lead_id_for(inp.campaign_id, lead.email, salt)}))
            if batch and not inp.allow_overlap:
                batch, left_out = await without_overlap(
                    self.store, batch, campaign_id=inp.campaign_id,
                    cooldown=self.settings.reply_cooldown_delta)
                for s in left_out:
                    skipped[s.reason] = skipped.get(s.reason, 0) + 1
            if batch:
                await self.store.upsert_leads(inp.campaign_id, batch)
            copied += len(batch)
            after = ids[-1] if ids else after
            activity.heartbeat(after, copied, skipped)
            if len(ids) < inp.page_size:
                break
        if copied == 0 and not skipped:
            raise permanent("InvalidInput", f"schedule template {inp.template_id!r} has no leads")
        record = Record(
            kind="leads_copied",
            key=inp.campaign_id,
            data={"template_id": inp.template_id, "schedule": inp.schedule, "leads": copied,
                  "skipped": skipped},
            provenance=self.provenance(f"campaign:{inp.template_id}", inp.model_dump(mode="json")),
        )
        note = f", {sum(skipped.values())} skipped ({skipped})" if skipped else ""
        if copied == 0:  # everyone is in another active sequence or replied: no campaign
            await self.store.set_stage(inp.campaign_id, Stage.COMPLETED.value)
        await self.keep(self.envelope(inp.campaign_id, [record], started), None,
                        f"{copied} leads copied{note}")
        return copied

    async def _within_total(self, inp: CopyLeadsInput, budget_usd: float | None) -> float | None:
        """The budget of this firing's campaign under the schedule's total budget (the
        per-campaign `budget_usd` when the schedule has none), after recording the firing
        in the template's trail; ScheduleBudgetExhausted (non-retryable: the schedule
        pauses) once the schedule's campaigns have spent the total.

        Spend counts what each campaign spent and holds for calls in flight. Campaigns
        drafting at the same time each get what was left when they started, so their sum
        can pass the total by what they spend together; with firings an hour or more apart
        (CAMPAIGN_SCHEDULE_MIN_INTERVAL), drafting has usually finished by the next one.
        """
        total, fired = schedule_budget(await self.store.audit(inp.template_id))
        if total is None:
            return budget_usd
        spent = 0
        for campaign_id in fired:
            if campaign_id != inp.campaign_id:
                spend = await self.store.spend(campaign_id)
                spent += to_nano(spend.spent_usd) + to_nano(spend.reserved_usd)
        left = to_nano(total) - spent
        if left <= 0 and inp.campaign_id not in fired:
            schedule = inp.schedule or inp.template_id
            raise permanent(SCHEDULE_BUDGET_EXHAUSTED, (
                f"schedule {schedule!r}: its {len(fired)} campaign(s) spent {usd(from_nano(spent))} "
                f"of its total budget {usd(total)}: no new campaign is started, and the "
                "schedule pauses (create a new schedule with a higher --total-budget-usd to "
                "go on)"))
        if inp.campaign_id not in fired:  # recorded before the campaign exists: counted
            started = now_utc()
            record = Record(
                kind=SCHEDULE_FIRING, key=inp.campaign_id,
                data={"campaign_id": inp.campaign_id, "schedule": inp.schedule,
                      "spent_before_usd": from_nano(spent), "total_budget_usd": total},
                provenance=self.provenance(f"campaign:{inp.template_id}",
                                           inp.model_dump(mode="json")),
            )
            await self.keep(self.envelope(inp.template_id, [record], started), None,
                            f"firing {inp.campaign_id}: {usd(from_nano(spent))} of "
                            f"{usd(total)} spent before it")
        remaining = from_nano(max(left, 0))
        return remaining if budget_usd is None else min(budget_usd, remaining)
