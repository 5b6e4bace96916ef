"""What is done with a reply (schema 15), the same on SQLite, PostgreSQL and Supabase (REST).

The desk keeps the headers the classifier reads; an answer is drafted by the agent, edited
by a person (whose edit a later draft does not overwrite), claimed by one sender alone and
never changed once sent; a referral's contact is recorded once per reply; the inbox lists
the replies that need a person, newest first, with their answer, and a snoozed one only
once it is due; a person's intent and "done" are recorded; `forget` takes the answers and
suggestions with the replies.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from campaign_core.store.base import AnswerConflict, StoreError
from tests.fakes import pg_fixtures
from tests.store import test_store
from tests.store.test_store import Backend, new_campaign

# The fixtures, made visible to this module (pytest only auto-loads conftest.py).
pg_cluster = pg_fixtures.pg_cluster
pg_url = pg_fixtures.pg_url
backend = test_store.backend


async def _reply(backend: Backend, cid: str, lead_index: int, mid: str, *,
                 verified: bool = True, text: str = "Sounds good") -> str:
    leads = test_store.leads_for(cid)
    lead = leads[lead_index]
    reply_id, new = await backend.store.record_reply(
        message_id=f"<{mid}@x.org>", kind="reply", email=lead.email, source="webhook",
        campaign_id=cid, lead_id=lead.lead_id, step=1, subject="Re: hello", text=text,
        matched_by="message_id" if verified else "address", verified=verified,
        headers={"Date": "Mon, 7 Dec 2026 10:00:00 +0000", "Auto-Submitted": "no"})
    assert new
    return reply_id


async def test_the_desk_keeps_the_headers_the_classifier_reads(backend: Backend) -> None:
    await new_campaign(backend.store, "c1")
    rid = await _reply(backend, "c1", 0, "h1")
    row = await backend.store.get_reply(rid)
    assert row is not None
    assert row.headers == {"Auto-Submitted": "no", "Date": "Mon, 7 Dec 2026 10:00:00 +0000"}
    assert (row.snooze_until, row.done_at, row.intent_by) == (None, None, None)


async def test_an_answer_is_drafted_edited_claimed_once_and_then_frozen(backend: Backend) -> None:
    store = backend.store
    await new_campaign(store, "c1")
    rid = await _reply(backend, "c1", 0, "a1")
    assert await store.get_reply_answer(rid) is None
    assert await store.claim_answer_send(rid, by="maria") is None  # nothing drafted yet

    await store.save_reply_answer(rid, subject="Re: hello", body="Draft 1", by="copywriter",
                                  drafted=True)
    await store.save_reply_answer(rid, subject="Re: hello", body="Draft 2", by="copywriter",
                                  drafted=True)  # a re-run's draft replaces the agent's own
    answer = await store.get_reply_answer(rid)
    assert answer is not None
    assert (answer.status, answer.body, answer.drafted_by, answer.edited_by) == (
        "drafted", "Draft 2", "copywriter", None)
    assert answer.campaign_id == "c1" and answer.lead_id == test_store.leads_for("c1")[0].lead_id

    await store.save_reply_answer(rid, subject="Re: hello", body="Edited", by="maria")
    await store.save_reply_answer(rid, subject="Re: hello", body="Draft 3", by="copywriter",
                                  drafted=True)  # the person's edit is kept
    answer = await store.get_reply_answer(rid)
    assert answer is not None and (answer.body, answer.edited_by) == ("Edited", "maria")

    claims = await asyncio.gather(*(store.claim_answer_send(rid, by=f"r{i}") for i in range(4)))
    won = [c for c in claims if c is not None]
    assert len(won) == 1 and won[0].status == "sending" and won[0].body == "Edited"
    with pytest.raises(AnswerConflict):
        await store.save_reply_answer(rid, subject="x", body="too late", by="maria")
    assert await store.release_answer_send(rid)  # a send that failed: drafted again
    assert (await store.claim_answer_send(rid, by="maria")) is not None

    await store.mark_answer_sent(rid, message_id="<ans@x.org>", by="maria")
    await store.mark_answer_sent(rid, message_id="<other@x.org>", by="bo")  # idempotent
    answer = await store.get_reply_answer(rid)
    assert answer is not None
    assert (answer.status, answer.message_id, answer.sent_by) == ("sent", "<ans@x.org>", "maria")
    assert answer.sent_at is not None
    assert await store.claim_answer_send(rid, by="maria") is None
    assert not await store.release_answer_send(rid)
    with pytest.raises(AnswerConflict):
        await store.save_reply_answer(rid, subject="x", body="y", by="copywriter", drafted=True)
    with pytest.raises(StoreError):
        await store.save_reply_answer("rpl_nope", subject="x", body="y", by="maria")


async def test_a_referral_is_recorded_once_per_reply_and_contact(backend: Backend) -> None:
    store = backend.store
    await new_campaign(store, "c1")
    await new_campaign(store, "c2")
    r1 = await _reply(backend, "c1", 0, "ref1")
    r2 = await _reply(backend, "c2", 1, "ref2")
    first = await store.add_suggested_lead(campaign_id="c1", reply_id=r1,
                                           referred_by="ana@example.com", name="Maria Lopez",
                                           email=" Maria@Example.com ")
    again = await store.add_suggested_lead(campaign_id="c1", reply_id=r1,
                                           referred_by="ana@example.com", name="Maria Lopez",
                                           email="maria@example.com")
    assert first[1] and again == (first[0], False)
    await store.add_suggested_lead(campaign_id="c2", reply_id=r2, referred_by="bo@example.org",
                                   name="Tom", email=None)
    every = await store.list_suggested_leads()
    assert len(every) == 2 and every[0].created_at >= every[1].created_at
    [maria] = await store.list_suggested_leads("c1")
    assert (maria.name, maria.email, maria.referred_by, maria.reply_id, maria.added_campaign_id
            ) == ("Maria Lopez", "maria@example.com", "ana@example.com", r1, None)
    assert await store.mark_suggested_lead_added(maria.id, "c3")
    assert [s.added_campaign_id for s in await store.list_suggested_leads("c1")] == ["c3"]
    assert [s.name for s in await store.list_suggested_leads("c2")] == ["Tom"]


async def test_the_inbox_lists_the_replies_that_need_a_person(backend: Backend) -> None:
    store = backend.store
    await new_campaign(store, "c1")
    await new_campaign(store, "c2")
    now = datetime.now(UTC)
    keen = await _reply(backend, "c1", 0, "i1", text="Yes, tell me more " + "x" * 900)
    no = await _reply(backend, "c1", 1, "i2")
    later = await _reply(backend, "c1", 2, "i3")
    due = await _reply(backend, "c1", 3, "i4")
    unsure = await _reply(backend, "c1", 4, "i5", verified=False)
    other = await _reply(backend, "c2", 0, "i6")
    await store.record_reply_intent(keen, "interested", 0.92, "stopped")
    await store.record_reply_intent(no, "not_interested", 0.9, "stopped")
    await store.record_reply_intent(later, "not_now", 0.8, "snoozed")
    await store.snooze_reply(later, now + timedelta(days=3))
    await store.record_reply_intent(due, "not_now", 0.8, "snoozed")
    await store.snooze_reply(due, now - timedelta(minutes=1))
    await store.record_reply_intent(unsure, "interested", 0.9, "awaiting_confirmation")
    await store.record_reply_intent(other, "question", 0.9, "stopped")
    await store.save_reply_answer(keen, subject="Re: hello", body="Happy to.", by="copywriter",
                                  drafted=True)

    items = await store.inbox(campaign_id=None, intents=None, now=now)
    assert [i.reply_id for i in items] == [other, unsure, due, keen]  # newest first
    assert {i.reply_id: i.answer.status for i in items} == {
        other: "none", unsure: "none", due: "none", keen: "drafted"}
    first = items[-1]
    assert (first.intent, first.confidence, first.action, first.verified, first.campaign_id) == (
        "interested", 0.92, "stopped", True, "c1")
    assert first.answer.body == "Happy to." and len(first.excerpt) == 500
    assert not items[1].verified
    assert [i.reply_id for i in await store.inbox(campaign_id="c1", intents=["interested"],
                                                  now=now)] == [unsure, keen]
    assert [i.reply_id for i in await store.inbox(campaign_id="c2", intents=None,
                                                  now=now)] == [other]
    # days later, the other snoozed one is due too
    later_items = await store.inbox(campaign_id="c1", intents=None, now=now + timedelta(days=4))
    assert later in [i.reply_id for i in later_items]

    assert await store.mark_reply_done(keen, by="maria")
    row = await store.get_reply(keen)
    assert row is not None and row.done_by == "maria" and row.done_at is not None
    assert keen not in [i.reply_id for i in await store.inbox(campaign_id=None, intents=None,
                                                               now=now)]
    # a person reads "not interested" as a question: listed again, with the person named
    assert await store.set_reply_intent_by_person(no, "question", by="maria")
    row = await store.get_reply(no)
    assert row is not None and (row.intent, row.intent_by, row.action) == (
        "question", "maria", None)
    assert no in [i.reply_id for i in await store.inbox(campaign_id=None, intents=None, now=now)]
    assert not await store.mark_reply_done("rpl_nope", by="maria")
    assert not await store.snooze_reply("rpl_nope", now)


async def test_forget_takes_the_answers_and_suggestions_with_the_replies(backend: Backend
                                                                         ) -> None:
    store = backend.store
    await new_campaign(store, "c1")
    rid = await _reply(backend, "c1", 0, "f1")
    await store.save_reply_answer(rid, subject="Re: hello", body="Hi Ana", by="copywriter",
                                  drafted=True)
    await store.add_suggested_lead(campaign_id="c1", reply_id=rid, referred_by="ana@example.com",
                                   name="Maria", email="maria@example.com")
    bo_reply = await _reply(backend, "c1", 1, "f2")
    await store.add_suggested_lead(campaign_id="c1", reply_id=bo_reply,
                                   referred_by="bo@example.org", name="Cy",
                                   email="cy@example.net")
    await store.forget("ana@example.com")
    assert await store.get_reply_answer(rid) is None
    assert [s.email for s in await store.list_suggested_leads()] == ["cy@example.net"]
    assert await backend.rows("reply_answers") == 0
    # The person a reply named asks to be forgotten: the suggestion goes.
    result = await store.forget("Cy@Example.net")
    assert result["suggested_leads"] == 1
    assert await store.list_suggested_leads() == []


async def test_an_out_of_office_moves_the_open_step_later_and_stops_nothing(backend: Backend
                                                                            ) -> None:
    store = backend.store
    ana, bo = (await new_campaign(store, "c1"))[:2]
    due = datetime(2027, 1, 9, 9, 0, tzinfo=UTC)
    await store.schedule_step("c1", ana.lead_id, 2, due)
    back = datetime(2027, 1, 13, 0, 0, tzinfo=UTC)
    assert await store.move_open_step("c1", ana.lead_id, back)
    assert not await store.move_open_step("c1", ana.lead_id, due)  # never earlier
    assert not await store.move_open_step("c1", bo.lead_id, back)  # nothing scheduled
    row = await store.get_step("c1", ana.lead_id, 2)
    assert row is not None and row.due_at == back.isoformat(timespec="microseconds")
    await store.set_step_status("c1", ana.lead_id, 2, "sent")
    assert not await store.move_open_step("c1", ana.lead_id, back + timedelta(days=1))

    rid = await _reply(backend, "c1", 0, "ooo1", text="I am out of office until 12 January")
    assert await store.lead_replied("c1", ana.lead_id)  # not read yet: a person's reply
    await store.record_reply_intent(rid, "out_of_office", 0.95, "moved")
    assert not await store.lead_replied("c1", ana.lead_id)  # an out-of-office stops nothing
    await store.record_reply_intent(rid, "not_interested", 0.95, "stopped")
    assert await store.lead_replied("c1", ana.lead_id)
