"""A sender pauses itself on its bounces and complaints as they arrive (issue 28, Health).

Bounce and complaint webhooks, signed as Standard Webhooks, go to the real API served on
loopback over a real SQLite store holding campaigns whose messages were sent (a `sent`
delivery with its Message-ID and, for a sender, its claim in `sender_sends`). Each event
that counts is counted against the message's sender: 3 bounces in its last 50 sends pass
CAMPAIGN_SENDER_MAX_BOUNCE_RATE (3%) and pause it, with the reason on the sender, an
entry in the campaign's audit trail (`campaign audit`, `GET /campaigns/{id}/audit`) and
`campaign_sender_auto_pauses_total` on /metrics; 2 bounces (and the same message bouncing
twice) do not; one complaint does; DSNs found in the reply mailbox count as the webhooks
do; a message of the implicit sender changes nothing. The campaigns do not run here: the
signal to their bounce breaker finds no workflow on the time-skipping server and says so."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from temporalio.runtime import Runtime
from temporalio.testing import WorkflowEnvironment

from campaign_core.inbound import InboundMessage
from campaign_core.metrics import install, metrics_address, telemetry_runtime
from campaign_core.ports import free_port
from campaign_core.replies import ReplyDesk
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.api import create_app
from starter.manager import CampaignManager
from tests.fakes.sender_sends import Sent, add_sender, sent_campaign
from tests.fakes.served import serving
from tests.fakes.webhook_signing import INBOUND_SECRET, signed_headers
from tests.inbound.test_inbound import DSN_TEXT
from workflows.signals import TemporalCampaignSignals

TOKEN = "sender-health-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
NOW = datetime.now(UTC)
START = NOW - timedelta(hours=3)


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    settings.api_token = SecretStr(TOKEN)
    settings.webhook_secret = SecretStr(INBOUND_SECRET)
    return settings


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def runtime(settings: Settings, metrics_port: int) -> Iterator[Runtime]:
    """A runtime exporting to Prometheus, the process's for this test only."""
    rt = telemetry_runtime(settings, metrics_address("127.0.0.1", metrics_port))
    assert rt is not None
    install(rt)
    yield rt
    install(None)


@pytest.fixture
async def api(hook_settings: Settings, store: SqliteStore, ts_env: WorkflowEnvironment,
              runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    manager = CampaignManager(hook_settings, client=ts_env.client, store=store)
    async with serving(create_app(hook_settings, manager=manager)) as client:
        yield client


async def event(api: httpx.AsyncClient, kind: str, sent: Sent, event_id: str) -> dict[str, Any]:
    """POST one signed `kind` event (bounce or complaint) for the message `sent`."""
    raw = json.dumps({"email": sent.email, "message_id": sent.message_id,
                      "event_id": event_id, "detail": "550 5.1.1 user unknown"}).encode()
    r = await api.post(f"/webhooks/{kind}", content=raw, headers={**AUTH, **signed_headers(raw)})
    assert r.status_code == 200, r.text
    [result] = r.json()
    return dict(result)


async def pauses_entries(api: httpx.AsyncClient, campaign_id: str) -> list[dict[str, Any]]:
    """The campaign's audit records of a sender pausing, as `campaign audit --json` has them."""
    r = await api.get(f"/campaigns/{campaign_id}/audit", headers=AUTH)
    assert r.status_code == 200, r.text
    return [rec for entry in r.json() for rec in entry["envelope"]["records"]
            if rec["kind"] == "sender_paused"]


async def auto_pauses(port: int, sender: str, want: float) -> float:
    """campaign_sender_auto_pauses_total{sender} on /metrics, read until it is `want` (the
    exporter publishes a point a little after it is recorded) or 50 reads have passed."""
    seen = 0.0
    for _ in range(50):
        async with httpx.AsyncClient(timeout=5) as scraper:
            text = (await scraper.get(f"http://127.0.0.1:{port}/metrics")).text
        seen = sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "campaign_sender_auto_pauses_total"
                   and s.labels.get("sender") == sender)
        if seen == want:
            break
        await asyncio.sleep(0.1)
    return seen


async def test_three_bounces_in_fifty_sends_pause_the_sender(
        api: httpx.AsyncClient, store: SqliteStore, metrics_port: int) -> None:
    await add_sender(store, "ana", START)
    sent = await sent_campaign(store, "c-ana", 50, START, sender="ana")

    first = await event(api, "bounce", sent[0], "ev-1")
    assert first["campaign_id"] == "c-ana" and first["suppressed"]
    assert first["sender_paused"] is None
    assert (await event(api, "bounce", sent[1], "ev-2"))["sender_paused"] is None
    # The same message bouncing again (a DSN after the provider's webhook) is one bounce.
    assert (await event(api, "bounce", sent[1], "ev-2-dsn"))["sender_paused"] is None
    health = await store.sender_health("ana")
    assert (health.sends, health.bounces, health.complaints) == (50, 2, 0)
    row = await store.get_sender("ana")
    assert row is not None and not row.paused, "2 bounces in 50 (4%) are fewer than 3"
    assert await pauses_entries(api, "c-ana") == []

    third = await event(api, "bounce", sent[2], "ev-3")
    assert third["sender_paused"] == "ana"
    reason = ("bounces: 3 of the last 50 sends (6.0%) are over 3%; paused — check the list, "
              "then `campaign sender resume ana`")
    row = await store.get_sender("ana")
    assert row is not None and row.paused and row.paused_reason == reason
    [record] = await pauses_entries(api, "c-ana")
    assert record["key"] == "ana"
    assert record["data"] == {
        "sender": "ana", "by": "health", "reason": reason, "bounces": 3, "complaints": 0,
        "sends": 50, "max_bounce_rate": 0.03, "event": "bounce", "source": "bounce",
        "message_key": sent[2].message_key}
    assert record["provenance"]["source"] == "delivery_event:bounce"
    assert sent[2].email not in json.dumps(record), "the audit names no address"
    assert await auto_pauses(metrics_port, "ana", 1) == 1

    # Paused already: a fourth bounce is counted, and pauses (and audits) nothing again.
    assert (await event(api, "bounce", sent[3], "ev-4"))["sender_paused"] is None
    assert (await store.sender_health("ana")).bounces == 4
    assert len(await pauses_entries(api, "c-ana")) == 1
    assert await auto_pauses(metrics_port, "ana", 1) == 1


