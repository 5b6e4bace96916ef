"""Spend caps end to end: a campaign on the time-skipping server, the real copywriter and
the OpenAI-compatible test server (which reports token usage, so every call costs money).

A budget of a few calls' worth pauses drafting with `paused_reason` "budget: ..." before the
recorded spend can pass it (each call holds its worst case first); no lead is failed;
`resume --budget-usd` below the spend is refused, and a higher one drafts every remaining
lead and step exactly once, paying for no call twice. Then the CLI and the API's refusals
of bad budgets, each naming the option or field.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from campaign_core.ids import campaign_workflow_id
from campaign_core.leads import parse_lead_rows
from campaign_core.models import CampaignStatus, Stage
from campaign_core.settings import Settings
from campaign_core.store.base import Store
from starter.cli import app as cli_app
from starter.manager import BadInput, CampaignManager, Conflict
from starter.start_options import CampaignOptions
from tests.api.test_api import AUTH, serve
from tests.fakes.llm_server import LLMTestServer

LEADS = [{"email": f"p{i}@co{i}.example", "first_name": f"P{i}", "company": f"Co{i}",
          "title": "Head of Ops"} for i in range(6)]
BUDGET = 0.006  # one or two calls' worst case (~$0.004) at the test prices; a call costs ~$0.0007

_OPENED = {EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED}
_CLOSED = {EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED,
           EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED,
           EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED,
           EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT,
           EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED,
           EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_FAILED}


@pytest.fixture
def llm() -> Iterator[LLMTestServer]:
    with LLMTestServer() as server:
        yield server


def priced(settings: Settings, llm: LLMTestServer) -> Settings:
    return settings.model_copy(update={
        "llm_provider": "openai", "openai_api_key": SecretStr("test-key"),
        "openai_base_url": llm.base_url, "llm_model": "test-model",
        "llm_price_input": 1.0, "llm_price_output": 2.0,
    })


async def open_children(env: WorkflowEnvironment, cid: str) -> int:
    """Lead orchestrators started and not yet closed, from the campaign's history."""
    opened = closed = 0
    async for event in env.client.get_workflow_handle(campaign_workflow_id(cid)).fetch_history_events():
        opened += event.event_type in _OPENED
        closed += event.event_type in _CLOSED
    return opened - closed


async def paused_by_budget(env: WorkflowEnvironment, mgr: CampaignManager,
                           cid: str) -> CampaignStatus:
    """The status once the budget paused drafting and every lead in flight has finished."""
    st = None
    for _ in range(300):
        st = await mgr.status(cid)
        if st.paused and (st.paused_reason or "").startswith("budget") and \
                await open_children(env, cid) == 0:
            return await mgr.status(cid)
        await asyncio.sleep(0.1)
    raise AssertionError(f"{cid} was never paused by its budget: last {st}")


async def until_stage(mgr: CampaignManager, cid: str, stage: Stage) -> CampaignStatus:
    st = None
    for _ in range(600):
        st = await mgr.status(cid)
        if st.stage is stage:
            return st
        await asyncio.sleep(0.1)
    raise AssertionError(f"{cid} never reached {stage}: last {st}")


async def recorded_cost(store: Store, cid: str) -> float:
    """What the audit log's `llm_call` records say the campaign's calls cost (provenance)."""
    return round(sum(float(r["data"]["cost_usd"] or 0.0) for e in await store.audit(cid)
                     for r in e.envelope.get("records", []) if r.get("kind") == "llm_call"), 9)


async def test_budget_pauses_drafting_and_resume_with_more_finishes_it_once(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store, prefix: str,
    run_workers: Any, llm: LLMTestServer,
) -> None:
    from worker_main import build_agents

    llm_settings = priced(settings, llm)
    mgr = CampaignManager(llm_settings, client=ts_env.client, store=store, queue_prefix=prefix,
                          use_search_attributes=False)
    cid = "budget-1"
    async with run_workers(ts_env.client, agents=build_agents(store, llm_settings)):
        await mgr.start(parse_lead_rows(enumerate(LEADS, start=2), cid),
                        CampaignOptions(follow_ups=["1d"], budget_usd=BUDGET), name="b", campaign_id=cid)
        st = await paused_by_budget(ts_env, mgr, cid)
        assert st.stage is Stage.DRAFTING and st.budget_usd == BUDGET
        assert st.paused_reason is not None and st.paused_reason.startswith("budget: spent $")
        assert f"campaign resume {cid} --budget-usd" in st.paused_reason
        # Never past the cap: the spend recorded equals what the calls' records say they
        # cost, nothing is held any more, and drafting stopped short of all 12 messages.
        spend = await store.spend(cid)
        assert st.spend_usd is not None and 0 < st.spend_usd <= BUDGET
        assert spend.reserved_usd == 0 and st.spend_usd == await recorded_cost(store, cid)
        calls_before = llm.calls()
        assert 0 < len(calls_before) < len(LEADS) * 2
        assert all(c.status == 200 for c in calls_before)
        assert st.counts.draft_failed == 0 and st.counts.drafted < len(LEADS)
        assert not [r for r in await store.report(cid) if r.draft_status == "failed"]

        with pytest.raises(Conflict, match="less than the"):
            await mgr.control(cid, "resume", budget_usd=st.spend_usd / 2)
        with pytest.raises(BadInput, match="budget_usd"):
            await mgr.control(cid, "resume", budget_usd=-1.0)
        assert (await store.spend(cid)).budget_usd == BUDGET  # refused: unchanged

        await mgr.control(cid, "resume", budget_usd=1.0)
        done = await until_stage(mgr, cid, Stage.AWAITING_APPROVAL)

    assert not done.paused and done.budget_usd == 1.0
    assert (done.counts.leads, done.counts.drafted, done.counts.draft_failed) == (6, 6, 0)
    drafts = await store.list_drafts(cid)
    assert sorted(Counter((d.lead_id, d.step) for d in drafts).values()) == [1] * 12
    # Every message paid for once: 12 calls in all (no repairs were needed), all distinct.
    calls = llm.calls()
    assert len(calls) == 12
    assert len({json.dumps(c.body, sort_keys=True) for c in calls}) == 12
    assert done.spend_usd == await recorded_cost(store, cid) and done.spend_usd <= 1.0
    assert (await store.spend(cid)).reserved_usd == 0


