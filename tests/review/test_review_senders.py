"""The review pages show senders (issue 28), in a real browser (Playwright, Chromium).

A three-lead outbox campaign awaits approval; two of its leads are given senders (ana and
bo), the third has none. The campaign page shows each lead's sender and From, "assigned
at send" for the third, and the capacity table: ana's cap of 5 with 2 sent in the last 24
hours from another campaign (3 remaining), bo paused with its reason (escaped). The lead
page names the lead's sender and previews the message with that sender's From; the third
lead's preview has this server's CAMPAIGN_FROM.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from campaign_core.senders import SenderClaim, SenderRow
from campaign_core.store.base import now_utc
from starter.review_auth import Reviewers
from tests.api.test_api import api_settings, manager, serve
from tests.review.test_review_pages import drafting_doubles, follow, sign_in, start_campaign

__all__ = ["api_settings", "manager"]  # fixtures, used by name

ANA_FROM = "Ana Ruiz <ana@acme.test>"
BO_FROM = "Bo Berg <bo@acme.test>"
REASON = "<b>bounces</b> 3 of 40 sends (7.5%)"


def sender(name: str, from_addr: str, daily_cap: int) -> SenderRow:
    return SenderRow(name=name, from_addr=from_addr, transport="outbox", daily_cap=daily_cap,
                     hourly_cap=daily_cap, min_gap_seconds=0, created_at=now_utc())


async def table_rows(page: Any, name: str) -> list[list[str]]:
    """The body rows of the table of that accessible name, as cell texts."""
    rows = page.get_by_role("table", name=name).locator("tbody tr")
    out = []
    for i in range(await rows.count()):
        cells = rows.nth(i).locator("th, td")
        out.append([" ".join(t.split()) for t in await cells.all_inner_texts()])
    return out


async def mail_from(page: Any, step: int = 1) -> str:
    preview = page.get_by_role("group", name=f"Preview of step {step}")
    return " ".join((await preview.locator("dt:has-text('From') + dd").inner_text()).split())


async def test_the_pages_show_each_leads_sender_and_the_senders_capacity(
    ts_env, manager, store, run_workers, browser, settings
) -> None:
    token = await Reviewers(store).add("rita")
    async with run_workers(ts_env.client, overrides=drafting_doubles(store)), \
            serve(manager) as client:
        base = str(client.base_url).rstrip("/")
        lead_ids = await start_campaign(manager, ts_env, "c-snd", 3)
        by_email = {(await store.get_lead("c-snd", lid)).email: lid for lid in lead_ids}
        ana_lead, bo_lead, free_lead = (by_email[f"p00{i}@d{i}.example.com"] for i in range(3))
        assert await store.add_sender(sender("ana", ANA_FROM, 5))
        assert await store.add_sender(sender("bo", BO_FROM, 40))
        assert await store.add_sender(sender("cy", "Cy <cy@acme.test>", 40))  # used by no lead
        assert await store.assign_senders("c-snd", {ana_lead: "ana", bo_lead: "bo"}) == 2
        now = now_utc()
        for seq, ago in ((1, timedelta(hours=30)), (2, timedelta(hours=5)),
                         (3, timedelta(hours=2))):  # another campaign's sends: they count
            assert await store.insert_sender_claim(SenderClaim(
                sender="ana", seq=seq, message_key=f"other-{seq}", campaign_id="c-other",
                sent_at=now - ago))
        assert await store.set_sender_paused("bo", True, REASON)

        page = await (await browser.new_context()).new_page()
        await sign_in(page, base, token)
        await page.goto(f"{base}/review/campaigns/c-snd")

        capacity = await table_rows(page, "Senders: capacity today")
        assert capacity == [
            ["ana Ana Ruiz <ana@acme.test>", "1", "5", "2", "3", "now", "active"],
            ["bo Bo Berg <bo@acme.test>", "1", "40", "0", "40", "", f"paused {REASON}"],
        ], capacity
        # The reason is text, not markup.
        assert await page.get_by_role("table", name="Senders: capacity today").locator(
            "b").count() == 0

        leads = page.locator("table:not([aria-labelledby]) tbody tr")
        cells = {}
        for i in range(await leads.count()):
            row = leads.nth(i)
            email = await row.locator("td a").first.inner_text()
            cells[email] = " ".join((await row.locator("td.sender").inner_text()).split())
        assert cells == {"p000@d0.example.com": f"ana {ANA_FROM}",
                         "p001@d1.example.com": f"bo {BO_FROM} paused",
                         "p002@d2.example.com": "assigned at send"}, cells

        # The lead page: its sender, and the preview with the sender's From.
        await follow(page, page.get_by_role("link", name="p000@d0.example.com"))
        sender_cell = page.get_by_role("row", name="Sender")
        assert " ".join((await sender_cell.inner_text()).split()) == f"Sender ana · {ANA_FROM}"
        assert await mail_from(page) == ANA_FROM
        await page.goto(f"{base}/review/campaigns/c-snd/leads/{free_lead}")
        assert "assigned at send" in await page.get_by_role("row", name="Sender").inner_text()
        assert await mail_from(page) == settings.mail_from

        await manager.reject("c-snd", by="test")


async def test_a_campaign_started_without_senders_shows_no_sender_whatever_exists_now(
        store: Any) -> None:
    """A campaign that sends as CAMPAIGN_FROM (started before any sender was defined) shows
    no sender and no "assigned at send", even once senders exist; one whose leads were
    given senders shows "assigned at send" for a lead that has none yet."""
    from campaign_core.leads import parse_lead_rows
    from starter.api.review_senders import LeadSenders

    ids: dict[str, list[str]] = {}
    for cid in ("c-plain", "c-senders"):
        await store.upsert_campaign(campaign_id=cid, name=cid, brief="", channel="outbox",
                                    kb_dir=None, workflow_id=f"campaign:{cid}")
        leads = parse_lead_rows(enumerate([{"email": "a@example.com"}, {"email": "b@example.org"}],
                                          start=2), cid).leads
        await store.upsert_leads(cid, leads)
        ids[cid] = [lead.lead_id for lead in leads]
    await store.add_sender(SenderRow(name="ana", from_addr="Ana <ana@acme.test>",
                                     transport="outbox", created_at=now_utc()))
    assert await store.assign_senders("c-senders", {ids["c-senders"][0]: "ana"}) == 1
    plain = LeadSenders(store, await store.get_campaign("c-plain"))
    assert await plain.of(ids["c-plain"][0]) is None
    with_senders = LeadSenders(store, await store.get_campaign("c-senders"))
    got = await with_senders.of(ids["c-senders"][0])
    pending = await with_senders.of(ids["c-senders"][1])
    assert got is not None and got.name == "ana"
    assert pending is not None and pending.name is None  # "assigned at send"
