"""The schedule agent: turns a recurring campaign's template into one firing's campaign.

A schedule stores its leads once, under a template campaign. Each firing copies the
template's campaign row (brief, knowledge base, channel) and its leads into a new
campaign, re-keying every lead for the new campaign id. Every write is an idempotent
upsert, and the copy heartbeats its cursor, so a retry resumes where the last attempt
stopped and never duplicates a lead.
"""

from __future__ import annotations

from temporalio import activity

from activities.base import Agent, permanent
from campaign_core.envelope import Record, now_utc
from campaign_core.ids import campaign_workflow_id
from campaign_core.leads import lead_id_for
from campaign_core.models import CopyLeadsInput
from campaign_core.store.base import new_lead_id_salt


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
        await self.store.upsert_campaign(
            campaign_id=inp.campaign_id, name=inp.name, brief=template.brief,
            channel=template.channel, kb_dir=template.kb_dir,
            workflow_id=campaign_workflow_id(inp.campaign_id),
            lead_id_salt=await new_lead_id_salt(self.store, inp.campaign_id),
            budget_usd=template.budget_usd,  # the schedule's cap, for each firing's campaign
        )
        row = await self.store.get_campaign(inp.campaign_id)
        salt = row.lead_id_salt if row else None  # a retried firing keeps its row's scheme
        details = activity.info().heartbeat_details
        after: str | None = str(details[0]) if len(details) >= 2 and details[0] else None
        copied = int(details[1]) if len(details) >= 2 else 0
        while True:
            ids = await self.store.list_lead_ids(inp.template_id, after, inp.page_size)
            batch = []
            for lead_id in ids:
                lead = await self.store.get_lead(inp.template_id, lead_id)
                if lead is not None:
                    batch.append(lead.model_copy(
                        update={"lead_id": lead_id_for(inp.campaign_id, lead.email, salt)}))
            if batch:
                await self.store.upsert_leads(inp.campaign_id, batch)
            copied += len(batch)
            after = ids[-1] if ids else after
            activity.heartbeat(after, copied)
            if len(ids) < inp.page_size:
                break
        if copied == 0:
            raise permanent("InvalidInput", f"schedule template {inp.template_id!r} has no leads")
        record = Record(
            kind="leads_copied",
            key=inp.campaign_id,
            data={"template_id": inp.template_id, "schedule": inp.schedule, "leads": copied},
            provenance=self.provenance(f"campaign:{inp.template_id}", inp.model_dump(mode="json")),
        )
        await self.keep(self.envelope(inp.campaign_id, [record], started), None,
                        f"{copied} leads copied")
        return copied
