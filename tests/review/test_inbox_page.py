"""Issue 27's "Done when" for the inbox, as a reviewer does it on `campaign dev`.

`campaign dev` runs as a real subprocess (tests/fakes/dev_process.py) and delivers over SMTP
to aiosmtpd (tests/fakes/smtp_server.py). A campaign's first message reaches Ana; she
answers through the signed inbound webhook, in the thread. Her reply is read as
`interested` and an answer is drafted (written to the dev stack's store as the reply action
writes them: `seed_answer`). The reviewer signs in with the dev stack's one-time link,
opens the inbox, filters it to `interested`, opens Ana's reply (the thread shows our message
and hers), edits the drafted answer and presses Send in two tabs at once, then once more:
the SMTP server receives ONE message, threaded to hers, with the edit.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import httpx
import pytest

from campaign_core.answers import answer_key
from campaign_core.store.sqlite import SqliteStore
from tests.cli.test_cli_e2e import cli, cli_json
from tests.conftest import KB
from tests.fakes import dev_process
from tests.fakes.dev_process import DevProcess
from tests.fakes.smtp_server import Received, SmtpSink, smtp_server
from tests.fakes.webhook_signing import INBOUND_SECRET, signed_headers
from tests.review.test_review_pages import follow

pytestmark = pytest.mark.slow
dev_cli_env = dev_process.dev_cli_env

TOKEN = "inbox-page-e2e-token-0123456789"
ANA = "ana@northwind.example"
BO = "bo@ledgerly.example"
LEADS = f"email,first_name,company\n{ANA},Ana,Northwind Freight\n{BO},Bo,Ledgerly\n"
DRAFTED = "Hi Ana,\n\nGreat to hear. Does Tuesday at 10:00 suit you?\n\nBest"
EDITED = "Hi Ana,\n\nTuesday at 10:00 it is: I will send an invitation today.\n\nBest, Dev"


def to(sink: SmtpSink, address: str) -> list[Received]:
    with sink.lock:
        return [m for m in sink.messages if m.rcpt_tos == [address]]


async def until(check: Any, what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


async def reply_by_webhook(api: httpx.AsyncClient, ours: Received, text: str
                           ) -> tuple[str, str]:
    lead = ours.rcpt_tos[0]
    mid = make_msgid(domain=lead.rpartition("@")[2])
    body = json.dumps({"from": lead, "to": "campaigns@localhost",
                       "subject": "Re: " + str(ours.message["Subject"]), "message_id": mid,
                       "in_reply_to": str(ours.message["Message-ID"]),
                       "references": str(ours.message["Message-ID"]), "text": text}).encode()
    answer = await api.post("/webhooks/inbound", content=body, headers={
        "Content-Type": "application/json", **signed_headers(body)})
    assert answer.status_code == 200, answer.text
    [result] = answer.json()
    [match] = result["matches"]
    return match["reply_id"], mid


async def seed_answer(home: Path, reply_id: str, intent: str, body: str) -> None:
    """What the reply action writes for a positive reply, in the dev stack's store."""
    store = SqliteStore(home / "campaign.db")
    try:
        assert await store.record_reply_intent(reply_id, intent, 0.91, "answer_drafted")
        await store.save_reply_answer(reply_id, subject="", body=body, by="copywriter",
                                      drafted=True)
    finally:
        await store.close()


