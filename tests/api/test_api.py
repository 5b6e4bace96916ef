"""The HTTP API, served by uvicorn on loopback and called over real HTTP.

Campaigns run on the time-skipping server: auth and validation at the boundary, a
campaign from start to report over HTTP, an unsubscribe link (taken from a delivered
message) stopping a pending send in another campaign, and bounce webhooks tripping
the circuit breaker, which pauses delivery and says so in the status.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import json
import re
from collections.abc import AsyncIterator
from datetime import time, timedelta
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from campaign_core.leads import parse_lead_rows
from campaign_core.models import CampaignStatus, Stage
from campaign_core.ports import free_port
from campaign_core.send_window import SendWindow
from campaign_core.settings import Settings
from campaign_core.store.rows import ReportRow
from campaign_core.unsubscribe import Claims, make_token
from starter.api import create_app
from starter.cli import app as cli_app
from starter.manager import BadInput, CampaignManager
from starter.start_options import CampaignOptions
from tests.conftest import KB
from tests.fakes.doubles import fast_agents
from tests.fakes.served import serving
from tests.fakes.webhook_signing import INBOUND_SECRET, signed_headers
from tests.workflows.test_orchestration import finish, result_of, wait_stage

TOKEN = "test-api-token-1234567890"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

LEADS = [
    {"email": "ana@example.com", "first_name": "Ana", "company": "Northwind Freight",
     "title": "VP Operations"},
    {"email": "bo@example.org", "first_name": "Bo", "company": "Ledgerly", "title": "CTO"},
    {"email": "not-an-address", "first_name": "Bad"},
]


@contextlib.asynccontextmanager
async def serve(mgr: CampaignManager) -> AsyncIterator[httpx.AsyncClient]:
    """The app under uvicorn on a free loopback port, and a client for it."""
    port = free_port()
    mgr.settings.public_url = f"http://127.0.0.1:{port}"  # unsubscribe links point here
    async with serving(create_app(mgr.settings, manager=mgr), port=port, client_timeout=30) as client:
        yield client


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    """The workers' settings too (one object), so their links point at the test server."""
    settings.api_token = SecretStr(TOKEN)
    settings.webhook_secret = SecretStr(INBOUND_SECRET)
    return settings


@pytest.fixture
def manager(ts_env, api_settings: Settings, store, prefix: str) -> CampaignManager:
    return CampaignManager(api_settings, client=ts_env.client, store=store, queue_prefix=prefix,
                           use_search_attributes=False)


def signed(body: Any, **kw: Any) -> tuple[bytes, dict[str, str]]:
    """The body and its headers: the token and a Standard Webhooks signature (fresh id)."""
    raw = json.dumps(body).encode()
    return raw, {**AUTH, **signed_headers(raw, **kw), "Content-Type": "application/json"}


async def wait_http_stage(client: httpx.AsyncClient, cid: str, stage: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(600):
        r = await client.get(f"/campaigns/{cid}", headers=AUTH)
        assert r.status_code == 200, r.text
        body = r.json()
        if body["stage"] == stage:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"{cid} never reached {stage}: {body}")


# -- auth and validation at the boundary ------------------------------------------------------


async def test_every_route_but_health_and_unsubscribe_needs_the_token(manager) -> None:
    async with serve(manager) as client:
        calls = [("POST", "/campaigns"), ("GET", "/campaigns/x"), ("GET", "/campaigns/x/drafts"),
                 ("GET", "/campaigns/x/report"), ("POST", "/campaigns/x/approval"),
                 ("POST", "/campaigns/x/pause"), ("POST", "/webhooks/bounce")]
        for method, path in calls:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                r = await client.request(method, path, headers=headers, json={})
                assert r.status_code == 401, (method, path, headers, r.text)
        health = await client.get("/health")
        assert health.status_code == 200 and health.json()["temporal"] == "ok", health.text
        assert (await client.get("/unsubscribe", params={"token": "u1.x.y"})).status_code == 400
        assert (await client.get("/openapi.json")).status_code == 401
        spec = (await client.get("/openapi.json", headers=AUTH)).json()
        assert {"/campaigns", "/campaigns/{campaign_id}", "/campaigns/{campaign_id}/approval",
                "/webhooks/{source}", "/unsubscribe", "/health"} <= set(spec["paths"])
        assert (await client.get("/campaigns/nope", headers=AUTH)).status_code == 404


