"""/metrics: a campaign moves the engine's counters by exactly its own counts.

A worker process's runtime exports the SDK's metrics and the engine's on one Prometheus
listener; the test runs a campaign against the real dev server with workers on such a
runtime, an LLM test server behind the real openai client, then scrapes the endpoint
and reads it with Prometheus' own text parser.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime
from temporalio.testing import WorkflowEnvironment

from campaign_core.events import DeliveryEvent
from campaign_core.ids import campaign_workflow_id
from campaign_core.intents import ReplyIntent
from campaign_core.leads import parse_lead_rows
from campaign_core.metrics import (
    INTENT_LABELS,
    install,
    listener_of,
    metrics_address,
    process_metrics,
    telemetry_runtime,
    watch_backlog,
    watch_senders,
)
from campaign_core.models import CampaignStatus, DeliveryEventKind, Stage
from campaign_core.ports import free_port
from campaign_core.settings import Settings
from starter.manager import CampaignManager
from starter.start_options import CampaignOptions
from tests.conftest import KB
from tests.fakes.llm_server import LLMTestServer
from tests.fakes.sender_sends import add_sender, sent_campaign

BRIEF = "Book a 20-minute intro call. Every claim must cite the knowledge base."
LEADS = [
    {"email": "ana@example.com", "first_name": "Ana", "company": "Northwind Freight"},
    {"email": "bo@example.org", "first_name": "Bo", "company": "Ledgerly"},
    {"email": "cy@example.net", "first_name": "Cy", "company": "Carely"},
    {"email": "di@example.io", "first_name": "Di", "company": "Datawise"},
]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def llm() -> Iterator[LLMTestServer]:
    with LLMTestServer() as server:
        yield server


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
async def runtime(settings: Settings, port: int) -> AsyncIterator[Runtime]:
    """A runtime exporting to Prometheus, installed as the process's for this test only."""
    rt = telemetry_runtime(settings, metrics_address("127.0.0.1", port))
    assert rt is not None
    install(rt)
    yield rt
    install(None)


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = frozenset((k, v) for k, v in s.labels.items()
                               if k in {"outcome", "channel", "direction", "purpose", "kind",
                                        "task_queue", "route", "status", "intent", "step",
                                        "sender"})
            out[(s.name, labels)] = out.get((s.name, labels), 0.0) + s.value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of `name` over every series whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


async def wait_stage(client: Client, cid: str, stages: set[Stage]) -> None:
    handle = client.get_workflow_handle(campaign_workflow_id(cid))
    for _ in range(1200):
        if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
            return
        status = await handle.query("status", result_type=CampaignStatus)
        if status.stage in stages:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{cid} never reached {stages}")


