"""Commands on one campaign: start, add-leads, status, drafts, edit, exclude, include,
approve, reject, pause, resume, cancel, report, audit (all through `CampaignManager`)."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from campaign_core.budget import usd
from campaign_core.leads import SMTPUTF8_WARNING, Utf8Address, read_leads_file
from campaign_core.models import Channel
from campaign_core.overlap import SkippedLead
from starter.cli.app import (
    AllowOverlap,
    ApprovalTimeout,
    BriefFile,
    BriefText,
    BudgetUsd,
    CampaignId,
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
    fail,
    manager,
    out,
    read_body_file,
    read_brief,
    report_table,
    run,
    shown,
    with_logging,
)
from starter.manager import campaign_id_for
from starter.start_options import DEFAULT_APPROVAL_TIMEOUT, DEFAULT_DOMAIN_LIMIT, CampaignOptions


def warn_smtputf8(leads: Path, addresses: list[Utf8Address]) -> None:
    """Name the accepted addresses that are not ASCII before the @: valid, but an SMTP
    server that does not offer SMTPUTF8 cannot take them (their send then fails)."""
    for a in addresses:
        err.print(f"[yellow]{shown(leads)}: row {a.row}: {shown(a.email)}: {SMTPUTF8_WARNING}[/]",
                  highlight=False)


#: How a skipped lead's reason is said (`leads_skipped` in --json has the reason's name).
SKIP_REASONS = {"active_sequence": "in the sequence still going on of campaign",
                "replied": "replied within CAMPAIGN_REPLY_COOLDOWN to campaign"}


def tell_skipped(skipped: list[SkippedLead]) -> None:
    """Name each person left out, and why (--allow-overlap keeps them)."""
    for s in skipped:
        err.print(f"[yellow]{shown(s.email)}: skipped: {SKIP_REASONS[s.reason]} "
                  f"{shown(s.campaign_id)}[/]", highlight=False)
    if skipped:
        err.print(f"[yellow]{len(skipped)} lead(s) skipped; --allow-overlap keeps them[/]",
                  highlight=False)


@with_logging
def start(
    leads: LeadsFile,
    name: Annotated[str | None, typer.Option(help="Campaign name (default: the file's name).")] = None,
    brief: BriefText = None,
    brief_file: BriefFile = None,
    kb: KbDir = None,
    channel: ChannelOption = Channel.OUTBOX,
    campaign_id: Annotated[str | None, typer.Option(
        "--id", help="Idempotent campaign id: the same start again returns the campaign; an id "
        "taken with other options, or without a workflow, is refused (exit 2).")] = None,
    approval_timeout: ApprovalTimeout = DEFAULT_APPROVAL_TIMEOUT,
    send_window: SendWindowOption = None,
    timezone: Annotated[str, typer.Option("--timezone", help="Zone for leads without one.")] = "UTC",
    domain_limit: DomainLimit = DEFAULT_DOMAIN_LIMIT,
    send_rate: SendRate = None,
    follow_up: FollowUpOption = None,
    stop_on_company_reply: StopOnCompanyReply = False,
    budget_usd: BudgetUsd = None,
    allow_overlap: AllowOverlap = False,
    senders: SendersOption = None,
    strict_senders: StrictSenders = False,
    as_json: JsonFlag = False,
) -> None:
    """Validate the leads, start one campaign, return at once. People in another campaign's
    sequence still going on, or who replied within CAMPAIGN_REPLY_COOLDOWN, are skipped
    unless --allow-overlap. The leads are spread over the senders (all active ones, or
    --senders); a chosen sender failing its DNS check is a warning (--strict-senders
    refuses)."""
    options = build_options(
        CampaignOptions, brief=read_brief(brief, brief_file), kb=kb, channel=channel,
        approval_timeout=approval_timeout, timezone=timezone, send_window=send_window,
        domain_limit=domain_limit, send_rate=send_rate, follow_ups=follow_up or [],
        stop_on_company_reply=stop_on_company_reply, budget_usd=budget_usd,
        allow_overlap=allow_overlap, senders=senders, strict_senders=strict_senders)

    async def go() -> None:
        mgr = manager()
        cname = name or leads.stem
        cid = campaign_id_for(cname, campaign_id)
        intake = read_leads_file(leads, cid)
        for rej in intake.rejected:
            err.print(f"[yellow]{shown(leads)}: row {rej.row}: {shown(rej.error)}[/]",
                      highlight=False)
        result = await mgr.start(intake, options, name=cname, campaign_id=cid)
        warn_smtputf8(leads, result.leads_needing_smtputf8)
        tell_warnings(result.warnings)
        if as_json:
            emit_json(result.to_json())
            return
        tell_skipped(result.leads_skipped)
        verb = "already running" if result.already_running else "started"
        skipped = f", {len(result.leads_skipped)} skipped" if result.leads_skipped else ""
        out.print(f"Campaign [bold]{shown(result.campaign_id)}[/] {verb}: "
                  f"{result.leads_accepted} leads accepted, {len(result.leads_rejected)} rejected"
                  f"{skipped}", highlight=False)
        if result.senders:
            out.print(f"Senders: {shown(', '.join(result.senders))}", highlight=False)
        out.print(f"Watch it: {shown(result.ui_url)}", highlight=False)

    run(go())


def tell_warnings(warnings: list[str]) -> None:
    """What a start went on despite (a chosen sender failing its DNS check), on stderr."""
    for line in warnings:
        err.print(f"[yellow]warning: {shown(line)}[/]", highlight=False)
    if any("check failed" in line for line in warnings):
        err.print("[yellow]`campaign sender check NAME` says what to publish; --strict-senders "
                  "refuses such a start[/]", highlight=False)


@with_logging
def add_leads(campaign_id: CampaignId, leads: LeadsFile, allow_overlap: AllowOverlap = False,
              as_json: JsonFlag = False) -> None:
    """Add leads to a campaign that is still drafting (people in another active sequence or
    who replied within the cooldown are skipped unless --allow-overlap)."""

    async def go() -> None:
        intake = read_leads_file(leads, campaign_id)
        for rej in intake.rejected:
            err.print(f"[yellow]{shown(leads)}: row {rej.row}: {shown(rej.error)}[/]",
                      highlight=False)
        result = await manager().add_leads(campaign_id, intake, allow_overlap=allow_overlap)
        warn_smtputf8(leads, result.leads_needing_smtputf8)
        if as_json:
            emit_json(result.to_json())
            return
        tell_skipped(result.leads_skipped)
        skipped = f", {len(result.leads_skipped)} skipped" if result.leads_skipped else ""
        out.print(f"Campaign [bold]{shown(campaign_id)}[/]: {result.leads_accepted} leads added, "
                  f"{result.leads_already_present} already in it, "
                  f"{len(result.leads_rejected)} rejected{skipped}", highlight=False)

    run(go())


def status(
    campaign_id: CampaignId,
    as_json: JsonFlag = False,
    watch: Annotated[bool, typer.Option(
        "--watch", help="Follow the campaign until it waits for approval or ends "
        "(with --json: one JSON document per change).")] = False,
    interval: Annotated[float, typer.Option(
        "--interval", min=0.1, help="Seconds between looks with --watch.")] = 1.0,
) -> None:
    """Progress of one campaign."""
    if watch:
        from starter.cli.watch import watch_json, watch_progress

        if as_json:
            run(watch_json(manager(), campaign_id, interval))
        else:
            run(watch_progress(manager(), campaign_id, interval, out))
        return

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
        from starter.cli.watch import by_intent, positive_rate

        if st.replies_by_intent:
            out.print(f"  {'replies':<13} {by_intent(st)}", highlight=False)
        if st.positive_reply_rate is not None:
            first = next((s.sent for s in st.steps if s.step == 1), 0)
            positive = sum(s.positive_replies for s in st.steps)
            out.print(f"  {'positive rate':<13} {positive_rate(st)} ({positive} positive "
                      f"of {first} first steps sent)", highlight=False)
        if len(st.steps) > 1:
            out.print(f"  {'steps':<13} " + " · ".join(
                f"{s.step}: sent {s.sent}, positive {s.positive_replies}" for s in st.steps),
                highlight=False)
        if st.waiting_for_capacity:
            from starter.cli.watch import capacity_wait

            out.print(f"  {'senders':<13} {capacity_wait(st)}", highlight=False)
        for name, why in st.paused_senders.items():
            out.print(f"  {'paused sender':<13} {shown(name)}: {shown(why)}", highlight=False)
        cap = f" of {usd(st.budget_usd)}" if st.budget_usd is not None else ""
        out.print(f"  {'LLM spend':<13} {shown(usd(st.spend_usd or 0.0) + cap)}",
                  highlight=False)
        if st.writer == "offline":
            out.print(f"  {'writer':<13} offline templates (no LLM configured: set "
                      "OPENAI_API_KEY for an LLM)", highlight=False)
        elif st.writer:
            out.print(f"  {'writer':<13} {shown(st.writer)}", highlight=False)
        if st.paused_reason:
            out.print(f"[yellow]{shown(st.paused_reason, multiline=True)}[/]", highlight=False)
        if st.error:
            out.print(f"[red]error:[/] {shown(st.error, multiline=True)}", highlight=False)

    run(go())


def os_user() -> str:
    """Who runs the command, for `--by`: the OS user name."""
    try:
        return getpass.getuser() or "cli"
    except (OSError, KeyError):  # no user name in the environment or the password database
        return "cli"


By = Annotated[str | None, typer.Option("--by", help="Who acts (default: the OS user name).")]
LeadOption = Annotated[str, typer.Option("--lead", help="The lead's id (see `campaign drafts`).")]
StepOption = Annotated[int, typer.Option("--step", min=1, help="The sequence step (1: the first message).")]


def drafts(
    campaign_id: CampaignId,
    page: Annotated[int, typer.Option("--page", min=1, help="Which page (from 1).")] = 1,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Drafts a page.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """The drafts waiting for review, a page at a time."""

    async def go() -> None:
        rows = await manager().drafts(campaign_id, page=page, limit=limit)
        if as_json:
            emit_json([d.model_dump() for d in rows])
            return
        for d in rows:
            flags = (f"  step {d.step} · version {d.version}"
                     + (f" · edited by {shown(d.edited_by)}" if d.edited_by else "")
                     + (" · [yellow]excluded[/]" if d.excluded else ""))
            out.rule(f"{shown(d.lead_id)}  {shown(d.email)}{flags}")
            out.print(f"[bold]Subject:[/] {shown(d.subject)}", highlight=False)
            out.print(shown(d.body, multiline=True), highlight=False)
            if d.citations:
                cited = ", ".join(shown(c) for c in d.citations)
                out.print(f"[dim]citations: {cited}[/]", highlight=False)
        out.print(f"{len(rows)} drafts on page {page}"
                  + (f" (next: --page {page + 1})" if len(rows) == limit else ""))

    run(go())


@with_logging
def edit(
    campaign_id: CampaignId,
    lead: LeadOption,
    step: StepOption = 1,
    subject: Annotated[str | None, typer.Option("--subject", help="The new subject.")] = None,
    body_file: Annotated[Path | None, typer.Option(
        "--body-file", help="A UTF-8 file holding the new body ('-': standard input).")] = None,
    by: By = None,
    as_json: JsonFlag = False,
) -> None:
    """Edit a draft while the campaign awaits approval: a new version, checked by the guardrails."""
    body = read_body_file(body_file)
    if subject is None and body is None:
        fail(2, "give --subject, --body-file, or both")
    view = run(manager().edit_draft(campaign_id, lead, step=step, subject=subject, body=body,
                                    by=by or os_user()))
    if as_json:
        emit_json(view.model_dump())
        return
    err.print(f"Draft of {shown(lead)} (step {view.step}) is now version {view.version}.",
              highlight=False)


def _exclusion(campaign_id: str, lead: str, step: int | None, by: str | None, excluded: bool,
               as_json: bool) -> None:
    view = run(manager().set_excluded(campaign_id, lead, excluded=excluded, step=step,
                                      by=by or os_user()))
    if as_json:
        emit_json(view.model_dump())
        return
    what = "excluded from" if excluded else "included in"
    err.print(f"Lead {shown(lead)} is {what} the approval of {shown(campaign_id)}.",
              highlight=False)


def exclude(
    campaign_id: CampaignId, lead: LeadOption,
    step: Annotated[int | None, typer.Option("--step", min=1, help="Only this step "
                                             "(default: every step).")] = None,
    by: By = None, as_json: JsonFlag = False,
) -> None:
    """Leave a lead's draft out: "approve" will not approve it, so it is not sent."""
    _exclusion(campaign_id, lead, step, by, True, as_json)


