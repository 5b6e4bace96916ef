"""CAN-SPAM: a physical postal address in every message that reaches a person (issue 11).

`CAMPAIGN_POSTAL_ADDRESS` goes into the footer of both parts; the smtp and webhook
channels refuse to start without it (CLI exit 2, HTTP 422, schedule create), naming
the variable; the outbox may go without.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from activities.rendering import render_message
from campaign_core.leads import parse_lead_rows
from campaign_core.models import Channel
from campaign_core.settings import Settings
from starter.api import create_app
from starter.manager import BadInput, CampaignManager
from starter.schedules import ScheduleManager
from starter.start_options import CampaignOptions, ScheduleOptions
from tests.delivery.test_rendered_messages import CHANNELS, _lead, deliver_on
from tests.fakes.webhook_receiver import Hook
from tests.fakes.webhook_signing import DELIVERY_SECRET

ADDRESS = "Relay Inc.\n1 Main St & Co, Suite <5>\nSpringfield, IL 62701, USA"
LEADS = [{"email": "ana@example.com", "first_name": "Ana"}]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_address(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("CAMPAIGN_POSTAL_ADDRESS", raising=False)
    settings.postal_address = None
    settings.smtp_url = SecretStr("smtp://127.0.0.1:2525")
    settings.webhook_url = SecretStr("http://127.0.0.1:9/hook")
    settings.delivery_webhook_secret = SecretStr(DELIVERY_SECRET)
    return settings


# -- the footer ------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", CHANNELS, ids=lambda c: c.value)
async def test_postal_address_is_in_both_parts_on_every_channel(channel, store, settings,
                                                                hook: Hook):
    settings.postal_address = ADDRESS
    got = await deliver_on(channel, store, settings, hook, _lead(first_name="Ana"))
    text_footer = got["text"].split("\n--\n", 1)[1]
    assert text_footer.startswith("Relay Inc.\n1 Main St & Co, Suite <5>\n"
                                  "Springfield, IL 62701, USA\nTo stop receiving")
    assert ("Relay Inc.<br>\n1 Main St &amp; Co, Suite &lt;5&gt;<br>\n"
            "Springfield, IL 62701, USA</p>") in got["html"]
    assert "<5>" not in got["html"], "escaped in HTML"


def test_no_postal_lines_without_the_setting():
    msg = render_message(key="k", sender="C <c@x.test>", to="a@x.test", to_name=None,
                         subject="s", body="Hello there", unsubscribe_url="http://u/")
    text = msg.get_body(preferencelist=("plain",))
    assert text is not None
    assert str(text.get_content()).split("\n--\n", 1)[1].startswith("To stop receiving")


# -- refused without it ----------------------------------------------------------------------


@pytest.mark.parametrize("channel", [Channel.SMTP, Channel.WEBHOOK], ids=lambda c: c.value)
async def test_start_and_schedule_refuse_smtp_and_webhook_without_address(channel, store,
                                                                         no_address):
    mgr = CampaignManager(no_address, client=None, store=store, use_search_attributes=False)
    intake = parse_lead_rows(enumerate(LEADS, start=2), "c-nopostal")
    with pytest.raises(BadInput, match="CAMPAIGN_POSTAL_ADDRESS"):
        await mgr.start(intake, CampaignOptions(channel=channel), name="t", campaign_id="c-nopostal")
    assert await store.get_campaign("c-nopostal") is None
    sched = ScheduleManager(no_address, client=None, store=store, use_search_attributes=False)
    with pytest.raises(BadInput, match="CAMPAIGN_POSTAL_ADDRESS"):
        await sched.create("weekly", parse_lead_rows(enumerate(LEADS, start=2), "sched-weekly-1"),
                           ScheduleOptions(cron="0 9 * * MON", channel=channel),
                           template_id="sched-weekly-1")
    no_address.postal_address = "   "
    with pytest.raises(BadInput, match="CAMPAIGN_POSTAL_ADDRESS"):
        await mgr.start(intake, CampaignOptions(channel=channel), name="t", campaign_id="c-nopostal")


async def test_outbox_may_go_without_address(store, no_address):
    mgr = CampaignManager(no_address, client=None, store=store, use_search_attributes=False)
    mgr.check_options(Channel.OUTBOX, None)  # no error
    no_address.postal_address = ADDRESS
    mgr.check_options(Channel.SMTP, None)
    mgr.check_options(Channel.WEBHOOK, None)


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    leads = tmp_path / "leads.csv"
    leads.write_text("email,first_name\nana@example.com,Ana\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CAMPAIGN_", "TEMPORAL_", "OPENAI_"))}
    env.update(CAMPAIGN_HOME=str(tmp_path / "home"), CAMPAIGN_SMTP_URL="smtp://127.0.0.1:2525",
               CAMPAIGN_WEBHOOK_URL="http://127.0.0.1:9/hook",
               CAMPAIGN_DELIVERY_WEBHOOK_SECRET=DELIVERY_SECRET,
               TEMPORAL_ADDRESS="127.0.0.1:9")  # nothing listens: the check comes first
    return subprocess.run([sys.executable, "-m", "starter", *args, "--leads", str(leads)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("channel", ["smtp", "webhook"])
def test_cli_start_exits_2_naming_the_variable(tmp_path, channel):
    proc = _cli(tmp_path, "start", "--channel", channel, "--id", "c1")
    assert proc.returncode == 2, proc.stderr
    assert "CAMPAIGN_POSTAL_ADDRESS" in proc.stderr
    proc = _cli(tmp_path, "schedule", "create", "weekly", "--cron", "0 9 * * MON",
                "--channel", channel)
    assert proc.returncode == 2, proc.stderr
    assert "CAMPAIGN_POSTAL_ADDRESS" in proc.stderr


@pytest.mark.parametrize("channel", ["smtp", "webhook"])
async def test_api_start_is_422_naming_the_variable(store, no_address, channel):
    no_address.api_token = SecretStr("t0ken")
    mgr = CampaignManager(no_address, client=None, store=store, use_search_attributes=False)
    app = create_app(no_address, manager=mgr)
    body: dict[str, Any] = {"name": "n", "leads": LEADS, "brief": "b", "channel": channel,
                            "id": "c-api"}
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        r = await client.post("/campaigns", json=body, headers={"Authorization": "Bearer t0ken"})
    assert r.status_code == 422, r.text
    assert "CAMPAIGN_POSTAL_ADDRESS" in r.json()["detail"][0]["msg"]
    assert await store.get_campaign("c-api") is None
