"""Unsubscribe links point at the API actually served while CAMPAIGN_PUBLIC_URL is unset.

`campaign dev --api-port P` once left the links at the default `http://localhost:8000`,
whatever P was, so every link in the outbox led nowhere. `campaign dev` now records the API
it serves in dev.json, and its workers (and a `campaign worker` beside it) link there;
`campaign api --host --port` links to itself. A CAMPAIGN_PUBLIC_URL that is set always wins.
"""

from __future__ import annotations

import email
import json
import re
from email.policy import default as default_policy
from pathlib import Path

import httpx
import pytest

from campaign_core.settings import Settings
from starter.cli.stack import served_url
from tests.cli.test_cli_e2e import cli, cli_json, wait_stage
from tests.conftest import KB
from tests.fakes import dev_process
from tests.fakes.dev_process import DevProcess

dev_cli_env = dev_process.dev_cli_env


def link_of(eml: Path) -> str:
    msg = email.message_from_bytes(eml.read_bytes(), policy=default_policy)
    [link] = [u for u in re.findall(r"<([^>]+)>", str(msg["List-Unsubscribe"]))
              if u.startswith("http")]
    return link


@pytest.mark.slow
async def test_dev_links_to_the_api_port_it_was_given(dev_cli_env, home, tmp_path) -> None:
    assert "CAMPAIGN_PUBLIC_URL" not in dev_cli_env
    leads = tmp_path / "leads.csv"
    leads.write_text("email,company\nana@example.com,Northwind\n")
    dev = DevProcess(dev_cli_env, home)
    await dev.start()
    try:
        assert dev.api_port != 8000
        await cli_json(dev_cli_env, "start", "--leads", str(leads), "--kb", str(KB),
                       "--id", "links")
        await wait_stage(dev_cli_env, "links", {"awaiting_approval"})
        code, _, err = await cli(dev_cli_env, "approve", "links")
        assert code == 0, err
        await wait_stage(dev_cli_env, "links", {"completed"})
        [eml] = sorted((home / "outbox").glob("*.eml"))
        link = link_of(eml)
        assert link.startswith(f"http://127.0.0.1:{dev.api_port}/unsubscribe?token="), link
        async with httpx.AsyncClient(timeout=10) as http:
            page = await http.get(link)  # the link leads to this dev's confirmation page
        assert page.status_code == 200 and "Unsubscribe?" in page.text
        assert f"Unsubscribe links point at http://127.0.0.1:{dev.api_port}" in "".join(dev.lines)
    finally:
        assert await dev.stop() == 0, "".join(dev.lines)


def write_dev_json(settings: Settings, api_url: str) -> None:
    settings.dev_file.parent.mkdir(parents=True, exist_ok=True)
    settings.dev_file.write_text(json.dumps({"address": "127.0.0.1:7233",
                                             "ui_url": "http://127.0.0.1:8233",
                                             "api_url": api_url}))


def test_a_set_public_url_wins_over_the_served_address(home, monkeypatch) -> None:
    monkeypatch.delenv("CAMPAIGN_PUBLIC_URL", raising=False)
    unset = Settings()
    assert unset.resolved_public_url == "http://localhost:8000"  # nothing served, the default
    write_dev_json(unset, "http://127.0.0.1:18123")
    assert unset.resolved_public_url == "http://127.0.0.1:18123"  # what `campaign dev` serves

    monkeypatch.setenv("CAMPAIGN_PUBLIC_URL", "https://campaigns.example.com/")
    chosen = Settings()
    assert chosen.resolved_public_url == "https://campaigns.example.com"
    chosen.serve_links_from(served_url("127.0.0.1", 8001))
    assert chosen.resolved_public_url == "https://campaigns.example.com"


def test_campaign_api_links_to_the_address_it_serves(home, monkeypatch) -> None:
    monkeypatch.delenv("CAMPAIGN_PUBLIC_URL", raising=False)
    settings = Settings()
    settings.serve_links_from(served_url("0.0.0.0", 8001))
    assert settings.resolved_public_url == "http://localhost:8001"
    assert served_url("127.0.0.1", 9000) == "http://127.0.0.1:9000"
    assert served_url("::1", 9000) == "http://[::1]:9000"
