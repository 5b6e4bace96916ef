"""One front door: the HTTP API takes every option of `campaign start` and has the CLI's
other routes (campaign list, audit, suppressions, erasure, schedules).

A knowledge base named over HTTP must be a folder under CAMPAIGN_KB_ROOT (symlinks
resolved); anything else is a 422 naming the variable, and nothing is started. Each
route's effect is checked against its CLI command's, over real HTTP, on the
time-skipping server (campaigns) or the dev server (schedules, which the time-skipping
server does not have).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from campaign_core.ids import campaign_workflow_id
from campaign_core.leads import parse_lead_rows
from campaign_core.models import CampaignInput, CampaignStatus, Stage
from campaign_core.send_window import SendWindow
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.api import create_app
from starter.manager import CampaignManager
from starter.review_auth import Reviewers
from starter.schedules import MEMO_KEY
from tests.api.test_api import AUTH, LEADS, api_settings, serve, signed, wait_http_stage
from tests.conftest import KB
from tests.fakes.cli_runner import cli_json
from tests.workflows.test_orchestration import result_of
from workflows.scheduled import schedule_id

__all__ = ["api_settings"]  # a fixture, used by name

KB_FILES = {p.name for p in KB.iterdir()}
# With overlap allowed: both doors start a campaign with the same person (issue 27).
OPTIONS: dict[str, Any] = {"send_window": "09:00-17:00 Mon-Fri", "timezone": "Europe/Berlin",
           "domain_limit": 7, "send_rate": 2.5, "approval_timeout": "2h",
           "allow_overlap": True}
CLI_OPTIONS = ["--send-window", "09:00-17:00 Mon-Fri", "--timezone", "Europe/Berlin",
               "--domain-limit", "7", "--send-rate", "2.5", "--approval-timeout", "2h",
               "--allow-overlap"]


@pytest.fixture
def kb_root(tmp_path: Path, api_settings: Settings) -> Path:
    """`kbs/acme` (the demo knowledge base) as CAMPAIGN_KB_ROOT; next to it `outside/`
    with a secret, and `kbs/escape`, a symlink to `outside/`."""
    root = tmp_path / "kbs"
    shutil.copytree(KB, root / "acme")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("# Keys\n\nAWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI\n")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    api_settings.kb_root = root
    return root


@pytest.fixture
def manager(ts_env: Any, api_settings: Settings, store: SqliteStore, prefix: str,
            kb_root: Path) -> CampaignManager:
    return CampaignManager(api_settings, client=ts_env.client, store=store, queue_prefix=prefix,
                           use_search_attributes=False)


@pytest.fixture
def dev_manager(dev_env: Any, api_settings: Settings, store: SqliteStore, prefix: str,
                kb_root: Path, monkeypatch: pytest.MonkeyPatch) -> CampaignManager:
    """A manager on the dev server, and the CLI's environment pointed at the same."""
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("CAMPAIGN_TASK_QUEUE_PREFIX", prefix)
    monkeypatch.setenv("TEMPORAL_UI_URL", "http://ui.test:8233")
    api_settings.temporal_ui_url = "http://ui.test:8233"
    return CampaignManager(api_settings, client=dev_env.client, store=store, queue_prefix=prefix)


async def workflow_input(client: Client, campaign_id: str) -> CampaignInput:
    """The CampaignInput the campaign's workflow was started with, from its history."""
    history = await client.get_workflow_handle(campaign_workflow_id(campaign_id)).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [inp] = await client.data_converter.decode(started.input.payloads, [CampaignInput])
    assert isinstance(inp, CampaignInput)
    return inp


async def no_workflow(client: Client, campaign_id: str) -> bool:
    try:
        await client.get_workflow_handle(campaign_workflow_id(campaign_id)).describe()
    except RPCError as err:
        return err.status == RPCStatusCode.NOT_FOUND
    return False


def kb_errors(r: httpx.Response) -> list[str]:
    """The messages of a 422 located at `kb`."""
    assert r.status_code == 422, r.text
    return [e["msg"] for e in r.json()["detail"] if e["loc"] == ["body", "kb"]]


