"""Issue 13's "Done when", as a user does it: a 3-step sequence on `campaign dev`.

`campaign dev` runs as a real subprocess (tests/fakes/dev_process.py) and delivers over SMTP to
aiosmtpd on loopback (tests/fakes/smtp_server.py); its reply mailbox is a real Dovecot
(tests/fakes/dovecot.py), read by the Temporal Schedule that the dev stack's workers create
(`CAMPAIGN_IMAP_POLL_SECONDS=10`, the least the setting allows, so the schedule itself is
exercised, not `campaign replies poll`). The user's actions go through the CLI (`start
--channel smtp --follow-up ...`, `approve`, `cancel`, `status`, `report`, `replies`) and
the dev API (`POST /webhooks/inbound`, signed as docs/api.md "Webhook signatures" says); the
test waits for stages through the API, since each CLI run costs seconds of CPU.

Four leads, steps 20 s apart: ana answers her first message through the inbound webhook,
bo answers his second one by mail into the IMAP mailbox, each with the In-Reply-To of
the Message-ID the SMTP server received (as a mail client would). The two stop; cy and
dee get all three messages. 20 s is the shortest honest delay: a reply must beat the next
step's timer, and the mailbox is read every 10 s. A second campaign, started alongside,
checks that `--follow-up 2m` is accepted and puts step 2 two minutes after step 1. docs/guide.md
"Try a sequence on `campaign dev`" is the same walk-through by hand.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid, parseaddr
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.test_cli_e2e import cli, cli_json
from tests.conftest import KB
from tests.fakes import dev_process
from tests.fakes import dovecot as dovecot_fixture
from tests.fakes.dev_process import DevProcess
from tests.fakes.dovecot import Dovecot
from tests.fakes.smtp_server import Received, SmtpSink, smtp_server
from tests.fakes.webhook_signing import INBOUND_SECRET, signed_headers

pytestmark = pytest.mark.slow

dev_cli_env = dev_process.dev_cli_env
dovecot = dovecot_fixture.dovecot

TOKEN = "sequence-e2e-api-token-0123456789"
GAP = 20  # seconds between steps: --follow-up 20s --follow-up 20s
POLL_SECONDS = 10  # the reply mailbox's schedule interval
LEADS = """email,first_name,company,title
ana@northwind.example,Ana,Northwind Freight,VP Operations
bo@ledgerly.example,Bo,Ledgerly,CTO
cy@carely.example,Cy,Carely,Head of Growth
dee@tidewater.example,Dee,Tidewater,COO
"""
ANA, BO, CY, DEE = (line.split(",")[0] for line in LEADS.splitlines()[1:])
ZED = "zed@twominutes.example"  # the --follow-up 2m campaign's one lead


def sent_to(sink: SmtpSink, address: str) -> list[Received]:
    with sink.lock:
        return [m for m in sink.messages if m.rcpt_tos == [address]]


async def until(check: Callable[[], bool | Awaitable[bool]], what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def mail_reply(to: Received, text: str) -> bytes:
    """What a mail client writes when the lead presses Reply on `to`."""
    original = to.message
    lead = to.rcpt_tos[0]
    reply = EmailMessage()
    reply["From"] = lead
    reply["To"] = str(original["From"])
    reply["Subject"] = "Re: " + str(original["Subject"]).removeprefix("Re: ")
    reply["Message-ID"] = make_msgid(domain=lead.rpartition("@")[2])
    reply["In-Reply-To"] = str(original["Message-ID"])
    reply["References"] = " ".join(
        filter(None, [str(original.get("References") or ""), str(original["Message-ID"])]))
    reply.set_content(text)
    return bytes(reply)


def webhook_reply(to: Received, text: str) -> dict[str, Any]:
    """The same reply in the inbound webhook's neutral shape, as a relay would post it."""
    original = to.message
    lead = to.rcpt_tos[0]
    return {"from": lead, "to": parseaddr(str(original["From"]))[1],
            "subject": "Re: " + str(original["Subject"]),
            "message_id": make_msgid(domain=lead.rpartition("@")[2]),
            "in_reply_to": str(original["Message-ID"]),
            "references": str(original["Message-ID"]), "text": text}


