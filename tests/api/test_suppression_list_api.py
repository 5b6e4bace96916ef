"""`GET /suppressions` and `DELETE /suppressions/{email}` over real HTTP: the list as
`campaign suppressions --json` gives it, a lift as `campaign unsuppress` does it (404 for an
address not listed, 409 for an erased person's), for the service token only.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.manager import CampaignManager
from starter.review_auth import Reviewers
from starter.suppression import SUPPRESSION_TRAIL
from tests.api.test_api import AUTH, api_settings, serve

__all__ = ["api_settings"]  # a fixture, used by name

ANA, BO, ZED = "ana@example.com", "bo@example.org", "zed@example.com"
ANA_FULLWIDTH = "\uff21\uff2e\uff21@example.com"  # fullwidth ANA: the same address


async def test_list_and_lift_over_http(api_settings: Settings, store: SqliteStore) -> None:
    await store.add_suppressions([ANA], "manual", source="manual")
    await asyncio.sleep(0.01)
    await store.add_suppressions([BO], "unsubscribe (c1)", source="one_click")
    await asyncio.sleep(0.01)
    await store.forget(ZED)
    token = await Reviewers(store).add("rita")
    manager = CampaignManager(api_settings, store=store)  # no Temporal: the store is enough
    async with serve(manager) as client:
        r = await client.get("/suppressions", headers=AUTH)
        assert r.status_code == 200, r.text
        assert [(e["email"], e["source"]) for e in r.json()] == [
            (ZED, "erasure"), (BO, "one_click"), (ANA, "manual")]
        assert r.json()[0].keys() == {"email", "reason", "source", "created_at"}

        reviewer = {"Authorization": f"Bearer {token}"}
        assert (await client.get("/suppressions", headers=reviewer)).status_code == 403
        r = await client.delete(f"/suppressions/{ANA}", headers=reviewer, params={"reason": "x"})
        assert r.status_code == 403 and await store.is_suppressed(ANA)
        assert (await client.get("/suppressions")).status_code == 401

        # A fullwidth spelling is the same address; the reason in the query, `by` given.
        r = await client.delete("/suppressions/" + quote(ANA_FULLWIDTH), headers=AUTH,
                                params={"reason": "asked to hear from us", "by": "ops-bot"})
        assert r.status_code == 200, r.text
        assert (r.json()["email"], r.json()["by"], r.json()["removed"][0]["source"]) == (
            ANA, "ops-bot", "manual")
        assert not await store.is_suppressed(ANA)
        r = await client.delete(f"/suppressions/{ANA}", headers=AUTH, params={"reason": "again"})
        assert r.status_code == 404 and "not on the suppression list" in r.json()["detail"]

        # The reason in a body; `by` defaults to the API.
        r = await client.request("DELETE", f"/suppressions/{BO}", headers=AUTH,
                                 json={"reason": "clicked by a link scanner"})
        assert r.status_code == 200 and r.json()["by"] == "api", r.text

        r = await client.delete(f"/suppressions/{ZED}", headers=AUTH, params={"reason": "x"})
        assert r.status_code == 409 and "erased" in r.json()["detail"], r.text
        assert await store.is_suppressed(ZED)

        for path, params, loc in ((f"/suppressions/{ZED}", {}, ["query", "reason"]),
                                  ("/suppressions/nope", {"reason": "x"}, ["path", "email"])):
            r = await client.delete(path, headers=AUTH, params=params)
            assert r.status_code == 422 and loc in [e["loc"] for e in r.json()["detail"]], r.text
    trail = await store.audit(SUPPRESSION_TRAIL)
    assert sorted(e.envelope["records"][0]["data"]["by"] for e in trail) == ["api", "ops-bot"]