async def test_campaign_moves_the_counters_by_its_counts(
    dev_env: WorkflowEnvironment, settings: Settings, store: Any, prefix: str,
    run_workers: Any, llm: LLMTestServer, runtime: Runtime, port: int,
) -> None:
    llm.script("bad_citation", "bad_citation", match="first_name: Bo")  # repair, then fails
    llm.script("bad_citation", match="first_name: Cy")  # repaired
    llm_settings = settings.model_copy(update={
        "llm_provider": "openai", "openai_api_key": SecretStr("test-key"),
        "openai_base_url": llm.base_url, "llm_model": "test-model",
        "llm_price_input": 1.0, "llm_price_output": 2.0,
    })
    client = await Client.connect(dev_env.client.service_client.config.target_host,
                                  data_converter=pydantic_data_converter, runtime=runtime)
    from worker_main import build_agents

    mgr = CampaignManager(llm_settings, client=client, store=store, queue_prefix=prefix,
                          use_search_attributes=False)
    cid = "metrics-1"
    async with run_workers(client, agents=build_agents(store, llm_settings)):
        await mgr.start(parse_lead_rows(enumerate(LEADS, start=2), cid),
                        CampaignOptions(brief=BRIEF, kb=str(KB)), name="m", campaign_id=cid)
        await wait_stage(client, cid, {Stage.AWAITING_APPROVAL})
        await mgr.approve(cid, by="tester")
        await wait_stage(client, cid, {Stage.COMPLETED})
        status = await mgr.status(cid)
        report = {r.email: r for r in await store.report(cid)}
        await mgr.delivery_event(DeliveryEvent(type=DeliveryEventKind.COMPLAINT,
                                               email="ana@example.com",
                                               message_id=report["ana@example.com"].message_id),
                                 source="test")
        await asyncio.sleep(1.5)  # let the exporter see the last points
        samples = scrape(port)

    c = status.counts
    assert (c.drafted, c.draft_failed, c.sent) == (3, 1, 3)
    assert total(samples, "campaign_leads_drafted_total") == c.drafted
    assert total(samples, "campaign_leads_draft_failed_total") == c.draft_failed
    assert total(samples, "campaign_drafts_approved_total") == c.approved
    assert total(samples, "campaign_messages_total", channel="outbox", outcome="sent") == c.sent
    # Status, report and metrics agree: the counts are the report's tallies (issue 24).
    assert total(samples, "campaign_messages_total", outcome="suppressed") == c.suppressed
    assert total(samples, "campaign_messages_total", outcome="failed") == c.send_failed
    assert c.sent == sum(r.delivery_status == "sent" for r in report.values())
    assert (c.pending, c.held, report["bo@example.org"].delivery_status) == (0, 1, "not_approved")
    assert total(samples, "campaign_complaints_total") == 1
    calls = llm.calls()
    assert total(samples, "campaign_llm_calls_total") == len(calls)
    assert total(samples, "campaign_llm_calls_total", purpose="repair") == 2
    assert total(samples, "campaign_guardrail_repairs_total") == 2
    assert total(samples, "campaign_guardrail_failures_total") == 1
    assert total(samples, "campaign_llm_tokens_total", direction="input") > 0
    spend = sum(float((d.provenance or {}).get("cost_usd") or 0.0)
                for d in await store.list_drafts(cid))
    assert total(samples, "campaign_llm_cost_usd_sum") >= spend - 1e-9 > 0  # float sums
    # The SDK's own metrics share the listener.
    assert any(name.startswith("temporal_") for name, _ in samples)


async def test_backlog_gauge_reads_the_servers_task_queue_statistics(
    dev_env: WorkflowEnvironment, runtime: Runtime, port: int, prefix: str,
) -> None:
    client = await Client.connect(dev_env.client.service_client.config.target_host,
                                  runtime=runtime)
    queue = f"{prefix}backlog"
    for i in range(3):  # nobody polls this queue: the tasks wait in its backlog
        await client.start_workflow("Nobody", id=f"{prefix}wf-{i}", task_queue=queue,
                                    execution_timeout=timedelta(minutes=5))
    stop = asyncio.Event()
    seen = 0.0
    for _ in range(40):  # the server's statistics lag a little behind
        watcher = asyncio.create_task(watch_backlog(client, [queue], stop, every=0.1))
        await asyncio.sleep(0.3)
        stop.set()
        await watcher
        stop.clear()
        await asyncio.sleep(1.2)
        seen = total(scrape(port), "campaign_task_queue_backlog", task_queue=queue,
                     kind="workflow")
        if seen == 3:
            break
    assert seen == 3


async def test_replies_are_counted_by_a_bounded_intent(runtime: Runtime, port: int) -> None:
    """`campaign_replies_total{intent}` takes the eleven intents and `unclassified` only:
    a machine's message unread is counted by its kind, a person's as `unclassified`, and a
    value outside the enum (whatever a classifier or a caller made up) as `unclassified`."""
    metrics = process_metrics()
    for intent in ReplyIntent:
        metrics.reply(kind="reply", matched_by="message_id", intent=intent.value)
    metrics.reply(kind="reply", matched_by="message_id", intent="interested")
    metrics.reply(kind="reply", matched_by="address")  # not read yet
    metrics.reply(kind="auto_reply", matched_by="message_id")
    metrics.reply(kind="bounce", matched_by="none")
    for made_up in ("Interested", "very_interested", "<script>", ""):
        metrics.reply(kind="reply", matched_by="address", intent=made_up)
    metrics.message("outbox", "sent", step=1)
    metrics.message("outbox", "sent", step=2)
    samples: Samples = {}
    for _ in range(20):  # the exporter catches up
        samples = scrape(port)
        if total(samples, "campaign_replies_total") == len(ReplyIntent) + 8:
            break
        await asyncio.sleep(0.2)
    seen = {dict(labels).get("intent") for name, labels in samples
            if name == "campaign_replies_total"}
    assert seen == INTENT_LABELS
    assert total(samples, "campaign_replies_total", intent="interested") == 2
    assert total(samples, "campaign_replies_total", intent="unclassified") == 5
    assert total(samples, "campaign_replies_total", intent="auto_reply", kind="auto_reply") == 1
    assert total(samples, "campaign_replies_total", intent="bounce", kind="bounce") == 1
    assert total(samples, "campaign_replies_total", intent="bounce") == 2
    assert total(samples, "campaign_messages_total", outcome="sent", step="1") == 1
    assert total(samples, "campaign_messages_total", outcome="sent") == 2


