"""Issue 11, item 9: with no encryption key, Temporal history holds ids, never personal data.

A whole campaign runs on the time-skipping server without `CAMPAIGN_ENCRYPTION_KEY`: a lead
whose address, names, company and notes are distinctive strings; an SMTP server whose
refusal quotes that address; an LLM answer whose cited claim fails the guardrail; an
approval by a named person with a note. Then every workflow's history is fetched as JSON
and none of those strings may appear in it, while the store still holds the full reasons
and the approver. Lead ids of new campaigns are salted; old campaigns keep theirs.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio import activity

from campaign_core.envelope import EnvelopeRef
from campaign_core.leads import lead_id_for, parse_lead_rows
from campaign_core.models import CampaignInput, Channel, LeadInput, Stage
from campaign_core.queues import WORKFLOW_QUEUE, queue_name
from campaign_core.settings import Settings
from campaign_core.store.base import new_lead_id_salt
from starter.manager import CampaignManager
from starter.start_options import CampaignOptions
from tests.conftest import KB
from tests.fakes.doubles import fast_agents
from tests.fakes.llm_server import LLMTestServer
from tests.fakes.smtp_server import SmtpSink, smtp_server
from tests.workflows.test_campaign_workflow import result_handle, wait_stage
from worker_main import build_agents
from workflows.campaign import CampaignWorkflow

CID = "c-history"
REFUSED = "zelda.qwx@zorbitron-industries.example"
CLAIM = "Quasarflux halves onboarding for Plinkerton"
APPROVER = "Ignatius Wobblesworth"
NOTE = "cleared with Prudencia Glimmerstone"
LEADS = [
    {"email": REFUSED, "first_name": "Zeldaqwx", "last_name": "Fenwickton",
     "company": "Zorbitron Industries", "title": "Head of Snorkelware",
     "notes": "met at the quibblefrost summit"},
    {"email": "bartholomew.vex@plinkerton-co.example", "first_name": "Bartholomewvex",
     "company": "Plinkerton Cogsworthy", "notes": "likes vorpalising dashboards"},
    {"email": "cass@example.com", "first_name": "Cass", "company": "Example Ltd"},
]
#: Every string that must stay out of history.
SECRETS = [REFUSED, "zelda.qwx", "zorbitron-industries.example", "Zeldaqwx", "Fenwickton",
           "Zorbitron", "Snorkelware", "quibblefrost", "bartholomew.vex", "plinkerton-co.example",
           "Bartholomewvex", "Plinkerton", "vorpalising", "cass@example.com", "Quasarflux",
           APPROVER, "Wobblesworth", NOTE, "Glimmerstone", "Quillamina", "Snazzlewick"]
#: A reviewer who excludes, includes and edits, and the subject she writes.
REVIEWER, EDITED_SUBJECT = "Quillamina Reviewer", "The Snazzlewick plan"


class ClaimingServer(LLMTestServer):
    """The test server; the action `claim` cites a claim the body does not make."""

    def _completion(self, body: dict[str, Any], action: str) -> dict[str, Any]:
        answer = super()._completion(body, "ok" if action == "claim" else action)
        if action == "claim":
            message = answer["choices"][0]["message"]
            draft = json.loads(message["content"])
            for citation in draft["citations"]:
                citation["claim"] = CLAIM
            message["content"] = json.dumps(draft)
        return answer


class RefusingSink(SmtpSink):
    """Refuses one recipient the way real servers do: quoting the address."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address == REFUSED:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def llm() -> Any:
    server = ClaimingServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def campaign_settings(settings: Settings, llm: LLMTestServer, smtp_url: str) -> Settings:
    assert settings.encryption_key is None, "this test is about history in clear"
    return settings.model_copy(update={
        "llm_provider": "openai", "openai_api_key": SecretStr("test-key"),
        "openai_base_url": llm.base_url, "llm_model": "test-model", "llm_timeout_seconds": 5.0,
        "smtp_url": SecretStr(smtp_url), "postal_address": "Relay Inc., 1 Main St, Springfield",
    })


def readable(history_json: str) -> str:
    """Every string in the history, one a line, payloads decoded (JSON shows their bytes
    as base64): what anyone reading the history could read."""
    out: list[str] = []

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str):
            out.append(base64.b64decode(value).decode("utf-8", "replace") if key == "data"
                       else value)

    walk(json.loads(history_json))
    return "\n".join(out)


