"""Which senders a campaign starts with (issue 28), through every door, on the dev server
(no worker runs: only the start is under test, and what it hands the workflow).

The named senders are checked against the store, or every active sender is taken; no sender
defined leaves the campaign on the implicit CAMPAIGN_FROM sender, as before. A chosen smtp
sender whose DNS check fails (asked of the loopback DNS server) is a warning, and with
`strict_senders` a refusal naming it; a start that leaves both options at their defaults
keeps its idempotency digests. Resuming a sender releases its held sends and tells the
running campaign (`senders_changed`, in its history); `status` counts the waits.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, ScheduleActionStartWorkflow
from temporalio.testing import WorkflowEnvironment

from campaign_core.ids import campaign_workflow_id
from campaign_core.leads import IntakeResult, parse_lead_rows
from campaign_core.models import CampaignInput, Channel, ScheduledCampaignInput
from campaign_core.senders import SenderRow, SenderTransport
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.api import create_app
from starter.manager import BadInput, CampaignManager, Conflict
from starter.schedules import ScheduleManager, template_id_for
from starter.senders import Senders, one_mailbox_warning
from starter.start_options import CampaignOptions, ScheduleOptions
from tests.fakes.cli_runner import cli
from tests.fakes.dns_server import dns_server
from workflows.scheduled import schedule_id

TOKEN = "senders-start-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROWS = [{"email": "ana@example.com", "first_name": "Ana"},
        {"email": "bo@example.org", "first_name": "Bo"}]


@pytest.fixture
def start_settings(settings: Settings, dev_env: WorkflowEnvironment, prefix: str,
                   monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The API's and, through the environment, the CLI's settings (same store); smtp
    needs a postal address, and no CAMPAIGN_SMTP_URL: the senders send their own way."""
    settings.api_token = SecretStr(TOKEN)
    settings.postal_address = "1 Main St, Springfield"
    monkeypatch.setenv("CAMPAIGN_POSTAL_ADDRESS", settings.postal_address)
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("CAMPAIGN_TASK_QUEUE_PREFIX", prefix)
    return settings


@pytest.fixture
def manager(start_settings: Settings, dev_env: WorkflowEnvironment, store: SqliteStore,
            prefix: str) -> CampaignManager:
    return CampaignManager(start_settings, client=dev_env.client, store=store,
                           queue_prefix=prefix, use_search_attributes=False)


@pytest.fixture
async def client(start_settings: Settings, manager: CampaignManager
                 ) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(start_settings, manager=manager)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://api") as c:
        yield c


def opts(**values: Any) -> CampaignOptions:
    """Options of a start whose leads may be in the test's other campaigns too."""
    return CampaignOptions(allow_overlap=True, **values)


def intake(cid: str) -> IntakeResult:
    return parse_lead_rows(enumerate(ROWS, start=2), cid)


async def add(store: SqliteStore, name: str, *, transport: SenderTransport = "outbox",
              paused: bool = False, domain: str = "acme.test") -> None:
    assert await store.add_sender(SenderRow(
        name=name, from_addr=f"{name.title()} <{name}@{domain}>", transport=transport,
        smtp_url=f"env:{name.upper()}_SMTP_URL" if transport == "smtp" else None,
        created_at=datetime.now(UTC)))
    if paused:
        assert await store.set_sender_paused(name, True, "bounces: 4 of the last 100")


async def started_input(client: Client, cid: str) -> CampaignInput:
    """The input the campaign's workflow was started with, read from its history."""
    history = await client.get_workflow_handle(campaign_workflow_id(cid)).fetch_history()
    payloads = history.events[0].workflow_execution_started_event_attributes.input.payloads
    [inp] = await client.data_converter.decode(payloads, [CampaignInput])
    assert isinstance(inp, CampaignInput)
    return inp


async def done(client: Client, *cids: str) -> None:
    for cid in cids:
        await client.get_workflow_handle(campaign_workflow_id(cid)).terminate("test done")


# -- resolution ---------------------------------------------------------------------------------


async def test_no_sender_defined_starts_as_before(manager: CampaignManager, store: SqliteStore,
                                                  dev_env: WorkflowEnvironment,
                                                  prefix: str) -> None:
    cid = f"{prefix}plain"
    result = await manager.start(intake(cid), opts(), name="plain", campaign_id=cid)
    assert (result.senders, result.warnings) == (None, [])
    inp = await started_input(dev_env.client, cid)
    assert inp.senders is None and inp.delivery_input().senders is None
    await done(dev_env.client, cid)


