"""The inbox over real HTTP (issue 27): list and filter, edit the answer, send it twice and
get one message, mark done; who may call; the answers that cannot go.

The campaign runs on a time-skipping server with the real delivery agent over SMTP to
aiosmtpd (tests/fakes/smtp_server.py): step 1 reaches the server, the lead's reply comes in
through the signed inbound webhook, and the answer goes through `AnswerWorkflow` and
`DeliveryAgent.send_answer` to the same server. The reply's reading and its drafted answer
are written to the store as the reply action would write them (`seed_answer`).
"""

from __future__ import annotations

import asyncio
import importlib.util
from email.utils import make_msgid
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from campaign_core.answers import answer_key, answer_workflow_id
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.manager import CampaignManager
from starter.review_auth import Reviewers
from tests.api.test_api import AUTH, TOKEN, serve, signed
from tests.fakes.doubles import fast_agents
from tests.fakes.smtp_server import Received, SmtpSink, smtp_server
from tests.workflows.test_history_holds_no_personal_data import readable
from tests.workflows.test_sequences import started, until

ANA = {"email": "ana@northwind.example", "first_name": "Ana", "company": "Northwind"}
BO = {"email": "bo@ledgerly.example", "first_name": "Bo", "company": "Ledgerly"}
DRAFTED = "Hi Ana,\n\nGlad to hear it. Tuesday at 10:00 works for us.\n\nBest"
EDITED = "Hi Ana,\n\nTuesday at 10:00 it is; I will send an invitation.\n\nBest, Rita"


def drafting_only(store: SqliteStore) -> dict[str, Any]:
    """The doubles of the drafting agents; delivery is the real agent (over SMTP)."""
    agents = fast_agents(store)
    agents.pop("deliver_message")
    return agents


@pytest.fixture
def smtp() -> Any:
    with smtp_server() as served:
        yield served


@pytest.fixture
def inbox_settings(settings: Settings, smtp: tuple[SmtpSink, str]) -> Settings:
    settings.api_token = SecretStr(TOKEN)
    from tests.fakes.webhook_signing import INBOUND_SECRET

    settings.webhook_secret = SecretStr(INBOUND_SECRET)
    settings.smtp_url = SecretStr(smtp[1])
    settings.postal_address = "Sender Inc., 1 Main St, Springfield, IL 62701, USA"
    settings.mail_from = "Rita <rita@sender.example>"
    return settings


def to(sink: SmtpSink, address: str) -> list[Received]:
    with sink.lock:
        return [m for m in sink.messages if m.rcpt_tos == [address]]


async def reply_by_webhook(api: httpx.AsyncClient, ours: Received, text: str) -> tuple[str, str]:
    """The lead answers our message through the signed inbound webhook: (reply_id, their
    Message-ID)."""
    lead = ours.rcpt_tos[0]
    mid = make_msgid(domain=lead.rpartition("@")[2])
    raw, headers = signed({"from": lead, "to": "rita@sender.example",
                           "subject": "Re: " + str(ours.message["Subject"]),
                           "message_id": mid, "in_reply_to": str(ours.message["Message-ID"]),
                           "text": text})
    answer = await api.post("/webhooks/inbound", content=raw, headers=headers)
    assert answer.status_code == 200, answer.text
    [result] = answer.json()
    [match] = result["matches"]
    return match["reply_id"], mid


async def seed_answer(store: SqliteStore, reply_id: str, intent: str = "interested", *,
                      acted_on: bool = True) -> None:
    """What the reply action writes for a positive reply: its intent and a drafted answer.
    Where the reply action runs (workflows/reply_actions.py), it reads the reply first (the
    offline rules make these `unclear`): this waits for that reading, then writes over it
    (`acted_on` False: a reply written to the store directly, which no action reads)."""
    if acted_on and importlib.util.find_spec("workflows.reply_actions") is not None:
        async def read() -> bool:
            row = await store.get_reply(reply_id)
            return row is not None and row.action is not None

        await until(read, "the reply read by the reply action", 30)
    assert await store.record_reply_intent(reply_id, intent, 0.93, "answer_drafted")
    await store.save_reply_answer(reply_id, subject="Re: s", body=DRAFTED, by="copywriter",
                                  drafted=True)


