"""Issue 25, finding 8: a start whose id is taken does not quietly merge into what has it.

`upsert_campaign` keeps an existing row, so a start naming a schedule's template, or a
campaign whose workflow Temporal's retention deleted, used to answer 201, drop the budget
it was given and add its leads to the template (every later firing then mails them). Now:
the same options again return the running campaign (`--id` stays idempotent); other
options, or an id in the store without a workflow, are refused with 409 / exit 2 naming
why; the schedules' `sched-` prefix is reserved; and nothing is written before the check.
Each door is checked: the manager, `campaign start`, `POST /campaigns` and the signed
campaign webhook. On the dev server (schedules need it); no worker runs, since only the
start is under test.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from campaign_core.ids import campaign_workflow_id
from campaign_core.leads import parse_lead_rows
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.api import create_app
from starter.cli import app as cli_app
from starter.manager import TEMPLATE_ID_PREFIX, CampaignManager, Conflict, campaign_id_for
from starter.schedules import ScheduleManager, template_id_for
from starter.start_options import CampaignOptions, ScheduleOptions
from tests.fakes.webhook_signing import INBOUND_SECRET, signed_headers

TOKEN = "idempotency-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
ROWS = [{"email": "ana@example.com", "first_name": "Ana"},
        {"email": "bo@example.org", "first_name": "Bo"}]
INTRUDER = {"email": "new-lead@example.net", "first_name": "New"}


@pytest.fixture
def api_settings(settings: Settings, dev_env: WorkflowEnvironment, prefix: str,
                 monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings for the API and, through the environment, for the CLI (same store)."""
    settings.api_token = SecretStr(TOKEN)
    settings.webhook_secret = SecretStr(INBOUND_SECRET)
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("CAMPAIGN_TASK_QUEUE_PREFIX", prefix)
    return settings


@pytest.fixture
def manager(api_settings: Settings, dev_env: WorkflowEnvironment, store: SqliteStore,
            prefix: str) -> CampaignManager:
    return CampaignManager(api_settings, client=dev_env.client, store=store, queue_prefix=prefix,
                           use_search_attributes=False)


@pytest.fixture
async def client(api_settings: Settings, manager: CampaignManager
                 ) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(api_settings, manager=manager)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://api") as c:
        yield c


async def cli_start(*args: str) -> tuple[int, str, str]:
    """`campaign start ARGS` in a thread (the CLI runs its own event loop)."""
    result = await asyncio.to_thread(CliRunner().invoke, cli_app, ["start", *args])
    return result.exit_code, result.stdout, result.stderr


def leads_file(tmp_path: Path, rows: list[dict[str, str]], name: str = "leads.csv") -> Path:
    path = tmp_path / name
    path.write_text("email,first_name\n" + "".join(f"{r['email']},{r['first_name']}\n"
                                                   for r in rows))
    return path


async def emails(store: SqliteStore, cid: str) -> list[str]:
    found = []
    for lead_id in await store.list_lead_ids(cid, None, 100):
        lead = await store.get_lead(cid, lead_id)
        assert lead is not None
        found.append(lead.email)
    return sorted(found)


async def purged(store: SqliteStore, cid: str, rows: list[dict[str, str]] = ROWS) -> None:
    """What Temporal's retention leaves of a finished campaign (and a start that crashed
    before its workflow, of a new one): the store's row and leads, and no workflow."""
    await store.upsert_campaign(campaign_id=cid, name="old", brief="Said hello.",
                                channel="outbox", kb_dir=None, workflow_id=campaign_workflow_id(cid),
                                budget_usd=1.0)
    await store.upsert_leads(cid, parse_lead_rows(enumerate(rows, start=2), cid).leads)


async def schedule_template(api_settings: Settings, dev_env: WorkflowEnvironment,
                            store: SqliteStore, prefix: str) -> tuple[ScheduleManager, str, str]:
    """A created (paused) schedule: (its manager, its name, its template's id)."""
    schedules = ScheduleManager(api_settings, client=dev_env.client, store=store,
                                queue_prefix=prefix)
    name = f"idem-{prefix.rstrip('-')}"
    tid = template_id_for(name)
    await schedules.create(name, parse_lead_rows(enumerate(ROWS, start=2), tid),
                           ScheduleOptions(cron="0 9 * * MON", paused=True, budget_usd=5.0),
                           template_id=tid)
    return schedules, name, tid


