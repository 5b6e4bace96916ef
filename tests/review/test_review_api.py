"""Reviewers' edits, exclusions and paging over HTTP and the CLI, on the time-skipping server.

The API under uvicorn with the real agents and store: a PATCH makes the version that is
delivered, a stale version or a decided campaign is 409, a guardrail is 422 naming the
field, exclude/include decide who is sent to, and a request whose auth layer put a
reviewer on `request.state` is attributed to that reviewer whatever `by` says (a tiny
middleware stands in for the auth layer). The CLI does the same as a real subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from campaign_core.models import Stage
from starter.api import create_app
from starter.manager import CampaignManager
from tests.api.test_api import AUTH, api_settings, manager
from tests.fakes.served import serving
from tests.workflows.test_campaign_workflow import LEADS, outbox, start
from tests.workflows.test_orchestration import finish, wait_stage

__all__ = ["api_settings", "manager"]  # fixtures, made visible to this module

NEW_BODY = ("Hi Ana,\n\nI rewrote this note by hand: our freight planning checks catch late "
            "loads before your customers notice them, and the first month is on us.\n\n"
            "Best regards")
REVIEWER = "X-Test-Reviewer"
CAMPAIGN = str(Path(sys.executable).parent / "campaign")


class FakeAuth:
    """Stands in for the auth layer: puts the reviewer named in a header on request.state."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name.decode().lower() == REVIEWER.lower():
                    scope.setdefault("state", {})["reviewer"] = value.decode()
        await self.app(scope, receive, send)


@contextlib.asynccontextmanager
async def serve(mgr: CampaignManager) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(mgr.settings, manager=mgr)
    app.add_middleware(FakeAuth)
    async with serving(app, client_timeout=30) as client:
        yield client


def records(trail: list[Any], kind: str) -> list[dict[str, Any]]:
    return [r for e in trail for r in e.envelope["records"] if r["kind"] == kind]


async def test_edit_exclude_and_approve_over_http(ts_env, manager, store, prefix, run_workers,
                                                  api_settings) -> None:
    cid = "c-review-http"
    async with run_workers(ts_env.client), serve(manager) as client:
        await start(ts_env, api_settings, store, prefix, cid)
        await wait_stage(ts_env, cid, Stage.AWAITING_APPROVAL)
        base = f"/campaigns/{cid}/drafts"

        first = (await client.get(base, params={"page": 1, "limit": 2}, headers=AUTH)).json()
        second = (await client.get(base, params={"page": 2, "limit": 2}, headers=AUTH)).json()
        assert len(first) == 2 and len(second) == 1
        assert {d["email"] for d in first + second} == {lead["email"] for lead in LEADS}
        assert {k: first[0][k] for k in ("step", "version", "edited_by", "excluded")} == {
            "step": 1, "version": 1, "edited_by": None, "excluded": False}
        bad_page = await client.get(base, params={"limit": 0}, headers=AUTH)
        assert bad_page.status_code == 422 and bad_page.json()["detail"][0]["loc"] == [
            "query", "limit"]
        by_email = {d["email"]: d for d in first + second}
        ana, bo, cy = (by_email[lead["email"]]["lead_id"] for lead in LEADS)

        edit = await client.patch(f"{base}/{ana}", headers={**AUTH, REVIEWER: "rita"},
                                  json={"body": NEW_BODY, "version": 1, "by": "mallory"})
        assert edit.status_code == 200, edit.text
        assert {k: edit.json()[k] for k in ("version", "edited_by", "body")} == {
            "version": 2, "edited_by": "rita", "body": NEW_BODY}
        stale = await client.patch(f"{base}/{ana}", headers=AUTH,
                                   json={"body": NEW_BODY + " Again.", "version": 1})
        assert stale.status_code == 409 and "version 2" in stale.json()["detail"], stale.text
        link = await client.patch(f"{base}/{ana}", headers=AUTH, json={
            "body": NEW_BODY + "\nDetails: https://evil.example.net/offer"})
        assert link.status_code == 422, link.text
        assert link.json()["detail"][0]["loc"] == ["body", "body"]
        assert "evil.example.net" in link.json()["detail"][0]["msg"]
        for body, field in (({}, "subject"), ({"body": "x", "colour": "red"}, "colour"),
                            ({"subject": "x", "step": 0}, "step")):
            r = await client.patch(f"{base}/{ana}", headers=AUTH, json=body)
            assert r.status_code == 422 and field in str(r.json()["detail"]), (body, r.text)
        assert (await client.patch(f"{base}/lead_nope", headers=AUTH,
                                   json={"subject": "Hi there"})).status_code == 404
        assert (await client.patch(f"/campaigns/nope/drafts/{ana}", headers=AUTH,
                                   json={"subject": "Hi there"})).status_code == 404
        now = await store.get_draft(cid, ana)
        assert now is not None and (now.version, now.body) == (2, NEW_BODY)  # refusals changed nothing

        out = await client.post(f"{base}/{bo}/exclude", headers=AUTH, json={"by": "ops"})
        assert out.status_code == 200 and out.json()["excluded"] is True, out.text
        back = await client.post(f"{base}/{bo}/include", headers=AUTH, json={"step": 1})
        assert back.status_code == 200 and back.json()["excluded"] is False, back.text
        gone = await client.post(f"{base}/{cy}/exclude", headers=AUTH)
        assert gone.status_code == 200 and gone.json()["excluded"] is True, gone.text

        ok = await client.post(f"/campaigns/{cid}/approval", headers={**AUTH, REVIEWER: "rita"},
                               json={"decision": "approve", "by": "mallory"})
        assert ok.status_code == 202 and ok.json()["approved"] == 2, ok.text
        late = await client.patch(f"{base}/{ana}", headers=AUTH, json={"subject": "Too late"})
        assert late.status_code == 409, late.text
        late_out = await client.post(f"{base}/{ana}/exclude", headers=AUTH)
        assert late_out.status_code == 409, late_out.text
        final = await finish(ts_env, cid, step=timedelta(seconds=5))
    assert final.stage is Stage.COMPLETED and final.counts.sent == 2
    texts = [f.read_text() for f in outbox(api_settings)]
    assert len(texts) == 2 and not any(LEADS[2]["email"] in t for t in texts)
    assert "I rewrote this note by hand" in next(t for t in texts if LEADS[0]["email"] in t)
    trail = await store.audit(cid)
    assert [r["data"]["by"] for r in records(trail, "draft_edit")] == ["rita"]
    assert [r["data"]["by"] for r in records(trail, "draft_excluded")] == ["ops", "api"]
    assert [r["data"]["by"] for r in records(trail, "draft_included")] == ["api"]
    assert [r["data"]["by"] for r in records(trail, "decision")] == ["rita"]


