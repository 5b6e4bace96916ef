"""The replies in the store, the same on SQLite, PostgreSQL and Supabase (REST).

A message is recorded once per lead it matched (and once when it matched none), a
person's reply is told from an automatic one, leads are found by their stored address
only in campaigns still sending, the IMAP cursor never goes backwards within one
UIDVALIDITY, `status` counts the leads that replied, and `forget` erases replies.
"""

from __future__ import annotations

from campaign_core.replies import SENDING_STAGES
from campaign_core.store.base import reply_id_for
from tests.fakes import pg_fixtures
from tests.store import test_store
from tests.store.test_store import Backend, leads_for, new_campaign

# The fixtures, made visible to this module (pytest only auto-loads conftest.py).
pg_cluster = pg_fixtures.pg_cluster
pg_url = pg_fixtures.pg_url
backend = test_store.backend


async def test_a_reply_is_recorded_once_per_message_and_lead(backend: Backend) -> None:
    store = backend.store
    ana, bo = (await new_campaign(store, "c1"))[:2]
    first = await store.record_reply(message_id="<r1@x.org>", kind="reply", email="Ana@Example.com",
                                     source="webhook", campaign_id="c1", lead_id=ana.lead_id,
                                     step=1, subject="Re: hi", text="Yes", matched_by="message_id")
    again = await store.record_reply(message_id="r1@x.org", kind="reply", email="ana@example.com",
                                     source="imap", campaign_id="c1", lead_id=ana.lead_id,
                                     subject="Re: hi", text="Yes")
    assert first == (reply_id_for("r1@x.org", "c1", ana.lead_id), True)
    assert again == (first[0], False)  # brackets or not, webhook or IMAP: the same message
    await store.record_reply(message_id="<ooo@x.org>", kind="auto_reply", email=bo.email,
                             source="imap", campaign_id="c1", lead_id=bo.lead_id)
    unmatched = await store.record_reply(message_id="<u@y.org>", kind="reply",
                                         email="who@y.org", source="webhook")
    assert unmatched[1] and await backend.rows("replies") == 3

    assert await store.lead_replied("c1", ana.lead_id)
    assert not await store.lead_replied("c1", bo.lead_id)  # an out-of-office stops nothing
    assert not await store.lead_replied("c2", ana.lead_id)
    rows = await store.list_replies("c1")
    assert [(r.lead_id, r.kind, r.step, r.email, r.source) for r in rows] == [
        (ana.lead_id, "reply", 1, "ana@example.com", "webhook"),
        (bo.lead_id, "auto_reply", None, bo.email, "imap")]
    assert rows[0].received_at <= rows[1].received_at and rows[0].text == "Yes"
    assert [(r.email, r.lead_id) for r in await store.list_replies(None)] == [("who@y.org", None)]


async def test_counts_gain_the_leads_that_replied(backend: Backend) -> None:
    store = backend.store
    ana, bo, cy = (await new_campaign(store, "c1"))[:3]
    for mid, lead, kind in (("a1", ana, "reply"), ("a2", ana, "reply"), ("b1", bo, "auto_reply"),
                            ("c1", cy, "bounce")):
        await store.record_reply(message_id=f"<{mid}@x>", kind=kind, email=lead.email,
                                 source="imap", campaign_id="c1", lead_id=lead.lead_id)
    assert (await store.counts("c1")).replied == 1  # leads, not messages; people, not machines
    assert (await store.counts("c2")).replied == 0


async def test_leads_are_found_by_address_in_campaigns_still_sending(backend: Backend) -> None:
    store = backend.store
    for cid, stage in (("c1", "delivering"), ("c2", "awaiting_approval"), ("c3", "completed"),
                       ("c4", "drafting")):
        await new_campaign(store, cid, n=2)
        await store.set_stage(cid, stage)
    found = await store.find_leads_by_email(" ANA@example.COM ", SENDING_STAGES)
    assert found == [(cid, leads_for(cid)[0].lead_id) for cid in ("c1", "c2")]
    assert await store.find_leads_by_email("nobody@example.com", SENDING_STAGES) == []
    assert await store.find_leads_by_email("ana@example.com", []) == []


async def test_the_imap_cursor_never_goes_back_within_one_uidvalidity(backend: Backend) -> None:
    store = backend.store
    key = "replies@mail.test:993/INBOX"
    assert await store.get_imap_state(key) is None
    await store.save_imap_state(key, 7, 10)
    await store.save_imap_state(key, 7, 4)  # a slower poller finishing late
    assert await store.get_imap_state(key) == (7, 10)
    await store.save_imap_state(key, 9, 2)  # the mailbox was rebuilt: start over
    assert await store.get_imap_state(key) == (9, 2)


async def test_forget_erases_replies_matched_and_unmatched(backend: Backend) -> None:
    store = backend.store
    ana, bo = (await new_campaign(store, "c1"))[:2]
    await store.record_reply(message_id="<r1@x>", kind="reply", email=ana.email, source="imap",
                             campaign_id="c1", lead_id=ana.lead_id, text="Call me on 555-0100")
    await store.record_reply(message_id="<r2@x>", kind="reply", email=ana.email, source="imap",
                             text="(matched no lead)")
    await store.record_reply(message_id="<r3@x>", kind="reply", email=bo.email, source="imap",
                             campaign_id="c1", lead_id=bo.lead_id)
    result = await store.forget("ana@example.com")
    assert result["replies"] == 2
    assert [r.lead_id for r in await store.list_replies("c1")] == [bo.lead_id]
    assert await store.list_replies(None) == []
    assert (await store.forget("ana@example.com"))["replies"] == 0