async def all_histories(client: Any, root: str) -> dict[str, str]:
    """Every workflow run reachable from `root` (children, continuations), as JSON.

    The time-skipping server has no visibility API (`list_workflows` is unimplemented
    there), so the runs are found by following the histories themselves.
    """
    out: dict[str, str] = {}
    todo: list[tuple[str, str | None]] = [(root, None)]
    while todo:
        wid, run = todo.pop()
        key = f"{wid}/{run or 'first'}"
        if key in out:
            continue
        history = await client.get_workflow_handle(wid, run_id=run).fetch_history()
        out[key] = readable(history.to_json())
        for event in history.events:
            if event.HasField("start_child_workflow_execution_initiated_event_attributes"):
                todo.append((event.start_child_workflow_execution_initiated_event_attributes
                             .workflow_id, None))
            if event.HasField("workflow_execution_continued_as_new_event_attributes"):
                todo.append((wid, event.workflow_execution_continued_as_new_event_attributes
                             .new_execution_run_id))
    return out


async def test_history_holds_no_personal_data_without_a_key(
        ts_env, settings, store, prefix, run_workers, llm) -> None:
    llm.script("claim", "claim", match="first_name: Bartholomewvex")
    with smtp_server(sink=RefusingSink()) as (sink, url):
        s = campaign_settings(settings, llm, url)
        mgr = CampaignManager(s, client=ts_env.client, store=store, queue_prefix=prefix,
                              use_search_attributes=False)
        async with run_workers(ts_env.client, agents=build_agents(store, s)):
            await mgr.start(parse_lead_rows(enumerate(LEADS, start=2), CID),
                            CampaignOptions(brief="Book a call.", kb=str(KB), channel=Channel.SMTP),
                            name="history", campaign_id=CID)
            await wait_stage(ts_env, CID, Stage.AWAITING_APPROVAL)
            cass = next(d.lead_id for d in await store.list_drafts(CID)
                        if d.email == "cass@example.com")
            await mgr.set_excluded(CID, cass, excluded=True, by=REVIEWER)
            await mgr.set_excluded(CID, cass, excluded=False, by=REVIEWER)
            await mgr.edit_draft(CID, cass, subject=EDITED_SUBJECT, by=REVIEWER)
            await mgr.approve(CID, by=APPROVER, note=NOTE)
            final = await result_handle(ts_env, CID).result()
    assert final.stage is Stage.COMPLETED
    assert (final.counts.drafted, final.counts.draft_failed) == (2, 1)
    assert (final.counts.sent, final.counts.send_failed) == (1, 1)
    assert [m.rcpt_tos for m in sink.messages] == [["cass@example.com"]]

    # The store keeps the full story: the claim, the server's reply, the approver.
    report = {r.email: r for r in await store.report(CID)}
    assert CLAIM in (report["bartholomew.vex@plinkerton-co.example"].error or "")
    assert REFUSED in (report[REFUSED].error or "") and "550" in (report[REFUSED].error or "")
    decisions = [r for e in await store.audit(CID) for r in e.envelope["records"]
                 if r["kind"] == "decision"]
    assert [(d["data"]["by"], d["data"]["note"]) for d in decisions] == [(APPROVER, NOTE)]
    reviews = [r["data"].get("by") for e in await store.audit(CID) for r in e.envelope["records"]
               if r["kind"] in ("draft_excluded", "draft_included", "draft_edit")]
    assert reviews and set(reviews) == {REVIEWER}, reviews

    histories = await all_histories(ts_env.client, f"campaign:{CID}")
    assert len(histories) == 1 + len(LEADS) + 1, list(histories)  # campaign, leads, delivery
    assert f'"campaign_id":"{CID}"' in histories[f"campaign:{CID}/first"], "payloads decoded"
    found = {key: [word for word in SECRETS if word.lower() in text.lower()]
             for key, text in histories.items()}
    assert not {key: words for key, words in found.items() if words}


# -- lead ids ------------------------------------------------------------------------------


