"""Issue 11, item 12: webhooks signed the Standard Webhooks way, both directions.

Inbound (`/webhooks/*`): the old `X-Signature` is refused; a signature over another body,
another id or another timestamp is refused; a timestamp more than 5 minutes off is 401
even when correctly signed; a `webhook-id` seen before is answered 200 without acting,
also by another API process on the same store; a call whose handling failed does not
burn its id. Outbound (the webhook channel): signed with CAMPAIGN_DELIVERY_WEBHOOK_SECRET,
never the inbound secret, and refused (exit 2 / 422 / a permanent activity error)
without it. No Temporal is needed: bounces for unknown messages touch only the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.delivery import DeliveryAgent
from campaign_core.events import DeliveryEvent, DeliveryEventResult
from campaign_core.models import Channel, DeliverInput
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.api import create_app
from starter.manager import BadInput, CampaignManager
from tests.delivery.test_delivery_channels import LEADS, parsed_leads, seed
from tests.fakes import pg_fixtures
from tests.fakes.webhook_signing import DELIVERY_SECRET, INBOUND_SECRET, signed_headers
from tests.store.test_store import Backend, make_backend

pg_cluster = pg_fixtures.pg_cluster
pg_url = pg_fixtures.pg_url

TOKEN = "webhook-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
BOUNCE = json.dumps({"email": "gone@example.com", "detail": "550 no such user"}).encode()


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    settings.api_token = SecretStr(TOKEN)
    settings.webhook_secret = SecretStr(INBOUND_SECRET)
    return settings


@pytest.fixture
def acted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every delivery event the API acted on (the real handler still runs)."""
    calls: list[str] = []
    real = CampaignManager.delivery_event

    async def counting(self: CampaignManager, event: DeliveryEvent, *,
                       source: str) -> DeliveryEventResult:
        calls.append(event.email)
        return await real(self, event, source=source)

    monkeypatch.setattr(CampaignManager, "delivery_event", counting)
    return calls


async def _client(settings: Settings, store: SqliteStore) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, manager=CampaignManager(settings, store=store))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://api") as client:
        yield client


@pytest.fixture
async def client(hook_settings: Settings, store: SqliteStore) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(hook_settings, store):
        yield c


async def test_a_correct_signature_acts_and_a_wrong_one_is_401(client, store, acted) -> None:
    headers = signed_headers(BOUNCE)
    r = await client.post("/webhooks/bounce", content=BOUNCE, headers={**AUTH, **headers})
    assert r.status_code == 200, r.text
    assert acted == ["gone@example.com"] and await store.is_suppressed("gone@example.com")
    old_style = "sha256=" + hmac.new(INBOUND_SECRET.encode(), BOUNCE, hashlib.sha256).hexdigest()
    ts = str(int(time.time()))
    wrong = [
        {"X-Signature": old_style},                                   # the old scheme
        {**signed_headers(b"{}", msg_id="m1"), "webhook-id": "m1"},   # another body
        {**signed_headers(BOUNCE, msg_id="m2"), "webhook-id": "m3"},  # another id
        {**signed_headers(BOUNCE, msg_id="m4"), "webhook-timestamp": str(int(ts) - 1)},
        signed_headers(BOUNCE, DELIVERY_SECRET),                     # the outbound secret
        {k: v for k, v in signed_headers(BOUNCE).items() if k != "webhook-timestamp"},
        {**signed_headers(BOUNCE), "webhook-signature": "v1,not base64!"},
        {**signed_headers(BOUNCE), "webhook-signature": "garbage"},
    ]
    for bad in wrong:
        r = await client.post("/webhooks/bounce", content=BOUNCE, headers={**AUTH, **bad})
        assert r.status_code == 401, (bad, r.text)
    assert len(acted) == 1


# Clear of the 300 s boundary by more than a slow request takes: at +301 a timestamp
# truncated to whole seconds, checked a second later, is within the tolerance again.
@pytest.mark.parametrize("skew", [-330, 330, -3600])
async def test_a_timestamp_more_than_5_minutes_off_is_401(client, acted, skew: int) -> None:
    headers = signed_headers(BOUNCE, timestamp=int(time.time()) + skew)
    r = await client.post("/webhooks/bounce", content=BOUNCE, headers={**AUTH, **headers})
    assert r.status_code == 401 and "5 minutes" in r.text, r.text
    assert acted == []


