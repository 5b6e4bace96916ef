"""The review workspace for sequences (issue 24, "The review workspace, for sequences").

The sequence is the unit: the campaign page lists each lead with every step (status, when
it goes or went, what happened); the lead page shows every step with its own editor,
guardrail result, versions and a preview of the message as the recipient gets it. Leads
are found by name, email, company and title ignoring case and accents, and filtered by
step status; a selection is approved, excluded or included; the campaign's approval is
confirmed on a page that names the held leads.

The store's `review_page` is checked on every backend; the pages in Chromium (Playwright),
on the time-skipping server with the real agents (the offline writer). A step fails
deterministically through a thin wrapper around the real copywriter (as a guardrail
failure is recorded: the text kept, with its reason). The issue's "Done when" walk-through
runs on the real dev server with the OpenAI-compatible test server making one step fail
its guardrails for real (`test_a_three_step_campaign_through_the_review`, slow).
"""

from __future__ import annotations

import asyncio
import email
import re
from datetime import UTC, datetime, timedelta
from email.policy import default as default_policy
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from campaign_core.ids import message_key
from campaign_core.leads import parse_lead_rows
from campaign_core.models import Stage
from campaign_core.settings import Settings
from campaign_core.store.base import Store
from starter.manager import CampaignManager
from starter.review_auth import Reviewers
from starter.start_options import CampaignOptions, EngineTuning
from tests.api.test_api import api_settings, serve
from tests.cli.test_cli_e2e import cli_json
from tests.conftest import KB
from tests.fakes import dev_process, pg_fixtures
from tests.fakes.dev_process import DevProcess
from tests.fakes.llm_server import INVENTED_PASSAGE, LLMTestServer
from tests.review.test_review_pages import follow, sign_in
from tests.review.test_sequence_review import failing_writer
from tests.store.test_store import backend
from tests.workflows.test_orchestration import finish, wait_stage

pg_cluster = pg_fixtures.pg_cluster
pg_url = pg_fixtures.pg_url
dev_cli_env = dev_process.dev_cli_env
__all__ = ["api_settings", "backend", "dev_cli_env"]  # fixtures, used by name

DAY = timedelta(days=1)
POSTAL = "Relay Inc., 1 Harbour Street, Springfield 12345"
FAILED = "guardrail (step {step}): citation 'kb/invented.md#9-deadbeef' is not one of the " \
         "retrieved passages"
PEOPLE = [
    {"email": "jm@correos.example", "first_name": "José", "last_name": "Muñoz",
     "company": "Correos Rápidos", "title": "Jefe de Logística"},
    {"email": "ana@northwind.example", "first_name": "Ana", "last_name": "Ölund",
     "company": "Northwind Freight", "title": "VP Operations"},
    {"email": "bo@ledgerly.example", "first_name": "Bo", "company": "Ledgerly", "title": "CTO"},
    {"email": "cy@carely.example", "first_name": "Cy", "company": "Carely",
     "title": "Head of Growth"},
]
JOSE, ANA, BO, CY = (p["email"] for p in PEOPLE)


# -- the store's page, on every backend -------------------------------------------------------


async def seeded(s: Store, cid: str = "c-ws") -> dict[str, str]:
    """Four leads with three steps each: Ana's step 2 failed, Bo's step 3 excluded and his
    step 1 sent and replied to, José's step 1 edited and approved by selection."""
    await s.upsert_campaign(campaign_id=cid, name="Workspace", brief="Book a call.",
                            channel="outbox", kb_dir=None, workflow_id=f"campaign:{cid}")
    leads = parse_lead_rows(enumerate(PEOPLE, start=2), cid).leads
    await s.upsert_leads(cid, leads)
    ids = {lead.email: lead.lead_id for lead in leads}
    for lead in leads:
        for step in (1, 2, 3):
            failed = FAILED.format(step=2) if (lead.email, step) == (ANA, 2) else None
            await s.upsert_draft(
                campaign_id=cid, lead_id=lead.lead_id, step=step, subject=f"Step {step}",
                body=f"Body {step} for {lead.email}", citations=["pricing.md#1-00000000"],
                provenance={"source": "llm:offline"}, envelope_id=f"env-{lead.lead_id}-{step}",
                failed_reason=failed)
        await s.set_lead_status(cid, lead.lead_id, "failed" if lead.email == ANA else "drafted")
    await s.set_stage(cid, Stage.AWAITING_APPROVAL.value)
    await s.set_draft_excluded(cid, ids[BO], 3, True)
    await s.add_draft_edit(edit_id="e-jose", campaign_id=cid, lead_id=ids[JOSE], step=1,
                           subject="Hola José", body="Edited", base_version=1, by="rita")
    assert await s.apply_draft_edit("e-jose", subject="Hola José", body="Edited",
                                    expected_version=1)
    await s.record_decision(campaign_id=cid, decision_id="d-1", decision="approve_leads",
                            lead_ids=[ids[JOSE]], by="rita", note="José first")
    await s.upsert_delivery(message_key=message_key(cid, ids[BO], 1), campaign_id=cid,
                            lead_id=ids[BO], step=1, channel="outbox", status="sent",
                            message_id="<m-bo-1@localhost>")
    await s.schedule_step(cid, ids[BO], 2, datetime(2030, 5, 1, 9, 0, tzinfo=UTC))
    await s.record_reply(message_id="<r-bo@ledgerly.example>", kind="reply", email=BO,
                         source="webhook", campaign_id=cid, lead_id=ids[BO], step=1,
                         subject="Re: Step 1", text="Tell me more", matched_by="message_id")
    return ids