def test_the_server_refuses_to_start_without_a_token(home: Path) -> None:
    with pytest.raises(BadInput, match="CAMPAIGN_API_TOKEN"):
        create_app(Settings())
    result = CliRunner().invoke(cli_app, ["api", "--port", str(free_port())])
    assert result.exit_code == 2 and "CAMPAIGN_API_TOKEN" in result.output
    assert create_app(Settings(), insecure_dev=True) is not None


def test_every_route_documents_its_answer_in_openapi(home: Path) -> None:
    """/openapi.json gives a schema for the success answer of every route."""
    spec = create_app(Settings(), insecure_dev=True).openapi()
    missing = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            ok = [r for code, r in op["responses"].items() if code.startswith("2")]
            if not any(c.get("schema") for r in ok for c in r.get("content", {}).values()):
                missing.append(f"{method.upper()} {path}")
    assert not missing, f"routes without a 2xx response schema: {missing}"
    report = spec["paths"]["/campaigns/{campaign_id}/report"]["get"]["responses"]["200"]
    assert report["content"]["application/json"]["schema"]["items"]["$ref"].endswith("/ReportRow")


async def test_invalid_bodies_are_422_naming_the_field_and_start_nothing(manager, store) -> None:
    async with serve(manager) as client:
        bad = [
            ({"leads": [{"email": "a@example.com"}]}, ["body", "name"]),
            ({"name": "x", "leads": [{"email": "a@example.com"}], "channel": "fax"},
             ["body", "channel"]),
            ({"name": "x", "leads": []}, ["body", "leads"]),
            ({"name": "x", "leads": [{"email": "a@example.com"}], "id": "no spaces"}, ["body", "id"]),
            ({"name": "x", "leads": [{"email": "nope"}, {"email": "x@example.com",
                                                         "timezone": "Mars/Olympus"}]},
             ["body", "leads", 0]),
        ]
        for body, loc in bad:
            r = await client.post("/campaigns", json=body, headers=AUTH)
            assert r.status_code == 422, r.text
            assert loc in [e["loc"] for e in r.json()["detail"]], r.text
        r = await client.post("/campaigns/x/approval", json={"decision": "maybe", "by": "me"},
                              headers=AUTH)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "decision"]
    assert await store.get_campaign("x") is None


# -- a campaign over HTTP ---------------------------------------------------------------------


async def test_a_campaign_from_start_to_report_over_http(
    ts_env, manager, store, prefix, run_workers, settings
) -> None:
    async with run_workers(ts_env.client), serve(manager) as client:
        body = {"name": "HTTP campaign", "leads": LEADS, "brief": "Book a 20-minute call.",
                "channel": "outbox", "id": "c-http"}
        r = await client.post("/campaigns", json=body, headers=AUTH)
        assert r.status_code == 201, r.text
        started = r.json()
        assert started["campaign_id"] == "c-http" and started["leads_accepted"] == 2
        assert started["leads_rejected"][0]["row"] == 3  # 1-based position in `leads`
        assert "email" in started["leads_rejected"][0]["error"]
        again = await client.post("/campaigns", json=body, headers=AUTH)
        assert again.status_code == 200 and again.json()["campaign_id"] == "c-http"

        await wait_http_stage(client, "c-http", "awaiting_approval")
        late = await client.post("/campaigns/c-http/leads", headers=AUTH,
                                 json={"leads": [{"email": "late@example.com"}]})
        assert late.status_code == 409 and "only while it is drafting" in late.text, late.text
        bad_rows = await client.post("/campaigns/c-http/leads", headers=AUTH,
                                     json={"leads": [{"email": "nope"}]})
        assert bad_rows.status_code == 422 and bad_rows.json()["detail"][0]["loc"] == [
            "body", "leads", 0]
        drafts = (await client.get("/campaigns/c-http/drafts", headers=AUTH)).json()
        assert {d["email"] for d in drafts} == {"ana@example.com", "bo@example.org"}
        unknown = await client.post("/campaigns/c-http/approval", headers=AUTH, json={
            "decision": "approve", "by": "ops", "lead_ids": ["lead_nope"]})
        assert unknown.status_code == 409 and "lead_nope" in unknown.json()["detail"]
        ana = next(d["lead_id"] for d in drafts if d["email"] == "ana@example.com")
        ok = await client.post("/campaigns/c-http/approval", headers=AUTH, json={
            "decision": "approve", "by": "ops", "note": "ana only", "lead_ids": [ana]})
        assert ok.status_code == 202 and ok.json()["approved"] == 1, ok.text
        second = await client.post("/campaigns/c-http/approval", headers=AUTH,
                                   json={"decision": "reject", "by": "someone else"})
        assert second.status_code == 409, second.text
        assert "decided" in second.json()["detail"] or "completed" in second.json()["detail"]
        await finish(ts_env, "c-http", timedelta(seconds=5))
        report = {r["email"]: r for r in
                  (await client.get("/campaigns/c-http/report", headers=AUTH)).json()}
    assert report["ana@example.com"]["delivery_status"] == "sent"
    assert report["bo@example.org"]["delivery_status"] == "not_approved"
    assert len(list(settings.outbox_dir.glob("*.eml"))) == 1
    audit = await store.audit("c-http")
    assert any("ops" in a.model_dump_json() for a in audit)


