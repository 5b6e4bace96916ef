"""`replies --json` carries what the classifier made of each reply, `report --json` when a
scheduled step is due: both read the store alone, so they run in process on the test's
SQLite store (Typer's runner in a thread: the CLI runs its own event loop)."""

from __future__ import annotations

from typing import Any

from campaign_core.store.sqlite import SqliteStore
from tests.fakes.cli_runner import cli, cli_json
from tests.store.test_reply_figures import DUE, delivering_campaign, reply


async def test_replies_json_carries_intent_confidence_and_action(store: SqliteStore) -> None:
    ana, bo, *_ = await delivering_campaign(store)
    await reply(store, "c1", ana, "ana", step=2, intent="meeting_request")
    await reply(store, "c1", bo, "bo", step=1)  # not read yet
    doc: list[dict[str, Any]] = await cli_json("replies", "c1")
    got = {r["lead_id"]: (r["intent"], r["confidence"], r["action"]) for r in doc}
    assert got == {ana: ("meeting_request", 0.9, "stop"), bo: (None, None, None)}
    # The table says it too: what was read and done, blank for a reply not read yet.
    code, out, err = await cli("replies", "c1")
    assert code == 0, err
    assert "meeting_request → stop" in out and out.count("→") == 1, out


async def test_report_json_rows_of_scheduled_steps_carry_due_at(store: SqliteStore) -> None:
    _, bo, *_ = await delivering_campaign(store)
    doc: list[dict[str, Any]] = await cli_json("report", "c1")
    due = {(r["lead_id"], r["step"]): r["due_at"] for r in doc}
    assert due.pop((bo, 2)) == DUE.isoformat().replace("+00:00", "Z") == "2031-01-02T09:00:00Z"
    assert set(due.values()) == {None}
    assert all("due_at" in r for r in doc)
