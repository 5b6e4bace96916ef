"""Addresses that are not ASCII before the @ (issue 24, item 3): `josé.muñoz@...`.

Such an address is valid (RFC 6531/6532) but can travel over SMTP only with the SMTPUTF8
extension. It used to pass intake and then never be delivered: building the message
raised `NonASCIILocalPartDefect`, which was retried as a transport fault for minutes, and
the campaign ended `completed` with `send_failed 0` and the lead's rows `pending`.

Now: a server that offers SMTPUTF8 (aiosmtpd's `enable_SMTPUTF8`) gets the message with a
UTF-8 envelope and `To`; one that does not makes the send fail at once, not retried, its
row `failed` with the reason (and the steps after it `stopped`); the outbox and webhook
channels take it as is; intake names such addresses with their rows.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from email.parser import Parser
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.delivery import SMTPUTF8_REQUIRED, DeliveryAgent
from campaign_core.ids import message_key
from campaign_core.leads import (
    SMTPUTF8_WARNING,
    Lead,
    Utf8Address,
    needs_smtputf8,
    needs_smtputf8_leads,
    parse_lead_rows,
)
from campaign_core.models import Channel, DeliverInput, Stage
from campaign_core.ports import free_port
from starter.manager import CampaignManager
from starter.start_options import CampaignOptions
from tests.conftest import KB
from tests.fakes.smtp_server import SmtpSink
from tests.fakes.webhook_signing import DELIVERY_SECRET
from tests.workflows.test_campaign_workflow import wait_stage
from tests.workflows.test_orchestration import finish

JOSE = "josé.muñoz@correos-rapidos.example"
ANA = "ana@example.com"
ROWS = [
    {"email": ANA, "first_name": "Ana", "company": "Northwind"},
    {"email": "José.Muñoz@Correos-Rapidos.example", "first_name": "José", "last_name": "Muñoz",
     "company": "Correos Rápidos"},
]


@dataclass
class OptionsSink(SmtpSink):
    """An SmtpSink that also keeps each transaction's MAIL FROM parameters."""

    mail_options: list[list[str]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mail_options.append(list(envelope.mail_options))
        return await super().handle_DATA(server, session, envelope)


@contextmanager
def smtp_server(*, smtputf8: bool) -> Iterator[tuple[OptionsSink, str]]:
    """aiosmtpd on loopback, offering SMTPUTF8 or not; yields the sink and the URL."""
    sink = OptionsSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, enable_SMTPUTF8=smtputf8)
    controller.start()
    try:
        yield sink, f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()


def utf8_message(content: bytes) -> EmailMessage:
    """A received message read as RFC 6532 text (UTF-8 headers decoded as UTF-8)."""
    msg = Parser(policy=default).parsestr(content.decode("utf-8"))
    assert isinstance(msg, EmailMessage)
    return msg


def leads_of(cid: str) -> list[Lead]:
    return parse_lead_rows(enumerate(ROWS, start=2), cid).leads


async def seed(store, cid: str, channel: str, steps: int = 1) -> dict[str, Lead]:
    """A campaign with both leads, approved drafts for `steps` steps."""
    leads = leads_of(cid)
    await store.upsert_campaign(campaign_id=cid, name="t", brief="", channel=channel,
                                kb_dir=None, workflow_id=f"campaign:{cid}")
    await store.upsert_leads(cid, leads)
    for lead in leads:
        for step in range(1, steps + 1):
            await store.upsert_draft(campaign_id=cid, lead_id=lead.lead_id, step=step,
                                     subject=f"Hola {lead.first_name}", body="¿Hablamos?",
                                     citations=[], provenance={},
                                     envelope_id=f"env-{lead.lead_id}-{step}")
    await store.record_decision(campaign_id=cid, decision_id="d1", decision="approve",
                                lead_ids=None, by="tester", note=None)
    return {lead.email: lead for lead in leads}


async def deliver(store, settings, cid: str, lead: Lead, channel: Channel, steps: int = 1):
    return await ActivityEnvironment().run(
        DeliveryAgent(store, settings).deliver_message,
        DeliverInput(campaign_id=cid, lead_id=lead.lead_id, channel=channel, steps=steps))


def test_intake_keeps_the_address_and_knows_it_needs_smtputf8():
    leads = leads_of("c-intake")
    assert [lead.email for lead in leads] == [ANA, JOSE], "normalised, not rejected"
    assert needs_smtputf8_leads(leads) == [Utf8Address(row=3, email=JOSE)]
    assert needs_smtputf8(JOSE) and not needs_smtputf8(ANA)
    assert not needs_smtputf8("ana@xn--exmple-cua.com"), "an IDNA domain is ASCII"