async def test_the_campaign_webhook_starts_a_campaign_when_signed(
    ts_env, manager, store, run_workers
) -> None:
    body = {"name": "From CRM", "leads": [{"email": "cy@example.net"}], "id": "c-hook"}
    async with run_workers(ts_env.client), serve(manager) as client:
        raw, headers = signed(body)
        tampered = await client.post("/webhooks/campaign", content=raw + b" ", headers=headers)
        assert tampered.status_code == 401
        assert await store.get_campaign("c-hook") is None
        r = await client.post("/webhooks/campaign", content=raw, headers=headers)
        assert r.status_code == 201, r.text
        assert r.json()["leads_accepted"] == 1
        unknown = await client.post("/webhooks/crm", content=raw, headers=headers)
        assert unknown.status_code == 404 and "bounce" in unknown.json()["detail"]
        # Close it (a rejection over HTTP): a campaign left open would hold the shared
        # time-skipping server's clock for later tests once its workers are gone.
        await wait_http_stage(client, "c-hook", "awaiting_approval")
        no = await client.post("/campaigns/c-hook/approval", headers=AUTH,
                               json={"decision": "reject", "by": "ops", "note": "not now"})
        assert no.status_code == 202 and no.json()["decision"] == "reject", no.text
        st = await wait_http_stage(client, "c-hook", "rejected")
        # The stage shows before the workflow has closed: let it close while workers run.
        final = await result_of(ts_env.client.get_workflow_handle(
            "campaign:c-hook", result_type=CampaignStatus))
    assert st["counts"]["sent"] == 0 and final.stage is Stage.REJECTED


# -- unsubscribe ------------------------------------------------------------------------------


def unsubscribe_link(eml: Path) -> str:
    msg = email.message_from_bytes(eml.read_bytes(), policy=default_policy)
    links = re.findall(r"<([^>]+)>", str(msg["List-Unsubscribe"]))
    https = [u for u in links if u.startswith("http")]
    assert len(https) == 1 and "mailto:" in str(msg["List-Unsubscribe"])
    text = msg.get_body(("plain",))
    assert text is not None and https[0] in text.get_content()
    return https[0]


