"""Commands on one campaign: start, add-leads, status, drafts, approve, reject, pause,
resume, cancel, report, audit (all through `CampaignManager`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from campaign_core.leads import read_leads_file
from campaign_core.models import Channel
from starter.cli.app import (
    ApprovalTimeout,
    BriefFile,
    BriefText,
    CampaignId,
    ChannelOption,
    DomainLimit,
    FollowUpOption,
    JsonFlag,
    KbDir,
    LeadsFile,
    SendWindowOption,
    StopOnCompanyReply,
    brief_and_window,
    emit_json,
    err,
    manager,
    out,
    report_table,
    run,
    shown,
    with_logging,
)
from starter.manager import campaign_id_for, follow_up_delays, parse_duration


@with_logging
def start(
    leads: LeadsFile,
    name: Annotated[str | None, typer.Option(help="Campaign name (default: the file's name).")] = None,
    brief: BriefText = None,
    brief_file: BriefFile = None,
    kb: KbDir = None,
    channel: ChannelOption = Channel.OUTBOX,
    campaign_id: Annotated[str | None, typer.Option("--id", help="Idempotent campaign id.")] = None,
    approval_timeout: ApprovalTimeout = "72h",
    send_window: SendWindowOption = None,
    timezone: Annotated[str, typer.Option("--timezone", help="Zone for leads without one.")] = "UTC",
    domain_limit: DomainLimit = 20,
    send_rate: Annotated[float | None, typer.Option(
        "--send-rate", min=0.001, help="This campaign's sends per second.")] = None,
    follow_up: FollowUpOption = None,
    stop_on_company_reply: StopOnCompanyReply = False,
    as_json: JsonFlag = False,
) -> None:
    """Validate the leads, start one campaign, return at once."""
    brief, window = brief_and_window(brief, brief_file, send_window, timezone)

    async def go() -> None:
        mgr = manager()
        timeout = parse_duration(approval_timeout)
        delays = follow_up_delays(follow_up)
        cname = name or leads.stem
        cid = campaign_id_for(cname, campaign_id)
        intake = read_leads_file(leads, cid)
        for rej in intake.rejected:
            err.print(f"[yellow]{shown(leads)}: row {rej.row}: {shown(rej.error)}[/]",
                      highlight=False)
        result = await mgr.start(
            intake, name=cname, brief=brief or "", kb_dir=kb, channel=channel,
            campaign_id=cid, approval_timeout_seconds=timeout, send_window=window,
            domain_limit_per_minute=domain_limit, send_rate_per_second=send_rate,
            follow_up_seconds=delays, stop_on_company_reply=stop_on_company_reply,
        )
        if as_json:
            emit_json(result.to_json())
            return
        verb = "already running" if result.already_running else "started"
        out.print(f"Campaign [bold]{shown(result.campaign_id)}[/] {verb}: "
                  f"{result.leads_accepted} leads accepted, {len(result.leads_rejected)} rejected",
                  highlight=False)
        out.print(f"Watch it: {shown(result.ui_url)}", highlight=False)

    run(go())


@with_logging
def add_leads(campaign_id: CampaignId, leads: LeadsFile, as_json: JsonFlag = False) -> None:
    """Add leads to a campaign that is still drafting."""

    async def go() -> None:
        intake = read_leads_file(leads, campaign_id)
        for rej in intake.rejected:
            err.print(f"[yellow]{shown(leads)}: row {rej.row}: {shown(rej.error)}[/]",
                      highlight=False)
        result = await manager().add_leads(campaign_id, intake)
        if as_json:
            emit_json(result.to_json())
            return
        out.print(f"Campaign [bold]{shown(campaign_id)}[/]: {result.leads_accepted} leads added, "
                  f"{result.leads_already_present} already in it, "
                  f"{len(result.leads_rejected)} rejected", highlight=False)

    run(go())


def status(campaign_id: CampaignId, as_json: JsonFlag = False) -> None:
    """Progress of one campaign."""

    async def go() -> None:
        st = await manager().status(campaign_id)
        if as_json:
            emit_json(st.model_dump(mode="json"))
            return
        paused = " [yellow](paused)[/]" if st.paused else ""
        out.print(f"[bold]{shown(st.campaign_id)}[/]: {shown(st.stage.value)}{paused}",
                  highlight=False)
        for key, value in st.counts.model_dump().items():
            out.print(f"  {shown(key):<13} {shown(value)}", highlight=False)
        if st.paused_reason:
            out.print(f"[yellow]{shown(st.paused_reason, multiline=True)}[/]", highlight=False)
        if st.error:
            out.print(f"[red]error:[/] {shown(st.error, multiline=True)}", highlight=False)

    run(go())


def drafts(campaign_id: CampaignId, as_json: JsonFlag = False) -> None:
    """The drafts waiting for review."""

    async def go() -> None:
        rows = await manager().drafts(campaign_id)
        if as_json:
            emit_json([d.model_dump() for d in rows])
            return
        for d in rows:
            out.rule(f"{shown(d.lead_id)}  {shown(d.email)}")
            out.print(f"[bold]Subject:[/] {shown(d.subject)}", highlight=False)
            out.print(shown(d.body, multiline=True), highlight=False)
            if d.citations:
                cited = ", ".join(shown(c) for c in d.citations)
                out.print(f"[dim]citations: {cited}[/]", highlight=False)
        out.print(f"{len(rows)} drafts")

    run(go())


def approve(
    campaign_id: CampaignId,
    lead: Annotated[list[str] | None, typer.Option("--lead", help="Approve only these lead ids.")] = None,
    by: Annotated[str, typer.Option("--by", help="Who approves.")] = "cli",
    note: Annotated[str | None, typer.Option("--note")] = None,
) -> None:
    """Approve every draft, or only the listed leads (the rest are not sent)."""
    approved = run(manager().approve(campaign_id, lead_ids=lead or None, by=by, note=note))
    err.print(f"Approved {approved} draft(s) of {shown(campaign_id)}; delivery starts now.")


def reject(
    campaign_id: CampaignId,
    reason: Annotated[str | None, typer.Option("--reason")] = None,
    by: Annotated[str, typer.Option("--by", help="Who rejects.")] = "cli",
) -> None:
    """Reject the campaign: nothing is sent."""
    run(manager().reject(campaign_id, by=by, reason=reason))
    err.print(f"Rejected {shown(campaign_id)}: nothing will be sent.")


def pause(campaign_id: CampaignId) -> None:
    """Hold a campaign: no new lead is drafted and nothing is sent until resumed."""
    run(manager().control(campaign_id, "pause"))
    err.print(f"Paused {shown(campaign_id)}: what is in flight finishes, nothing new starts.")


def resume(campaign_id: CampaignId) -> None:
    """Continue a paused campaign."""
    run(manager().control(campaign_id, "resume"))
    err.print(f"Resumed {shown(campaign_id)}.")


def cancel(campaign_id: CampaignId) -> None:
    """Stop a campaign: nothing further is drafted or sent."""
    run(manager().control(campaign_id, "cancel"))
    err.print(f"Cancelling {shown(campaign_id)}: nothing further will be sent.")


def report(campaign_id: CampaignId, as_json: JsonFlag = False) -> None:
    """One row per lead with its final outcome."""

    async def go() -> None:
        rows = await manager().report(campaign_id)
        if as_json:
            emit_json([r.model_dump() for r in rows])
        else:
            out.print(report_table(rows))

    run(go())


def audit(
    campaign_id: CampaignId,
    lead: Annotated[str | None, typer.Option("--lead", help="Only this lead's trail.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The trail of agent steps and decisions, with provenance."""

    async def go() -> None:
        mgr = manager()
        await mgr.report(campaign_id)  # raises NotFound for an unknown campaign
        rows = await mgr.store.audit(campaign_id, lead)
        if as_json:
            emit_json([r.model_dump() for r in rows])
            return
        table = Table("time", "lead", "agent", "records", "sources")
        for r in rows:
            recs = r.envelope["records"]
            sources = ", ".join(sorted({str(x["provenance"]["source"]) for x in recs}))
            table.add_row(shown(str(r.created_at)[:19]), shown(r.lead_id or ""),
                          shown(r.agent), str(len(recs)), shown(sources[:80]))
        out.print(table)

    run(go())
