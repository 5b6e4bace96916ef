"""Each sender's own reply mailbox is read with CAMPAIGN_IMAP_URL's (issue 28), against a
real Dovecot on loopback (tests/fakes/dovecot.py; each mailbox one user of it).

A reply that comes to one sender's mailbox and a DSN that comes to another's are matched,
recorded and signalled like the shared mailbox's, by hand (`poll_by_hand`, what `campaign
replies poll` runs) and by the schedule's workflow on real workers. A sender whose mailbox
cannot be read (its variable unset, a refused login) is skipped and the others are still
read; it is read once it is fixed. A removed sender's mailbox is not read. No password is
in the logs, the report or Temporal history. The schedule is made when only a sender has a
mailbox (and not when none has).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from campaign_core.codec import KEY_BYTES
from campaign_core.ids import campaign_workflow_id
from campaign_core.imap import PollSummary, ReplyPollInput
from campaign_core.queues import WORKFLOW_QUEUE, queue_name
from campaign_core.secret_refs import seal
from campaign_core.senders import SenderRow
from campaign_core.settings import Settings
from campaign_core.store.base import now_utc
from campaign_core.store.sqlite import SqliteStore
from starter.replies import poll_by_hand
from tests.fakes import dovecot as dovecot_fixture
from tests.fakes.dovecot import Dovecot
from tests.fakes.dovecot_users import ImapUser, add_user
from tests.inbound.test_inbound import dsn_bytes, raw_reply
from tests.inbound.test_inbound_webhook import Catcher, seed
from tests.workflows.test_sequences import until
from worker_main import build_workers
from workflows.replies import ReplyMailboxPoll, reply_schedule_id
from workflows.reply_schedule import ensure_reply_schedule

dovecot = dovecot_fixture.dovecot

ANA_REPLY = raw_reply(In_Reply_To="<c1-ana-1@ours.test>", References="<c1-ana-1@ours.test>")
BO_DSN = dsn_bytes("<c1-bo-1@ours.test>").replace(b"gone@example.com", b"bo@example.org")
CY_REPLY = raw_reply(From="Cy <cy@example.net>", Message_ID="<cy-1@example.net>",
                     In_Reply_To="<c2-cy-1@ours.test>", References="<c2-cy-1@ours.test>")
PASSWORDS = {"ana": "ana-box-secret-4711", "bo": "bo-box-secret-0815",
             "cy": "cy-box-secret-2342", "wrong": "not-the-password-9999"}


def sender(name: str, imap_url: str | None) -> SenderRow:
    return SenderRow(name=name, from_addr=f"{name.title()} <{name}@acme.test>",
                     transport="outbox", imap_url=imap_url, created_at=now_utc())


@contextlib.asynccontextmanager
async def campaign_c1(client: Client) -> AsyncIterator[WorkflowHandle[Catcher, None]]:
    """A stand-in for campaign c1's workflow, recording the signals it gets."""
    queue = f"catch-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[Catcher]):
        # Not terminated at the end: the test's own time-skipping server goes with it (a
        # terminate there now and then found the run already closed: "Completed workflow").
        yield await client.start_workflow(Catcher.run, id=campaign_workflow_id("c1"),
                                          task_queue=queue)


def tls(dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch) -> None:
    if dovecot.ca_file is not None:  # STARTTLS, verified against the test's own CA
        monkeypatch.setenv("SSL_CERT_FILE", str(dovecot.ca_file))


def no_password_in(text: str) -> None:
    for password in (*PASSWORDS.values(), dovecot_fixture.PASSWORD):
        assert password not in text


