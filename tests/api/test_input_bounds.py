"""Issue 25, findings 4, 5, 6, 7 and 10, and the session cookie's Secure flag: what comes in
from outside is bounded, and a session ends on the server.

Over real HTTP (uvicorn on loopback), reproduced the way the review found each:

- 4: 300 unauthenticated requests with made-up methods and random paths leave the API's
  series in /metrics bounded (they grew from 156 to 4,356 lines);
- 5: an edit of the review page's form past the API's limits (50,000 characters of body,
  1,000 of subject) is refused on the lead page before anything is stored, and a form past
  the pages' own cap is 413;
- 6: a 30-digit page or step on the API's drafts, the campaign page, the lead page and the
  edit, exclude and include forms answers 422 (or is ignored), never 500;
- 7: a session cookie copied before sign-out no longer works after it, nor after the
  reviewer is removed and added again;
- 10: without a token (`--insecure-dev`) only loopback Host values are answered, so a
  DNS-rebinding page cannot drive the API; with a token nothing changes;
- the review cookies are Secure through a trusted TLS proxy, not through an untrusted one,
  and always with CAMPAIGN_COOKIE_SECURE=always.

New names are imported inside the tests that use them, so that each test fails on its own
when its fix is reverted.
"""

from __future__ import annotations

import asyncio
import random
import string
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import fastapi.routing
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from temporalio.runtime import Runtime

from campaign_core.settings import Settings
from campaign_core.store.base import now_utc
from campaign_core.store.sqlite import SqliteStore
from starter.api import create_app
from starter.manager import CampaignManager
from starter.review_auth import PRE_SESSION_COOKIE, SESSION_COOKIE, Reviewers, session_signer
from tests.api.test_api import AUTH, TOKEN, api_settings, manager
from tests.fakes import pg_fixtures
from tests.fakes.served import serving
from tests.ops import test_metrics
from tests.review.test_review_pages import EDITED, drafting_doubles, start_campaign
from tests.store.test_store import backend, draft, new_campaign

port = test_metrics.port  # fixtures: a Prometheus listener on a free port
runtime = test_metrics.runtime
pg_cluster = pg_fixtures.pg_cluster  # fixtures of the store's backends
pg_url = pg_fixtures.pg_url
__all__ = ["api_settings", "backend", "manager"]  # fixtures, used by name

HUGE = "1" + "0" * 29  # a 30-digit number: past every store's 64-bit integers
REBIND = "rebind.attacker.example"


def app_of(settings: Settings, store: SqliteStore, *, manager: CampaignManager | None = None,
           insecure_dev: bool = False) -> Any:
    return create_app(settings, manager=manager or CampaignManager(settings, store=store),
                      insecure_dev=insecure_dev)


def token_settings(settings: Settings) -> Settings:
    settings.api_token = SecretStr(TOKEN)
    return settings


async def sign_in(client: httpx.AsyncClient, token: str) -> str:
    """Sign in through the form, as a browser does; the session cookie's value."""
    page = await client.get("/review/sign-in")
    assert page.status_code == 200, page.text
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    answer = await client.post("/review/sign-in", headers={"Origin": str(client.base_url)},
                               data={"csrf": csrf, "token": token, "next": "/review"})
    assert answer.status_code == 303, answer.text
    cookie = client.cookies.get(SESSION_COOKIE)
    assert cookie
    return cookie


async def csrf_of(store: SqliteStore, cookie: str) -> str:
    signer = await session_signer(store)
    session = signer.read(cookie)
    assert session is not None
    return signer.csrf(session.nonce)


def copy_of(client: httpx.AsyncClient, cookie: str) -> httpx.AsyncClient:
    """Another browser holding a copy of the session cookie."""
    return httpx.AsyncClient(base_url=client.base_url, cookies={SESSION_COOKIE: cookie},
                             follow_redirects=False, timeout=60)


# -- 4: the metrics stay bounded -------------------------------------------------------------