async def test_soft_bounces_and_another_senders_bounces_do_not_count(
        api: httpx.AsyncClient, store: SqliteStore) -> None:
    """Three soft bounces count for nothing; three bounces of another mailbox's messages
    pause that mailbox, not this one."""
    await add_sender(store, "ana", START)
    await add_sender(store, "bo", START)
    ana = await sent_campaign(store, "c-ana", 50, START, sender="ana")
    bo = await sent_campaign(store, "c-bo", 50, START, sender="bo")
    for i in range(3):
        raw = json.dumps({"email": ana[i].email, "message_id": ana[i].message_id,
                          "permanent": False, "event_id": f"soft-{i}"}).encode()
        r = await api.post("/webhooks/bounce", content=raw,
                           headers={**AUTH, **signed_headers(raw)})
        assert r.status_code == 200 and r.json()[0]["sender_paused"] is None, r.text
    for i in range(3):
        await event(api, "bounce", bo[i], f"bo-{i}")
    assert (await store.sender_health("ana")).bounces == 0
    paused = {row.name: row.paused for row in await store.list_senders()}
    assert paused == {"ana": False, "bo": True}
    assert await pauses_entries(api, "c-ana") == []
    assert len(await pauses_entries(api, "c-bo")) == 1


async def test_one_complaint_pauses_the_sender(
        api: httpx.AsyncClient, store: SqliteStore, metrics_port: int) -> None:
    await add_sender(store, "bo", START)
    sent = await sent_campaign(store, "c-bo", 50, START, sender="bo")
    result = await event(api, "complaint", sent[10], "cp-1")
    assert result["sender_paused"] == "bo"
    row = await store.get_sender("bo")
    assert row is not None and row.paused and row.paused_reason is not None
    assert row.paused_reason.startswith(
        "complaints: 1 of the last 50 sends (2.0%) are over 0.1%; paused — check the list "
        "and the copy")
    [record] = await pauses_entries(api, "c-bo")
    assert record["data"]["complaints"] == 1 and record["data"]["event"] == "complaint"
    assert await auto_pauses(metrics_port, "bo", 1) == 1


async def test_a_message_of_the_implicit_sender_changes_no_sender(
        api: httpx.AsyncClient, store: SqliteStore) -> None:
    """No sender defined when these were sent: their bounces are recorded and suppress as
    before, and no mailbox is flagged or paused (a sender added since included)."""
    await add_sender(store, "ana", START)
    sent = await sent_campaign(store, "c-plain", 10, START, sender=None)
    for i in range(5):
        result = await event(api, "bounce", sent[i], f"plain-{i}")
        assert result["suppressed"] and result["sender_paused"] is None
    assert (await store.sender_health("ana")).bounces == 0
    row = await store.get_sender("ana")
    assert row is not None and not row.paused
    assert await pauses_entries(api, "c-plain") == []


async def test_dsns_in_the_reply_mailbox_pause_the_sender_too(
        api: httpx.AsyncClient, store: SqliteStore, ts_env: WorkflowEnvironment,
        metrics_port: int) -> None:
    """The reply desk reads three DSNs returning three of the sender's 50 messages: the
    third pauses it, audited with source `dsn`, as a bounce webhook would."""
    await add_sender(store, "cy", START)
    sent = await sent_campaign(store, "c-cy", 50, START, sender="cy")
    desk = ReplyDesk(store, TemporalCampaignSignals(ts_env.client), source="imap",
                     max_bounce_rate=0.03)
    results = []
    for i in range(3):
        got = await desk.process(InboundMessage.model_validate({
            "from": "Mail Delivery System <MAILER-DAEMON@mx.example.com>",
            "subject": "Undelivered Mail Returned to Sender",
            "message_id": f"<dsn-{i}@mx.example.com>",
            "headers": {"Content-Type": "multipart/report; report-type=delivery-status"},
            "text": DSN_TEXT.replace("Gone@Example.com", sent[i].email)
            + f"Original-Message-ID: {sent[i].message_id}\n"}))
        assert got.bounce is not None and got.bounce.suppressed, got
        results.append(got.bounce.sender_paused)
    assert results == [None, None, "cy"]
    row = await store.get_sender("cy")
    assert row is not None and row.paused
    [record] = await pauses_entries(api, "c-cy")
    assert record["data"]["source"] == "dsn" and record["data"]["bounces"] == 3
    assert await auto_pauses(metrics_port, "cy", 1) == 1
