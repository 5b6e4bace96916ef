"""Issue 27's "Done when" for the inbox, as a reviewer does it on `campaign dev`.

`campaign dev` runs as a real subprocess (tests/fakes/dev_process.py) with an
OpenAI-compatible model (tests/fakes/llm_server.py) and delivers over SMTP to aiosmtpd
(tests/fakes/smtp_server.py). A campaign's first message reaches Ana and Bo; they answer
through the signed inbound webhook, in the thread. The reply actions read Ana's as
`interested` and Bo's as a `question` and draft an answer to each (never sent by itself).
The reviewer signs in with the dev stack's one-time link, opens the inbox, filters it to
`interested`, opens Ana's reply (the thread shows our message and hers), edits the drafted
answer and presses Send in two tabs at once, then once more: the SMTP server receives ONE
message, threaded to hers, with the edit; Bo gets nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import httpx
import pytest

from campaign_core.answers import answer_key
from tests.cli.test_cli_e2e import cli, cli_json
from tests.conftest import KB
from tests.fakes import dev_process
from tests.fakes.dev_process import DevProcess
from tests.fakes.llm_server import LLMTestServer
from tests.fakes.smtp_server import Received, SmtpSink, smtp_server
from tests.fakes.webhook_signing import INBOUND_SECRET, signed_headers
from tests.review.test_review_pages import follow

pytestmark = pytest.mark.slow
dev_cli_env = dev_process.dev_cli_env

TOKEN = "inbox-page-e2e-token-0123456789"
ANA = "ana@northwind.example"
BO = "bo@ledgerly.example"
LEADS = f"email,first_name,company\n{ANA},Ana,Northwind Freight\n{BO},Bo,Ledgerly\n"
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


@pytest.mark.timeout(300)
async def test_a_reviewer_answers_an_interested_reply_from_the_inbox_once(
        dev_cli_env: dict[str, str], home: Path, tmp_path: Path, browser: Any) -> None:
    leads = tmp_path / "leads.csv"
    leads.write_text(LEADS)
    with smtp_server() as (sink, smtp_url), LLMTestServer() as llm:
        env = {**dev_cli_env, "CAMPAIGN_SMTP_URL": smtp_url,
               "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": llm.base_url,
               "CAMPAIGN_LLM_MODEL": "test-model", "CAMPAIGN_LLM_RATE_LIMIT": "50",
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
                    api, ours, "Yes, that sounds useful. Tuesday at 10 works for me.")
                await reply_by_webhook(api, to(sink, BO)[0], "What does it cost?")

                async def drafted() -> bool:
                    items = (await api.get("/inbox")).json()
                    return sorted((i["email"], i["intent"], i["answer"]["status"])
                                  for i in items) == [(ANA, "interested", "drafted"),
                                                      (BO, "question", "drafted")]

                await until(drafted, "both replies read and answers drafted", 90)
                [item] = (await api.get("/inbox", params={"intent": "interested"})).json()
                drafted_body = item["answer"]["body"]
                assert drafted_body.strip() and item["reply_id"] == ana_reply

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
                assert "Tuesday at 10 works for me." in await page.get_by_label(
                    "Their message").inner_text()
                assert await page.locator("#intent-now").inner_text() == "interested"
                assert "test server: interested" in await page.content(), "why, from the model"
                assert await page.get_by_label("Body").input_value() == drafted_body
                subject = await page.get_by_label("Subject").input_value()
                assert subject == item["answer"]["subject"] and subject.startswith("Re: ")

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

                # The page's forms need this session's CSRF token and this origin.
                forged = await context.request.post(
                    f"{dev.api}/review/inbox/{ana_reply}/done", form={"csrf": "forged"},
                    headers={"Origin": dev.api}, max_redirects=0)
                assert forged.status == 403 and "CSRF" in await forged.text()
                foreign = await context.request.post(
                    f"{dev.api}/review/inbox/{ana_reply}/done", form={"csrf": "x"},
                    headers={"Origin": "https://elsewhere.example"}, max_redirects=0)
                assert foreign.status == 403

                # Ana's reply done: off the inbox. Bo's read again by a person: not
                # interested, which stops his sequence and takes it off the inbox too.
                await follow(page, page.get_by_role("button", name="Done"))
                assert "Reply done" in await page.get_by_role("status").inner_text()
                listed = page.get_by_role("table", name="Replies")
                assert await listed.locator("tbody a").all_inner_texts() == [BO]
                await follow(page, listed.get_by_role("link", name=BO))
                await page.get_by_label("Change the intent").select_option("not_interested")
                await follow(page, page.get_by_role("button", name="Change intent"))
                assert "Intent changed" in await page.get_by_role("status").inner_text()
                assert await page.locator("#intent-now").inner_text() == "not interested"
                await page.goto(f"{dev.api}/review/inbox")
                assert "Nothing to see to" in await page.content()
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
    assert msg["Subject"] == subject
    assert msg["Message-ID"] == f"<{answer_key(ana_reply)}@localhost>"
    text = msg.get_body(("plain",))
    assert text is not None and "Tuesday at 10:00 it is" in text.get_content()
    assert drafted_body.strip() not in text.get_content(), "the edit, not the draft"
    assert len(to(sink, BO)) == 1, "Bo's question was not answered"
