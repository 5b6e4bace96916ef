"""Issue 11, item 5: what the reviewer's terminal shows is what the store holds.

A company `Acme [conceal]wire funds to evil.example[/conceal]` must be shown as typed,
not turned into hidden text; `[/]` must not abort the listing; escape sequences in a
body (concealed text, OSC hyperlinks, cursor moves) must not reach the terminal. The
commands run as a user runs them (a subprocess with colour forced, so Rich emits the
styles a terminal would get), or in process where Temporal would be needed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from campaign_core.envelope import Envelope, EnvelopeMetadata, Provenance, Record, digest
from campaign_core.leads import parse_lead_rows
from campaign_core.models import CampaignStatus, Stage
from campaign_core.store.sqlite import SqliteStore
from starter.cli import app as cli_app
from starter.cli.app import shown
from starter.manager import CampaignManager
from starter.schedules import ScheduleManager, ScheduleSummary

REPO = Path(__file__).resolve().parents[2]
CONCEAL = "Acme [conceal]wire funds to evil.example[/conceal]"
ABORT = "Acme [/]"
#: SGR 8 (concealed), an OSC 8 hyperlink, a cursor move up and a carriage return.
ESCAPES = "Hi.\x1b[8m wire funds to evil.example\x1b[0m \x1b]8;;https://evil.example\x07here\x1b]8;;\x07\x1b[2A\rDone."
CID = "c-terminal"


async def _seed(store: SqliteStore) -> list[str]:
    await store.upsert_campaign(campaign_id=CID, name="t", brief="", channel="outbox",
                                kb_dir=None, workflow_id=f"campaign:{CID}")
    leads = parse_lead_rows(enumerate([{"email": "ana@example.com"}, {"email": "bo@example.org"}],
                                      start=2), CID).leads
    await store.upsert_leads(CID, leads)
    ids = [lead.lead_id for lead in leads]
    await store.upsert_draft(campaign_id=CID, lead_id=ids[0], step=1, subject=f"{CONCEAL} news",
                             body=ESCAPES, citations=["[/]x.md"], provenance={}, envelope_id="e1")
    await store.upsert_draft(campaign_id=CID, lead_id=ids[1], step=1, subject=ABORT,
                             body="Second [bold]body[/]", citations=[], provenance={},
                             envelope_id="e2")
    await store.upsert_delivery(message_key=f"{CID}:{ids[0]}:1", campaign_id=CID, lead_id=ids[0],
                                step=1, channel="outbox", status="failed",
                                error=f"550 {CONCEAL}\x1b[8mhidden")
    start = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
    prov = Provenance(source="[conceal]kb.md[/conceal]\x1b[8m", agent="x", created_at=start,
                      inputs_digest=digest({}))
    env = Envelope(
        metadata=EnvelopeMetadata(campaign_id=CID, run_id="r", agent="copywriter[/]", agent_version="1",
                                  attempt=1, started_at=start, ended_at=start + timedelta(seconds=1)),
        records=[Record(kind="draft", key=ids[0], data={}, provenance=prov)])
    await store.save_envelope(env, ids[0])
    return ids


@pytest.fixture
async def seeded(store: SqliteStore) -> list[str]:
    ids = await _seed(store)
    await store.close()
    return ids


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAMPAIGN_", "TEMPORAL_"))}
    env.update(CAMPAIGN_HOME=str(home), FORCE_COLOR="1", COLUMNS="250", TERM="xterm-256color")
    return subprocess.run([sys.executable, "-m", "starter", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)


def _visible(text: str) -> str:
    """What a terminal shows: the text without Rich's own colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _no_injected_escapes(text: str) -> None:
    assert "\x1b[8m" not in text          # nothing concealed
    assert "\x1b]" not in text            # no OSC (hyperlinks, titles)
    assert "\x1b[2A" not in text and "\r" not in text  # no cursor moves


def test_shown_strips_escapes_and_escapes_markup() -> None:
    assert shown(ESCAPES) == "Hi. wire funds to evil.example hereDone."
    assert shown("a\nb\tc") == "a b c" and shown("a\nb", multiline=True) == "a\nb"
    assert shown("x\u202eevil") == "xevil"
    assert shown(None) == ""


def test_drafts_show_markup_as_typed_and_no_escape_sequence(home: Path, seeded: list[str]) -> None:
    result = _cli(home, "drafts", CID)
    assert result.returncode == 0, result.stderr
    _no_injected_escapes(result.stdout)
    text = _visible(result.stdout)
    assert CONCEAL in text                   # the tags are visible, not applied
    assert f"Subject: {ABORT}" in text
    assert "Second [bold]body[/]" in text
    assert "[/]x.md" in text
    assert "Hi. wire funds to evil.example hereDone." in text
    assert "2 drafts" in text                # `[/]` did not abort the listing
    as_json = _cli(home, "drafts", CID, "--json")
    rows = json.loads(as_json.stdout)        # --json stays the exact stored values
    assert {r["subject"]: r["body"] for r in rows} == {
        f"{CONCEAL} news": ESCAPES, ABORT: "Second [bold]body[/]"}


def test_report_and_audit_show_markup_as_typed(home: Path, seeded: list[str]) -> None:
    report = _cli(home, "report", CID)
    assert report.returncode == 0, report.stderr
    _no_injected_escapes(report.stdout)
    assert "[conceal]wire" in _visible(report.stdout)
    audit = _cli(home, "audit", CID)
    assert audit.returncode == 0, audit.stderr
    _no_injected_escapes(audit.stdout)
    assert "copywriter[/]" in _visible(audit.stdout)
    assert "[conceal]kb.md[/conceal]" in _visible(audit.stdout)


def test_an_error_quoting_markup_is_shown_as_typed(home: Path, seeded: list[str]) -> None:
    result = _cli(home, "drafts", "nope[/]")
    assert result.returncode == 2, result.stderr
    assert "unknown campaign 'nope[/]'" in _visible(result.stderr)


def test_status_and_schedule_list_show_markup_as_typed(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def status(self: CampaignManager, campaign_id: str) -> CampaignStatus:
        return CampaignStatus(campaign_id=campaign_id, stage=Stage.DELIVERING, paused=True,
                              paused_reason=f"bounces from {ABORT}", error=f"{CONCEAL}\x1b[8m")

    async def listing(self: ScheduleManager) -> list[ScheduleSummary]:
        return [ScheduleSummary(name="weekly", schedule_id="s", cron="@daily", timezone="UTC",
                                paused=True, note=CONCEAL, next_runs=[],
                                recent_campaigns=["[/]c1"], template_id=None, leads=1,
                                channel="outbox", ui_url="http://ui")]

    monkeypatch.setattr(CampaignManager, "status", status)
    monkeypatch.setattr(ScheduleManager, "list", listing)
    runner = CliRunner()
    st = runner.invoke(cli_app, ["status", CID])
    assert st.exit_code == 0, st.output
    assert f"bounces from {ABORT}" in st.output and CONCEAL in st.output
    assert "\x1b" not in st.output
    sched = runner.invoke(cli_app, ["schedule", "list"])
    assert sched.exit_code == 0, sched.output
    flat = " ".join(sched.output.replace("│", " ").split())
    assert "[conceal]wire" in flat and "[/]c1" in flat
