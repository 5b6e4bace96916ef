"""The unsubscribe link, opened in a real browser (Playwright driving Debian's Chromium), as a
recipient would, and fetched as a mail link scanner would.

Opening the link shows a confirmation page (the address masked) and changes nothing; only
its button, a form POST to the same URL, suppresses the address and shows the done page.
A plain GET, however often repeated (Safe Links, Mimecast), suppresses nobody and records
no unsubscribe. A tampered link renders the refusal page and changes nothing. RFC 8058's
one-click POST is tests/api/test_api.py's.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from campaign_core.leads import parse_lead_rows
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from campaign_core.unsubscribe import Claims, make_token, signing_key
from starter.manager import CampaignManager
from tests.api.test_api import serve


async def seeded(settings: Settings, store: SqliteStore) -> tuple[CampaignManager, str]:
    """A manager on the store alone (/unsubscribe needs no Temporal and no token), and the
    unsubscribe token of Dora's message in campaign c-page."""
    settings.api_token = SecretStr("page-test-token")
    manager = CampaignManager(settings, store=store)
    leads = parse_lead_rows(enumerate([{"email": "dora@example.com", "first_name": "Dora"}],
                                      start=2), "c-page").leads
    await store.upsert_campaign(campaign_id="c-page", name="P", brief="", channel="outbox",
                                kb_dir=None, workflow_id="campaign:c-page")
    await store.upsert_leads("c-page", leads)
    token = make_token(await signing_key(settings, store), Claims("c-page", leads[0].lead_id))
    return manager, token


async def test_a_plain_get_of_the_link_changes_nothing(settings, store) -> None:
    manager, token = await seeded(settings, store)
    async with serve(manager) as client:
        for _ in range(3):  # a scanner, a preview, the person: GETs all
            page = await client.get("/unsubscribe", params={"token": token})
            assert page.status_code == 200, page.text
            assert "<h1>Unsubscribe?</h1>" in page.text and "d***@example.com" in page.text
            assert "dora@example.com" not in page.text
            assert "form-action 'self'" in page.headers["content-security-policy"]
            assert page.headers["cache-control"] == "no-store"
        await client.head("/unsubscribe", params={"token": token})  # some scanners do
    assert not await store.is_suppressed("dora@example.com")
    assert await store.list_delivery_events("c-page") == []


async def test_the_unsubscribe_link_works_in_a_browser(browser: Any, settings, store) -> None:
    manager, token = await seeded(settings, store)
    async with serve(manager) as client:
        base = str(client.base_url).rstrip("/")
        context = await browser.new_context()
        page = await context.new_page()
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

        await page.goto(f"{base}/unsubscribe?token={token[:-4]}AAAA")
        assert await page.locator("h1").inner_text() == "This link does not work"
        assert await page.get_by_role("button").count() == 0
        assert not await store.is_suppressed("dora@example.com")
        errors.clear()  # the refusal's own 400

        await page.goto(f"{base}/unsubscribe?token={token}")
        assert await page.locator("h1").inner_text() == "Unsubscribe?"
        assert "d***@example.com" in await page.locator("body").inner_text()
        assert not await store.is_suppressed("dora@example.com"), "opening the link acts not"

        async with page.expect_navigation():
            await page.get_by_role("button", name="Unsubscribe").click()
        assert await page.locator("h1").inner_text() == "You are unsubscribed"
        body = await page.locator("body").inner_text()
        assert "d***@example.com" in body and "dora@example.com" not in body
        assert errors == [], errors  # no CSP refusal of the form or its style
        await context.close()
    assert await store.is_suppressed("dora@example.com")
    assert [e.kind for e in await store.list_delivery_events("c-page")] == ["unsubscribe"]