async def api_stage(api: httpx.AsyncClient, cid: str, stages: set[str], seconds: float = 120
                    ) -> dict[str, Any]:
    """Wait for a stage through the dev API (`campaign status` does the same, but each CLI
    run costs seconds of CPU, too much to poll with)."""
    status: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal status
        got = await api.get(f"/campaigns/{cid}")
        got.raise_for_status()
        status = got.json()
        return status["stage"] in stages

    await until(reached, f"{cid} to reach {stages} (last: {status})", seconds)
    return status


async def check_two_minute_follow_up(env: dict[str, str], api: httpx.AsyncClient,
                                     sink: SmtpSink, home: Path) -> None:
    """`--follow-up 2m` (started and approved with the main campaign) puts step 2 on the
    schedule two minutes after step 1's send; then `cancel` stops it."""
    await until(lambda: len(sent_to(sink, ZED)) == 1, "the 2m campaign's first message", 90)
    first_at = sent_to(sink, ZED)[0].received_at
    db = home / "campaign.db"

    def due_at() -> float | None:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            row = con.execute("SELECT due_at FROM sequence_steps WHERE campaign_id = 'seq-2m' "
                              "AND step = 2").fetchone()
        return datetime.fromisoformat(row[0]).timestamp() if row else None

    await until(lambda: due_at() is not None, "step 2 of the 2m campaign on the schedule", 30)
    # Due 2 minutes after the send was started (the workflow's clock), a little before
    # the SMTP server saw it: never later, and not by more than a loaded machine's delay.
    assert 100 < (due_at() or 0) - first_at <= 121, (due_at(), first_at)
    code, _, err = await cli(env, "cancel", "seq-2m")
    assert code == 0, err
    await api_stage(api, "seq-2m", {"cancelled"})
    report = (await api.get("/campaigns/seq-2m/report")).json()
    assert [(r["step"], r["delivery_status"], r["stop_reason"]) for r in report] == [
        (1, "sent", None), (2, "stopped", "cancelled")]


