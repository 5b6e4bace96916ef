"""The delivery agent sends from a lead's sender (issue 28): through that sender's own SMTP
server (its URL an `env:` reference or sealed under CAMPAIGN_ENCRYPTION_KEY, unsealed at
send time), as its From, DKIM-signed with its key so that a receiver verifies the signature
against the key the DNS serves; the outbox channel never goes over SMTP; a send past the
mailbox's cap waits on the schedule and sends nothing; a removed sender's lead stops.

Real parts: aiosmtpd servers on loopback, the real SQLite store, the loopback DNS server.
"""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import dkim
import pytest
from temporalio.testing import ActivityEnvironment

from activities.delivery import DeliveryAgent
from campaign_core.dkim_sign import load_dkim_key
from campaign_core.ids import message_key
from campaign_core.leads import Lead, parse_lead_rows
from campaign_core.models import Channel, DeliverInput, DeliveryOutcome
from campaign_core.secret_refs import seal
from campaign_core.senders import SenderRow
from campaign_core.settings import Settings
from campaign_core.store.base import Store
from tests.fakes.dkim_keys import rsa_pem
from tests.fakes.dns_server import dkim_dnsfunc, dns_server
from tests.fakes.smtp_server import smtp_server

POSTAL = "Acme Ltd, 1 Harbour Street, Bristol BS1 4RN, UK"
PEOPLE = [{"email": f"p{i}@co{i}.example", "first_name": f"P{i}"} for i in range(4)]


async def seeded(store: Store, cid: str, channel: Channel) -> list[Lead]:
    leads = parse_lead_rows(enumerate(PEOPLE, start=2), cid).leads
    await store.upsert_campaign(campaign_id=cid, name="t", brief="", channel=channel.value,
                                kb_dir=None, workflow_id=f"campaign:{cid}")
    await store.upsert_leads(cid, leads)
    for lead in leads:
        await store.upsert_draft(campaign_id=cid, lead_id=lead.lead_id, step=1,
                                 subject=f"Hello {lead.first_name}", body="Hi,\n\nShall we talk?",
                                 citations=[], provenance={}, envelope_id=f"env-{lead.lead_id}")
    await store.record_decision(campaign_id=cid, decision_id="d1", decision="approve",
                                lead_ids=None, by="tester", note=None)
    return leads


async def deliver(store: Store, settings: Settings, cid: str, lead_id: str,
                  channel: Channel) -> DeliveryOutcome:
    return await ActivityEnvironment().run(
        DeliveryAgent(store, settings).deliver_message,
        DeliverInput(campaign_id=cid, lead_id=lead_id, channel=channel, senders=True))


