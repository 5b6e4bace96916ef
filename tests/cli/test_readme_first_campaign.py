"""The README's "A first campaign", typed as it is written, against the real dev server.

The commands are read from the README itself (the block after "In a second terminal"), so a
change to them there is a change to what this test runs. Each runs as a subprocess of the
console script from the clone's folder (the paths are relative to it), with the environment
a user's shell would have after `campaign dev` started: TEMPORAL_ADDRESS is set here only
because the test's dev server is not on the default port. The workers run in the test
process on the same CAMPAIGN_HOME, as `campaign dev`'s would.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli_e2e import CAMPAIGN, cli_env, eml_files  # noqa: F401  (cli_env: fixture)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def first_campaign_commands() -> list[list[str]]:
    """The `campaign ...` lines of the README's second-terminal block, split as a shell would."""
    text = README.read_text()
    start = text.index("In a second terminal, from the clone's folder")
    block = text[start:].split("\n\n")[1]
    lines = [line.strip() for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("campaign ")]


async def typed(env: dict[str, str], argv: list[str]) -> tuple[int, str, str]:
    """Run one README line (`campaign ...`) as typed, from the clone's folder."""
    proc = await asyncio.create_subprocess_exec(
        CAMPAIGN, *argv[1:], env=env, cwd=ROOT, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    return proc.returncode or 0, out.decode(), err.decode()


async def stage_of(env: dict[str, str], cid: str) -> dict[str, Any]:
    code, out, err = await typed(env, ["campaign", "status", cid, "--json"])
    assert code == 0, err
    return dict(json.loads(out))


async def wait_for(env: dict[str, str], cid: str, stages: set[str]) -> dict[str, Any]:
    for _ in range(240):
        status = await stage_of(env, cid)
        if status["stage"] in stages:
            return status
        await asyncio.sleep(0.5)
    raise AssertionError(f"{cid} never reached {stages}: {status}")


def test_the_readme_shows_the_commands_this_test_runs() -> None:
    commands = first_campaign_commands()
    assert [c[1] for c in commands] == ["start", "status", "drafts", "approve", "report"]
    assert {c[2] if c[1] != "start" else c[c.index("--id") + 1] for c in commands} == {
        "q4-outreach"}


async def test_the_first_campaign_runs_as_typed(dev_env, cli_env, home, run_workers):  # noqa: F811
    start, status, drafts, approve, report = first_campaign_commands()
    cid = start[start.index("--id") + 1]
    async with run_workers(dev_env.client):
        code, out, err = await typed(cli_env, start)
        assert code == 0, err
        assert "ui.test:8233" in out, "start prints the campaign's Web UI link"
        await wait_for(cli_env, cid, {"awaiting_approval"})
        for line in (status, drafts):
            code, out, err = await typed(cli_env, line)
            assert code == 0, f"{shlex.join(line)}: {err}"
            assert out.strip()
        code, _, err = await typed(cli_env, approve)
        assert code == 0, err
        done = await wait_for(cli_env, cid, {"completed", "failed"})
        assert done["stage"] == "completed", done
        code, out, err = await typed(cli_env, report)
        assert code == 0, err
    leads = (ROOT / "starter" / "demo_data" / "leads.csv").read_text().strip().splitlines()
    assert done["counts"]["sent"] == len(leads) - 1
    assert len(eml_files(home)) == len(leads) - 1
