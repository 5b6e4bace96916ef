"""Delivery over real channels: aiosmtpd on loopback and a local HTTP server.

The delivery activity runs in `ActivityEnvironment` against the real SqliteStore;
faults are injected into the store so a "crash" lands exactly between the provider
accepting a message and the row being updated, and the activity is then run again,
as Temporal's retry would.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

import pytest
from pydantic import SecretStr
from temporalio.testing import ActivityEnvironment

from activities.delivery import COMMITTING, DeliveryAgent
from campaign_core.ids import message_key
from campaign_core.leads import Lead, parse_lead_rows
from campaign_core.models import Channel, DeliverInput, Stage
from campaign_core.unsubscribe import read_token, signing_key
from starter.manager import BadInput, CampaignManager
from starter.start_options import CampaignOptions
from tests.conftest import KB
from tests.fakes.smtp_server import smtp_server
from tests.fakes.webhook_signing import DELIVERY_SECRET, INBOUND_SECRET, check_signed
from tests.workflows.test_campaign_workflow import result_handle, wait_stage

LEADS = [
    {"email": "ana@example.com", "first_name": "Ana", "company": "Northwind"},
    {"email": "bo@example.org", "first_name": "Bo", "company": "Ledgerly"},
    {"email": "cy@example.net", "first_name": "Cy", "company": "Carely"},
]


async def seed(store, cid: str, leads: list[Lead], channel: str = "smtp",
               body: str = "Hi there,\n\nShall we talk?") -> list[Lead]:
    await store.upsert_campaign(campaign_id=cid, name="t", brief="", channel=channel,
                                kb_dir=None, workflow_id=f"campaign:{cid}")
    await store.upsert_leads(cid, leads)
    for lead in leads:
        await store.upsert_draft(campaign_id=cid, lead_id=lead.lead_id, step=1,
                                 subject=f"Hello {lead.first_name}", body=body, citations=[],
                                 provenance={}, envelope_id=f"env-{lead.lead_id}")
    await store.record_decision(campaign_id=cid, decision_id="d1", decision="approve",
                                lead_ids=None, by="tester", note=None)
    return leads


def part(msg: Any, subtype: str) -> str:
    body = msg.get_body(preferencelist=(subtype,))
    assert body is not None, f"no text/{subtype} part"
    return str(body.get_content())


def parsed_leads(cid: str, rows: list[dict[str, str]] = LEADS) -> list[Lead]:
    return parse_lead_rows(enumerate(rows, start=2), cid).leads


async def deliver(store, settings, cid: str, lead_id: str, channel: Channel):
    agent = DeliveryAgent(store, settings)
    return await ActivityEnvironment().run(
        agent.deliver_message, DeliverInput(campaign_id=cid, lead_id=lead_id, channel=channel))


def fail_once(monkeypatch, store, status: str) -> list[str]:
    """Make the store's next `upsert_delivery(status=...)` raise, as if the worker died."""
    original = store.upsert_delivery
    raised: list[str] = []

    async def flaky(**kwargs: Any) -> None:
        if kwargs["status"] == status and not raised:
            raised.append(kwargs["message_key"])
            raise RuntimeError(f"injected crash before recording {status!r}")
        await original(**kwargs)

    monkeypatch.setattr(store, "upsert_delivery", flaky)
    return raised