async def test_review_page_searches_folding_case_and_accents_on_every_backend(backend) -> None:
    s = backend.store
    await seeded(s)

    async def found(search: str, **kw: Any) -> list[str]:
        page = await s.review_page("c-ws", search=search, **kw)
        assert page.total == len(page.items)
        return [i.email for i in page.items]

    # Name, email, company and title; whatever the case and the accents on either side.
    for query in ("jose", "JOSÉ", "muñoz", "MUNOZ", "jose munoz", "rapidos", "RÁPIDOS",
                  "logistica", "jefe de", "correos.example"):
        assert await found(query) == [JOSE], query
    assert await found("olund") == [ANA]
    assert await found("ölund") == [ANA]
    assert await found("vp oper") == [ANA]
    assert await found("cto") == [BO]
    assert await found("  CARELY ") == [CY]
    order = [i.email for i in (await s.review_page("c-ws")).items]  # one batch: by lead id
    assert await found(".example") == order and sorted(order) == sorted([JOSE, ANA, BO, CY])
    assert await found("100%_") == [], "no wildcards"
    assert await found("jose", status="failed") == []
    assert await found("ana", status="failed") == [ANA]
    paged = await s.review_page("c-ws", search="example", offset=1, limit=2)
    assert (paged.total, [i.email for i in paged.items]) == (4, order[1:3])


async def test_review_page_filters_by_step_status_and_lists_every_step(backend) -> None:
    s = backend.store
    ids = await seeded(s)

    async def emails(**kw: Any) -> list[str]:
        return [i.email for i in (await s.review_page("c-ws", **kw)).items]

    assert await emails(step_status="failed") == [ANA]
    assert await emails(step_status="held") == [ANA]
    assert await emails(step_status="excluded") == [BO]
    assert await emails(step_status="edited") == [JOSE]
    assert await emails(status="edited") == [JOSE]
    assert await emails(step_status="replied") == [BO]
    assert await emails(step_status="failed", search="bo") == []
    assert await emails(step_status="excluded", status="drafted") == [BO]
    page = await s.review_page("c-ws", step_status="failed", offset=0, limit=1)
    assert page.total == 1

    items = {i.email: i for i in (await s.review_page("c-ws")).items}
    assert all([st.step for st in i.steps] == [1, 2, 3] for i in items.values())
    ana = items[ANA]
    assert ana.held and (ana.first_name, ana.last_name, ana.title) == (
        "Ana", "Ölund", "VP Operations")
    assert ana.steps[1].failed_reason == FAILED.format(step=2)
    bo = items[BO]
    assert (bo.steps[0].outcome, bo.steps[0].events, bo.replied) == ("sent", ["replied"], True)
    assert bo.steps[0].sent_at is not None
    assert bo.steps[1].due_at is not None and bo.steps[1].due_at.startswith("2030-05-01T09:00")
    assert bo.steps[2].excluded and not bo.steps[1].excluded
    jose = items[JOSE]
    assert (jose.steps[0].version, jose.steps[0].edited_by, jose.steps[0].approved) == (
        2, "rita", True)
    # The outcomes are the report's, row for row.
    report = {(r.lead_id, r.step): r for r in await s.report("c-ws")}
    for item in items.values():
        for st in item.steps:
            row = report[(item.lead_id, st.step)]
            assert (st.outcome, st.error, st.stop_reason) == (
                row.delivery_status, row.error, row.stop_reason)
    decisions = (await s.review_page("c-ws", limit=1)).decisions
    assert [(d.decision, d.by, d.note, d.lead_count) for d in decisions] == [
        ("approve_leads", "rita", "José first", 1)]
    assert ids[JOSE] == jose.lead_id

    # One lead alone (the lead page reads its steps so), with the other filters as well.
    one = await s.review_page("c-ws", lead_id=ids[ANA])
    assert (one.total, [i.email for i in one.items]) == (1, [ANA])
    assert one.items[0].steps == items[ANA].steps
    assert await emails(lead_id=ids[ANA], step_status="failed") == [ANA]
    assert await emails(lead_id=ids[BO], step_status="failed") == []
    assert await emails(lead_id=ids[ANA], search="jose") == []
    assert await emails(lead_id="no-such-lead") == []


