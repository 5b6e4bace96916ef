"""`campaign dev` as a user runs it: a real subprocess with server, UI and workers.

Checks that it prints the UI address, that other commands find it through
dev.json, that the campaign and each lead's orchestration can be found through the
Web UI's own API, that SIGTERM stops it cleanly, and that history survives a restart.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
import pytest

from tests.cli.test_cli_e2e import cli, cli_json, wait_stage
from tests.conftest import KB
from tests.fakes import dev_process
from tests.fakes.dev_process import DevProcess

pytestmark = pytest.mark.slow

dev_cli_env = dev_process.dev_cli_env


async def test_dev_runs_campaign_shows_it_in_ui_and_stops_cleanly(dev_cli_env, home, tmp_path):
    leads = tmp_path / "leads.csv"
    leads.write_text("email,company,title\nana@example.com,Northwind,CTO\nbo@example.org,Ledgerly,VP Sales\n")
    dev = DevProcess(dev_cli_env, home)
    ui = await dev.start()
    try:
        assert ui == f"http://127.0.0.1:{dev.ui_port}"
        base = f"http://127.0.0.1:{dev.api_port}"
        assert dev.sign_in.startswith(f"{base}/review/sign-in?code="), dev.lines
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            form = await http.get(dev.sign_in)
            assert form.status_code == 200 and "Sign in" in form.text
            assert (await http.get("/campaigns/x")).status_code == 401  # a private service token
        recorded = json.loads((home / "dev.json").read_text())
        assert recorded["address"] == f"127.0.0.1:{dev.port}" and recorded["ui_url"] == ui
        # No TEMPORAL_ADDRESS: the CLI finds the dev server through dev.json.
        started = await cli_json(dev_cli_env, "start", "--leads", str(leads), "--kb", str(KB),
                                 "--id", "dev-e2e")
        assert started["ui_url"].startswith(ui + "/namespaces/default/workflows/")
        await wait_stage(dev_cli_env, "dev-e2e", {"awaiting_approval"})
        code, _, err = await cli(dev_cli_env, "approve", "dev-e2e")
        assert code == 0, err
        status = await wait_stage(dev_cli_env, "dev-e2e", {"completed", "failed"})
        assert status["counts"]["sent"] == 2
        async with httpx.AsyncClient(base_url=ui, timeout=10) as http:
            page = await http.get(f"/namespaces/default/workflows/{quote(started['workflow_id'], safe='')}")
            assert page.status_code == 200 and "<html" in page.text.lower()
            found = await http.get("/api/v1/namespaces/default/workflows",
                                   params={"query": 'CampaignId="dev-e2e"'})
            found.raise_for_status()
            runs = {(e["execution"]["workflowId"], e["type"]["name"])
                    for e in found.json()["executions"]}
        types = sorted(t for _, t in runs)
        assert types == ["CampaignWorkflow", "DeliveryOrchestrator",
                         "LeadOrchestrator", "LeadOrchestrator"], runs
    finally:
        code = await dev.stop()
    assert code == 0, "".join(dev.lines)
    assert "crt_" not in "".join(dev.lines), "no reviewer token is ever printed or logged"
    assert not (home / "dev.json").exists()
    assert "stopped" in "".join(dev.lines)

    code, _, err = await cli(dev_cli_env, "status", "dev-e2e")
    assert code == 3 and "campaign dev" in err  # nothing is running now

    dev = DevProcess(dev_cli_env, home)
    await dev.start()
    try:
        status = await cli_json(dev_cli_env, "status", "dev-e2e")
        assert status["stage"] == "completed"  # history and store survived the restart
    finally:
        assert await dev.stop() == 0
