"""One person across campaigns (issue 27).

- A person's trusted reply to one campaign stops their sequence in every other campaign
  still sending to them, with a stop reason naming the campaign replied to; an unverified
  match changes nothing. Where no delivery runs to be signalled (a campaign awaiting
  approval), the delivery agent reads the reply when the follow-up falls due, and before
  step 1: a campaign approved after the reply sends that person nothing.
- A new campaign skips, by default, the people in another campaign's sequence still going
  on and those who replied within CAMPAIGN_REPLY_COOLDOWN, and lists them in `start
  --json` (`leads_skipped`) and the API's answer; `--allow-overlap` (`allow_overlap`)
  keeps them; a retry of the same start is still the same campaign.

Campaigns run on the time-skipping server with the test doubles of tests/fakes/doubles.py
(whose delivery runs the real stop check on the real SQLite store; a message's Message-ID
is its message key); the CLI runs as a subprocess against the same server and store.
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from activities.sequence_agent import stop_reason_at_due
from campaign_core.ids import message_key
from campaign_core.inbound import InboundMessage
from campaign_core.leads import parse_lead_rows
from campaign_core.models import Stage
from campaign_core.replies import ReplyDesk
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.manager import BadInput, CampaignManager
from starter.start_options import CampaignOptions
from tests.api.test_api import AUTH, TOKEN, serve
from tests.cli.test_cli_e2e import cli, cli_json
from tests.fakes.doubles import fast_agents
from tests.workflows.test_orchestration import finish, wait_stage
from tests.workflows.test_sequences import DAY, sent_count, started, until
from workflows.signals import TemporalCampaignSignals

ANA = {"email": "ana@northwind.example", "company": "Northwind"}
BO = {"email": "bo@ledgerly.example", "company": "Ledgerly"}
CY = {"email": "cy@carely.example", "company": "Carely"}
DEE = {"email": "dee@acme.example", "company": "Acme"}
EVE = {"email": "eve@globex.example", "company": "Globex"}
FAY = {"email": "fay@initech.example", "company": "Initech"}
GUS = {"email": "gus@umbrella.example", "company": "Umbrella"}


def answer(ana_message_id: str | None, mid: str) -> InboundMessage:
    """Ana's "yes, Tuesday works": answering our message `ana_message_id` (None: naming none
    of ours, so matched by her address alone, which nobody vouches for)."""
    return InboundMessage.model_validate({
        "from": "Ana <ana@northwind.example>", "to": "replies@ours.test",
        "subject": "Re: hello", "message_id": f"<{mid}@mail.example>",
        "in_reply_to": [ana_message_id] if ana_message_id else [],
        "text": "Yes, Tuesday works."})


async def test_a_reply_to_one_campaign_stops_the_persons_sequence_in_another(
        ts_env: WorkflowEnvironment, settings: Settings, store: SqliteStore, prefix: str,
        run_workers: Any) -> None:
    sent: list[str] = []
    async with run_workers(ts_env.client, overrides=fast_agents(store, sent)):
        _, (ana_a, bo) = await started(ts_env, settings, store, prefix, "c-a", [ANA, BO],
                                       follow_ups=["1d", "1d"])
        # Ana is in c-a's sequence: c-b keeps her only because it allows overlap.
        _, (ana_b, cy) = await started(ts_env, settings, store, prefix, "c-b", [ANA, CY],
                                       follow_ups=["1d", "1d"], allow_overlap=True)
        await sent_count(store, "c-a", 2)
        await sent_count(store, "c-b", 2)
        desk = ReplyDesk(store, TemporalCampaignSignals(ts_env.client), source="webhook")

        # By her address alone, unverified (CAMPAIGN_TRUSTED_AUTHSERV_ID unset): nothing.
        spoofed = await desk.process(answer(None, "spoof"))
        assert sorted((m.campaign_id, m.verified, m.notified, m.elsewhere)
                      for m in spoofed.matches) == [("c-a", False, False, []),
                                                    ("c-b", False, False, [])]

        # Answering c-a's message (a trusted match): c-a stops, and so does c-b. (The
        # double's Message-ID is the bare message key; a real one has a domain.)
        key = message_key("c-a", ana_a, 1)
        await store.upsert_delivery(message_key=key, campaign_id="c-a", lead_id=ana_a, step=1,
                                    channel="outbox", status="sent",
                                    message_id=f"<{key}@ours.test>")
        got = await desk.process(answer(f"<{key}@ours.test>", "yes"))
        assert [(m.campaign_id, m.lead_id, m.matched_by, m.notified, m.elsewhere)
                for m in got.matches] == [("c-a", ana_a, "message_id", True, ["c-b"])]

        async def stopped_in_b() -> bool:
            row = await store.get_step("c-b", ana_b, 2)
            return row is not None and row.status == "stopped"
        await until(stopped_in_b, "ana's step 2 in c-b stopped by the signal")
        final_a = await finish(ts_env, "c-a", DAY)
        final_b = await finish(ts_env, "c-b", DAY)
    assert final_a.stage is final_b.stage is Stage.COMPLETED
    assert Counter(sent) == Counter([ana_a, bo, f"{bo}#2", f"{bo}#3",
                                     ana_b, cy, f"{cy}#2", f"{cy}#3"])
    report = {(cid, r.lead_id, r.step): (r.delivery_status, r.stop_reason)
              for cid in ("c-a", "c-b") for r in await store.report(cid)}
    # The stop reason is the reply's intent (issue 27): the offline rules leave "Yes,
    # Tuesday works." to a person (`unclear`).
    assert report[("c-a", ana_a, 2)] == ("stopped", "unclear")
    assert report[("c-b", ana_b, 2)] == ("stopped", "replied in campaign c-a")
    assert report[("c-b", cy, 3)][0] == "sent"
    # The stop is in c-b's audit trail, naming the campaign replied to (no address).
    stops = [e.envelope["records"][0]["data"] for e in await store.audit("c-b", ana_b)
             if e.envelope["records"][0]["kind"] == "sequence_stop"]
    assert [s["stop_reason"] for s in stops] == ["replied in campaign c-a"]
    # c-b recorded no reply of its own: its counts are its own.
    assert (await store.counts("c-b")).replied == 0


async def test_a_reply_elsewhere_while_a_campaign_awaits_approval_stops_its_step_1(
        ts_env: WorkflowEnvironment, settings: Settings, store: SqliteStore, prefix: str,
        run_workers: Any) -> None:
    """c-b (two steps) awaits approval when ana replies to c-a: approved later, c-b sends
    ana nothing (step 1 `stopped`, the reason naming c-a; step 2 after it) and completes,
    its counts agreeing with its report."""
    sent: list[str] = []
    async with run_workers(ts_env.client, overrides=fast_agents(store, sent)):
        _, (ana_a,) = await started(ts_env, settings, store, prefix, "c-a", [ANA],
                                    follow_ups=["1d"])
        await sent_count(store, "c-a", 1)
        mgr = CampaignManager(settings, client=ts_env.client, store=store, queue_prefix=prefix,
                              use_search_attributes=False)
        intake = parse_lead_rows(enumerate([ANA, CY], start=2), "c-b")
        await mgr.start(intake, CampaignOptions(follow_ups=["1d"], allow_overlap=True),
                        name="c-b", campaign_id="c-b")
        await wait_stage(ts_env, "c-b", Stage.AWAITING_APPROVAL)
        ana_b, cy = (lead.lead_id for lead in await mgr._keyed("c-b", intake))

        key = message_key("c-a", ana_a, 1)
        await store.upsert_delivery(message_key=key, campaign_id="c-a", lead_id=ana_a, step=1,
                                    channel="outbox", status="sent",
                                    message_id=f"<{key}@ours.test>")
        desk = ReplyDesk(store, TemporalCampaignSignals(ts_env.client), source="webhook")
        got = await desk.process(answer(f"<{key}@ours.test>", "yes"))
        assert [(m.campaign_id, m.verified) for m in got.matches] == [("c-a", True)]

        assert await mgr.approve("c-b", by="tester") == 2
        final_b = await finish(ts_env, "c-b", DAY)
        await finish(ts_env, "c-a", DAY)
    assert final_b.stage is Stage.COMPLETED
    assert ana_b not in sent and f"{ana_b}#2" not in sent  # nothing to ana from c-b
    assert Counter(s for s in sent if s.startswith(cy)) == Counter([cy, f"{cy}#2"])
    report = {(r.lead_id, r.step): (r.delivery_status, r.stop_reason)
              for r in await store.report("c-b")}
    assert report[(ana_b, 1)] == ("stopped", "replied in campaign c-a")
    assert report[(ana_b, 2)][0] == "stopped"
    assert report[(cy, 1)][0] == report[(cy, 2)][0] == "sent"
    status = await mgr.status("c-b")
    c = status.counts
    tally = Counter(status for status, _ in report.values())
    assert (c.sent, c.stopped, c.pending, c.messages) == (
        tally["sent"], tally["stopped"], 0, len(report)) == (2, 2, 0, 4)
    assert [(s.step, s.sent) for s in status.steps] == [(1, 1), (2, 1)]


async def test_a_reply_elsewhere_stops_a_follow_up_when_it_falls_due(
        settings: Settings, store: SqliteStore) -> None:
    """No delivery was running to be signalled (c-b awaited approval): the follow-up's due
    check reads the person's reply to c-a since c-b was created; a reply from before it
    (c-b kept her with allow overlap) does not stop it."""
    for cid in ("c-a", "c-b"):
        await store.upsert_campaign(campaign_id=cid, name=cid, brief="", channel="outbox",
                                    kb_dir=None, workflow_id=f"campaign:{cid}")
        await store.set_stage(cid, "delivering")
    (ana_a,) = parse_lead_rows(enumerate([ANA], start=2), "c-a").leads
    (ana_b,) = parse_lead_rows(enumerate([ANA], start=2), "c-b").leads
    await store.upsert_leads("c-a", [ana_a])
    await store.upsert_leads("c-b", [ana_b])
    for step in (1, 2):
        await store.upsert_draft(campaign_id="c-b", lead_id=ana_b.lead_id, step=step,
                                 subject="s", body="b", citations=[], provenance={},
                                 envelope_id=f"e{step}")
    await store.record_decision(campaign_id="c-b", decision_id="d", decision="approve",
                                lead_ids=None, by="t", note=None)
    draft = await store.get_draft("c-b", ana_b.lead_id, 2)
    reply_id, _ = await store.record_reply(
        message_id="<r@x>", kind="reply", email=ANA["email"], source="imap",
        campaign_id="c-a", lead_id=ana_a.lead_id, matched_by="message_id")

    async def due() -> str | None:
        return await stop_reason_at_due(store, "c-b", ana_b, 2, draft, company=False)

    assert await due() == "replied in campaign c-a"
    before = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    with sqlite3.connect(store.path) as db:  # the reply came before c-b was created
        db.execute("UPDATE replies SET received_at = ? WHERE reply_id = ?", (before, reply_id))
    assert await due() is None


# -- skipped at intake ------------------------------------------------------------------------


@pytest.fixture
def cli_env(dev_env: WorkflowEnvironment, home: Path, prefix: str) -> dict[str, str]:
    """The CLI's environment: the dev server (the CLI sets search attributes, which the
    time-skipping server does not define), this test's store and queues."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "CAMPAIGN_"))}
    env.update({"TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
                "CAMPAIGN_HOME": str(home), "CAMPAIGN_TASK_QUEUE_PREFIX": prefix,
                "NO_COLOR": "1"})
    return env


