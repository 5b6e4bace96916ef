"""The `/senders` routes over real HTTP (issue 28): what `campaign sender ...` does, for the
service token only (a reviewer's token 403, none 401); a body refused for one field is a
422 located at it; an unknown name 404, a taken one 409; a secret never in an answer.
`check` asks the loopback DNS server (tests/fakes/dns_server.py), never the internet.
"""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from campaign_core.dkim_sign import load_dkim_key
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from starter.manager import CampaignManager
from starter.review_auth import Reviewers
from starter.senders import SENDER_TRAIL
from tests.api.test_api import AUTH, api_settings, serve
from tests.fakes.dns_server import dns_server

__all__ = ["api_settings"]  # a fixture, used by name

PASSWORD = "Pa55-w0rd-never-shown"
ANA = {"name": "ana", "from": "Ana Ruiz <ana@acme.test>",
       "smtp_url": f"smtps://ana:{PASSWORD}@smtp.acme.test:465", "daily_cap": 30,
       "ramp_start": 5, "ramp_step": 2}
CONTRACT_KEYS = {"name", "from", "daily_cap", "hourly_cap", "today_cap", "sent_24h", "sent_1h",
                 "next_slot", "bounce_rate", "complaint_rate", "paused", "paused_reason"}


def rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def keyed(settings: Settings) -> Settings:
    settings.encryption_key = SecretStr("k1:" + base64.b64encode(bytes(range(32))).decode())
    return settings


def locs(body: dict[str, Any]) -> list[list[Any]]:
    return [e["loc"] for e in body["detail"]]


async def test_senders_over_http(api_settings: Settings, store: SqliteStore) -> None:
    manager = CampaignManager(keyed(api_settings), store=store)  # no Temporal: the store is enough
    async with serve(manager) as client:
        r = await client.post("/senders", json=ANA, headers=AUTH)
        assert r.status_code == 201, r.text
        added = r.json()
        assert (added["name"], added["from"], added["today_cap"], added["transport"]) == (
            "ana", "Ana Ruiz <ana@acme.test>", 5, "smtp")
        assert PASSWORD not in r.text and "smtp.acme.test" in added["smtp_url"]
        r = await client.post("/senders", json={"name": "test", "from": "t@example.com",
                                                "outbox": True, "daily_cap": 5}, headers=AUTH)
        assert r.status_code == 201 and r.json()["transport"] == "outbox", r.text

        r = await client.get("/senders", headers=AUTH)
        assert r.status_code == 200, r.text
        assert [s["name"] for s in r.json()] == ["ana", "test"]
        assert all(s.keys() >= CONTRACT_KEYS for s in r.json())
        assert PASSWORD not in r.text

        r = await client.post("/senders/ana/pause", json={"note": "too many bounces"},
                              headers=AUTH)
        assert r.status_code == 200 and r.json()["paused_reason"] == "too many bounces", r.text
        r = await client.post("/senders/test/pause", headers=AUTH)
        assert r.json()["paused_reason"] == "paused by api", r.text
        listed = {s["name"]: s for s in (await client.get("/senders", headers=AUTH)).json()}
        assert (listed["ana"]["paused"], listed["ana"]["paused_reason"]) == (
            True, "too many bounces")

        r = await client.post("/senders/ana/resume", headers=AUTH)
        assert r.status_code == 200 and r.json() == {
            "name": "ana", "action": "resume", "paused_reason": None,
            "campaigns_signalled": [], "campaigns_not_told": []}, r.text
        r = await client.delete("/senders/test", headers=AUTH)
        assert r.status_code == 200 and r.json()["action"] == "remove", r.text
        assert [s["name"] for s in (await client.get("/senders", headers=AUTH)).json()] == ["ana"]

        # Unknown 404, taken 409.
        for method, path in (("POST", "/senders/zed/pause"), ("POST", "/senders/zed/resume"),
                             ("DELETE", "/senders/zed"), ("GET", "/senders/zed/check"),
                             ("POST", "/senders/test/pause")):
            r = await client.request(method, path, headers=AUTH)
            assert r.status_code == 404 and "no sender" in r.json()["detail"], (path, r.text)
        r = await client.post("/senders", json={**ANA, "from": "x@acme.test"}, headers=AUTH)
        assert r.status_code == 409 and "exists already" in r.json()["detail"], r.text

    trail = [e.envelope["records"][0] for e in await store.audit(SENDER_TRAIL)]
    assert [(r["kind"], r["data"]["by"]) for r in trail][:3] == [
        ("sender_added", "api"), ("sender_added", "api"), ("sender_paused", "api")]
    assert all(PASSWORD not in str(r) for r in trail)


