"""Issue 25, from reading the code: a billed LLM call that timed out released its hold.

The copywriter holds each call's worst case before sending it. A call that timed out after
the request went out was released as "not answered", although the provider processes and
bills it; each retry was then granted the same money again, so the spend the provider
billed passed the cap while the ledger showed nothing. Now a call that may have been billed
(a read timeout, a 5xx, a cancelled attempt) is settled at its worst case, and only a call
that certainly did not reach the provider (connection refused, a 4xx) is released.

The OpenAI-compatible test server plays the provider: its `slow` action answers (and so
bills) after the client has given up. Temporal's retries are played by running the activity
again with the next attempt number, until the budget refuses it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import ActivityEnvironment

from activities.copywriter import CopywriterAgent
from activities.llm_client import cost_usd
from campaign_core.budget import BUDGET_EXHAUSTED
from campaign_core.ids import campaign_workflow_id
from campaign_core.leads import parse_lead_rows
from campaign_core.models import LeadInput
from campaign_core.ports import free_port
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from tests.fakes.llm_server import LLMTestServer

LEAD = {"email": "ana@example.com", "first_name": "Ana", "company": "Northwind",
        "title": "VP Operations"}
#: The client gives up after this; the server answers `slow` calls after `SLOW` seconds.
TIMEOUT, SLOW = 0.5, 1.5


@pytest.fixture
def llm() -> Iterator[LLMTestServer]:
    with LLMTestServer(slow_seconds=SLOW) as server:
        yield server


def priced(settings: Settings, base_url: str) -> Settings:
    return settings.model_copy(update={
        "llm_provider": "openai", "openai_api_key": SecretStr("test-key"),
        "openai_base_url": base_url, "llm_model": "test-model", "llm_timeout_seconds": TIMEOUT,
        # The test server's drafts run to about 75 completion tokens: with output dear and
        # input cheap, a call costs over half its worst case, as with a real provider.
        "llm_price_input": 0.1, "llm_price_output": 10.0, "llm_max_output_tokens": 100,
    })


async def seed(store: SqliteStore, cid: str, budget_usd: float | None) -> str:
    await store.upsert_campaign(campaign_id=cid, name="t", brief="Book a call.", channel="outbox",
                                kb_dir=None, workflow_id=campaign_workflow_id(cid),
                                budget_usd=budget_usd)
    (lead,) = parse_lead_rows(enumerate([LEAD], start=2), cid).leads
    await store.upsert_leads(cid, [lead])
    return lead.lead_id


def attempt_env(attempt: int) -> ActivityEnvironment:
    """The activity's context on Temporal's `attempt`-th try."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    return env


def billed(llm: LLMTestServer, settings: Settings) -> float:
    """What the provider bills: every chat request it processed (a `slow` one too, answered
    after the client gave up), at the usage its answer reports."""
    total = 0.0
    for call in llm.calls():
        if call.action in ("ok", "slow"):
            usage = llm._completion(call.body, "ok")["usage"]
            total += cost_usd(settings.llm_model, settings, usage["prompt_tokens"],
                              usage["completion_tokens"]) or 0.0
    return round(total, 9)


async def worst_case(store: SqliteStore, settings: Settings, llm: LLMTestServer) -> float:
    """One call's worst case, as the copywriter holds it: measured on a campaign of its own
    whose one (answered) attempt is held while the server is still thinking."""
    cid = "c-measure"
    lead_id = await seed(store, cid, None)
    llm.script("slow")
    slow = settings.model_copy(update={"llm_timeout_seconds": 30.0})
    task = asyncio.ensure_future(attempt_env(1).run(CopywriterAgent(store, slow).write_draft,
                                                    LeadInput(campaign_id=cid, lead_id=lead_id)))
    for _ in range(200):
        held = (await store.spend(cid)).reserved_usd
        if held:
            break
        await asyncio.sleep(0.01)
    await task
    llm.reset()
    return held


