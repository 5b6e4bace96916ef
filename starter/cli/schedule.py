"""`campaign schedule ...`: recurring campaigns on Temporal Schedules.

The command line over `starter.schedules.ScheduleManager`: create, list, pause, resume,
trigger, delete.
"""

from __future__ import annotations

from typing import Annotated

import typer

from campaign_core.leads import read_leads_file
from campaign_core.models import Channel
from campaign_core.settings import load_settings
from starter.cli.app import (
    AllowOverlap,
    ApprovalTimeout,
    BriefFile,
    BriefText,
    BudgetUsd,
    ChannelOption,
    DomainLimit,
    FollowUpOption,
    JsonFlag,
    KbDir,
    LeadsFile,
    SendersOption,
    SendRate,
    SendWindowOption,
    StopOnCompanyReply,
    StrictSenders,
    build_options,
    emit_json,
    err,
    folded_table,
    out,
    read_brief,
    run,
    shown,
)
from starter.cli.campaigns import tell_warnings
from starter.manager import BadInput, Conflict, NotFound
from starter.schedules import ScheduleManager, template_id_for
from starter.start_options import DEFAULT_APPROVAL_TIMEOUT, DEFAULT_DOMAIN_LIMIT, ScheduleOptions

schedule_app = typer.Typer(
    help="Recurring campaigns on Temporal Schedules: each firing starts a new campaign "
         "(NAME-YYYYMMDD-HHMMSS) from the leads stored at creation.",
    no_args_is_help=True,
)

ScheduleName = Annotated[str, typer.Argument(metavar="NAME", help="The schedule's name.")]
TotalBudgetUsd = Annotated[float | None, typer.Option(
    "--total-budget-usd", help="Cap on what all the schedule's campaigns spend on the LLM "
    "together, in USD: each firing's campaign gets at most what is left, and once it is spent "
    "no firing starts a campaign and the schedule pauses.")]


#: What to do about a name that is not a schedule.
LISTED: dict[type[BadInput], str] = {NotFound: "see `campaign schedule list`"}


def _manager() -> ScheduleManager:
    return ScheduleManager(load_settings())


def _when(values: list[str]) -> str:
    return ", ".join(v[:16].replace("T", " ") + " UTC" for v in values) or "none (paused)"


@schedule_app.command("create")
def create(
    name: ScheduleName,
    cron: Annotated[str, typer.Option("--cron", help="When to fire, e.g. '0 9 * * MON' (UTC unless "
                                      "--cron-timezone); @daily, @weekly and '@every 24h' work too; "
                                      "at most once every CAMPAIGN_SCHEDULE_MIN_INTERVAL (1h).")],
    leads: LeadsFile,
    cron_timezone: Annotated[str, typer.Option(
        "--cron-timezone", help="IANA zone the cron expression is read in.")] = "UTC",
    brief: BriefText = None,
    brief_file: BriefFile = None,
    kb: KbDir = None,
    channel: ChannelOption = Channel.OUTBOX,
    approval_timeout: ApprovalTimeout = DEFAULT_APPROVAL_TIMEOUT,
    send_window: SendWindowOption = None,
    timezone: Annotated[str, typer.Option(
        "--timezone", help="Send-window zone for leads without one.")] = "UTC",
    domain_limit: DomainLimit = DEFAULT_DOMAIN_LIMIT,
    send_rate: SendRate = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused (resume to start).")] = False,
    follow_up: FollowUpOption = None,
    stop_on_company_reply: StopOnCompanyReply = False,
    budget_usd: BudgetUsd = None,
    total_budget_usd: TotalBudgetUsd = None,
    allow_overlap: AllowOverlap = False,
    senders: SendersOption = None,
    strict_senders: StrictSenders = False,
    as_json: JsonFlag = False,
) -> None:
    """Store the leads once and fire a new campaign from them on every cron tick. Each
    firing skips the people in another campaign's sequence still going on, or who replied
    within CAMPAIGN_REPLY_COOLDOWN, unless --allow-overlap. Every firing uses the senders
    chosen now (--senders, or every active one at creation)."""
    options = build_options(
        ScheduleOptions, cron=cron, cron_timezone=cron_timezone, paused=paused,
        total_budget_usd=total_budget_usd, brief=read_brief(brief, brief_file), kb=kb,
        channel=channel, approval_timeout=approval_timeout, timezone=timezone,
        send_window=send_window, domain_limit=domain_limit, send_rate=send_rate,
        follow_ups=follow_up or [], stop_on_company_reply=stop_on_company_reply,
        budget_usd=budget_usd, allow_overlap=allow_overlap, senders=senders,
        strict_senders=strict_senders)

    async def go() -> None:
        mgr = _manager()
        try:
            template_id = template_id_for(name)
            intake = read_leads_file(leads, template_id)
            for rej in intake.rejected:
                err.print(f"[yellow]{shown(leads)}: row {rej.row}: {shown(rej.error)}[/]",
                          highlight=False)
            result = await mgr.create(name, intake, options, template_id=template_id,
                                      source=leads.name)
        finally:
            await mgr.close()
        data = result.to_json()
        tell_warnings(result.warnings)
        if as_json:
            emit_json(data)
            return
        state = "created paused" if result.paused else "created"
        out.print(f"Schedule [bold]{shown(result.name)}[/] {state}: {result.leads_accepted} leads "
                  f"accepted, {len(result.leads_rejected)} rejected; cron {shown(repr(result.cron))} "
                  f"({shown(result.timezone)})", highlight=False)
        out.print(f"Next runs: {shown(_when(data['next_runs']))}", highlight=False)
        out.print(f"Watch it: {shown(result.ui_url)}", highlight=False)

    run(go(), hints={Conflict: f"`campaign schedule delete {name}` deletes it"})