async def api_series(port: int) -> list[str]:
    """The lines of every `campaign_api_*` series in /metrics, once the exporter caught up."""
    await asyncio.sleep(1.5)  # let the exporter see the last points
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).raise_for_status().text
    return [line for line in text.splitlines() if line.startswith("campaign_api_")]


def series(line: str) -> str:
    """A sample line without its value: the series' name and labels."""
    return line.rsplit(" ", 1)[0]


async def test_made_up_methods_and_paths_do_not_grow_the_metrics(
        settings: Settings, store: SqliteStore, runtime: Runtime, port: int) -> None:
    rng = random.Random(25)
    app = app_of(token_settings(settings), store)
    async with serving(app) as client:
        # Every kind of answer once: public, refused, authorised, unmatched, a made-up method.
        assert (await client.get("/health")).status_code in (200, 503)
        assert (await client.get("/campaigns")).status_code == 401
        assert (await client.get("/campaigns", headers=AUTH)).status_code == 200
        assert (await client.get("/nowhere", headers=AUTH)).status_code == 404
        assert (await client.request("BREW", "/nowhere")).status_code == 401
        assert (await client.request("BREW", "/health")).status_code == 405
        assert (await client.request("BREW", "/campaigns/c0", headers=AUTH)).status_code == 405
        before = await api_series(port)

        for i in range(300):
            method = "".join(rng.choices(string.ascii_uppercase, k=12)) + str(i)
            path = "/" + "/".join("".join(rng.choices(string.ascii_lowercase + string.digits,
                                                      k=10)) for _ in range(rng.randint(1, 3)))
            answer = await client.request(method, path)
            assert answer.status_code == 401, (method, path, answer.status_code)
        for i in range(20):  # made-up methods on routes that exist, with and without the token
            assert (await client.request(f"X{i}", "/health")).status_code == 405
            assert (await client.request(f"Y{i}", f"/campaigns/c{i}", headers=AUTH)
                    ).status_code == 405
        after = await api_series(port)

    # Not one new series (the values move, the set of series does not): the issue saw 156
    # lines grow to 4,356.
    assert len(after) == len(before), (len(before), len(after))
    assert {series(line) for line in after} == {series(line) for line in before}
    labels: dict[str, set[str]] = {"method": set(), "route": set(), "status": set()}
    for family in text_string_to_metric_families("\n".join(after) + "\n"):
        for sample in family.samples:
            for name, values in labels.items():
                if name in sample.labels:
                    values.add(sample.labels[name])
    assert labels["method"] <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
                                "OTHER"}, labels["method"]
    # FastAPI 0.165+ nests an included router's routes; iter_route_contexts flattens them.
    flat = getattr(fastapi.routing, "iter_route_contexts", lambda routes: routes)
    templates = {getattr(r, "path", None) for r in flat(app.routes)}
    assert labels["route"] <= templates | {"unmatched"}, labels["route"] - templates
    assert all(s.isdigit() and len(s) == 3 for s in labels["status"]), labels["status"]


# -- 5: the edit form's size -----------------------------------------------------------------


