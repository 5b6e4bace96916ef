"""`POST /webhooks/inbound`: replies in through a signed webhook, matched, recorded, signalled.

A stand-in workflow runs under the campaign's workflow id (`campaign:c1`) on a
time-skipping server and records the `reply` and `delivery_event` signals it gets, so the
tests see exactly what a campaign would hear (the campaign workflow's own handler is
issue 13's sequence part). The store is real SQLite.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from campaign_core.ids import campaign_workflow_id
from campaign_core.leads import parse_lead_rows
from campaign_core.models import DeliveryEventSignal, ReplySignal
from campaign_core.reply_actions import reply_action_id
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.api import create_app
from starter.manager import CampaignManager
from tests.fakes.webhook_signing import INBOUND_SECRET, signed_headers
from tests.inbound.test_inbound import DSN_TEXT

TOKEN = "inbound-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
PEOPLE = [{"email": "ana@example.com"}, {"email": "bo@example.org"}, {"email": "cy@example.net"}]


@workflow.defn(name="InboundCatcher", sandboxed=False)
class Catcher:
    """Records the signals a campaign workflow would receive."""

    def __init__(self) -> None:
        self.got: list[str] = []

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.signal(name="reply")
    def reply(self, s: ReplySignal) -> None:
        self.got.append(f"reply:{s.kind}:{s.lead_id}")

    @workflow.signal(name="delivery_event")
    def delivery_event(self, s: DeliveryEventSignal) -> None:
        self.got.append(f"delivery_event:{s.kind.value}:{s.lead_id}")

    @workflow.query(name="got")
    def seen(self) -> list[str]:
        return self.got


async def seed(store: SqliteStore) -> dict[str, str]:
    """c1 delivering to ana, bo (both sent step 1); c2 completed, sent to cy. Lead ids by name."""
    ids: dict[str, str] = {}
    for cid, stage, people in (("c1", "delivering", PEOPLE[:2]), ("c2", "completed", PEOPLE[2:])):
        await store.upsert_campaign(campaign_id=cid, name=cid, brief="", channel="outbox",
                                    kb_dir=None, workflow_id=campaign_workflow_id(cid))
        await store.set_stage(cid, stage)
        leads = parse_lead_rows(enumerate(people, start=1), cid).leads
        await store.upsert_leads(cid, leads)
        for lead in leads:
            name = lead.email.split("@")[0]
            ids[name] = lead.lead_id
            await store.upsert_delivery(message_key=f"k-{cid}-{name}", campaign_id=cid,
                                        lead_id=lead.lead_id, step=1, channel="outbox",
                                        status="sent", message_id=f"<{cid}-{name}-1@ours.test>")
    return ids


@pytest.fixture
async def api(settings: Settings, store: SqliteStore, ts_env: WorkflowEnvironment
              ) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The API on the time-skipping server's client, and the stand-in for campaign c1."""
    settings.api_token = SecretStr(TOKEN)
    settings.webhook_secret = SecretStr(INBOUND_SECRET)
    queue = f"catch-{uuid.uuid4().hex[:8]}"
    async with Worker(ts_env.client, task_queue=queue, workflows=[Catcher]):
        handle = await ts_env.client.start_workflow(Catcher.run, id=campaign_workflow_id("c1"),
                                                    task_queue=queue)
        app = create_app(settings, manager=CampaignManager(settings, client=ts_env.client,
                                                           store=store))
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                base_url="http://api") as client:
            yield client, handle
        await handle.terminate()


async def post(client: httpx.AsyncClient, body: Any, **sign: Any) -> httpx.Response:
    raw = json.dumps(body).encode()
    return await client.post("/webhooks/inbound", content=raw,
                             headers={**AUTH, **signed_headers(raw, **sign)})


def reply_to(mid: str, sender: str = "Ana <ana@example.com>", **more: Any) -> dict[str, Any]:
    return {"from": sender, "to": "replies@ours.test", "subject": "Re: hello",
            "message_id": f"<{uuid.uuid4().hex}@mail.example.com>", "in_reply_to": mid,
            "references": mid, "headers": {}, "text": "Yes please.\n\n> Hello", **more}


