"""The IMAP reply mailbox against a real Dovecot on loopback (tests/fakes/dovecot.py).

A reply, an automatic reply and a DSN put in the mailbox (IMAP APPEND) are each processed
once: by the schedule's workflow (`ReplyMailboxPoll` and its activity on real workers),
again after a worker restart (fresh workers and a fresh store connection), by hand
(`poll_by_hand`, what `campaign replies poll` runs), and after a crash between recording
and advancing the cursor (the Message-ID keeps the record single). Every message ends
`\\Seen`; none is deleted. The session is STARTTLS with a trustme certificate when
trustme is installed.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from campaign_core.ids import campaign_workflow_id
from campaign_core.imap import PollSummary, ReplyPollInput
from campaign_core.queues import WORKFLOW_QUEUE, queue_name
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.replies import poll_by_hand
from tests.fakes import dovecot as dovecot_fixture
from tests.fakes.dovecot import Dovecot
from tests.inbound.test_inbound import dsn_bytes, raw_reply
from tests.inbound.test_inbound_webhook import Catcher, seed
from tests.workflows.test_sequences import until
from worker_main import build_workers
from workflows.replies import ReplyMailboxPoll

dovecot = dovecot_fixture.dovecot


@contextlib.asynccontextmanager
async def workers(client: Client, store: SqliteStore, settings: Settings, prefix: str
                  ) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for w in build_workers(client, store, settings, prefix=prefix):
            await stack.enter_async_context(w)
        yield


async def scheduled_poll(client: Client, prefix: str) -> PollSummary:
    """What one firing of the reply-mailbox schedule runs."""
    result: PollSummary = await client.execute_workflow(
        ReplyMailboxPoll.run, ReplyPollInput(queue_prefix=prefix),
        id=f"poll-{uuid.uuid4().hex[:8]}", task_queue=queue_name(WORKFLOW_QUEUE, prefix))
    return result


async def test_each_message_is_processed_once_across_polls_and_restarts(
        dovecot: Dovecot, ts_env: WorkflowEnvironment, settings: Settings, prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    if dovecot.ca_file is not None:  # STARTTLS, verified against the test's own CA
        monkeypatch.setenv("SSL_CERT_FILE", str(dovecot.ca_file))
    settings.imap_url = SecretStr(dovecot.url())
    db = settings.campaign_home / "campaign.db"
    store = SqliteStore(db)
    ids = await seed(store)  # c1 delivering to ana and bo; c2 (completed) sent to cy
    dovecot.append(raw_reply(In_Reply_To="<c1-ana-1@ours.test>",
                             References="<c1-ana-1@ours.test>"))
    dovecot.append(raw_reply(From="Bo <bo@example.org>", Message_ID="<ooo-1@example.org>",
                             Subject="Automatic reply: hello", Auto_Submitted="auto-replied"))
    dovecot.append(dsn_bytes("<c1-bo-1@ours.test>").replace(b"gone@example.com",
                                                             b"bo@example.org"))
    queue = f"catch-{uuid.uuid4().hex[:8]}"
    async with Worker(ts_env.client, task_queue=queue, workflows=[Catcher]):
        catcher = await ts_env.client.start_workflow(
            Catcher.run, id=campaign_workflow_id("c1"), task_queue=queue)

        expected = sorted([f"reply:reply:{ids['ana']}", f"reply:bounce:{ids['bo']}",
                           f"delivery_event:bounce:{ids['bo']}"])

        async def all_seen() -> bool:  # Ana's reply is acted on by its own workflow (issue 27)
            return sorted(await catcher.query(Catcher.seen)) == expected

        async with workers(ts_env.client, store, settings, prefix):
            first = await scheduled_poll(ts_env.client, prefix)
            second = await scheduled_poll(ts_env.client, prefix)
            await until(all_seen, "the campaign told of the reply and the bounce")
        assert (first.processed, first.replies, first.auto_replies, first.bounces,
                first.unmatched) == (3, 1, 1, 1, 0)
        assert second.processed == 0
        assert sorted(await catcher.query(Catcher.seen)) == expected

        # A worker restart: new workers, a new store connection; one more message arrives.
        await store.close()
        dovecot.append(raw_reply(From="Bo <bo@example.org>", Message_ID="<bo-2@example.org>",
                                 Subject="Re: hello"))
        restarted = SqliteStore(db)
        async with workers(ts_env.client, restarted, settings, prefix):
            third = await scheduled_poll(ts_env.client, prefix)
        assert (third.processed, third.replies) == (1, 1)

        # By hand, as `campaign replies poll`: nothing new.
        by_hand = await poll_by_hand(settings, SqliteStore(db), ts_env.client)
        assert by_hand.processed == 0 and by_hand.results == []

        # A crash after recording, before the cursor moved on: everything is read again,
        # and recognised by Message-ID.
        with contextlib.closing(sqlite3.connect(db)) as lite, lite:
            lite.execute("UPDATE imap_state SET last_uid = 0")
        again = await poll_by_hand(settings, SqliteStore(db), ts_env.client)
        assert again.processed == 4
        assert all(m.duplicate for r in again.results for m in r.matches)

    replies = await restarted.list_replies("c1")
    assert sorted((r.lead_id, r.kind) for r in replies) == sorted([
        (ids["ana"], "reply"), (ids["bo"], "auto_reply"), (ids["bo"], "bounce"),
        (ids["bo"], "reply")])
    assert await restarted.list_replies(None) == []
    assert [(e.kind, e.lead_id) for e in await restarted.list_delivery_events("c1")] == [
        ("bounce", ids["bo"])]
    assert await restarted.is_suppressed("bo@example.org")
    # Bo's "Re: hello" names none of our messages: matched by address alone, nobody
    # vouched for it (no CAMPAIGN_TRUSTED_AUTHSERV_ID), so it is recorded and counts for
    # nothing until confirmed (issue 25).
    assert [r.verified for r in replies if r.kind == "reply" and r.lead_id == ids["bo"]] == [False]
    assert (await restarted.counts("c1")).replied == 1
    flags = dovecot.flags()
    assert sorted(flags) == [1, 2, 3, 4], "no message deleted"
    assert all("\\Seen" in f and "\\Deleted" not in f for f in flags.values()), flags