async def test_an_oversized_edit_from_the_page_is_refused_before_it_is_stored(
        ts_env: Any, manager: CampaignManager, store: SqliteStore, run_workers: Any) -> None:
    token = await Reviewers(store).add("rita")
    async with run_workers(ts_env.client, overrides=drafting_doubles(store)), \
            serving(create_app(manager.settings, manager=manager)) as client:
        [lead_id] = await start_campaign(manager, ts_env, "c-size", 1)
        versions = await store.list_draft_versions("c-size", lead_id, 1)
        cookie = await sign_in(client, token)
        csrf = await csrf_of(store, cookie)
        url = f"/review/campaigns/c-size/leads/{quote(lead_id, safe='')}/edit"
        origin = {"Origin": str(client.base_url)}

        for field, size, limit in (("body", 60_000, "50,000"), ("subject", 1_001, "1,000")):
            answer = await client.post(url, headers=origin, data={
                "csrf": csrf, "step": "1", field: "x" * size})
            stored = await store.list_draft_versions("c-size", lead_id, 1)
            assert stored == versions, f"{field}: {len(stored) - len(versions)} version(s) stored"
            assert answer.status_code == 422, (field, answer.status_code, answer.text[:500])
            assert "Not saved (step 1)" in answer.text and f"at most {limit}" in answer.text
            assert "x" * 2000 not in answer.text, "the page shows the stored text, not the sent"

        # A whole form past the pages' cap (1 MB) is refused as it arrives: 413.
        answer = await client.post(url, headers=origin, data={
            "csrf": csrf, "step": "1", "body": "y" * 2_000_000})
        assert await store.list_draft_versions("c-size", lead_id, 1) == versions
        assert answer.status_code == 413 and "larger than" in answer.text, answer.text[:300]

        # The form says so too, and an edit within the limits is still saved.
        page = await client.get(f"/review/campaigns/c-size/leads/{quote(lead_id, safe='')}")
        assert 'maxlength="50000"' in page.text and 'maxlength="1000"' in page.text
        answer = await client.post(url, headers=origin, data={
            "csrf": csrf, "step": "1", "body": EDITED})
        assert answer.status_code == 303, answer.text[:500]
        await manager.reject("c-size", by="test")


# -- 6: huge page and step numbers -----------------------------------------------------------


async def test_huge_page_and_step_numbers_are_422_never_500(
        manager: CampaignManager, store: SqliteStore) -> None:
    [lead, *_] = await new_campaign(store, "c1", 2)
    await draft(store, "c1", lead.lead_id)
    token = await Reviewers(store).add("rita")
    async with serving(create_app(manager.settings, manager=manager)) as client:
        lid = quote(lead.lead_id, safe="")
        # The API: ?page of the drafts, and the step of an edit and an exclusion.
        assert (await client.get("/campaigns/c1/drafts?page=2", headers=AUTH)).status_code == 200
        for method, path, body in (
                ("GET", f"/campaigns/c1/drafts?page={HUGE}", None),
                ("GET", f"/campaigns/c1/drafts?page=1&limit={HUGE}", None),
                ("PATCH", f"/campaigns/c1/drafts/{lid}", {"step": int(HUGE), "body": "x"}),
                ("PATCH", f"/campaigns/c1/drafts/{lid}", {"version": int(HUGE), "body": "x"}),
                ("POST", f"/campaigns/c1/drafts/{lid}/exclude", {"step": int(HUGE)}),
                ("POST", f"/campaigns/c1/drafts/{lid}/include", {"step": int(HUGE)})):
            answer = await client.request(method, path, headers=AUTH, json=body)
            assert answer.status_code == 422, (method, path, answer.status_code, answer.text)

        # The pages: the campaign page's ?page, the lead page's ?step, and the forms' step.
        cookie = await sign_in(client, token)
        csrf = await csrf_of(store, cookie)
        answer = await client.get(f"/review/campaigns/c1?page={HUGE}")
        assert answer.status_code == 422 and "page: at most 1,000,000" in answer.text
        assert (await client.get("/review/campaigns/c1?page=3")).status_code == 200
        answer = await client.get(f"/review/campaigns/c1/leads/{lid}?step={HUGE}")
        assert answer.status_code == 200, "the lead page takes no step: ignored, not a 500"
        for action in ("edit", "exclude", "include"):
            answer = await client.post(
                f"/review/campaigns/c1/leads/{lid}/{action}",
                headers={"Origin": str(client.base_url)},
                data={"csrf": csrf, "step": HUGE, "body": "x", "base_version": "1"})
            assert answer.status_code == 422, (action, answer.status_code, answer.text[:300])
            assert "step: must be between 1 and 100" in answer.text
        answer = await client.post(
            f"/review/campaigns/c1/leads/{lid}/edit", headers={"Origin": str(client.base_url)},
            data={"csrf": csrf, "step": "1", "body": "x", "base_version": HUGE})
        assert answer.status_code == 422 and "base_version" in answer.text