async def test_an_unsubscribe_link_stops_a_pending_send_in_another_campaign(
    ts_env, manager, store, prefix, run_workers, settings
) -> None:
    async with run_workers(ts_env.client), serve(manager) as client:
        # Campaign A reaches Ana; her message carries the link.
        await manager.start(parse_lead_rows(enumerate(LEADS[:1], start=2), "c-a"),
                            CampaignOptions(brief="Hello.", kb=str(KB)), name="A", campaign_id="c-a")
        await wait_stage(ts_env, "c-a", Stage.AWAITING_APPROVAL)
        await manager.approve("c-a", by="ops")
        await finish(ts_env, "c-a", timedelta(seconds=5))
        [eml] = list(settings.outbox_dir.glob("*.eml"))
        link = unsubscribe_link(eml)
        assert urlsplit(link).netloc == urlsplit(str(client.base_url)).netloc
        # No address in the link, in any spelling a link could carry it: plain, URL-encoded,
        # or base64url (the token itself is random base64, so a bare "ana" can turn up in it
        # by chance: that check failed once in ~300 runs).
        address = "ana@example.com"
        spelled = [address, quote(address, safe=""),
                   base64.urlsafe_b64encode(address.encode()).decode().rstrip("=")]
        assert not any(s.lower() in link.lower() for s in spelled), "no address in the link"

        # Campaign B waits for a send window two days away, to Ana and Bo.
        now = await ts_env.get_current_time()
        opens = now + timedelta(days=2)
        window = SendWindow(start=time(opens.hour), end=time(opens.hour, 59),
                            days=[opens.weekday()], timezone="UTC")
        await manager.start(parse_lead_rows(enumerate(LEADS[:2], start=2), "c-b"),
                            CampaignOptions(brief="Hello.", kb=str(KB), send_window=window.spec()), name="B",
                            campaign_id="c-b")
        await wait_stage(ts_env, "c-b", Stage.AWAITING_APPROVAL)
        await manager.approve("c-b", by="ops")
        await wait_stage(ts_env, "c-b", Stage.DELIVERING)

        tampered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
        bad = await client.get(tampered)
        assert bad.status_code == 400 and "does not work" in bad.text
        assert not await store.is_suppressed("ana@example.com")
        page = await client.get(link)  # the person (or a link scanner) opens the link
        assert page.status_code == 200 and "Unsubscribe?" in page.text
        assert "a***@example.com" in page.text
        assert not await store.is_suppressed("ana@example.com"), "a GET changes nothing"
        done = await client.post(link, data={"confirm": "page"})  # the page's button
        assert done.status_code == 200 and "You are unsubscribed" in done.text
        entry = await store.get_suppression("ana@example.com")
        assert entry is not None and entry.source == "unsubscribe_link"
        final = await finish(ts_env, "c-b", timedelta(hours=6))
    assert (final.counts.sent, final.counts.suppressed) == (1, 1)
    report = {r.email: r.delivery_status for r in await store.report("c-b")}
    assert report == {"ana@example.com": "suppressed", "bo@example.org": "sent"}


async def test_one_click_post_unsubscribes(manager, store) -> None:
    leads = parse_lead_rows(enumerate(LEADS[1:2], start=2), "c-post").leads
    await store.upsert_campaign(campaign_id="c-post", name="P", brief="", channel="outbox",
                                kb_dir=None, workflow_id="campaign:c-post")
    await store.upsert_leads("c-post", leads)
    async with serve(manager) as client:
        from campaign_core.unsubscribe import signing_key

        key = await signing_key(manager.settings, store)
        token = make_token(key, Claims("c-post", leads[0].lead_id))
        r = await client.post("/unsubscribe", params={"token": token},
                              data={"List-Unsubscribe": "One-Click"})
        assert r.status_code == 200 and r.json() == {"unsubscribed": True}
        entry = await store.get_suppression("bo@example.org")
        assert entry is not None and entry.source == "one_click"
        forged = make_token(b"another key", Claims("c-post", leads[0].lead_id))
        assert (await client.post("/unsubscribe", params={"token": forged})).status_code == 400
    events = await store.list_delivery_events("c-post")
    assert [e.kind for e in events] == ["unsubscribe"]


# -- bounces and the circuit breaker ------------------------------------------------------------