async def eventually(check: Any, what: str, tries: int = 200) -> Any:
    for _ in range(tries):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# -- the knowledge base ---------------------------------------------------------------------------


async def test_a_kb_under_the_root_drafts_with_knowledge(
    ts_env: Any, manager: CampaignManager, store: SqliteStore, kb_root: Path, run_workers: Any,
) -> None:
    """Started over HTTP with `kb`, the campaign's drafts cite passages of that folder; the
    campaign list and the audit trail answer as the CLI does."""
    body = {"name": "With knowledge", "leads": LEADS[:2], "brief": "Book a 20-minute call.",
            "kb": "acme", "id": "c-kb"}
    async with run_workers(ts_env.client), serve(manager) as client:
        r = await client.post("/campaigns", json=body, headers=AUTH)
        assert r.status_code == 201, r.text
        await wait_http_stage(client, "c-kb", "awaiting_approval")
        drafts = (await client.get("/campaigns/c-kb/drafts", headers=AUTH)).json()
        assert len(drafts) == 2
        for draft in drafts:
            assert draft["citations"], draft
            assert {c.split("#")[0] for c in draft["citations"]} <= KB_FILES, draft["citations"]

        listed = await client.get("/campaigns", headers=AUTH)
        assert listed.status_code == 200, listed.text
        [row] = listed.json()
        assert row["campaign_id"] == "c-kb" and row["knowledge_base"] == "acme"
        assert str(kb_root) not in listed.text, "no server path in the list"

        audit = await client.get("/campaigns/c-kb/audit", headers=AUTH)
        assert audit.status_code == 200, audit.text
        assert audit.json() == await cli_json("audit", "c-kb")
        assert {"knowledge", "copywriter"} <= {a["agent"].split(".")[0] for a in audit.json()}
        lead = drafts[0]["lead_id"]
        one = (await client.get("/campaigns/c-kb/audit", params={"lead_id": lead},
                                headers=AUTH)).json()
        assert one and {a["lead_id"] for a in one} == {lead}
        assert one == await cli_json("audit", "c-kb", "--lead", lead)
        assert (await client.get("/campaigns/nope/audit", headers=AUTH)).status_code == 404

        no = await client.post("/campaigns/c-kb/approval", headers=AUTH,
                               json={"decision": "reject", "by": "ops"})
        assert no.status_code == 202, no.text
        final = await result_of(ts_env.client.get_workflow_handle(
            "campaign:c-kb", result_type=CampaignStatus))
    assert final.stage is Stage.REJECTED
    stored = await store.get_campaign("c-kb")
    assert stored is not None and stored.kb_dir == str((kb_root / "acme").resolve())


async def test_the_campaign_webhook_takes_a_kb_under_the_root(
    manager: CampaignManager, store: SqliteStore, kb_root: Path,
) -> None:
    async with serve(manager) as client:
        raw, headers = signed({"name": "From CRM", "leads": LEADS[:1], "id": "c-hook-out",
                               "kb": "../outside"})
        r = await client.post("/webhooks/campaign", content=raw, headers=headers)
        assert any("CAMPAIGN_KB_ROOT" in m for m in kb_errors(r)), r.text
        assert await store.get_campaign("c-hook-out") is None
        raw, headers = signed({"name": "From CRM", "leads": LEADS[:1], "id": "c-hook-kb",
                               "kb": "acme", "domain_limit": 3, "send_window": "08:00-12:00 Tue"})
        r = await client.post("/webhooks/campaign", content=raw, headers=headers)
        assert r.status_code == 201, r.text
    stored = await store.get_campaign("c-hook-kb")
    assert stored is not None and stored.kb_dir == str((kb_root / "acme").resolve())
    inp = await workflow_input(await manager.client(), "c-hook-kb")
    assert inp.domain_limit_per_minute == 3
    assert inp.send_window == SendWindow.parse("08:00-12:00 Tue", "UTC")
    await manager.control("c-hook-kb", "cancel")