@schedule_app.command("list")
def list_(as_json: JsonFlag = False) -> None:
    """Every recurring campaign: cron, paused, next runs and the campaigns it started."""
    summaries = run(_manager().list())
    if as_json:
        emit_json([s.to_json() for s in summaries])
        return
    if not summaries:
        out.print("No schedules. Create one with `campaign schedule create NAME --cron ... "
                  "--leads FILE`.")
        return
    table = folded_table("name", "cron", "state", "leads", "next runs", "recent campaigns")
    for s in summaries:
        data = s.to_json()
        state = "paused" + (f" ({s.note})" if s.note else "") if s.paused else "active"
        table.add_row(shown(s.name), shown(f"{s.cron} ({s.timezone})"), shown(state),
                      "" if s.leads is None else shown(s.leads), shown(_when(data["next_runs"][:2])),
                      shown(", ".join(s.recent_campaigns[:3]) or "none yet"))
    out.print(table)


@schedule_app.command("pause")
def pause(
    name: ScheduleName,
    note: Annotated[str | None, typer.Option("--note", help="Why (shown in list and the UI).")] = None,
) -> None:
    """Stop firing until resumed; campaigns already started go on."""
    run(_manager().pause(name, note or "paused by `campaign schedule pause`"), hints=LISTED)
    err.print(f"Paused schedule {shown(name)}: no new campaign starts until "
              f"`campaign schedule resume {shown(name)}`.", highlight=False)


@schedule_app.command("resume")
def resume(name: ScheduleName) -> None:
    """Fire again on the schedule's cron."""
    run(_manager().resume(name, "resumed by `campaign schedule resume`"), hints=LISTED)
    err.print(f"Resumed schedule {shown(name)}.", highlight=False)


@schedule_app.command("trigger")
def trigger(name: ScheduleName) -> None:
    """Fire once now (even while paused): one new campaign from the schedule's leads."""
    run(_manager().trigger(name), hints=LISTED)
    err.print(f"Triggered schedule {shown(name)}: a new campaign starts now (see `campaign schedule "
              "list`).", highlight=False)


@schedule_app.command("delete")
def delete(name: ScheduleName) -> None:
    """Delete the schedule; the campaigns it started go on."""
    run(_manager().delete(name), hints=LISTED)
    err.print(f"Deleted schedule {shown(name)}; the campaigns it started are not affected.",
              highlight=False)
