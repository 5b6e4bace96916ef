"""The copywriter agent. This skeleton ships the offline template writer.

The offline writer is deterministic and uses the retrieved passages, so the whole
pipeline runs without an API key; its provenance says `offline-template` as the
model, so nobody mistakes its output for an LLM's.
"""

from __future__ import annotations

import re
from typing import Any

from temporalio import activity

from activities.base import Agent, permanent
from campaign_core.envelope import EnvelopeRef, Record, digest, now_utc
from campaign_core.leads import Lead
from campaign_core.models import LeadInput

OFFLINE_MODEL = "offline-template"
TEMPLATE_VERSION = "offline-v1"


def _first_sentence(text: str) -> str:
    body = " ".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    body = re.sub(r"\s+", " ", body).strip()
    match = re.match(r"(.{20,300}?[.!?])(\s|$)", body)
    return (match.group(1) if match else body[:200]).strip()


def offline_draft(lead: Lead, passages: list[dict[str, Any]]) -> dict[str, Any]:
    """A deterministic, personalised message built from the lead and its passages."""
    greeting = f"Hi {lead.first_name}," if lead.first_name else "Hello,"
    who = lead.company or lead.email.split("@", 1)[1]
    role = f" as {lead.title}" if lead.title else ""
    lines = [greeting, ""]
    lines.append(f"I am reaching out because teams like {who} often face the problems our "
                 f"customers brought to us, and your work{role} sits right where they show up.")
    citations = []
    for passage in passages[:2]:
        lines += ["", f"{_first_sentence(str(passage['text']))} [{passage['passage_id']}]"]
        citations.append(str(passage["passage_id"]))
    lines += ["", "Would a 20-minute call next week be useful to see whether this fits?", "",
              "Best regards"]
    subject = f"An idea for {who}"[:120]
    return {"subject": subject, "body": "\n".join(lines), "citations": citations}


class CopywriterAgent(Agent):
    name = "copywriter"

    @activity.defn(name="write_draft")
    async def write_draft(self, inp: LeadInput) -> EnvelopeRef:
        """Write the lead's draft into an envelope in the audit log; return its reference."""
        started = now_utc()
        campaign = await self.store.get_campaign(inp.campaign_id)
        lead = await self.store.get_lead(inp.campaign_id, inp.lead_id)
        if campaign is None or lead is None:
            raise permanent("NotFound", f"campaign {inp.campaign_id} / lead {inp.lead_id} not found")
        passages = await self.store.get_retrieval(inp.campaign_id, inp.lead_id)
        brief = str(campaign.get("brief") or "")
        draft = offline_draft(lead, passages)
        record = Record(
            kind="draft",
            key=f"{inp.lead_id}:1",
            data={**draft, "step": 1, "template": TEMPLATE_VERSION},
            provenance=self.provenance(
                "llm:offline",
                {"lead": lead.model_dump(mode="json"), "brief": digest(brief),
                 "passages": [p["passage_id"] for p in passages], "template": TEMPLATE_VERSION},
                model=OFFLINE_MODEL,
            ),
        )
        env = self.envelope(inp.campaign_id, [record], started)
        return await self.keep(env, inp.lead_id, f"draft '{draft['subject']}'")