async def test_server_with_smtputf8_gets_the_utf8_address(store, settings):
    cid = "c-utf8"
    leads = await seed(store, cid, "smtp")
    with smtp_server(smtputf8=True) as (sink, url):
        settings.smtp_url = SecretStr(url)
        jose = await deliver(store, settings, cid, leads[JOSE], Channel.SMTP)
        ana = await deliver(store, settings, cid, leads[ANA], Channel.SMTP)
    assert jose.status == "sent" and ana.status == "sent"
    by_rcpt = {m.rcpt_tos[0]: (m, opts) for m, opts in zip(sink.messages, sink.mail_options,
                                                           strict=True)}
    received, options = by_rcpt[JOSE]
    assert received.rcpt_tos == [JOSE], "the envelope recipient is the UTF-8 address"
    assert "SMTPUTF8" in options
    msg = utf8_message(received.content)
    assert [a.addr_spec for a in msg["To"].addresses] == [JOSE]
    assert msg["To"].addresses[0].display_name == "José Muñoz"
    assert JOSE.encode() in received.content, "raw UTF-8, not an encoded word"
    assert msg["Message-ID"] == jose.message_id
    _, ana_options = by_rcpt[ANA]
    assert "SMTPUTF8" not in ana_options, "an ASCII address goes as before"
    row = await store.get_delivery(message_key(cid, leads[JOSE].lead_id))
    assert row is not None and row.status == "sent" and row.error is None


async def test_server_without_smtputf8_fails_at_once_and_records_it(store, settings):
    cid = "c-no-utf8"
    leads = await seed(store, cid, "smtp", steps=3)
    with smtp_server(smtputf8=False) as (sink, url):
        settings.smtp_url = SecretStr(url)
        with pytest.raises(ApplicationError) as raised:
            await deliver(store, settings, cid, leads[JOSE], Channel.SMTP, steps=3)
        ana = await deliver(store, settings, cid, leads[ANA], Channel.SMTP, steps=3)
    err = raised.value
    assert err.type == SMTPUTF8_REQUIRED and err.non_retryable
    assert "SMTPUTF8" in err.message and JOSE not in err.message  # it goes to history
    assert ana.status == "sent"
    assert [m.rcpt_tos for m in sink.messages] == [[ANA]], "nothing went for José"
    row = await store.get_delivery(message_key(cid, leads[JOSE].lead_id))
    assert row is not None and row.status == "failed"
    assert row.error is not None and "does not offer SMTPUTF8" in row.error
    report = {(r.email, r.step): r for r in await store.report(cid)}
    assert report[JOSE, 1].delivery_status == "failed"
    assert "SMTPUTF8" in (report[JOSE, 1].error or "")
    for step in (2, 3):  # never sent after a failed step 1: stopped, with the reason
        assert report[JOSE, step].delivery_status == "stopped"
        assert report[JOSE, step].stop_reason == "step 1 failed"
    counts = await store.counts(cid)
    assert counts.send_failed == 1 and counts.sent == 1


async def test_outbox_and_webhook_take_the_utf8_address(store, settings, hook_factory):
    cid = "c-utf8-files"
    leads = await seed(store, cid, "outbox")
    out = await deliver(store, settings, cid, leads[JOSE], Channel.OUTBOX)
    assert out.status == "sent"
    eml = settings.outbox_dir / f"{message_key(cid, leads[JOSE].lead_id)}.eml"
    msg = utf8_message(eml.read_bytes())
    assert [a.addr_spec for a in msg["To"].addresses] == [JOSE]

    cid = "c-utf8-hook"
    leads = await seed(store, cid, "webhook")
    hook = hook_factory([])
    settings.webhook_url = SecretStr(hook.url)
    settings.delivery_webhook_secret = SecretStr(DELIVERY_SECRET)
    out = await deliver(store, settings, cid, leads[JOSE], Channel.WEBHOOK)
    assert out.status == "sent"
    [(_, body)] = hook.requests
    doc = json.loads(body)
    assert doc["to"] == JOSE and doc["to_header"] == f"José Muñoz <{JOSE}>"


# -- intake: start names the addresses ------------------------------------------------------

CAMPAIGN = str(Path(sys.executable).parent / "campaign")