async def cli(env: dict[str, str], *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CAMPAIGN, *args, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=120)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.slow  # seven CLI subprocesses
async def test_edit_exclude_and_page_from_the_cli(ts_env, settings, store, prefix, run_workers,
                                                  home, tmp_path) -> None:
    cid = "c-review-cli"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "CAMPAIGN_"))}
    env.update({"TEMPORAL_ADDRESS": ts_env.client.service_client.config.target_host,
                "CAMPAIGN_HOME": str(home), "CAMPAIGN_TASK_QUEUE_PREFIX": prefix, "NO_COLOR": "1"})
    body_file = tmp_path / "body.txt"
    body_file.write_text(NEW_BODY, encoding="utf-8")
    me = getpass.getuser()
    async with run_workers(ts_env.client):
        await start(ts_env, settings, store, prefix, cid)
        await wait_stage(ts_env, cid, Stage.AWAITING_APPROVAL)

        pages = []
        for page in (1, 2):
            code, out, err = await cli(env, "drafts", cid, "--page", str(page), "--limit", "2",
                                       "--json")
            assert code == 0, err
            pages.append(json.loads(out))
        assert [len(p) for p in pages] == [2, 1]
        by_email = {d["email"]: d for p in pages for d in p}
        assert set(by_email[LEADS[0]["email"]]) >= {"step", "version", "edited_by", "excluded"}
        ana, bo = (by_email[lead["email"]]["lead_id"] for lead in LEADS[:2])

        code, out, err = await cli(env, "edit", cid, "--lead", ana, "--body-file", str(body_file),
                                   "--subject", "A hand-written idea", "--json")
        assert code == 0, err
        edited = json.loads(out)
        assert (edited["version"], edited["edited_by"], edited["body"]) == (2, me, NEW_BODY)
        code, _, err = await cli(env, "edit", cid, "--lead", ana, "--subject", "Call {first_name}")
        assert code == 2 and "placeholder" in err, err
        code, _, err = await cli(env, "exclude", cid, "--lead", bo)
        assert code == 0, err
        code, _, err = await cli(env, "approve", cid)
        assert code == 0 and "Approved 2" in err, err
        code, _, err = await cli(env, "edit", cid, "--lead", ana, "--subject", "Too late")
        assert code == 2 and ("decided" in err or "delivering" in err or "completed" in err), err
        final = await finish(ts_env, cid, step=timedelta(seconds=5))
    assert final.counts.sent == 2
    texts = [f.read_text() for f in outbox(settings)]
    assert not any(LEADS[1]["email"] in t for t in texts)
    assert any("A hand-written idea" in t and "I rewrote this note by hand" in t for t in texts)
    trail = await store.audit(cid)
    assert [r["data"]["by"] for r in records(trail, "draft_edit")] == [me]
    assert [r["data"]["by"] for r in records(trail, "decision")] == [me]
