"""`campaign sender add|list|pause|resume|remove|check` (issue 28) from the terminal, in
process (Typer's runner, in a thread: the CLI runs its own event loop) on the test's SQLite
store; `check` asks the loopback DNS server (tests/fakes/dns_server.py) through
CAMPAIGN_DNS_RESOLVER, never the internet.

What a person sees: a sender added with its defaults, listed with the contract's keys, paused
with a reason and resumed; the refusals name the flag (a URL in clear without
CAMPAIGN_ENCRYPTION_KEY, an unreadable or non-key DKIM file, an unknown or taken name); a
password or a DKIM key never reaches the output, the store in clear or the audit trail.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from campaign_core.dkim_sign import load_dkim_key
from campaign_core.store.sqlite import SqliteStore
from starter.senders import SENDER_TRAIL
from tests.fakes.cli_runner import cli, cli_json
from tests.fakes.dns_server import dns_server

PASSWORD = "Pa55-w0rd-never-shown"
SMTP_URL = f"smtps://ana%40acme.test:{PASSWORD}@smtp.acme.test:465"
#: What `sender list --json` gives for each sender (CONTRACT.md, Senders), at least.
CONTRACT_KEYS = {"name", "from", "daily_cap", "hourly_cap", "today_cap", "sent_24h", "sent_1h",
                 "next_slot", "bounce_rate", "complaint_rate", "paused", "paused_reason"}


def pem_of(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def rsa_pem(bits: int = 2048) -> str:
    return pem_of(rsa.generate_private_key(public_exponent=65537, key_size=bits))


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """CAMPAIGN_ENCRYPTION_KEY set: a URL or key in clear is stored encrypted."""
    monkeypatch.setenv("CAMPAIGN_ENCRYPTION_KEY",
                       "k1:" + base64.b64encode(bytes(range(32))).decode())


async def test_add_list_pause_resume_remove(store: SqliteStore,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANA_SMTP_URL", SMTP_URL)
    added = await cli_json("sender", "add", "ana", "--from", "Ana Ruiz <ana@acme.test>",
                           "--smtp-url", "env:ANA_SMTP_URL", "--min-gap", "90s",
                           "--ramp-start", "5", "--ramp-step", "2", "--by", "maria")
    assert (added["name"], added["from"], added["smtp_url"]) == (
        "ana", "Ana Ruiz <ana@acme.test>", "env:ANA_SMTP_URL")
    assert (added["daily_cap"], added["hourly_cap"], added["min_gap_seconds"],
            added["today_cap"]) == (40, 12, 90, 5)  # the defaults, and day 1 of the ramp
    test = await cli_json("sender", "add", "test", "--from", "Test <t@example.com>",
                          "--outbox", "--daily-cap", "5")
    assert (test["transport"], test["smtp_url"], test["today_cap"]) == ("outbox", None, 5)

    listed = await cli_json("sender", "list")
    assert [s["name"] for s in listed] == ["ana", "test"]
    assert all(s.keys() >= CONTRACT_KEYS for s in listed)
    assert [(s["sent_24h"], s["sent_1h"], s["paused"]) for s in listed] == [(0, 0, False)] * 2
    code, out, err = await cli("sender", "list")
    assert code == 0, err
    assert "Ana Ruiz <ana@acme.test>" in out and "40/12/90s, ramp 5+2/day" in out

    code, _, err = await cli("sender", "pause", "ana", "--note", "warming down", "--by", "maria")
    assert code == 0 and "Paused sender ana (warming down)" in err, err
    code, _, err = await cli("sender", "pause", "test", "--by", "rita")
    assert code == 0, err
    by_name = {s["name"]: s for s in await cli_json("sender", "list")}
    assert (by_name["ana"]["paused"], by_name["ana"]["paused_reason"]) == (True, "warming down")
    assert by_name["test"]["paused_reason"] == "paused by rita"
    assert by_name["ana"]["next_slot"] is None  # held, not planned
    code, out, _ = await cli("sender", "list")
    assert "yes: warming down" in out

    code, _, err = await cli("sender", "resume", "ana")
    assert code == 0 and "Resumed sender ana" in err, err
    row = await store.get_sender("ana")
    assert row is not None and (row.paused, row.paused_reason) == (False, None)

    code, _, err = await cli("sender", "remove", "test")
    assert code == 0, err
    assert [s["name"] for s in await cli_json("sender", "list")] == ["ana"]
    # A removed sender's name may be taken again.
    again = await cli_json("sender", "add", "test", "--from", "t@example.com", "--outbox")
    assert again["from"] == "t@example.com"

    trail = [e.envelope["records"][0] for e in await store.audit(SENDER_TRAIL)]
    assert [(r["kind"], r["data"]["sender"]) for r in trail] == [
        ("sender_added", "ana"), ("sender_added", "test"), ("sender_paused", "ana"),
        ("sender_paused", "test"), ("sender_resumed", "ana"), ("sender_removed", "test"),
        ("sender_added", "test")]
    assert (trail[0]["data"]["by"], trail[0]["data"]["secrets"]) == ("maria", ["smtp_url"])
    assert (trail[2]["data"]["by"], trail[2]["data"]["reason"]) == ("maria", "warming down")
    assert PASSWORD not in json.dumps(trail)


async def test_a_url_in_clear_needs_the_encryption_key_and_is_never_shown(
        store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = await cli("sender", "add", "ana", "--from", "ana@acme.test",
                               "--smtp-url", SMTP_URL, "--json")
    assert code == 2 and out == ""
    assert "--smtp-url:" in err and "CAMPAIGN_ENCRYPTION_KEY" in err and "env:VARIABLE" in err
    assert PASSWORD not in err
    assert await store.get_sender("ana") is None

    monkeypatch.setenv("CAMPAIGN_ENCRYPTION_KEY",
                       "k1:" + base64.b64encode(bytes(range(32))).decode())
    code, out, err = await cli("sender", "add", "ana", "--from", "ana@acme.test",
                               "--smtp-url", SMTP_URL, "--imap-url",
                               f"imaps://ana:{PASSWORD}@imap.acme.test/INBOX", "--json")
    assert code == 0, err
    added = json.loads(out)
    assert PASSWORD not in out + err
    assert "smtp.acme.test" in added["smtp_url"]  # redacted, not hidden
    row = await store.get_sender("ana")
    assert row is not None and row.smtp_url is not None and row.imap_url is not None
    assert row.smtp_url.startswith("enc:") and PASSWORD not in row.smtp_url + row.imap_url
    code, out, err = await cli("sender", "list")
    assert code == 0 and PASSWORD not in out + err


@pytest.mark.parametrize(("args", "says"), [
    (["--smtp-url", "ftp://mail.acme.test"], "--smtp-url: must be a URL starting with smtp://"),
    (["--smtp-url", "smtp://"], "--smtp-url: the URL has no host"),
    (["--smtp-url", "env:1BAD"], "--smtp-url:"),
    (["--outbox", "--imap-url", "http://imap.acme.test"], "--imap-url: must be a URL"),
    (["--outbox", "--imap-url", "imaps://imap.acme.test/INBOX"], "--imap-url: give the mailbox"),
    (["--outbox", "--imap-url", 'imaps://u:p@imap.acme.test/IN"BOX'],
     "--imap-url: the mailbox name must be ASCII"),
    ([], "--smtp-url / --outbox: give one of them"),
    (["--outbox", "--smtp-url", "env:X"], "--smtp-url / --outbox: give one of them"),
    (["--outbox", "--ramp-start", "5"], "give --ramp-start and --ramp-step together"),
    (["--outbox", "--min-gap", "soon"], "--min-gap: 'soon' is not a duration"),
    (["--outbox", "--dkim-selector", "s1"], "give --dkim-key and --dkim-selector together"),
])
async def test_bad_flags_are_refused_naming_them(store: SqliteStore, args: list[str],
                                                 says: str) -> None:
    code, _out, err = await cli("sender", "add", "ana", "--from", "Ana <ana@acme.test>", *args)
    assert code == 2 and says in err, err
    assert await store.get_sender("ana") is None


async def test_a_bad_name_or_from_is_refused(store: SqliteStore) -> None:
    code, _, err = await cli("sender", "add", "Ana Ruiz", "--from", "ana@acme.test", "--outbox")
    assert code == 2 and "NAME:" in err and "lower-case" in err, err
    code, _, err = await cli("sender", "add", "ana", "--from", "Ana Ruiz", "--outbox")
    assert code == 2 and "--from:" in err, err


async def test_a_dkim_file_that_cannot_be_read_or_is_no_key_is_named(
        store: SqliteStore, tmp_path: Path, key_env: None) -> None:
    gone = tmp_path / "missing.pem"
    code, _, err = await cli("sender", "add", "ana", "--from", "ana@acme.test", "--outbox",
                             "--dkim-key", str(gone), "--dkim-selector", "s1")
    assert code == 2 and f"--dkim-key {gone}: cannot read" in err.replace("\n", ""), err
    junk = tmp_path / "notes.txt"
    junk.write_text("not a key at all\n")
    code, _, err = await cli("sender", "add", "ana", "--from", "ana@acme.test", "--outbox",
                             "--dkim-key", str(junk), "--dkim-selector", "s1")
    assert code == 2 and "--dkim-key:" in err and "notes.txt" in err.replace("\n", ""), err
    weak = tmp_path / "weak.pem"
    weak.write_text(rsa_pem(1024))
    code, _, err = await cli("sender", "add", "ana", "--from", "ana@acme.test", "--outbox",
                             "--dkim-key", str(weak), "--dkim-selector", "s1")
    assert code == 2 and "--dkim-key:" in err and "2048" in err, err
    assert await store.get_sender("ana") is None


async def test_a_dkim_key_is_stored_sealed_and_never_printed(
        store: SqliteStore, tmp_path: Path, key_env: None) -> None:
    pem = pem_of(ed25519.Ed25519PrivateKey.generate())
    secret_line = pem.splitlines()[1]
    key_file = tmp_path / "ana.pem"
    key_file.write_text(pem)
    code, out, err = await cli("sender", "add", "ana", "--from", "ana@acme.test", "--outbox",
                               "--dkim-key", str(key_file), "--dkim-selector", "s1", "--json")
    assert code == 0, err
    assert json.loads(out)["dkim_selector"] == "s1"
    row = await store.get_sender("ana")
    assert row is not None and row.dkim_key is not None and row.dkim_key.startswith("enc:")
    assert secret_line not in out + err + row.dkim_key
    code, out, err = await cli("sender", "list", "--json")
    assert secret_line not in out + err


async def test_a_clear_dkim_key_needs_the_encryption_key(store: SqliteStore,
                                                        tmp_path: Path) -> None:
    key_file = tmp_path / "ana.pem"
    key_file.write_text(rsa_pem())
    code, _, err = await cli("sender", "add", "ana", "--from", "ana@acme.test", "--outbox",
                             "--dkim-key", str(key_file), "--dkim-selector", "s1")
    assert code == 2 and "--dkim-key:" in err and "CAMPAIGN_ENCRYPTION_KEY" in err, err


async def test_unknown_and_taken_names(store: SqliteStore) -> None:
    for command in (["pause", "zed"], ["resume", "zed"], ["remove", "zed"], ["check", "zed"]):
        code, _, err = await cli("sender", *command)
        assert code == 2 and "no sender 'zed'" in err and "campaign sender list" in err, err
    assert (await cli("sender", "add", "ana", "--from", "ana@acme.test", "--outbox"))[0] == 0
    code, _, err = await cli("sender", "add", "ana", "--from", "other@acme.test", "--outbox")
    assert code == 2 and "'ana' exists already" in err, err
    row = await store.get_sender("ana")
    assert row is not None and row.from_addr == "ana@acme.test"
    assert (await cli("sender", "remove", "ana"))[0] == 0
    code, _, err = await cli("sender", "pause", "ana")
    assert code == 2 and "no sender 'ana' (removed)" in err, err


# -- check: the DNS preflight against a loopback DNS server -------------------------------------


def zone(domain: str, dkim_record: str, *, dmarc: str | None = "v=DMARC1; p=reject"
         ) -> dict[str, dict[str, list[Any]]]:
    records: dict[str, dict[str, list[Any]]] = {
        domain: {"MX": [(10, f"mx.{domain}")], "TXT": [f"v=spf1 include:{domain} -all"]},
        f"mx.{domain}": {"A": ["192.0.2.10"]},
        f"s1._domainkey.{domain}": {"TXT": [dkim_record]},
    }
    if dmarc is not None:
        records[f"_dmarc.{domain}"] = {"TXT": [dmarc]}
    return records


async def test_check_reports_each_record_and_exits_1_when_one_fails(
        store: SqliteStore, tmp_path: Path, key_env: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    pem = rsa_pem()
    record = load_dkim_key(pem).public_record()
    key_file = tmp_path / "k.pem"
    key_file.write_text(pem)
    monkeypatch.setenv("ANA_SMTP_URL", "smtp://ana:x@smtp.acme.test:587")
    monkeypatch.setenv("BO_SMTP_URL", "smtp://bo:x@smtp.bo.test:587")
    for name, domain in (("ana", "acme.test"), ("bo", "bo.test")):
        code, _, err = await cli("sender", "add", name, "--from", f"{name}@{domain}",
                                 "--smtp-url", f"env:{name.upper()}_SMTP_URL",
                                 "--dkim-key", str(key_file), "--dkim-selector", "s1")
        assert code == 0, err
    records = {**zone("acme.test", record), **zone("bo.test", record, dmarc=None)}
    with dns_server(records) as dns:
        monkeypatch.setenv("CAMPAIGN_DNS_RESOLVER", dns.address)
        code, out, err = await cli("sender", "check", "ana", "--json")
        assert code == 0, err
        ana = json.loads(out)
        assert (ana["sender"], ana["domain"], ana["ok"]) == ("ana", "acme.test", True)
        assert {c["name"]: c["status"] for c in ana["checks"]} == {
            "mx": "ok", "spf": "ok", "dkim": "ok", "dmarc": "ok"}
        assert ana["dkim_record"] == record  # what to publish

        code, out, err = await cli("sender", "check", "bo", "--json")
        assert code == 1, err
        bo = json.loads(out)
        statuses = {c["name"]: c["status"] for c in bo["checks"]}
        assert (bo["ok"], statuses["dmarc"], statuses["dkim"]) == (False, "fail", "ok")

        code, out, err = await cli("sender", "check", "bo")
        assert code == 1
        assert "fail" in out and "dmarc" in out and "s1._domainkey.bo.test" in out


async def test_resume_with_temporal_down_resumes_and_says_who_was_not_told(
        store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sender is resumed in the store and its held sends released either way; a
    campaign that cannot be told (Temporal down) is named, not a failure of the command."""
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")
    assert (await cli("sender", "add", "ana", "--from", "ana@acme.test", "--outbox"))[0] == 0
    assert (await cli("sender", "pause", "ana"))[0] == 0
    await store.defer_step("c1", "ld_1", 1, datetime.now(UTC) + timedelta(days=1), "ana",
                           "paused")
    code, _, err = await cli("sender", "resume", "ana")
    assert code == 0, err
    assert "Temporal is not reachable: campaign(s) c1 were not told" in err.replace("\n", " ")
    row = await store.get_sender("ana")
    assert row is not None and not row.paused
    waiting, next_slot = await store.capacity_waits("c1")
    assert waiting == 1 and next_slot is not None and next_slot <= datetime.now(UTC)
