"""Reviewer tokens on the HTTP API, and `campaign reviewer add|list|remove`.

A reviewer's token reaches the review routes only (403 elsewhere, before any body is
read), and every decision made with it is attributed to the reviewer whatever `by` says;
the service token's decisions go to `by`. A removed reviewer's token stops working at once.
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from campaign_core.leads import parse_lead_rows
from campaign_core.models import Stage
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.cli import app as cli_app
from starter.review_auth import Reviewers, secret_hash
from tests.api.test_api import AUTH, api_settings, manager, serve
from tests.fakes.doubles import fast_agents
from tests.workflows.test_orchestration import wait_stage

__all__ = ["api_settings", "manager"]  # fixtures, used by name


async def test_a_reviewer_token_reaches_the_review_routes_only(manager, store) -> None:
    token = await Reviewers(store).add("rita")
    bearer = {"Authorization": f"Bearer {token}"}
    async with serve(manager) as client:
        # Review routes: through the gate (404: no such campaign, not 401/403).
        for method, path in [("GET", "/campaigns/x"), ("GET", "/campaigns/x/drafts"),
                             ("GET", "/campaigns/x/report")]:
            r = await client.request(method, path, headers=bearer)
            assert r.status_code == 404, (method, path, r.text)
        r = await client.post("/campaigns/x/approval", headers=bearer,
                              json={"decision": "approve"})
        assert r.status_code == 404, r.text
        # Everything else: 403 before the body is read (this one is not even JSON).
        for method, path in [("POST", "/campaigns"), ("POST", "/campaigns/x/pause"),
                             ("POST", "/campaigns/x/cancel"), ("POST", "/campaigns/x/leads"),
                             ("POST", "/webhooks/bounce"), ("POST", "/suppressions"),
                             ("POST", "/forget"), ("POST", "/erasure"), ("GET", "/schedules"),
                             ("POST", "/schedules"), ("GET", "/openapi.json")]:
            r = await client.request(method, path, headers=bearer, content=b"{not json")
            assert r.status_code == 403, (method, path, r.text)
            assert "review routes only" in r.json()["detail"]
        # A token that looks like a reviewer's but is none: 401.
        for wrong in (token[:-2] + "xx", "crt_", "crt_" + "A" * 43):
            r = await client.get("/campaigns/x", headers={"Authorization": f"Bearer {wrong}"})
            assert r.status_code == 401, wrong
        # Removed: the same token stops working at once.
        await Reviewers(store).remove("rita")
        r = await client.get("/campaigns/x", headers=bearer)
        assert r.status_code == 401, r.text
        # The service token still reaches everything.
        assert (await client.get("/campaigns/x", headers=AUTH)).status_code == 404


async def test_decisions_with_a_reviewer_token_are_the_reviewers_whatever_by_says(
    ts_env, manager, store, run_workers
) -> None:
    token = await Reviewers(store).add("rita")
    bearer = {"Authorization": f"Bearer {token}"}
    async with run_workers(ts_env.client, overrides=fast_agents(store)), \
            serve(manager) as client:
        for cid in ("c-rev-a", "c-rev-b"):  # other people each (one person is skipped)
            leads = [{"email": f"p{i}@{cid}.example"} for i in range(3)]
            await manager.start(parse_lead_rows(enumerate(leads, start=2), cid), name=cid,
                                campaign_id=cid)
            await wait_stage(ts_env, cid, Stage.AWAITING_APPROVAL)
        r = await client.post("/campaigns/c-rev-a/approval", headers=bearer,
                              json={"decision": "approve", "by": "the-ceo"})
        assert r.status_code == 202 and r.json()["approved"] == 3, r.text
        again = await client.post("/campaigns/c-rev-a/approval", headers=bearer,
                                  json={"decision": "reject"})
        assert again.status_code == 409, again.text
        r = await client.post("/campaigns/c-rev-b/approval", headers=AUTH,
                              json={"decision": "reject"})
        assert r.status_code == 202, r.text
        await wait_stage(ts_env, "c-rev-b", Stage.REJECTED)
        await wait_stage(ts_env, "c-rev-a", Stage.COMPLETED)
    trail_a = json.dumps([a.model_dump() for a in await store.audit("c-rev-a")])
    assert "rita" in trail_a and "the-ceo" not in trail_a
    trail_b = json.dumps([a.model_dump() for a in await store.audit("c-rev-b")])
    assert '"api"' in trail_b and "rita" not in trail_b, "the service token's default `by`"


def test_reviewer_add_list_remove(home: Path) -> None:
    runner = CliRunner()
    added = runner.invoke(cli_app, ["reviewer", "add", "rita", "--json"])
    assert added.exit_code == 0, added.output
    doc = json.loads(added.stdout)
    assert doc["reviewer"] == "rita" and doc["token"].startswith("crt_")
    assert len(doc["token"]) >= 40
    plain = runner.invoke(cli_app, ["reviewer", "add", "sam"])
    assert plain.exit_code == 0 and plain.stdout.strip().startswith("crt_"), plain.output
    dup = runner.invoke(cli_app, ["reviewer", "add", "rita"])
    assert dup.exit_code == 2 and "already exists" in dup.output
    bad = runner.invoke(cli_app, ["reviewer", "add", "no spaces"])
    assert bad.exit_code == 2 and "reviewer name" in bad.output

    listed = runner.invoke(cli_app, ["reviewer", "list", "--json"])
    assert [r["reviewer"] for r in json.loads(listed.stdout)] == ["rita", "sam"]
    assert "crt_" not in listed.stdout and "sha256" not in listed.stdout
    table = runner.invoke(cli_app, ["reviewer", "list"])
    assert "rita" in table.stdout and "sam" in table.stdout

    # Only the hash is stored.
    db = (home / "campaign.db").read_bytes()
    assert doc["token"].encode() not in db and secret_hash(doc["token"]).encode() in db

    removed = runner.invoke(cli_app, ["reviewer", "remove", "rita"])
    assert removed.exit_code == 0, removed.output
    assert runner.invoke(cli_app, ["reviewer", "remove", "rita"]).exit_code == 2
    listed = runner.invoke(cli_app, ["reviewer", "list", "--json"])
    assert [r["reviewer"] for r in json.loads(listed.stdout)] == ["sam"]


async def test_removed_reviewer_token_and_store_settings(settings: Settings, store: SqliteStore) -> None:
    reviewers = Reviewers(store)
    token = await reviewers.add("x")
    found = await reviewers.by_token(token)
    assert found is not None and found.name == "x"
    assert await reviewers.by_token("not-a-reviewer-token") is None