# -- the pages, in a browser ------------------------------------------------------------------


async def started(ts_env: Any, settings: Settings, store: Store, prefix: str, cid: str
                  ) -> tuple[CampaignManager, dict[str, str]]:
    """A 3-step campaign (follow-ups a day apart) of PEOPLE awaiting approval; ids by email."""
    mgr = CampaignManager(settings, client=ts_env.client, store=store, queue_prefix=prefix,
                          use_search_attributes=False)
    intake = parse_lead_rows(enumerate(PEOPLE, start=2), cid)
    await mgr.start(intake,
                    CampaignOptions(brief="Book a 20-minute call.", kb=str(KB),
                                    follow_ups=[f"{int(DAY.total_seconds())}s"] * 2),
                    name=f"Campaign {cid}", campaign_id=cid, tuning=EngineTuning(per_domain_pacing=False))
    await wait_stage(ts_env, cid, Stage.AWAITING_APPROVAL)
    return mgr, {lead.email: lead.lead_id for lead in await mgr._keyed(cid, intake)}


@pytest.fixture
def review_settings(api_settings: Settings) -> Settings:
    api_settings.postal_address = POSTAL
    return api_settings


async def rows_text(page: Any) -> list[str]:
    """The leads listed on a campaign page (each row has one link: the lead's email)."""
    return [t.strip() for t in await page.locator("tbody a").all_inner_texts()]


async def left_live_page(page: Any) -> Any:
    """A new tab in `page`'s browser context (same sign-in), `page` closed.

    A page showing a drafting or delivering campaign reloads itself (meta refresh, every
    LIVE_REFRESH seconds). A test that waits for the campaign to finish and then calls
    `goto` on that page races the page's own reload, and Chromium reports the `goto` as
    "interrupted by another navigation". A fresh tab has no reload pending.
    """
    fresh = await page.context.new_page()
    await page.close()
    return fresh


async def steps_of(page: Any, who: str) -> list[str]:
    """The lines of one lead's steps on the campaign page."""
    row = page.locator("tbody tr", has=page.get_by_role("link", name=who))
    return [t.strip() for t in await row.locator("ol.steps li").all_inner_texts()]


