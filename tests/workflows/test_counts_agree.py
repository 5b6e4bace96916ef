"""One campaign, five views of it, one set of figures (issue 24, item 7).

A 3-step sequence runs on the real dev server with the real agents (the offline writer),
workers on a runtime that exports Prometheus metrics, and the API serving the review pages.
One lead is excluded, one is suppressed before step 1, one replies after step 1, two get
every step. Then `status`, `report`, `status --watch` (both forms), the campaign page and
`/metrics` are read, and every figure must be the same everywhere.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from typing import Any

import pytest
from rich.console import Console
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime
from temporalio.testing import WorkflowEnvironment

from campaign_core.ids import message_key
from campaign_core.inbound import InboundMessage
from campaign_core.leads import parse_lead_rows
from campaign_core.models import Stage
from campaign_core.replies import ReplyDesk
from campaign_core.settings import Settings
from starter.cli.watch import changes, watch_progress
from starter.manager import CampaignManager
from starter.review_auth import Reviewers
from starter.start_options import CampaignOptions, EngineTuning
from tests.api.test_api import api_settings, serve
from tests.conftest import KB
from tests.ops.test_metrics import port, runtime, scrape, total, wait_stage
from tests.review.test_review_pages import sign_in
from tests.workflows.test_sequences import until
from workflows.signals import TemporalCampaignSignals

__all__ = ["api_settings", "port", "runtime"]  # fixtures, used by name

LEADS = [
    {"email": "ana@northwind.example", "first_name": "Ana", "company": "Northwind Freight"},
    {"email": "bo@ledgerly.example", "first_name": "Bo", "company": "Ledgerly"},
    {"email": "cy@carely.example", "first_name": "Cy", "company": "Carely"},
    {"email": "di@brightpath.example", "first_name": "Di", "company": "BrightPath Logistics"},
    {"email": "ed@relay.example", "first_name": "Ed", "company": "Relay Health"},
]
ANA, BO, CY, DI, ED = (lead["email"] for lead in LEADS)


@pytest.mark.slow
async def test_status_report_watch_page_and_metrics_agree(
    dev_env: WorkflowEnvironment, api_settings: Settings, store: Any, prefix: str,
    run_workers: Any, runtime: Runtime, port: int, browser: Any,
) -> None:
    settings = api_settings
    client = await Client.connect(dev_env.client.service_client.config.target_host,
                                  data_converter=pydantic_data_converter, runtime=runtime)
    mgr = CampaignManager(settings, client=client, store=store, queue_prefix=prefix,
                          use_search_attributes=False)
    cid = "agree-1"
    intake = parse_lead_rows(enumerate(LEADS, start=2), cid)
    async with run_workers(client), serve(mgr) as api:
        await mgr.start(intake,
                        CampaignOptions(brief="Book a 20-minute call.", kb=str(KB), follow_ups=["5s", "5s"]),
                        name="Agree", campaign_id=cid, tuning=EngineTuning(per_domain_pacing=False))
        ids = {lead.email: lead.lead_id for lead in await mgr._keyed(cid, intake)}
        await wait_stage(client, cid, {Stage.AWAITING_APPROVAL})
        await mgr.set_excluded(cid, ids[ANA], excluded=True, by="rita")
        await store.add_suppressions([BO], "manual", source="manual")
        await mgr.approve(cid, by="rita")

        async def cy_sent() -> bool:
            row = await store.get_delivery(message_key(cid, ids[CY], 1))
            return row is not None and row.status == "sent"  # its Message-ID recorded
        # Cy answers step 1 well before step 2 is due (5 s later): the stop is read then.
        await until(cy_sent, "Cy's step 1")
        to_cy = await store.get_delivery(message_key(cid, ids[CY], 1))
        assert to_cy is not None and to_cy.message_id
        desk = ReplyDesk(store, TemporalCampaignSignals(client), source="webhook")
        await desk.process(InboundMessage.model_validate({  # in the thread of our message
            "from": CY, "subject": "Re: hello", "message_id": "<r-cy@carely.example>",
            "in_reply_to": [to_cy.message_id], "text": "Yes, call me Tuesday."}))
        await wait_stage(client, cid, {Stage.COMPLETED})
        # The reply read as interested (as the reply action's classifier records it).
        (cy_reply,) = await store.list_replies(cid)
        assert await store.record_reply_intent(cy_reply.reply_id, "interested", 0.9, "stop")

        status = await mgr.status(cid)
        report = await mgr.report(cid)
        watched = [s async for s in changes(mgr, cid, interval=0.1)]
        shown = io.StringIO()
        await watch_progress(mgr, cid, 0.1, Console(file=shown, width=400, no_color=True))
        token = await Reviewers(store).add("rita")
        page = await browser.new_page()
        base = str(api.base_url).rstrip("/")
        await sign_in(page, base, token)
        await page.goto(f"{base}/review/campaigns/{cid}")
        counts_text = await page.get_by_label("Counts").inner_text()
        writer_note = await page.get_by_role("note").first.inner_text()
        await asyncio.sleep(1.5)  # let the exporter see the last points
        samples = scrape(port)

    c = status.counts
    # Who wrote the drafts, said by status and the page alike: no LLM is configured here.
    assert status.writer == "offline"
    assert "offline" in writer_note.lower(), writer_note
    # The campaign as it happened: Ana excluded (3), Bo suppressed then stopped (1 + 2),
    # Cy sent then stopped by his reply (1 + 2), Di and Ed sent (3 + 3).
    assert (c.messages, c.sent, c.suppressed, c.stopped, c.excluded, c.send_failed,
            c.pending, c.replied) == (15, 7, 1, 4, 3, 0, 0, 1), c
    # report: the same rows.
    tally = {s: sum(r.delivery_status == s for r in report) for s in
             ("sent", "suppressed", "stopped", "excluded", "failed", "pending")}
    assert (tally["sent"], tally["suppressed"], tally["stopped"], tally["excluded"],
            tally["failed"], tally["pending"], len(report)) == (
        c.sent, c.suppressed, c.stopped, c.excluded, c.send_failed, c.pending, c.messages)
    # The replies by intent and each step: sent adds up to the report's sent rows of that
    # step; Cy's positive reply answered step 1 (its Message-ID), sent to Cy, Di and Ed.
    assert status.replies_by_intent == {"interested": 1}
    assert [(s.step, s.sent, s.positive_replies) for s in status.steps] == [
        (step, sum(r.step == step and r.delivery_status == "sent" for r in report),
         int(step == 1)) for step in (1, 2, 3)]
    assert [s.sent for s in status.steps] == [3, 2, 2]
    assert status.positive_reply_rate == round(1 / 3, 4)
    # --watch --json: its last document is the status.
    assert json.loads(watched[-1].model_dump_json()) == json.loads(status.model_dump_json())
    # --watch: the line says what was sent, replied and stopped, and nothing pending.
    last_line = [line for line in shown.getvalue().splitlines() if line.startswith(cid)][-1]
    for word, value in (("sent", c.sent), ("replied", c.replied), ("stopped", c.stopped),
                        ("suppressed", c.suppressed), ("send failures", c.send_failed)):
        assert f"{word} {value}" in last_line, last_line
    assert f"pending {c.pending} of {c.messages}" in last_line, last_line
    assert "replies interested 1 (positive 33.3%)" in last_line, last_line
    # The campaign page: the same figures.
    for figure in (f"{c.messages} ·", f"{c.sent} sent", f"{c.pending} pending",
                   f"{c.stopped} stopped", f"{c.excluded} excluded", f"{c.replied} replied",
                   f"{c.suppressed} suppressed"):
        assert figure in counts_text, counts_text
    assert re.search(r"\b100%", counts_text) is None or c.pending == 0
    # /metrics: this campaign ran alone on this runtime.
    assert total(samples, "campaign_messages_total", outcome="sent") == c.sent
    for s in status.steps:  # the dashboard's denominator is step 1's
        assert total(samples, "campaign_messages_total", outcome="sent", step=str(s.step)) == s.sent
    assert total(samples, "campaign_messages_total", outcome="suppressed") == c.suppressed
    assert total(samples, "campaign_messages_total", outcome="failed") == c.send_failed
    assert total(samples, "campaign_replies_total", kind="reply") == c.replied
    assert total(samples, "campaign_leads_drafted_total") == c.drafted
    assert total(samples, "campaign_drafts_approved_total") == c.approved