async def test_a_webhook_id_seen_before_is_200_and_does_nothing(
        client, hook_settings, store, acted) -> None:
    headers = {**AUTH, **signed_headers(BOUNCE, msg_id="msg_once")}
    first = await client.post("/webhooks/bounce", content=BOUNCE, headers=headers)
    assert first.status_code == 200 and isinstance(first.json(), list), first.text
    again = await client.post("/webhooks/bounce", content=BOUNCE, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json() == {"webhook_id": "msg_once", "duplicate": True}
    # The same id on another route is the same message: not acted on either.
    other = await client.post("/webhooks/events", content=BOUNCE, headers={
        **AUTH, **signed_headers(BOUNCE, msg_id="msg_once")})
    assert other.status_code == 200 and other.json()["duplicate"], other.text
    # Durable: another API process on the same store knows the id too.
    async for second in _client(hook_settings, SqliteStore(store.path)):
        replay = await second.post("/webhooks/bounce", content=BOUNCE, headers=headers)
        assert replay.status_code == 200 and replay.json()["duplicate"], replay.text
    assert acted == ["gone@example.com"]


async def test_a_failed_call_does_not_burn_its_id(client, store, monkeypatch) -> None:
    calls: list[int] = []

    async def flaky(self: CampaignManager, event: DeliveryEvent, *,
                    source: str) -> DeliveryEventResult:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("store hiccup")
        return DeliveryEventResult(event_id="e", duplicate=False, suppressed=True,
                                   campaign_id=None, lead_id=None, campaign_notified=False)

    monkeypatch.setattr(CampaignManager, "delivery_event", flaky)
    headers = {**AUTH, **signed_headers(BOUNCE, msg_id="msg_retry")}
    failed = await client.post("/webhooks/bounce", content=BOUNCE, headers=headers)
    assert failed.status_code == 500
    retry = await client.post("/webhooks/bounce", content=BOUNCE, headers=headers)
    assert retry.status_code == 200 and isinstance(retry.json(), list), retry.text
    invalid = json.dumps({"email": "nope"}).encode()
    h = {**AUTH, **signed_headers(invalid, msg_id="msg_invalid")}
    assert (await client.post("/webhooks/bounce", content=invalid, headers=h)).status_code == 422
    assert await store.claim_webhook_id("msg_invalid"), "released, so it can be claimed again"
    assert len(calls) == 2


def test_a_malformed_inbound_secret_stops_the_api(hook_settings: Settings) -> None:
    hook_settings.webhook_secret = SecretStr("test-webhook-secret")
    with pytest.raises(BadInput, match="CAMPAIGN_WEBHOOK_SECRET must be whsec_"):
        create_app(hook_settings)


# -- the webhook channel's posts ---------------------------------------------------------------


async def test_the_channel_needs_its_own_secret(store: SqliteStore, settings: Settings) -> None:
    settings.webhook_url = SecretStr("http://127.0.0.1:9/hook")
    settings.postal_address = "Relay Inc., 1 Main St, Springfield, IL 62701, USA"
    settings.webhook_secret = SecretStr(INBOUND_SECRET)
    mgr = CampaignManager(settings, store=store)
    with pytest.raises(BadInput, match="CAMPAIGN_DELIVERY_WEBHOOK_SECRET"):
        mgr.check_options(Channel.WEBHOOK, None)
    [lead] = await seed(store, "c-hook", parsed_leads("c-hook", LEADS[:1]), channel="webhook")
    agent = DeliveryAgent(store, settings)
    with pytest.raises(ApplicationError, match="CAMPAIGN_DELIVERY_WEBHOOK_SECRET") as err:
        await ActivityEnvironment().run(agent.deliver_message, DeliverInput(
            campaign_id="c-hook", lead_id=lead.lead_id, channel=Channel.WEBHOOK))
    assert err.value.non_retryable
    settings.delivery_webhook_secret = SecretStr(DELIVERY_SECRET)
    mgr.check_options(Channel.WEBHOOK, None)


async def test_the_api_refuses_the_channel_without_it(
        hook_settings: Settings, store: SqliteStore) -> None:
    hook_settings.webhook_url = SecretStr("http://127.0.0.1:9/hook")
    hook_settings.postal_address = "Relay Inc., 1 Main St, Springfield, IL 62701, USA"
    body = {"name": "n", "leads": [{"email": "ana@example.com"}], "channel": "webhook", "id": "c-x"}
    async for client in _client(hook_settings, store):
        r = await client.post("/campaigns", json=body, headers=AUTH)
    assert r.status_code == 422 and "CAMPAIGN_DELIVERY_WEBHOOK_SECRET" in r.text, r.text


def test_the_cli_refuses_the_channel_without_it(tmp_path: Path) -> None:
    leads = tmp_path / "leads.csv"
    leads.write_text("email\nana@example.com\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAMPAIGN_", "TEMPORAL_"))}
    env.update(CAMPAIGN_HOME=str(tmp_path / "h"), CAMPAIGN_WEBHOOK_URL="http://127.0.0.1:9/hook",
               CAMPAIGN_POSTAL_ADDRESS="Relay Inc., 1 Main St", CAMPAIGN_WEBHOOK_SECRET=INBOUND_SECRET,
               TEMPORAL_ADDRESS="127.0.0.1:9")
    proc = subprocess.run([sys.executable, "-m", "starter", "start", "--leads", str(leads),
                           "--channel", "webhook", "--id", "c1"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "CAMPAIGN_DELIVERY_WEBHOOK_SECRET" in proc.stderr


# -- the store: one claim per id, on every backend ---------------------------------------------


@pytest.fixture(params=["sqlite", "postgres", "supabase"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    b = await make_backend(request.param, request, tmp_path)
    yield b
    await b.store.close()
    if b.fake:
        await b.fake.aclose()


async def test_claim_webhook_id_is_once_until_released(backend: Backend) -> None:
    store = backend.store
    results = await asyncio.gather(*(store.claim_webhook_id("msg_1") for _ in range(5)))
    assert sorted(results) == [False] * 4 + [True]
    assert await store.claim_webhook_id("msg_2")
    await store.release_webhook_id("msg_1")
    assert await store.claim_webhook_id("msg_1")
    assert not await store.claim_webhook_id("msg_1")
    await store.release_webhook_id("never-claimed")  # a no-op
