"""`DeliveryAgent.send_answer`: a person's answer to a reply, sent once over SMTP (aiosmtpd).

The activity alone (temporalio's ActivityEnvironment) on the real SQLite store: the message
is threaded to their reply; a second run sends nothing; a run after the SMTP commit point was
recorded (a worker killed after the final `.`) does not send again; a suppressed address and
a webhook campaign are refused, non-retryable, with nothing sent.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.delivery import DeliveryAgent
from campaign_core.answers import ANSWER_COMMITTING, ANSWER_SENT, AnswerInput, answer_key
from campaign_core.envelope import Envelope, EnvelopeMetadata, Provenance, Record, now_utc
from campaign_core.ids import message_key
from campaign_core.leads import parse_lead_rows
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from tests.fakes.smtp_server import SmtpSink, smtp_server

ANA = {"email": "ana@northwind.example", "first_name": "Ana", "last_name": "Ölund"}
OURS = "<msg_step1@sender.example>"


@pytest.fixture
def smtp() -> Any:
    with smtp_server() as served:
        yield served


@pytest.fixture
def agent(settings: Settings, store: SqliteStore, smtp: tuple[SmtpSink, str]) -> DeliveryAgent:
    settings.smtp_url = SecretStr(smtp[1])
    settings.mail_from = "Rita <rita@sender.example>"
    settings.postal_address = "Sender Inc., 1 Main St, Springfield"
    return DeliveryAgent(store, settings)


async def claimed_reply(store: SqliteStore, cid: str, *, channel: str = "smtp",
                        mid: str = "<r1@northwind.example>") -> str:
    """A campaign whose step 1 reached Ana, her reply to it, and an answer claimed by rita."""
    await store.upsert_campaign(campaign_id=cid, name=cid, brief="", channel=channel,
                                kb_dir=None, workflow_id=f"campaign:{cid}")
    [lead] = parse_lead_rows(enumerate([ANA], start=2), cid).leads
    await store.upsert_leads(cid, [lead])
    await store.upsert_delivery(message_key=message_key(cid, lead.lead_id, 1), campaign_id=cid,
                                lead_id=lead.lead_id, step=1, channel=channel, status="sent",
                                message_id=OURS)
    rid, _ = await store.record_reply(message_id=mid, kind="reply", email=ANA["email"],
                                      source="webhook", campaign_id=cid, lead_id=lead.lead_id,
                                      step=1, subject="Re: A question", text="Yes, Tuesday.",
                                      matched_by="message_id")
    await store.save_reply_answer(rid, subject="", body="Tuesday it is.", by="rita")
    assert await store.claim_answer_send(rid, by="rita") is not None
    return rid


def kinds(entries: list[Any], kind: str) -> list[dict[str, Any]]:
    return [r["data"] for e in entries for r in e.envelope["records"] if r["kind"] == kind]


async def test_the_answer_goes_once_threaded_to_their_reply(
        agent: DeliveryAgent, store: SqliteStore, smtp: tuple[SmtpSink, str]) -> None:
    sink = smtp[0]
    rid = await claimed_reply(store, "c-a")
    first = await ActivityEnvironment().run(agent.send_answer, AnswerInput(reply_id=rid))
    second = await ActivityEnvironment().run(agent.send_answer, AnswerInput(reply_id=rid))
    assert (first.status, second.status) == ("sent", "already_sent")
    assert first.message_id == second.message_id == f"<{answer_key(rid)}@sender.example>"
    [got] = sink.messages
    msg = got.message
    assert got.rcpt_tos == [ANA["email"]] and got.mail_from == "rita@sender.example"
    assert (msg["Subject"], msg["In-Reply-To"], msg["References"]) == (
        "Re: A question", "<r1@northwind.example>", f"{OURS} <r1@northwind.example>")
    text = msg.get_body(("plain",))
    assert msg["List-Unsubscribe"] and text is not None and "Springfield" in text.get_content()
    row = await store.get_reply_answer(rid)
    assert row is not None and (row.status, row.sent_by, row.message_id) == (
        "sent", "rita", first.message_id)
    lead_id = row.lead_id
    assert lead_id is not None
    audit = await store.audit("c-a", lead_id)
    assert [(d["by"], d["message_id"]) for d in kinds(audit, ANSWER_SENT)] == [
        ("rita", first.message_id)]


async def test_after_the_commit_point_a_retry_does_not_send_again(
        agent: DeliveryAgent, store: SqliteStore, smtp: tuple[SmtpSink, str]) -> None:
    rid = await claimed_reply(store, "c-b")
    reply = await store.get_reply(rid)
    assert reply is not None and reply.lead_id is not None
    at = now_utc()
    # What an attempt killed after the final `.` leaves behind: the commit point, no record.
    await store.save_envelope(Envelope(
        metadata=EnvelopeMetadata(campaign_id="c-b", run_id="r", agent="delivery.send_answer",
                                  agent_version="1", attempt=1, started_at=at, ended_at=at),
        records=[Record(kind=ANSWER_COMMITTING, key=rid, data={"status": "committing"},
                        provenance=Provenance(source="test", agent="delivery", created_at=at,
                                              inputs_digest="sha256:" + "0" * 64))]), reply.lead_id)
    done = await ActivityEnvironment().run(agent.send_answer, AnswerInput(reply_id=rid))
    assert done.status == "sent"
    assert smtp[0].messages == [], "not sent a second time"
    [sent] = kinds(await store.audit("c-b", reply.lead_id), ANSWER_SENT)
    assert sent["unconfirmed"] is True


async def test_a_suppressed_address_or_a_webhook_campaign_is_refused(
        agent: DeliveryAgent, store: SqliteStore, smtp: tuple[SmtpSink, str]) -> None:
    rid = await claimed_reply(store, "c-c")
    await store.add_suppressions([ANA["email"]], "asked", source="manual")
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(agent.send_answer, AnswerInput(reply_id=rid))
    assert (refused.value.type, refused.value.non_retryable) == ("Suppressed", True)
    hook = await claimed_reply(store, "c-d", channel="webhook", mid="<r2@northwind.example>")
    with pytest.raises(ApplicationError) as webhook:
        await ActivityEnvironment().run(agent.send_answer, AnswerInput(reply_id=hook))
    assert (webhook.value.type, webhook.value.non_retryable) == ("InvalidInput", True)
    assert smtp[0].messages == []


async def test_the_answer_leaves_from_the_leads_own_sender(
        agent: DeliveryAgent, store: SqliteStore, smtp: tuple[SmtpSink, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 28: the lead was written to from a sender's mailbox, so the answer goes from
    that mailbox (its From, its server), not from CAMPAIGN_FROM."""
    from datetime import UTC, datetime

    from campaign_core.senders import SenderRow

    with smtp_server() as (own, url):
        monkeypatch.setenv("ANA_SENDER_URL", url)
        await store.add_sender(SenderRow(
            name="maya", from_addr="Maya Lind <maya@mailbox.example>", transport="smtp",
            smtp_url="env:ANA_SENDER_URL", created_at=datetime.now(UTC)))
        rid = await claimed_reply(store, "c-own")
        reply = await store.get_reply(rid)
        assert reply is not None and reply.lead_id is not None
        await store.assign_senders("c-own", {reply.lead_id: "maya"})
        out = await ActivityEnvironment().run(agent.send_answer, AnswerInput(reply_id=rid))
    assert out.status == "sent" and smtp[0].messages == []  # not the shared server
    [got] = own.messages
    assert got.mail_from == "maya@mailbox.example"
    assert str(got.message["From"]) == "Maya Lind <maya@mailbox.example>"
    assert out.message_id == f"<{answer_key(rid)}@mailbox.example>"