async def test_inbox_lists_filters_edits_and_sends_an_answer_once(
        ts_env: WorkflowEnvironment, inbox_settings: Settings, store: SqliteStore, prefix: str,
        run_workers: Any, smtp: tuple[SmtpSink, str]) -> None:
    sink = smtp[0]
    async with run_workers(ts_env.client, overrides=drafting_only(store)):
        mgr, (ana, _) = await started(ts_env, inbox_settings, store, prefix, "c-inbox",
                                       [ANA, BO], channel="smtp")
        await until(lambda: asyncio.sleep(0, len(sink.messages) == 2), "step 1 to both")
        async with serve(mgr) as api:
            api.headers.update(AUTH)
            ours = to(sink, ANA["email"])[0]
            reply_id, their_id = await reply_by_webhook(api, ours, "Yes, Tuesday works.")
            await seed_answer(store, reply_id)

            # Listed, and filtered by intent and campaign.
            listed = (await api.get("/inbox")).json()
            [item] = [i for i in listed if i["reply_id"] == reply_id]
            assert (item["campaign_id"], item["lead_id"], item["email"], item["intent"]) == (
                "c-inbox", ana, ANA["email"], "interested")
            assert item["answer"] == {"status": "drafted", "subject": "Re: s", "body": DRAFTED}
            assert [i["reply_id"] for i in (await api.get(
                "/inbox", params={"intent": "interested", "campaign": "c-inbox"})).json()] == [
                reply_id]
            assert (await api.get("/inbox", params={"intent": "question"})).json() == []
            bad = await api.get("/inbox", params={"intent": "keen"})
            assert bad.status_code == 422 and "intent" in bad.text, bad.text
            unknown = await api.get("/inbox", params={"campaign": "nope"})
            assert unknown.status_code == 404, unknown.text

            # An edit is saved, not sent.
            saved = await api.post(f"/inbox/{reply_id}/answer",
                                   json={"body": EDITED, "by": "rita"})
            assert saved.status_code == 200, saved.text
            assert (saved.json()["status"], saved.json()["body"]) == ("drafted", EDITED)
            assert len(to(sink, ANA["email"])) == 1, "saving sends nothing"

            # Send, twice at once and once more: one message.
            first, second = await asyncio.gather(*(
                api.post(f"/inbox/{reply_id}/answer", json={"send": True, "by": "rita"})
                for _ in range(2)))
            assert first.status_code == second.status_code == 200, (first.text, second.text)
            statuses = sorted(r.json()["status"] for r in (first, second))
            assert "sent" in statuses and statuses != ["sent", "sent"], statuses
            again = await api.post(f"/inbox/{reply_id}/answer", json={"send": True})
            assert again.json()["status"] == "already_sent", again.text
            same = await api.post(f"/inbox/{reply_id}/answer", json={"send": True,
                                                                     "body": EDITED})
            assert same.json()["status"] == "already_sent", same.text  # the form pressed again
            other = await api.post(f"/inbox/{reply_id}/answer", json={"send": True,
                                                                      "body": "Other text"})
            assert other.status_code == 409 and "not sent" in other.text, other.text
            await until(lambda: asyncio.sleep(0, len(to(sink, ANA["email"])) >= 2),
                        "the answer at the SMTP server")
            await asyncio.sleep(0.5)  # a second message would arrive now
            answers = to(sink, ANA["email"])[1:]
            assert len(answers) == 1, [m.message["Message-ID"] for m in answers]
            msg = answers[0].message
            assert msg["In-Reply-To"] == their_id
            assert msg["References"].split() == [str(ours.message["Message-ID"]), their_id]
            assert msg["Subject"] == "Re: s"
            assert msg["From"] == "Rita <rita@sender.example>"
            assert msg["Message-ID"] == f"<{answer_key(reply_id)}@sender.example>"
            text = msg.get_body(("plain",))
            assert text is not None and "Tuesday at 10:00 it is" in text.get_content()
            assert first.json()["message_id"] == msg["Message-ID"] or \
                second.json()["message_id"] == msg["Message-ID"]

            # Sent: frozen, and the audit names who sent it.
            late = await api.post(f"/inbox/{reply_id}/answer", json={"body": "too late"})
            assert late.status_code == 409, late.text
            row = await store.get_reply_answer(reply_id)
            assert row is not None and (row.status, row.sent_by) == ("sent", "rita")
            audit = (await api.get("/campaigns/c-inbox/audit", params={"lead_id": ana})).json()
            sent_records = [r for e in audit for r in e["envelope"]["records"]
                            if r["kind"] == "answer_sent"]
            assert [(r["data"]["by"], r["data"]["message_id"]) for r in sent_records] == [
                ("rita", msg["Message-ID"])]

            # History carries the reply's id only: no address, no text, no name.
            history = readable((await ts_env.client.get_workflow_handle(
                answer_workflow_id(reply_id)).fetch_history()).to_json())
            assert reply_id in history
            for private in (ANA["email"], "Tuesday at 10:00", "rita", "Ana"):
                assert private not in history, private

            # Done: off the inbox.
            done = await api.post(f"/inbox/{reply_id}/done", json={"by": "rita"})
            assert done.status_code == 200 and done.json()["done"] is True, done.text
            assert reply_id not in [i["reply_id"] for i in (await api.get("/inbox")).json()]

            # A suppressed address gets no answer.
            bo_reply, _ = await reply_by_webhook(api, to(sink, BO["email"])[0], "Tell me more")
            await seed_answer(store, bo_reply, "question")
            await store.add_suppressions([BO["email"]], "asked by phone", source="manual")
            refused = await api.post(f"/inbox/{bo_reply}/answer", json={"send": True})
            assert refused.status_code == 409 and "suppression" in refused.text, refused.text
            assert len(to(sink, BO["email"])) == 1
            assert (await store.get_reply_answer(bo_reply)).status == "drafted"  # type: ignore[union-attr]

            # A reply matched by an address nobody vouched for: no answer until confirmed.
            doubtful, _ = await store.record_reply(
                message_id="<doubt@northwind.example>", kind="reply", email=ANA["email"],
                source="webhook", campaign_id="c-inbox", lead_id=ana, subject="Re: s",
                text="Interested!", matched_by="address", verified=False)
            await seed_answer(store, doubtful, acted_on=False)
            unverified = await api.post(f"/inbox/{doubtful}/answer", json={"send": True})
            assert unverified.status_code == 409 and "vouched" in unverified.text, unverified.text

            missing = await api.post("/inbox/rpl_nope/answer", json={"send": True})
            assert missing.status_code == 404, missing.text
            extra = await api.post(f"/inbox/{bo_reply}/answer", json={"send": True, "cc": "x"})
            assert extra.status_code == 422, extra.text


