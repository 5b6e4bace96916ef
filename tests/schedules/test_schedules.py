"""Recurring campaigns on Temporal Schedules, against the real dev server.

The time-skipping test server has no Schedules, so these run on the dev server and
fire with `trigger` instead of waiting for the cron. The per-lead agents are doubled;
the schedule agent (copying the template's leads) is the real one.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer
from typer.testing import CliRunner

from campaign_core.ids import campaign_workflow_id
from campaign_core.leads import lead_id_for, parse_lead_rows, read_leads_file
from campaign_core.models import CampaignStatus, Stage
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.cli import app
from starter.manager import BadInput, CampaignManager, NotFound
from starter.schedules import ScheduleManager, ScheduleSummary, template_id_for
from starter.start_options import CampaignOptions, ScheduleOptions
from tests.conftest import KB
from tests.fakes.doubles import fast_agents
from workflows.scheduled import ScheduledCampaign, schedule_id

ROWS = [{"email": f"p{i}@co{i}.example", "company": f"Co {i}"} for i in range(4)]


def schedules(dev_env: WorkflowEnvironment, settings: Settings, store: SqliteStore,
              prefix: str) -> ScheduleManager:
    return ScheduleManager(settings, client=dev_env.client, store=store, queue_prefix=prefix)


async def create(mgr: ScheduleManager, name: str, rows: list[dict[str, Any]] = ROWS,
                 cron: str = "0 9 * * MON", **options: Any) -> str:
    """Create schedule `name` with these `ScheduleOptions` fields; its template's id."""
    tid = template_id_for(name)
    intake = parse_lead_rows(enumerate(rows, start=2), tid)
    await mgr.create(name, intake, ScheduleOptions(cron=cron, kb=str(KB), **options),
                     template_id=tid)
    return tid


async def eventually(check: Any, what: str, tries: int = 200) -> Any:
    """Poll `check()` until it returns something truthy (visibility lags a little)."""
    for _ in range(tries):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def listed(mgr: ScheduleManager, name: str) -> ScheduleSummary | None:
    return next((s for s in await mgr.list() if s.name == name), None)


async def wait_stage(camp: CampaignManager, cid: str, stage: Stage) -> CampaignStatus:
    async def check() -> CampaignStatus | None:
        st = await camp.status(cid)
        return st if st.stage is stage else None

    result: CampaignStatus = await eventually(check, f"{cid} to reach {stage.value}", tries=400)
    return result


async def test_create_refuses_bad_input_and_creates_nothing(dev_env, settings, store, prefix):
    mgr = schedules(dev_env, settings, store, prefix)
    for cron, reason in [("61 * * * *", "Minute is not in range"),
                         ("0 9 * *", "5-7 fields"),
                         ("0 9 * * FUNDAY", "DayOfWeek")]:
        tid = template_id_for("bad-cron")
        with pytest.raises(BadInput, match=reason):
            await mgr.create("bad-cron", parse_lead_rows(enumerate(ROWS, start=2), tid),
                             ScheduleOptions(cron=cron), template_id=tid)
        assert await store.get_campaign(tid) is None
    with pytest.raises(NotFound):
        await mgr.describe("bad-cron")

    tid = template_id_for("no-leads")
    no_leads = parse_lead_rows(enumerate([{"email": "nope"}], start=2), tid)
    with pytest.raises(BadInput, match="no valid lead"):
        await mgr.create("no-leads", no_leads, ScheduleOptions(cron="@daily"), template_id=tid)
    with pytest.raises(BadInput, match="schedule name"):
        template_id_for("no spaces please")
    with pytest.raises(ValidationError, match="cron_timezone"):  # the options refuse it
        await create(mgr, "bad-zone", cron_timezone="Mars/Olympus")
    for name in ("no-leads", "bad-zone"):
        with pytest.raises(NotFound):
            await mgr.describe(name)

    # A taken name is refused, and the first schedule is left as it was.
    name = f"dup-{prefix.rstrip('-')}"
    first = await create(mgr, name)
    with pytest.raises(BadInput, match="already exists"):
        await create(mgr, name)
    assert (await mgr.describe(name)).template_id == first
    await mgr.delete(name)


