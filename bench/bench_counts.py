"""What one `status` (its counts) and one `report` cost as a sequence campaign grows.

Since issue 24 a campaign's counts are tallies of the report's rows (one per lead and
step), computed in one place (`campaign_core/store/outcomes.py`), so `status` reads every
row of the campaign on each call, and `status --watch` does so once a second. This seeds a
SQLite store directly with a 3-step campaign in the middle of delivery (every lead's step 1
sent, a third of the step 2s sent, some stopped, a few excluded and held) and times
`counts()`, `status_figures()` (what `status` reads since issue 27: the counts and the
replies by intent and step; about a tenth of the leads replied) and `report()`: the median
of `--repeat` calls at each size. Not part of the test suite.

    .venv/bin/python -m bench.bench_counts [--leads 1000 5000 10000] [--repeat 5] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.docs import write_section
from campaign_core.ids import message_key
from campaign_core.leads import parse_lead_rows
from campaign_core.store.sqlite import SqliteStore

STEPS = 3
INTENTS = ["interested", "not_interested", "question", "out_of_office", "unclear"]


async def seed(store: SqliteStore, cid: str, n: int) -> None:
    """A 3-step campaign of `n` leads, delivering."""
    rows = [{"email": f"p{i}@co{i % 500}.example", "company": f"Co {i % 500}"} for i in range(n)]
    intake = parse_lead_rows(enumerate(rows, start=2), cid)
    await store.upsert_campaign(campaign_id=cid, name="Counts bench", brief="", channel="outbox",
                                kb_dir=None, workflow_id=f"campaign:{cid}")
    await store.upsert_leads(cid, intake.leads)
    for i, lead in enumerate(intake.leads):
        for step in range(1, STEPS + 1):
            failed = "guardrail: bench" if i % 97 == 0 and step == 3 else None
            await store.upsert_draft(
                campaign_id=cid, lead_id=lead.lead_id, step=step, subject=f"Hello {step}",
                body="A body.", citations=[], provenance={"agent": "bench"},
                envelope_id=f"env-{lead.lead_id}-{step}", failed_reason=failed)
        await store.set_lead_status(cid, lead.lead_id, "failed" if i % 97 == 0 else "drafted")
        if i % 50 == 0:
            await store.set_draft_excluded(cid, lead.lead_id, None, True)
    await store.record_decision(campaign_id=cid, decision_id="d1", decision="approve",
                                lead_ids=None, by="bench", note=None)
    await store.set_stage(cid, "delivering")
    for i, lead in enumerate(intake.leads):
        if i % 50 == 0 or i % 97 == 0:
            continue
        await store.upsert_delivery(message_key=message_key(cid, lead.lead_id, 1), campaign_id=cid,
                                    lead_id=lead.lead_id, step=1, channel="outbox", status="sent",
                                    message_id=f"<{i}-1@bench>")
        if i % 3 == 0:
            await store.upsert_delivery(message_key=message_key(cid, lead.lead_id, 2),
                                        campaign_id=cid, lead_id=lead.lead_id, step=2,
                                        channel="outbox", status="sent",
                                        message_id=f"<{i}-2@bench>")
        elif i % 7 == 0:
            await store.set_step_status(cid, lead.lead_id, 2, "stopped", "replied")
            # The reply that stopped it, read; every other one by address, with no step.
            reply_id, _ = await store.record_reply(
                message_id=f"<r{i}@bench>", kind="reply", email=lead.email, source="webhook",
                campaign_id=cid, lead_id=lead.lead_id, step=1 if i % 2 else None)
            await store.record_reply_intent(reply_id, INTENTS[i % len(INTENTS)], 0.9, "stop")


async def timed(call: object, repeat: int) -> float:
    """Median milliseconds of `repeat` awaits of `call()`."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def main(sizes: list[int], repeat: int) -> list[tuple[int, int, float, float, float]]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            store = SqliteStore(Path(tmp) / f"bench-{n}.db")
            await store.migrate()
            cid = f"counts-{n}"
            await seed(store, cid, n)
            rows = len(await store.report(cid))
            counts_ms = await timed(lambda cid=cid, store=store: store.counts(cid), repeat)
            status_ms = await timed(lambda cid=cid, store=store: store.status_figures(cid),
                                    repeat)
            report_ms = await timed(lambda cid=cid, store=store: store.report(cid), repeat)
            print(f"{n:>6} leads, {rows:>6} rows: counts {counts_ms:7.1f} ms, status figures "
                  f"{status_ms:7.1f} ms, report {report_ms:7.1f} ms (median of {repeat})",
                  flush=True)
            out.append((n, rows, counts_ms, status_ms, report_ms))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--write", action="store_true",
                        help="write the figures into docs/performance.md")
    args = parser.parse_args()
    results = asyncio.run(main(args.leads, args.repeat))
    if args.write:
        table = "\n".join(["| leads | rows (lead, step) | counts, ms | status figures, ms "
                           "| report, ms |", "| ---: | ---: | ---: | ---: | ---: |",
                           *(f"| {n:,} | {rows:,} | {c:.1f} | {f:.1f} | {r:.1f} |"
                             for n, rows, c, f, r in results)])
        write_section(
            "bench_counts", "What status and report cost on a sequence campaign",
            f"a 3-step campaign seeded into SQLite mid-delivery; median of {args.repeat} calls "
            "each (`status` calls `status_figures`: the counts, which tally the report's rows, and "
            "the replies by intent and step from one grouped query).", table)