async def test_messages_are_counted_by_sender(runtime: Runtime, port: int) -> None:
    """`campaign_messages_total{sender}`: the mailbox a message left from, "" for the
    implicit sender (no senders defined), so the label has one value per mailbox."""
    metrics = process_metrics()
    metrics.message("smtp", "sent", step=1, sender="ana")
    metrics.message("smtp", "sent", step=2, sender="ana")
    metrics.message("outbox", "sent", step=1, sender="bo")
    metrics.message("smtp", "failed", step=1, sender="bo")
    metrics.message("smtp", "sent", step=1)  # the implicit sender
    samples: Samples = {}
    for _ in range(20):  # the exporter catches up
        samples = scrape(port)
        if total(samples, "campaign_messages_total") == 5:
            break
        await asyncio.sleep(0.2)
    by_sender = {dict(labels)["sender"]: 0.0 for name, labels in samples
                 if name == "campaign_messages_total"}
    for sender in by_sender:
        by_sender[sender] = total(samples, "campaign_messages_total", outcome="sent",
                                  sender=sender)
    assert by_sender == {"ana": 2, "bo": 1, "": 1}
    assert total(samples, "campaign_messages_total", outcome="failed", sender="bo") == 1


async def test_sender_gauges_describe_the_store(
        runtime: Runtime, port: int, store: Any, settings: Settings) -> None:
    """Two senders with sends in the store: /metrics shows each one's capacity left in the
    rolling 24 hours (today's cap minus its sends in them; 0 while paused) and whether it is
    paused, refreshed in the background; a sender resumed reads its capacity again, and a
    removed one's series are gone from the next scrape."""
    now = datetime.now(UTC)
    await add_sender(store, "ana", now - timedelta(days=3), daily_cap=40)
    await add_sender(store, "bo", now - timedelta(days=3), daily_cap=20)
    await sent_campaign(store, "c-ana", 10, now - timedelta(hours=3), sender="ana")
    # bo: 25 sends a day and a half ago (outside the rolling 24 hours), 5 in it.
    await sent_campaign(store, "c-bo-old", 25, now - timedelta(hours=36), sender="bo")
    await sent_campaign(store, "c-bo", 5, now - timedelta(hours=2), sender="bo", first_seq=26)
    assert await store.set_sender_paused("bo", True, "paused by ops")

    def gauges() -> dict[str, dict[str, float]]:
        samples = scrape_senders(port)
        return {name: {s: v for (n, s), v in samples.items() if n == f"campaign_sender_{name}"}
                for name in ("capacity_remaining", "paused")}

    async def seen(want: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        got: dict[str, dict[str, float]] = {}
        for _ in range(100):  # the watcher reads the store every 0.05 s
            got = gauges()
            if got == want:
                break
            await asyncio.sleep(0.05)
        return got

    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_senders(store, settings, stop, every=0.05))
    try:
        assert await seen({"capacity_remaining": {"ana": 30, "bo": 0},
                           "paused": {"ana": 0, "bo": 1}}) == {
            "capacity_remaining": {"ana": 30, "bo": 0}, "paused": {"ana": 0, "bo": 1}}
        assert await store.set_sender_paused("bo", False, None)
        assert await store.remove_sender("ana")
        assert await seen({"capacity_remaining": {"bo": 15}, "paused": {"bo": 0}}) == {
            "capacity_remaining": {"bo": 15}, "paused": {"bo": 0}}
    finally:
        stop.set()
        await watcher


def scrape_senders(port: int) -> dict[tuple[str, str], float]:
    """The `campaign_sender_*` gauges on /metrics by (name, sender)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {(s.name, s.labels["sender"]): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name.startswith("campaign_sender_") and family.type == "gauge"}


def test_the_listener_serves_only_metrics(runtime: Runtime, port: int) -> None:
    """/metrics is served in front of the runtime's exporter, which listens elsewhere; any
    other path is a 404."""
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
    assert err.value.code == 404
    listener = listener_of(runtime)
    assert listener is not None and listener.port == port
    assert not listener.upstream_url.endswith(f":{port}/metrics")