async def test_who_may_use_the_inbox_routes(
        ts_env: WorkflowEnvironment, inbox_settings: Settings, store: SqliteStore, prefix: str
        ) -> None:
    """The service token, or a reviewer's token (the reviewer is who acts); nobody else."""
    mgr = CampaignManager(inbox_settings, client=ts_env.client, store=store, queue_prefix=prefix,
                          use_search_attributes=False)
    token = await Reviewers(store).add("rita")
    async with serve(mgr) as api:
        assert (await api.get("/inbox")).status_code == 401
        assert (await api.get("/inbox", headers={"Authorization": "Bearer crt_wrong"})
                ).status_code == 401
        assert (await api.post("/inbox/rpl_x/done")).status_code == 401
        reviewer = {"Authorization": f"Bearer {token}"}
        assert (await api.get("/inbox", headers=reviewer)).json() == []
        gone = await api.post("/inbox/rpl_x/done", headers=reviewer)
        assert gone.status_code == 404, gone.text
        # Not every route: the suppression list stays the service token's.
        assert (await api.get("/suppressions", headers=reviewer)).status_code == 403


async def test_a_persons_intent_is_recorded_and_its_action_follows(
        ts_env: WorkflowEnvironment, inbox_settings: Settings, store: SqliteStore, prefix: str,
        run_workers: Any, smtp: tuple[SmtpSink, str]) -> None:
    """The reply action reads "Yes, Tuesday works." as unclear (the offline rules); a person
    says interested: an answer is drafted (the offline writer), never sent; then
    unsubscribe: the address is suppressed."""
    sink = smtp[0]
    async with run_workers(ts_env.client, overrides=drafting_only(store)):
        mgr, (ana,) = await started(ts_env, inbox_settings, store, prefix, "c-intent", [ANA],
                                    channel="smtp")
        await until(lambda: asyncio.sleep(0, len(sink.messages) == 1), "step 1")
        async with serve(mgr) as api:
            api.headers.update(AUTH)
            reply_id, _ = await reply_by_webhook(api, to(sink, ANA["email"])[0],
                                                 "Yes, Tuesday works.")

            async def read() -> bool:
                row = await store.get_reply(reply_id)
                return row is not None and row.action is not None

            await until(read, "the reply action's reading")
            assert (await store.get_reply(reply_id)).intent == "unclear"  # type: ignore[union-attr]

            bad = await api.post(f"/inbox/{reply_id}/intent", json={"intent": "keen"})
            assert bad.status_code == 422 and "intent" in bad.text, bad.text
            changed = await api.post(f"/inbox/{reply_id}/intent",
                                     json={"intent": "interested", "by": "rita"})
            assert changed.status_code == 200, changed.text
            assert changed.json() == {"reply_id": reply_id, "intent": "interested", "by": "rita",
                                      "action_started": True}

            async def drafted() -> bool:
                row = await store.get_reply_answer(reply_id)
                return row is not None and row.status == "drafted" and bool(row.body.strip())

            await until(drafted, "the answer drafted for the new intent")
            [item] = (await api.get("/inbox", params={"intent": "interested"})).json()
            assert (item["reply_id"], item["answer"]["status"]) == (reply_id, "drafted")
            row = await store.get_reply(reply_id)
            assert row is not None and (row.intent, row.intent_by) == ("interested", "rita")
            assert len(sink.messages) == 1, "a drafted answer is never sent by itself"

            unsub = await api.post(f"/inbox/{reply_id}/intent", json={"intent": "unsubscribe"})
            assert unsub.status_code == 200, unsub.text

            async def suppressed() -> bool:
                return await store.is_suppressed(ANA["email"])

            await until(suppressed, "the address suppressed")
        del ana