def csv(path: Path, *people: dict[str, str]) -> Path:
    path.write_text("email,company\n" + "".join(f"{p['email']},{p['company']}\n"
                                                 for p in people))
    return path


async def replied_before(store: SqliteStore, cid: str, person: dict[str, str], days: float
                         ) -> None:
    """`person` was a lead of the finished campaign `cid` and replied `days` ago."""
    await store.upsert_campaign(campaign_id=cid, name=cid, brief="", channel="outbox",
                                kb_dir=None, workflow_id=f"campaign:{cid}")
    await store.set_stage(cid, "completed")
    (lead,) = parse_lead_rows(enumerate([person], start=2), cid).leads
    await store.upsert_leads(cid, [lead])
    reply_id, _ = await store.record_reply(
        message_id=f"<{cid}@x>", kind="reply", email=person["email"], source="imap",
        campaign_id=cid, lead_id=lead.lead_id, matched_by="message_id")
    at = (datetime.now(UTC) - timedelta(days=days)).isoformat()
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE replies SET received_at = ? WHERE reply_id = ?", (at, reply_id))


@pytest.mark.slow
async def test_a_second_campaign_skips_people_in_an_active_sequence_unless_overlap_is_allowed(
        dev_env: WorkflowEnvironment, settings: Settings, store: SqliteStore, prefix: str,
        run_workers: Any, cli_env: dict[str, str], tmp_path: Path) -> None:
    settings.api_token = SecretStr(TOKEN)
    # Ids of their own on the shared dev server.
    c1, c2, c3, c4, c5, c6, c7, c8 = (f"{prefix}c{n}" for n in range(1, 9))
    mgr = CampaignManager(settings, client=dev_env.client, store=store, queue_prefix=prefix)
    await replied_before(store, "c-old", EVE, days=30)  # within the 90-day cooldown
    await replied_before(store, "c-older", DEE, days=120)  # before it
    async with run_workers(dev_env.client, overrides=fast_agents(store)):
        first = await mgr.start(parse_lead_rows(enumerate([ANA, BO], start=2), c1),
                                CampaignOptions(follow_ups=["2d"]), name=c1,
                                campaign_id=c1)
        assert first.leads_skipped == [] and first.leads_accepted == 2
        await wait_stage(dev_env, c1, Stage.AWAITING_APPROVAL)  # ana and bo: active

        # The CLI, by default: ana skipped (c-1's), eve skipped (replied to c-old), dee
        # kept (her reply is older than the cooldown), cy kept.
        leads = csv(tmp_path / "second.csv", ANA, CY, DEE, EVE)
        second = await cli_json(cli_env, "start", "--leads", str(leads), "--id", c2)
        assert second["leads_accepted"] == 2
        assert second["leads_skipped"] == [
            {"email": ANA["email"], "reason": "active_sequence", "campaign_id": c1},
            {"email": EVE["email"], "reason": "replied", "campaign_id": "c-old"}]
        assert sorted(r.email for r in await store.report(c2)) == sorted(
            [CY["email"], DEE["email"]])
        # The same start again is the same campaign (the retry's digest is the request's).
        again = await cli_json(cli_env, "start", "--leads", str(leads), "--id", c2)
        assert again["workflow_id"] == second["workflow_id"]
        # ... and with --allow-overlap it is another start: refused, naming the option.
        code, _, err = await cli(cli_env, "start", "--leads", str(leads), "--id", c2,
                                 "--allow-overlap", "--json")
        assert code == 2 and "allow_overlap" in err, err
        # The text output says who was skipped, and why (cy and dee are c2's now).
        code, out, err = await cli(cli_env, "start", "--leads", str(
            csv(tmp_path / "third.csv", ANA, CY, FAY)), "--id", c3)
        assert code == 0, err
        assert "1 leads accepted, 0 rejected, 2 skipped" in out, out
        assert "--allow-overlap keeps them" in err
        assert f"{ANA['email']}: skipped: in the sequence still going on of campaign {c1}" in err

        # --allow-overlap keeps everyone.
        kept = await cli_json(cli_env, "start", "--leads", str(leads), "--id", c4,
                              "--allow-overlap")
        assert (kept["leads_accepted"], kept["leads_skipped"]) == (4, [])

        # The API, the same.
        async with serve(mgr) as client:
            body = {"name": "api", "id": c5, "leads": [ANA, GUS]}
            r = await client.post("/campaigns", json=body, headers=AUTH)
            assert r.status_code == 201, r.text
            assert r.json()["leads_skipped"] == [
                {"email": ANA["email"], "reason": "active_sequence", "campaign_id": c1}]
            r = await client.post("/campaigns", headers=AUTH, json={
                **body, "id": c6, "allow_overlap": True})
            assert r.status_code == 201, r.text
            assert (r.json()["leads_accepted"], r.json()["leads_skipped"]) == (2, [])
            # Everyone skipped: nothing started, the reason named.
            r = await client.post("/campaigns", headers=AUTH,
                                  json={"name": "api", "id": c7, "leads": [ANA, EVE]})
            assert r.status_code == 422 and "allow_overlap" in r.text, r.text
            assert await store.get_campaign(c7) is None

        # The manager: a start whose every lead is skipped starts nothing, and says why.
        with pytest.raises(BadInput, match=r"every lead was skipped \(1 in another active "
                           r"sequence\); allow overlap") as refused:
            await mgr.start(parse_lead_rows(enumerate([BO], start=2), c8), CampaignOptions(),
                            name=c8, campaign_id=c8)
        assert refused.value.field == "allow_overlap"
        assert await store.get_campaign(c8) is None
