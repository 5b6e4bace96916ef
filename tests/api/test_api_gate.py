"""Issue 11, item 11: the API checks the token and the body size before it parses anything.

Over real HTTP (uvicorn on loopback): a stranger's malformed JSON is 401, not 422; a
body past CAMPAIGN_API_MAX_BODY is 413 whether it announces its length or streams
chunked; the OpenAPI document and the docs need the token too (open with --insecure-dev).
No Temporal is needed: every request here is answered before a campaign is touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.api import create_app
from starter.manager import CampaignManager
from tests.fakes.served import serving

TOKEN = "gate-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CAP = 2000



@contextlib.asynccontextmanager
async def _serve(settings: Settings, store: SqliteStore, *,
                 insecure_dev: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, manager=CampaignManager(settings, store=store),
                     insecure_dev=insecure_dev)
    async with serving(app, client_timeout=30) as client:
        yield client


@pytest.fixture
def gate_settings(home: object, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CAMPAIGN_API_MAX_BODY", str(CAP))
    settings = Settings()
    settings.api_token = SecretStr(TOKEN)
    settings.webhook_secret = SecretStr("whsec_" + "QUJDREVGR0hJSktMTU5PUA==")
    return settings


async def test_no_token_is_401_before_the_body_is_parsed(
        gate_settings: Settings, store: SqliteStore) -> None:
    async with _serve(gate_settings, store) as client:
        for path in ("/campaigns", "/campaigns/x/approval", "/webhooks/bounce", "/nowhere"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                r = await client.post(path, content=b"{not json", headers={
                    **headers, "Content-Type": "application/json"})
                assert r.status_code == 401, (path, headers, r.text)
                assert r.headers["www-authenticate"] == "Bearer"
        # With the token the same body reaches validation (the gate let it through).
        r = await client.post("/campaigns", content=b"{not json",
                              headers={**AUTH, "Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        assert (await client.get("/health")).status_code in (200, 503)  # public


async def test_a_body_past_the_cap_is_413_with_or_without_content_length(
        gate_settings: Settings, store: SqliteStore) -> None:
    async with _serve(gate_settings, store) as client:
        headers = {**AUTH, "Content-Type": "application/json"}
        under = await client.post("/campaigns", content=b"x" * CAP, headers=headers)
        assert under.status_code == 422, under.text  # within the cap: parsed (and invalid)
        over = await client.post("/campaigns", content=b"x" * (CAP + 1), headers=headers)
        assert over.status_code == 413, over.text
        assert "CAMPAIGN_API_MAX_BODY" in over.json()["detail"]

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield b"x" * 900

        chunked = await client.post("/campaigns", content=chunks(), headers=headers)
        assert "content-length" not in chunked.request.headers
        assert chunked.request.headers["transfer-encoding"] == "chunked"
        assert chunked.status_code == 413, chunked.text
        hook = await client.post("/webhooks/bounce", content=chunks(), headers=headers)
        assert hook.status_code == 413, hook.text
        # Public routes are capped too.
        public = await client.post("/unsubscribe", content=b"x" * (CAP + 1))
        assert public.status_code == 413, public.text


async def test_the_docs_need_the_token(gate_settings: Settings, store: SqliteStore) -> None:
    async with _serve(gate_settings, store) as client:
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert (await client.get(path)).status_code == 401, path
            assert (await client.get(path, headers=AUTH)).status_code == 200, path
    gate_settings.api_token = None
    async with _serve(gate_settings, store, insecure_dev=True) as client:
        assert (await client.get("/openapi.json")).status_code == 200