async def test_three_step_sequence_on_campaign_dev_stops_on_webhook_and_imap_replies(
        dev_cli_env: dict[str, str], home: Path, tmp_path: Path, dovecot: Dovecot) -> None:
    leads, one = tmp_path / "leads.csv", tmp_path / "one.csv"
    leads.write_text(LEADS)
    one.write_text(f"email,company\n{ZED},Two Minutes\n")
    with smtp_server() as (sink, smtp_url):
        env = {**dev_cli_env,
               "CAMPAIGN_SMTP_URL": smtp_url,
               "CAMPAIGN_POSTAL_ADDRESS": "Sender Inc., 1 Main St, Springfield, IL 62701, USA",
               "CAMPAIGN_IMAP_URL": dovecot.url(),
               "CAMPAIGN_IMAP_POLL_SECONDS": str(POLL_SECONDS),
               "CAMPAIGN_WEBHOOK_SECRET": INBOUND_SECRET,
               "CAMPAIGN_API_TOKEN": TOKEN}
        if dovecot.ca_file is not None:  # Dovecot offers STARTTLS with the test's own CA
            env["SSL_CERT_FILE"] = str(dovecot.ca_file)
        dev = DevProcess(env, home)
        await dev.start()
        two_minutes: asyncio.Task[None] | None = None
        try:
            async with httpx.AsyncClient(base_url=dev.api, timeout=10, headers={
                    "Authorization": f"Bearer {TOKEN}"}) as api:
                await asyncio.gather(
                    cli_json(env, "start", "--leads", str(leads), "--kb", str(KB),
                             "--brief", "Book a 20-minute call.", "--channel", "smtp",
                             "--follow-up", f"{GAP}s", "--follow-up", f"{GAP}s",
                             "--id", "seq-e2e"),
                    cli_json(env, "start", "--leads", str(one), "--kb", str(KB),
                             "--channel", "smtp", "--follow-up", "2m", "--id", "seq-2m"))
                await api_stage(api, "seq-e2e", {"awaiting_approval"})
                await api_stage(api, "seq-2m", {"awaiting_approval"})
                drafts = (await api.get("/campaigns/seq-e2e/drafts")).json()
                assert sorted((d["email"], d["step"]) for d in drafts) == sorted(
                    (e, s) for e in (ANA, BO, CY, DEE) for s in (1, 2, 3))
                assert [d["step"] for d in (await api.get("/campaigns/seq-2m/drafts")).json()
                        ] == [1, 2]
                assert sink.messages == [], "nothing is sent before approval"
                for (code, _, err) in await asyncio.gather(cli(env, "approve", "seq-e2e"),
                                                           cli(env, "approve", "seq-2m")):
                    assert code == 0, err
                two_minutes = asyncio.create_task(check_two_minute_follow_up(env, api, sink, home))

                # Ana answers her first message through the inbound webhook.
                await until(lambda: all(sent_to(sink, a) for a in (ANA, BO, CY, DEE)),
                            "every lead's first message", 60)
                body = json.dumps(webhook_reply(sent_to(sink, ANA)[0],
                                                "Yes, Tuesday works. Please stop the reminders.")
                                  ).encode()
                answer = await api.post("/webhooks/inbound", content=body, headers={
                    "Content-Type": "application/json", **signed_headers(body)})
                assert answer.status_code == 200, answer.text
                [result] = answer.json()
                assert (result["kind"], result["status"]) == ("reply", "matched"), result
                [match] = result["matches"]
                assert (match["campaign_id"], match["step"], match["notified"]) == (
                    "seq-e2e", 1, True), match

                # Bo answers his second message by mail; the schedule reads the mailbox.
                await until(lambda: len(sent_to(sink, BO)) == 2, "bo's second message", GAP + 30)
                dovecot.append(mail_reply(sent_to(sink, BO)[1], "Thanks, not this quarter."))

                await api_stage(api, "seq-e2e", {"completed", "failed"}, 2 * GAP + 60)
                await two_minutes
            status, report, replies = await asyncio.gather(
                cli_json(env, "status", "seq-e2e"), cli_json(env, "report", "seq-e2e"),
                cli_json(env, "replies", "seq-e2e"))
            async with httpx.AsyncClient(base_url=dev.ui, timeout=10) as ui:
                schedule = await ui.get("/api/v1/namespaces/default/schedules/campaign-replies-poll")
            schedule.raise_for_status()
        finally:
            if two_minutes is not None and not two_minutes.done():
                two_minutes.cancel()
            code = await dev.stop()
    assert code == 0, "".join(dev.lines)

    # At the SMTP server: ana got step 1, bo steps 1-2, cy and dee all three, in one thread.
    counts = {a: len(sent_to(sink, a)) for a in (ANA, BO, CY, DEE)}
    assert counts == {ANA: 1, BO: 2, CY: 3, DEE: 3}, counts
    for address in (BO, CY, DEE):
        thread = sent_to(sink, address)
        first = thread[0].message
        for earlier, later in itertools.pairwise(thread):
            assert later.message["In-Reply-To"] == earlier.message["Message-ID"]
            assert later.message["Subject"] == f"Re: {first['Subject']}"
            assert later.received_at - earlier.received_at >= GAP - 1, "the delay holds"

    # `report`: both leads stopped for their later steps because they replied; the stop
    # reason is the reply's intent (issue 27), `unclear` to the offline rules for both.
    rows = {(r["email"], r["step"]): r for r in report}
    assert {k: (r["delivery_status"], r["stop_reason"]) for k, r in rows.items()} == {
        (ANA, 1): ("sent", None), (ANA, 2): ("stopped", "unclear"),
        (ANA, 3): ("stopped", "unclear"),
        (BO, 1): ("sent", None), (BO, 2): ("sent", None), (BO, 3): ("stopped", "unclear"),
        **{(a, s): ("sent", None) for a in (CY, DEE) for s in (1, 2, 3)}}
    for address in (ANA, BO, CY, DEE):
        received = [m.message["Message-ID"] for m in sent_to(sink, address)]
        assert [rows[address, s]["message_id"] for s in range(1, len(received) + 1)] == received
    # `status`: 9 messages sent; 2 leads replied; 3 messages stopped (ana's 2 and 3, bo's 3):
    # the counts are the report's tallies, so the two agree row for row (issue 24).
    assert status["stage"] == "completed", status
    c = status["counts"]
    assert (c["sent"], c["replied"], c["stopped"], c["pending"]) == (9, 2, 3, 0), status

    # `replies`: both, each matched by the Message-ID it answered, one per path.
    got = sorted((r["email"], r["step"], r["kind"], r["source"], r["matched_by"]) for r in replies)
    assert got == [(ANA, 1, "reply", "webhook", "message_id"),
                   (BO, 2, "reply", "imap", "message_id")], replies
    assert schedule.json()["info"]["actionCount"], "the reply mailbox's schedule fired"
    assert all("\\Seen" in f and "\\Deleted" not in f for f in dovecot.flags().values())
