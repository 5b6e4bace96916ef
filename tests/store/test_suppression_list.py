"""The suppression list as a listing (schema 14), on every backend: each entry's `source`,
the backfill of entries made before schema 14, listing newest first, lifting an entry
(never an erased person's), and the reply classifier's columns on `replies`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from campaign_core.store.base import SCHEMA_VERSION
from campaign_core.store.erasure import FORGOTTEN_REASON
from campaign_core.store.postgres import PostgresStore
from campaign_core.store.sqlite import SqliteStore
from campaign_core.store.supabase import SupabaseStore
from tests.fakes import pg_fixtures
from tests.fakes.fake_postgrest import FakePostgrest
from tests.store.test_store import SERVICE_KEY, SUPABASE_TEST_URL, Backend, make_backend

pg_cluster = pg_fixtures.pg_cluster
pg_url = pg_fixtures.pg_url

#: Reasons every path wrote before schema 14, and the source each is traced to.
BEFORE_14 = {
    "ana@example.com": ("manual", "manual"),                                # campaign suppress
    "bo@example.org": ("unsubscribe (c1)", "unsubscribe_link"),              # the link (page or one-click)
    "cy@example.net": ("unsubscribe (mailto, c1)", "mailto"),               # mail to List-Unsubscribe
    "di@example.com": ("bounce (webhook)", "bounce"),                       # a provider's event
    "ed@example.com": ("bounce (dsn)", "bounce"),                           # a DSN by mail
    "fa@example.com": ("complaint (webhook)", "complaint"),
    "gu@example.com": (FORGOTTEN_REASON, "erasure"),                        # campaign forget
    "ha@example.com": ("bench", "manual"),                                  # anything else
}


@pytest.fixture(params=["sqlite", "postgres", "supabase"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    b = await make_backend(request.param, request, tmp_path)
    yield b
    await b.store.close()
    if b.fake:
        await b.fake.aclose()


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "supabase"])
async def test_entries_made_before_schema_14_get_the_source_their_reason_names(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    target = str(tmp_path / "campaign.db") if kind == "sqlite" else request.getfixturevalue("pg_url")
    old = SqliteStore(target) if kind == "sqlite" else PostgresStore(target)
    assert await old.migrate(target=13) == 13
    raw = Backend("sqlite" if kind == "sqlite" else "postgres", old, target)
    for email, (reason, _) in BEFORE_14.items():
        await raw.execute("INSERT INTO suppressions(email, reason, created_at) VALUES (?, ?, ?)",
                          "INSERT INTO suppressions(email, reason, created_at) VALUES (%s, %s, %s)",
                          (email, reason, "2024-05-01T09:00:00+00:00"))
    await raw.execute(
        "INSERT INTO replies(reply_id, message_id, kind, email, source, received_at) "
        "VALUES ('rpl_1', 'm1@x', 'reply', 'ana@example.com', 'imap', '2024-05-01T09:00:00+00:00')",
        "INSERT INTO replies(reply_id, message_id, kind, email, source) "
        "VALUES ('rpl_1', 'm1@x', 'reply', 'ana@example.com', 'imap')")
    assert await old.migrate() == SCHEMA_VERSION >= 14  # migrated through 14 to the latest
    assert await old.migrate() == SCHEMA_VERSION  # again: nothing changes
    await old.close()

    fake = FakePostgrest(target) if kind == "supabase" else None
    store = (SupabaseStore(SUPABASE_TEST_URL, SERVICE_KEY, transport=fake.transport())
             if fake else SqliteStore(target) if kind == "sqlite" else PostgresStore(target))
    try:
        rows = await store.list_suppressions()
        assert {r.email: (r.reason, r.source) for r in rows} == {
            e: pair for e, pair in BEFORE_14.items()}
        assert {r.created_at[:19] for r in rows} == {"2024-05-01T09:00:00"}
        reply = await store.get_reply("rpl_1")
        assert reply is not None and (reply.intent, reply.confidence, reply.action) == (
            None, None, None)
        assert await store.record_reply_intent("rpl_1", "unsubscribe", 0.93, "suppressed")
        reply = await store.get_reply("rpl_1")
        assert reply is not None and (reply.intent, reply.confidence, reply.action) == (
            "unsubscribe", 0.93, "suppressed")
        assert not await store.record_reply_intent("rpl_none", "unclear", None, None)
    finally:
        await store.close()
        if fake:
            await fake.aclose()


async def test_the_list_is_newest_first_with_each_entrys_source(backend: Backend) -> None:
    s = backend.store
    assert await s.add_suppressions(["ana@example.com"], "manual", source="manual") == 1
    await asyncio.sleep(0.01)
    assert await s.add_suppressions(["bo@example.org"], "bounce (webhook)", source="bounce") == 1
    await asyncio.sleep(0.01)
    assert await s.add_suppressions(["\uff23\uff59@example.net"], "unsubscribe (c1)",
                                    source="one_click") == 1
    # An address already there keeps its entry (and its source).
    assert await s.add_suppressions(["ANA@example.com"], "complaint (x)", source="complaint") == 0
    rows = await s.list_suppressions()
    assert [(r.email, r.source, r.reason) for r in rows] == [
        ("cy@example.net", "one_click", "unsubscribe (c1)"),
        ("bo@example.org", "bounce", "bounce (webhook)"),
        ("ana@example.com", "manual", "manual")]
    assert rows[0].created_at > rows[1].created_at > rows[2].created_at
    found = await s.get_suppression(" CY@EXAMPLE.NET")
    assert found is not None and found.source == "one_click"
    assert await s.get_suppression("di@example.com") is None


async def test_a_lift_removes_the_entry_but_never_an_erased_persons(backend: Backend) -> None:
    s = backend.store
    await s.add_suppressions(["ana@example.com", "bo@example.org"], "manual", source="manual")
    # A fullwidth spelling is the same address.
    (gone,) = await s.lift_suppression("\uff21\uff2e\uff21@example.com")
    assert (gone.email, gone.source) == ("ana@example.com", "manual")
    assert not await s.is_suppressed("ana@example.com")
    assert await s.lift_suppression("ana@example.com") == []  # not there any more

    await s.forget("bo@example.org")  # suppressed by hand, then erased: the erasure's entry now
    entry = await s.get_suppression("bo@example.org")
    assert entry is not None and (entry.source, entry.reason) == ("erasure", FORGOTTEN_REASON)
    assert await s.lift_suppression("bo@example.org") == []
    assert await s.is_suppressed("bo@example.org")

    await s.forget("cy@example.net")  # erased without being suppressed before
    assert [(r.email, r.source) for r in await s.list_suppressions()] == [
        ("cy@example.net", "erasure"), ("bo@example.org", "erasure")]
    assert await backend.rows("suppressions") == 2