# -- 7: sign-out ends the session on the server ----------------------------------------------


async def test_a_copied_session_cookie_dies_at_sign_out(
        settings: Settings, store: SqliteStore) -> None:
    token = await Reviewers(store).add("rita")
    async with serving(app_of(token_settings(settings), store)) as client:
        cookie = await sign_in(client, token)
        async with copy_of(client, cookie) as other:
            assert (await other.get("/review")).status_code == 200  # the copy works, for now
            answer = await client.post("/review/sign-out", headers={
                "Origin": str(client.base_url)}, data={"csrf": await csrf_of(store, cookie)})
            assert answer.status_code == 303
            answer = await other.get("/review")
            assert answer.status_code == 303 and answer.headers["location"].startswith(
                "/review/sign-in"), "a copied cookie must not outlive the sign-out"
            answer = await other.post("/review/sign-out", headers={
                "Origin": str(client.base_url)}, data={"csrf": await csrf_of(store, cookie)})
            assert answer.status_code == 303 and "/review/sign-in" in answer.headers["location"]
        # Signing in again gives a session that works.
        client.cookies.clear()
        await sign_in(client, token)
        assert (await client.get("/review")).status_code == 200


async def test_removing_a_reviewer_ends_their_sessions_even_if_the_name_comes_back(
        settings: Settings, store: SqliteStore) -> None:
    reviewers = Reviewers(store)
    await reviewers.add("rita")
    before = await store.get_reviewer("rita")
    assert before is not None
    signer = await session_signer(store)
    await reviewers.remove("rita")
    await reviewers.add("rita")
    again = await store.get_reviewer("rita")
    assert again is not None and again.session_epoch > before.session_epoch
    # A cookie of the old account, even one dated after the name came back (the same
    # second, or a clock a little behind), is refused by its epoch.
    stale = signer.issue("rita", now=now_utc() + timedelta(seconds=5),
                         epoch=before.session_epoch)
    fresh = signer.issue("rita", epoch=again.session_epoch)
    async with serving(app_of(token_settings(settings), store)) as client:
        async with copy_of(client, stale) as http:
            assert (await http.get("/review")).status_code == 303
        async with copy_of(client, fresh) as http:
            assert (await http.get("/review")).status_code == 200


async def test_the_store_bumps_a_reviewers_epoch(backend: Any) -> None:
    """On every backend: sign-out's bump, and removal's, move the epoch on by one."""
    store = backend.store
    assert await store.add_reviewer("ana", "sha256:a")
    found = await store.get_reviewer("ana")
    assert found is not None and found.session_epoch == 0
    assert await store.bump_session_epoch("ana")
    assert await store.bump_session_epoch("ana")
    by_token = await store.reviewer_by_token("sha256:a")
    assert by_token is not None and by_token.session_epoch == 2
    assert [r.session_epoch for r in await store.list_reviewers()] == [2]
    assert not await store.bump_session_epoch("nobody")
    assert await store.remove_reviewer("ana")
    assert not await store.bump_session_epoch("ana"), "a removed reviewer has no sessions"
    assert await store.add_reviewer("ana", "sha256:a2")
    again = await store.get_reviewer("ana")
    assert again is not None and again.session_epoch == 3, "the removal moved it on too"


# -- 10: --insecure-dev answers loopback Host values only ------------------------------------