@pytest.mark.timeout(300)
async def test_a_reviewer_answers_an_interested_reply_from_the_inbox_once(
        dev_cli_env: dict[str, str], home: Path, tmp_path: Path, browser: Any) -> None:
    leads = tmp_path / "leads.csv"
    leads.write_text(LEADS)
    with smtp_server() as (sink, smtp_url):
        env = {**dev_cli_env, "CAMPAIGN_SMTP_URL": smtp_url,
               "CAMPAIGN_POSTAL_ADDRESS": "Sender Inc., 1 Main St, Springfield, IL 62701, USA",
               "CAMPAIGN_WEBHOOK_SECRET": INBOUND_SECRET, "CAMPAIGN_API_TOKEN": TOKEN}
        dev = DevProcess(env, home)
        await dev.start()
        try:
            async with httpx.AsyncClient(base_url=dev.api, timeout=30, headers={
                    "Authorization": f"Bearer {TOKEN}"}) as api:
                await cli_json(env, "start", "--leads", str(leads), "--kb", str(KB),
                               "--brief", "Book a 20-minute call.", "--channel", "smtp",
                               "--id", "inbox-e2e")

                async def awaiting() -> bool:
                    got = await api.get("/campaigns/inbox-e2e")
                    return got.status_code == 200 and got.json()["stage"] == "awaiting_approval"

                await until(awaiting, "the drafts", 120)
                code, _, err = await cli(env, "approve", "inbox-e2e")
                assert code == 0, err
                await until(lambda: bool(to(sink, ANA) and to(sink, BO)), "step 1", 60)
                ours = to(sink, ANA)[0]
                ana_reply, their_id = await reply_by_webhook(
                    api, ours, "Yes, that sounds useful. Can we talk on Tuesday?")
                bo_reply, _ = await reply_by_webhook(api, to(sink, BO)[0], "What does it cost?")
                if importlib.util.find_spec("workflows.reply_actions") is not None:
                    # The reply action reads each reply first (the offline rules: unclear).
                    async def read() -> bool:
                        items = (await api.get("/inbox")).json()
                        return sum(i["action"] is not None for i in items) == 2

                    await until(read, "the replies read by the reply action", 60)
                await seed_answer(home, ana_reply, "interested", DRAFTED)
                await seed_answer(home, bo_reply, "question", "Hi Bo, it costs ...")

                context = await browser.new_context()
                page = await context.new_page()
                await page.goto(dev.sign_in)
                await follow(page, page.get_by_role("button", name="Sign in"))

                # The inbox, filtered to interested: Ana's reply, not Bo's question.
                await page.goto(f"{dev.api}/review/inbox")
                replies = page.get_by_role("table", name="Replies")
                assert {ANA, BO} <= set(await replies.locator("tbody a").all_inner_texts())
                await page.get_by_label("Intent").select_option("interested")
                await follow(page, page.get_by_role("button", name="Filter"))
                assert "intent=interested" in page.url
                assert await replies.locator("tbody a").all_inner_texts() == [ANA]

                # Her reply: the thread (ours and hers), the intent, the drafted answer.
                await follow(page, replies.get_by_role("link", name=ANA))
                reply_url = page.url
                mine = page.get_by_label("Our message")
                assert str(ours.message["Subject"]) in await mine.inner_text()
                assert "Can we talk on Tuesday?" in await page.get_by_label(
                    "Their message").inner_text()
                assert await page.locator("#intent-now").inner_text() == "interested"
                assert await page.get_by_label("Body").input_value() == DRAFTED
                assert await page.get_by_label("Subject").input_value() == (
                    "Re: " + str(ours.message["Subject"]))

                # Edited, then Send pressed in two tabs at once, then again.
                other = await context.new_page()
                await other.goto(reply_url)
                for tab in (page, other):
                    await tab.get_by_label("Body").fill(EDITED)
                await asyncio.gather(
                    follow(page, page.get_by_role("button", name="Send")),
                    follow(other, other.get_by_role("button", name="Send")))
                said = [await tab.get_by_role("status").inner_text() for tab in (page, other)]
                assert "Answer sent." in said, said
                await until(lambda: len(to(sink, ANA)) >= 2, "the answer", 60)
                await other.goto(reply_url)
                assert await other.get_by_role("button", name="Send").count() == 0
                sent_box = await other.get_by_label("Answer sent").inner_text()
                assert "sent by dev" in sent_box and "Tuesday at 10:00 it is" in sent_box

                # Pressed once more (over the API): nothing more is sent.
                again = await api.post(f"/inbox/{ana_reply}/answer", json={"send": True})
                assert again.json()["status"] == "already_sent", again.text
                await asyncio.sleep(1)  # a second message would have arrived by now
        finally:
            code = await dev.stop()
        assert code == 0, "".join(dev.lines)[-3000:]

    answers = to(sink, ANA)[1:]
    assert len(answers) == 1, [m.message["Message-ID"] for m in answers]
    msg = answers[0].message
    assert msg["In-Reply-To"] == their_id
    assert their_id in msg["References"].split()
    assert str(ours.message["Message-ID"]) in msg["References"].split()
    assert msg["Subject"] == "Re: " + str(ours.message["Subject"])
    assert msg["Message-ID"] == f"<{answer_key(ana_reply)}@localhost>"
    text = msg.get_body(("plain",))
    assert text is not None and "Tuesday at 10:00 it is" in text.get_content()
    assert "Does Tuesday at 10:00 suit you?" not in text.get_content()
    assert len(to(sink, BO)) == 1, "Bo's question was not answered"
