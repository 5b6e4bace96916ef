"""Benchmark: ingest 10,000 leads into each local store backend, as `campaign start` does.

`campaign start` validates the leads file and hands the leads to `Store.upsert_leads`;
this times that step alone (intake is done before the clock starts) on:

- SQLite: the embedded default, a file in a temp dir (WAL, default `synchronous`);
- PostgreSQL: a throwaway cluster started from the installed server binaries (the
  same helper as the tests, but with fsync on, so the figure means something).

Each backend gets a fresh store and is timed twice: the first import (inserts) and
the same import again (every row an upsert conflict: what a retried activity or a
re-run `start --id` costs). Leads go in batches of `--batch` (default 1,000;
`--batch 0` passes all of them in one call, which is what `CampaignManager.start`
does today).

    .venv/bin/python -m bench.bench_store_ingest                 # 10,000 leads
    .venv/bin/python -m bench.bench_store_ingest --leads 500     # short mode (CI)
    .venv/bin/python -m bench.bench_store_ingest --json          # one JSON document

The Supabase REST backend is not timed here: its cost is the network round trip to
the project per batch of 500, which a local stand-in would not measure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from campaign_core.leads import Lead, parse_lead_rows  # noqa: E402
from campaign_core.store.base import Store  # noqa: E402
from campaign_core.store.postgres import PostgresStore  # noqa: E402
from campaign_core.store.sqlite import SqliteStore  # noqa: E402
from tests.fakes.pg_fixtures import TempPostgres, find_pg_bin  # noqa: E402

CAMPAIGN = "bench-ingest"


def sample_leads(n: int) -> list[Lead]:
    """Leads shaped like a CRM export: known fields plus two custom columns."""
    rows = [{
        "email": f"person{i}@example{i % 97}.com", "first_name": f"First{i}", "last_name": f"Last{i}",
        "company": f"Company {i % 1000}", "title": "Head of Operations", "website": "https://example.com",
        "timezone": "Europe/Berlin", "notes": "Met at the logistics summit; interested in pricing.",
        "segment": "mid-market", "crm_id": f"crm-{i:06d}",
    } for i in range(n)]
    return parse_lead_rows(enumerate(rows, start=2), CAMPAIGN).leads


async def ingest(store: Store, leads: list[Lead], batch: int) -> float:
    """Seconds to upsert every lead, `batch` at a time (0: all in one call)."""
    size = batch or len(leads)
    started = time.perf_counter()
    for i in range(0, len(leads), size):
        await store.upsert_leads(CAMPAIGN, leads[i:i + size])
    return time.perf_counter() - started


async def measure(name: str, store: Store, leads: list[Lead], batch: int) -> dict[str, Any]:
    try:
        await store.migrate()
        await store.upsert_campaign(campaign_id=CAMPAIGN, name="Bench", brief="", channel="outbox",
                                    kb_dir=None, workflow_id=f"campaign:{CAMPAIGN}")
        first = await ingest(store, leads, batch)
        again = await ingest(store, leads, batch)
        stored = (await store.counts(CAMPAIGN)).leads
    finally:
        await store.close()
    if stored != len(leads):
        raise SystemExit(f"{name}: stored {stored} leads, expected {len(leads)}")
    return {"backend": name, "leads": len(leads), "batch": batch or len(leads),
            "first_s": round(first, 3), "again_s": round(again, 3),
            "leads_per_s": round(len(leads) / first)}


async def run(n: int, batch: int) -> list[dict[str, Any]]:
    leads = sample_leads(n)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as tmp:
        results.append(await measure("sqlite", SqliteStore(Path(tmp) / "campaign.db"), leads, batch))
    if find_pg_bin() is None:
        print("PostgreSQL server binaries not found: skipping postgres", file=sys.stderr)
        return results
    with TempPostgres(durable=True) as pg:
        results.append(await measure("postgres", PostgresStore(pg.create_database("bench")), leads,
                                     batch))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1_000, help="leads per upsert_leads call (0: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    results = asyncio.run(run(args.leads, args.batch))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'backend':<10} {'leads':>7} {'batch':>6} {'first import':>13} {'re-import':>10} {'leads/s':>8}")
    for r in results:
        print(f"{r['backend']:<10} {r['leads']:>7} {r['batch']:>6} {r['first_s']:>12.2f}s "
              f"{r['again_s']:>9.2f}s {r['leads_per_s']:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