async def test_the_start_takes_the_active_senders_or_the_named_ones(
        manager: CampaignManager, store: SqliteStore, dev_env: WorkflowEnvironment,
        prefix: str) -> None:
    await add(store, "ana")
    await add(store, "bo")
    await add(store, "cy", paused=True)
    await add(store, "gone")
    assert await store.remove_sender("gone")

    every = f"{prefix}every"
    result = await manager.start(intake(every), opts(), name="x", campaign_id=every)
    assert result.senders == ["ana", "bo"] and result.warnings == []
    assert (await started_input(dev_env.client, every)).senders == ["ana", "bo"]

    named = f"{prefix}named"
    result = await manager.start(intake(named), opts(senders="cy, ana"), name="x",
                                 campaign_id=named)
    assert result.senders == ["cy", "ana"]
    assert result.warnings == ["sender cy is paused (bounces: 4 of the last 100): its leads "
                               "wait until it is resumed"]
    assert (await started_input(dev_env.client, named)).senders == ["cy", "ana"]

    for names in (["zed"], ["ana", "gone"]):
        cid = f"{prefix}refused-{len(names)}"
        with pytest.raises(BadInput, match=r"no sender '(zed|gone)' \(unknown or removed\)") as err:
            await manager.start(intake(cid), opts(senders=names), name="x",
                                campaign_id=cid)
        assert err.value.field == "senders"
        assert await store.get_campaign(cid) is None  # nothing written

    # The webhook channel ignores senders (it would need its own settings to start: the
    # mapping alone says it).
    hooked = CampaignOptions(channel=Channel.WEBHOOK, senders=["ana"])
    assert hooked.campaign_input(campaign_id="c", name="n").senders is None

    assert await store.set_sender_paused("ana", True, "paused by maria")
    assert await store.set_sender_paused("bo", True, None)
    cid = f"{prefix}all-paused"
    with pytest.raises(BadInput, match="every sender is paused") as err:
        await manager.start(intake(cid), opts(), name="x", campaign_id=cid)
    assert err.value.field == "senders" and "ana (paused by maria)" in str(err.value)
    await done(dev_env.client, every, named)


async def test_a_retry_keeps_its_digests_and_other_senders_are_another_start(
        manager: CampaignManager, store: SqliteStore, dev_env: WorkflowEnvironment,
        prefix: str) -> None:
    await add(store, "ana")
    cid = f"{prefix}retry"
    first = await manager.start(intake(cid), opts(brief="Hi."), name="r",
                                campaign_id=cid)
    assert not first.already_running and first.senders == ["ana"]
    desc = await dev_env.client.get_workflow_handle(campaign_workflow_id(cid)).describe()
    memo = await desc.memo_value("campaign_start")
    # The defaults leave no trace in the memo: it is what it was before senders existed.
    assert not {"senders", "strict_senders"} & set(memo["options"])
    again = await manager.start(intake(cid), opts(brief="Hi."), name="r",
                                campaign_id=cid)
    assert again.already_running
    with pytest.raises(Conflict, match=r"\(senders differ\)"):
        await manager.start(intake(cid), opts(brief="Hi.", senders=["ana"]),
                            name="r", campaign_id=cid)
    with pytest.raises(Conflict, match=r"\(strict_senders differ\)"):
        await manager.start(intake(cid), opts(brief="Hi.", strict_senders=True),
                            name="r", campaign_id=cid)
    await done(dev_env.client, cid)


# -- the DNS preflight: a warning, or with strict_senders a refusal -------------------------------