async def test_new_campaigns_salt_their_lead_ids_and_old_ones_keep_theirs(
        ts_env, settings, store, prefix, run_workers) -> None:
    mgr = CampaignManager(settings, client=ts_env.client, store=store, queue_prefix=prefix,
                          use_search_attributes=False)
    rows = [{"email": "Ann@Example.com", "first_name": "Ann"}]
    more = [{"email": " ann@example.COM", "first_name": "Ann"},
            {"email": "bob@example.com", "first_name": "Bob"}]
    gate = asyncio.Event()  # holds every lead in `store_lead`: the campaigns stay drafting
    overrides = fast_agents(store)

    @activity.defn(name="store_lead")
    async def store_lead(inp: LeadInput) -> EnvelopeRef:
        await gate.wait()
        return EnvelopeRef(envelope_id=f"env-lead-{inp.lead_id}", agent="double")

    overrides["store_lead"] = store_lead

    def intake(cid: str, leads: list[dict[str, str]]) -> Any:
        return parse_lead_rows(enumerate(leads, start=2), cid)

    async with run_workers(ts_env.client, overrides=overrides):
        try:
            # A new campaign: salted ids, stable across add-leads of the same address.
            await mgr.start(intake("c-new", rows), name="new", campaign_id="c-new")
            row = await store.get_campaign("c-new")
            assert row is not None and row.lead_id_salt
            salt = row.lead_id_salt
            ann = lead_id_for("c-new", "ann@example.com", salt)
            assert await store.list_lead_ids("c-new", None, 10) == [ann]
            assert ann != lead_id_for("c-new", "ann@example.com"), "unsalted: confirmable"
            await wait_stage(ts_env, "c-new", Stage.DRAFTING)
            added = await mgr.add_leads("c-new", intake("c-new", more))
            assert (added.leads_accepted, added.leads_already_present) == (1, 1)
            assert sorted(await store.list_lead_ids("c-new", None, 10)) == sorted(
                [ann, lead_id_for("c-new", "bob@example.com", salt)])
            # `--id` again: the running campaign, the same salt.
            again = await mgr.start(intake("c-new", rows), name="new", campaign_id="c-new")
            assert again.already_running
            assert (await store.get_campaign("c-new")).lead_id_salt == salt

            # A campaign from before salting (its row has no salt, its leads the plain ids,
            # its workflow runs) keeps the unsalted scheme. It is made here as it was then:
            # a start now refuses a stored row without a workflow (issue 25, finding 8).
            await store.upsert_campaign(campaign_id="c-old", name="old", brief="",
                                        channel="outbox", kb_dir=None,
                                        workflow_id="campaign:c-old")
            await store.upsert_leads("c-old", intake("c-old", rows).leads)
            await ts_env.client.start_workflow(
                CampaignWorkflow.run, CampaignInput(campaign_id="c-old", name="old",
                                                    queue_prefix=prefix,
                                                    use_search_attributes=False),
                id="campaign:c-old", task_queue=queue_name(WORKFLOW_QUEUE, prefix))
            again = await mgr.start(intake("c-old", rows), name="old", campaign_id="c-old")
            assert again.already_running  # compared on the row: no start memo back then
            old = await store.get_campaign("c-old")
            assert old is not None and old.lead_id_salt is None
            assert await store.list_lead_ids("c-old", None, 10) == [
                lead_id_for("c-old", "ann@example.com")]
            await wait_stage(ts_env, "c-old", Stage.DRAFTING)
            # (bob is in c-new's sequence too: kept, since the ids are the point here.)
            added = await mgr.add_leads("c-old", intake("c-old", more), allow_overlap=True)
            assert (added.leads_accepted, added.leads_already_present) == (1, 1)
            assert sorted(await store.list_lead_ids("c-old", None, 10)) == sorted(
                [lead_id_for("c-old", "ann@example.com"), lead_id_for("c-old", "bob@example.com")])
            other = await new_lead_id_salt(store, "c-other")
            assert other != salt and other == await new_lead_id_salt(store, "c-other")
        finally:
            gate.set()
    # Forget finds the person in both schemes.
    gone = await store.forget("ann@example.com")
    assert gone["leads"] == 2
    assert await store.list_lead_ids("c-new", None, 10) == [
        lead_id_for("c-new", "bob@example.com", salt)]