async def test_timed_out_calls_keep_their_hold_and_the_billed_spend_stays_under_the_cap(
        store: SqliteStore, settings: Settings, llm: LLMTestServer) -> None:
    llm_settings = priced(settings, llm.base_url)
    worst = await worst_case(store, llm_settings, llm)
    budget = round(2.5 * worst, 9)  # two calls' worst case fit, a third does not
    lead_id = await seed(store, "c-hang", budget)
    llm.script(*["slow"] * 12, match="first_name: Ana")  # every attempt hangs
    agent = CopywriterAgent(store, llm_settings)
    outcomes: list[str] = []
    ledger: list[tuple[float, float]] = []  # (spent + held, billed so far) after each attempt
    for attempt in range(1, 11):  # Temporal's retries, until the budget refuses one
        with pytest.raises(ApplicationError) as err:
            await attempt_env(attempt).run(agent.write_draft,
                                           LeadInput(campaign_id="c-hang", lead_id=lead_id))
        outcomes.append(str(err.value.type))
        spend = await store.spend("c-hang")
        ledger.append((spend.spent_usd + spend.reserved_usd, billed(llm, llm_settings)))
        if err.value.type == BUDGET_EXHAUSTED:
            assert "spent $" in err.value.message
            break
    await asyncio.sleep(SLOW)  # the server answers the hung calls: they are billed
    assert all(c.status == 200 for c in llm.calls())
    # What the provider billed never passes the cap, and the ledger never counts less.
    assert billed(llm, llm_settings) <= budget, (outcomes, ledger)
    assert all(counted >= paid for counted, paid in ledger), ledger
    assert outcomes == ["LLMTimeout", "LLMTimeout", BUDGET_EXHAUSTED]
    spend = await store.spend("c-hang")
    assert spend.spent_usd == pytest.approx(2 * worst) and spend.reserved_usd == 0


@pytest.mark.parametrize("fault, charged", [
    ("500", True),    # the provider failed after processing: may be billed
    ("503", True),
    ("429", False),   # refused, not processed
    ("400", False),
    ("refused", False),  # no connection: nothing reached the provider
])
async def test_only_a_call_that_never_reached_the_provider_is_released(
        store: SqliteStore, settings: Settings, llm: LLMTestServer, fault: str,
        charged: bool) -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1" if fault == "refused" else llm.base_url
    llm_settings = priced(settings, base_url)
    cid = f"c-{fault}"
    lead_id = await seed(store, cid, 1.0)
    if fault != "refused":
        llm.script(fault)
    with pytest.raises(ApplicationError):
        await attempt_env(1).run(CopywriterAgent(store, llm_settings).write_draft,
                                 LeadInput(campaign_id=cid, lead_id=lead_id))
    spend = await store.spend(cid)
    assert spend.reserved_usd == 0
    assert (spend.spent_usd > 0) is charged, spend
    # The retry that succeeds is charged on its own line: the first attempt's charge stays.
    await attempt_env(2).run(CopywriterAgent(store, priced(settings, llm.base_url)).write_draft,
                             LeadInput(campaign_id=cid, lead_id=lead_id))
    after = await store.spend(cid)
    answered = billed(llm, llm_settings)
    assert after.spent_usd == pytest.approx(spend.spent_usd + answered) and after.reserved_usd == 0


async def test_an_attempt_cancelled_mid_call_keeps_its_worst_case(
        store: SqliteStore, settings: Settings, llm: LLMTestServer) -> None:
    """A heartbeat or start-to-close timeout cancels the attempt while the request is at
    the provider: its hold is charged, not left for the retry to take over."""
    llm_settings = priced(settings, llm.base_url).model_copy(
        update={"llm_timeout_seconds": 30.0})
    lead_id = await seed(store, "c-cancel", 1.0)
    llm.script("slow")
    env = attempt_env(1)
    task: asyncio.Future[Any] = asyncio.ensure_future(env.run(
        CopywriterAgent(store, llm_settings).write_draft,
        LeadInput(campaign_id="c-cancel", lead_id=lead_id)))
    for _ in range(200):
        if llm.calls():
            break
        await asyncio.sleep(0.01)
    held = (await store.spend("c-cancel")).reserved_usd
    assert held > 0
    env.cancel()
    with pytest.raises((asyncio.CancelledError, CancelledError)):
        await task
    spend = await store.spend("c-cancel")
    assert spend.reserved_usd == 0 and spend.spent_usd == pytest.approx(held)
