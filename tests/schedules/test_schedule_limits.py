"""Issue 25, from reading the code: schedules accepted `@every 1s`, and nothing capped them.

Each firing starts a new campaign with a budget of its own, so a schedule firing every
second starts (and pays for) a campaign a second. Now a cron or `@every` firing more often
than CAMPAIGN_SCHEDULE_MIN_INTERVAL (one hour unless set) is refused before anything is
created (exit 2 / 422), with the times Temporal computes checked again; and a schedule may
carry a total budget (`--total-budget-usd`): each firing's campaign gets what is left, and
once the schedule's campaigns have spent it no firing starts a campaign and the schedule
pauses.
"""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from typer.testing import CliRunner

from activities.schedule_agent import SCHEDULE_BUDGET_EXHAUSTED, ScheduleAgent
from campaign_core.leads import parse_lead_rows
from campaign_core.models import CopyLeadsInput
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter import schedules as schedules_module
from starter.api import create_app
from starter.cli import app as cli_app
from starter.manager import CampaignManager, NotFound
from starter.schedules import (
    BadCron,
    ScheduleManager,
    cron_gap,
    template_id_for,
    total_budget_record,
)
from starter.start_options import ScheduleOptions
from tests.fakes.doubles import fast_agents
from workflows.scheduled import schedule_id

ROWS = [{"email": f"p{i}@co{i}.example", "company": f"Co {i}"} for i in range(3)]
TOKEN = "schedule-limits-token-0123456789"
NANO = 1_000_000_000


def leads_file(tmp_path: Path) -> Path:
    path = tmp_path / "leads.csv"
    path.write_text("email\n" + "".join(f"{r['email']}\n" for r in ROWS))
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli_app, list(args))
    return result.exit_code, result.stderr


# -- how often: refused before anything is created ------------------------------------------