def include(
    campaign_id: CampaignId, lead: LeadOption,
    step: Annotated[int | None, typer.Option("--step", min=1, help="Only this step "
                                             "(default: every step).")] = None,
    by: By = None, as_json: JsonFlag = False,
) -> None:
    """Put an excluded lead's draft back into the approval."""
    _exclusion(campaign_id, lead, step, by, False, as_json)


def approve(
    campaign_id: CampaignId,
    lead: Annotated[list[str] | None, typer.Option("--lead", help="Approve only these lead ids.")] = None,
    by: By = None,
    note: Annotated[str | None, typer.Option("--note")] = None,
    send_passing: Annotated[bool, typer.Option(
        "--send-passing", help="With --lead: send the passing steps of leads that have a "
        "failed step (that step ends `failed`).")] = False,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Do not ask for confirmation at a terminal when leads are held.")
    ] = False,
) -> None:
    """Approve every draft not excluded, or only the listed leads (the rest are not sent).

    A lead with a failed step is held: it is not approved (its rows end `not_approved`)
    unless the step is fixed with `campaign edit`, or the lead is named with --lead and
    --send-passing. The answer names the held leads."""
    if send_passing and not lead:
        raise typer.BadParameter("--send-passing needs the leads it applies to (--lead)",
                                 param_hint="--send-passing")

    async def go() -> tuple[int, list[str]]:
        m = manager()
        if not lead and not yes and sys.stdin.isatty():
            waiting = await m.held_leads(campaign_id)
            if waiting:  # a person at a terminal confirms, knowing who will not be sent
                more = " ..." if len(waiting) > 50 else ""
                err.print(f"[yellow]{len(waiting)} lead(s) have a failed step and will not be "
                          f"sent: {shown(', '.join(waiting[:50]))}{more}[/]", highlight=False)
                if not typer.confirm("Approve the other leads?", default=False, err=True):
                    raise typer.Exit(1)
        approved = await m.approve(campaign_id, lead_ids=lead or None, by=by or os_user(),
                                   note=note, send_passing=send_passing)
        return approved, await m.held_leads(campaign_id)

    approved, held = run(go())
    if lead:
        held = [h for h in held if h in set(lead)]
    if approved:
        err.print(f"Approved {approved} lead(s) of {shown(campaign_id)}; delivery starts now.")
    else:
        err.print(f"Approved no lead of {shown(campaign_id)}: nothing will be sent.")
    if held:
        err.print(f"[yellow]Held, not sent ({len(held)} lead(s) with a failed step): "
                  f"{shown(', '.join(held[:50]))}{' ...' if len(held) > 50 else ''}. Fix a "
                  "failed step with `campaign edit`, or name the lead with --lead and "
                  "--send-passing before deciding.[/]", highlight=False)


