"""Issue 28's "Done when" for senders, as a user does it on `campaign dev` (real time).

Everything the user does goes through the CLI as typed (`campaign sender add`, `start`,
`approve`, `status`, `report`, `sender list`); the test only polls through the dev API
(`GET /campaigns/{id}`), since each CLI run costs seconds of CPU. What is checked is what
was written to the outbox (the .eml files, their From and Message-ID) and what the store
recorded for each mailbox (`sender_sends`, read-only), never the engine's counters alone.

1. Three outbox senders with daily caps 5, 5 and 3 and a 40-lead campaign started without
   `--senders` (the default: every active sender) send exactly 13 messages (5/5/3 by
   From); the other 27 wait for capacity with their next slot about 24 hours after the first
   sends, and nothing more goes out while they wait. The senders take `--min-gap 1s` (the
   default 60 s would make the 5 sends of one mailbox take five minutes of real time).
2. The README's split flow (`campaign dev --no-worker` and a `campaign worker` beside it):
   one outbox sender with a 2 s gap sends a 6-lead campaign one lead at a time; after 2 or
   3 are out, with the rest waiting on the schedule for their slot, the worker is killed
   with SIGKILL and a new one started. Exactly 6 messages go out, each lead once.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sqlite3
import time
from collections import Counter
from contextlib import closing
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.test_cli_e2e import cli, cli_json, eml_files
from tests.fakes import dev_process
from tests.fakes.dev_process import DevProcess
from tests.ops.test_dev_split_flow import ServerOnly, Worker, running
from tests.ops.test_sequence_dev_e2e import api_stage, until

pytestmark = pytest.mark.slow

dev_cli_env = dev_process.dev_cli_env

#: Leads of the kill test: a send every 2 s or more (the gap plus up to 5 s of jitter).
N_KILL = 6
TOKEN = "senders-e2e-api-token-0123456789"
CAPS = {"a": 5, "b": 5, "c": 3}
DAY = timedelta(hours=24)


def leads_csv(path: Path, n: int) -> Path:
    """`n` people, each at a company (and mail domain) of their own."""
    rows = [f"p{i}@co{i}.example,P{i},Company {i},Head of Ops" for i in range(n)]
    path.write_text("email,first_name,company,title\n" + "\n".join(rows) + "\n")
    return path


def outbox(home: Path) -> list[EmailMessage]:
    """The messages the outbox channel wrote, as a mail client reads them."""
    return [message_from_bytes(p.read_bytes(), policy=policy.default) for p in eml_files(home)]


def sender_sends(home: Path) -> list[tuple[str, int, str, str | None, datetime]]:
    """The mailboxes' sends as the store recorded them: (sender, seq, message_key, lead_id,
    sent_at), read-only from the dev stack's SQLite store."""
    db = home / "campaign.db"
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        rows = con.execute("SELECT sender, seq, message_key, lead_id, sent_at "
                           "FROM sender_sends ORDER BY sender, seq").fetchall()
    return [(s, q, k, lead, datetime.fromisoformat(at).astimezone(UTC))
            for s, q, k, lead, at in rows]


def when(value: str | None) -> datetime:
    assert value, "a time was expected"
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


async def api_status(api: httpx.AsyncClient, cid: str) -> dict[str, Any]:
    got = await api.get(f"/campaigns/{cid}")
    got.raise_for_status()
    return dict(got.json())


async def add_senders(env: dict[str, str], *specs: tuple[str, list[str]]) -> None:
    for name, flags in specs:
        added = await cli_json(env, "sender", "add", name, "--from",
                               f"{name.upper()} <{name}@acme.example>", "--outbox", *flags)
        assert (added["name"], added["from"]) == (name, f"{name.upper()} <{name}@acme.example>")