async def test_each_firing_is_a_new_campaign_with_the_templates_leads(
    dev_env, settings, store, prefix, run_workers
):
    mgr = schedules(dev_env, settings, store, prefix)
    camp = CampaignManager(settings, client=dev_env.client, store=store, queue_prefix=prefix)
    name = f"weekly-{prefix.rstrip('-')}"
    # Overlap allowed: the second firing takes the people still in the first's sequence
    # (test_a_firing_skips_people_in_another_active_sequence is the default).
    tid = await create(mgr, name, brief="Say hello.", approval_timeout="1h", budget_usd=7.5,
                       allow_overlap=True)
    summary = await mgr.describe(name)
    assert (summary.paused, summary.leads, summary.cron) == (False, 4, "0 9 * * MON")
    assert summary.next_runs and summary.next_runs[0].weekday() == 0
    assert summary.recent_campaigns == []

    async with run_workers(dev_env.client, overrides=fast_agents(store)):
        await mgr.trigger(name)
        first = (await eventually(
            lambda: _recent(mgr, name, 1), "the first firing"))[0]
        st = await wait_stage(camp, first, Stage.AWAITING_APPROVAL)
        assert st.counts.leads == 4 and st.counts.drafted == 4
        campaign = await store.get_campaign(first)
        assert campaign is not None and campaign.brief == "Say hello."
        assert campaign.kb_dir == str(KB.resolve())
        assert campaign.budget_usd == 7.5  # the schedule's LLM spend cap, for every firing
        # The leads are the template's, re-keyed for the new campaign.
        ids = await store.list_lead_ids(first, None, 100)
        assert campaign.lead_id_salt, "a firing's campaign is a new campaign: salted ids"
        assert sorted(ids) == sorted(lead_id_for(first, r["email"], campaign.lead_id_salt)
                                     for r in ROWS)
        assert set(ids).isdisjoint(await store.list_lead_ids(tid, None, 100))

        await asyncio.sleep(1.1)  # firings are named to the second
        await mgr.trigger(name)
        recent = await eventually(lambda: _recent(mgr, name, 2), "the second firing")
        second = recent[0]
        assert second != first and first in recent
        await wait_stage(camp, second, Stage.AWAITING_APPROVAL)
        assert (await store.counts(second)).leads == 4

        # Each is an ordinary campaign: approve one, it delivers; the other still waits.
        assert await camp.approve(first, by="tester") == 4
        await wait_stage(camp, first, Stage.COMPLETED)
        assert (await camp.status(second)).stage is Stage.AWAITING_APPROVAL
        await camp.reject(second, by="tester")

    # The firing workflow replays deterministically from its recorded history.
    desc = await dev_env.client.get_schedule_handle(schedule_id(name)).describe()
    replayer = Replayer(workflows=[ScheduledCampaign], data_converter=pydantic_data_converter)
    for action in desc.info.recent_actions:
        history = await dev_env.client.get_workflow_handle(
            action.action.workflow_id).fetch_history()
        await replayer.replay_workflow(history)
    await mgr.delete(name)


