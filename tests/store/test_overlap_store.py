"""One person across campaigns, in the store (issue 27): which addresses are in another
campaign's sequence still going on, and which replied within a cooldown, the same on
SQLite, PostgreSQL and Supabase (REST), by batch (not one query per address)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from campaign_core.ids import message_key
from campaign_core.store.base import OVERLAP_BATCH, Store
from tests.fakes import pg_fixtures
from tests.store import test_store
from tests.store.test_store import Backend, draft, leads_for

# The fixtures, made visible to this module (pytest only auto-loads conftest.py).
pg_cluster = pg_fixtures.pg_cluster
pg_url = pg_fixtures.pg_url
backend = test_store.backend

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


async def campaign(store: Store, cid: str, emails: list[str], stage: str) -> dict[str, str]:
    """A campaign at `stage` with these leads: {email: lead_id}."""
    await store.upsert_campaign(campaign_id=cid, name=cid, brief="b", channel="outbox",
                                kb_dir=None, workflow_id=f"campaign:{cid}")
    if stage != "drafting":
        await store.set_stage(cid, stage)
    leads = leads_for(cid, [{"email": e} for e in emails])
    await store.upsert_leads(cid, leads)
    return {lead.email: lead.lead_id for lead in leads}


async def sent(store: Store, cid: str, lead_id: str, step: int = 1) -> None:
    await store.upsert_delivery(message_key=message_key(cid, lead_id, step), campaign_id=cid,
                                lead_id=lead_id, step=step, channel="outbox", status="sent",
                                message_id=f"<{lead_id}.{step}@x>")


async def test_who_is_in_another_campaigns_sequence(backend: Backend) -> None:
    s = backend.store
    # Drafting: every lead whose drafting did not fail.
    c1 = await campaign(s, "c1", ["ana@example.com", "bo@example.org"], "drafting")
    await s.set_lead_status("c1", c1["bo@example.org"], "failed", "no")
    # Delivering: step 1 approved and not sent yet, or a follow-up still scheduled; not a
    # lead whose sequence is over, nor one a reviewer left out (no approved draft).
    c2 = await campaign(s, "c2", ["cy@example.net", "di@example.com", "ed@example.com",
                                  "fay@example.com"], "delivering")
    for email in ("cy@example.net", "di@example.com", "ed@example.com"):
        await draft(s, "c2", c2[email])
    await s.record_decision(campaign_id="c2", decision_id="d1", decision="approve",
                            lead_ids=[c2[e] for e in ("cy@example.net", "di@example.com",
                                                      "ed@example.com")], by="rev", note=None)
    await sent(s, "c2", c2["di@example.com"])
    await s.schedule_step("c2", c2["di@example.com"], 2, T0)
    await sent(s, "c2", c2["ed@example.com"])  # no follow-up: over
    # Over, and a schedule's template: neither counts.
    await campaign(s, "c3", ["gil@example.com"], "completed")
    await campaign(s, "sched-weekly-1a2b3c4d", ["hal@example.com"], "drafting")

    asked = ["Ana@Example.com ", "bo@example.org", "cy@example.net", "di@example.com",
             "ed@example.com", "fay@example.com", "gil@example.com", "hal@example.com",
             "nobody@example.com", "not an address"]
    assert await s.emails_in_active_sequences(asked) == {
        "ana@example.com": "c1", "cy@example.net": "c2", "di@example.com": "c2"}
    # The campaign being added to is not "another" one.
    assert await s.emails_in_active_sequences(asked, exclude_campaign="c2") == {
        "ana@example.com": "c1"}
    # Once di's follow-up is stopped (a reply), di's sequence is over.
    await s.set_step_status("c2", c2["di@example.com"], 2, "stopped", "replied")
    assert await s.emails_in_active_sequences(["di@example.com"]) == {}
    assert await s.emails_in_active_sequences([]) == {}


async def test_who_replied_within_the_cooldown(backend: Backend) -> None:
    s = backend.store
    c1 = await campaign(s, "c1", ["ana@example.com", "bo@example.org", "cy@example.net",
                                  "di@example.com", "ed@example.com", "gil@example.com"],
                        "completed")
    c2 = await campaign(s, "c2", ["ana@example.com"], "completed")

    async def reply(cid: str, email: str, kind: str = "reply", *, verified: bool = True,
                    days_ago: float = 1, mid: str | None = None) -> str:
        lead_id = {"c1": c1, "c2": c2}[cid][email] if cid else None
        reply_id, _ = await s.record_reply(
            message_id=mid or f"<{cid}.{email}.{kind}@x>", kind=kind, email=email,
            source="webhook", campaign_id=cid or None, lead_id=lead_id, verified=verified)
        at = (datetime.now(UTC) - timedelta(days=days_ago)).isoformat()
        await backend.execute("UPDATE replies SET received_at = ? WHERE reply_id = ?",
                              "UPDATE replies SET received_at = %s WHERE reply_id = %s",
                              (at, reply_id))
        return reply_id

    await reply("c1", "ana@example.com", days_ago=40)
    await reply("c2", "ana@example.com", days_ago=3)  # the latest: its campaign is named
    await reply("c1", "bo@example.org", days_ago=120)  # before the cooldown
    await reply("c1", "cy@example.net", "auto_reply")  # a machine, not a person
    await reply("c1", "di@example.com", verified=False)  # nobody vouched for it
    await reply("c1", "ed@example.com", "bounce")
    await reply("", "fay@example.com", mid="<unmatched@x>")  # matched no lead of ours
    # A reply the headers did not give away, which the classifier read as an out-of-office.
    assert await s.record_reply_intent(await reply("c1", "gil@example.com"), "out_of_office",
                                       0.95, "moved")
    since = datetime.now(UTC) - timedelta(days=90)
    asked = ["ANA@example.com", "bo@example.org", "cy@example.net", "di@example.com",
             "ed@example.com", "fay@example.com", "gil@example.com"]
    assert await s.emails_replied_since(asked, since) == {"ana@example.com": "c2"}
    await s.confirm_reply(next(r.reply_id for r in await s.list_replies("c1")
                               if r.email == "di@example.com"))
    assert await s.emails_replied_since(asked, since) == {"ana@example.com": "c2",
                                                          "di@example.com": "c1"}
    assert await s.emails_replied_since(asked, datetime.now(UTC)) == {}


async def test_many_addresses_are_asked_in_batches(backend: Backend) -> None:
    """2,500 addresses: a handful of statements, and the answer is the same as one by one."""
    s = backend.store
    emails = [f"p{i:05d}@example.com" for i in range(OVERLAP_BATCH * 2 + 1)]
    await campaign(s, "c1", emails[::7], "drafting")
    statements = 0
    if backend.fake is None:  # the SQL backends: count what reaches the database
        run = s._all  # type: ignore[attr-defined]

        async def counted(*args: Any, **kw: Any) -> Any:
            nonlocal statements
            statements += 1
            return await run(*args, **kw)

        s._all = counted  # type: ignore[attr-defined]
    else:
        backend.fake.calls.clear()
    found = await s.emails_in_active_sequences(emails + [e.upper() for e in emails])
    assert found == {e: "c1" for e in emails[::7]}
    if backend.fake is not None:  # a page of leads per batch, and the empty page after it
        statements = len(backend.fake.calls_to("leads")) // 2
    assert 1 <= statements <= 3, statements  # one per batch of OVERLAP_BATCH addresses
