"""The `campaign` command line (Typer + Rich).

Every command that prints results takes `--json` and then writes exactly one JSON
document to stdout; human output, logs and errors go to stderr. Exit codes: 0 ok,
2 bad input, 3 Temporal not reachable, 1 anything else.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from campaign_core.codec import EncryptionKeyError
from campaign_core.leads import LeadsFileError, read_leads_file
from campaign_core.models import Channel
from campaign_core.send_window import SendWindow
from campaign_core.settings import Settings, load_settings
from campaign_core.store.base import StoreError
from campaign_core.store.factory import open_store
from campaign_core.temporal import TemporalUnreachable
from starter.manager import BadInput, CampaignManager, campaign_id_for, parse_duration

app = typer.Typer(
    name="campaign",
    help="Durable multi-agent campaigns on Temporal: draft, approve, deliver exactly once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The store's schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

# Piped output is read by scripts and logs: don't squeeze tables into 80 columns.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("campaign")
T = TypeVar("T")

JSON_OPT = typer.Option(False, "--json", help="Print one JSON document on stdout.")


def fail(code: int, message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine, mapping failures to the contract's exit codes."""
    try:
        return asyncio.run(coro)
    except (BadInput, LeadsFileError, EncryptionKeyError) as exc:
        fail(2, str(exc))
    except TemporalUnreachable as exc:
        fail(3, str(exc))
    except StoreError as exc:
        fail(1, f"store: {exc}")
    except typer.Exit:
        raise
    except Exception as exc:
        log.debug("unexpected failure", exc_info=True)
        fail(1, f"{exc.__class__.__name__}: {exc}")


def brief_and_window(brief: str | None, brief_file: Path | None, send_window: str | None,
                     timezone: str) -> tuple[str | None, SendWindow | None]:
    """The `--brief`/`--brief-file` text and the parsed `--send-window`, or exit 2 naming
    the option (shared by `start` and `schedule create`)."""
    if brief is not None and brief_file is not None:
        fail(2, "give --brief or --brief-file, not both")
    if brief_file is not None:
        try:
            brief = brief_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(2, f"--brief-file {brief_file}: cannot read ({exc})")
    window = None
    if send_window is not None:
        try:
            window = SendWindow.parse(send_window, timezone)
        except ValueError as exc:
            fail(2, f"--send-window/--timezone: {exc}")
    return brief, window


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def manager(settings: Settings | None = None) -> CampaignManager:
    return CampaignManager(settings or load_settings())