async def test_bounces_suppress_and_trip_the_circuit_breaker(
    ts_env, manager, store, prefix, run_workers
) -> None:
    rows = [{"email": f"p{i}@d{i}.example", "company": f"Co {i}"} for i in range(30)]
    async with run_workers(ts_env.client, overrides=fast_agents(store)), serve(manager) as client:
        await manager.start(parse_lead_rows(enumerate(rows, start=2), "c-bounce"),
                            CampaignOptions(send_rate=0.1), name="B", campaign_id="c-bounce")
        await wait_stage(ts_env, "c-bounce", Stage.AWAITING_APPROVAL)
        await manager.approve("c-bounce", by="ops")
        await wait_stage(ts_env, "c-bounce", Stage.DELIVERING)
        while (await store.counts("c-bounce")).sent < 20:
            await ts_env.sleep(timedelta(seconds=10))
        sent = [r for r in await store.report("c-bounce") if r.delivery_status == "sent"]

        def bounce(row: ReportRow, **kw: Any) -> dict[str, Any]:
            return {"email": row.email, "message_id": f"<{row.message_id}>",
                    "detail": "550 5.1.1 user unknown", **kw}

        raw, headers = signed(bounce(sent[0], event_id="ev-1"))
        r = await client.post("/webhooks/bounce", content=raw, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()[0]["campaign_id"] == "c-bounce" and r.json()[0]["suppressed"]
        again = await client.post("/webhooks/bounce", content=raw, headers=headers)
        assert again.status_code == 200, again.text
        assert again.json() == {"webhook_id": headers["webhook-id"], "duplicate": True}
        resent = await client.post("/webhooks/bounce", **_signed_kw(bounce(sent[0], event_id="ev-1")))
        assert resent.json()[0]["duplicate"], "the same event under a new webhook-id counts once"
        soft = await client.post("/webhooks/bounce", **_signed_kw(
            bounce(sent[1], permanent=False, event_id="ev-soft")))
        assert soft.status_code == 200 and not soft.json()[0]["suppressed"]
        assert not await store.is_suppressed(sent[1].email)
        bad = await client.post("/webhooks/bounce", content=raw,
                                headers={**headers, "webhook-signature": "v1,AAAA"})
        assert bad.status_code == 401
        invalid = await client.post("/webhooks/bounce", **_signed_kw({"email": "nope"}))
        assert invalid.status_code == 422
        assert [e["loc"] for e in invalid.json()["detail"]] == [["body", "email"]], invalid.text
        many = await client.post("/webhooks/events", **_signed_kw(
            [bounce(sent[0], type="bounce"), {"type": "bounce", "email": "x@"}]))
        assert many.status_code == 422
        assert [e["loc"] for e in many.json()["detail"]] == [["body", 1, "email"]], many.text

        st = (await client.get("/campaigns/c-bounce", headers=AUTH)).json()
        assert not st["paused"], "1 bounce in 20+ sends is under 5%"
        # Two more hard bounces: 3 of ~20 sent is over 5%: the breaker pauses delivery.
        r = await client.post("/webhooks/events", **_signed_kw([
            bounce(sent[2], type="bounce", event_id="ev-2"),
            bounce(sent[3], type="complaint", event_id="ev-3"),
            bounce(sent[4], type="bounce", event_id="ev-4")]))
        assert r.status_code == 200 and all(e["campaign_notified"] for e in r.json()), r.text
        for _ in range(200):
            st = (await client.get("/campaigns/c-bounce", headers=AUTH)).json()
            if st["paused"]:
                break
            await asyncio.sleep(0.05)
        assert st["paused"] and "circuit breaker" in st["paused_reason"], st
        held = (await store.counts("c-bounce")).sent
        await ts_env.sleep(timedelta(minutes=10))
        assert (await store.counts("c-bounce")).sent <= held + 1, "paused: no more sends"

        r = await client.post("/campaigns/c-bounce/resume", headers=AUTH)
        assert r.status_code == 202
        final = await finish(ts_env, "c-bounce", timedelta(seconds=20))
    assert final.counts.sent == 30 and final.paused_reason is None
    sources = [(e.source if (e := await store.get_suppression(row.email)) else None)
               for row in sent[:1] + sent[2:5]]
    assert sources == ["bounce", "bounce", "complaint", "bounce"]
    kinds = sorted(e.kind for e in await store.list_delivery_events("c-bounce"))
    assert kinds == ["bounce"] * 4 + ["complaint"]  # the soft bounce is recorded too


def _signed_kw(body: Any) -> dict[str, Any]:
    raw, headers = signed(body)
    return {"content": raw, "headers": headers}