# -- the manager: the same options are a retry, others a conflict ----------------------------


async def test_same_options_return_the_campaign_and_other_options_are_refused(
        manager: CampaignManager, store: SqliteStore, prefix: str) -> None:
    cid = f"{prefix}same"

    def intake(rows: list[dict[str, str]]) -> Any:
        return parse_lead_rows(enumerate(rows, start=2), cid)

    first = await manager.start(intake(ROWS),
                                CampaignOptions(brief="Say hello.", budget_usd=2.0, follow_ups=["1d"]),
                                name="Q4", campaign_id=cid)
    assert not first.already_running and first.leads_accepted == 2
    # The same file read again, rows in another order: the same start.
    again = await manager.start(intake(list(reversed(ROWS))),
                                CampaignOptions(brief="Say hello.", budget_usd=2.0, follow_ups=["1d"]),
                                name="Q4", campaign_id=cid)
    assert again.already_running and again.campaign_id == cid and again.leads_accepted == 2

    with pytest.raises(Conflict, match=r"other options \(budget_usd differ\)"):
        await manager.start(intake(ROWS),
                            CampaignOptions(brief="Say hello.", budget_usd=50.0, follow_ups=["1d"]),
                            name="Q4", campaign_id=cid)
    with pytest.raises(Conflict, match=r"\(brief, follow_ups, leads differ\)"):
        await manager.start(intake([*ROWS, INTRUDER]), CampaignOptions(brief="Other.", budget_usd=2.0),
                            name="Q4", campaign_id=cid)
    # Nothing of the refused starts was kept.
    assert await emails(store, cid) == ["ana@example.com", "bo@example.org"]
    assert (await store.spend(cid)).budget_usd == 2.0
    await (await manager.client()).get_workflow_handle(campaign_workflow_id(cid)).terminate("done")


async def test_a_stored_campaign_without_a_workflow_is_refused_and_left_alone(
        manager: CampaignManager, store: SqliteStore, prefix: str) -> None:
    cid = f"{prefix}purged"
    await purged(store, cid)
    for rows, budget in (([INTRUDER], 30.0), (ROWS, 1.0)):  # other options, or the same
        with pytest.raises(Conflict, match="has no workflow"):
            await manager.start(parse_lead_rows(enumerate(rows, start=2), cid),
                                CampaignOptions(brief="Said hello.", budget_usd=budget), name="old",
                                campaign_id=cid)
    assert await emails(store, cid) == ["ana@example.com", "bo@example.org"]
    assert (await store.spend(cid)).budget_usd == 1.0


def test_new_ids_never_take_the_reserved_prefix() -> None:
    for name in ("sched", "Sched launch", "SCHED-weekly"):
        cid = campaign_id_for(name, None)
        assert not cid.lower().startswith(TEMPLATE_ID_PREFIX), cid
    with pytest.raises(Conflict, match="reserved"):
        campaign_id_for("x", "sched-anything")


# -- the doors: exit 2, 409, and the signed webhook -------------------------------------------