async def test_a_failing_dns_check_warns_and_strict_senders_refuses(
        start_settings: Settings, manager: CampaignManager, store: SqliteStore,
        client: httpx.AsyncClient, dev_env: WorkflowEnvironment, prefix: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    await add(store, "ana", transport="smtp", domain="acme.test")  # all records published
    await add(store, "bo", transport="smtp", domain="bo.test")  # no DMARC
    await add(store, "outbox-only", domain="nowhere.test")  # outbox: not checked
    monkeypatch.setenv("ANA_SMTP_URL", "smtp://ana:x@smtp.acme.test:587")
    records: dict[str, dict[str, list[Any]]] = {}
    for domain in ("acme.test", "bo.test"):
        records[domain] = {"MX": [(10, f"mx.{domain}")], "TXT": ["v=spf1 mx a -all"]}
    records["_dmarc.acme.test"] = {"TXT": ["v=DMARC1; p=reject"]}
    with dns_server(records) as dns:
        start_settings.dns_resolver = dns.address
        monkeypatch.setenv("CAMPAIGN_DNS_RESOLVER", dns.address)

        cid = f"{prefix}warned"
        result = await manager.start(intake(cid), opts(channel=Channel.SMTP),
                                     name="w", campaign_id=cid)
        assert result.senders == ["ana", "bo", "outbox-only"]
        assert [w.split(":")[0] for w in result.warnings] == ["sender bo"]
        assert "dmarc check failed" in result.warnings[0]
        assert (await started_input(dev_env.client, cid)).senders == [
            "ana", "bo", "outbox-only"]

        strict = f"{prefix}strict"
        with pytest.raises(BadInput, match="sender bo: dmarc check failed") as err:
            await manager.start(intake(strict), opts(
                channel=Channel.SMTP, strict_senders=True), name="s", campaign_id=strict)
        assert err.value.field == "strict_senders"
        assert await store.get_campaign(strict) is None
        # Only ana, whose records are all there: strict starts.
        ok = f"{prefix}strict-ok"
        result = await manager.start(intake(ok), opts(
            channel=Channel.SMTP, strict_senders=True, senders=["ana"]), name="s",
            campaign_id=ok)
        assert result.warnings == [] and result.senders == ["ana"]

        # The API: the warning in the start's JSON; strict a 422 at strict_senders.
        body = {"name": "api", "leads": ROWS, "channel": "smtp", "senders": ["bo"],
                "allow_overlap": True}
        r = await client.post("/campaigns", json={**body, "id": f"{prefix}api"}, headers=AUTH)
        assert r.status_code == 201, r.text
        assert (r.json()["senders"], len(r.json()["warnings"])) == (["bo"], 1)
        assert "dmarc check failed" in r.json()["warnings"][0]
        r = await client.post("/campaigns", json={**body, "id": f"{prefix}api-strict",
                                                  "strict_senders": True}, headers=AUTH)
        assert r.status_code == 422, r.text
        [error] = r.json()["detail"]
        assert error["loc"] == ["body", "strict_senders"] and "sender bo" in error["msg"]
        r = await client.post("/campaigns", json={**body, "id": f"{prefix}api-bad",
                                                  "senders": ["Not A Name"]}, headers=AUTH)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "senders"]

        # The CLI: a warning on stderr and exit 0; strict exit 2 naming the flag.
        leads = tmp_path / "leads.csv"
        leads.write_text("email,first_name\nana@example.com,Ana\n")
        code, out, err_text = await cli("start", "--leads", str(leads), "--channel", "smtp",
                                        "--senders", "bo,ana", "--id", f"{prefix}cli", "--json",
                                        "--allow-overlap")
        assert code == 0, err_text
        assert json.loads(out)["senders"] == ["bo", "ana"]
        assert "warning: sender bo: dmarc check failed" in err_text
        code, out, err_text = await cli("start", "--leads", str(leads), "--channel", "smtp",
                                        "--senders", "bo", "--strict-senders", "--id",
                                        f"{prefix}cli-strict")
        assert code == 2 and out == "", err_text
        assert "--strict-senders: sender bo: dmarc check failed" in err_text
        code, _, err_text = await cli("start", "--leads", str(leads), "--senders", "zed",
                                      "--id", f"{prefix}cli-zed")
        assert code == 2 and "--senders: no sender 'zed'" in err_text, err_text
    await done(dev_env.client, cid, ok, f"{prefix}api", f"{prefix}cli")


# -- resume tells the campaign; status counts the waits -----------------------------------------