async def test_campaign_page_finds_filters_and_acts_on_a_selection(
    ts_env, review_settings, store, prefix, run_workers, browser
) -> None:
    """Search by name, email, company and title ignoring case and accents; filter by step
    status; every step of each lead with its status; exclude and include a selection (every
    step); "Exclude lead" on the lead page excludes every step, "Exclude step" one."""
    settings = review_settings
    token = await Reviewers(store).add("rita")
    fail = {(ANA, 2)}
    async with run_workers(ts_env.client, overrides={
            "write_draft": failing_writer(store, settings, fail, FAILED)}):
        mgr, ids = await started(ts_env, settings, store, prefix, "c-find")
        async with serve(mgr) as client:
            base = str(client.base_url).rstrip("/")
            page = await (await browser.new_context()).new_page()
            await sign_in(page, base, token)
            await page.goto(f"{base}/review/campaigns/c-find")
            text = await page.content()
            assert "offline writer" in text
            assert await steps_of(page, ANA) == [
                "Step 1: awaiting approval", f"Step 2: failed · {FAILED.format(step=2)}",
                "Step 3: awaiting approval"]
            assert await steps_of(page, BO) == [f"Step {n}: awaiting approval" for n in (1, 2, 3)]
            assert await page.locator("tbody .tag.held").count() == 1

            for query, want in (("jose", [JOSE]), ("MUÑOZ", [JOSE]), ("rapidos", [JOSE]),
                                ("LOGISTICA", [JOSE]), ("olund", [ANA]), ("ledgerly.EX", [BO]),
                                ("head of", [CY])):
                await page.get_by_label("Search").fill(query)
                await follow(page, page.get_by_role("button", name="Filter"))
                assert await rows_text(page) == want, query
            await page.get_by_label("Search").fill("")
            await page.get_by_label("Step status").select_option("failed")
            await follow(page, page.get_by_role("button", name="Filter"))
            assert await rows_text(page) == [ANA]
            await page.get_by_label("Step status").select_option("held")
            await follow(page, page.get_by_role("button", name="Filter"))
            assert await rows_text(page) == [ANA]

            # A selection: Bo and Cy excluded (all their steps), then Cy included again.
            await page.goto(f"{base}/review/campaigns/c-find")
            await page.get_by_label(f"Select {BO}").check()
            await page.get_by_label(f"Select {CY}").check()
            await follow(page, page.get_by_role("button", name="Exclude selected"))
            assert "Excluded 2 lead(s)" in await page.content()
            for email_ in (BO, CY):
                assert all(d.excluded for d in await store.list_lead_drafts("c-find", ids[email_]))
            await page.get_by_label("Step status").select_option("excluded")
            await follow(page, page.get_by_role("button", name="Filter"))
            assert sorted(await rows_text(page)) == sorted([BO, CY])
            await page.get_by_label("Search").fill("carely")
            await follow(page, page.get_by_role("button", name="Filter"))
            await page.get_by_label("Select all 1 lead(s) matching the filter").check()
            await follow(page, page.get_by_role("button", name="Include selected"))
            assert "Included 1 lead(s)" in await page.content()
            assert not any(d.excluded for d in await store.list_lead_drafts("c-find", ids[CY]))
            assert all(d.excluded for d in await store.list_lead_drafts("c-find", ids[BO]))

            # "Exclude lead" on the lead page: every step; "Include step" then one.
            await page.goto(f"{base}/review/campaigns/c-find/leads/{ids[JOSE]}")
            await follow(page, page.get_by_role("button", name="Exclude lead"))
            assert "Lead excluded" in await page.content()
            drafts = await store.list_lead_drafts("c-find", ids[JOSE])
            assert [(d.step, d.excluded) for d in drafts] == [(1, True), (2, True), (3, True)]
            step_2 = page.get_by_role("region", name="Step 2")
            await follow(page, step_2.get_by_role("button", name="Include step"))
            drafts = await store.list_lead_drafts("c-find", ids[JOSE])
            assert [(d.step, d.excluded) for d in drafts] == [(1, True), (2, False), (3, True)]
            assert await page.get_by_role("button", name="Exclude lead").count() == 1
            assert await page.get_by_role("button", name="Include lead").count() == 1

            # The new forms are guarded like the others: a cross-site POST or one without
            # the session's CSRF token is refused and changes nothing.
            csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
            cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
            async with httpx.AsyncClient(base_url=base, cookies=cookies, timeout=30) as http:
                for path, data in (
                        ("/review/campaigns/c-find/selection",
                         {"action": "exclude", "lead": ids[ANA]}),
                        (f"/review/campaigns/c-find/leads/{ids[ANA]}/approve", {}),
                        ("/review/campaigns/c-find/approve", {"confirm": "yes"})):
                    r = await http.post(path, data=data, headers={"Origin": base})
                    assert r.status_code == 403 and "CSRF" in r.text, (path, r.text)
                    r = await http.post(path, data={**data, "csrf": csrf or ""},
                                        headers={"Origin": "https://evil.example"})
                    assert r.status_code == 403, (path, r.text)
            assert not any(d.excluded or d.approved
                           for d in await store.list_lead_drafts("c-find", ids[ANA]))
            assert (await mgr.status("c-find")).stage is Stage.AWAITING_APPROVAL
        await mgr.reject("c-find", by="test")