# -- smtp ----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_smtp_one_message_per_approved_lead_none_to_suppressed(store, settings):
    cid = "c-smtp"
    leads = await seed(store, cid, parsed_leads(cid))
    await store.add_suppressions(["bo@example.org"], "test", source="manual")
    with smtp_server(user="mailer", password="s3cr:t") as (sink, url):
        settings.smtp_url = SecretStr(url.replace("s3cr:t", "s3cr%3At"))
        outcomes = [await deliver(store, settings, cid, lead.lead_id, Channel.SMTP)
                    for lead in leads]
        again = [await deliver(store, settings, cid, lead.lead_id, Channel.SMTP)
                 for lead in leads]  # a retry after success sends nothing more
    assert [o.status for o in outcomes] == ["sent", "suppressed", "sent"]
    assert [o.status for o in again] == ["sent", "suppressed", "sent"]
    assert sink.logins, "the client authenticated with the user from the URL"
    assert sorted(r for m in sink.messages for r in m.rcpt_tos) == ["ana@example.com",
                                                                   "cy@example.net"]
    assert len(sink.messages) == 2
    for received in sink.messages:
        msg = received.message
        key = str(msg["X-Campaign-Message-Key"])
        assert msg["Message-ID"] == f"<{key}@localhost>"
        assert received.mail_from == "campaigns@localhost"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        unsub = str(msg["List-Unsubscribe"])
        token = re.search(r"<http://localhost:8000/unsubscribe\?token=([^>]+)>", unsub)
        assert token is not None, unsub
        claims = read_token(await signing_key(settings, store), unquote(token.group(1)))
        lead = next(ld for ld in leads if ld.email == received.rcpt_tos[0])
        assert (claims.campaign_id, claims.lead_id, claims.step) == (cid, lead.lead_id, 1)
        assert lead.email not in unsub, "no address in the link"
        assert "<mailto:unsubscribe@localhost?subject=unsubscribe%20" + key + ">" in unsub
        assert msg.get_content_type() == "multipart/alternative"
        text = part(msg, "plain")
        html = part(msg, "html")
        link = f"unsubscribe?token={token.group(1)}"
        assert link in text and link in html
        assert msg["Date"] is not None and msg["Subject"].startswith("Hello ")
    report = {r.email: r for r in await store.report(cid)}
    assert report["ana@example.com"].delivery_status == "sent"
    assert report["bo@example.org"].delivery_status == "suppressed"


async def test_step_1_not_sent_to_a_person_who_replied_to_another_campaign(store, settings):
    """Issue 27: ana replied to c-a after c-b was created (c-b awaited approval): c-b's
    step 1 to her is not sent, recorded `stopped` naming c-a (a retry says the same); bo
    is sent to."""
    cid = "c-first"
    ana, bo = await seed(store, cid, parsed_leads(cid, LEADS[:2]))
    await store.upsert_campaign(campaign_id="c-a", name="a", brief="", channel="smtp",
                                kb_dir=None, workflow_id="campaign:c-a")
    (ana_a,) = parsed_leads("c-a", LEADS[:1])
    await store.upsert_leads("c-a", [ana_a])
    await store.record_reply(message_id="<r@x>", kind="reply", email=ana.email, source="imap",
                             campaign_id="c-a", lead_id=ana_a.lead_id, matched_by="message_id")
    with smtp_server() as (sink, url):
        settings.smtp_url = SecretStr(url)
        outcomes = [await deliver(store, settings, cid, lead.lead_id, Channel.SMTP)
                    for lead in (ana, bo, ana)]
    assert [(o.status, o.stop_reason) for o in outcomes] == [
        ("stopped", "replied in campaign c-a"), ("sent", None),
        ("stopped", "replied in campaign c-a")]
    assert [r for m in sink.messages for r in m.rcpt_tos] == [bo.email]
    report = {r.email: (r.delivery_status, r.stop_reason) for r in await store.report(cid)}
    assert report == {ana.email: ("stopped", "replied in campaign c-a"),
                      bo.email: ("sent", None)}


async def test_smtp_crash_after_server_accepted_sends_exactly_once(store, settings, monkeypatch):
    cid = "c-crash"
    [lead] = await seed(store, cid, parsed_leads(cid, LEADS[:1]))
    key = message_key(cid, lead.lead_id)
    with smtp_server() as (sink, url):
        settings.smtp_url = SecretStr(url)
        raised = fail_once(monkeypatch, store, "sent")
        with pytest.raises(RuntimeError, match="injected crash"):
            await deliver(store, settings, cid, lead.lead_id, Channel.SMTP)
        assert raised == [key]
        assert len(sink.messages) == 1, "the server accepted the message before the crash"
        assert getattr(await store.get_delivery(key), "status", None) == COMMITTING
        out = await deliver(store, settings, cid, lead.lead_id, Channel.SMTP)  # the retry
        await deliver(store, settings, cid, lead.lead_id, Channel.SMTP)  # and one more
    assert out.status == "sent" and out.message_id == f"<{key}@localhost>"
    assert len(sink.with_message_id(out.message_id)) == 1
    assert len(sink.messages) == 1
    row = await store.get_delivery(key)
    assert row is not None and row.status == "sent" and row.message_id == out.message_id
    assert (row.error or "").startswith("unconfirmed")