# -- the doors refuse bad budgets, naming the option or field -----------------------------


@pytest.mark.parametrize("value", ["-1", "0", "nan"])
def test_cli_refuses_a_bad_budget(value: str, home: Any, tmp_path: Any) -> None:
    leads = tmp_path / "leads.csv"
    leads.write_text("email\nana@example.com\n")
    runner = CliRunner()
    start = runner.invoke(cli_app, ["start", "--leads", str(leads), f"--budget-usd={value}"])
    assert start.exit_code == 2 and "--budget-usd" in start.output
    resume = runner.invoke(cli_app, ["resume", "some-campaign", f"--budget-usd={value}"])
    assert resume.exit_code == 2 and "--budget-usd" in resume.output
    schedule = runner.invoke(cli_app, ["schedule", "create", "weekly", "--cron", "0 9 * * MON",
                                       "--leads", str(leads), f"--budget-usd={value}"])
    assert schedule.exit_code == 2 and "--budget-usd" in schedule.output


def test_cli_refuses_a_budget_that_is_not_a_number(home: Any, tmp_path: Any) -> None:
    leads = tmp_path / "leads.csv"
    leads.write_text("email\nana@example.com\n")
    result = CliRunner().invoke(cli_app, ["start", "--leads", str(leads), "--budget-usd", "ten"])
    assert result.exit_code == 2 and "--budget-usd" in result.output


async def test_api_takes_a_budget_and_refuses_bad_ones(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store, prefix: str,
    run_workers: Any, llm: LLMTestServer,
) -> None:
    from worker_main import build_agents

    settings.api_token = SecretStr("test-api-token-1234567890")
    llm_settings = priced(settings, llm)
    mgr = CampaignManager(llm_settings, client=ts_env.client, store=store, queue_prefix=prefix,
                          use_search_attributes=False)
    # The same 12 calls and cap as above: at most four fit even when the calls run one
    # after another (a smaller campaign paused only when its calls overlapped).
    body = {"name": "api-budget", "id": "api-budget", "leads": LEADS, "follow_ups": ["1d"]}
    async with run_workers(ts_env.client, agents=build_agents(store, llm_settings)), \
            serve(mgr) as client:
        for bad in (-1, 0, "ten"):
            r = await client.post("/campaigns", headers=AUTH, json={**body, "budget_usd": bad})
            assert r.status_code == 422, r.text
            assert r.json()["detail"][0]["loc"] == ["body", "budget_usd"]
        r = await client.post("/schedules", headers=AUTH, json={
            "name": "weekly", "cron": "0 9 * * MON", "leads": LEADS[:1], "budget_usd": -5})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "budget_usd"]

        r = await client.post("/campaigns", headers=AUTH, json={**body, "budget_usd": BUDGET})
        assert r.status_code == 201, r.text
        st = await paused_by_budget(ts_env, mgr, "api-budget")
        r = await client.get("/campaigns/api-budget", headers=AUTH)
        shown = r.json()
        assert shown["spend_usd"] == st.spend_usd and shown["budget_usd"] == BUDGET
        assert shown["paused_reason"].startswith("budget")

        r = await client.post("/campaigns/api-budget/resume", headers=AUTH,
                              json={"budget_usd": -1})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "budget_usd"]
        r = await client.post("/campaigns/api-budget/pause", headers=AUTH,
                              json={"budget_usd": 5})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "budget_usd"]
        r = await client.post("/campaigns/api-budget/resume", headers=AUTH,
                              json={"budget_usd": (st.spend_usd or 0.0) / 2})
        assert r.status_code == 409 and "less than the" in r.json()["detail"]
        r = await client.post("/campaigns/api-budget/resume", headers=AUTH,
                              json={"budget_usd": 1})
        assert r.status_code == 202, r.text
        done = await until_stage(mgr, "api-budget", Stage.AWAITING_APPROVAL)
        assert (done.counts.drafted, done.counts.draft_failed) == (len(LEADS), 0)
        r = await client.post("/campaigns/api-budget/pause", headers=AUTH)  # no body: as before
        assert r.status_code == 202