async def test_service_token_only(api_settings: Settings, store: SqliteStore) -> None:
    token = await Reviewers(store).add("rita")
    reviewer = {"Authorization": f"Bearer {token}"}
    manager = CampaignManager(keyed(api_settings), store=store)
    async with serve(manager) as client:
        assert (await client.post("/senders", json=ANA, headers=AUTH)).status_code == 201
        for method, path, body in (("GET", "/senders", None), ("POST", "/senders", ANA),
                                   ("POST", "/senders/ana/pause", None),
                                   ("POST", "/senders/ana/resume", None),
                                   ("DELETE", "/senders/ana", None),
                                   ("GET", "/senders/ana/check", None)):
            r = await client.request(method, path, headers=reviewer, json=body)
            assert r.status_code == 403, (path, r.text)
            r = await client.request(method, path, json=body)
            assert r.status_code == 401, (path, r.text)
    row = await store.get_sender("ana")
    assert row is not None and not row.paused and row.removed_at is None


async def test_a_bad_body_is_422_naming_the_field(api_settings: Settings,
                                                  store: SqliteStore) -> None:
    manager = CampaignManager(api_settings, store=store)  # no CAMPAIGN_ENCRYPTION_KEY
    async with serve(manager) as client:
        cases: list[tuple[dict[str, Any], list[Any]]] = [
            ({**ANA, "name": "Ana Ruiz"}, ["body", "name"]),
            ({**ANA, "from": "Ana Ruiz"}, ["body", "from"]),
            ({**ANA, "daily_cap": 0}, ["body", "daily_cap"]),
            ({**ANA, "colour": "blue"}, ["body", "colour"]),
            ({**ANA, "smtp_url": "ftp://mail.acme.test"}, ["body", "smtp_url"]),
            ({**ANA, "smtp_url": "env:1BAD"}, ["body", "smtp_url"]),
            # A URL in clear cannot be kept without CAMPAIGN_ENCRYPTION_KEY.
            (ANA, ["body", "smtp_url"]),
            ({**ANA, "smtp_url": "env:ANA_SMTP_URL", "imap_url": "imaps://a:b@imap.acme.test"},
             ["body", "imap_url"]),
            ({**ANA, "smtp_url": "env:ANA_SMTP_URL", "dkim_key": "not a key",
              "dkim_selector": "s1"}, ["body", "dkim_key"]),
        ]
        for body, loc in cases:
            r = await client.post("/senders", json=body, headers=AUTH)
            assert r.status_code == 422 and loc in locs(r.json()), (body, r.text)
            assert PASSWORD not in r.text
        # The whole body's rules: how it sends, the ramp and the key in pairs.
        for body, says in (({"name": "x", "from": "x@acme.test"}, "needs smtp_url"),
                           ({"name": "x", "from": "x@acme.test", "outbox": True,
                             "smtp_url": "env:X"}, "takes no smtp_url"),
                           ({"name": "x", "from": "x@acme.test", "outbox": True,
                             "ramp_step": 2}, "ramp_start and ramp_step together")):
            r = await client.post("/senders", json=body, headers=AUTH)
            assert r.status_code == 422 and says in r.text, r.text
        r = await client.post("/senders/ana/pause", json={"note": "x" * 501}, headers=AUTH)
        assert r.status_code == 422 and ["body", "note"] in locs(r.json()), r.text
        r = await client.post("/senders/Not%20A%20Name/pause", headers=AUTH)
        assert r.status_code == 422 and ["path", "name"] in locs(r.json()), r.text
    assert await store.list_senders(include_removed=True) == []


async def test_check_over_http(api_settings: Settings, store: SqliteStore) -> None:
    pem = rsa_pem()
    record = load_dkim_key(pem).public_record()
    other = load_dkim_key(rsa_pem()).public_record()  # published, but not the configured key
    records: dict[str, dict[str, list[Any]]] = {
        "acme.test": {"MX": [(10, "mx.acme.test")], "TXT": ["v=spf1 mx -all"]},
        "mx.acme.test": {"A": ["192.0.2.10"]},
        "s1._domainkey.acme.test": {"TXT": [other]},
        "_dmarc.acme.test": {"TXT": ["v=DMARC1; p=quarantine"]},
    }
    with dns_server(records) as dns:
        api_settings.dns_resolver = dns.address
        manager = CampaignManager(keyed(api_settings), store=store)
        async with serve(manager) as client:
            r = await client.post("/senders", json={
                **ANA, "smtp_url": "env:ANA_SMTP_URL", "dkim_key": pem, "dkim_selector": "s1"},
                headers=AUTH)
            assert r.status_code == 201, r.text
            assert "PRIVATE KEY" not in r.text
            r = await client.get("/senders/ana/check", headers=AUTH)
            assert r.status_code == 200, r.text
            report = r.json()
            statuses = {c["name"]: c["status"] for c in report["checks"]}
            assert (report["ok"], statuses["dkim"], statuses["mx"], statuses["dmarc"]) == (
                False, "fail", "ok", "ok")
            assert report["dkim_record"] == record and "PRIVATE KEY" not in r.text
            dns.records["s1._domainkey.acme.test"]["TXT"] = [record]  # publish the right one
            report = (await client.get("/senders/ana/check", headers=AUTH)).json()
            assert {c["name"]: c["status"] for c in report["checks"]}["dkim"] == "ok"