async def test_smtp_crash_before_the_final_dot_resends_once(store, settings, monkeypatch):
    """A crash with the body sent but not the final `.`: the server holds nothing
    (a transaction counts only once the `.` arrives), so the retry sends, once."""
    cid = "c-early"
    [lead] = await seed(store, cid, parsed_leads(cid, LEADS[:1]))
    with smtp_server() as (sink, url):
        settings.smtp_url = SecretStr(url)
        fail_once(monkeypatch, store, COMMITTING)
        with pytest.raises(RuntimeError, match="injected crash"):
            await deliver(store, settings, cid, lead.lead_id, Channel.SMTP)
        assert sink.messages == []
        out = await deliver(store, settings, cid, lead.lead_id, Channel.SMTP)
    assert out.status == "sent"
    assert len(sink.with_message_id(out.message_id)) == 1 and len(sink.messages) == 1
    assert getattr(await store.get_delivery(message_key(cid, lead.lead_id)), "error", 1) is None


async def test_crlf_in_lead_data_cannot_inject_headers(store, settings):
    cid = "c-inject"
    evil = Lead(lead_id="lead-evil", email="eve@example.com",
                first_name="Eve\r\nBcc: evil@example.com", last_name="<b>Smith</b>")
    await seed(store, cid, [evil], body="Dear <b>Eve</b> & \"co\",\n\n<script>x()</script>")
    with smtp_server() as (sink, url):
        settings.smtp_url = SecretStr(url)
        out = await deliver(store, settings, cid, evil.lead_id, Channel.SMTP)
    assert out.status == "sent"
    [received] = sink.messages
    assert received.rcpt_tos == ["eve@example.com"]
    assert b"\nBcc:" not in received.content and b"\rBcc:" not in received.content
    msg = received.message
    assert msg["Bcc"] is None
    assert [a.addr_spec for a in msg["To"].addresses] == ["eve@example.com"]
    assert "\n" not in str(msg["Subject"]) and "\r" not in str(msg["Subject"])
    html = part(msg, "html")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "&lt;b&gt;Eve&lt;/b&gt; &amp; &quot;co&quot;" in html
    text = part(msg, "plain")
    assert "<script>x()</script>" in text  # plain text stays as written


async def test_start_refuses_channels_without_configuration(store, settings):
    mgr = CampaignManager(settings, client=None, store=store, use_search_attributes=False)
    intake = parse_lead_rows(enumerate(LEADS, start=2), "c-nocfg")
    with pytest.raises(BadInput, match="CAMPAIGN_SMTP_URL"):
        await mgr.start(intake, CampaignOptions(channel=Channel.SMTP), name="t", campaign_id="c-nocfg")
    with pytest.raises(BadInput, match="CAMPAIGN_WEBHOOK_URL"):
        await mgr.start(intake, CampaignOptions(channel=Channel.WEBHOOK), name="t", campaign_id="c-nocfg")
    settings.webhook_url = SecretStr("http://127.0.0.1:9/hook")
    with pytest.raises(BadInput, match="CAMPAIGN_DELIVERY_WEBHOOK_SECRET"):
        await mgr.start(intake, CampaignOptions(channel=Channel.WEBHOOK), name="t", campaign_id="c-nocfg")
    settings.webhook_secret = SecretStr(INBOUND_SECRET)  # the inbound secret is not enough
    with pytest.raises(BadInput, match="CAMPAIGN_DELIVERY_WEBHOOK_SECRET"):
        await mgr.start(intake, CampaignOptions(channel=Channel.WEBHOOK), name="t", campaign_id="c-nocfg")
    settings.delivery_webhook_secret = SecretStr("hook-secret")  # not whsec_<base64>
    with pytest.raises(BadInput, match="CAMPAIGN_DELIVERY_WEBHOOK_SECRET must be whsec_"):
        await mgr.start(intake, CampaignOptions(channel=Channel.WEBHOOK), name="t", campaign_id="c-nocfg")
    assert await store.get_campaign("c-nocfg") is None


# -- webhook -------------------------------------------------------------------------------