def reject(
    campaign_id: CampaignId,
    reason: Annotated[str | None, typer.Option("--reason")] = None,
    by: By = None,
) -> None:
    """Reject the campaign: nothing is sent."""
    run(manager().reject(campaign_id, by=by or os_user(), reason=reason))
    err.print(f"Rejected {shown(campaign_id)}: nothing will be sent.")


def pause(campaign_id: CampaignId) -> None:
    """Hold a campaign: no new lead is drafted and nothing is sent until resumed."""
    run(manager().control(campaign_id, "pause"))
    err.print(f"Paused {shown(campaign_id)}: what is in flight finishes, nothing new starts.")


def resume(
    campaign_id: CampaignId,
    budget_usd: Annotated[float | None, typer.Option(
        "--budget-usd", help="Set the LLM budget (USD) first: drafting paused by the budget "
        "goes on. Refused below what is already spent.")] = None,
) -> None:
    """Continue a paused campaign (with --budget-usd: under a new LLM spend cap)."""
    run(manager().control(campaign_id, "resume", budget_usd=budget_usd))
    cap = f" with an LLM budget of {usd(budget_usd)}" if budget_usd is not None else ""
    err.print(f"Resumed {shown(campaign_id)}{cap}.")


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
        rows = await manager().audit(campaign_id, lead)  # NotFound for an unknown campaign
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
