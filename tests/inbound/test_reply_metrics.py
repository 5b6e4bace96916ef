"""`campaign_replies_total`: every received message recorded is counted once, on both doors.

The process's runtime exports to a Prometheus listener on a free port (as `campaign dev`,
`campaign api --metrics-port` and the workers do); replies come in through the signed
`POST /webhooks/inbound` (the API on a time-skipping server, as tests/inbound/test_inbound_webhook.py
serves it) and through the IMAP mailbox polled by hand (a real Dovecot), and the test
scrapes /metrics with Prometheus' own parser. A message delivered again (a provider's retry
with a new webhook-id, a second pass over the mailbox after a crash) is recognised by its
Message-ID and must not count again.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from temporalio.runtime import Runtime
from temporalio.testing import WorkflowEnvironment

from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.replies import poll_by_hand
from tests.fakes import dovecot as dovecot_fixture
from tests.fakes.dovecot import Dovecot
from tests.inbound import test_inbound_webhook
from tests.inbound.test_inbound import raw_reply
from tests.inbound.test_inbound_webhook import post, reply_to, seed
from tests.ops import test_metrics

api = test_inbound_webhook.api
dovecot = dovecot_fixture.dovecot
port = test_metrics.port  # fixtures, shared with the engine-metrics test
runtime = test_metrics.runtime

Series = dict[frozenset[tuple[str, str]], float]


async def replies_total(port: int) -> Series:
    """Every `campaign_replies_total` series, by its labels, once the exporter has caught up."""
    await asyncio.sleep(1.5)  # let the exporter see the last points
    async with httpx.AsyncClient(timeout=5) as http:
        answer = await http.get(f"http://127.0.0.1:{port}/metrics")
    text = answer.raise_for_status().text
    return {frozenset((k, v) for k, v in s.labels.items() if k != "service_name"): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == "campaign_replies_total"}


def labels(**kv: str) -> frozenset[tuple[str, str]]:
    return frozenset(kv.items())


async def test_webhook_replies_are_counted_once_by_kind(
        api: tuple[httpx.AsyncClient, Any], store: SqliteStore, runtime: Runtime,
        port: int) -> None:
    client, _ = api
    await seed(store)
    reply = reply_to("<c1-ana-1@ours.test>")
    away = {"from": "bo@example.org", "subject": "Out of Office: Re: hello",
            "message_id": "<ooo-1@example.org>", "text": "I am away until Monday."}
    stranger = {"from": "stranger@elsewhere.test", "subject": "who are you?",
                "message_id": "<s-1@elsewhere.test>", "text": "?"}
    assert (await post(client, [reply, away, stranger])).status_code == 200
    # The provider delivers the same messages again under a new webhook-id.
    again = await post(client, [reply, away, stranger])
    assert again.status_code == 200 and all(r["duplicate"] for r in again.json())

    # Counted as received: a message that matched no lead (nothing will read it). Ana's reply
    # and Bo's auto-reply matched leads: they are counted by the reply action when it reads
    # them, under what they meant (no worker runs here, so neither is counted yet;
    # tests/workflows/test_counts_agree.py counts them through the workers).
    assert await replies_total(port) == {
        labels(kind="reply", matched_by="none", intent="unclassified"): 1,
    }


async def test_mailbox_replies_are_counted_once_across_a_second_pass(
        dovecot: Dovecot, ts_env: WorkflowEnvironment, settings: Settings,
        runtime: Runtime, port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    if dovecot.ca_file is not None:  # STARTTLS, verified against the test's own CA
        monkeypatch.setenv("SSL_CERT_FILE", str(dovecot.ca_file))
    settings.imap_url = SecretStr(dovecot.url())
    db = settings.campaign_home / "campaign.db"
    store = SqliteStore(db)
    await store.migrate()
    await seed(store)
    dovecot.append(raw_reply(In_Reply_To="<c1-ana-1@ours.test>",
                             References="<c1-ana-1@ours.test>"))
    dovecot.append(raw_reply(From="Stranger <stranger@elsewhere.test>",
                             Message_ID="<s-1@elsewhere.test>"))
    first = await poll_by_hand(settings, store, ts_env.client)
    assert first.processed == 2
    # A crash after recording, before the cursor moved on: the message is read again.
    with contextlib.closing(sqlite3.connect(db)) as lite, lite:
        lite.execute("UPDATE imap_state SET last_uid = 0")
    second = await poll_by_hand(settings, store, ts_env.client)
    assert second.processed == 2 and all(m.duplicate for r in second.results for m in r.matches)
    await store.close()

    # The stranger's message once; Ana's matched reply waits for the reply action to read it.
    assert await replies_total(port) == {
        labels(kind="reply", matched_by="none", intent="unclassified"): 1}