@pytest.mark.parametrize("kb", [
    "../outside", "acme/../../outside", "escape", "escape/", "{outside}", "{root}/../outside",
    "missing", "acme/pricing.md", "acme\x00", "/etc",
])
async def test_a_kb_outside_the_root_is_422_naming_the_variable_and_starts_nothing(
    manager: CampaignManager, store: SqliteStore, kb_root: Path, kb: str,
) -> None:
    kb = kb.format(outside=kb_root.parent / "outside", root=kb_root)
    async with serve(manager) as client:
        r = await client.post("/campaigns", headers=AUTH,
                              json={"name": "x", "leads": LEADS[:1], "id": "c-out", "kb": kb})
    [msg] = kb_errors(r)
    assert "CAMPAIGN_KB_ROOT" in msg
    assert str(kb_root.parent) not in r.text.replace(kb, ""), "no server path but the one given"
    assert await store.get_campaign("c-out") is None
    assert await no_workflow(await manager.client(), "c-out")


async def test_any_kb_while_the_root_is_unset_is_422(
    manager: CampaignManager, store: SqliteStore, kb_root: Path,
) -> None:
    manager.settings.kb_root = None
    async with serve(manager) as client:
        for kb in ("acme", str(kb_root / "acme"), str(KB)):
            r = await client.post("/campaigns", headers=AUTH,
                                  json={"name": "x", "leads": LEADS[:1], "id": "c-unset", "kb": kb})
            [msg] = kb_errors(r)
            assert "CAMPAIGN_KB_ROOT is not set" in msg
        # Without a kb, a campaign starts as before.
        r = await client.post("/campaigns", headers=AUTH,
                              json={"name": "x", "leads": LEADS[:1], "id": "c-unset"})
        assert r.status_code == 201, r.text
    await manager.control("c-unset", "cancel")
    assert await no_workflow(await manager.client(), "c-nothing")


# -- every option of `start` ----------------------------------------------------------------------


async def test_every_start_option_reaches_the_workflow_as_from_the_cli(
    dev_env: Any, dev_manager: CampaignManager, store: SqliteStore, kb_root: Path,
    tmp_path: Path,
) -> None:
    """The same options over HTTP and on the command line give the same CampaignInput."""
    cid = f"c-opts-{dev_manager.queue_prefix.rstrip('-')}"
    leads = tmp_path / "leads.csv"
    leads.write_text("email,first_name\nana@example.com,Ana\n")
    async with serve(dev_manager) as client:
        r = await client.post("/campaigns", headers=AUTH, json={
            "name": "Options", "leads": LEADS[:1], "id": f"{cid}-api", "kb": "acme",
            "channel": "outbox", **OPTIONS})
        assert r.status_code == 201, r.text
    await cli_json("start", "--leads", str(leads), "--name", "Options", "--id", f"{cid}-cli",
                   "--kb", str(kb_root / "acme"), *CLI_OPTIONS)
    try:
        api = await workflow_input(dev_env.client, f"{cid}-api")
        by_cli = await workflow_input(dev_env.client, f"{cid}-cli")
        assert api.send_window == SendWindow.parse("09:00-17:00 Mon-Fri", "Europe/Berlin")
        assert (api.domain_limit_per_minute, api.send_rate_per_second,
                api.approval_timeout_seconds) == (7, 2.5, 7200)
        same = {"campaign_id"}
        assert api.model_dump(exclude=same) == by_cli.model_dump(exclude=same)
        rows = [await store.get_campaign(f"{cid}-{door}") for door in ("api", "cli")]
        assert rows[0] is not None and rows[1] is not None
        assert rows[0].kb_dir == rows[1].kb_dir == str((kb_root / "acme").resolve())
    finally:
        for door in ("api", "cli"):
            await dev_manager.control(f"{cid}-{door}", "cancel")


