"""One store test suite, run against every backend.

- `sqlite`: the embedded default, a file in the test's temp dir.
- `postgres`: a real PostgreSQL the tests start themselves (tests/fakes/pg_fixtures.py),
  a fresh database per test.
- `supabase`: the REST store through the real `supabase` client, at the HTTP level:
  its requests go to a PostgREST stand-in (tests/fakes/fake_postgrest.py) that answers
  from a fresh Postgres database with the same migrations, and records what it was
  asked, so the PostgREST specifics (table, on_conflict, Prefer) are checked too.

Then what only some backends have: migrations (apply, re-apply, refuse an old or a
newer schema), how a store that is down fails, the Supabase wire format, choosing a
backend from settings, `campaign db migrate`, a whole campaign on Postgres, and a
live Supabase check that runs only when SUPABASE_URL is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from postgrest.exceptions import APIError
from typer.testing import CliRunner

from campaign_core.envelope import Envelope, EnvelopeMetadata, Provenance, Record, digest
from campaign_core.leads import Lead, parse_lead_rows
from campaign_core.ports import free_port
from campaign_core.settings import Settings
from campaign_core.store.base import SCHEMA_VERSION, Store, StoreError, StoreUnavailable, migrations
from campaign_core.store.factory import open_store
from campaign_core.store.postgres import PostgresStore
from campaign_core.store.sqlite import SqliteStore
from campaign_core.store.supabase import SupabaseStore
from starter.start_options import CampaignOptions
from tests.fakes import pg_fixtures
from tests.fakes.fake_postgrest import FakePostgrest

# The Postgres fixtures, made visible to this module (pytest only auto-loads conftest.py).
pg_cluster = pg_fixtures.pg_cluster
pg_url = pg_fixtures.pg_url

REPO = Path(__file__).resolve().parents[2]
SUPABASE_TEST_URL = "http://supabase.test"
SERVICE_KEY = "service-role-key-for-tests"

PEOPLE = [
    {"email": "ana@example.com", "first_name": "Ana", "company": "Northwind", "plan": "pro"},
    {"email": "bo@example.org", "first_name": "Bo", "company": "Ledgerly"},
    {"email": "cy@example.net", "first_name": "Cy", "timezone": "Europe/Paris"},
    {"email": "di@example.com", "first_name": "Di"},
    {"email": "ed@example.com", "first_name": "Ed"},
]


# -- backends -------------------------------------------------------------------------------


@dataclass
class Backend:
    """A store under test plus raw access to what is behind it, to set up odd states."""

    kind: str
    store: Store
    target: str  # SQLite path or Postgres URL
    fake: FakePostgrest | None = None

    async def execute(self, sqlite_sql: str, pg_sql: str, args: tuple[Any, ...] = ()) -> None:
        """Write behind the store's back (to plant a malformed row, say)."""
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.target)) as lite, lite:
                lite.execute(sqlite_sql, args)
        else:
            async with await psycopg.AsyncConnection.connect(self.target, autocommit=True) as pg:
                await pg.execute(pg_sql.encode(), args)

    async def rows(self, table: str) -> int:
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.target)) as lite:
                return int(lite.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        async with await psycopg.AsyncConnection.connect(self.target, autocommit=True) as pg:
            cur = await pg.execute(f"SELECT count(*) FROM {table}".encode())
            row = await cur.fetchone()
            return int(row[0]) if row else 0


async def make_backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if kind == "sqlite":
        path = tmp_path / "campaign.db"
        sqlite_store = SqliteStore(path)
        await sqlite_store.migrate()
        return Backend(kind, sqlite_store, str(path))
    url: str = request.getfixturevalue("pg_url")
    pg = PostgresStore(url)
    await pg.migrate()
    if kind == "postgres":
        return Backend(kind, pg, url)
    await pg.close()
    fake = FakePostgrest(url)
    return Backend(kind, SupabaseStore(SUPABASE_TEST_URL, SERVICE_KEY, transport=fake.transport()),
                   url, fake)


@pytest.fixture(params=["sqlite", "postgres", "supabase"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    b = await make_backend(request.param, request, tmp_path)
    yield b
    await b.store.close()
    if b.fake:
        await b.fake.aclose()


@pytest.fixture(params=["sqlite", "postgres"])
def migrating(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(kind, target) of an empty store that runs its own migrations."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "campaign.db")
    return "postgres", request.getfixturevalue("pg_url")


def open_migrating(kind: str, target: str, **kw: Any) -> Store:
    return SqliteStore(target, **kw) if kind == "sqlite" else PostgresStore(target, **kw)


@pytest.fixture
async def fake_supabase(pg_url: str) -> AsyncIterator[tuple[SupabaseStore, FakePostgrest]]:
    """A Supabase store with a small page size, on a migrated database, and its fake."""
    pg = PostgresStore(pg_url)
    await pg.migrate()
    await pg.close()
    fake = FakePostgrest(pg_url)
    store = SupabaseStore(SUPABASE_TEST_URL, SERVICE_KEY, transport=fake.transport(),
                          batch_size=500, page_size=2)
    yield store, fake
    await store.close()
    await fake.aclose()


# -- helpers ----------------------------------------------------------------------------------


def leads_for(cid: str, people: list[dict[str, str]] = PEOPLE) -> list[Lead]:
    return parse_lead_rows(enumerate(people, start=2), cid).leads


async def new_campaign(store: Store, cid: str = "c1", n: int = len(PEOPLE)) -> list[Lead]:
    await store.upsert_campaign(campaign_id=cid, name="Test", brief="Book a call.", channel="outbox",
                                kb_dir=None, workflow_id=f"campaign:{cid}")
    leads = leads_for(cid, PEOPLE[:n])
    await store.upsert_leads(cid, leads)
    return leads


def envelope(cid: str, *, agent: str = "store.store_lead", run: str = "run-1", attempt: int = 1,
             records: list[Record] | None = None) -> Envelope:
    start = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
    prov = Provenance(source="test", agent="test", created_at=start, inputs_digest=digest({"in": 1}))
    return Envelope(
        metadata=EnvelopeMetadata(campaign_id=cid, run_id=run, agent=agent, agent_version="1",
                                  attempt=attempt, started_at=start,
                                  ended_at=start + timedelta(milliseconds=250)),
        records=records if records is not None else [
            Record(kind="lead", key="k1", data={"status": "drafting"}, provenance=prov),
            Record(kind="passage", key="p1", data={"score": 1.5}, provenance=prov),
        ])


async def draft(store: Store, cid: str, lead_id: str, step: int = 1, subject: str = "Hello") -> None:
    await store.upsert_draft(campaign_id=cid, lead_id=lead_id, step=step, subject=subject,
                             body=f"Body for {lead_id}", citations=["pricing.md#1"],
                             provenance={"agent": "copywriter", "model": "offline-template"},
                             envelope_id=f"env-{lead_id}-{step}")


# -- the shared contract ------------------------------------------------------------------------


async def test_campaign_upsert_is_idempotent_and_keeps_the_first(backend: Backend) -> None:
    s = backend.store
    for name in ("First", "Second"):
        await s.upsert_campaign(campaign_id="c1", name=name, brief="b", channel="outbox",
                                kb_dir="/kb", workflow_id="campaign:c1")
    assert await backend.rows("campaigns") == 1
    c = await s.get_campaign("c1")
    assert c is not None
    assert (c.name, c.stage, c.kb_dir) == ("First", "drafting", "/kb")
    assert datetime.fromisoformat(c.created_at).tzinfo is not None
    await s.set_stage("c1", "awaiting_approval")
    c = await s.get_campaign("c1")
    assert c is not None and c.stage == "awaiting_approval"
    assert await s.get_campaign("nope") is None


async def test_lead_upsert_twice_leaves_one_row_each(backend: Backend) -> None:
    s = backend.store
    leads = await new_campaign(s)
    assert await s.upsert_leads("c1", leads) == len(leads)  # the retry
    assert await backend.rows("leads") == len(leads)
    assert (await s.counts("c1")).leads == len(leads)
    back = await s.get_lead("c1", leads[0].lead_id)
    assert back == leads[0]
    assert back is not None and back.custom == {"plan": "pro"}
    assert await s.get_lead("c1", "ld_missing") is None


async def test_lead_reupsert_updates_data_but_keeps_status(backend: Backend) -> None:
    s = backend.store
    leads = await new_campaign(s)
    await s.set_lead_status("c1", leads[0].lead_id, "drafted")
    changed = leads[0].model_copy(update={"company": "Northwind Freight"})
    await s.upsert_leads("c1", [changed])
    assert (await s.get_lead("c1", leads[0].lead_id)) == changed
    assert (await s.counts("c1")).drafted == 1


async def test_lead_ids_page_in_a_stable_order(backend: Backend) -> None:
    s = backend.store
    leads = await new_campaign(s)
    pages, after = [], None
    while page := await s.list_lead_ids("c1", after, 2):
        pages.append(page)
        after = page[-1]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for p in pages for i in p] == sorted(lead.lead_id for lead in leads)


async def test_draft_is_unique_per_campaign_lead_and_step(backend: Backend) -> None:
    s = backend.store
    leads = await new_campaign(s)
    lid = leads[0].lead_id
    await draft(s, "c1", lid, subject="First")
    await draft(s, "c1", lid, subject="Second")  # a retried store_draft
    await draft(s, "c1", lid, step=2, subject="Follow-up")
    assert await backend.rows("drafts") == 2
    d = await s.get_draft("c1", lid)
    assert d is not None
    assert (d.subject, d.email, d.approved) == ("Second", "ana@example.com", False)
    assert d.citations == ["pricing.md#1"]
    assert d.provenance["model"] == "offline-template"
    assert getattr(await s.get_draft("c1", lid, 2), "subject", None) == "Follow-up"
    assert await s.get_draft("c1", leads[1].lead_id) is None
    listed = await s.list_drafts("c1")
    assert [(x.lead_id, x.step) for x in listed] == [(lid, 1), (lid, 2)]


async def test_decisions_mark_drafts_and_are_idempotent(backend: Backend) -> None:
    s = backend.store
    leads = await new_campaign(s)
    for lead in leads[:4]:
        await draft(s, "c1", lead.lead_id)
    chosen = sorted(lead.lead_id for lead in leads[:4])[:2]
    for _ in range(2):  # the retried activity
        approved = await s.record_decision(campaign_id="c1", decision_id="d1", decision="approve",
                                           lead_ids=chosen, by="ana", note="ok")
        assert approved == 2
    assert await backend.rows("approvals") == 1
    assert await s.record_decision(campaign_id="c1", decision_id="d2", decision="reject",
                                   lead_ids=None, by="bo", note=None) == 0
    assert await s.list_approved_lead_ids("c1", None, 10) == chosen
    assert await s.list_approved_lead_ids("c1", chosen[0], 10) == chosen[1:]
    assert await s.list_approved_lead_ids("c1", None, 1) == chosen[:1]
    assert await s.record_decision(campaign_id="c1", decision_id="d3", decision="approve",
                                   lead_ids=None, by="ana", note=None) == 4
    assert (await s.counts("c1")).approved == 4


async def test_delivery_is_unique_per_message_key_and_keeps_its_message_id(backend: Backend) -> None:
    s = backend.store
    leads = await new_campaign(s)
    lid = leads[0].lead_id
    common: dict[str, Any] = {"message_key": "mk1", "campaign_id": "c1", "lead_id": lid, "step": 1,
                              "channel": "outbox"}
    await s.upsert_delivery(**common, status="sending")
    await s.upsert_delivery(**common, status="sent", message_id="<m1@x>")
    await s.upsert_delivery(**common, status="sent")  # a retry that knows no message id
    assert await backend.rows("deliveries") == 1
    d = await s.get_delivery("mk1")
    assert d is not None and (d.status, d.message_id) == ("sent", "<m1@x>")
    assert await s.get_delivery("mk-none") is None
    assert (await s.counts("c1")).sent == 1


async def test_suppressions_count_new_addresses_only(backend: Backend) -> None:
    s = backend.store
    assert await s.add_suppressions(["Ana@Example.com", "ana@example.com ", "bo@example.org"],
                                    "manual", source="manual") == 2
    assert await s.add_suppressions(["bo@example.org", "cy@example.net"], "unsubscribe",
                                    source="unsubscribe_link") == 1
    assert await s.is_suppressed(" ANA@example.com")
    assert not await s.is_suppressed("di@example.com")
    assert await backend.rows("suppressions") == 3


async def test_delivery_events_are_recorded_once_and_found_by_message_id(backend: Backend) -> None:
    s = backend.store
    leads = await new_campaign(s)
    lid = leads[0].lead_id
    await s.upsert_delivery(message_key="mk1", campaign_id="c1", lead_id=lid, step=1,
                            channel="smtp", status="sent", message_id="<mk1@example.org>")
    for mid in ("<mk1@example.org>", "mk1@example.org", " <mk1@example.org> "):
        found = await s.find_delivery_by_message_id(mid)
        assert found is not None and (found.message_key, found.lead_id) == ("mk1", lid)
    assert await s.find_delivery_by_message_id("<other@example.org>") is None
    event = {"event_id": "ev-1", "kind": "bounce", "email": "Ana@Example.com", "source": "bounce",
             "campaign_id": "c1", "lead_id": lid, "message_key": "mk1", "detail": "550 no such user"}
    assert await s.record_delivery_event(**event) is True
    assert await s.record_delivery_event(**event) is False  # the provider sent it twice
    await s.record_delivery_event(event_id="ev-2", kind="complaint", email="bo@example.org",
                                  source="complaint")  # names no message of ours
    rows = await s.list_delivery_events("c1")
    assert [(r.event_id, r.kind, r.email) for r in rows] == [
        ("ev-1", "bounce", "ana@example.com")]
    assert await backend.rows("delivery_events") == 2


async def test_a_shared_secret_is_created_once_and_then_kept(backend: Backend) -> None:
    s = backend.store
    got = await asyncio.gather(*(s.get_or_create_secret("unsubscribe", f"cand-{i}")
                                 for i in range(5)))
    assert len(set(got)) == 1 and got[0].startswith("cand-")
    assert await s.get_or_create_secret("unsubscribe", "another") == got[0]
    assert await s.get_or_create_secret("other", "x") == "x"


async def test_envelopes_are_stored_once_with_their_node_trace(backend: Backend) -> None:
    s = backend.store
    leads = await new_campaign(s)
    env = envelope("c1")
    assert await s.save_envelope(env, leads[0].lead_id) == env.envelope_id
    await s.save_envelope(env, leads[0].lead_id)
    other = envelope("c1", agent="store.record_decision", run="run-2", attempt=3,
                     records=[Record(kind="decision", key="d1", data={"by": "ana"},
                                     provenance=env.records[0].provenance)])
    await s.save_envelope(other)
    assert await backend.rows("audit_log") == 2
    assert await s.get_envelope(env.envelope_id) == env
    assert await s.get_envelope("env_missing") is None
    trail = await s.audit("c1")
    assert {r.envelope_id for r in trail} == {env.envelope_id, other.envelope_id}
    row = next(r for r in trail if r.envelope_id == env.envelope_id)
    assert row.envelope["metadata"]["run_id"] == "run-1"
    assert (row.run_id, row.attempt, row.agent_version) == ("run-1", 1, "1")
    assert (row.duration_ms, row.record_count) == (250, 2)
    assert row.outcome == "lead:drafting,passage"
    assert row.inputs_digest == digest({"in": 1})
    assert datetime.fromisoformat(row.started_at or "") == datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
    only_lead = await s.audit("c1", leads[0].lead_id)
    assert [r.envelope_id for r in only_lead] == [env.envelope_id]


async def test_retrieval_is_replaced_not_duplicated(backend: Backend) -> None:
    s = backend.store
    leads = await new_campaign(s)
    lid = leads[0].lead_id
    await s.save_retrieval("c1", lid, [{"source": "a.md", "score": 0.5}], "env-1")
    await s.save_retrieval("c1", lid, [{"source": "b.md", "score": 0.7, "text": "x"}], "env-2")
    assert await backend.rows("retrievals") == 1
    assert await s.get_retrieval("c1", lid) == [{"source": "b.md", "score": 0.7, "text": "x"}]
    assert await s.get_retrieval("c1", leads[1].lead_id) == []


async def test_report_gives_one_outcome_per_lead(backend: Backend) -> None:
    s = backend.store
    leads = await new_campaign(s, n=4)
    a, b, c, d = (lead.lead_id for lead in leads)
    for lid in (a, b, c):
        await draft(s, "c1", lid)
        await s.set_lead_status("c1", lid, "drafted")
    await s.set_lead_status("c1", d, "failed", "LLM refused")
    await s.record_decision(campaign_id="c1", decision_id="d1", decision="approve", lead_ids=[a, b],
                            by="ana", note=None)
    await s.upsert_delivery(message_key="k-a", campaign_id="c1", lead_id=a, step=1, channel="outbox",
                            status="sent", message_id="<a@x>")
    await s.upsert_delivery(message_key="k-b", campaign_id="c1", lead_id=b, step=1, channel="outbox",
                            status="failed", error="mailbox full")
    before = {r.lead_id: r for r in await s.report("c1")}
    assert before[c].delivery_status == "pending"  # not decided yet
    await s.set_stage("c1", "completed")
    report = await s.report("c1")
    assert [r.lead_id for r in report] == sorted([a, b, c, d])  # one import: by id
    got = {r.lead_id: (r.draft_status, r.delivery_status, r.message_id, r.error)
           for r in report}
    assert got == {
        a: ("drafted", "sent", "<a@x>", None),
        b: ("drafted", "failed", None, "mailbox full"),
        c: ("drafted", "not_approved", None, None),
        d: ("failed", "not_approved", None, "LLM refused"),
    }
    counts = await s.counts("c1")
    assert (counts.drafted, counts.draft_failed, counts.approved, counts.sent, counts.send_failed) == (
        3, 1, 2, 1, 1)


async def test_concurrent_activities_do_not_collide(backend: Backend) -> None:
    s = backend.store
    leads = await new_campaign(s)

    async def one_lead(i: int, lead: Lead) -> None:
        await s.set_lead_status("c1", lead.lead_id, "drafting")
        await s.save_envelope(envelope("c1", run=f"run-{i}"), lead.lead_id)
        await draft(s, "c1", lead.lead_id)
        await s.set_lead_status("c1", lead.lead_id, "drafted")

    await asyncio.gather(*(one_lead(i, lead) for i, lead in enumerate(leads * 4)))
    counts = await s.counts("c1")
    assert (counts.leads, counts.drafted) == (len(leads), len(leads))
    assert await backend.rows("drafts") == len(leads)
    assert await backend.rows("audit_log") == len(leads) * 4


async def test_constraint_violation_is_a_store_error_naming_table_and_key(backend: Backend) -> None:
    s = backend.store
    with pytest.raises(StoreError) as exc:
        await s.upsert_leads("no-such-campaign", leads_for("no-such-campaign")[:1])
    assert exc.value.table == "leads" and "no-such-campaign" in str(exc.value)
    await new_campaign(s)
    twin = Lead(lead_id="ld_twin", email="ana@example.com")  # another id for a known address
    with pytest.raises(StoreError) as exc:
        await s.upsert_leads("c1", [twin])
    assert exc.value.table == "leads" and str(exc.value).startswith("leads[c1")


async def test_malformed_row_is_a_store_error_naming_table_and_key(backend: Backend) -> None:
    s = backend.store
    leads = await new_campaign(s)
    lid = leads[0].lead_id
    await backend.execute("UPDATE leads SET data = '{\"nope\": 1}' WHERE lead_id = ?",
                          "UPDATE leads SET data = '{\"nope\": 1}'::jsonb WHERE lead_id = %s", (lid,))
    with pytest.raises(StoreError) as exc:
        await s.get_lead("c1", lid)
    assert exc.value.table == "leads" and exc.value.key == f"c1/{lid}"
    await s.save_envelope(envelope("c1"))
    eid = envelope("c1").envelope_id
    await backend.execute("UPDATE audit_log SET envelope = '{\"records\": 3}' WHERE envelope_id = ?",
                          "UPDATE audit_log SET envelope = '{\"records\": 3}'::jsonb "
                          "WHERE envelope_id = %s", (eid,))
    with pytest.raises(StoreError, match=re.escape(f"audit_log[{eid}]")):
        await s.get_envelope(eid)


# -- migrations ---------------------------------------------------------------------------------


async def schema_snapshot(kind: str, target: str) -> list[tuple[Any, ...]]:
    if kind == "sqlite":
        with contextlib.closing(sqlite3.connect(target)) as conn:
            return sorted(conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall())
    async with await psycopg.AsyncConnection.connect(target) as conn:
        cur = await conn.execute(
            "SELECT table_name, column_name, data_type, column_default FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY 1, 2")
        return list(await cur.fetchall())


async def test_migrations_apply_cleanly_and_reapplying_is_a_noop(migrating: tuple[str, str]) -> None:
    kind, target = migrating
    store = open_migrating(kind, target)
    try:
        assert await store.schema_version() == 0
        assert await store.migrate() == SCHEMA_VERSION
        first = await schema_snapshot(kind, target)
        assert await store.migrate() == SCHEMA_VERSION
        assert await schema_snapshot(kind, target) == first
        b = Backend(kind, store, target)
        assert await b.rows("schema_version") == SCHEMA_VERSION
        await new_campaign(store)  # and the schema works
    finally:
        await store.close()


async def test_concurrent_migrators_apply_each_migration_once(migrating: tuple[str, str]) -> None:
    kind, target = migrating
    stores = [open_migrating(kind, target) for _ in range(4)]
    try:
        assert await asyncio.gather(*(s.migrate() for s in stores)) == [SCHEMA_VERSION] * 4
    finally:
        for s in stores:
            await s.close()


async def test_old_schema_is_refused_until_migrated_and_then_backfilled(
    migrating: tuple[str, str],
) -> None:
    kind, target = migrating
    old = open_migrating(kind, target)
    assert await old.migrate(target=1) == 1
    await old.close()
    env = envelope("c1")
    b = Backend(kind, old, target)
    await b.execute(
        "INSERT INTO audit_log(envelope_id, campaign_id, lead_id, agent, envelope, created_at) "
        "VALUES (?, 'c1', NULL, 'store.store_lead', ?, '2024-05-01T09:00:01+00:00')",
        "INSERT INTO audit_log(envelope_id, campaign_id, lead_id, agent, envelope) "
        "VALUES (%s, 'c1', NULL, 'store.store_lead', %s::jsonb)",
        (env.envelope_id, env.model_dump_json()))

    strict = open_migrating(kind, target, auto_migrate=False)
    try:
        with pytest.raises(StoreError, match=r"schema version 1, older.*campaign db migrate"):
            await strict.get_campaign("c1")
        with pytest.raises(StoreError, match="campaign db migrate"):
            await strict.ensure_schema()
        assert await strict.migrate() == SCHEMA_VERSION
        assert await strict.get_campaign("c1") is None
        (row,) = await strict.audit("c1")
        assert (row.run_id, row.attempt, row.duration_ms, row.record_count) == (
            "run-1", 1, 250, 2)
    finally:
        await strict.close()


async def test_newer_schema_is_refused(migrating: tuple[str, str]) -> None:
    kind, target = migrating
    store = open_migrating(kind, target)
    await store.migrate()
    await Backend(kind, store, target).execute(
        "INSERT INTO schema_version(version, applied_at) VALUES (99, 'now')",
        "INSERT INTO schema_version(version) VALUES (99)")
    fresh = open_migrating(kind, target)
    try:
        with pytest.raises(StoreError, match="newer than this code"):
            await fresh.ensure_schema()
    finally:
        await store.close()
        await fresh.close()


async def test_embedded_store_migrates_itself_but_postgres_refuses(tmp_path: Path, pg_url: str) -> None:
    sqlite_store = SqliteStore(tmp_path / "auto.db")
    assert await sqlite_store.get_campaign("c1") is None
    assert await sqlite_store.schema_version() == SCHEMA_VERSION
    pg = PostgresStore(pg_url)
    try:
        with pytest.raises(StoreError, match=r"no campaign schema yet: run `campaign db migrate`"):
            await pg.get_campaign("c1")
    finally:
        await pg.close()
    auto = PostgresStore(pg_url, auto_migrate=True)  # what `campaign dev` does
    try:
        assert await auto.get_campaign("c1") is None
        assert await auto.schema_version() == SCHEMA_VERSION
    finally:
        await auto.close()


def test_migrations_have_one_source_that_the_supabase_cli_reads() -> None:
    """One copy of each Postgres migration: `supabase/migrations` is a symlink to the package's
    folder (which the wheel ships), so the Supabase CLI and `campaign db migrate` apply the
    same files and no copy can fall behind."""
    sqlite_files, pg_files = migrations("sqlite"), migrations("postgres")
    assert [m.version for m in sqlite_files] == [m.version for m in pg_files] == list(
        range(1, SCHEMA_VERSION + 1))
    supa_dir = REPO / "supabase" / "migrations"
    assert supa_dir.is_symlink(), f"{supa_dir} must be a symlink, not a second copy"
    assert supa_dir.resolve() == (REPO / "campaign_core" / "migrations" / "postgres").resolve()
    supa = sorted(supa_dir.glob("*.sql"))
    assert [p.name for p in supa] == [m.name for m in pg_files]
    for path, m in zip(supa, pg_files, strict=True):
        assert re.fullmatch(r"\d+_\w+\.sql", path.name), "the Supabase CLI's <version>_<name>.sql"
        assert f"VALUES ({m.version})" in m.sql, "each migration records its own version"


async def test_postgres_schema_has_row_level_security_on_every_table(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.migrate()
    await store.close()
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute(
            "SELECT relname, relrowsecurity FROM pg_class WHERE relkind = 'r' "
            "AND relnamespace = 'public'::regnamespace ORDER BY relname")
        tables: dict[str, bool] = dict(await cur.fetchall())
    assert set(tables) >= {"campaigns", "leads", "retrievals", "drafts", "approvals", "deliveries",
                           "suppressions", "audit_log", "schema_version"}
    assert all(tables.values()), {t for t, rls in tables.items() if not rls}


# -- a store that is down -----------------------------------------------------------------------


async def test_postgres_down_is_an_ordinary_retryable_error() -> None:
    port = free_port()  # nothing listens there
    store = PostgresStore(f"postgresql://postgres:pw@127.0.0.1:{port}/x", timeout=1.0)
    try:
        with pytest.raises(StoreUnavailable) as exc:
            await store.get_campaign("c1")
        assert not isinstance(exc.value, StoreError)
        message = str(exc.value)
        assert f"postgres:***@127.0.0.1:{port}/x is not reachable" in message
        assert "refused" in message and "pw" not in message
    finally:
        await store.close()


async def test_sqlite_unreachable_is_an_ordinary_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    store = SqliteStore(tmp_path / "a-file" / "campaign.db")
    with pytest.raises(OSError):
        await store.get_campaign("c1")


async def test_supabase_down_or_failing_is_an_ordinary_retryable_error(fake_supabase) -> None:
    store, fake = fake_supabase

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    fake.faults.append(refuse)
    with pytest.raises(StoreUnavailable, match=re.escape(f"store {SUPABASE_TEST_URL} is not reachable")):
        await store.get_campaign("c1")
    fake.faults.append(lambda r: httpx.Response(503, json={"message": "upstream down", "code": "503"}))
    with pytest.raises(APIError) as exc:
        await store.get_campaign("c1")
    assert not isinstance(exc.value, StoreError)
    assert await store.get_campaign("c1") is None  # back up: the next attempt works


# -- Supabase on the wire -------------------------------------------------------------------------


async def test_supabase_upserts_name_their_natural_key(fake_supabase) -> None:
    store, fake = fake_supabase
    await new_campaign(store)
    (campaign,) = fake.calls_to("campaigns", "POST")
    assert campaign.param("on_conflict") == "campaign_id"
    assert {"resolution=ignore-duplicates", "return=minimal"} <= campaign.prefer
    assert campaign.headers["apikey"] == SERVICE_KEY
    assert campaign.headers["authorization"] == f"Bearer {SERVICE_KEY}"
    (leads,) = fake.calls_to("leads", "POST")
    assert leads.param("on_conflict") == "campaign_id,lead_id"
    assert {"resolution=merge-duplicates", "return=minimal"} <= leads.prefer
    assert "created_at" not in (leads.param("columns") or ""), "a re-upsert keeps created_at"

    lid = leads_for("c1")[0].lead_id
    await draft(store, "c1", lid)
    (d,) = fake.calls_to("drafts", "POST")
    assert d.param("on_conflict") == "campaign_id,lead_id,step"
    assert "approved" not in d.body, "a retried draft must not undo an approval"
    await store.upsert_delivery(message_key="mk", campaign_id="c1", lead_id=lid, step=1,
                                channel="outbox", status="sending")
    (x,) = fake.calls_to("deliveries", "POST")
    assert x.param("on_conflict") == "message_key"
    assert "message_id" not in x.body, "an unknown message id must not erase a known one"
    await store.save_envelope(envelope("c1"))
    (a,) = fake.calls_to("audit_log", "POST")
    assert a.param("on_conflict") == "envelope_id" and "resolution=ignore-duplicates" in a.prefer


async def test_supabase_batches_big_imports_and_pages_big_reads(fake_supabase) -> None:
    store, fake = fake_supabase
    await store.upsert_campaign(campaign_id="big", name="Big", brief="", channel="outbox",
                                kb_dir=None, workflow_id="campaign:big")
    many = [Lead(lead_id=f"ld_{i:05d}", email=f"p{i}@example.com") for i in range(1200)]
    assert await store.upsert_leads("big", many + many[:3]) == 1203  # duplicates merged first
    assert [len(c.body) for c in fake.calls_to("leads", "POST")] == [500, 500, 200]
    assert (await store.counts("big")).leads == 1200

    await new_campaign(store)  # 5 leads, pages of 2
    fake.calls.clear()
    assert len(await store.report("c1")) == 5
    offsets = [c.param("offset") for c in fake.calls_to("leads", "GET")]
    assert offsets == ["0", "2", "4", "5"], "pages until an empty page, whatever max_rows is"


async def test_supabase_refuses_an_old_schema_and_cannot_migrate_it(pg_url: str) -> None:
    fake = FakePostgrest(pg_url)
    store = SupabaseStore(SUPABASE_TEST_URL, SERVICE_KEY, transport=fake.transport())
    try:
        with pytest.raises(StoreError, match=r"no campaign schema.*supabase db push.*service key"):
            await store.get_campaign("c1")
        pg = PostgresStore(pg_url)
        await pg.migrate(target=1)
        await pg.close()
        with pytest.raises(StoreError, match=r"schema version 1, older.*supabase db push"):
            await store.ensure_schema()
        with pytest.raises(StoreError, match="cannot migrate"):
            await store.migrate()
        assert fake.calls_to("schema_version", "GET")
    finally:
        await store.close()
        await fake.aclose()


# -- choosing a backend, and the CLI ---------------------------------------------------------------


def _settings(tmp_path: Path, **values: Any) -> Settings:
    base: dict[str, Any] = {"CAMPAIGN_HOME": tmp_path, "CAMPAIGN_STORE_URL": None,
                            "SUPABASE_URL": None, "SUPABASE_KEY": None}
    return Settings(_env_file=None, **{**base, **values})


def test_open_store_picks_the_backend_from_settings(tmp_path: Path) -> None:
    default = open_store(_settings(tmp_path))
    assert isinstance(default, SqliteStore) and default.auto_migrate
    assert default.path == (tmp_path / "campaign.db").resolve()
    pg = open_store(_settings(tmp_path, CAMPAIGN_STORE_URL="postgresql://u:secret@db:5432/c"))
    assert isinstance(pg, PostgresStore) and not pg.auto_migrate
    assert "secret" not in repr(pg)
    assert isinstance(open_store("postgres://u@db/c", auto_migrate=True), PostgresStore)
    supa = open_store(_settings(tmp_path, SUPABASE_URL="https://x.supabase.co", SUPABASE_KEY="k"))
    assert isinstance(supa, SupabaseStore)
    both = open_store(_settings(tmp_path, SUPABASE_URL="https://x.supabase.co", SUPABASE_KEY="k",
                                CAMPAIGN_STORE_URL="postgresql://u@db/c"))
    assert isinstance(both, PostgresStore), "an explicit store URL wins"
    half = open_store(_settings(tmp_path, SUPABASE_URL="https://x.supabase.co"))
    assert isinstance(half, SqliteStore), "Supabase needs both the URL and the key"
    with pytest.raises(StoreError, match="unsupported store URL scheme 'mysql'"):
        open_store("mysql://db/c")


def test_cli_db_migrate_and_the_refusal_it_fixes(pg_url: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from starter.cli import app

    monkeypatch.chdir(tmp_path)
    for var in ("SUPABASE_URL", "SUPABASE_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CAMPAIGN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CAMPAIGN_STORE_URL", pg_url)
    runner = CliRunner()
    refused = runner.invoke(app, ["suppress", "someone@example.com"])
    assert refused.exit_code == 1
    assert "campaign db migrate" in refused.stderr
    first = runner.invoke(app, ["db", "migrate"])
    assert first.exit_code == 0, first.stderr
    assert f"schema version {SCHEMA_VERSION} (migrated from version 0)" in first.stderr
    again = runner.invoke(app, ["db", "migrate"])
    assert "already up to date" in again.stderr
    ok = runner.invoke(app, ["suppress", "someone@example.com"])
    assert ok.exit_code == 0, ok.stderr


# -- a whole campaign on Postgres ------------------------------------------------------------------


@pytest.mark.slow
async def test_campaign_end_to_end_on_postgres(ts_env, settings: Settings, prefix: str,
                                               pg_url: str) -> None:
    from temporalio.client import WorkflowHandle

    from campaign_core.ids import campaign_workflow_id
    from campaign_core.models import CampaignStatus, Stage
    from starter.manager import CampaignManager
    from tests.conftest import KB
    from worker_main import build_workers

    store = PostgresStore(pg_url)
    await store.migrate()
    cid = f"pg-{uuid.uuid4().hex[:6]}"
    try:
        async with contextlib.AsyncExitStack() as stack:
            for w in build_workers(ts_env.client, store, settings, prefix=prefix):
                await stack.enter_async_context(w)
            mgr = CampaignManager(settings, client=ts_env.client, store=store, queue_prefix=prefix,
                                  use_search_attributes=False)
            intake = parse_lead_rows(enumerate(PEOPLE[:3], start=2), cid)
            await mgr.start(intake, CampaignOptions(brief="Book a 20-minute call.", kb=str(KB)), name="pg",
                            campaign_id=cid)
            handle: WorkflowHandle[Any, CampaignStatus] = ts_env.client.get_workflow_handle(
                campaign_workflow_id(cid), result_type=CampaignStatus)
            for _ in range(600):
                st = await handle.query("status", result_type=CampaignStatus)
                if st.stage is not Stage.DRAFTING:
                    break
                await asyncio.sleep(0.05)
            assert st.stage is Stage.AWAITING_APPROVAL, st
            drafts = await mgr.drafts(cid)
            assert len(drafts) == 3 and all(d.citations for d in drafts)
            await mgr.approve(cid, by="tester", note="ok")
            final = await handle.result()
        assert final.stage is Stage.COMPLETED and final.counts.sent == 3
        report = await store.report(cid)
        assert {r.delivery_status for r in report} == {"sent"}
        assert all(r.message_id for r in report)
        trail = await store.audit(cid)
        agents = {r.agent.split(".", 1)[-1] for r in trail}
        assert {"store_lead", "write_draft", "store_draft", "record_decision"} <= agents
        assert all(r.run_id and (r.attempt or 0) >= 1 and r.duration_ms is not None for r in trail)
        backend = Backend("postgres", store, pg_url)
        assert await backend.rows("drafts") == 3 and await backend.rows("deliveries") == 3
    finally:
        await store.close()


# -- a real Supabase project, when there is one ----------------------------------------------------


@pytest.mark.skipif(not (os.environ.get("SUPABASE_URL") and os.environ.get("SUPABASE_KEY")),
                    reason="live Supabase test: set SUPABASE_URL and SUPABASE_KEY (service key)")
async def test_live_supabase_round_trip() -> None:
    store = SupabaseStore(os.environ["SUPABASE_URL"], os.environ["SUPABASE_KEY"])
    cid = f"live-test-{uuid.uuid4().hex[:8]}"
    try:
        assert await store.ensure_schema() == SCHEMA_VERSION
        leads = await new_campaign(store, cid)
        await store.upsert_leads(cid, leads)
        assert (await store.counts(cid)).leads == len(leads)
        assert await store.get_lead(cid, leads[0].lead_id) == leads[0]
    finally:
        with contextlib.suppress(Exception):  # never hide the failure above
            db = await store._db()
            await db.table("leads").delete().eq("campaign_id", cid).execute()
            await db.table("campaigns").delete().eq("campaign_id", cid).execute()
        await store.close()