async def test_a_list_is_matched_recorded_and_signalled(api, store: SqliteStore,
                                                        ts_env: WorkflowEnvironment) -> None:
    client, handle = api
    ids = await seed(store)
    body = [
        reply_to("<c1-ana-1@ours.test>"),                                   # by Message-ID
        {"from": "bo@example.org", "subject": "Out of Office: Re: hello",   # by address
         "text": "I am away until Monday."},
        reply_to("<c2-cy-1@ours.test>", "cy@example.net"),                  # a finished campaign
        {"from": "stranger@elsewhere.test", "subject": "who are you?", "text": "?"},
    ]
    r = await post(client, body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert [(g["kind"], g["status"]) for g in got] == [
        ("reply", "matched"), ("auto_reply", "matched"), ("reply", "matched"),
        ("reply", "unmatched")]
    # `notified`: each reply's action workflow was started (issue 27), for a finished
    # campaign too (an unsubscribe is honoured, an answer drafted); Bo's, matched by an
    # address nobody vouched for, is read but changes nothing.
    assert [(m["campaign_id"], m["lead_id"], m["matched_by"], m["step"], m["notified"])
            for g in got for m in g["matches"]] == [
        ("c1", ids["ana"], "message_id", 1, True), ("c1", ids["bo"], "address", None, False),
        ("c2", ids["cy"], "message_id", 1, True)]
    assert got[3]["reply_id"] and not got[3]["matches"]

    assert await store.lead_replied("c1", ids["ana"])
    assert not await store.lead_replied("c1", ids["bo"])  # an out-of-office stops nothing
    assert (await store.counts("c1")).replied == 1
    rows = await store.list_replies("c1")
    assert [(x.lead_id, x.kind, x.text) for x in rows] == [
        (ids["ana"], "reply", "Yes please."), (ids["bo"], "auto_reply", "I am away until Monday.")]
    assert [x.email for x in await store.list_replies(None)] == ["stranger@elsewhere.test"]
    trail = [e for e in await store.audit("c1") if e.agent == "replies.inbound"]
    assert sorted(e.envelope["records"][0]["data"]["status"] for e in trail) == [
        "auto_reply", "reply"]
    # The campaign is told by each reply's action workflow (no worker runs here), once.
    assert await handle.query(Catcher.seen) == []
    for g in got[:3]:
        for m in g["matches"]:
            await ts_env.client.get_workflow_handle(
                reply_action_id(m["reply_id"])).describe()


async def test_a_webhook_id_seen_before_changes_nothing_and_a_message_counts_once(
        api, store: SqliteStore, ts_env: WorkflowEnvironment) -> None:
    client, handle = api
    await seed(store)
    body = reply_to("<c1-ana-1@ours.test>")
    first = await post(client, body, msg_id="wh-1")
    again = await post(client, body, msg_id="wh-1")
    assert first.status_code == again.status_code == 200
    assert again.json() == {"webhook_id": "wh-1", "duplicate": True}
    relayed_twice = await post(client, body, msg_id="wh-2")  # the relay's own retry, a new id
    assert relayed_twice.json()[0]["duplicate"] is True
    assert len(await store.list_replies("c1")) == 1
    assert (await store.counts("c1")).replied == 1
    # Its reply action was started again, which starts nothing new: acted on once.
    reply_id = relayed_twice.json()[0]["matches"][0]["reply_id"]
    assert relayed_twice.json()[0]["matches"][0]["notified"] is True
    started_once = await ts_env.client.get_workflow_handle(
        reply_action_id(reply_id)).describe()
    assert started_once.id == reply_action_id(reply_id)
    assert await handle.query(Catcher.seen) == []


async def test_a_dsn_is_a_bounce_like_a_bounce_webhook(api, store: SqliteStore) -> None:
    client, handle = api
    ids = await seed(store)
    dsn = {"from": "MAILER-DAEMON@mx.example.org", "subject": "Undelivered Mail Returned",
           "headers": {"Content-Type": "multipart/report; report-type=delivery-status"},
           "text": DSN_TEXT.replace("Gone@Example.com", "bo@example.org")
           + "Original-Message-ID: <c1-bo-1@ours.test>\n"}
    r = await post(client, dsn)
    assert r.status_code == 200, r.text
    (got,) = r.json()
    assert (got["kind"], got["matches"][0]["lead_id"]) == ("bounce", ids["bo"])
    assert got["bounce"]["suppressed"] and got["bounce"]["campaign_notified"]
    assert await store.is_suppressed("bo@example.org")
    events = await store.list_delivery_events("c1")
    assert [(e.kind, e.lead_id, e.source) for e in events] == [("bounce", ids["bo"], "dsn")]
    assert not await store.lead_replied("c1", ids["bo"])  # a bounce is not a reply
    assert sorted(await handle.query(Catcher.seen)) == [
        f"delivery_event:bounce:{ids['bo']}", f"reply:bounce:{ids['bo']}"]
    again = await post(client, dsn)  # the same DSN relayed again: one event
    assert again.json()[0]["bounce"]["duplicate"] is True
    assert len(await store.list_delivery_events("c1")) == 1


async def test_unsigned_is_401_and_a_bad_body_is_422_naming_the_field(
        api, store: SqliteStore) -> None:
    client, _ = api
    await seed(store)
    raw = json.dumps(reply_to("<c1-ana-1@ours.test>")).encode()
    r = await client.post("/webhooks/inbound", content=raw, headers=AUTH)
    assert r.status_code == 401
    r = await post(client, [reply_to("<c1-ana-1@ours.test>"), {"from": "nobody", "text": 5}])
    assert r.status_code == 422
    assert [e["loc"] for e in r.json()["detail"]] == [["body", 1, "from"], ["body", 1, "text"]]
    r = await post(client, {"subject": "no sender"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "from"]
    bad = b"{not json"
    r = await client.post("/webhooks/inbound", content=bad, headers={**AUTH, **signed_headers(bad)})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    assert await store.list_replies("c1") == [] and await store.list_replies(None) == []
    # A refused body does not burn its webhook-id: the fixed retry is acted on.
    good = json.dumps(reply_to("<c1-ana-1@ours.test>")).encode()
    assert (await client.post("/webhooks/inbound", content=bad, headers={
        **AUTH, **signed_headers(bad, msg_id="wh-x")})).status_code == 422
    r = await client.post("/webhooks/inbound", content=good,
                          headers={**AUTH, **signed_headers(good, msg_id="wh-x")})
    assert r.status_code == 200 and r.json()[0]["status"] == "matched"
