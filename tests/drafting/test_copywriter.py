"""The copywriter against the OpenAI-compatible test server, with the real `openai` SDK.

Agent-level checks run the activity in `ActivityEnvironment`; workflow-level checks
run whole campaigns on the time-skipping server, where retry back-offs and
Retry-After delays are skipped while the test awaits a result.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.copywriter import (
    OFFLINE_MODEL,
    PROMPT_NAME,
    CopywriterAgent,
    PromptTemplate,
    prompt_template,
)
from activities.guardrails import BriefRules, Citation, DraftOutput, check_draft, placeholders
from activities.llm_client import retry_after
from activities.registry import AGENTS, PERMANENT_ERRORS
from campaign_core.envelope import EnvelopeRef
from campaign_core.ids import campaign_workflow_id
from campaign_core.leads import Lead, parse_lead_rows
from campaign_core.models import CampaignStatus, LeadInput, Stage
from campaign_core.queues import QUEUES, WORKFLOW_QUEUE
from starter.manager import CampaignManager
from starter.start_options import CampaignOptions
from tests.conftest import KB
from tests.fakes.llm_server import INVENTED_PASSAGE
from worker_main import build_agents, build_workers, server_rate

BRIEF = ("Book a 20-minute intro call. Plain tone, under 120 words. "
         "Every claim must cite the knowledge base.")
PASSAGES: list[dict[str, Any]] = [
    {"passage_id": "case-study-logistics.md#3-1a2b3c4d", "source": "case-study-logistics.md",
     "title": "Results after six months",
     "text": "## Results after six months\n\nTime from shipment exception to customer update fell "
             "from 26 hours to 3 hours. Zero duplicate customer emails during two outages.",
     "score": 2.1},
    {"passage_id": "security-and-compliance.md#1-5e6f7a8b", "source": "security-and-compliance.md",
     "title": "Certifications",
     "text": "## Certifications\n\nRelay holds a SOC 2 Type II report and supports SSO with SAML.",
     "score": 1.2},
]
LEADS = [
    {"email": "ana@example.com", "first_name": "Ana", "company": "Northwind Freight",
     "title": "VP Operations"},
    {"email": "bo@example.org", "first_name": "Bo", "company": "Ledgerly", "title": "CTO"},
    {"email": "cy@example.net", "first_name": "Cy", "company": "Carely", "title": "Head of Growth"},
]




async def seed(store, cid: str, leads=LEADS, passages=PASSAGES, kb_dir: str | None = None) -> list[Lead]:
    """A campaign whose leads already have their passages retrieved."""
    await store.upsert_campaign(campaign_id=cid, name="t", brief=BRIEF, channel="outbox",
                                kb_dir=kb_dir, workflow_id=campaign_workflow_id(cid))
    intake = parse_lead_rows(enumerate(leads, start=2), cid)
    await store.upsert_leads(cid, intake.leads)
    for lead in intake.leads:
        await store.save_retrieval(cid, lead.lead_id, passages, "env_seeded")
    return intake.leads


async def run_write(agent: CopywriterAgent, cid: str, lead_id: str, *, attempt: int = 1,
                    heartbeat_timeout: timedelta | None = None, beats: list[Any] | None = None
                    ) -> EnvelopeRef:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt, heartbeat_timeout=heartbeat_timeout)
    if beats is not None:
        env.on_heartbeat = lambda *details: beats.append(details)
    return await env.run(agent.write_draft, LeadInput(campaign_id=cid, lead_id=lead_id))


async def draft_record(store, ref: EnvelopeRef) -> dict[str, Any]:
    env = await store.get_envelope(ref.envelope_id)
    assert env is not None
    (record,) = [r for r in env.records if r.kind == "draft"]
    return {**record.data, "provenance": record.provenance}


# -- structured output, provenance, cost -------------------------------------------------


async def test_structured_output_is_parsed_into_the_model(store, llm, llm_settings):
    leads = await seed(store, "c-parse")
    agent = CopywriterAgent(store, llm_settings)
    ref = await run_write(agent, "c-parse", leads[0].lead_id)
    draft = await draft_record(store, ref)
    (call,) = llm.calls()
    assert call.response_format == "json_schema"
    schema = call.body["response_format"]["json_schema"]
    assert schema["name"] == "DraftOutput" and schema["strict"] is True
    assert set(schema["schema"]["required"]) == {"subject", "body", "personal_points", "citations"}
    assert draft["subject"] == "A question for Northwind Freight"
    assert draft["body"].startswith("Hi Ana,")
    assert draft["personal_points"] == ["VP Operations", "Northwind Freight"]
    assert draft["citations"] == [PASSAGES[0]["passage_id"]]
    assert draft["claims"][0]["claim"].startswith("Time from shipment exception")
    # Provenance: prompt hash, template hash, model, tokens and cost.
    assert draft["model"] == "test-model" and draft["provider"] == "openai"
    assert draft["provenance"].model == "test-model"
    assert draft["provenance"].inputs_digest == draft["prompt_hash"]
    assert draft["provenance"].prompt_hash == draft["prompt_hash"]
    assert draft["provenance"].tokens == draft["usage"]["total_tokens"] > 0
    assert draft["provenance"].cost_usd == draft["cost_usd"]
    assert draft["template"] == PROMPT_NAME
    assert draft["template_hash"] == prompt_template().sha256
    usage = draft["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    expected = (usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1e6
    assert draft["cost_usd"] == pytest.approx(expected)
    assert (draft["llm_calls"], draft["repaired"]) == (1, False)
    # The prompt carries the passages and the lead's fields, never the email address.
    user = call.body["messages"][1]["content"]
    assert PASSAGES[0]["passage_id"] in user and "Northwind Freight" in user
    assert "ana@example.com" not in user


def test_prompt_template_sections_and_hash(tmp_path):
    template = prompt_template()
    assert set(template.sections) == {"system", "user", "repair"}
    assert "$" not in template.render("user", brief="b", lead="l", passages="p")
    (tmp_path / "p.md").write_text("[system]\nonly a system part\n")
    with pytest.raises(ValueError, match="missing section"):
        PromptTemplate.load("p", tmp_path)


# -- guardrails ----------------------------------------------------------------------------


async def test_citation_to_a_passage_not_retrieved_is_caught_and_repaired(store, llm, llm_settings):
    leads = await seed(store, "c-repair")
    llm.script("bad_citation")
    ref = await run_write(CopywriterAgent(store, llm_settings), "c-repair", leads[0].lead_id)
    first, second = llm.calls()
    assert (first.repair, second.repair) == (False, True)
    repair_instructions = second.body["messages"][-1]["content"]
    assert INVENTED_PASSAGE in repair_instructions
    assert "not one of the retrieved passages" in repair_instructions
    assert second.body["messages"][-2]["role"] == "assistant"  # it sees its own answer
    draft = await draft_record(store, ref)
    assert INVENTED_PASSAGE not in draft["citations"]
    assert (draft["llm_calls"], draft["repaired"]) == (2, True)


async def test_guardrail_violation_after_the_repair_is_kept_as_a_failed_step(
        store, llm, llm_settings):
    """A draft still failing after the one repair is not retried: it is kept with its text
    and reasons, marked failed, for the reviewer to fix (issue 24); the reasons quote the
    draft, so they go to the store and never into the reference history carries."""
    leads = await seed(store, "c-guard")
    llm.default_action = "bad_citation"
    ref = await run_write(CopywriterAgent(store, llm_settings), "c-guard", leads[0].lead_id)
    record = await draft_record(store, ref)
    assert record["guardrails"] == "failed"
    assert record["failed_reason"].startswith("guardrail (after one repair attempt): ")
    assert INVENTED_PASSAGE in record["failed_reason"]
    assert INVENTED_PASSAGE not in ref.model_dump_json()
    assert len(llm.calls()) == 2, "one draft call and exactly one repair"


@pytest.mark.parametrize("action, reason", [
    ("malformed", "not valid JSON"),
    ("placeholder", "unfilled placeholders"),
    ("refusal", "refused"),
    ("length", "cut off"),
])
async def test_broken_outputs_get_one_repair(store, llm, llm_settings, action, reason):
    leads = await seed(store, f"c-{action}")
    llm.script(action)
    ref = await run_write(CopywriterAgent(store, llm_settings), f"c-{action}", leads[0].lead_id)
    first, second = llm.calls()
    assert first.action == action and second.repair
    assert reason in second.body["messages"][-1]["content"]
    assert (await draft_record(store, ref))["repaired"] is True


def _lead(**kw: Any) -> Lead:
    return Lead(lead_id="ld_1", email="ana@example.com", **kw)


def _draft(body: str, citations: list[tuple[str, str]] | None = None,
           subject: str = "Hello Ana") -> DraftOutput:
    return DraftOutput(subject=subject, body=body, personal_points=[],
                       citations=[Citation(passage_id=p, claim=c) for p, c in citations or []])


GOOD_BODY = ("Hi Ana,\n\nTeams like Northwind Freight cut the time from shipment exception to customer "
             "update from 26 hours to 3 hours. Would a short call next week help?\n\nBest regards")
GOOD_CLAIM = (PASSAGES[0]["passage_id"], "cut the time from shipment exception to customer update "
              "from 26 hours to 3 hours")


def test_guardrails_pass_a_grounded_draft():
    lead = _lead(first_name="Ana", company="Northwind Freight")
    assert check_draft(_draft(GOOD_BODY, [GOOD_CLAIM]), passages=PASSAGES, lead=lead, brief=BRIEF) == []


@pytest.mark.parametrize("body, citations, subject, expected", [
    (GOOD_BODY.replace("Ana", "{first_name}"), [GOOD_CLAIM], "Hi", "placeholders: {first_name}"),
    (GOOD_BODY.replace("Northwind Freight", "[Company]"), [GOOD_CLAIM], "Hi", "[Company]"),
    (GOOD_BODY, [GOOD_CLAIM], "Hello {{ name }}", "the subject has unfilled placeholders"),
    (GOOD_BODY, [GOOD_CLAIM, ("pricing.md#0-00000000", "Best regards")], "Hi",
     "'pricing.md#0-00000000' is not one of the retrieved passages"),
    (GOOD_BODY + " [faq.txt#1-ffffffff]", [GOOD_CLAIM], "Hi", "'faq.txt#1-ffffffff' is not one"),
    (GOOD_BODY, [], "Hi", "there are no citations"),
    (GOOD_BODY.replace("3 hours", "2 hours"), [(GOOD_CLAIM[0], "update fell to 2 hours")], "Hi",
     "figures no cited passage supports: 2"),
    (GOOD_BODY, [(PASSAGES[1]["passage_id"], "SOC 2 Type II report")], "Hi", "is not in the body"),
    ("Hi Ana, short.", [], "Hi", "at least 15"),
    (GOOD_BODY + " word" * 130, [GOOD_CLAIM], "Hi", "the limit is 120"),
    (GOOD_BODY, [GOOD_CLAIM], "x" * 121, "at most 120"),
])
def test_guardrails_catch(body, citations, subject, expected):
    lead = _lead(first_name="Ana", company="Northwind Freight")
    reasons = check_draft(_draft(body, list(citations), subject), passages=PASSAGES, lead=lead,
                          brief=BRIEF)
    assert any(expected in r for r in reasons), reasons


def test_brief_rules_and_placeholders():
    assert BriefRules.from_brief(BRIEF) == BriefRules(max_words=120, citations_required=True)
    assert BriefRules.from_brief("Be nice.") == BriefRules(max_words=300, citations_required=False)
    assert placeholders("Hi <first_name>, see [case-study.md#1-abcdef12] and ${x}") == [
        "<first_name>", "${x}"]
    # Figures are free when the brief does not ask for citations.
    lead = _lead(first_name="Ana")
    body = GOOD_BODY.replace("26 hours", "99 hours")
    assert check_draft(_draft(body, [GOOD_CLAIM]), passages=PASSAGES, lead=lead, brief="Be brief.") == []


# -- failure semantics -------------------------------------------------------------------


@pytest.mark.parametrize("action, kind, permanent, delay", [
    ("429", "LLMRateLimited", False, timedelta(seconds=7)),
    ("408", "LLMUnavailable", False, None),
    ("409", "LLMUnavailable", False, None),
    ("500", "LLMUnavailable", False, None),
    ("503", "LLMUnavailable", False, None),
    ("slow", "LLMTimeout", False, None),
    ("400", "LLMRequestRejected", True, None),
    ("404", "LLMRequestRejected", True, None),
    ("422", "LLMRequestRejected", True, None),
    ("401", "LLMAuthError", True, None),
    ("403", "LLMAuthError", True, None),
])
async def test_each_provider_failure_is_classified(store, llm, llm_settings, action, kind, permanent,
                                                   delay):
    leads = await seed(store, f"c-f{action}")
    llm.script(action)
    llm.slow_seconds = 3.0
    # Only the slow call gets a short timeout, so a loaded machine cannot turn the others into one.
    settings = llm_settings.model_copy(update={"llm_timeout_seconds": 1.0 if action == "slow" else 10.0})
    with pytest.raises(ApplicationError) as err:
        await run_write(CopywriterAgent(store, settings), f"c-f{action}", leads[0].lead_id)
    assert err.value.type == kind
    assert err.value.non_retryable is permanent
    assert (kind in PERMANENT_ERRORS) is permanent, "the registry must agree with the agent"
    assert err.value.next_retry_delay == delay
    assert len(llm.calls()) == 1, "the SDK's own retries are off: Temporal retries"


async def test_bad_key_is_an_auth_error_that_names_no_secret(store, llm, llm_settings):
    leads = await seed(store, "c-key")
    bad = llm_settings.model_copy(update={"openai_api_key": SecretStr("sk-wrong-secret")})
    with pytest.raises(ApplicationError) as err:
        await run_write(CopywriterAgent(store, bad), "c-key", leads[0].lead_id)
    assert err.value.type == "LLMAuthError" and err.value.non_retryable
    assert "OPENAI_API_KEY" in err.value.message and "sk-wrong-secret" not in str(err.value)


def test_retry_after_header_forms():
    assert retry_after({"retry-after": "2.5"}) == timedelta(seconds=2.5)
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == timedelta(seconds=1.5)
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    got = retry_after({"retry-after": soon})
    assert got is not None and timedelta(seconds=100) < got <= timedelta(seconds=120)
    assert retry_after({"retry-after": "86400"}) == timedelta(minutes=5), "capped"
    assert retry_after({"retry-after": "soon"}) is None and retry_after({}) is None


async def test_long_calls_heartbeat(store, llm, llm_settings):
    leads = await seed(store, "c-beat")
    llm.latency = 0.6
    beats: list[Any] = []
    await run_write(CopywriterAgent(store, llm_settings), "c-beat", leads[0].lead_id,
                    heartbeat_timeout=timedelta(seconds=0.15), beats=beats)
    assert beats, "a call longer than the heartbeat timeout must heartbeat"


# -- no paid call twice --------------------------------------------------------------------


class CrashAfterCall(CopywriterAgent):
    """Dies right after the draft is written, before the activity can report it."""

    crashed = False

    async def keep(self, envelope, lead_id, summary):
        ref = await super().keep(envelope, lead_id, summary)
        if not self.crashed and any(r.kind == "draft" for r in envelope.records):
            type(self).crashed = True
            raise RuntimeError("worker crashed")
        return ref


async def test_second_attempt_after_a_crash_takes_the_cached_draft(store, llm, llm_settings):
    leads = await seed(store, "c-crash")
    agent = CrashAfterCall(store, llm_settings)
    with pytest.raises(RuntimeError, match="crashed"):
        await run_write(agent, "c-crash", leads[0].lead_id, attempt=1)
    ref = await run_write(agent, "c-crash", leads[0].lead_id, attempt=2)
    assert len(llm.calls()) == 1, "the retry must not pay for a second call"
    assert "already written" in ref.summary
    assert (await draft_record(store, ref))["subject"] == "A question for Northwind Freight"


async def test_a_call_answered_before_a_crash_is_not_paid_again(store, llm, llm_settings):
    """A crash between the draft call and the repair call: the retry reuses the first answer."""
    leads = await seed(store, "c-crash2")
    llm.script("bad_citation", "500")
    agent = CopywriterAgent(store, llm_settings)
    with pytest.raises(ApplicationError, match="HTTP 500"):
        await run_write(agent, "c-crash2", leads[0].lead_id, attempt=1)
    ref = await run_write(agent, "c-crash2", leads[0].lead_id, attempt=2)
    draft = await draft_record(store, ref)
    assert [c.repair for c in llm.calls()] == [False, True, True]
    assert (draft["llm_calls"], draft["cached_calls"]) == (2, 1)


# -- offline provider --------------------------------------------------------------------


async def test_offline_writer_is_the_default_without_a_key(store, settings, llm):
    assert settings.resolved_llm_provider == "offline"
    leads = await seed(store, "c-off")
    ref = await run_write(CopywriterAgent(store, settings), "c-off", leads[0].lead_id)
    draft = await draft_record(store, ref)
    assert draft["provenance"].model == OFFLINE_MODEL == draft["model"]
    assert draft["citations"] == [p["passage_id"] for p in PASSAGES]
    assert "26 hours to 3 hours" in draft["body"], "it uses the retrieved passages"
    assert llm.calls() == []


def test_unknown_provider_is_refused_at_start(settings):
    with pytest.raises(ValueError, match="CAMPAIGN_LLM_PROVIDER"):
        CopywriterAgent(None, settings.model_copy(update={"llm_provider": "anthropic"}))  # type: ignore[arg-type]


# -- rate limiting -----------------------------------------------------------------------


def gcra_dispatch_times(rate: float, tasks: int, burst_s: float = 1.0) -> list[float]:
    """When Temporal's matching service hands out `tasks` waiting tasks at `rate` a second,
    starting after a lull: its limiter (service/matching/matcher_data.go, `simpleLimiter`,
    the new matcher's; burst of one second) as arithmetic. A task may go once the ready
    time is not after now; each task moves the ready time on by one interval, from at
    least `burst_s` before now."""
    interval, ready, now, times = 1 / rate, float("-inf"), 0.0, []
    for _ in range(tasks):
        now = max(now, ready)
        times.append(now)
        ready = max(now, ready + burst_s) - burst_s + interval
    return times


def test_no_five_second_window_can_pass_the_limit_by_more_than_a_tenth() -> None:
    """A full backlog after a lull: the burst (a second's worth and one more) and five
    seconds of the rate, counted as the benchmark counts the provider's log."""
    from bench.bench_llm_rate import busiest_window

    for limit in [0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 20, 33.3, 50, 100, 1000]:
        rate = server_rate(limit)
        assert rate is not None and 0 < rate < limit
        times = gcra_dispatch_times(rate, tasks=int(30 * limit) + 20)
        assert busiest_window(times) <= 5.5 * limit + 1e-9, limit
    assert server_rate(None) is None
    assert server_rate(10) == pytest.approx(9.0)  # a saturated queue averages 0.9 of 10/s
    # The limit itself would not do: 11 at once, then 10 a second (60 in five seconds).
    assert busiest_window(gcra_dispatch_times(10, tasks=100)) > 5.5 * 10
    # At 9/s: ten at once (the tenth at 0), then one every ninth of a second.
    assert gcra_dispatch_times(9, tasks=12)[9:] == pytest.approx([0, 1 / 9, 2 / 9], abs=1e-9)


async def test_llm_rate_limit_is_task_queue_wide_and_not_bypassed_by_eager(ts_env, store, settings):
    tuned = settings.model_copy(update={"llm_rate_limit": 2.5, "llm_provider": "openai",
                                        "openai_api_key": SecretStr("k")})
    workers = {w.task_queue: w.config() for w in build_workers(ts_env.client, store, tuned, prefix="x-")}
    llm_worker = workers["x-llm"]
    # Below the limit by the server's one-second burst (worker_main.server_rate).
    assert llm_worker["max_task_queue_activities_per_second"] == pytest.approx(2.125)
    # The offline template writer calls no provider: no provider's rate holds it back.
    offline = settings.model_copy(update={"llm_rate_limit": 2.5, "llm_provider": "offline"})
    offline_llm = {w.task_queue: w.config() for w in build_workers(
        ts_env.client, store, offline, prefix="y-")}["y-llm"]
    assert offline_llm["max_task_queue_activities_per_second"] is None
    assert llm_worker["max_concurrent_activities"] == QUEUES["llm"].max_concurrent
    assert llm_worker["disable_eager_activity_execution"] is True
    # Eager execution only ever runs activities on the scheduling workflow's own queue; the
    # workflow queue has eager off and no agent (rate-limited or not) lives on it.
    assert workers[f"x-{WORKFLOW_QUEUE}"]["disable_eager_activity_execution"] is True
    assert AGENTS[CopywriterAgent.write_draft].queue == "llm"
    assert all(spec.queue != WORKFLOW_QUEUE for spec in AGENTS.values())


# -- whole campaigns on the time-skipping server ------------------------------------------


async def run_campaign(ts_env, settings, store, prefix, cid: str, run_workers, agents=None,
                       overrides=None) -> CampaignStatus | WorkflowFailureError:
    """Run a campaign until it has drafted every lead (or failed) and return its status.

    Retry delays are skipped with `ts_env.sleep` between polls: a handle from
    `get_workflow_handle` does not unlock time skipping while awaiting a result.
    """
    mgr = CampaignManager(settings, client=ts_env.client, store=store, queue_prefix=prefix,
                          use_search_attributes=False)
    intake = parse_lead_rows(enumerate(LEADS, start=2), cid)
    async with run_workers(ts_env.client, agents=agents, overrides=overrides):
        await mgr.start(intake, CampaignOptions(brief=BRIEF, kb=str(KB), approval_timeout="3d"), name="t",
                        campaign_id=cid)
        handle = ts_env.client.get_workflow_handle(campaign_workflow_id(cid),
                                                   result_type=CampaignStatus)
        for _ in range(200):
            if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                try:
                    result: CampaignStatus = await handle.result()
                    return result
                except WorkflowFailureError as err:
                    return err
            status: CampaignStatus = await handle.query("status", result_type=CampaignStatus)
            if status.stage is not Stage.DRAFTING:
                return status
            await ts_env.sleep(timedelta(seconds=15))  # skipped: lets retry back-offs elapse
    raise AssertionError(f"{cid} is still drafting")


async def test_campaign_survives_transient_errors_and_fails_guardrail_leads(
    ts_env, store, prefix, run_workers, llm, llm_settings
):
    llm.retry_after = 30  # skipped by the time-skipping server, not waited
    llm.script("429", "500", "slow", match="first_name: Ana")
    llm.slow_seconds = 5.0
    llm.script("bad_citation", "bad_citation", match="first_name: Bo")
    settings = llm_settings.model_copy(update={"llm_timeout_seconds": 2.0})
    final = await run_campaign(ts_env, settings, store, prefix, "c-mixed", run_workers,
                               agents=build_agents(store, settings))
    assert isinstance(final, CampaignStatus) and final.stage is Stage.AWAITING_APPROVAL
    assert (final.counts.drafted, final.counts.draft_failed) == (2, 1)
    rows = {r.email: r for r in await store.report("c-mixed")}
    assert rows["ana@example.com"].draft_status == "drafted"
    assert [c.action for c in llm.calls(lead="Ana")] == ["429", "500", "slow", "ok"]
    assert rows["bo@example.org"].draft_status == "failed"
    assert "guardrail" in (rows["bo@example.org"].error or "")
    assert INVENTED_PASSAGE in (rows["bo@example.org"].error or "")
    assert len(llm.calls(lead="Bo")) == 2, "a guardrail failure is not retried"
    assert rows["cy@example.net"].draft_status == "drafted"
    drafts = {d.email: d for d in await store.list_drafts("c-mixed")}
    assert drafts["cy@example.net"].citations, "drafts cite the retrieved passages"


async def test_bad_key_fails_the_campaign_once(ts_env, store, prefix, run_workers, llm, llm_settings):
    bad = llm_settings.model_copy(update={"openai_api_key": SecretStr("sk-wrong")})
    final = await run_campaign(ts_env, bad, store, prefix, "c-badkey", run_workers,
                               agents=build_agents(store, bad))
    assert isinstance(final, WorkflowFailureError), final
    assert "OPENAI_API_KEY" in str(final.cause)
    campaign = await store.get_campaign("c-badkey")
    assert campaign is not None and campaign.stage == Stage.FAILED
    calls = llm.calls(status=401)
    assert calls and len({c.lead for c in calls}) == len(calls), "no lead retries a bad key"


async def test_crash_after_the_call_reuses_the_draft_in_a_campaign(
    ts_env, store, prefix, run_workers, llm, llm_settings
):
    real = CopywriterAgent(store, llm_settings)

    @activity.defn(name="write_draft")
    async def crashing_writer(inp: LeadInput) -> EnvelopeRef:
        ref = await real.write_draft(inp)
        if activity.info().attempt == 1:
            raise RuntimeError("worker lost after the LLM answered")
        return ref

    final = await run_campaign(ts_env, llm_settings, store, prefix, "c-crash-wf", run_workers,
                               overrides={"write_draft": crashing_writer})
    assert isinstance(final, CampaignStatus) and final.counts.drafted == len(LEADS)
    for lead in ("Ana", "Bo", "Cy"):
        assert len(llm.calls(lead=lead)) == 1, f"{lead}: one paid call despite the retry"


async def test_an_llm_draft_is_signed_by_the_leads_sender(store, llm, llm_settings):
    """Issue 28: the review shows who the message is from — a lead given a sender gets its
    LLM draft signed with the sender's display name; a lead without one is left as the
    model wrote it."""
    from datetime import UTC, datetime

    from campaign_core.senders import SenderRow

    leads = await seed(store, "c-signed")
    await store.add_sender(SenderRow(name="ana", from_addr="Ana Ruiz <ana@acme.example>",
                                     transport="outbox", created_at=datetime.now(UTC)))
    await store.assign_senders("c-signed", {leads[0].lead_id: "ana"})
    agent = CopywriterAgent(store, llm_settings)
    signed = await draft_record(store, await run_write(agent, "c-signed", leads[0].lead_id))
    plain = await draft_record(store, await run_write(agent, "c-signed", leads[1].lead_id))
    assert signed["body"].endswith("\n\nBest regards,\nAna Ruiz")
    assert signed["body"].startswith("Hi Ana,")
    assert "Ana Ruiz" not in plain["body"]