async def test_resume_releases_the_held_sends_and_tells_the_campaign(
        manager: CampaignManager, store: SqliteStore, dev_env: WorkflowEnvironment,
        prefix: str) -> None:
    await add(store, "ana", paused=True)
    await add(store, "bo")
    cid = f"{prefix}held"
    result = await manager.start(intake(cid), opts(senders=["ana", "bo"]), name="h",
                                 campaign_id=cid)
    ana_lead, bo_lead = sorted(await store.list_lead_ids(cid, None, 10))
    now = datetime.now(UTC)
    await store.defer_step(cid, ana_lead, 1, now + timedelta(days=1), "ana", "paused")
    slot = now + timedelta(hours=2)
    await store.defer_step(cid, bo_lead, 1, slot, "bo", "capacity")

    changed = await Senders(manager.settings, store, manager.client).resume("ana", by="maria")
    assert changed.campaigns_signalled == [cid] and result.campaign_id == cid
    history = await dev_env.client.get_workflow_handle(campaign_workflow_id(cid)).fetch_history()
    signals = [e.workflow_execution_signaled_event_attributes.signal_name
               for e in history.events
               if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
    assert signals == ["senders_changed"]
    await done(dev_env.client, cid)

    # Both sends now wait for capacity (ana's is due now); status counts them and names
    # the earliest, and the CLI says it. A finished campaign is told nothing.
    status = await manager.status(cid)
    assert status.waiting_for_capacity == 2
    assert status.next_slot is not None and status.next_slot <= now + timedelta(minutes=5)
    code, out, err_text = await cli("status", cid)
    assert code == 0, err_text
    assert "2 waiting for capacity, next slot" in out
    assert await store.set_sender_paused("ana", True, "again")
    await store.defer_step(cid, ana_lead, 1, now + timedelta(days=1), "ana", "paused")
    again = await Senders(manager.settings, store, manager.client).resume("ana", by="maria")
    assert again.campaigns_signalled == []


# -- schedules: every firing starts with the senders resolved at creation -----------------------


async def test_a_schedule_resolves_its_senders_when_it_is_created(
        start_settings: Settings, store: SqliteStore, client: httpx.AsyncClient,
        dev_env: WorkflowEnvironment, prefix: str) -> None:
    await add(store, "ana")
    await add(store, "bo", paused=True)
    schedules = ScheduleManager(start_settings, client=dev_env.client, store=store,
                                queue_prefix=prefix)
    name = f"snd-{prefix.rstrip('-')}"
    tid = template_id_for(name)
    created = await schedules.create(name, intake(tid), ScheduleOptions(
        cron="0 9 * * MON", paused=True), template_id=tid)
    assert (created.senders, created.warnings) == (["ana"], [])
    desc = await dev_env.client.get_schedule_handle(schedule_id(name)).describe()
    action = desc.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    [firing] = await dev_env.client.data_converter.decode(action.args, [ScheduledCampaignInput])
    assert isinstance(firing, ScheduledCampaignInput) and firing.campaign.senders == ["ana"]
    await schedules.delete(name)

    other = template_id_for(f"{name}-x")
    with pytest.raises(BadInput, match="no sender 'zed'") as err:
        await schedules.create(f"{name}-x", intake(other), ScheduleOptions(
            cron="0 9 * * MON", paused=True, senders=["zed"]), template_id=other)
    assert err.value.field == "senders" and await store.get_campaign(other) is None
    r = await client.post("/schedules", headers=AUTH, json={
        "name": f"{name}-y", "cron": "0 9 * * MON", "paused": True, "leads": ROWS,
        "senders": ["zed"]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "senders"], r.text


def test_a_big_smtp_start_without_senders_is_warned_about_its_one_mailbox() -> None:
    """Issue 28: "a 20,000-lead campaign from one mailbox ... nothing tells them so"."""


    line = one_mailbox_warning(Channel.SMTP, None, 20_000)
    assert line is not None and line.startswith("20000 leads will all be sent from one mailbox")
    assert "docs/senders.md" in line
    assert one_mailbox_warning(Channel.SMTP, None, 40) is None  # a day of one mailbox
    assert one_mailbox_warning(Channel.SMTP, ["ana"], 20_000) is None  # senders: capped
    assert one_mailbox_warning(Channel.OUTBOX, None, 20_000) is None  # nothing is mailed


async def test_the_start_says_so_when_many_leads_go_from_the_one_implicit_mailbox(
        manager: CampaignManager, start_settings: Settings, dev_env: WorkflowEnvironment,
        prefix: str) -> None:
    start_settings.smtp_url = SecretStr("smtp://127.0.0.1:2525")  # CAMPAIGN_SMTP_URL, no sender
    cid = f"{prefix}crowded"
    rows = [{"email": f"p{i}@co{i}.example"} for i in range(41)]
    result = await manager.start(parse_lead_rows(enumerate(rows, start=2), cid),
                                 opts(channel=Channel.SMTP), name="crowded", campaign_id=cid)
    assert result.senders is None
    assert [w for w in result.warnings if "from one mailbox" in w] == [
        one_mailbox_warning(Channel.SMTP, None, 41)]
    await done(dev_env.client, cid)
