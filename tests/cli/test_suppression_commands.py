"""`campaign suppressions` and `campaign unsuppress`: the suppression list listed and lifted
from the terminal. Both need the store alone, so they run in process (Typer's runner, in a
thread: the CLI runs its own event loop) on the test's SQLite store.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from campaign_core.leads import parse_lead_rows
from campaign_core.store.erasure import FORGOTTEN_REASON, subject_digest
from campaign_core.store.sqlite import SqliteStore
from starter.suppression import SUPPRESSION_TRAIL
from tests.fakes.cli_runner import cli, cli_json

ANA, BO, ZED = "ana@example.com", "bo@example.org", "zed@example.com"


async def seed(store: SqliteStore) -> str:
    """Ana a lead of c1 and suppressed by hand, Bo bounced, Zed erased; Ana's lead id."""
    [lead] = parse_lead_rows(enumerate([{"email": ANA, "first_name": "Ana"}], start=2), "c1").leads
    await store.upsert_campaign(campaign_id="c1", name="One", brief="", channel="outbox",
                                kb_dir=None, workflow_id="campaign:c1")
    await store.upsert_leads("c1", [lead])
    await store.add_suppressions([ANA], "manual", source="manual")
    await asyncio.sleep(0.01)
    await store.add_suppressions([BO], "bounce (webhook)", source="bounce")
    await asyncio.sleep(0.01)
    await store.forget(ZED)
    return lead.lead_id


async def test_the_list_newest_first_as_json_and_as_a_table(store: SqliteStore) -> None:
    await seed(store)
    doc = await cli_json("suppressions")
    assert [(e["email"], e["source"], e["reason"]) for e in doc] == [
        (ZED, "erasure", FORGOTTEN_REASON), (BO, "bounce", "bounce (webhook)"),
        (ANA, "manual", "manual")]
    assert all(e.keys() == {"email", "reason", "source", "created_at"} for e in doc)
    code, out, err = await cli("suppressions")
    assert code == 0, err
    assert out.index("zed@") < out.index("bo@") < out.index("ana@")
    assert "3 address(es)" in err


async def test_unsuppress_lifts_the_entry_and_the_audit_names_who_and_why(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    lead_id = await seed(store)
    done = await cli_json("unsuppress", "\uff21\uff2e\uff21@Example.com", "--reason",
                          f"asked to hear from us again ({ANA})", "--by", "maria")
    assert (done["email"], done["by"], done["audited_campaigns"]) == (ANA, "maria", 1)
    assert [(r["email"], r["source"]) for r in done["removed"]] == [(ANA, "manual")]
    assert not await store.is_suppressed(ANA)

    [entry] = await store.audit("c1", lead_id)
    assert entry.agent == "control_plane.unsuppress"
    data = entry.envelope["records"][0]["data"]
    assert (data["by"], data["reason"]) == ("maria", f"asked to hear from us again ({ANA})")
    assert data["previous"][0]["source"] == "manual"
    # The list's own trail: who and why, never the address (an erasure could not find it).
    [trail] = await store.audit(SUPPRESSION_TRAIL)
    tdata = trail.envelope["records"][0]["data"]
    assert (tdata["by"], tdata["subject"]) == ("maria", subject_digest(ANA))
    assert "ana@" not in json.dumps(trail.envelope).lower()

    # Without --by, the OS user acts.
    await store.add_suppressions([ANA], "manual", source="manual")
    monkeypatch.setenv("LOGNAME", "olga")
    code, out, err = await cli("unsuppress", ANA, "--reason", "typo")
    assert code == 0, err
    assert "lifted by olga" in out
    assert [r.agent for r in await store.audit("c1", lead_id)] == ["control_plane.unsuppress"] * 2


async def test_unsuppress_refuses_an_erased_person_an_address_not_listed_and_bad_input(
    store: SqliteStore,
) -> None:
    await seed(store)
    code, _, err = await cli("unsuppress", ZED, "--reason", "they wrote back")
    assert code == 2 and "erased" in err and "never lifted" in err, err
    assert await store.is_suppressed(ZED)
    code, _, err = await cli("unsuppress", "cy@example.net", "--reason", "x")
    assert code == 2 and "not on the suppression list" in err, err
    code, _, err = await cli("unsuppress", "nope", "--reason", "x")
    assert code == 2 and "not a valid address" in err and "nothing was lifted" in err, err
    code, _, err = await cli("unsuppress", BO, "--reason", "   ")
    assert code == 2 and "--reason" in err, err
    code, _, err = await cli("unsuppress", BO)
    assert code == 2 and "--reason" in err, err
    assert await store.is_suppressed(BO)
    assert await store.audit(SUPPRESSION_TRAIL) == []
