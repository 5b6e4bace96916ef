"""What each classified reply does (issue 27, part D), on the time-skipping server.

Campaigns run with the agent doubles of tests/fakes/doubles.py (whose Message-ID of a message
is its message key and whose `deliver_message` runs the real stop check); the reply desk, the
reply action workflow, the classifier (offline rules, or the OpenAI-compatible test server),
the answer writer and the SQLite store are the real ones.

- An out-of-office with a date moves the lead's next step to after it; a second one moves it
  again and stops nothing.
- An unsubscribe in prose suppresses the address for every campaign (source `reply`): the
  person's step in a second campaign is never sent.
- A referral records the named contact as a suggested lead; nothing is sent to them.
- An interested reply (read by the LLM) stops the sequence with reason `interested` and gets
  a drafted answer, never sent by itself; a pause and continue-as-new of the delivery
  between the reply and the answer lose nothing.
- An unverified match changes nothing until a person confirms it.
- A reply delivered twice (webhook and IMAP) is acted on once.
- A person's intent (the inbox's `start_reply_action`) runs that intent's action: a
  question gets an answer from the knowledge base.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from campaign_core.ids import message_key
from campaign_core.inbound import InboundMessage
from campaign_core.intents import ReplyIntent
from campaign_core.models import Stage
from campaign_core.replies import ReplyDesk
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter import inbox as inbox_service
from starter.api.review_pages import _templates
from starter.start_options import EngineTuning
from tests.fakes.doubles import fast_agents
from tests.fakes.llm_server import LLMTestServer
from tests.workflows.test_orchestration import finish
from tests.workflows.test_sequences import DAY, sent_count, started, until
from worker_main import build_workers
from workflows.reply_actions import start_reply_action
from workflows.signals import TemporalCampaignSignals

KB = Path(__file__).resolve().parents[2] / "starter" / "demo_data" / "kb"
ANA = {"email": "ana@northwind.example", "first_name": "Ana", "company": "Northwind"}
BO = {"email": "bo@ledgerly.example", "first_name": "Bo", "company": "Ledgerly"}


def mail(lead_email: str, text: str, *, mid: str, answers: str | None,
         subject: str = "Re: hello") -> InboundMessage:
    return InboundMessage.model_validate({
        "from": lead_email, "to": "replies@ours.test", "subject": subject,
        "message_id": f"<{mid}@mail.example>",
        "in_reply_to": [f"<{answers}>"] if answers else [], "text": text})


async def acted(store: SqliteStore, reply_id: str, what: str = "the reply acted on") -> str:
    """Wait until the reply action recorded its action; that action."""
    async def check() -> bool:
        row = await store.get_reply(reply_id)
        return row is not None and row.action is not None
    await until(check, what)
    row = await store.get_reply(reply_id)
    assert row is not None and row.action is not None
    return row.action


def records(entries: Any, kind: str) -> list[dict[str, Any]]:
    return [r["data"] for e in entries for r in e.envelope["records"] if r["kind"] == kind]




async def test_an_out_of_office_moves_the_next_step_and_a_second_stops_nothing(
        ts_env: WorkflowEnvironment, settings: Settings, store: SqliteStore, prefix: str,
        run_workers: Any) -> None:
    sent: list[str] = []
    async with run_workers(ts_env.client, overrides=fast_agents(store, sent)):
        _, (ana, bo) = await started(ts_env, settings, store, prefix, "c-ooo", [ANA, BO],
                                     follow_ups=["1d", "1d"])
        await sent_count(store, "c-ooo", 2)
        desk = ReplyDesk(store, TemporalCampaignSignals(ts_env.client), source="webhook")
        now = await ts_env.get_current_time()
        back = (now + timedelta(days=4)).date()
        got = await desk.process(mail(ANA["email"], (
            "Thank you for your email. I am out of the office until "
            f"{back:%d %B %Y} with limited access to email."), mid="ooo1",
            answers=message_key("c-ooo", ana)))
        first = got.matches[0]
        assert first.notified and first.verified
        assert await acted(store, first.reply_id) == "moved"
        row = await store.get_reply(first.reply_id)
        assert row is not None and row.intent == "out_of_office"

        async def moved_past(day: Any) -> bool:
            step = await store.get_step("c-ooo", ana, 2)
            return step is not None and step.status == "scheduled" and (
                datetime.fromisoformat(step.due_at).date() > day)
        await until(lambda: moved_past(back), "ana's step 2 moved after her return")

        # A second out-of-office, later: moved again, nothing stopped.
        later = back + timedelta(days=3)
        second = (await desk.process(mail(ANA["email"], (
            f"Automatic reply. I am out of the office until {later:%d %B %Y}."),
            mid="ooo2", answers=message_key("c-ooo", ana),
            subject="Automatic reply: hello"))).matches[0]
        assert await acted(store, second.reply_id, "the second out-of-office") == "moved"
        await until(lambda: moved_past(later), "ana's step 2 moved again")

        # Bo's step 2 goes out a day later; Ana's waits for her return.
        await ts_env.sleep(DAY + timedelta(hours=2))
        await sent_count(store, "c-ooo", 3)
        assert f"{bo}#2" in sent and f"{ana}#2" not in sent
        step = await store.get_step("c-ooo", ana, 2)
        assert step is not None and step.status == "scheduled"
        final = await finish(ts_env, "c-ooo", DAY)
    assert final.stage is Stage.COMPLETED
    assert Counter(sent) == Counter([ana, bo, f"{bo}#2", f"{bo}#3", f"{ana}#2", f"{ana}#3"])
    report = {(r.lead_id, r.step): (r.delivery_status, r.stop_reason)
              for r in await store.report("c-ooo")}
    assert report[(ana, 3)] == ("sent", None)
    assert (await store.counts("c-ooo")).stopped == 0
    moves = records(await store.audit("c-ooo", ana), "sequence")
    assert [m["status"] for m in moves] == ["moved", "moved"]


async def test_an_unsubscribe_in_prose_suppresses_the_address_for_a_second_campaign(
        ts_env: WorkflowEnvironment, settings: Settings, store: SqliteStore, prefix: str,
        run_workers: Any) -> None:
    sent: list[str] = []
    async with run_workers(ts_env.client, overrides=fast_agents(store, sent)):
        _, (ana_a, _bo) = await started(ts_env, settings, store, prefix, "c-u1", [ANA, BO],
                                        follow_ups=["1d"])
        _, (ana_b,) = await started(ts_env, settings, store, prefix, "c-u2", [ANA],
                                    follow_ups=["1d"], allow_overlap=True)
        await sent_count(store, "c-u1", 2)
        await sent_count(store, "c-u2", 1)
        desk = ReplyDesk(store, TemporalCampaignSignals(ts_env.client), source="imap")
        got = (await desk.process(mail(ANA["email"], (
            "Hi, thanks for the note. We are fully set for this year and honestly I get too "
            "many of these. Please take me off your list, I do not want these emails.\n\n"
            "Ana Silva | Northwind | +44 20 7946 0958"), mid="unsub",
            answers=message_key("c-u1", ana_a)))).matches[0]
        assert got.elsewhere == ["c-u2"]
        assert await acted(store, got.reply_id) == "suppressed"
        entry = await store.get_suppression(ANA["email"])
        assert entry is not None and entry.source == "reply"
        final_a = await finish(ts_env, "c-u1", DAY)
        final_b = await finish(ts_env, "c-u2", DAY)
    assert final_a.stage is final_b.stage is Stage.COMPLETED
    assert f"{ana_a}#2" not in sent and f"{ana_b}#2" not in sent
    report = {(cid, r.lead_id, r.step): (r.delivery_status, r.stop_reason)
              for cid in ("c-u1", "c-u2") for r in await store.report(cid)}
    assert report[("c-u1", ana_a, 2)] == ("stopped", "unsubscribe")
    assert report[("c-u2", ana_b, 2)][0] == "stopped"
    # The audit names the message that asked.
    [action] = records(await store.audit("c-u1", ana_a), "reply_action")
    assert action["status"] == "suppressed" and action["message_id"] == "unsub@mail.example"
    assert action["reply_id"] == got.reply_id


async def test_a_referral_creates_a_suggested_lead_and_sends_nothing_to_it(
        ts_env: WorkflowEnvironment, settings: Settings, store: SqliteStore, prefix: str,
        run_workers: Any) -> None:
    sent: list[str] = []
    async with run_workers(ts_env.client, overrides=fast_agents(store, sent)):
        mgr, (ana, bo) = await started(ts_env, settings, store, prefix, "c-ref", [ANA, BO],
                                       follow_ups=["1d"])
        await sent_count(store, "c-ref", 2)
        desk = ReplyDesk(store, TemporalCampaignSignals(ts_env.client), source="webhook")
        got = (await desk.process(mail(ANA["email"], (
            "Talk to Maria Lopez instead, maria.lopez@northwind.example, she runs "
            "purchasing."), mid="ref", answers=message_key("c-ref", ana)))).matches[0]
        assert await acted(store, got.reply_id) == "suggested"
        final = await finish(ts_env, "c-ref", DAY)
    assert final.stage is Stage.COMPLETED
    [maria] = await store.list_suggested_leads("c-ref")
    assert (maria.email, maria.referred_by, maria.reply_id, maria.added_campaign_id) == (
        "maria.lopez@northwind.example", ANA["email"], got.reply_id, None)
    assert Counter(sent) == Counter([ana, bo, f"{bo}#2"])  # nothing to Maria, ana stopped
    assert await store.find_leads_by_email(maria.email or "", ("delivering", "completed")) == []
    report = {(r.lead_id, r.step): r.stop_reason for r in await store.report("c-ref")}
    assert report[(ana, 2)] == "referral"
    assert [i.reply_id for i in await store.inbox(campaign_id="c-ref", intents=["referral"],
                                                  now=datetime.now(UTC))] == [got.reply_id]
    # The inbox names the contact the referral suggested, in its JSON and on its page.
    [item] = await inbox_service.inbox(mgr, campaign_id="c-ref", intents=["referral"])
    assert item.suggested_lead is not None and item.suggested_lead.email == maria.email
    page = _templates.get_template("review/inbox.html").render(
        viewer="rita", items=[item], intents=[], campaigns=[], filter_intent="",
        filter_campaign="", when=str, message=None)
    named = f"{maria.name} " if maria.name else ""  # the rules read the address, not always a name
    assert f"suggests {named}&lt;maria.lopez@northwind.example&gt;: nothing is sent" in page


async def test_an_interested_reply_gets_a_drafted_answer_across_a_pause_and_continue_as_new(
        ts_env: WorkflowEnvironment, llm_settings: Settings, store: SqliteStore, prefix: str,
        llm: LLMTestServer) -> None:
    sent: list[str] = []
    workers = build_workers(ts_env.client, store, llm_settings, prefix=prefix,
                            overrides=fast_agents(store, sent))
    # One send per delivery run: the delivery continues as new after each.
    tuning = EngineTuning(leads_per_run=1)
    async with contextlib.AsyncExitStack() as stack:
        for w in workers:
            await stack.enter_async_context(w)
        mgr, (ana, bo) = await started(ts_env, llm_settings, store, prefix, "c-yes", [ANA, BO],
                                       tuning=tuning, follow_ups=["1d"],
                                       brief="Offer a 20-minute call about invoice automation.")
        await sent_count(store, "c-yes", 2)
        await mgr.control("c-yes", "pause")
        desk = ReplyDesk(store, TemporalCampaignSignals(ts_env.client), source="webhook")
        got = (await desk.process(mail(ANA["email"], (
            "Sounds good, this could help our finance team."), mid="yes",
            answers=message_key("c-yes", ana)))).matches[0]

        async def drafted() -> bool:
            return await store.get_reply_answer(got.reply_id) is not None
        await until(drafted, "the answer drafted while the campaign is paused")
        await mgr.control("c-yes", "resume")
        final = await finish(ts_env, "c-yes", DAY)
    assert final.stage is Stage.COMPLETED
    row = await store.get_reply(got.reply_id)
    assert row is not None and (row.intent, row.action) == ("interested", "answer_drafted")
    answer = await store.get_reply_answer(got.reply_id)
    assert answer is not None and answer.status == "drafted" and answer.sent_at is None
    assert answer.subject == "Re: hello" and answer.body.strip()
    assert answer.drafted_by == "test-model:reply_answer_v1"
    assert Counter(sent) == Counter([ana, bo, f"{bo}#2"])  # the answer is never sent by itself
    report = {(r.lead_id, r.step): r.stop_reason for r in await store.report("c-yes")}
    assert report[(ana, 2)] == "interested"
    [item] = await store.inbox(campaign_id="c-yes", intents=None, now=datetime.now(UTC))
    assert item.reply_id == got.reply_id and item.answer.status == "drafted"


async def test_an_unverified_match_changes_nothing_until_confirmed(
        ts_env: WorkflowEnvironment, settings: Settings, store: SqliteStore, prefix: str,
        run_workers: Any) -> None:
    sent: list[str] = []
    async with run_workers(ts_env.client, overrides=fast_agents(store, sent)):
        _, (ana, _bo) = await started(ts_env, settings, store, prefix, "c-unv", [ANA, BO],
                                      follow_ups=["1d"])
        await sent_count(store, "c-unv", 2)
        desk = ReplyDesk(store, TemporalCampaignSignals(ts_env.client), source="webhook")
        got = (await desk.process(mail(ANA["email"], "Please remove me from your list.",
                                       mid="spoof", answers=None))).matches[0]
        assert not got.verified and not got.notified
        assert await acted(store, got.reply_id) == "awaiting_confirmation"
        assert await store.get_suppression(ANA["email"]) is None
        step = await store.get_step("c-unv", ana, 2)
        assert step is not None and step.status == "scheduled"
        assert [i.reply_id for i in await store.inbox(campaign_id="c-unv", intents=None,
                                                      now=datetime.now(UTC))] == [got.reply_id]

        confirmed = await desk.confirm(got.reply_id, by="maria")
        assert confirmed.confirmed and confirmed.notified

        async def suppressed() -> bool:
            row = await store.get_reply(got.reply_id)
            return row is not None and row.action == "suppressed"
        await until(suppressed, "the confirmed unsubscribe acted on")
        entry = await store.get_suppression(ANA["email"])
        assert entry is not None and entry.source == "reply"
        final = await finish(ts_env, "c-unv", DAY)
    assert final.stage is Stage.COMPLETED
    assert f"{ana}#2" not in sent


async def test_a_reply_delivered_twice_is_acted_on_once(
        ts_env: WorkflowEnvironment, settings: Settings, store: SqliteStore, prefix: str,
        run_workers: Any) -> None:
    sent: list[str] = []
    async with run_workers(ts_env.client, overrides=fast_agents(store, sent)):
        _, (ana, _bo) = await started(ts_env, settings, store, prefix, "c-two", [ANA, BO],
                                      follow_ups=["1d"])
        await sent_count(store, "c-two", 2)
        message = mail(ANA["email"], "Please unsubscribe me from these emails.", mid="twice",
                       answers=message_key("c-two", ana))
        by_webhook = ReplyDesk(store, TemporalCampaignSignals(ts_env.client), source="webhook")
        by_imap = ReplyDesk(store, TemporalCampaignSignals(ts_env.client), source="imap")
        first, second = await asyncio.gather(by_webhook.process(message),
                                             by_imap.process(message))
        ids = {first.matches[0].reply_id, second.matches[0].reply_id}
        assert len(ids) == 1
        (reply_id,) = ids
        assert await acted(store, reply_id) == "suppressed"
        again = await by_webhook.process(message)  # a relay's retry, later
        assert again.duplicate
        final = await finish(ts_env, "c-two", DAY)
    assert final.stage is Stage.COMPLETED
    audit = await store.audit("c-two", ana)
    assert len(records(audit, "reply_action")) == 1
    assert len(records(audit, "reply_intent")) == 1
    assert len([s for s in records(audit, "sequence_stop") if s["stop_reason"] == "unsubscribe"]
               ) == 1



async def test_a_persons_intent_runs_its_action_and_a_question_is_answered_from_the_kb(
        ts_env: WorkflowEnvironment, settings: Settings, store: SqliteStore, prefix: str,
        run_workers: Any) -> None:
    """The offline rules leave a question to a person (`unclear`: stopped, no answer); the
    person reads it as a question in the inbox, which starts its action: the offline
    writer answers from the knowledge base searched for the reply's words."""
    sent: list[str] = []
    async with run_workers(ts_env.client, overrides=fast_agents(store, sent)):
        _, (ana, _bo) = await started(ts_env, settings, store, prefix, "c-q", [ANA, BO],
                                      follow_ups=["1d"], kb=str(KB))
        await sent_count(store, "c-q", 2)
        desk = ReplyDesk(store, TemporalCampaignSignals(ts_env.client), source="webhook")
        got = (await desk.process(mail(ANA["email"], (
            "Which CRM integrations do you support, and where is our data stored?"),
            mid="q", answers=message_key("c-q", ana)))).matches[0]
        assert await acted(store, got.reply_id) == "stopped"
        assert await store.get_reply_answer(got.reply_id) is None
        assert await store.set_reply_intent_by_person(got.reply_id, "question", by="maria")
        assert await start_reply_action(ts_env.client, got.reply_id, ReplyIntent.QUESTION,
                                        campaign_id="c-q", by="maria")

        async def answered() -> bool:
            row = await store.get_reply(got.reply_id)
            return row is not None and row.action == "answer_drafted"
        await until(answered, "the person's question answered")
        final = await finish(ts_env, "c-q", DAY)
    assert final.stage is Stage.COMPLETED
    row = await store.get_reply(got.reply_id)
    assert row is not None and (row.intent, row.intent_by) == ("question", "maria")
    answer = await store.get_reply_answer(got.reply_id)
    assert answer is not None and answer.drafted_by == "offline-answer-v1"
    assert answer.body.startswith("Hi Ana,") and "question" in answer.body
    [drafted] = [d for d in records(await store.audit("c-q", ana), "reply_answer")
                 if d["status"] == "drafted"]
    assert drafted["passages"]  # the knowledge base, searched for the reply's words
    cited = [c["passage_id"] for c in drafted["citations"]]
    assert cited and set(cited) <= set(drafted["passages"])
    kb_text = " ".join(f.read_text() for f in KB.iterdir())
    assert any(c["claim"] in kb_text for c in drafted["citations"])
    actions = records(await store.audit("c-q", ana), "reply_action")
    assert [(a["intent"], a["by"]) for a in actions] == [("unclear", "classifier"),
                                                         ("question", "maria")]