async def test_each_senders_mailbox_is_read_like_the_shared_one(
        dovecot: Dovecot, ts_env: WorkflowEnvironment, settings: Settings, store: SqliteStore,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    tls(dovecot, monkeypatch)
    caplog.set_level(logging.DEBUG)
    settings.imap_url = SecretStr(dovecot.url())  # the shared mailbox, as today
    settings.encryption_key = SecretStr("k1:" + base64.b64encode(bytes(range(KEY_BYTES))).decode())
    ids = await seed(store)  # c1 delivering to ana and bo; c2 (completed) sent to cy
    ana, bo, cy = (add_user(dovecot, f"{n}-box", PASSWORDS[n]) for n in ("ana", "bo", "cy"))
    monkeypatch.setenv("ANA_IMAP_URL", ana.url())
    monkeypatch.delenv("CY_IMAP_URL", raising=False)
    refused = ImapUser(dovecot, "dee-box", PASSWORDS["wrong"]).url()  # no such user
    # ana's by variable, bo's stored encrypted; cy's variable is not set; one with a login
    # the server refuses; one removed (its mailbox is cy's: were it read, cy's message would be).
    for row in (sender("ana", "env:ANA_IMAP_URL"),
                sender("bo", seal(bo.url(), settings, what="imap_url")),
                sender("cy", "env:CY_IMAP_URL"),
                sender("dee", seal(refused, settings, what="imap_url")),
                sender("eve", seal(cy.url(), settings, what="imap_url")),
                sender("fay", None)):
        assert await store.add_sender(row)
    assert await store.remove_sender("eve")
    ana.append(ANA_REPLY)
    bo.append(BO_DSN)
    cy.append(CY_REPLY.replace(b"<cy-1@example.net>", b"<cy-2@example.net>"))  # read once
    # cy's variable is set, below
    dovecot.append(CY_REPLY)

    async with campaign_c1(ts_env.client) as c1:
        report = await poll_by_hand(settings, store, ts_env.client)
        # The bounce is signalled at once; ana's reply by its reply action (no worker here).
        expected = sorted([f"reply:bounce:{ids['bo']}", f"delivery_event:bounce:{ids['bo']}"])

        async def told() -> bool:
            return sorted(await c1.query(Catcher.seen)) == expected

        await until(told, "campaign c1 told of bo's bounce")

    assert report.processed == 3
    assert sorted(r.kind for r in report.results) == ["bounce", "reply", "reply"]
    boxes = {m.sender: m for m in report.mailboxes}
    assert set(boxes) == {None, "ana", "bo", "cy", "dee"}  # not eve (removed), not fay
    assert [(boxes[s].processed, boxes[s].error) for s in (None, "ana", "bo")] == [
        (1, None), (1, None), (1, None)]
    assert "CY_IMAP_URL is not set" in (boxes["cy"].error or "")
    assert boxes["dee"].error and boxes["dee"].mailbox == f"dee-box@127.0.0.1:{dovecot.port}/INBOX"
    assert "not read: sender cy's mailbox, sender dee's mailbox" in report.mailbox

    replies = await store.list_replies("c1")
    assert sorted((r.lead_id, r.kind) for r in replies) == sorted([
        (ids["ana"], "reply"), (ids["bo"], "bounce")])
    assert [(r.lead_id, r.kind) for r in await store.list_replies("c2")] == [(ids["cy"], "reply")]
    assert await store.is_suppressed("bo@example.org")
    # Each mailbox has its own cursor, by mailbox (user@host:port/MAILBOX, no password).
    for box in (ana, bo):
        key = f"{box.user}@127.0.0.1:{dovecot.port}/INBOX"
        assert (await store.get_imap_state(key) or (0, 0))[1] == 1
    assert (await store.get_imap_state(f"cy-box@127.0.0.1:{dovecot.port}/INBOX")) is None
    assert ana.seen() == {1: True} and bo.seen() == {1: True} and cy.seen() == {1: False}

    # Nothing new: nothing read twice. Cy's variable set now: its mailbox is read.
    again = await poll_by_hand(settings, store, ts_env.client)
    assert again.processed == 0
    monkeypatch.setenv("CY_IMAP_URL", cy.url())
    fixed = await poll_by_hand(settings, store, ts_env.client)
    assert (fixed.processed, [m.sender for m in fixed.mailboxes if m.processed]) == (1, ["cy"])
    assert [m.sender for m in fixed.mailboxes if m.error] == ["dee"]
    assert len(await store.list_replies("c2")) == 2

    no_password_in(caplog.text)
    no_password_in(json.dumps([r.model_dump(mode="json") for r in (report, again, fixed)]))
    assert "reply mailbox of sender dee skipped" in caplog.text


async def test_the_schedules_poll_reads_the_senders_mailboxes_without_a_shared_one(
        dovecot: Dovecot, ts_env: WorkflowEnvironment, settings: Settings, store: SqliteStore,
        prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tls(dovecot, monkeypatch)
    settings.imap_url = None  # no shared mailbox: the senders' are read all the same
    ids = await seed(store)
    ana: ImapUser = add_user(dovecot, "ana-box", PASSWORDS["ana"])
    bo: ImapUser = add_user(dovecot, "bo-box", PASSWORDS["bo"])
    monkeypatch.setenv("ANA_IMAP_URL", ana.url())
    monkeypatch.setenv("BO_IMAP_URL", bo.url())
    monkeypatch.delenv("CY_IMAP_URL", raising=False)
    for name in ("ana", "bo", "cy"):
        assert await store.add_sender(sender(name, f"env:{name.upper()}_IMAP_URL"))
    ana.append(ANA_REPLY)
    bo.append(BO_DSN)

    async with campaign_c1(ts_env.client) as c1, contextlib.AsyncExitStack() as stack:
        for w in build_workers(ts_env.client, store, settings, prefix=prefix):
            await stack.enter_async_context(w)
        wid = f"poll-{uuid.uuid4().hex[:8]}"
        summary: PollSummary = await ts_env.client.execute_workflow(
            ReplyMailboxPoll.run, ReplyPollInput(queue_prefix=prefix), id=wid,
            task_queue=queue_name(WORKFLOW_QUEUE, prefix))
        expected = sorted([f"reply:reply:{ids['ana']}", f"reply:bounce:{ids['bo']}",
                           f"delivery_event:bounce:{ids['bo']}"])

        async def told() -> bool:
            return sorted(await c1.query(Catcher.seen)) == expected

        await until(told, "campaign c1 told of ana's reply and bo's bounce")
        history = await ts_env.client.get_workflow_handle(wid).fetch_history()

    assert (summary.processed, summary.replies, summary.bounces, summary.mailboxes,
            summary.skipped) == (2, 1, 1, 2, ["cy"])
    assert sorted((r.lead_id, r.kind) for r in await store.list_replies("c1")) == sorted([
        (ids["ana"], "reply"), (ids["bo"], "bounce")])
    no_password_in(json.dumps(history.to_json_dict()))


async def test_the_schedule_is_made_when_only_a_sender_has_a_mailbox(
        dev_env: WorkflowEnvironment, settings: Settings, store: SqliteStore, prefix: str) -> None:
    settings.imap_url = None
    client = dev_env.client
    assert not await ensure_reply_schedule(client, settings, prefix, store=store)
    assert await store.add_sender(sender("fay", None))  # no mailbox: still none to poll
    assert not await ensure_reply_schedule(client, settings, prefix, store=store)
    assert await store.add_sender(sender("ana", "env:ANA_IMAP_URL"))
    assert not await ensure_reply_schedule(client, settings, prefix)  # the store not given
    assert await ensure_reply_schedule(client, settings, prefix, store=store)
    handle = client.get_schedule_handle(reply_schedule_id(prefix))
    try:
        described = await handle.describe()
        assert "senders' reply mailboxes" in (described.schedule.state.note or "")
        assert await ensure_reply_schedule(client, settings, prefix, store=store)  # idempotent
    finally:
        await handle.delete()
    assert await store.remove_sender("ana")
    assert not await ensure_reply_schedule(client, settings, prefix, store=store)


async def test_a_running_worker_makes_the_schedule_once_a_senders_mailbox_is_added(
        dev_env: WorkflowEnvironment, settings: Settings, store: SqliteStore, prefix: str) -> None:
    """No mailbox when the worker started: the worker's watch creates the poll schedule as
    soon as a sender with a reply mailbox is added, without a restart."""
    from worker_main import reply_schedule_when_needed

    settings.imap_url = None
    settings.task_queue_prefix = prefix
    stop = asyncio.Event()
    watch = asyncio.create_task(
        reply_schedule_when_needed(dev_env.client, settings, store, stop, every=0.05))
    await asyncio.sleep(0.3)
    assert not watch.done()  # nothing to poll yet: still watching
    handle = dev_env.client.get_schedule_handle(reply_schedule_id(prefix))
    assert await store.add_sender(sender("ana", "env:ANA_IMAP_URL"))
    try:
        await asyncio.wait_for(watch, 10)  # made it, and stopped watching
        described = await handle.describe()
        assert "senders' reply mailboxes" in (described.schedule.state.note or "")
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await handle.delete()
