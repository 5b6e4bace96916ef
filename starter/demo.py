"""`campaign demo`: the whole path on the embedded stack in one command, with shipped
sample leads and knowledge base (see "The command line" in docs/architecture.md)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import sys
import time
import uuid
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.prompt import Confirm

from campaign_core.leads import read_leads_file
from campaign_core.models import CampaignStatus, Stage
from campaign_core.ports import free_port, port_free
from campaign_core.settings import Settings
from campaign_core.store.factory import open_store
from campaign_core.temporal import TemporalUnreachable, connect
from starter.cli.app import out, report_table, shown
from starter.devstack import embedded_stack
from starter.manager import CampaignManager
from starter.start_options import CampaignOptions
from worker_main import run_workers

console = Console(stderr=True)
DONE = {Stage.COMPLETED, Stage.REJECTED, Stage.EXPIRED, Stage.FAILED}
#: The demo's footer address when CAMPAIGN_POSTAL_ADDRESS is not set (a sample, like its leads).
DEMO_POSTAL_ADDRESS = "Relay Demo Inc., 100 Example Avenue, Springfield, IL 62701, USA"


def demo_data() -> Path:
    return Path(str(resources.files("starter") / "demo_data"))


def sample_leads(target: Path, n: int) -> Path:
    """Write n sample leads: the shipped ones, then numbered variants of them."""
    rows = list(csv.DictReader(io.StringIO((demo_data() / "leads.csv").read_text())))
    out = []
    for i in range(n):
        row = dict(rows[i % len(rows)])
        if i >= len(rows):
            local, _, domain = row["email"].partition("@")
            row["email"] = f"{local}+{i}@{domain}"
        out.append(row)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(out)
    return target


@contextlib.asynccontextmanager
async def stack_for_demo(settings: Settings) -> AsyncIterator[tuple[CampaignManager, str]]:
    """Join a running `campaign dev`, else start the embedded stack; run workers here."""
    stop = asyncio.Event()
    joined = None
    if settings.dev_file.exists():
        with contextlib.suppress(TemporalUnreachable):
            joined = await connect(settings)
    if joined is not None:
        console.print(f"Using the running dev server at {settings.resolved_temporal_address}")
        workers = asyncio.create_task(run_workers(joined, settings, None, stop,
                                                   make_current=True))
        try:
            yield CampaignManager(settings, client=joined), settings.resolved_ui_url
        finally:
            stop.set()
            await workers
        return
    port = 7233 if port_free(7233) else free_port()
    ui_port = 8233 if port_free(8233) else free_port()
    console.print(f"Starting the embedded Temporal dev server on 127.0.0.1:{port} ...")
    async with embedded_stack(settings, port, ui_port) as stack:
        settings = settings.model_copy(update={"temporal_ui_url": stack.ui_url})
        workers = asyncio.create_task(run_workers(stack.client, settings, None, stop,
                                                   make_current=True))
        try:
            yield CampaignManager(settings, client=stack.client), stack.ui_url
        finally:
            stop.set()
            await workers


async def wait_for(mgr: CampaignManager, cid: str, stages: set[Stage], total: int,
                   label: str, field: str, limit_s: float = 600) -> CampaignStatus:
    """Show a progress bar until the campaign reaches one of `stages`."""
    deadline = time.monotonic() + limit_s
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(label, total=total)
        while True:
            st = await mgr.status(cid)
            c = st.counts
            done = c.drafted + c.draft_failed if field == "drafted" else (
                c.sent + c.suppressed + c.send_failed)
            bar.update(task, completed=done)
            if st.stage in stages:
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"campaign {cid} still {st.stage.value} after {limit_s:.0f}s")
            await asyncio.sleep(0.3)


async def run_demo(settings: Settings, *, auto_approve: bool, n_leads: int) -> None:
    if not (settings.postal_address or "").strip():
        settings = settings.model_copy(update={"postal_address": DEMO_POSTAL_ADDRESS})
    home = settings.campaign_home
    store = open_store(settings)
    await store.migrate()  # like `campaign dev`, the demo keeps its store current
    await store.close()
    cid = f"demo-{uuid.uuid4().hex[:8]}"
    leads_file = sample_leads(home / "demo" / "leads.csv", n_leads)
    intake = read_leads_file(leads_file, cid)
    brief = (demo_data() / "brief.md").read_text()
    async with stack_for_demo(settings) as (mgr, ui_url):
        # The sample people again: a demo left unfinished earlier must not skip them all.
        started = await mgr.start(intake, CampaignOptions(brief=brief, kb=str(demo_data() / "kb"),
                                                          allow_overlap=True),
                                  name="Relay demo", campaign_id=cid)
        console.print(f"Campaign [bold]{cid}[/]: {started.leads_accepted} leads")
        console.print(f"Follow it in the Temporal UI: {started.ui_url}")
        st = await wait_for(mgr, cid, {Stage.AWAITING_APPROVAL} | DONE, started.leads_accepted,
                            "Drafting", "drafted")
        console.print(f"{st.counts.drafted} drafted, {st.counts.draft_failed} failed.")
        drafts = await mgr.drafts(cid, limit=2)
        total = (await mgr.store.counts(cid)).drafted
        for d in drafts:
            console.rule(shown(d.email))
            console.print(f"[bold]Subject:[/] {shown(d.subject)}", highlight=False)
            console.print(shown(d.body, multiline=True), highlight=False)
        if total > len(drafts):
            console.rule(f"... and {total - len(drafts)} more (`campaign drafts {cid}`)")
        if auto_approve:
            approved = True
        elif not sys.stdin.isatty():
            console.print("stdin is not a terminal: approving automatically.")
            approved = True
        else:
            approved = Confirm.ask(f"Approve and send {total} messages?", console=console)
        if approved:
            await mgr.approve(cid, by="demo", note="approved in `campaign demo`")
            st = await wait_for(mgr, cid, DONE, total, "Delivering", "sent")
        else:
            await mgr.reject(cid, by="demo", reason="declined at the demo prompt")
            st = await wait_for(mgr, cid, DONE, total, "Rejecting", "sent")
        out.print(report_table(await mgr.report(cid)))
        console.print(f"Stage: [bold]{st.stage.value}[/]; sent {st.counts.sent}, "
                      f"suppressed {st.counts.suppressed}, failed {st.counts.send_failed}")
        console.print(f"Outbox: {settings.outbox_dir.resolve()}")
        console.print(f"Temporal UI: {ui_url} (campaign: {started.ui_url})")
        console.print("History is kept in CAMPAIGN_HOME: run `campaign dev` to browse it again.")
