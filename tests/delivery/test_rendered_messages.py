"""Hardening of what is delivered: every channel's rendered message (issue 11).

Each test runs the real delivery activity against the real SqliteStore and reads what
the channel produced: the outbox `.eml` file, the message aiosmtpd received, the JSON
the webhook receiver got; always both the text and the HTML part.
"""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.testing import ActivityEnvironment

from activities.delivery import DeliveryAgent
from activities.offline_writer import offline_draft
from activities.rendering import render_message, strip_citations
from campaign_core.ids import message_key
from campaign_core.leads import Lead
from campaign_core.models import Channel, DeliverInput
from campaign_core.settings import Settings
from tests.fakes.smtp_server import smtp_server
from tests.fakes.webhook_receiver import Hook
from tests.fakes.webhook_signing import DELIVERY_SECRET

PASSAGE_ID = "case-study-fintech.md#1-8b3c8eee"
CITED_BODY = (f"Hi Ana,\n\nEnterprise deals stalled in KYC for weeks. [{PASSAGE_ID}]\n"
              "Onboarding now takes two days [pricing.md#0-0a1b2c3d, faq.txt#2-deadbeef].\n\n"
              "[integrations.md#4-12345678] It plugs into the tools you use.\n\nBest regards")
CHANNELS = [Channel.OUTBOX, Channel.SMTP, Channel.WEBHOOK]


@pytest.fixture
def clean_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("CAMPAIGN_POSTAL_ADDRESS", raising=False)
    return settings


async def seed(store: Any, cid: str, lead: Lead, channel: Channel, subject: str,
               body: str) -> None:
    await store.upsert_campaign(campaign_id=cid, name="t", brief="", channel=channel.value,
                                kb_dir=None, workflow_id=f"campaign:{cid}")
    await store.upsert_leads(cid, [lead])
    await store.upsert_draft(campaign_id=cid, lead_id=lead.lead_id, step=1, subject=subject,
                             body=body, citations=[PASSAGE_ID], provenance={},
                             envelope_id=f"env-{lead.lead_id}")
    await store.record_decision(campaign_id=cid, decision_id="d1", decision="approve",
                                lead_ids=None, by="tester", note=None)


async def deliver_on(channel: Channel, store: Any, settings: Settings, hook: Hook, lead: Lead,
                     *, subject: str = "Hello", body: str = "Hi,\n\nShall we talk?") -> (
        dict[str, Any]):
    """Deliver one message on `channel`; return its headers (as the receiver parsed
    them, or None for the webhook) and its text and HTML parts."""
    cid = f"c-{channel.value}"
    await seed(store, cid, lead, channel, subject, body)
    agent = DeliveryAgent(store, settings)
    inp = DeliverInput(campaign_id=cid, lead_id=lead.lead_id, channel=channel)
    if channel is Channel.OUTBOX:
        out = await ActivityEnvironment().run(agent.deliver_message, inp)
        raw = (settings.outbox_dir / f"{message_key(cid, lead.lead_id)}.eml").read_bytes()
    elif channel is Channel.SMTP:
        with smtp_server() as (sink, url):
            settings.smtp_url = SecretStr(url)
            out = await ActivityEnvironment().run(agent.deliver_message, inp)
        [received] = sink.messages
        raw = received.content
    else:
        settings.webhook_url = SecretStr(hook.url)
        settings.delivery_webhook_secret = SecretStr(DELIVERY_SECRET)
        out = await ActivityEnvironment().run(agent.deliver_message, inp)
        [doc] = hook.documents
        assert out.status == "sent"
        return {"msg": None, "raw": None, "doc": doc, "subject": doc["subject"],
                "text": _lf(doc["text"]), "html": _lf(doc["html"])}
    assert out.status == "sent"
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return {"msg": msg, "raw": raw, "doc": None, "subject": str(msg["Subject"]),
            "text": _part(msg, "plain"), "html": _part(msg, "html")}


def _part(msg: EmailMessage, subtype: str) -> str:
    body = msg.get_body(preferencelist=(subtype,))
    assert body is not None, f"no text/{subtype} part"
    return _lf(str(body.get_content()))


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n")


def _lead(cid: str = "c", **fields: str) -> Lead:
    return Lead(lead_id="ld_0000000000000001", email="ana@example.com", **fields)


# -- 1. citation markers never reach a recipient ------------------------------------------


@pytest.mark.parametrize("channel", CHANNELS, ids=lambda c: c.value)
async def test_citation_markers_are_stripped_on_every_channel(channel, store, clean_settings,
                                                              hook):
    got = await deliver_on(channel, store, clean_settings, hook, _lead(first_name="Ana"),
                           subject=f"KYC in two days [{PASSAGE_ID}]", body=CITED_BODY)
    for where in ("subject", "text", "html"):
        assert "#1-8b3c8eee" not in got[where], where
        assert "deadbeef" not in got[where] and "12345678" not in got[where], where
    assert got["subject"] == "KYC in two days"
    assert "Enterprise deals stalled in KYC for weeks.\n" in got["text"]
    assert "Onboarding now takes two days.\n" in got["text"]
    assert "\nIt plugs into the tools you use." in got["text"]
    assert "Enterprise deals stalled in KYC for weeks.<br>" in got["html"]


async def test_the_offline_writers_citations_are_kept_for_review_not_delivered(
        store, clean_settings, hook):
    lead = _lead(first_name="Ana", company="Northwind")
    passages = [{"passage_id": PASSAGE_ID, "text": "Enterprise deals stalled in KYC for weeks."}]
    draft = offline_draft(lead, passages)
    assert f"[{PASSAGE_ID}]" in draft.body  # the reviewer sees where the claim comes from
    got = await deliver_on(Channel.OUTBOX, store, clean_settings, hook, lead,
                           subject=draft.subject, body=draft.body)
    assert PASSAGE_ID not in got["text"] and PASSAGE_ID not in got["html"]
    assert "Enterprise deals stalled in KYC for weeks.\n" in got["text"]


def test_strip_citations_leaves_other_brackets_alone():
    assert strip_citations("Keep [1], C# and [see #3].") == "Keep [1], C# and [see #3]."
    assert strip_citations("Two [a b.md#2-abcdef12][c.md#3-00112233] done") == "Two done"
    msg = render_message(key="k", sender="C <c@x.test>", to="a@x.test", to_name=None,
                         subject="s", body=f"x [{PASSAGE_ID}]", unsubscribe_url="http://u/")
    assert PASSAGE_ID not in msg.as_string()
