"""`campaign inbox` as a user runs it (issue 27): list and filter, edit the answer from a
file, send it twice and get one message, refuse what cannot be done, mark done.

The campaign runs on the dev server with the real delivery agent on the outbox channel (the
drafting agents are doubles); the CLI runs as a subprocess against the same server and
store. The lead's reply goes through the real `ReplyDesk`; its reading and drafted answer
are written to the store as the reply action writes them (`seed_answer`).
"""

from __future__ import annotations

import email
from email import policy
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from campaign_core.answers import answer_key
from campaign_core.ids import message_key
from campaign_core.inbound import InboundMessage
from campaign_core.replies import ReplyDesk
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from tests.api.test_inbox_api import DRAFTED, EDITED, seed_answer
from tests.cli import test_cli_e2e
from tests.cli.test_cli_e2e import cli, cli_json
from tests.fakes.doubles import fast_agents
from tests.workflows.test_sequences import sent_count, started
from workflows.signals import TemporalCampaignSignals

cli_env = test_cli_e2e.cli_env
ANA = {"email": "ana@northwind.example", "first_name": "Ana", "company": "Northwind"}


async def reply_to(dev_env: WorkflowEnvironment, store: SqliteStore, cid: str, lead_id: str,
                   text: str) -> str:
    """The lead answers step 1 (matched by its Message-ID): the reply's id."""
    ours = await store.get_delivery(message_key(cid, lead_id, 1))
    assert ours is not None and ours.message_id
    desk = ReplyDesk(store, TemporalCampaignSignals(dev_env.client), source="webhook")
    result = await desk.process(InboundMessage.model_validate({
        "from": f"Ana <{ANA['email']}>", "to": "rita@sender.example",
        "subject": "Re: s", "message_id": f"<{cid}-reply@northwind.example>",
        "in_reply_to": [ours.message_id], "text": text}))
    [match] = result.matches
    return match.reply_id


async def test_inbox_commands_list_edit_send_once_and_done(
        dev_env: WorkflowEnvironment, cli_env: dict[str, str], settings: Settings,
        store: SqliteStore, prefix: str, run_workers: Any, tmp_path: Path) -> None:
    agents = fast_agents(store)
    agents.pop("deliver_message")  # the real agent: step 1 and the answer to the outbox
    async with run_workers(dev_env.client, overrides=agents):
        _, [ana] = await started(dev_env, settings, store, prefix, "c-cli-inbox", [ANA])
        await sent_count(store, "c-cli-inbox", 1)
        rid = await reply_to(dev_env, store, "c-cli-inbox", ana, "Sounds good, Tuesday?")
        await seed_answer(store, rid)

        [item] = [i for i in await cli_json(cli_env, "inbox") if i["reply_id"] == rid]
        assert (item["email"], item["intent"], item["answer"]["status"],
                item["answer"]["body"]) == (ANA["email"], "interested", "drafted", DRAFTED)
        assert [i["reply_id"] for i in await cli_json(
            cli_env, "inbox", "--intent", "interested", "--campaign", "c-cli-inbox")] == [rid]
        assert await cli_json(cli_env, "inbox", "--intent", "question") == []
        code, _, err = await cli(cli_env, "inbox", "--intent", "keen")
        assert code == 2 and "--intent" in err and "keen" in err, err
        code, out, err = await cli(cli_env, "inbox")
        assert code == 0 and ANA["email"] in out and rid in out, (out, err)

        body = tmp_path / "answer.txt"
        body.write_text(EDITED)
        saved = await cli_json(cli_env, "inbox", "answer", rid, "--body-file", str(body),
                               "--by", "rita")
        assert (saved["status"], saved["body"], saved["by"]) == ("drafted", EDITED, "rita")
        outbox = settings.outbox_dir
        assert not (outbox / f"{answer_key(rid)}.eml").exists(), "saving sends nothing"

        first = await cli_json(cli_env, "inbox", "answer", rid, "--send", "--by", "rita")
        second = await cli_json(cli_env, "inbox", "answer", rid, "--send", "--by", "rita")
        assert (first["status"], second["status"]) == ("sent", "already_sent"), (first, second)
        assert first["message_id"] == second["message_id"]
        answers = sorted(outbox.glob("ans_*.eml"))
        assert [p.name for p in answers] == [f"{answer_key(rid)}.eml"]
        msg = email.message_from_bytes(answers[0].read_bytes(), policy=policy.default)
        assert msg["Message-ID"] == first["message_id"]
        assert msg["In-Reply-To"] == "<c-cli-inbox-reply@northwind.example>"
        assert msg["Subject"] == "Re: s" and msg["To"].addresses[0].addr_spec == ANA["email"]
        text = msg.get_body(("plain",))
        assert text is not None and "Tuesday at 10:00 it is" in text.get_content()

        code, _, err = await cli(cli_env, "inbox", "answer", rid, "--body-file", str(body))
        assert code == 2 and "sent already" in err, err
        code, _, err = await cli(cli_env, "inbox", "answer", rid)
        assert code == 2 and "nothing to do" in err, err
        code, _, err = await cli(cli_env, "inbox", "answer", "rpl_nope", "--send")
        assert code == 2 and "no reply" in err, err
        code, _, err = await cli(cli_env, "inbox", "intent", rid, "keen")
        assert code == 2 and "INTENT" in err and "keen" in err, err

        changed = await cli_json(cli_env, "inbox", "intent", rid, "meeting_request",
                                 "--by", "rita")
        assert changed == {"reply_id": rid, "intent": "meeting_request", "by": "rita",
                           "action_started": True}
        row = await store.get_reply(rid)
        assert row is not None and (row.intent, row.intent_by) == ("meeting_request", "rita")

        done = await cli_json(cli_env, "inbox", "done", rid, "--by", "rita")
        assert (done["done"], done["by"]) == (True, "rita")
        assert rid not in [i["reply_id"] for i in await cli_json(cli_env, "inbox")]


async def test_an_answer_in_a_webhook_campaign_is_refused(
        dev_env: WorkflowEnvironment, cli_env: dict[str, str], store: SqliteStore) -> None:
    """The webhook channel carries no answers: exit 2 naming it, nothing claimed."""
    from campaign_core.leads import parse_lead_rows

    await store.upsert_campaign(campaign_id="c-hook", name="hook", brief="", channel="webhook",
                                kb_dir=None, workflow_id="campaign:c-hook")
    [lead] = parse_lead_rows(enumerate([ANA], start=2), "c-hook").leads
    await store.upsert_leads("c-hook", [lead])
    rid, _ = await store.record_reply(message_id="<hook-reply@northwind.example>", kind="reply",
                                      email=ANA["email"], source="webhook", campaign_id="c-hook",
                                      lead_id=lead.lead_id, step=1, subject="Re: s",
                                      text="Yes please", matched_by="message_id")
    await seed_answer(store, rid, acted_on=False)
    code, _, err = await cli(cli_env, "inbox", "answer", rid, "--send")
    assert code == 2 and "webhook" in err, err
    row = await store.get_reply_answer(rid)
    assert row is not None and row.status == "drafted"