async def test_three_outbox_senders_capped_5_5_3_send_13_of_40_and_the_rest_wait_for_capacity(
        dev_cli_env: dict[str, str], home: Path, tmp_path: Path) -> None:
    env = {**dev_cli_env, "CAMPAIGN_API_TOKEN": TOKEN}
    leads = leads_csv(tmp_path / "leads.csv", 40)
    dev = DevProcess(env, home)
    await dev.start()
    try:
        async with httpx.AsyncClient(base_url=dev.api, timeout=10, headers={
                "Authorization": f"Bearer {TOKEN}"}) as api:
            await add_senders(env, *((n, ["--daily-cap", str(cap), "--min-gap", "1s"])
                                     for n, cap in CAPS.items()))
            # No --senders: the default is every active sender.
            started = await cli_json(env, "start", "--leads", str(leads), "--name",
                                     "Senders e2e", "--brief", "Book a 20-minute call.",
                                     "--id", "senders-e2e")
            cid = started["campaign_id"]
            assert started["leads_accepted"] == 40, started
            assert sorted(started["senders"]) == ["a", "b", "c"], started
            assert started["warnings"] == [], "outbox senders have no DNS to check"
            await api_stage(api, cid, {"awaiting_approval"})
            assert eml_files(home) == [], "nothing is sent before approval"
            code, _, err = await cli(env, "approve", cid, "--by", "tester")
            assert code == 0, err

            await until(lambda: len(eml_files(home)) >= 13, "13 messages in the outbox", 180)
            waiting: dict[str, Any] = {}

            async def all_waiting_a_day() -> bool:
                # A waiter planned beside the last sends of a mailbox (its slot taken by
                # another in the same instant) finds the cap reached when its slot comes and
                # moves to the next day: the wait is settled when the next slot is a day off.
                nonlocal waiting
                waiting = await api_status(api, cid)
                return bool(waiting["waiting_for_capacity"] == 27 and waiting["next_slot"]
                            and when(waiting["next_slot"]) > datetime.now(UTC) + DAY / 2)

            await until(all_waiting_a_day,
                        f"27 sends waiting for capacity, the next a day away (last: {waiting})", 90)
            seen_waiting = time.time()  # for the second look below
            status = await cli_json(env, "status", cid)
            code, status_text, err = await cli(env, "status", cid)
            assert code == 0, err
            report = await cli_json(env, "report", cid)
            senders = await cli_json(env, "sender", "list")
            listed_at = datetime.now(UTC)

            # Nothing more goes out while they wait (the next slot is a day away).
            await asyncio.sleep(max(0.0, 8 - (time.time() - seen_waiting)))
            later = await cli_json(env, "status", cid)
            mail = outbox(home)
            sends = sender_sends(home)
    finally:
        code = await dev.stop()
    assert code == 0, "".join(dev.lines)

    # The outbox: 13 messages, 5/5/3 by From, 13 people once each.
    assert len(mail) == 13, [str(m["To"]) for m in mail]
    froms = Counter(parseaddr(str(m["From"]))[1] for m in mail)
    assert froms == {"a@acme.example": 5, "b@acme.example": 5, "c@acme.example": 3}, froms
    assert {str(m["From"]) for m in mail} == {f"{n.upper()} <{n}@acme.example>" for n in CAPS}
    assert len({str(m["To"]) for m in mail}) == 13
    assert len({str(m["Message-ID"]) for m in mail}) == 13
    # The store counted the same 13 sends, one per lead, on the mailbox that sent it.
    assert Counter(s for s, *_ in sends) == {"a": 5, "b": 5, "c": 3}, sends
    assert len({lead for *_, lead, _ in sends}) == 13

    # `status --json`: 13 sent, 27 waiting, the next slot about a day after the first sends.
    first_sent = min(parsedate_to_datetime(str(m["Date"])) for m in mail).astimezone(UTC)
    assert status["counts"]["sent"] == 13, status
    assert status["waiting_for_capacity"] == 27, status
    next_slot = when(status["next_slot"])
    assert DAY - timedelta(minutes=1) <= next_slot - first_sent <= DAY + timedelta(minutes=5), (
        first_sent, next_slot)
    assert "27 waiting for capacity" in status_text, status_text
    assert (later["counts"]["sent"], later["waiting_for_capacity"]) == (13, 27), later
    assert later["stage"] == status["stage"] != "completed", later

    # `report --json`: every row carries its lead's sender; each sent row the mailbox whose
    # From it went out with; each waiting row its planned slot, a day away.
    assert len(report) == 40, report
    assert {r["sender"] for r in report} <= set(CAPS), report
    by_id = {str(m["Message-ID"]): parseaddr(str(m["From"]))[1] for m in mail}
    sent = [r for r in report if r["delivery_status"] == "sent"]
    assert len(sent) == 13, report
    assert all(by_id[r["message_id"]] == f"{r['sender']}@acme.example" for r in sent), sent
    waiting_rows = [r for r in report if r["delivery_status"] != "sent"]
    assert len(waiting_rows) == 27
    assert all(r["delivery_status"] == "pending" for r in waiting_rows), waiting_rows
    slots = [when(r["due_at"]) for r in waiting_rows]
    assert abs((min(slots) - next_slot).total_seconds()) < 1, (min(slots), next_slot)
    assert all(s - first_sent >= DAY - timedelta(minutes=1) for s in slots), slots

    # `sender list --json`: 5/5/3 sent in the last 24 hours, each mailbox free again tomorrow.
    listed = {s["name"]: s for s in senders}
    assert {n: (s["daily_cap"], s["today_cap"], s["sent_24h"]) for n, s in listed.items()} == {
        n: (cap, cap, cap) for n, cap in CAPS.items()}, senders
    for s in listed.values():
        assert not s["paused"], s
        slot = when(s["next_slot"])
        assert slot > listed_at + DAY - timedelta(minutes=10), s


