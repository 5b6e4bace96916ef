"""Spend caps in the store (schema 11), on every backend.

Reservations hold a call's worst case iff recorded spend + open holds + it fit the budget;
a retried call is granted again without holding twice; settling replaces the hold by the
actual cost; releasing gives it back. Atomicity under real concurrency: 20 reservers race
for a budget of 5 calls and exactly 5 win, on SQLite from several processes, on Postgres
from separate connections, and through the Supabase RPC's SQL function.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from campaign_core.budget import NANO, check_budget, fits, usd
from campaign_core.store.postgres import PostgresStore
from campaign_core.store.sqlite import SqliteStore
from tests.fakes import pg_fixtures
from tests.store.test_store import Backend, backend, fake_supabase, make_backend, new_campaign

pg_cluster = pg_fixtures.pg_cluster
pg_url = pg_fixtures.pg_url
# The store fixtures of test_store: every backend, and the Supabase store with its fake.
__all__ = ["backend", "fake_supabase", "make_backend"]

CALL = 1_000_000  # nano-USD: $0.001, the worst case of one call in these tests


async def test_reserve_settle_release_and_spend(backend: Backend) -> None:
    store = backend.store
    await new_campaign(store, "c1", n=1)
    assert (await store.spend("c1")).model_dump() == {
        "budget_usd": None, "spent_usd": 0.0, "reserved_usd": 0.0}
    # No cap: every call is granted, and still held and recorded.
    grant = await store.reserve_llm_call("c1", "k0", CALL)
    assert grant.granted and grant.budget_usd is None and grant.reserved_usd == 0.001
    assert await store.set_budget("c1", 0.0025) is True
    assert await store.set_budget("no-such-campaign", 1.0) is False
    assert (await store.get_campaign("c1")).budget_usd == 0.0025  # type: ignore[union-attr]

    second = await store.reserve_llm_call("c1", "k1", CALL)
    assert second.granted and second.reserved_usd == 0.002
    refused = await store.reserve_llm_call("c1", "k2", CALL)  # 0.003 > 0.0025
    assert not refused.granted
    assert (refused.spent_usd, refused.reserved_usd, refused.budget_usd) == (0.0, 0.002, 0.0025)

    # A retried call (same key) is granted again and holds nothing more.
    again = await store.reserve_llm_call("c1", "k1", CALL)
    assert again.granted and again.reserved_usd == 0.002

    # The answer costs less than the worst case: the hold becomes the actual cost.
    await store.settle_llm_call("c1", "k0", 400_000)
    await store.settle_llm_call("c1", "k0", 400_000)  # idempotent
    spend = await store.spend("c1")
    assert (spend.spent_usd, spend.reserved_usd) == (0.0004, 0.001)
    # A call that failed gives its hold back; releasing a settled call changes nothing.
    await store.release_llm_call("c1", "k1")
    await store.release_llm_call("c1", "k0")
    spend = await store.spend("c1")
    assert (spend.spent_usd, spend.reserved_usd) == (0.0004, 0.0)
    # Now two more calls fit: 0.0004 + 0.002 <= 0.0025, a third does not.
    assert (await store.reserve_llm_call("c1", "k3", CALL)).granted
    assert (await store.reserve_llm_call("c1", "k4", CALL)).granted
    assert not (await store.reserve_llm_call("c1", "k5", CALL)).granted
    # A settlement without a reservation (a call answered before this schema) still counts,
    # and an unknown price records no cost.
    await store.settle_llm_call("c1", "old", 100_000)
    await store.settle_llm_call("c1", "unpriced", None)
    assert (await store.spend("c1")).spent_usd == 0.0005
    # Raising the budget lets the refused call through.
    await store.set_budget("c1", 1.0)
    assert (await store.reserve_llm_call("c1", "k5", CALL)).granted


async def test_campaign_rows_keep_their_budget(backend: Backend) -> None:
    await backend.store.upsert_campaign(campaign_id="b1", name="B", brief="", channel="outbox",
                                        kb_dir=None, workflow_id="campaign:b1", budget_usd=12.5)
    await backend.store.upsert_campaign(campaign_id="b1", name="B", brief="", channel="outbox",
                                        kb_dir=None, workflow_id="campaign:b1", budget_usd=99.0)
    row = await backend.store.get_campaign("b1")
    assert row is not None and row.budget_usd == 12.5  # an existing row is left as it is
    assert (await backend.store.spend("b1")).budget_usd == 12.5


def test_the_rule_and_the_words() -> None:
    assert fits(None, 10**12, 10**12, 10**12)
    assert fits(0.005, 0, 4 * CALL, CALL) and not fits(0.005, 0, 4 * CALL, CALL + 1)
    # The ledger counts integers: $0.1 + $0.2 fits a $0.3 budget exactly (floats: 0.30000000000000004).
    assert 0.1 + 0.2 > 0.3 and fits(0.3, round(0.1 * NANO), 0, round(0.2 * NANO))
    assert usd(0.0021) == "$0.0021" and usd(5.0) == "$5" and usd(None) == "no cap"
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="--budget-usd"):
            check_budget(bad, "--budget-usd")


# -- atomicity ----------------------------------------------------------------------------


async def _race(stores: list[Any], cid: str, prefix: str) -> list[bool]:
    results = await asyncio.gather(*(
        s.reserve_llm_call(cid, f"{prefix}-{i}", CALL) for i, s in enumerate(stores)))
    return [r.granted for r in results]


def _sqlite_racer(path: str, prefix: str, n: int) -> list[bool]:
    """One worker process: `n` stores (connections) reserving at once."""

    async def go() -> list[bool]:
        stores = [SqliteStore(path, auto_migrate=False) for _ in range(n)]
        try:
            return await _race(stores, "race", prefix)
        finally:
            for s in stores:
                await s.close()

    return asyncio.run(go())


async def test_sqlite_reservations_are_atomic_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "campaign.db"
    store = SqliteStore(path)
    await store.migrate()
    await new_campaign(store, "race", n=1)
    await store.set_budget("race", 5 * CALL / NANO)
    ctx = multiprocessing.get_context("spawn")
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        runs = await asyncio.gather(*(
            loop.run_in_executor(pool, _sqlite_racer, str(path), f"p{p}", 10) for p in range(2)))
    granted = [g for run in runs for g in run]
    assert len(granted) == 20 and sum(granted) == 5
    spend = await store.spend("race")
    assert spend.reserved_usd == 0.005 and spend.spent_usd == 0.0


async def test_postgres_reservations_are_atomic_across_connections(pg_url: str) -> None:
    first = PostgresStore(pg_url, auto_migrate=True)
    await first.migrate()
    await new_campaign(first, "race", n=1)
    await first.set_budget("race", 5 * CALL / NANO)
    stores = [PostgresStore(pg_url, max_size=1) for _ in range(20)]
    try:
        granted = await _race(stores, "race", "pg")
    finally:
        for s in stores:
            await s.close()
    assert sum(granted) == 5
    spend = await first.spend("race")
    await first.close()
    assert spend.reserved_usd == 0.005


async def test_supabase_rpc_reserves_atomically(pg_url: str) -> None:
    """The REST store's `reserve_llm_call` function, called from 20 connections at once
    (the fake PostgREST serialises requests, so the race is run against the SQL itself)."""
    pg = PostgresStore(pg_url)
    await pg.migrate()
    await new_campaign(pg, "race", n=1)
    await pg.set_budget("race", 5 * CALL / NANO)
    await pg.close()
    conns = [await psycopg.AsyncConnection.connect(pg_url, autocommit=True) for _ in range(20)]
    try:
        async def one(i: int, conn: psycopg.AsyncConnection[Any]) -> bool:
            cur = await conn.execute("SELECT granted FROM reserve_llm_call(%s, %s, %s)",
                                     ("race", f"rpc-{i}", CALL))
            row = await cur.fetchone()
            return bool(row and row[0])

        granted = await asyncio.gather(*(one(i, c) for i, c in enumerate(conns)))
        cur = await conns[0].execute("SELECT spent, held FROM llm_spend_totals('race')")
        totals = await cur.fetchone()
    finally:
        for c in conns:
            await c.close()
    assert sum(granted) == 5
    assert totals is not None and (int(totals[0]), int(totals[1])) == (0, 5 * CALL)


async def test_supabase_store_calls_the_rpc(fake_supabase: Any) -> None:
    store, fake = fake_supabase
    await new_campaign(store, "c1", n=1)
    await store.set_budget("c1", 0.001)
    assert (await store.reserve_llm_call("c1", "a", CALL)).granted
    assert not (await store.reserve_llm_call("c1", "b", CALL)).granted
    assert [c.body for c in fake.calls_to("rpc/reserve_llm_call")] == [
        {"p_campaign_id": "c1", "p_call_key": "a", "p_amount": CALL},
        {"p_campaign_id": "c1", "p_call_key": "b", "p_amount": CALL}]