async def test_start_names_the_addresses_needing_smtputf8(dev_env, home, tmp_path, prefix):
    """`campaign start` warns on stderr (file, row, address) and `--json` lists them under
    an added key; the contract's keys stay as they were."""
    leads = tmp_path / "leads.csv"
    leads.write_text("email,first_name\nana@example.com,Ana\nnot-an-address,Bad\n"
                     f"{JOSE},José\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "CAMPAIGN_"))}
    env |= {"TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "CAMPAIGN_HOME": str(home), "CAMPAIGN_TASK_QUEUE_PREFIX": prefix, "NO_COLOR": "1",
            "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        CAMPAIGN, "start", "--leads", str(leads), "--id", "c-warn", "--json", env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    started = json.loads(out)
    assert {"campaign_id", "workflow_id", "ui_url", "leads_accepted",
            "leads_rejected"} <= set(started)
    assert started["leads_accepted"] == 2 and [r["row"] for r in started["leads_rejected"]] == [3]
    assert started["leads_needing_smtputf8"] == [{"row": 4, "email": JOSE}]
    assert f"row 4: {JOSE}: {SMTPUTF8_WARNING}" in " ".join(err.decode().split())
    await dev_env.client.get_workflow_handle(started["workflow_id"]).terminate("test done")


async def test_post_campaigns_names_the_addresses_needing_smtputf8(ts_env, settings, store,
                                                                  prefix):
    from tests.api.test_api import AUTH, TOKEN, serve

    settings.api_token = SecretStr(TOKEN)
    mgr = CampaignManager(settings, client=ts_env.client, store=store, queue_prefix=prefix,
                          use_search_attributes=False)
    async with serve(mgr) as client:
        r = await client.post("/campaigns", headers=AUTH, json={
            "name": "utf8", "id": "c-warn-http", "leads": [{"email": ANA}, {"email": JOSE}]})
    assert r.status_code == 201, r.text
    assert r.json()["leads_needing_smtputf8"] == [{"row": 2, "email": JOSE}]


# -- the whole campaign -----------------------------------------------------------------------


async def test_campaign_over_smtp_without_smtputf8_reports_the_failure(
        ts_env, settings, store, prefix, run_workers):
    """A three-step campaign: Ana gets all three; José's step 1 fails once, not retried,
    is counted in send_failed and reported `failed` with its reason; his later steps
    are `stopped`. No row is left `pending`."""
    cid = "c-wf-utf8"
    settings.postal_address = "Relay Inc., 1 Main St, Springfield, IL 62701, USA"
    with smtp_server(smtputf8=False) as (sink, url):
        settings.smtp_url = SecretStr(url)
        async with run_workers(ts_env.client):
            mgr = CampaignManager(settings, client=ts_env.client, store=store,
                                  queue_prefix=prefix, use_search_attributes=False)
            intake = parse_lead_rows(enumerate(ROWS, start=2), cid)
            started = await mgr.start(intake,
                                      CampaignOptions(brief="Book a call.", kb=str(KB),
                                                      channel=Channel.SMTP, follow_ups=["1h", "1h"]),
                                      name="utf8", campaign_id=cid)
            assert [a.model_dump() for a in started.leads_needing_smtputf8] == [
                {"row": 3, "email": JOSE}]
            await wait_stage(ts_env, cid, Stage.AWAITING_APPROVAL)
            await mgr.approve(cid, by="tester")
            final = await finish(ts_env, cid, timedelta(hours=1))
            report = await mgr.report(cid)
            status = await mgr.status(cid)
    assert final.stage is Stage.COMPLETED
    assert final.counts.send_failed == 1 and final.counts.sent == 3
    assert [m.rcpt_tos for m in sink.messages] == [[ANA]] * 3
    rows = {(r.email, r.step): r for r in report}
    assert rows[JOSE, 1].delivery_status == "failed"
    assert "SMTPUTF8" in (rows[JOSE, 1].error or "")
    assert [rows[JOSE, s].delivery_status for s in (2, 3)] == ["stopped", "stopped"]
    assert [rows[ANA, s].delivery_status for s in (1, 2, 3)] == ["sent"] * 3
    assert not [r for r in report if r.delivery_status == "pending"]
    assert status.counts.send_failed == 1
    # The worker's history guard keeps one failure record per failed attempt.
    failures = [e for e in await store.audit(cid, rows[JOSE, 1].lead_id)
                if e.agent == "worker.deliver_message"]
    assert len(failures) == 1, "one attempt: not retried"
    data = failures[0].envelope["records"][0]["data"]
    assert data["error_type"] == SMTPUTF8_REQUIRED and data["retryable"] is False