async def test_insecure_dev_answers_loopback_hosts_only(
        settings: Settings, store: SqliteStore) -> None:
    assert settings.api_token is None
    async with serving(app_of(settings, store, insecure_dev=True)) as client:
        port = client.base_url.port
        rebound = {"Host": f"{REBIND}:{port}"}
        answer = await client.get("/campaigns", headers=rebound)
        assert answer.status_code == 421, answer.text
        answer = await client.post("/suppressions", headers=rebound,
                                   json={"emails": ["victim@example.com"]})
        assert answer.status_code == 421, answer.text
        assert not await store.is_suppressed("victim@example.com")
        for host in (REBIND, "localhost.attacker.example", "127.0.0.1.nip.io", "0.0.0.0",
                     "[::ffff:7f00:1]x", "localhost:80x"):
            assert (await client.get("/health", headers={"Host": host})).status_code == 421, host
        for host in (f"localhost:{port}", "localhost", f"127.0.0.1:{port}", "127.0.0.1",
                     f"[::1]:{port}", "[::1]", "LOCALHOST"):
            answer = await client.get("/campaigns", headers={"Host": host})
            assert answer.status_code == 200, (host, answer.text)
        answer = await client.post("/suppressions", headers={"Host": f"localhost:{port}"},
                                   json={"emails": ["victim@example.com"]})
        assert answer.status_code == 200, answer.text

    # With a token configured, nothing changes: any Host, the token decides.
    async with serving(app_of(token_settings(settings), store, insecure_dev=True)) as client:
        rebound = {"Host": REBIND}
        assert (await client.get("/campaigns", headers={**rebound, **AUTH})).status_code == 200
        assert (await client.get("/campaigns", headers=rebound)).status_code == 401


# -- the session cookie's Secure flag --------------------------------------------------------


def set_cookies(answer: httpx.Response, name: str) -> list[str]:
    return [v for v in answer.headers.get_list("set-cookie") if v.startswith(f"{name}=")]


async def secure_flags(client: httpx.AsyncClient, token: str, headers: dict[str, str]
                       ) -> tuple[bool, bool]:
    """Whether the pre-session and the session cookie each go out Secure."""
    page = await client.get("/review/sign-in", headers=headers)
    [pre] = set_cookies(page, PRE_SESSION_COOKIE)
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    nonce = pre.split(";", 1)[0].split("=", 1)[1]
    client.cookies.set(PRE_SESSION_COOKIE, nonce)  # a Secure one is not sent back over http
    answer = await client.post("/review/sign-in", headers={
        **headers, "Origin": str(client.base_url)}, data={"csrf": csrf, "token": token})
    assert answer.status_code == 303, answer.text
    [session] = set_cookies(answer, SESSION_COOKIE)
    return "secure" in pre.lower().split("; "), "secure" in session.lower().split("; ")


@pytest.mark.parametrize(("trusted", "forwarded", "secure"), [
    ("127.0.0.1", True, True),  # the TLS proxy is trusted: its https is believed
    ("10.20.30.40", True, False),  # a proxy elsewhere is trusted, not this peer
    ("127.0.0.1", False, False),  # plain http, no proxy
])
async def test_the_cookie_is_secure_through_a_trusted_tls_proxy(
        settings: Settings, store: SqliteStore, monkeypatch: pytest.MonkeyPatch,
        trusted: str, forwarded: bool, secure: bool) -> None:
    from starter.api import server_options

    monkeypatch.setenv("CAMPAIGN_TRUSTED_PROXIES", trusted)
    configured = token_settings(Settings())
    assert server_options(configured)["forwarded_allow_ips"] == trusted
    token = await Reviewers(store).add("rita")
    headers = {"X-Forwarded-Proto": "https"} if forwarded else {}
    async with serving(app_of(configured, store), **server_options(configured)) as client:
        assert await secure_flags(client, token, headers) == (secure, secure)


async def test_cookie_secure_always_forces_the_flag(
        settings: Settings, store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMPAIGN_COOKIE_SECURE", "always")
    configured = token_settings(Settings())
    token = await Reviewers(store).add("rita")
    async with serving(app_of(configured, store), forwarded_allow_ips="") as client:
        assert await secure_flags(client, token, {"X-Forwarded-Proto": "http"}) == (True, True)
