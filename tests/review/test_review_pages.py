"""The review pages in a real browser (Playwright driving Debian's Chromium), as reviewers use them.

A 120-lead campaign awaits approval: a reviewer signs in with their token, pages through
the drafts (3 pages of 50), edits one draft's body, excludes another lead and approves;
the outbox then holds the edited text for the first lead and nothing for the excluded one,
and the audit names the reviewer. A wrong token, an expired or forged cookie, cross-site
POSTs, an edit after approval and a second reviewer's conflicting decision are refused
and change nothing.
"""

from __future__ import annotations

import email
import json
from datetime import timedelta
from email.policy import default as default_policy
from typing import Any
from urllib.parse import urlsplit

import httpx

from campaign_core.leads import parse_lead_rows
from campaign_core.models import Stage
from campaign_core.store.base import now_utc
from starter.review_auth import (
    PRE_SESSION_COOKIE,
    SESSION_COOKIE,
    Reviewers,
    SessionSigner,
    session_signer,
)
from starter.start_options import EngineTuning
from tests.api.test_api import api_settings, manager, serve
from tests.fakes.doubles import fast_agents
from tests.workflows.test_orchestration import finish, wait_stage

__all__ = ["api_settings", "manager"]  # fixtures, used by name

EDITED = ("Hello from a human reviewer: this body was edited in the browser, and it is "
          "the text that must be delivered to this lead, word for word.")


def drafting_doubles(store: Any) -> dict[str, Any]:
    """Quick drafting; the real delivery agent, so messages land in the outbox."""
    doubles = fast_agents(store)
    del doubles["deliver_message"]
    return doubles


async def start_campaign(manager: Any, ts_env: Any, cid: str, n: int) -> list[str]:
    rows = [{"email": f"p{i:03d}@d{i % 25}.example.com", "company": f"Company {i:03d}"}
            for i in range(n)]
    intake = parse_lead_rows(enumerate(rows, start=2), cid)
    await manager.start(intake, name=f"Campaign {cid}", campaign_id=cid,
                        tuning=EngineTuning(per_domain_pacing=False))
    await wait_stage(ts_env, cid, Stage.AWAITING_APPROVAL)
    return [lead.lead_id for lead in await manager._keyed(cid, intake)]  # salted ids


async def follow(page: Any, target: Any) -> None:
    """Click what loads a new page, and wait until that page has loaded: a click returns
    once the navigation commits, while the new page's HTML may still be arriving (a check
    for the pager below the 50-row table once ran before the browser had parsed it)."""
    async with page.expect_navigation():
        await target.click()


async def sign_in(page: Any, base: str, token: str) -> None:
    await page.goto(f"{base}/review")
    assert "/review/sign-in" in page.url  # no session: to the sign-in page
    await page.get_by_label("Token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base}/review")


