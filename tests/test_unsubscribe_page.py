"""The unsubscribe page, opened in a real browser (headless Chromium), as a recipient would.

The link in the message is followed by Chromium against the API served by uvicorn on
loopback; the page it renders must say the address is unsubscribed (masked), and the
address must be suppressed. A tampered link renders the refusal page and changes nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import SecretStr

from campaign_core.leads import parse_lead_rows
from campaign_core.unsubscribe import Claims, make_token, signing_key
from starter.manager import CampaignManager
from tests.conftest import CHROMIUM
from tests.test_api import serve


async def render(url: str, profile: Path) -> str:
    """The DOM Chromium builds for `url` (after scripts, if there were any)."""
    assert CHROMIUM is not None
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        f"--user-data-dir={profile}", "--dump-dom", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return out.decode()


async def test_the_unsubscribe_link_works_in_a_browser(chromium, settings, store, tmp_path) -> None:
    # Only the store is touched: /unsubscribe needs no Temporal and no token.
    settings.api_token = SecretStr("page-test-token")
    manager = CampaignManager(settings, store=store)
    leads = parse_lead_rows(enumerate([{"email": "dora@example.com", "first_name": "Dora"}],
                                      start=2), "c-page").leads
    await store.upsert_campaign(campaign_id="c-page", name="P", brief="", channel="outbox",
                                kb_dir=None, workflow_id="campaign:c-page")
    await store.upsert_leads("c-page", leads)
    async with serve(manager) as client:
        token = make_token(await signing_key(manager.settings, store),
                           Claims("c-page", leads[0].lead_id))
        base = str(client.base_url).rstrip("/")
        refused = await render(f"{base}/unsubscribe?token={token[:-4]}AAAA", tmp_path / "p1")
        assert "This link does not work" in refused
        assert not await store.is_suppressed("dora@example.com")
        page = await render(f"{base}/unsubscribe?token={token}", tmp_path / "p2")
    assert "<h1>You are unsubscribed</h1>" in page
    assert "d***@example.com" in page and "dora@example.com" not in page
    assert await store.is_suppressed("dora@example.com")