async def test_bad_options_are_422_naming_the_field_and_start_nothing(
    manager: CampaignManager, store: SqliteStore,
) -> None:
    base = {"name": "x", "leads": LEADS[:1], "id": "c-bad"}
    bad: list[tuple[dict[str, Any], str]] = [
        ({"send_window": "whenever"}, "send_window"),
        ({"send_window": "17:00-09:00 Mon"}, "send_window"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "Mars/Olympus", "send_window": "09:00-17:00"}, "timezone"),
        ({"domain_limit": 0}, "domain_limit"),
        ({"domain_limit": "many"}, "domain_limit"),
        ({"send_rate": 0}, "send_rate"),
        ({"kb": ""}, "kb"),
        ({"approval_timeout": "soon"}, "approval_timeout"),
        ({"knowledge_base": "acme"}, "knowledge_base"),
    ]
    async with serve(manager) as client:
        for extra, field in bad:
            r = await client.post("/campaigns", json={**base, **extra}, headers=AUTH)
            assert r.status_code == 422, (extra, r.text)
            assert ["body", field] in [e["loc"] for e in r.json()["detail"]], (extra, r.text)
    assert await store.get_campaign("c-bad") is None
    assert await no_workflow(await manager.client(), "c-bad")


# -- suppressions and erasure ---------------------------------------------------------------------


async def seed(store: SqliteStore, outbox: Path) -> None:
    """A campaign with Ana and Bo, a draft and an outbox copy of a message to each."""
    intake = parse_lead_rows(enumerate(LEADS[:2], start=2), "c-seed")
    await store.upsert_campaign(campaign_id="c-seed", name="Seed", brief="", channel="outbox",
                                kb_dir=None, workflow_id="campaign:c-seed")
    await store.upsert_leads("c-seed", intake.leads)
    for lead in intake.leads:
        await store.upsert_draft(campaign_id="c-seed", lead_id=lead.lead_id, step=1,
                                 subject="Hi", body="Hello", citations=[], provenance={},
                                 envelope_id=f"env-{lead.lead_id}")
    outbox.mkdir(parents=True, exist_ok=True)
    for name, to in (("a.eml", "ana@example.com"), ("b.eml", "bo@example.org")):
        (outbox / name).write_text(f"To: {to}\nFrom: c@localhost\nSubject: Hi\n\nHello\n")


async def test_suppressions_and_erasure_as_the_cli(
    manager: CampaignManager, store: SqliteStore, api_settings: Settings,
) -> None:
    await seed(store, api_settings.outbox_dir)
    async with serve(manager) as client:
        r = await client.post("/suppressions", headers=AUTH,
                              json={"emails": ["Zed@Example.com", "zed@example.com ", "y@example.com"]})
        assert r.status_code == 200, r.text
        assert r.json() == {"added": 2, "already_suppressed": 0}
        assert await store.is_suppressed("zed@example.com")
        assert await cli_json("suppress", "y@example.com", "x@example.com") == {
            "added": 1, "already_suppressed": 1}
        r = await client.post("/suppressions", headers=AUTH, json={"emails": ["x@example.com"]})
        assert r.json() == {"added": 0, "already_suppressed": 1}
        for body, loc in (({"emails": ["ok@example.com", "nope"]}, ["body", "emails", 1]),
                          ({"emails": []}, ["body", "emails"]),
                          ({"email": "ok@example.com"}, ["body", "emails"])):
            r = await client.post("/suppressions", headers=AUTH, json=body)
            assert r.status_code == 422 and loc in [e["loc"] for e in r.json()["detail"]], r.text
        assert not await store.is_suppressed("ok@example.com"), "a bad body adds nothing"

        r = await client.post("/erasure", headers=AUTH, json={"email": " Ana@Example.com"})
        assert r.status_code == 200, r.text
        erased = r.json()
        assert erased["email"] == "ana@example.com" and erased["campaigns"] == 1
        assert erased["counts"]["leads"] == 1 and erased["counts"]["drafts"] == 1
        assert erased["counts"]["outbox"] == 1
        assert erased["suppressed"] is True and erased["reason"].startswith("forgotten")
        for body, loc in (({"email": "nope"}, ["body", "email"]), ({}, ["body", "email"])):
            r = await client.post("/erasure", headers=AUTH, json=body)
            assert r.status_code == 422 and loc in [e["loc"] for e in r.json()["detail"]], r.text
    again = await cli_json("forget", "--yes", "ana@example.com")
    assert again.keys() == erased.keys() and again["counts"].keys() == erased["counts"].keys()
    what_went = ("counts", "campaigns")
    assert {k: v for k, v in again.items() if k not in what_went} == {
        k: v for k, v in erased.items() if k not in what_went}
    assert again["counts"]["leads"] == again["campaigns"] == 0, "the API erased it already"
    assert await store.is_suppressed("ana@example.com")
    assert [p.name for p in api_settings.outbox_dir.glob("*.eml")] == ["b.eml"]
    left = await store.report("c-seed")
    assert [r.email for r in left] == ["bo@example.org"]