def sender(name: str, **kw: Any) -> SenderRow:
    return SenderRow(name=name, from_addr=f"{name.title()} Ruiz <{name}@acme.example>",
                     created_at=datetime.now(UTC), **{"transport": "smtp", **kw})


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_each_lead_leaves_through_its_senders_server_signed_with_its_key(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("CAMPAIGN_ENCRYPTION_KEY", f"k1:{key}")
    settings = Settings()
    settings.postal_address = POSTAL
    pem = rsa_pem(2048)
    public = load_dkim_key(pem).public_record()
    cid = "c-smtp-senders"
    leads = await seeded(store, cid, Channel.SMTP)
    with smtp_server(user="ana", password="pw-ana") as (ana_sink, ana_url), \
            smtp_server() as (bo_sink, bo_url), \
            dns_server({"s1._domainkey.acme.example": {"TXT": [public]}}) as dns:
        monkeypatch.setenv("ANA_SMTP_URL", ana_url)
        await store.add_sender(sender("ana", smtp_url="env:ANA_SMTP_URL", min_gap_seconds=0,
                                      dkim_selector="s1", dkim_key=seal(pem, settings)))
        await store.add_sender(sender("bo", smtp_url=seal(bo_url, settings), min_gap_seconds=0))
        assert "pw-ana" not in str(await store.get_sender("ana"))
        await store.assign_senders(cid, {leads[0].lead_id: "ana", leads[1].lead_id: "ana",
                                         leads[2].lead_id: "bo", leads[3].lead_id: "bo"})
        outcomes = [await deliver(store, settings, cid, lead.lead_id, Channel.SMTP)
                    for lead in leads]
        again = await deliver(store, settings, cid, leads[0].lead_id, Channel.SMTP)
        assert [o.status for o in outcomes] == ["sent"] * 4 and again.status == "sent"
        assert [o.sender for o in outcomes] == ["ana", "ana", "bo", "bo"]
        assert len(ana_sink.messages) == 2 and len(bo_sink.messages) == 2  # none twice
        assert ana_sink.logins, "ana's server saw ana's login, from the env: URL"
        for received in ana_sink.messages:
            msg = received.message
            assert parseaddr(str(msg["From"])) == ("Ana Ruiz", "ana@acme.example")
            assert str(msg["Message-ID"]).endswith("@acme.example>")
            assert "s=s1" in str(msg["DKIM-Signature"]).replace(" ", "")
            assert dkim.verify(received.content, dnsfunc=dkim_dnsfunc(dns.address))
            altered = received.content.replace(b"Shall we talk?", b"Shall we walk?")
            assert not dkim.verify(altered, dnsfunc=dkim_dnsfunc(dns.address))
        for received in bo_sink.messages:
            assert parseaddr(str(received.message["From"]))[1] == "bo@acme.example"
            assert received.message["DKIM-Signature"] is None  # bo has no key
    claims = await store.sender_claims_since("ana", datetime(2000, 1, 1, tzinfo=UTC))
    assert [c.message_key for c in claims] == [message_key(cid, lead.lead_id, 1)
                                               for lead in leads[:2]]
    report = {r.lead_id: r.sender for r in await store.report(cid)}
    assert report == {leads[0].lead_id: "ana", leads[1].lead_id: "ana",
                      leads[2].lead_id: "bo", leads[3].lead_id: "bo"}


async def test_outbox_channel_writes_with_the_senders_from_and_never_uses_its_server(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = "c-outbox-senders"
    leads = await seeded(store, cid, Channel.OUTBOX)
    with smtp_server() as (sink, url):
        monkeypatch.setenv("ANA_SMTP_URL", url)
        await store.add_sender(sender("ana", smtp_url="env:ANA_SMTP_URL"))
        await store.assign_senders(cid, {lead.lead_id: "ana" for lead in leads})
        out = await deliver(store, settings, cid, leads[0].lead_id, Channel.OUTBOX)
    assert out.status == "sent" and sink.messages == []
    files = list(Path(settings.outbox_dir).glob("*.eml"))
    assert len(files) == 1 and b"From: Ana Ruiz <ana@acme.example>" in files[0].read_bytes()


async def test_past_its_cap_a_send_waits_on_the_schedule_and_a_removed_senders_lead_stops(
    store: Store, settings: Settings
) -> None:
    cid = "c-capped"
    leads = await seeded(store, cid, Channel.OUTBOX)
    await store.add_sender(sender("ana", transport="outbox", daily_cap=2, hourly_cap=2,
                                  min_gap_seconds=0))
    await store.add_sender(sender("gone", transport="outbox"))
    await store.assign_senders(cid, {leads[0].lead_id: "ana", leads[1].lead_id: "ana",
                                     leads[2].lead_id: "ana", leads[3].lead_id: "gone"})
    assert await store.remove_sender("gone")
    first = [await deliver(store, settings, cid, lead.lead_id, Channel.OUTBOX)
             for lead in leads[:2]]
    assert [o.status for o in first] == ["sent", "sent"]
    before = datetime.now(UTC)
    third = await deliver(store, settings, cid, leads[2].lead_id, Channel.OUTBOX)
    assert third.status == "waiting" and third.sender == "ana"
    assert third.next_slot is not None and third.next_slot > before + timedelta(hours=23)
    step = await store.get_step(cid, leads[2].lead_id, 1)
    assert step is not None and step.status == "scheduled" and step.wait_reason == "capacity"
    assert (await store.capacity_waits(cid))[0] == 1
    assert len(list(Path(settings.outbox_dir).glob("*.eml"))) == 2  # the third is not sent
    fourth = await deliver(store, settings, cid, leads[3].lead_id, Channel.OUTBOX)
    assert (fourth.status, fourth.stop_reason) == ("stopped", "sender gone removed")


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_a_mailbox_its_server_refuses_pauses_its_sender_instead_of_failing_leads(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revoked password (535 at login) would refuse every message of the mailbox: the
    sender pauses itself and the lead waits; fixed and resumed, it is sent once."""
    settings.postal_address = POSTAL
    cid = "c-revoked"
    leads = await seeded(store, cid, Channel.SMTP)
    with smtp_server(user="ana", password="right") as (sink, url):
        monkeypatch.setenv("ANA_SMTP_URL", url.replace("right", "revoked"))
        await store.add_sender(sender("ana", smtp_url="env:ANA_SMTP_URL", min_gap_seconds=0))
        await store.assign_senders(cid, {leads[0].lead_id: "ana", leads[1].lead_id: "ana"})
        held = await deliver(store, settings, cid, leads[0].lead_id, Channel.SMTP)
        assert (held.status, held.sender, held.stop_reason) == ("waiting", "ana", "paused")
        row = await store.get_sender("ana")
        assert row is not None and row.paused and "SMTP 535" in str(row.paused_reason)
        assert "revoked" not in str(row.paused_reason)
        step = await store.get_step(cid, leads[0].lead_id, 1)
        assert step is not None and step.wait_reason == "paused"
        second = await deliver(store, settings, cid, leads[1].lead_id, Channel.SMTP)
        assert second.status == "waiting"  # held without trying the server again
        assert [r.delivery_status for r in await store.report(cid)
                if r.lead_id in (leads[0].lead_id, leads[1].lead_id)] == ["pending"] * 2
        audit = [r for e in await store.audit(cid) for r in e.envelope["records"]
                 if r["kind"] == "sender_paused"]
        assert len(audit) == 1 and audit[0]["data"]["smtp"] == "SMTP 535"
        # A person fixes the login and resumes the sender: the held sends go, once each.
        monkeypatch.setenv("ANA_SMTP_URL", url)
        assert await store.set_sender_paused("ana", False, None)
        assert await store.release_sender_holds("ana", datetime.now(UTC)) == [cid]
        outs = [await deliver(store, settings, cid, lead.lead_id, Channel.SMTP)
                for lead in leads[:2]]
    assert [o.status for o in outs] == ["sent", "sent"]
    assert len(sink.messages) == 2


async def test_a_lead_drafted_without_a_sender_is_assigned_one_at_send(
    store: Store, settings: Settings
) -> None:
    """"Assigned at send": a lead of a campaign with senders that got none when drafted
    takes one of the mailboxes its campaign uses (not a paused or removed one) when its
    first step goes out, and keeps it; with none usable, CAMPAIGN_FROM sends it."""
    cid = "c-at-send"
    leads = await seeded(store, cid, Channel.OUTBOX)
    for name in ("ana", "bo", "cy"):
        await store.add_sender(sender(name, transport="outbox", min_gap_seconds=0))
    await store.assign_senders(cid, {leads[0].lead_id: "ana", leads[1].lead_id: "bo"})
    assert await store.set_sender_paused("bo", True, "paused by tester")
    out = await deliver(store, settings, cid, leads[2].lead_id, Channel.OUTBOX)
    assert (out.status, out.sender) == ("sent", "ana")  # bo is paused; cy is not the campaign's
    assert await store.lead_sender(cid, leads[2].lead_id) == "ana"
    assert await store.remove_sender("ana")
    implicit = await deliver(store, settings, cid, leads[3].lead_id, Channel.OUTBOX)
    assert (implicit.status, implicit.sender) == ("sent", None)
    assert await store.lead_sender(cid, leads[3].lead_id) is None
    froms = sorted(p.read_bytes().split(b"From: ", 1)[1].split(b"\n", 1)[0].strip()
                   for p in Path(settings.outbox_dir).glob("*.eml"))
    assert froms == [b"Ana Ruiz <ana@acme.example>", b"Campaigns <campaigns@localhost>"]
