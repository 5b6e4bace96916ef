"""The `campaign` CLI end to end against the real dev server.

The CLI runs as a real subprocess (console script), the workers run in the test
process on the same CAMPAIGN_HOME, so this is the path a user takes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import KB

pytestmark = pytest.mark.slow

CAMPAIGN = str(Path(sys.executable).parent / "campaign")

CSV = """email,first_name,last_name,company,title,timezone,industry
maren@northwind.example,Maren,Holt,Northwind Freight,VP Operations,Europe/Berlin,logistics
,Nobody,Here,Ghost Inc,CEO,,
ravi@ledgerly.example,Ravi,Shah,Ledgerly,CTO,Asia/Kolkata,fintech
not-an-email,Bad,Row,Oops,CTO,,
Maren@Northwind.example ,Maren,Holt,Northwind Freight,VP Operations,,
ines@carely.example,Ines,Costa,Carely,Head of Growth,Europe/Lisbon,healthcare
"""


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run `campaign ARGS` without blocking the loop the workers run on."""
    proc = await asyncio.create_subprocess_exec(
        CAMPAIGN, *args, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode(), err.decode()


async def cli_json(env: dict[str, str], *args: str) -> Any:
    code, out, err = await cli(env, *args, "--json")
    assert code == 0, f"campaign {' '.join(args)} exited {code}: {err}"
    return json.loads(out)


async def wait_stage(env: dict[str, str], cid: str, stages: set[str]) -> dict[str, Any]:
    for _ in range(120):
        status = await cli_json(env, "status", cid)
        if status["stage"] in stages:
            return dict(status)
        await asyncio.sleep(0.5)
    raise AssertionError(f"{cid} never reached {stages}: {status}")


@pytest.fixture
def cli_env(dev_env, home: Path, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "CAMPAIGN_"))}
    env.update({
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "CAMPAIGN_HOME": str(home),
        "CAMPAIGN_TASK_QUEUE_PREFIX": prefix,
        "TEMPORAL_UI_URL": "http://ui.test:8233",
        "NO_COLOR": "1",
    })
    return env


def eml_files(home: Path) -> list[Path]:
    return sorted((home / "outbox").glob("*.eml"))


async def test_start_bad_rows_approve_completes(dev_env, cli_env, home, tmp_path, run_workers):
    leads = tmp_path / "leads.csv"
    leads.write_text(CSV)
    async with run_workers(dev_env.client):
        started = await cli_json(cli_env, "start", "--leads", str(leads), "--name", "Q4 test",
                                 "--brief", "Book a 20-minute call.", "--kb", str(KB),
                                 "--id", "e2e-approve")
        assert started["campaign_id"] == "e2e-approve"
        assert started["leads_accepted"] == 3  # the duplicate Maren row is merged
        assert [r["row"] for r in started["leads_rejected"]] == [3, 5]
        assert "email" in started["leads_rejected"][0]["error"]
        assert started["ui_url"].startswith("http://ui.test:8233/namespaces/default/workflows/")

        # The same start again (its options repeated: other options are refused, issue 25).
        again = await cli_json(cli_env, "start", "--leads", str(leads), "--name", "Q4 test",
                               "--brief", "Book a 20-minute call.", "--kb", str(KB),
                               "--id", "e2e-approve")
        assert again["workflow_id"] == started["workflow_id"]

        status = await wait_stage(cli_env, "e2e-approve", {"awaiting_approval"})
        assert status["counts"]["leads"] == 3 and status["counts"]["drafted"] == 3
        assert eml_files(home) == [], "no message may exist before approval"
        drafts = await cli_json(cli_env, "drafts", "e2e-approve")
        assert len(drafts) == 3
        assert set(drafts[0]) == {"lead_id", "email", "subject", "body", "citations", "step",
                                  "version", "edited_by", "excluded"}

        code, _, err = await cli(cli_env, "approve", "e2e-approve", "--by", "qa", "--note", "ok")
        assert code == 0, err
        status = await wait_stage(cli_env, "e2e-approve", {"completed", "failed"})
        assert status["stage"] == "completed"
        assert status["counts"]["sent"] == 3
        report = await cli_json(cli_env, "report", "e2e-approve")
    assert {r["delivery_status"] for r in report} == {"sent"}
    assert {r["email"] for r in report} == {
        "maren@northwind.example", "ravi@ledgerly.example", "ines@carely.example"}
    files = eml_files(home)
    assert len(files) == 3
    assert {r["message_id"].strip("<>").split("@")[0] for r in report} == {f.stem for f in files}


async def test_reject_leaves_no_message(dev_env, cli_env, home, tmp_path, run_workers):
    leads = tmp_path / "leads.jsonl"
    leads.write_text('{"email": "a@example.com", "company": "Acme"}\n'
                     '{"email": "b@example.com", "company": "Beta"}\n')
    async with run_workers(dev_env.client):
        started = await cli_json(cli_env, "start", "--leads", str(leads), "--id", "e2e-reject")
        await wait_stage(cli_env, started["campaign_id"], {"awaiting_approval"})
        code, _, err = await cli(cli_env, "reject", "e2e-reject", "--reason", "off-brand")
        assert code == 0, err
        status = await wait_stage(cli_env, "e2e-reject", {"rejected", "failed"})
        report = await cli_json(cli_env, "report", "e2e-reject")
    assert status["stage"] == "rejected"
    assert eml_files(home) == []
    assert {r["delivery_status"] for r in report} == {"rejected"}


async def test_bad_input_exits_2_and_starts_nothing(cli_env, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("email,company\nnope,Acme\n,Beta\n")
    code, out, err = await cli(cli_env, "start", "--leads", str(bad), "--json")
    assert code == 2
    assert out == ""
    assert "bad.csv" in err and "row 2" in err
    code, _, err = await cli(cli_env, "start", "--leads", str(tmp_path / "missing.csv"))
    assert code == 2 and "missing.csv" in err
    code, _, err = await cli(cli_env, "status", "no-such-campaign")
    assert code == 2 and "no-such-campaign" in err


async def test_unreachable_temporal_exits_3(cli_env, tmp_path):
    leads = tmp_path / "leads.csv"
    leads.write_text("email\na@example.com\n")
    env = {**cli_env, "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    code, out, err = await cli(env, "start", "--leads", str(leads), "--json")
    assert code == 3
    assert "campaign dev" in err
    assert out == ""


async def test_suppress_validates_every_address_before_adding_any(cli_env, home):
    code, _, err = await cli(cli_env, "suppress", "Ok@Example.com", "not-an-email")
    assert code == 2 and "not-an-email" in err and "nothing was added" in err
    code, _, err = await cli(cli_env, "suppress", " Ok@Example.com ", "second@example.org")
    assert code == 0 and "2 address(es) added" in err
    code, _, err = await cli(cli_env, "suppress", "ok@example.com")
    assert code == 0 and "0 address(es) added" in err and "1 already there" in err