async def test_cli_refuses_a_taken_id_with_exit_2(
        api_settings: Settings, manager: CampaignManager, store: SqliteStore, prefix: str,
        dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    leads = leads_file(tmp_path, ROWS)
    cid = f"{prefix}cli"
    code, out, err = await cli_start("--leads", str(leads), "--id", cid, "--budget-usd", "3",
                                     "--json")
    assert code == 0, err
    code, out, err = await cli_start("--leads", str(leads), "--id", cid, "--budget-usd", "3",
                                     "--json")
    assert code == 0 and json.loads(out)["campaign_id"] == cid, err  # idempotent
    code, out, err = await cli_start("--leads", str(leads), "--id", cid, "--budget-usd", "9")
    assert code == 2 and "budget_usd differ" in err and out == "", (code, err)

    _, name, tid = await schedule_template(api_settings, dev_env, store, prefix)
    more = leads_file(tmp_path, [INTRUDER], "more.csv")
    code, out, err = await cli_start("--leads", str(more), "--id", tid)
    assert code == 2 and "reserved" in err, (code, err)
    await purged(store, f"{prefix}gone")
    code, out, err = await cli_start("--leads", str(more), "--id", f"{prefix}gone")
    assert code == 2 and "has no workflow" in err, (code, err)
    assert await emails(store, f"{prefix}gone") == ["ana@example.com", "bo@example.org"]
    assert await emails(store, tid) == ["ana@example.com", "bo@example.org"]
    await ScheduleManager(api_settings, client=dev_env.client, store=store,
                          queue_prefix=prefix).delete(name)
    await dev_env.client.get_workflow_handle(campaign_workflow_id(cid)).terminate("done")


async def test_post_campaigns_with_a_template_or_taken_id_is_409(
        api_settings: Settings, client: httpx.AsyncClient, store: SqliteStore, prefix: str,
        dev_env: WorkflowEnvironment) -> None:
    schedules, name, tid = await schedule_template(api_settings, dev_env, store, prefix)
    body = {"name": "intruder", "id": tid, "leads": [INTRUDER], "budget_usd": 0.5}
    r = await client.post("/campaigns", headers=AUTH, json=body)
    assert r.status_code == 409 and "reserved" in r.json()["detail"], r.text
    # The template is as the schedule made it: no new lead, its budget kept.
    assert await emails(store, tid) == ["ana@example.com", "bo@example.org"]
    assert (await store.spend(tid)).budget_usd == 5.0

    cid = f"{prefix}http"
    started = {"name": "http", "id": cid, "leads": ROWS, "budget_usd": 1.5}
    r = await client.post("/campaigns", headers=AUTH, json=started)
    assert r.status_code == 201, r.text
    r = await client.post("/campaigns", headers=AUTH, json=started)
    assert r.status_code == 200 and r.json()["campaign_id"] == cid, r.text
    r = await client.post("/campaigns", headers=AUTH,
                          json={**started, "budget_usd": 40, "send_window": "09:00-17:00"})
    assert r.status_code == 409, r.text
    assert "send_window, budget_usd differ" in r.json()["detail"]
    await purged(store, f"{prefix}gone")
    r = await client.post("/campaigns", headers=AUTH,
                          json={**body, "id": f"{prefix}gone", "budget_usd": 9})
    assert r.status_code == 409 and "has no workflow" in r.json()["detail"], r.text
    assert await emails(store, f"{prefix}gone") == ["ana@example.com", "bo@example.org"]
    assert (await store.spend(f"{prefix}gone")).budget_usd == 1.0
    await dev_env.client.get_workflow_handle(campaign_workflow_id(cid)).terminate("done")
    await schedules.delete(name)


async def test_the_signed_campaign_webhook_cannot_start_a_template(
        api_settings: Settings, client: httpx.AsyncClient, store: SqliteStore, prefix: str,
        dev_env: WorkflowEnvironment) -> None:
    schedules, name, tid = await schedule_template(api_settings, dev_env, store, prefix)
    raw = json.dumps({"name": "crm export", "id": tid, "leads": [INTRUDER]}).encode()
    r = await client.post("/webhooks/campaign", content=raw,
                          headers={**AUTH, **signed_headers(raw)})
    assert r.status_code == 409 and "reserved" in r.json()["detail"], r.text
    assert await emails(store, tid) == ["ana@example.com", "bo@example.org"]

    cid = f"{prefix}hook"
    ok = json.dumps({"name": "crm", "id": cid, "leads": ROWS}).encode()
    r = await client.post("/webhooks/campaign", content=ok, headers={**AUTH, **signed_headers(ok)})
    assert r.status_code == 201, r.text
    other = json.dumps({"name": "crm", "id": cid, "leads": [*ROWS, INTRUDER]}).encode()
    r = await client.post("/webhooks/campaign", content=other,
                          headers={**AUTH, **signed_headers(other)})
    assert r.status_code == 409 and "leads differ" in r.json()["detail"], r.text
    assert await emails(store, cid) == ["ana@example.com", "bo@example.org"]
    await dev_env.client.get_workflow_handle(campaign_workflow_id(cid)).terminate("done")
    await schedules.delete(name)