async def test_a_worker_killed_while_sends_wait_for_their_slot_loses_and_doubles_nothing(
        dev_cli_env: dict[str, str], home: Path, tmp_path: Path) -> None:
    env = {**dev_cli_env, "CAMPAIGN_API_TOKEN": TOKEN}
    leads = leads_csv(tmp_path / "leads.csv", N_KILL)
    dev = ServerOnly(env, home)
    first, second = Worker(env), Worker(env)
    killed_at: dict[str, Any] = {}
    async with running(dev, first, second):
        await dev.start()
        await first.start()
        assert first.proc is not None
        # 30 s: right after the kill, a status query may go to the dead worker's sticky
        # queue and the control plane answers from the store after its 10 s query timeout.
        async with httpx.AsyncClient(base_url=dev.api, timeout=30, headers={
                "Authorization": f"Bearer {TOKEN}"}) as api:
            await add_senders(env, ("gap", ["--daily-cap", "100", "--hourly-cap", "100",
                                            "--min-gap", "2s"]))
            started = await cli_json(env, "start", "--leads", str(leads), "--name", "Kill test",
                                     "--brief", "Book a 20-minute call.", "--senders", "gap",
                                     "--id", "senders-kill")
            cid = started["campaign_id"]
            assert started["senders"] == ["gap"], started
            await api_stage(api, cid, {"awaiting_approval"})
            code, _, err = await cli(env, "approve", cid, "--by", "tester")
            assert code == 0, err

            async def some_out_the_rest_waiting() -> bool:
                status = await api_status(api, cid)
                killed_at.update(status=status, files=len(eml_files(home)))
                return bool(2 <= killed_at["files"] <= N_KILL - 2 and status["waiting_for_capacity"])

            await until(some_out_the_rest_waiting,
                        f"2-{N_KILL - 2} sent and the rest waiting for their slot (last: {killed_at})", 120)
            os.kill(first.proc.pid, signal.SIGKILL)
            assert await asyncio.wait_for(first.proc.wait(), 30) == -signal.SIGKILL
            await first.stop()  # its output read to the end; nothing left to signal
            killed_at["files_after_kill"] = len(eml_files(home))

            await second.start()
            await api_stage(api, cid, {"completed", "failed"}, 240)
            status = await cli_json(env, "status", cid)
            report = await cli_json(env, "report", cid)
            senders = await cli_json(env, "sender", "list")
    assert second.proc is not None and second.proc.returncode == 0, second.text()
    assert dev.proc is not None and dev.proc.returncode == 0, "".join(dev.lines)
    assert killed_at["files_after_kill"] < N_KILL, (
        f"every message went out before the kill; nothing was waiting: {killed_at}")

    mail = outbox(home)
    assert len(mail) == N_KILL, [str(m["To"]) for m in mail]
    assert len({str(m["Message-ID"]) for m in mail}) == N_KILL
    assert sorted(parseaddr(str(m["To"]))[1] for m in mail) == sorted(
        f"p{i}@co{i}.example" for i in range(N_KILL))
    assert {str(m["From"]) for m in mail} == {"GAP <gap@acme.example>"}

    assert status["stage"] == "completed", status
    assert (status["counts"]["sent"], status["waiting_for_capacity"]) == (N_KILL, 0), status
    assert len(report) == N_KILL
    assert all((r["delivery_status"], r["sender"]) == ("sent", "gap") for r in report), report
    assert sorted(r["message_id"] for r in report) == sorted(str(m["Message-ID"]) for m in mail)

    # The mailbox counted each lead once, in order, the gap kept across the kill.
    sends = sender_sends(home)
    assert [(s, q) for s, q, *_ in sends] == [("gap", q) for q in range(1, N_KILL + 1)], sends
    assert len({lead for *_, lead, _ in sends}) == N_KILL
    times = [at for *_, at in sends]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(g >= 2 for g in gaps), gaps
    [listed] = senders
    assert (listed["name"], listed["sent_24h"]) == ("gap", N_KILL), listed