async def test_a_reviewer_edits_excludes_and_approves_in_the_browser(
    ts_env, manager, store, run_workers, browser, settings
) -> None:
    rita = await Reviewers(store).add("rita")
    sam = await Reviewers(store).add("sam")
    async with run_workers(ts_env.client, overrides=drafting_doubles(store)), \
            serve(manager) as client:
        base = str(client.base_url).rstrip("/")
        await start_campaign(manager, ts_env, "c-pages", 120)
        context = await browser.new_context()
        page = await context.new_page()

        # A wrong token is refused.
        await page.goto(f"{base}/review/sign-in")
        await page.get_by_label("Token").fill(rita[:-3] + "xyz")
        await follow(page, page.get_by_role("button", name="Sign in"))
        assert "Sign-in refused" in await page.content()
        assert not any(c["name"] == SESSION_COOKIE for c in await context.cookies())

        await sign_in(page, base, rita)
        cookie = next(c for c in await context.cookies() if c["name"] == SESSION_COOKIE)
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert "Signed in as" in await page.content() and "rita" in await page.content()
        await follow(page, page.get_by_role("link", name="Campaign c-pages"))

        # Three pages of 50, 50 and 20.
        seen: list[str] = []
        for number, rows in ((1, 50), (2, 50), (3, 20)):
            assert await page.get_by_text(f"Page {number} of 3").count() == 1
            links = page.locator("tbody a")
            assert await links.count() == rows
            seen += await links.all_inner_texts()
            if number < 3:
                await follow(page, page.get_by_role("link", name="Next page"))
        assert len(set(seen)) == 120
        # The search finds one lead by company.
        await page.get_by_label("Search").fill("company 007")
        await follow(page, page.get_by_role("button", name="Filter"))
        assert await page.locator("tbody a").all_inner_texts() == ["p007@d7.example.com"]

        # Sam opens the campaign page now, and decides after Rita (below).
        sam_context = await browser.new_context()
        sam_page = await sam_context.new_page()
        await sign_in(sam_page, base, sam)
        await sam_page.goto(f"{base}/review/campaigns/c-pages")

        # Edit the first lead's body.
        await follow(page, page.get_by_role("link", name="p007@d7.example.com"))
        edited_url = page.url
        edited_lead = urlsplit(edited_url).path.rsplit("/", 1)[1]
        await page.get_by_label("Body").fill(EDITED)
        await follow(page, page.get_by_role("button", name="Save draft"))
        assert "Draft saved" in await page.content()
        assert await page.get_by_label("Body").input_value() == EDITED

        # Exclude another.
        await page.goto(f"{base}/review/campaigns/c-pages?q=p008")
        await follow(page, page.get_by_role("link", name="p008@d8.example.com"))
        excluded_lead = urlsplit(page.url).path.rsplit("/", 1)[1]
        await follow(page, page.get_by_role("button", name="Exclude lead"))
        assert "Lead excluded" in await page.content()
        assert await page.get_by_role("button", name="Include lead").count() == 1

        # A second tab keeps the edit form of the first lead open across the approval.
        stale = await context.new_page()
        await stale.goto(edited_url)

        await page.goto(f"{base}/review/campaigns/c-pages")
        await follow(page, page.get_by_role("button", name="Approve campaign"))
        assert "No lead is held" in await page.content()  # the confirmation: nothing sent yet
        assert (await manager.status("c-pages")).stage is Stage.AWAITING_APPROVAL
        await follow(page, page.get_by_role("button", name="Confirm: approve campaign"))
        assert "Campaign approved" in await page.content()

        # Sam's rejection comes second: refused, and changes nothing.
        await follow(sam_page, sam_page.get_by_role("button", name="Reject campaign"))
        text = await sam_page.content()
        assert "Rejection refused" in text, text
        # An edit after approval: refused.
        await stale.get_by_label("Body").fill("Too late")
        await follow(stale, stale.get_by_role("button", name="Save draft"))
        assert "Not saved" in await stale.content()

        final = await finish(ts_env, "c-pages", timedelta(minutes=1))
    assert final.stage is Stage.COMPLETED
    assert final.counts.sent == 119
    bodies: dict[str, str] = {}
    for path in settings.outbox_dir.glob("*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=default_policy)
        part = msg.get_body(("plain",))
        bodies[str(msg["To"])] = part.get_content() if part else ""
    assert len(bodies) == 119
    assert EDITED in bodies["p007@d7.example.com"]
    assert "p008@d8.example.com" not in bodies
    assert "Too late" not in json.dumps(bodies)
    trail = json.dumps([a.model_dump() for a in await store.audit("c-pages")])
    assert "rita" in trail and '"sam"' not in trail
    lead_trail = json.dumps([a.model_dump() for a in await store.audit("c-pages", edited_lead)])
    assert "rita" in lead_trail
    assert excluded_lead != edited_lead


async def test_forged_expired_and_cross_site_requests_are_refused(
    ts_env, manager, store, run_workers
) -> None:
    token = await Reviewers(store).add("rita")
    async with run_workers(ts_env.client, overrides=drafting_doubles(store)), \
            serve(manager) as client:
        base = str(client.base_url).rstrip("/")
        await start_campaign(manager, ts_env, "c-guard", 3)
        signer: SessionSigner = await session_signer(store)

        async def session_of(cookie: str) -> httpx.AsyncClient:
            return httpx.AsyncClient(base_url=base, cookies={SESSION_COOKIE: cookie},
                                     follow_redirects=False, timeout=30)

        good = signer.issue("rita")
        expired = signer.issue("rita", now=now_utc() - timedelta(hours=13))
        body, mac = good.split(".")
        forged = f"{body}.{mac[:-4]}AAAA"
        other_key = SessionSigner(b"not the store's key").issue("rita")
        for bad in (expired, forged, other_key, "garbage", ""):
            async with await session_of(bad) as http:
                r = await http.get("/review/campaigns/c-guard")
                assert r.status_code == 303 and r.headers["location"].startswith(
                    "/review/sign-in"), bad
        async with await session_of(good) as http:
            assert (await http.get("/review/campaigns/c-guard")).status_code == 200
            nonce = signer.read(good)
            assert nonce is not None
            csrf = signer.csrf(nonce.nonce)
            form = {"csrf": csrf}
            origin = {"Origin": base}
            cases = [
                ({}, form, "Origin"),  # no Origin
                ({"Origin": "https://evil.example"}, form, "Origin"),
                ({**origin, "Sec-Fetch-Site": "cross-site"}, form, "cross-site"),
                (origin, {"csrf": "x" * 43}, "CSRF"),
                (origin, {}, "CSRF"),
                (origin, {"csrf": signer.csrf("another-session")}, "CSRF"),
            ]
            for headers, data, reason in cases:
                for action in ("approve", "reject"):
                    r = await http.post(f"/review/campaigns/c-guard/{action}", headers=headers,
                                        data=data)
                    assert r.status_code == 403 and reason in r.text, (headers, data, r.text)
            # A cross-site sign-in is refused as well (login CSRF).
            r = await http.post("/review/sign-in", headers={"Origin": "https://evil.example"},
                                data={"token": token})
            assert r.status_code == 403
            http.cookies.set(PRE_SESSION_COOKIE, "n")
            r = await http.post("/review/sign-in", headers=origin, data={"token": token})
            assert r.status_code == 403, "a CSRF token the pre-session does not match"
        assert (await manager.status("c-guard")).stage is Stage.AWAITING_APPROVAL

        # The same, valid session stops working once the reviewer is removed.
        await Reviewers(store).remove("rita")
        async with await session_of(good) as http:
            assert (await http.get("/review")).status_code == 303
            r = await http.post("/review/campaigns/c-guard/approve", headers={"Origin": base},
                                data={"csrf": csrf})
            assert r.status_code == 303 and "/review/sign-in" in r.headers["location"]
        assert (await manager.status("c-guard")).stage is Stage.AWAITING_APPROVAL
        await manager.reject("c-guard", by="test")
        await wait_stage(ts_env, "c-guard", Stage.REJECTED)


async def test_a_one_time_sign_in_code_works_once(manager, store) -> None:
    from starter.dev_api import sign_in_link

    async with serve(manager) as client:
        base = str(client.base_url).rstrip("/")
        link = await sign_in_link(manager, base)
        assert "crt_" not in link and (await store.get_reviewer("dev")) is not None
        for attempt in range(2):
            async with httpx.AsyncClient(timeout=30, follow_redirects=False) as http:
                page = await http.get(link)
                assert page.status_code == 200 and 'name="code"' in page.text
                csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
                code = link.split("code=", 1)[1]
                r = await http.post(f"{base}/review/sign-in", headers={"Origin": base},
                                    data={"csrf": csrf, "code": code, "next": "/review"})
                if attempt == 0:
                    assert r.status_code == 303 and SESSION_COOKIE in r.cookies, r.text
                    assert (await http.get(f"{base}/review")).status_code == 200
                else:
                    assert r.status_code == 401 and "used already" in r.text