# -- schedules ------------------------------------------------------------------------------------


async def test_schedules_over_http_as_the_cli(
    dev_env: Any, dev_manager: CampaignManager, store: SqliteStore, kb_root: Path,
) -> None:
    name = f"http-{dev_manager.queue_prefix.rstrip('-')}"
    body: dict[str, Any] = {"name": name, "cron": "0 9 * * MON", "leads": [*LEADS, LEADS[0]], "kb": "acme",
            "brief": "Hello.", **OPTIONS}
    async with serve(dev_manager) as client:
        out = await client.post("/schedules", headers=AUTH, json={**body, "kb": "escape"})
        assert any("CAMPAIGN_KB_ROOT" in m for m in kb_errors(out)), out.text
        assert (await client.get(f"/schedules/{name}", headers=AUTH)).status_code == 404
        for extra, field in (({"cron": "0 99 * * MON"}, "cron"), ({"cron_timezone": "Nowhere"},
                             "cron_timezone"), ({"name": "no spaces"}, "name"),
                             ({"send_window": "later"}, "send_window"),
                             ({"leads": [{"email": "nope"}]}, "leads")):
            r = await client.post("/schedules", headers=AUTH, json={**body, **extra})
            assert r.status_code == 422, (extra, r.text)
            assert field in [e["loc"][1] for e in r.json()["detail"]], (extra, r.text)
        assert (await client.get(f"/schedules/{name}", headers=AUTH)).status_code == 404

        r = await client.post("/schedules", headers=AUTH, json=body)
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["leads_accepted"] == 2 and created["leads_rejected"][0]["row"] == 3
        assert created["next_runs"] and created["paused"] is False
        again = await client.post("/schedules", headers=AUTH, json=body)
        assert again.status_code == 409 and "already exists" in again.text
        template = await store.get_campaign(created["template_id"])
        assert template is not None
        assert template.kb_dir == str((kb_root / "acme").resolve())
        desc = await dev_env.client.get_schedule_handle(schedule_id(name)).describe()
        memo = await desc.memo_value(MEMO_KEY)
        assert memo["knowledge_base"] == "acme" and memo["approval_timeout"] == "2:00:00"
        assert memo["send_window"] == SendWindow.parse(
            "09:00-17:00 Mon-Fri", "Europe/Berlin").describe()

        async def in_list() -> dict[str, Any] | None:
            r = await client.get("/schedules", headers=AUTH)
            assert r.status_code == 200, r.text
            return next((s for s in r.json() if s["name"] == name), None)

        row = await eventually(in_list, "the schedule in GET /schedules")
        cli_rows = await cli_json("schedule", "list")
        assert row == next(s for s in cli_rows if s["name"] == name)
        assert row == (await client.get(f"/schedules/{name}", headers=AUTH)).json()

        r = await client.post(f"/schedules/{name}/pause", headers=AUTH, json={"note": "holiday"})
        assert r.status_code == 200 and r.json() == {"name": name, "action": "pause"}, r.text
        got = (await client.get(f"/schedules/{name}", headers=AUTH)).json()
        assert got["paused"] is True and got["note"] == "holiday" and got["next_runs"] == []
        r = await client.post(f"/schedules/{name}/resume", headers=AUTH)
        assert r.status_code == 200, r.text
        assert (await client.get(f"/schedules/{name}", headers=AUTH)).json()["paused"] is False
        r = await client.post(f"/schedules/{name}/trigger", headers=AUTH)
        assert r.status_code == 202, r.text

        async def fired() -> list[str]:
            got = (await client.get(f"/schedules/{name}", headers=AUTH)).json()
            return list(got["recent_campaigns"])

        assert len(await eventually(fired, "the triggered firing")) == 1
        # The firing waits for a worker on this test's queues: end it (the server is shared).
        desc = await dev_env.client.get_schedule_handle(schedule_id(name)).describe()
        for action in desc.info.recent_actions:
            started = action.action
            await dev_env.client.get_workflow_handle(
                started.workflow_id, run_id=started.first_execution_run_id).terminate("test over")
        r = await client.delete(f"/schedules/{name}", headers=AUTH)
        assert r.status_code == 200 and r.json() == {"name": name, "action": "delete"}, r.text
        for method, path in (("DELETE", f"/schedules/{name}"),
                             ("POST", f"/schedules/{name}/pause"),
                             ("POST", f"/schedules/{name}/trigger")):
            r = await client.request(method, path, headers=AUTH)
            assert r.status_code == 404 and "unknown schedule" in r.text, (method, path, r.text)
        r = await client.post("/schedules/bad name!/pause", headers=AUTH)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "name"]