async def test_lead_page_shows_the_failure_first_refuses_a_bad_edit_and_fits_a_phone(
    ts_env, review_settings, store, prefix, run_workers, browser
) -> None:
    """The failed step's reason where the reviewer looks first; every step with its own
    editor; a refused edit stays on the lead page with the reasons and the text as typed;
    a fix by an edit releases the lead; on a 390-px-wide phone nothing scrolls sideways."""
    settings = review_settings
    token = await Reviewers(store).add("rita")
    async with run_workers(ts_env.client, overrides={
            "write_draft": failing_writer(store, settings, {(ANA, 3)}, FAILED)}):
        mgr, ids = await started(ts_env, settings, store, prefix, "c-lead")
        async with serve(mgr) as client:
            base = str(client.base_url).rstrip("/")
            phone = await browser.new_context(viewport={"width": 390, "height": 844},
                                              is_mobile=True, has_touch=True)
            page = await phone.new_page()
            await sign_in(page, base, token)
            lead_url = f"{base}/review/campaigns/c-lead/leads/{ids[ANA]}"
            await page.goto(lead_url)
            first_alert = page.get_by_role("alert").first
            assert FAILED.format(step=3) in await first_alert.inner_text()
            assert "Step 3 failed" in await first_alert.inner_text()
            failed_step = await page.get_by_role("region", name="Step 3").inner_text()
            assert "Guardrails failed" in failed_step and "Guardrails: passed" not in failed_step
            for step in (1, 2, 3):
                region = page.get_by_role("region", name=f"Step {step}")
                assert await region.get_by_role("button", name="Save draft").count() == 1
            assert await page.get_by_label("Body", exact=True).input_value()
            assert "Drafts come from the offline writer" in await page.content()
            assert "provenance" in (await page.content()).lower()
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the lead page is {width} px wide on a 390-px phone"

            # A refused edit of step 3: the lead page again (422), the reasons, the text kept.
            step_3 = page.get_by_role("region", name="Step 3")
            bad = "Hi {first_name}, too short."
            await step_3.get_by_label("Body of step 3").fill(bad)
            async with page.expect_navigation():
                await step_3.get_by_role("button", name="Save draft").click()
            assert urlsplit(page.url).path == f"/review/campaigns/c-lead/leads/{ids[ANA]}/edit"
            text = await page.content()
            assert "Not saved (step 3)" in text and "placeholders" in text and "words" in text
            assert await page.get_by_role("region", name="Step 3").get_by_label(
                "Body of step 3").input_value() == bad
            assert await page.get_by_role("heading", name=ANA).count() == 1
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the refused edit's page is {width} px wide"
            draft = await store.get_draft("c-lead", ids[ANA], 3)
            assert draft is not None and draft.version == 1 and draft.failed_reason

            # A good edit fixes the step: the lead is no longer held.
            good = ("Hi Ana, one last note from me: if shipment exceptions ever eat into your "
                    "week, a short call could show how teams handle them. Best regards")
            await step_3.get_by_label("Body of step 3").fill(good)
            await follow(page, step_3.get_by_role("button", name="Save draft"))
            assert "Draft saved" in await page.content()
            assert urlsplit(page.url).fragment == "step-3"
            draft = await store.get_draft("c-lead", ids[ANA], 3)
            assert draft is not None and draft.version == 2 and draft.failed_reason is None
            assert await mgr.held_leads("c-lead") == []
            assert await page.get_by_role("alert").count() == 0
            versions = await page.get_by_role("region", name="Step 3").inner_text()
            assert "refused: guardrail" in versions and "rita" in versions
            # The audit rows of the failure carry its reason.
            audit = page.get_by_role("table").last
            assert FAILED.format(step=3) in await audit.inner_text()
        await mgr.reject("c-lead", by="test")


