"""`campaign forget EMAIL`: an erasure request honoured completely, on every backend.

A person in two campaigns, with drafts, retrievals, deliveries, bounce events, audit
entries, an approval naming them and a cached embedding of their retrieval query;
after `Store.forget`, no row of any table holds their address, their name or their
lead ids (but the suppression list, which must keep the address), the other person's
data is untouched, the erasure is on record without personal data, and doing it
again changes nothing. Then the command itself.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from activities.knowledge import lead_fields
from activities.retrieval.dense import text_hash
from campaign_core.envelope import Envelope, EnvelopeMetadata, Provenance, Record, digest
from campaign_core.ids import message_key
from campaign_core.leads import Lead, parse_lead_rows
from campaign_core.senders import SenderClaim
from campaign_core.store.base import Store
from campaign_core.store.erasure import FORGET_KEYS, FORGOTTEN_REASON, subject_digest
from campaign_core.store.sqlite import SqliteStore
from starter.cli.suppression import lead_text_hashes
from tests.fakes import pg_fixtures
from tests.store.test_store import Backend, make_backend

pg_cluster = pg_fixtures.pg_cluster
pg_url = pg_fixtures.pg_url

ZELDA = {"email": "zelda.quimby@example.com", "first_name": "Zelda", "last_name": "Quimby",
         "company": "Quimby Freight", "title": "Head of Ops", "notes": "Zelda asked about pricing"}
BO = {"email": "bo@example.org", "first_name": "Bo", "company": "Ledgerly", "notes": "Bo is busy"}
CAMPAIGNS = ("c1", "c2")
#: What must not be left anywhere (lower case): her address, her names, her company.
TRACES = ("zelda", "quimby")


@pytest.fixture(params=["sqlite", "postgres", "supabase"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    b = await make_backend(request.param, request, tmp_path)
    yield b
    await b.store.close()
    if b.fake:
        await b.fake.aclose()


# -- a person in two campaigns ------------------------------------------------------------------


def _envelope(cid: str, agent: str, data: dict[str, Any], key: str) -> Envelope:
    start = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
    prov = Provenance(source="test", agent="test", created_at=start, inputs_digest=digest(data))
    return Envelope(
        metadata=EnvelopeMetadata(campaign_id=cid, run_id="run-1", agent=agent, agent_version="1",
                                  attempt=1, started_at=start,
                                  ended_at=start + timedelta(milliseconds=5)),
        records=[Record(kind=agent.rsplit(".", 1)[-1], key=key, data=data, provenance=prov)])


async def seed(store: Store) -> dict[str, dict[str, Lead]]:
    """Both people in both campaigns, every kind of row; returns {campaign: {name: lead}}."""
    leads: dict[str, dict[str, Lead]] = {}
    seq = 0
    for cid in CAMPAIGNS:
        await store.upsert_campaign(campaign_id=cid, name=cid, brief="Book a call.",
                                    channel="outbox", kb_dir=None, workflow_id=f"campaign:{cid}")
        parsed = parse_lead_rows(enumerate([ZELDA, BO], start=2), cid).leads
        await store.upsert_leads(cid, parsed)
        leads[cid] = {"zelda": parsed[0], "bo": parsed[1]}
        for lead in parsed:
            lid = lead.lead_id
            env = _envelope(cid, "store.store_lead", {"lead": lead.model_dump(mode="json")}, lid)
            await store.save_envelope(env, lid)
            await store.save_retrieval(cid, lid, [{"passage_id": "pricing.md#1", "text": "Plans"}],
                                       env.envelope_id)
            await store.upsert_draft(
                campaign_id=cid, lead_id=lid, step=1, subject=f"Hi {lead.first_name}",
                body=f"{lead.company} could save time.", citations=["pricing.md#1"],
                provenance={"agent": "copywriter", "lead": lead.email}, envelope_id=env.envelope_id)
            key = message_key(cid, lid)
            await store.upsert_delivery(message_key=key, campaign_id=cid, lead_id=lid, step=1,
                                        channel="smtp", status="sent", message_id=f"<{key}@x.test>",
                                        error=f"250 accepted for <{lead.email}>")
            await store.record_delivery_event(
                event_id=f"bounce:{key}", kind="bounce", email=lead.email, source="bounce",
                campaign_id=cid, lead_id=lid, message_key=key, detail=f"550 {lead.email} unknown")
            seq += 1  # the mailbox's send (schema 16): it stays, linked to no lead
            await store.insert_sender_claim(SenderClaim(
                sender="ana", seq=seq, message_key=key, campaign_id=cid, lead_id=lid,
                sent_at=datetime(2024, 5, 1, 10, seq, tzinfo=UTC)))
        z, b = leads[cid]["zelda"].lead_id, leads[cid]["bo"].lead_id
        await store.record_decision(campaign_id=cid, decision_id="d1", decision="approve",
                                    lead_ids=[z, b], by="Ops", note="fine")
        await store.save_envelope(_envelope(cid, "store.record_decision",
                                            {"lead_ids": [z, b], "by": "Ops"}, "d1"), None)
    z1 = leads["c1"]["zelda"].lead_id
    await store.upsert_draft(campaign_id="c1", lead_id=z1, step=2, subject="Zelda, a follow-up",
                             body="...", citations=[], provenance={}, envelope_id="env-x")
    await store.record_delivery_event(event_id="complaint:1", kind="complaint",
                                      email=ZELDA["email"], source="complaint")
    await store.put_embeddings("emb-model", {
        text_hash(lead_fields(leads["c1"]["zelda"])): [1.0, 0.0],
        text_hash(lead_fields(leads["c1"]["bo"])): [0.0, 1.0],
        text_hash("a knowledge-base chunk"): [0.6, 0.8]})
    return leads


async def dump(b: Backend) -> dict[str, list[str]]:
    """Every row of every table behind the store, as lower-cased text."""
    if b.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(b.target)) as lite:
            tables = [r[0] for r in lite.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {t: [repr(tuple(r)).lower() for r in lite.execute(f"SELECT * FROM {t}")]
                    for t in tables}
    out: dict[str, list[str]] = {}
    async with await psycopg.AsyncConnection.connect(b.target, autocommit=True) as pg:
        cur = await pg.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        for (table,) in await cur.fetchall():
            rows = await pg.execute(f'SELECT t::text FROM "{table}" t'.encode())
            out[table] = [str(r[0]).lower() for r in await rows.fetchall()]
    return out


async def approvals(b: Backend) -> dict[str, Any]:
    """campaign -> the approval's lead_ids, read behind the store's back."""
    sql = "SELECT campaign_id, lead_ids FROM approvals"
    if b.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(b.target)) as lite:
            return {c: json.loads(v) for c, v in lite.execute(sql)}
    async with await psycopg.AsyncConnection.connect(b.target, autocommit=True) as pg:
        cur = await pg.execute(sql)
        return {c: v for c, v in await cur.fetchall()}


def expected_total() -> dict[str, int]:
    return {**dict.fromkeys(FORGET_KEYS, 0), "leads": 2, "drafts": 3, "retrievals": 2,
            "deliveries": 2, "delivery_events": 3, "audit_log": 2, "embeddings": 1,
            "audit_log_redacted": 2, "approvals": 2, "sender_sends_unlinked": 2,
            "suppressions": 1, "campaigns": 2}


# -- the store ----------------------------------------------------------------------------------


async def test_forget_erases_the_person_everywhere_and_nothing_else(backend: Backend) -> None:
    s = backend.store
    leads = await seed(s)
    before = await dump(backend)
    assert any(t in row for rows in before.values() for row in rows for t in TRACES)

    result = await s.forget("  Zelda.Quimby@Example.COM ", derived_text_hashes=lead_text_hashes)
    assert result == expected_total()

    # Nothing left of her, in any table: not her address, her name or her lead ids.
    zelda_ids = {leads[c]["zelda"].lead_id for c in CAMPAIGNS}
    after = await dump(backend)
    for table, rows in after.items():
        for row in rows:
            if table == "suppressions":
                continue
            assert not any(t in row for t in TRACES), f"{table} still holds {row}"
            assert not any(i in row for i in zelda_ids), f"{table} still names her lead: {row}"
    assert after["suppressions"] == [r for r in after["suppressions"] if "forgotten" in r]
    assert len(after["suppressions"]) == 1 and ZELDA["email"] in after["suppressions"][0]
    assert await s.is_suppressed(ZELDA["email"])

    # Bo is untouched.
    for cid in CAMPAIGNS:
        bo = leads[cid]["bo"]
        assert await s.get_lead(cid, bo.lead_id) == bo
        assert await s.get_lead(cid, leads[cid]["zelda"].lead_id) is None
        assert [d.lead_id for d in await s.list_drafts(cid)] == [bo.lead_id]
        assert await s.get_retrieval(cid, bo.lead_id)
        assert getattr(await s.get_delivery(message_key(cid, bo.lead_id)), "status", None) == "sent"
        assert [e.email for e in await s.list_delivery_events(cid)] == [BO["email"]]
        assert len(await s.audit(cid, bo.lead_id)) == 1
        assert [r.lead_id for r in await s.report(cid)] == [bo.lead_id]
        counts = await s.counts(cid)
        assert (counts.leads, counts.sent, counts.approved) == (1, 1, 1)
        decision = next(r for r in await s.audit(cid) if r.agent == "store.record_decision")
        kept = await s.get_envelope(decision.envelope_id)  # still a valid envelope
        assert kept is not None and kept.records[0].data["lead_ids"] == [bo.lead_id]
    assert await approvals(backend) == {c: [leads[c]["bo"].lead_id] for c in CAMPAIGNS}
    embedded = await s.get_embeddings("emb-model", [
        text_hash(lead_fields(leads["c1"][n])) for n in ("zelda", "bo")]
        + [text_hash("a knowledge-base chunk")])
    assert len(embedded) == 2 and text_hash(lead_fields(leads["c1"]["zelda"])) not in embedded
    assert not await s.is_suppressed(BO["email"])
    for table in ("campaigns", "signing_keys"):
        assert after.get(table) == before.get(table)
    # The mailbox's sends to her stay (its caps and health count them), linked to no lead.
    sends = await s.sender_claims_since("ana", datetime(2024, 1, 1, tzinfo=UTC))
    assert [c.seq for c in sends] == [1, 2, 3, 4]
    assert {c.message_key: c.lead_id for c in sends} == {
        message_key(cid, leads[cid][n].lead_id): (leads[cid]["bo"].lead_id if n == "bo" else None)
        for cid in CAMPAIGNS for n in ("zelda", "bo")}

    # The erasure is on record in each campaign, without anything about her.
    for cid in CAMPAIGNS:
        entries = [r for r in await s.audit(cid) if r.agent == "store.forget"]
        assert len(entries) == 1 and entries[0].lead_id is None
        record = entries[0].envelope["records"][0]
        assert record["kind"] == "erasure"
        assert record["data"]["subject"] == subject_digest(ZELDA["email"])
        assert record["data"]["reason"] == FORGOTTEN_REASON
        assert record["data"]["rows"]["leads"] == 1
        assert record["data"]["rows"]["drafts"] == (2 if cid == "c1" else 1)
        assert record["data"]["rows"]["sender_sends_unlinked"] == 1

    # Forgetting twice is harmless: nothing more to erase, nothing new recorded.
    again = await s.forget(ZELDA["email"], derived_text_hashes=lead_text_hashes)
    assert again == dict.fromkeys(FORGET_KEYS, 0)
    assert await dump(backend) == after


async def test_forget_finds_rows_written_after_the_lead_was_gone(backend: Backend) -> None:
    """An activity in flight during the erasure may write a row for the lead afterwards:
    the lead id is derived from (campaign, address), so a second run finds it."""
    s = backend.store
    leads = await seed(s)
    await s.forget(ZELDA["email"])
    z1 = leads["c1"]["zelda"].lead_id
    await s.upsert_draft(campaign_id="c1", lead_id=z1, step=1, subject="Hi Zelda", body="late",
                         citations=[], provenance={}, envelope_id="env-late")
    await s.save_envelope(_envelope("c1", "copywriter.write_draft", {"subject": "Hi Zelda"}, z1), z1)
    late = await s.forget(ZELDA["email"])
    assert (late["drafts"], late["audit_log"], late["campaigns"], late["leads"]) == (1, 1, 1, 0)
    assert late["suppressions"] == 0
    assert not any("zelda" in row for t, rows in (await dump(backend)).items()
                   if t != "suppressions" for row in rows)
    assert len([r for r in await s.audit("c1") if r.agent == "store.forget"]) == 2


async def test_forget_marks_an_already_suppressed_address_as_forgotten(backend: Backend) -> None:
    s = backend.store
    await s.add_suppressions([ZELDA["email"]], "manual", source="manual")
    first = await s.forget(ZELDA["email"].upper())
    assert first == {**dict.fromkeys(FORGET_KEYS, 0), "suppressions": 1}
    rows = (await dump(backend))["suppressions"]
    assert len(rows) == 1 and "forgotten (erasure request)" in rows[0]
    assert (await s.forget(ZELDA["email"]))["suppressions"] == 0


# -- the command --------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """CAMPAIGN_HOME with a SQLite store holding both people, and their outbox files."""
    monkeypatch.chdir(tmp_path)
    for var in ("SUPABASE_URL", "SUPABASE_KEY", "CAMPAIGN_STORE_URL"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("CAMPAIGN_HOME", str(home))
    store = SqliteStore(home / "campaign.db")
    import asyncio

    asyncio.run(seed(store))
    (home / "outbox").mkdir()
    for n, (name, addr) in enumerate([("Zelda Quimby", ZELDA["email"]), ("Bo", BO["email"])]):
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "us@x.test", f"{name} <{addr}>", "Hi"
        msg.set_content("Hello")
        (home / "outbox" / f"msg_{n}.eml").write_bytes(bytes(msg))
    return home


def _lead_count(home: Path) -> int:
    with contextlib.closing(sqlite3.connect(home / "campaign.db")) as lite:
        return int(lite.execute("SELECT count(*) FROM leads").fetchone()[0])


def test_cli_refuses_an_invalid_address(home: Path) -> None:
    from starter.cli import app

    result = CliRunner().invoke(app, ["forget", "not-an-address", "--yes"])
    assert result.exit_code == 2
    assert "not-an-address" in result.stderr and "nothing was erased" in result.stderr
    assert _lead_count(home) == 4


def test_cli_without_a_terminal_needs_yes(home: Path) -> None:
    from starter.cli import app

    result = CliRunner().invoke(app, ["forget", ZELDA["email"]])
    assert result.exit_code == 2
    assert "--yes" in result.stderr
    assert _lead_count(home) == 4


def test_cli_asks_at_a_terminal(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from starter.cli import app, suppression

    monkeypatch.setattr(suppression, "stdin_is_tty", lambda: True)
    declined = CliRunner().invoke(app, ["forget", ZELDA["email"]], input="n\n")
    assert declined.exit_code == 1 and "nothing was erased" in declined.stderr
    assert _lead_count(home) == 4
    agreed = CliRunner().invoke(app, ["forget", ZELDA["email"]], input="y\n")
    assert agreed.exit_code == 0, agreed.stderr
    assert "from 2 campaign(s)" in agreed.stdout and "suppression list" in agreed.stdout
    assert _lead_count(home) == 2


def test_cli_json_prints_one_document(home: Path) -> None:
    from starter.cli import app

    result = CliRunner().invoke(app, ["forget", ZELDA["email"].upper(), "--yes", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) == {"email", "subject", "campaigns", "counts", "suppressed", "reason"}
    assert doc["email"] == ZELDA["email"] and doc["campaigns"] == 2
    assert doc["subject"] == subject_digest(ZELDA["email"])
    assert (doc["suppressed"], doc["reason"]) == (True, FORGOTTEN_REASON)
    assert set(doc["counts"]) == (set(FORGET_KEYS) - {"campaigns"}) | {"outbox"}
    assert doc["counts"]["leads"] == 2 and doc["counts"]["embeddings"] == 1
    assert doc["counts"]["outbox"] == 1
    assert [p.name for p in (home / "outbox").iterdir()] == ["msg_1.eml"]  # Bo's stays
    assert _lead_count(home) == 2
    again = CliRunner().invoke(app, ["forget", ZELDA["email"], "--yes", "--json"])
    assert again.exit_code == 0
    assert json.loads(again.stdout)["counts"] == dict.fromkeys(doc["counts"], 0)