async def test_a_firing_skips_people_in_another_active_sequence(
    dev_env, settings, store, prefix, run_workers
):
    """Issue 27: by default each firing leaves out the people in another campaign's sequence
    still going on (counted in its audit, no address); a firing that leaves out everyone
    starts no campaign. The firings replay deterministically."""
    mgr = schedules(dev_env, settings, store, prefix)
    camp = CampaignManager(settings, client=dev_env.client, store=store, queue_prefix=prefix)
    name = f"skip-{prefix.rstrip('-')}"
    other = f"{prefix}other"
    async with run_workers(dev_env.client, overrides=fast_agents(store)):
        await camp.start(parse_lead_rows(enumerate(ROWS[:2], start=2), other),
                         CampaignOptions(), name=other, campaign_id=other)
        await wait_stage(camp, other, Stage.AWAITING_APPROVAL)
        await create(mgr, name)
        summary = await mgr.describe(name)
        await mgr.trigger(name)
        first = (await eventually(lambda: _recent(mgr, name, 1), "the first firing"))[0]
        st = await wait_stage(camp, first, Stage.AWAITING_APPROVAL)
        assert st.counts.leads == 2  # p0 and p1 are in `other`'s sequence
        assert sorted(r.email for r in await store.report(first)) == [
            ROWS[2]["email"], ROWS[3]["email"]]
        copied = [r["data"] for e in await store.audit(first)
                  for r in e.envelope["records"] if r["kind"] == "leads_copied"]
        assert copied and copied[0]["skipped"] == {"active_sequence": 2}
        assert "@" not in json.dumps(copied)

        # Everyone is now in `other`'s or the first firing's sequence: no campaign.
        await asyncio.sleep(1.1)  # firings are named to the second
        await mgr.trigger(name)
        second = (await eventually(lambda: _recent(mgr, name, 2), "the second firing"))[0]
        assert second != first

        async def closed() -> Any:
            row = await store.get_campaign(second)
            return row is not None and row.stage == "completed"
        await eventually(closed, "the empty firing's campaign marked completed")
        assert (await store.counts(second)).leads == 0
        with pytest.raises(RPCError, match="not found"):  # no campaign workflow started
            await dev_env.client.get_workflow_handle(campaign_workflow_id(second)).describe()
        await camp.reject(first, by="tester")
        await camp.reject(other, by="tester")

    desc = await dev_env.client.get_schedule_handle(schedule_id(name)).describe()
    replayer = Replayer(workflows=[ScheduledCampaign], data_converter=pydantic_data_converter)
    runs = []
    for action in desc.info.recent_actions:
        handle = dev_env.client.get_workflow_handle(action.action.workflow_id)
        runs.append(await handle.result())
        await replayer.replay_workflow(await handle.fetch_history())
    assert sorted(r["leads"] if isinstance(r, dict) else r.leads for r in runs) == [0, 2]
    assert summary.leads == 4
    await mgr.delete(name)


async def _recent(mgr: ScheduleManager, name: str, n: int) -> list[str] | None:
    """The schedule's recent campaign ids once there are `n`, each stored, else None."""
    recent = (await mgr.describe(name)).recent_campaigns
    if len(recent) < n:
        return None
    for cid in recent:
        if await mgr.store.get_campaign(cid) is None:
            return None
    return recent


async def test_pause_resume_and_delete(dev_env, settings, store, prefix):
    mgr = schedules(dev_env, settings, store, prefix)
    other = ScheduleManager(settings, client=dev_env.client, store=store,
                            queue_prefix=prefix + "other-")
    name = f"ctl-{prefix.rstrip('-')}"
    await create(mgr, name, cron="@daily")
    found = await eventually(lambda: listed(mgr, name), "the schedule in the list")
    assert found.paused is False and found.cron == "@daily"
    assert await listed(other, name) is None  # another deployment's prefix does not see it

    await mgr.pause(name, "holiday")
    paused = await listed(mgr, name)
    assert paused is not None and paused.paused and paused.note == "holiday"
    await mgr.resume(name)
    resumed = await listed(mgr, name)
    assert resumed is not None and not resumed.paused

    await mgr.delete(name)
    with pytest.raises(NotFound):
        await mgr.describe(name)
    await eventually(lambda: _absent(mgr, name), "the schedule to leave the list")
    for action in (mgr.pause, mgr.resume, mgr.trigger, mgr.delete):
        with pytest.raises(NotFound, match="unknown schedule"):
            await action(name)


async def _absent(mgr: ScheduleManager, name: str) -> bool:
    return await listed(mgr, name) is None