def with_logging(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        logging.getLogger("temporalio").setLevel(logging.WARNING)
        return fn(*args, **kwargs)

    return wrapper


# -- running the stack -----------------------------------------------------------------


@app.command()
@with_logging
def dev(
    port: int = typer.Option(7233, help="Temporal frontend port."),
    ui_port: int = typer.Option(8233, "--ui-port", help="Temporal Web UI port."),
    no_worker: bool = typer.Option(False, "--no-worker", help="Start only the server."),
) -> None:
    """Start the embedded Temporal dev server (persistent, with UI) and all workers."""
    from starter.devstack import run_dev

    settings = load_settings()
    if not no_worker:
        run(migrate_store(settings))  # `campaign dev` keeps its store at the code's schema
    run(run_dev(settings, port=port, ui_port=ui_port, with_workers=not no_worker))


@app.command()
@with_logging
def worker(
    queues: str | None = typer.Option(None, help="Comma-separated queues (default: all)."),
) -> None:
    """Run workers against TEMPORAL_ADDRESS for all task queues, or the named ones."""
    import worker_main

    try:
        run(worker_main.main(queues.split(",") if queues else None))
    except ValueError as exc:
        fail(2, str(exc))


@app.command()
@with_logging
def api(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    insecure_dev: bool = typer.Option(
        False, "--insecure-dev", help="Serve without CAMPAIGN_API_TOKEN (a private machine only)."),
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json)."""
    import uvicorn

    from campaign_core.temporal import data_converter
    from starter.api import create_app

    settings = load_settings()
    try:
        data_converter(settings)  # a malformed CAMPAIGN_ENCRYPTION_KEY stops us here, not later
        application = create_app(settings, insecure_dev=insecure_dev)
    except (BadInput, EncryptionKeyError) as exc:
        fail(2, str(exc))
    if insecure_dev and settings.api_token is None:
        log.warning("serving WITHOUT authentication (--insecure-dev): keep this private")
    uvicorn.run(application, host=host, port=port, log_level="info", access_log=False)


# -- campaigns ------------------------------------------------------------------------


@app.command()
@with_logging
def start(
    leads: Path = typer.Option(..., "--leads", help="CSV (with header) or JSON Lines file."),
    name: str | None = typer.Option(None, help="Campaign name (default: the file's name)."),
    brief: str | None = typer.Option(None, help="The brief, as text."),
    brief_file: Path | None = typer.Option(None, "--brief-file", help="The brief, from a file."),
    kb: Path | None = typer.Option(None, "--kb", help="Knowledge-base directory."),
    channel: Channel = typer.Option(Channel.OUTBOX, help="Delivery channel."),
    campaign_id: str | None = typer.Option(None, "--id", help="Idempotent campaign id."),
    approval_timeout: str = typer.Option("72h", "--approval-timeout", help="e.g. 72h, 3d."),
    send_window: str | None = typer.Option(
        None, "--send-window", help="Send only then, in each lead's time zone: '09:00-17:00 Mon-Fri'."
    ),
    timezone: str = typer.Option("UTC", "--timezone", help="Zone for leads without one."),
    domain_limit: int = typer.Option(20, "--domain-limit", min=1,
                                     help="At most this many sends a minute to one domain."),
    send_rate: float | None = typer.Option(None, "--send-rate", min=0.001,
                                           help="This campaign's sends per second."),
    as_json: bool = JSON_OPT,
) -> None:
    """Validate the leads, start one campaign, return at once."""
    brief, window = brief_and_window(brief, brief_file, send_window, timezone)

    async def go() -> None:
        mgr = manager()
        timeout = parse_duration(approval_timeout)
        cname = name or leads.stem
        cid = campaign_id_for(cname, campaign_id)
        intake = read_leads_file(leads, cid)
        for rej in intake.rejected:
            err.print(f"[yellow]{leads}: row {rej.row}: {rej.error}[/]", highlight=False)
        result = await mgr.start(
            intake, name=cname, brief=brief or "", kb_dir=kb, channel=channel,
            campaign_id=cid, approval_timeout_seconds=timeout, send_window=window,
            domain_limit_per_minute=domain_limit, send_rate_per_second=send_rate,
        )
        if as_json:
            emit_json(result.to_json())
            return
        verb = "already running" if result.already_running else "started"
        out.print(f"Campaign [bold]{result.campaign_id}[/] {verb}: "
                  f"{result.leads_accepted} leads accepted, {len(result.leads_rejected)} rejected")
        out.print(f"Watch it: {result.ui_url}")

    run(go())


@app.command("add-leads")
@with_logging
def add_leads(
    campaign_id: str = typer.Argument(..., metavar="ID"),
    leads: Path = typer.Option(..., "--leads", help="CSV (with header) or JSON Lines file."),
    as_json: bool = JSON_OPT,
) -> None:
    """Add leads to a campaign that is still drafting."""

    async def go() -> None:
        intake = read_leads_file(leads, campaign_id)
        for rej in intake.rejected:
            err.print(f"[yellow]{leads}: row {rej.row}: {rej.error}[/]", highlight=False)
        result = await manager().add_leads(campaign_id, intake)
        if as_json:
            emit_json(result.to_json())
            return
        out.print(f"Campaign [bold]{campaign_id}[/]: {result.leads_accepted} leads added, "
                  f"{result.leads_already_present} already in it, "
                  f"{len(result.leads_rejected)} rejected")

    run(go())


@app.command()
def status(campaign_id: str = typer.Argument(..., metavar="ID"), as_json: bool = JSON_OPT) -> None:
    """Progress of one campaign."""

    async def go() -> None:
        st = await manager().status(campaign_id)
        if as_json:
            emit_json(st.model_dump(mode="json"))
            return
        paused = " [yellow](paused)[/]" if st.paused else ""
        out.print(f"[bold]{st.campaign_id}[/]: {st.stage.value}{paused}", highlight=False)
        for key, value in st.counts.model_dump().items():
            out.print(f"  {key:<13} {value}")
        if st.paused_reason:
            out.print(f"[yellow]{st.paused_reason}[/]", highlight=False)
        if st.error:
            out.print(f"[red]error:[/] {st.error}", highlight=False)

    run(go())


@app.command()
def drafts(campaign_id: str = typer.Argument(..., metavar="ID"), as_json: bool = JSON_OPT) -> None:
    """The drafts waiting for review."""

    async def go() -> None:
        rows = await manager().drafts(campaign_id)
        if as_json:
            emit_json(rows)
            return
        for d in rows:
            out.rule(f"{d['lead_id']}  {d['email']}")
            out.print(f"[bold]Subject:[/] {d['subject']}", highlight=False)
            out.print(d["body"], highlight=False, markup=False)
            if d["citations"]:
                out.print(f"[dim]citations: {', '.join(d['citations'])}[/]", highlight=False)
        out.print(f"{len(rows)} drafts")

    run(go())


@app.command()
def approve(
    campaign_id: str = typer.Argument(..., metavar="ID"),
    lead: list[str] | None = typer.Option(None, "--lead", help="Approve only these lead ids."),
    by: str = typer.Option("cli", "--by", help="Who approves."),
    note: str | None = typer.Option(None, "--note"),
) -> None:
    """Approve every draft, or only the listed leads (the rest are not sent)."""
    approved = run(manager().approve(campaign_id, lead_ids=lead or None, by=by, note=note))
    err.print(f"Approved {approved} draft(s) of {campaign_id}; delivery starts now.")


@app.command()
def reject(
    campaign_id: str = typer.Argument(..., metavar="ID"),
    reason: str | None = typer.Option(None, "--reason"),
    by: str = typer.Option("cli", "--by", help="Who rejects."),
) -> None:
    """Reject the campaign: nothing is sent."""
    run(manager().reject(campaign_id, by=by, reason=reason))
    err.print(f"Rejected {campaign_id}: nothing will be sent.")


@app.command()
def pause(campaign_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Hold a campaign: no new lead is drafted and nothing is sent until resumed."""
    run(manager().control(campaign_id, "pause"))
    err.print(f"Paused {campaign_id}: what is in flight finishes, nothing new starts.")


@app.command()
def resume(campaign_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Continue a paused campaign."""
    run(manager().control(campaign_id, "resume"))
    err.print(f"Resumed {campaign_id}.")


@app.command()
def cancel(campaign_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Stop a campaign: nothing further is drafted or sent."""
    run(manager().control(campaign_id, "cancel"))
    err.print(f"Cancelling {campaign_id}: nothing further will be sent.")


def report_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("lead", "email", "draft", "delivery", "message id / error")
    for column in table.columns:
        column.overflow = "fold"
    for r in rows:
        table.add_row(r["lead_id"], r["email"], r["draft_status"], r["delivery_status"],
                      r["message_id"] or r["error"] or "")
    return table


@app.command()
def report(campaign_id: str = typer.Argument(..., metavar="ID"), as_json: bool = JSON_OPT) -> None:
    """One row per lead with its final outcome."""

    async def go() -> None:
        rows = await manager().report(campaign_id)
        if as_json:
            emit_json(rows)
        else:
            out.print(report_table(rows))

    run(go())


@app.command()
def audit(
    campaign_id: str = typer.Argument(..., metavar="ID"),
    lead: str | None = typer.Option(None, "--lead", help="Only this lead's trail."),
    as_json: bool = JSON_OPT,
) -> None:
    """The trail of agent steps and decisions, with provenance."""

    async def go() -> None:
        mgr = manager()
        await mgr.report(campaign_id)  # raises NotFound for an unknown campaign
        rows = await mgr.store.audit(campaign_id, lead)
        if as_json:
            emit_json(rows)
            return
        table = Table("time", "lead", "agent", "records", "sources")
        for r in rows:
            recs = r["envelope"]["records"]
            table.add_row(r["created_at"][:19], r["lead_id"] or "", r["agent"], str(len(recs)),
                          ", ".join(sorted({x["provenance"]["source"] for x in recs}))[:80])
        out.print(table)

    run(go())


@app.command()
def suppress(emails: list[str] = typer.Argument(..., metavar="EMAIL...")) -> None:
    """Add addresses to the suppression list (never sent to, in any campaign)."""
    from campaign_core.leads import valid_email

    try:
        addresses = [valid_email(e) for e in emails]
    except ValueError as exc:
        fail(2, f"suppress: {exc}; nothing was added")

    async def go() -> int:
        store = open_store(load_settings())
        try:
            return await store.add_suppressions(addresses, "manual")
        finally:
            await store.close()

    added = run(go())
    err.print(f"{added} address(es) added to the suppression list ({len(emails) - added} already there)")


async def migrate_store(settings: Settings) -> tuple[str, int, int]:
    """Bring the configured store to the code's schema: (store, version before, after)."""
    store = open_store(settings)
    try:
        before = await store.schema_version()
        return repr(store), before, await store.migrate()
    finally:
        await store.close()


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the SQL migrations to the configured store (SQLite or PostgreSQL)."""
    where, before, after = run(migrate_store(load_settings()))
    change = "already up to date" if before == after else f"migrated from version {before}"
    err.print(f"{where}: schema version {after} ({change})", highlight=False)


@app.command()
@with_logging
def demo(
    auto_approve: bool = typer.Option(False, "--auto-approve", help="Approve without asking."),
    leads: int = typer.Option(12, "--leads", min=1, max=5000, help="How many sample leads."),
) -> None:
    """Embedded stack + sample leads + knowledge base, end to end into the outbox."""
    from starter.demo import run_demo

    run(run_demo(load_settings(), auto_approve=auto_approve, n_leads=leads))


def main() -> None:
    app()


# -- commands kept in their own modules --------------------------------------------------------

from starter import cmd_codec, cmd_forget, cmd_schedule  # noqa: E402  (after `app` exists)

for _module in (cmd_forget, cmd_schedule, cmd_codec):
    _module.register(app)