async def test_preview_confirmation_approver_and_outcomes(
    ts_env, review_settings, store, prefix, run_workers, browser
) -> None:
    """The preview is the message as sent (footer, postal address, unsubscribe line, no
    citation markers; citations beside it); leads approved by selection, a held one only
    with "send the passing steps"; the campaign's approval confirmed on a page naming the
    lead still held; the approver and the note shown; after sending, each row's outcome
    per step."""
    settings = review_settings
    token = await Reviewers(store).add("rita")
    async with run_workers(ts_env.client, overrides={
            "write_draft": failing_writer(store, settings, {(CY, 2), (BO, 3)}, FAILED)}):
        mgr, ids = await started(ts_env, settings, store, prefix, "c-send")
        async with serve(mgr) as client:
            base = str(client.base_url).rstrip("/")
            page = await (await browser.new_context()).new_page()
            await sign_in(page, base, token)

            # A citation marker written into José's step 1 stays out of what is sent.
            passage = (await store.get_retrieval("c-send", ids[JOSE]))[0]["passage_id"]
            first = await store.get_draft("c-send", ids[JOSE], 1)
            assert first is not None
            await page.goto(f"{base}/review/campaigns/c-send/leads/{ids[JOSE]}")
            marked = first.body.replace("\n\n", f" [{passage}]\n\n", 1)
            assert marked != first.body
            await page.get_by_label("Body", exact=True).fill(marked)
            await follow(page, page.get_by_role("button", name="Save draft").first)
            assert "Draft saved" in await page.content()
            preview = page.get_by_role("group", name="Preview of step 1")
            shown = await preview.inner_text()
            assert POSTAL in shown and "To stop receiving these messages:" in shown
            assert "/unsubscribe?token=" in shown
            assert f"[{passage}]" not in shown and not re.search(r"\[[^\]\s]+#[^\]\s]+\]", shown)
            assert passage in await page.get_by_role(
                "complementary", name="Citations of step 1").inner_text()
            step_2 = await page.get_by_role("group", name="Preview of step 2").inner_text()
            assert "Re: " in step_2
            preview_text = await preview.locator("pre").inner_text()

            # Approved by selection: José (Cy, held, is left held without "send the passing
            # steps"), then Ana and Bo with it (Bo's failed step 3 will not go).
            await page.goto(f"{base}/review/campaigns/c-send")
            for who in (JOSE, CY):
                await page.get_by_label(f"Select {who}").check()
            await follow(page, page.get_by_role("button", name="Approve selected"))
            text = await page.content()
            assert "Approved 1 lead(s)" in text and "1 held lead(s)" in text
            assert sorted(await mgr.held_leads("c-send")) == sorted([ids[CY], ids[BO]])
            for who in (ANA, BO):
                await page.get_by_label(f"Select {who}").check()
            await page.get_by_label("Send the passing steps of held leads").check()
            await follow(page, page.get_by_role("button", name="Approve selected"))
            text = await page.content()
            assert "Approved 2 lead(s)" in text and "held lead(s)" not in text
            assert "lead(s) approved by selection by rita" in text
            assert await mgr.held_leads("c-send") == [ids[CY]]
            assert (await mgr.status("c-send")).stage is Stage.AWAITING_APPROVAL

            # The campaign's approval: a confirmation naming the held lead, then the decision.
            await page.get_by_label("Note").fill("Ship it, Cy waits")
            await follow(page, page.get_by_role("button", name="Approve campaign"))
            held = page.get_by_role("list", name="Held leads")
            assert CY in await held.inner_text() and FAILED.format(step=2) in await held.inner_text()
            assert BO not in await held.inner_text()
            assert (await mgr.status("c-send")).stage is Stage.AWAITING_APPROVAL
            assert await page.get_by_label("Note").input_value() == "Ship it, Cy waits"
            await follow(page, page.get_by_role("button", name="Confirm: approve campaign"))
            text = await page.content()
            assert "Campaign approved by rita" in text and "Ship it, Cy waits" in text

            final = await finish(ts_env, "c-send", DAY)
            assert final.stage is Stage.COMPLETED
            page = await left_live_page(page)
            await page.goto(f"{base}/review/campaigns/c-send")
            for who in (JOSE, ANA):
                lines = await steps_of(page, who)
                assert [line.split(" · ")[0] for line in lines] == [
                    f"Step {n}: sent" for n in (1, 2, 3)], lines
                assert all(re.search(r" · sent \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", line)
                           for line in lines), lines
            bo = await steps_of(page, BO)
            assert [line.split(" · ")[0] for line in bo[:2]] == ["Step 1: sent", "Step 2: sent"]
            assert bo[2] == f"Step 3: failed · {FAILED.format(step=3)}"
            assert await steps_of(page, CY) == [
                "Step 1: not sent: not approved · a step failed (step 2)",
                f"Step 2: not sent: not approved · {FAILED.format(step=2)}",
                "Step 3: not sent: not approved · a step failed (step 2)"]
    sent = {}
    for path in settings.outbox_dir.glob("*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=default_policy)
        part = msg.get_body(("plain",))
        sent[path.stem] = part.get_content() if part else ""
    assert set(sent) == {message_key("c-send", ids[who], n) for who in (JOSE, ANA)
                         for n in (1, 2, 3)} | {message_key("c-send", ids[BO], n) for n in (1, 2)}
    jose_1 = sent[message_key("c-send", ids[JOSE], 1)]
    assert jose_1.replace("\r\n", "\n").strip() == preview_text.replace("\r\n", "\n").strip()


def test_progress_is_never_full_while_a_row_is_pending() -> None:
    """The campaign page's progress counts the report's rows (one a lead and step)."""
    from campaign_core.models import Counts
    from starter.api.review_pages import _progress

    delivering = Counts(leads=4, approved=4, sent=4, messages=12, pending=6, stopped=2)
    assert _progress(Stage.DELIVERING, delivering) == 50
    almost = Counts(leads=2, approved=2, sent=2, suppressed=1, messages=200, pending=1)
    assert _progress(Stage.DELIVERING, almost) == 99
    assert _progress(Stage.DELIVERING, Counts(leads=1, approved=1, sent=3, messages=3)) == 100
    assert _progress(Stage.DRAFTING, Counts(leads=300, drafted=299)) == 99


# -- the "Done when": a 3-step campaign through the review on `campaign dev` ----------

E2E_LEADS = [
    {"email": "ana@northwind.example", "first_name": "Ana", "company": "Northwind Freight",
     "title": "VP Operations"},
    {"email": "bo@ledgerly.example", "first_name": "Bo", "company": "Ledgerly", "title": "CTO"},
    {"email": "cy@carely.example", "first_name": "Cy", "company": "Carely",
     "title": "Head of Growth"},
    {"email": "di@brightpath.example", "first_name": "Di", "company": "BrightPath Logistics",
     "title": "COO"},
    {"email": "ed@relayhealth.example", "first_name": "Ed", "company": "Relay Health",
     "title": "Director of Sales"},
    {"email": "flo@tidewater.example", "first_name": "Flo", "company": "Tidewater",
     "title": "Head of Operations"},
]
E2E_TOKEN = "review-workspace-e2e-token-0123456789"
FIXED = ("Hi Di, a short follow-up to my note about BrightPath Logistics: teams like yours "
         "use Relay to keep customers informed when shipments go wrong. Would a short call "
         "next week help? Best regards")


async def api_stage(api: httpx.AsyncClient, cid: str, stage: str, seconds: float = 180) -> None:
    """Wait for a stage through the dev API."""
    status: dict[str, Any] = {}
    for _ in range(int(seconds * 4)):
        got = await api.get(f"/campaigns/{cid}")
        if got.status_code == 200:
            status = got.json()
            if status["stage"] == stage:
                return
        await asyncio.sleep(0.25)
    raise AssertionError(f"{cid} never reached {stage}: {status}")


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_a_three_step_campaign_through_the_review(
    dev_cli_env: dict[str, str], home: Any, tmp_path: Any, browser: Any
) -> None:
    """On `campaign dev`, with an OpenAI-compatible model (tests/fakes/llm_server.py) whose step-2
    drafts for Di and Ed cite a passage that was never retrieved, twice (the writer repairs
    once): both steps fail their guardrails, with the reason on the pages. Di's is fixed by
    an edit; Ed stays held. Bo is excluded (every step), Ana and Cy approved by selection,
    the rest by the campaign's approval, confirmed on a page that names Ed. The outbox then
    holds exactly the steps approved (4 leads x 3), and the page shows each lead's outcome
    per step."""
    cid = "review-e2e"
    leads_file = tmp_path / "leads.csv"
    leads_file.write_text("email,first_name,company,title\n" + "".join(
        f"{p['email']},{p['first_name']},{p['company']},{p['title']}\n" for p in E2E_LEADS))
    ana, bo, cy, di, ed, flo = (p["email"] for p in E2E_LEADS)
    with LLMTestServer() as llm:
        for who in ("BrightPath Logistics", "Relay Health"):
            # Only the follow-ups quote step 1 ("Subject: A question for <company>").
            llm.script("bad_citation", "bad_citation", match=f"Subject: A question for {who}")
        env = {**dev_cli_env, "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": llm.base_url,
               "CAMPAIGN_LLM_MODEL": "test-model", "CAMPAIGN_LLM_RATE_LIMIT": "50",
               "CAMPAIGN_POSTAL_ADDRESS": POSTAL, "CAMPAIGN_API_TOKEN": E2E_TOKEN}
        dev = DevProcess(env, home)
        await dev.start()
        try:
            async with httpx.AsyncClient(base_url=dev.api, timeout=10, headers={
                    "Authorization": f"Bearer {E2E_TOKEN}"}) as api:
                await cli_json(env, "start", "--leads", str(leads_file), "--kb", str(KB),
                               "--brief", "Book a 20-minute call.", "--follow-up", "2s",
                               "--follow-up", "2s", "--id", cid)
                await api_stage(api, cid, "awaiting_approval")
                drafts = (await api.get(f"/campaigns/{cid}/drafts?limit=100")).json()
                ids = {d["email"]: d["lead_id"] for d in drafts}
                assert sorted((d["email"], d["step"]) for d in drafts) == sorted(
                    (p["email"], s) for p in E2E_LEADS for s in (1, 2, 3))

                page = await (await browser.new_context()).new_page()
                await page.goto(dev.sign_in)
                await follow(page, page.get_by_role("button", name="Sign in"))
                campaign_url = f"{dev.api}/review/campaigns/{cid}"
                await page.goto(campaign_url)
                assert "offline writer" not in await page.content()
                for who in (di, ed):
                    lines = await steps_of(page, who)
                    assert lines[1].startswith("Step 2: failed · guardrail"), lines
                    assert INVENTED_PASSAGE in lines[1]
                assert await steps_of(page, ana) == [
                    f"Step {n}: awaiting approval" for n in (1, 2, 3)]

                # Di's failed step, shown first on her page, fixed by an edit.
                await follow(page, page.get_by_role("link", name=di))
                assert INVENTED_PASSAGE in await page.get_by_role("alert").first.inner_text()
                step_2 = page.get_by_role("region", name="Step 2")
                await step_2.get_by_label("Body of step 2").fill(FIXED)
                await follow(page, step_2.get_by_role("button", name="Save draft"))
                assert "Draft saved" in await page.content()
                assert await page.get_by_role("alert").count() == 0

                # Bo excluded: every step.
                await page.goto(f"{campaign_url}/leads/{ids[bo]}")
                await follow(page, page.get_by_role("button", name="Exclude lead"))
                assert "Lead excluded" in await page.content()

                # Ana and Cy approved by selection.
                await page.goto(campaign_url)
                for who in (ana, cy):
                    await page.get_by_label(f"Select {who}").check()
                await follow(page, page.get_by_role("button", name="Approve selected"))
                assert "Approved 2 lead(s)" in await page.content()

                # The rest by the campaign's approval, confirmed: the page names Ed.
                await page.get_by_label("Note").fill("Ed waits for a fix")
                await follow(page, page.get_by_role("button", name="Approve campaign"))
                held = await page.get_by_role("list", name="Held leads").inner_text()
                assert ed in held and INVENTED_PASSAGE in held and di not in held
                await follow(page, page.get_by_role("button", name="Confirm: approve campaign"))
                assert "Campaign approved by dev" in await page.content()
                assert "Ed waits for a fix" in await page.content()

                await api_stage(api, cid, "completed")
                report = (await api.get(f"/campaigns/{cid}/report")).json()

                # The page shows each lead's outcome per step.
                page = await left_live_page(page)
                await page.goto(campaign_url)
                for who in (ana, cy, di, flo):
                    lines = await steps_of(page, who)
                    assert [line.split(" · ")[0] for line in lines] == [
                        f"Step {n}: sent" for n in (1, 2, 3)], (who, lines)
                assert await steps_of(page, bo) == [f"Step {n}: excluded" for n in (1, 2, 3)]
                ed_lines = await steps_of(page, ed)
                assert ed_lines[0] == "Step 1: not sent: not approved · a step failed (step 2)"
                assert ed_lines[1].startswith("Step 2: not sent: not approved · guardrail")
                assert "Ed waits for a fix" in await page.content()
        finally:
            code = await dev.stop()
        assert code == 0, "".join(dev.lines)[-3000:]

        # The outbox holds exactly the approved steps: Ana, Cy, Di and Flo, three each.
        sent: dict[tuple[str, int], str] = {}
        by_key = {message_key(cid, ids[p["email"]], s): (p["email"], s)
                  for p in E2E_LEADS for s in (1, 2, 3)}
        for path in (home / "outbox").glob("*.eml"):
            msg = email.message_from_bytes(path.read_bytes(), policy=default_policy)
            who_step = by_key[str(msg["X-Campaign-Message-Key"])]
            assert str(msg["To"]).endswith(f"<{who_step[0]}>") or str(msg["To"]) == who_step[0]
            part = msg.get_body(("plain",))
            sent[who_step] = part.get_content() if part else ""
        assert sorted(sent) == sorted((w, s) for w in (ana, cy, di, flo) for s in (1, 2, 3))
        assert FIXED in sent[(di, 2)]
        assert {(r["email"], r["step"]): r["delivery_status"] for r in report} == {
            **{(w, s): "sent" for w in (ana, cy, di, flo) for s in (1, 2, 3)},
            **{(bo, s): "excluded" for s in (1, 2, 3)},
            **{(ed, s): "not_approved" for s in (1, 2, 3)}}