async def test_create_paused_stays_paused(dev_env, settings, store, prefix):
    mgr = schedules(dev_env, settings, store, prefix)
    name = f"held-{prefix.rstrip('-')}"
    await create(mgr, name, paused=True)
    summary = await mgr.describe(name)
    assert summary.paused and summary.note and "created paused" in summary.note
    assert summary.next_runs == []
    await mgr.trigger(name)  # a manual firing runs even while paused (no worker needed to see it)
    fired = await eventually(lambda: _fired(mgr, name), "the manual firing")
    assert fired.paused and fired.recent_campaigns[0].startswith(f"{name}-")
    await mgr.delete(name)


async def _fired(mgr: ScheduleManager, name: str) -> ScheduleSummary | None:
    summary = await mgr.describe(name)
    return summary if summary.recent_campaigns else None


# -- the command line ---------------------------------------------------------------------


@pytest.fixture
def cli_env(dev_env, home: Path, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("CAMPAIGN_TASK_QUEUE_PREFIX", prefix)
    monkeypatch.setenv("TEMPORAL_UI_URL", "http://ui.test:8233")
    return home


async def invoke(*args: str) -> tuple[int, str, str]:
    """`campaign ARGS` in a thread: the CLI runs its own event loop."""
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args))
    return result.exit_code, result.stdout, result.stderr


async def test_cli_create_list_pause_delete(cli_env, tmp_path, prefix, dev_env: Any):
    name = f"cli-{prefix.rstrip('-')}"
    leads = tmp_path / "leads.csv"
    leads.write_text("email,company\na@x.example,X\nnot-an-email,Y\nb@y.example,Y\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("email\nnope\n")

    code, out, err = await invoke("schedule", "create", name, "--cron", "0 9 * * MON",
                                  "--leads", str(bad))
    assert code == 2 and "no valid row" in err and out == ""
    code, _, err = await invoke("schedule", "create", name, "--cron", "0 99 * * MON",
                                "--leads", str(leads))
    assert code == 2 and "Hour is not in range" in err and "row 3" in err

    code, out, err = await invoke("schedule", "create", name, "--cron", "0 9 * * MON",
                                  "--leads", str(leads), "--brief", "hi", "--json")
    assert code == 0, err
    created = json.loads(out)
    assert created["name"] == name and created["leads_accepted"] == 2
    assert created["leads_rejected"] == [{"row": 3, "error": created["leads_rejected"][0]["error"]}]
    assert created["ui_url"].startswith("http://ui.test:8233/namespaces/default/schedules/")
    assert created["next_runs"] and created["paused"] is False

    code, _, err = await invoke("schedule", "create", name, "--cron", "@daily", "--leads", str(leads))
    assert code == 2 and "already exists" in err

    async def in_list() -> dict[str, Any] | None:
        code, out, err = await invoke("schedule", "list", "--json")
        assert code == 0, err
        return next((s for s in json.loads(out) if s["name"] == name), None)

    row = await eventually(in_list, "the schedule in `schedule list`")
    assert row["cron"] == "0 9 * * MON" and row["leads"] == 2 and row["paused"] is False
    code, out, _ = await invoke("schedule", "list")
    assert code == 0 and name in out

    code, _, err = await invoke("schedule", "pause", name)
    assert code == 0, err
    row = await in_list()
    assert row is not None and row["paused"] is True

    code, _, err = await invoke("schedule", "delete", name)
    assert code == 0, err
    code, _, err = await invoke("schedule", "delete", name)
    assert code == 2 and "unknown schedule" in err
    code, _, err = await invoke("schedule", "pause", "no such name")
    assert code == 2 and "schedule name" in err


async def test_cli_temporal_unreachable_is_exit_3(home, monkeypatch, tmp_path):
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")
    code, _, err = await invoke("schedule", "list")
    assert code == 3 and "campaign dev" in err


def test_template_leads_are_read_for_the_template(tmp_path):
    tid = template_id_for("t")
    path = tmp_path / "l.csv"
    path.write_text("email\nA@x.example\n")
    intake = read_leads_file(path, tid)
    assert intake.leads[0].lead_id == lead_id_for(tid, "a@x.example")
    assert tid.startswith("sched-t-") and tid != template_id_for("t")