async def test_webhook_signed_with_idempotency_key_and_retry_keeps_it(store, settings,
                                                                       hook_factory):
    cid = "c-hook"
    [lead] = await seed(store, cid, parsed_leads(cid, LEADS[:1]), channel="webhook")
    key = message_key(cid, lead.lead_id)
    hook = hook_factory([503])
    settings.webhook_url = SecretStr(hook.url)
    settings.delivery_webhook_secret = SecretStr(DELIVERY_SECRET)
    settings.webhook_secret = SecretStr(INBOUND_SECRET)  # the inbound one signs nothing
    with pytest.raises(Exception, match="503"):
        await deliver(store, settings, cid, lead.lead_id, Channel.WEBHOOK)
    out = await deliver(store, settings, cid, lead.lead_id, Channel.WEBHOOK)  # the retry
    await deliver(store, settings, cid, lead.lead_id, Channel.WEBHOOK)  # done: no request
    assert out.status == "sent" and out.message_id == f"<{key}@localhost>"
    assert len(hook.requests) == 2
    for headers, body in hook.requests:
        check_signed(headers, body, DELIVERY_SECRET)
        assert headers["webhook-id"] == key, "the message key: the same on every attempt"
        assert headers["Idempotency-Key"] == key
        assert headers["Content-Type"] == "application/json"
        doc = json.loads(body)
        assert doc["message_key"] == key and doc["to"] == "ana@example.com"
        assert doc["message_id"] == out.message_id
        assert doc["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    tampered = hook.requests[0][1].replace(b"ana@", b"eve@")
    with pytest.raises(AssertionError):
        check_signed(hook.requests[0][0], tampered, DELIVERY_SECRET)
    with pytest.raises(AssertionError):
        check_signed(hook.requests[0][0], hook.requests[0][1], INBOUND_SECRET)
    audit = [a for a in await store.audit(cid) if a.agent.startswith("delivery")]
    assert audit[-1].envelope["records"][0]["data"]["provider_id"] == "wh-2"


async def test_webhook_crash_after_accept_resends_same_key(store, settings, hook_factory,
                                                          monkeypatch):
    """The receiver accepted, the row was not updated: the resend carries the same key."""
    cid = "c-hook-crash"
    [lead] = await seed(store, cid, parsed_leads(cid, LEADS[:1]), channel="webhook")
    hook = hook_factory([])
    settings.webhook_url = SecretStr(hook.url)
    settings.delivery_webhook_secret = SecretStr(DELIVERY_SECRET)
    fail_once(monkeypatch, store, "sent")
    with pytest.raises(RuntimeError, match="injected crash"):
        await deliver(store, settings, cid, lead.lead_id, Channel.WEBHOOK)
    out = await deliver(store, settings, cid, lead.lead_id, Channel.WEBHOOK)
    assert out.status == "sent"
    assert len(hook.requests) == 2
    (h1, b1), (h2, b2) = hook.requests
    assert h1["Idempotency-Key"] == h2["Idempotency-Key"] == message_key(cid, lead.lead_id)
    assert b1 == b2, "a resend is the same document, so the receiver can drop it by key"
    assert len({h["Idempotency-Key"] for h, _ in hook.requests}) == 1


# -- the whole campaign on the smtp channel --------------------------------------------------


async def test_campaign_on_smtp_channel_delivers_to_server(ts_env, settings, store, prefix,
                                                           run_workers):
    cid = "c-wf-smtp"
    settings.postal_address = "Relay Inc., 1 Main St, Springfield, IL 62701, USA"
    with smtp_server() as (sink, url):
        settings.smtp_url = SecretStr(url)
        async with run_workers(ts_env.client):
            mgr = CampaignManager(settings, client=ts_env.client, store=store, queue_prefix=prefix,
                                  use_search_attributes=False)
            intake = parse_lead_rows(enumerate(LEADS, start=2), cid)
            await mgr.start(intake, CampaignOptions(brief="Book a call.", kb=str(KB), channel=Channel.SMTP),
                            name="smtp", campaign_id=cid)
            await wait_stage(ts_env, cid, Stage.AWAITING_APPROVAL)
            assert sink.messages == [], "nothing is sent before approval"
            await mgr.approve(cid, by="tester")
            final = await result_handle(ts_env, cid).result()
    assert final.stage is Stage.COMPLETED and final.counts.sent == 3
    assert len(sink.messages) == 3
    assert sorted(r for m in sink.messages for r in m.rcpt_tos) == sorted(x["email"] for x in LEADS)
    ids = {str(m.message["Message-ID"]) for m in sink.messages}
    assert len(ids) == 3
    assert not settings.outbox_dir.exists() or not list(settings.outbox_dir.glob("*.eml"))
    report = await mgr.report(cid)
    assert {r.message_id for r in report} == ids