@pytest.mark.parametrize("cron, gap", [
    ("@every 1s", "1s"), ("* * * * *", "1m"), ("*/15 9-17 * * MON-FRI", "15m"),
    ("0,30 9 1 * *", "30m"), ("@every 59m", "59m"), ("0 9,10 1 * *", None),
    ("0 0 9 * * * *", None),
])
def test_the_cli_refuses_a_schedule_firing_more_than_hourly(
        cron: str, gap: str | None, home: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused with exit 2 before Temporal is reached (an unreachable one would be exit 3)."""
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")
    code, err = invoke("schedule", "create", "fast", "--cron", cron, "--leads",
                       str(leads_file(tmp_path)))
    if gap is None:  # an hour or more apart: allowed, so Temporal is next
        assert code == 3, err
        return
    assert code == 2, err
    assert f"fires {gap} apart" in err and "CAMPAIGN_SCHEDULE_MIN_INTERVAL" in err, err


def test_the_minimum_is_configurable(home: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")
    leads = str(leads_file(tmp_path))
    monkeypatch.setenv("CAMPAIGN_SCHEDULE_MIN_INTERVAL", "1d")
    code, err = invoke("schedule", "create", "s", "--cron", "@every 12h", "--leads", leads)
    assert code == 2 and "more often than every 1d" in err, err
    monkeypatch.setenv("CAMPAIGN_SCHEDULE_MIN_INTERVAL", "10m")
    code, err = invoke("schedule", "create", "s", "--cron", "*/15 * * * *", "--leads", leads)
    assert code == 3, err  # allowed: on to Temporal, which is not there


def test_cron_gaps_read_as_temporal_reads_them() -> None:
    monday = date(2027, 1, 4)
    assert cron_gap("@every 1h30m/10m") == timedelta(minutes=90)
    assert cron_gap("@hourly") == timedelta(hours=1)
    assert cron_gap("0 9 * * MON", monday) == timedelta(days=7)
    assert cron_gap("CRON_TZ=Europe/Berlin 30 8 * * mo-fr", monday) == timedelta(days=1)
    # Temporal matches a day on both fields: the 1st that is a Monday (1 February and 1 March
    # 2027 are Mondays, four weeks apart).
    assert cron_gap("0 9 1 * MON", monday) == timedelta(days=28)
    assert cron_gap("0 0 29 2 *", monday) is None  # once in the two years looked at
    for unread in ("61 * * * *", "0 9 * *", "0 9 * * FUNDAY", "@every soon"):
        assert cron_gap(unread) is None, unread  # Temporal's own message then


async def test_the_api_refuses_it_with_422_and_temporals_times_are_checked_too(
        settings: Settings, store: SqliteStore, dev_env: WorkflowEnvironment, prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings.api_token = SecretStr(TOKEN)
    manager = CampaignManager(settings, client=dev_env.client, store=store, queue_prefix=prefix)
    app = create_app(settings, manager=manager)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        for cron in ("@every 1s", "* * * * *"):
            r = await client.post("/schedules", headers={"Authorization": f"Bearer {TOKEN}"},
                                  json={"name": f"fast-{prefix.rstrip('-')}", "cron": cron,
                                        "leads": ROWS})
            assert r.status_code == 422, r.text
            (error,) = r.json()["detail"]
            assert error["loc"] == ["body", "cron"] and "apart" in error["msg"], error
    # An expression read here differently (say, a newer Temporal syntax) is still checked,
    # on the times Temporal computed for it; the schedule is then deleted, nothing stored.
    monkeypatch.setattr(schedules_module, "cron_gap", lambda cron, today=None: None)
    mgr = ScheduleManager(settings, client=dev_env.client, store=store, queue_prefix=prefix)
    name = f"backstop-{prefix.rstrip('-')}"
    tid = template_id_for(name)
    with pytest.raises(BadCron, match="fires 1m apart"):
        await mgr.create(name, parse_lead_rows(enumerate(ROWS, start=2), tid),
                         ScheduleOptions(cron="* * * * *"), template_id=tid)
    with pytest.raises(NotFound):
        await mgr.describe(name)
    assert await store.get_campaign(tid) is None


# -- how much: a total budget per schedule ----------------------------------------------------


async def spend(store: SqliteStore, cid: str, usd: float) -> None:
    """`cid`'s campaign spends `usd` on one LLM call (the copywriter's ledger)."""
    await store.settle_llm_call(cid, f"call-{cid}-{usd}", round(usd * NANO))


async def test_a_firing_past_the_total_budget_starts_no_campaign(
        store: SqliteStore, settings: Settings) -> None:
    """The schedule agent on its own: each firing's campaign gets what is left (or the
    per-campaign budget if smaller); at the total, the firing is refused for good."""
    tid = template_id_for("weekly")
    await store.upsert_campaign(campaign_id=tid, name="weekly (schedule template)", brief="Hi.",
                                channel="outbox", kb_dir=None, workflow_id="x", budget_usd=4.0)
    await store.upsert_leads(tid, parse_lead_rows(enumerate(ROWS, start=2), tid).leads)
    await store.save_envelope(total_budget_record("weekly", tid, 10.0))
    agent = ScheduleAgent(store, settings)

    async def fire(cid: str) -> Any:
        return await ActivityEnvironment().run(agent.copy_template_leads, CopyLeadsInput(
            template_id=tid, campaign_id=cid, name=cid, schedule="weekly"))

    assert await fire("weekly-1") == 3
    assert (await store.spend("weekly-1")).budget_usd == 4.0  # the per-campaign cap: smaller
    await spend(store, "weekly-1", 4.0)
    assert await fire("weekly-1") == 3  # a retried firing: counted once, not against itself
    await fire("weekly-2")
    await spend(store, "weekly-2", 3.5)
    await fire("weekly-3")
    assert (await store.spend("weekly-3")).budget_usd == pytest.approx(2.5)  # what is left
    await spend(store, "weekly-3", 2.5)
    with pytest.raises(ApplicationError) as err:
        await fire("weekly-4")
    assert err.value.type == SCHEDULE_BUDGET_EXHAUSTED and err.value.non_retryable
    assert "spent $10 of its total budget $10" in err.value.message
    assert await store.get_campaign("weekly-4") is None
    assert await store.list_lead_ids("weekly-4", None, 10) == []


async def test_the_total_budget_pauses_the_schedule(
        dev_env: WorkflowEnvironment, settings: Settings, store: SqliteStore, prefix: str,
        run_workers: Any) -> None:
    """On the dev server: once the first firing's campaign has spent the total, the next
    firing starts no campaign and the schedule is paused, the reason in its note. Fired as
    the cron fires (the schedule's own overlap policy; `campaign schedule trigger` fires
    regardless of it, and Temporal pauses on the failure of such a firing only if it
    watches it, which it does not for those)."""
    mgr = ScheduleManager(settings, client=dev_env.client, store=store, queue_prefix=prefix)
    name = f"capped-{prefix.rstrip('-')}"
    tid = template_id_for(name)
    await mgr.create(name, parse_lead_rows(enumerate(ROWS, start=2), tid),
                     ScheduleOptions(cron="0 9 * * MON", total_budget_usd=0.5), template_id=tid)
    assert (await mgr.describe(name)).total_budget_usd == 0.5
    handle = dev_env.client.get_schedule_handle(schedule_id(name))
    async with run_workers(dev_env.client, overrides=fast_agents(store)):
        await handle.trigger()
        first = await until(lambda: recent(mgr, name), "the first firing")
        assert (await store.spend(first)).budget_usd == 0.5
        await spend(store, first, 0.5)
        await asyncio.sleep(1.1)  # firings are named to the second
        await handle.trigger()
        summary = await until(lambda: paused(mgr, name), "the schedule to pause")
    assert summary.note is not None and "its 1 campaign(s) spent $0.5 of its total budget " \
        "$0.5: no new campaign is started" in summary.note, summary.note
    assert len(summary.recent_campaigns) == 2 and summary.recent_campaigns[1] == first
    assert await store.get_campaign(summary.recent_campaigns[0]) is None, "no campaign started"
    await mgr.delete(name)


async def recent(mgr: ScheduleManager, name: str) -> str | None:
    campaigns = (await mgr.describe(name)).recent_campaigns
    return campaigns[0] if campaigns and await mgr.store.get_campaign(campaigns[0]) else None


async def paused(mgr: ScheduleManager, name: str) -> Any:
    summary = await mgr.describe(name)
    return summary if summary.paused else None


async def until(check: Any, what: str) -> Any:
    for _ in range(300):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