# -- who may call what ----------------------------------------------------------------------------


async def test_a_reviewer_token_reads_the_list_and_audit_but_not_the_service_routes(
    manager: CampaignManager, store: SqliteStore,
) -> None:
    token = await Reviewers(store).add("rita")
    bearer = {"Authorization": f"Bearer {token}"}
    await seed(store, manager.settings.outbox_dir)
    async with serve(manager) as client:
        r = await client.get("/campaigns", headers=bearer)
        assert r.status_code == 200 and [c["campaign_id"] for c in r.json()] == ["c-seed"]
        assert (await client.get("/campaigns/c-seed/audit", headers=bearer)).status_code == 200
        assert (await client.get("/campaigns/nope/audit", headers=bearer)).status_code == 404
        for method, path in [("POST", "/suppressions"), ("POST", "/erasure"),
                             ("GET", "/schedules"), ("POST", "/schedules"),
                             ("GET", "/schedules/x"), ("POST", "/schedules/x/pause"),
                             ("POST", "/schedules/x/resume"), ("POST", "/schedules/x/trigger"),
                             ("DELETE", "/schedules/x")]:
            r = await client.request(method, path, headers=bearer,
                                     json={"emails": ["ana@example.com"], "email": "ana@example.com"})
            assert r.status_code == 403, (method, path, r.text)
            assert "review routes only" in r.json()["detail"]
        for method, path in [("GET", "/campaigns"), ("POST", "/suppressions"),
                             ("POST", "/erasure"), ("GET", "/schedules")]:
            r = await client.request(method, path, json={})
            assert r.status_code == 401, (method, path, r.text)
    assert not await store.is_suppressed("ana@example.com"), "nothing was done for the reviewer"
    assert await store.get_lead("c-seed", parse_lead_rows(
        enumerate(LEADS[:1], start=2), "c-seed").leads[0].lead_id) is not None


def test_the_new_routes_and_options_are_in_openapi(home: Path) -> None:
    spec = create_app(Settings(), insecure_dev=True).openapi()
    paths = spec["paths"]
    assert {"get", "post"} <= set(paths["/campaigns"])
    assert "get" in paths["/campaigns/{campaign_id}/audit"]
    assert "post" in paths["/suppressions"] and "post" in paths["/erasure"]
    assert {"get", "post"} <= set(paths["/schedules"])
    assert {"get", "delete"} <= set(paths["/schedules/{name}"])
    for action in ("pause", "resume", "trigger"):
        assert "post" in paths[f"/schedules/{{name}}/{action}"]
    start = spec["components"]["schemas"]["StartRequest"]["properties"]
    assert {"kb", "send_window", "timezone", "domain_limit", "send_rate",
            "approval_timeout"} <= set(start)
    assert "CAMPAIGN_KB_ROOT" in start["kb"]["description"]
    schedule = spec["components"]["schemas"]["ScheduleRequest"]["properties"]
    assert {"kb", "send_window", "cron", "cron_timezone", "paused"} <= set(schedule)

