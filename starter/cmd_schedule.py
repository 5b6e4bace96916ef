"""`campaign schedule ...`: recurring campaigns on Temporal Schedules.

    campaign schedule create NAME --cron "0 9 * * MON" --leads FILE [--brief ...] [--json]
    campaign schedule list [--json]
    campaign schedule pause NAME | resume NAME | trigger NAME | delete NAME

The logic lives in `starter/schedules.py` (`ScheduleManager`); this module is the
command line over it. The helpers of `starter/cli.py` are imported inside the
commands, because `starter/cli.py` imports this module while it is being loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from campaign_core.models import Channel

if TYPE_CHECKING:
    from starter.schedules import ScheduleManager

schedule_app = typer.Typer(
    help="Recurring campaigns on Temporal Schedules: each firing starts a new campaign "
         "(NAME-YYYYMMDD-HHMMSS) from the leads stored at creation.",
    no_args_is_help=True,
)

_JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")
_NAME = typer.Argument(..., metavar="NAME", help="The schedule's name.")


def register(app: typer.Typer) -> None:
    """Add the `schedule` command group to the `campaign` app."""
    app.add_typer(schedule_app, name="schedule")


def _manager() -> ScheduleManager:
    from campaign_core.settings import load_settings
    from starter.schedules import ScheduleManager

    return ScheduleManager(load_settings())


def _when(values: list[str]) -> str:
    return ", ".join(v[:16].replace("T", " ") + " UTC" for v in values) or "none (paused)"


@schedule_app.command("create")
def create(
    name: str = _NAME,
    cron: str = typer.Option(..., "--cron", help="When to fire, e.g. '0 9 * * MON' (UTC unless "
                             "--cron-timezone); @daily, @weekly and '@every 24h' work too."),
    leads: Path = typer.Option(..., "--leads", help="CSV (with header) or JSON Lines file."),
    cron_timezone: str = typer.Option("UTC", "--cron-timezone",
                                      help="IANA zone the cron expression is read in."),
    brief: str | None = typer.Option(None, help="The brief, as text."),
    brief_file: Path | None = typer.Option(None, "--brief-file", help="The brief, from a file."),
    kb: Path | None = typer.Option(None, "--kb", help="Knowledge-base directory."),
    channel: Channel = typer.Option(Channel.OUTBOX, help="Delivery channel."),
    approval_timeout: str = typer.Option("72h", "--approval-timeout", help="e.g. 72h, 3d."),
    send_window: str | None = typer.Option(
        None, "--send-window", help="Send only then, in each lead's time zone: '09:00-17:00 Mon-Fri'."
    ),
    timezone: str = typer.Option("UTC", "--timezone", help="Send-window zone for leads without one."),
    domain_limit: int = typer.Option(20, "--domain-limit", min=1,
                                     help="At most this many sends a minute to one domain."),
    send_rate: float | None = typer.Option(None, "--send-rate", min=0.001,
                                           help="Each campaign's sends per second."),
    paused: bool = typer.Option(False, "--paused", help="Create it paused (resume to start)."),
    as_json: bool = _JSON,
) -> None:
    """Store the leads once and fire a new campaign from them on every cron tick."""
    from campaign_core.leads import read_leads_file
    from starter.cli import brief_and_window, emit_json, err, out, run
    from starter.manager import parse_duration
    from starter.schedules import template_id_for

    brief, window = brief_and_window(brief, brief_file, send_window, timezone)

    async def go() -> None:
        mgr = _manager()
        try:
            timeout = parse_duration(approval_timeout)
            template_id = template_id_for(name)
            intake = read_leads_file(leads, template_id)
            for rej in intake.rejected:
                err.print(f"[yellow]{leads}: row {rej.row}: {rej.error}[/]", highlight=False)
            result = await mgr.create(
                name, intake, template_id=template_id, cron=cron, cron_timezone=cron_timezone,
                brief=brief or "", kb_dir=kb, channel=channel, approval_timeout_seconds=timeout,
                send_window=window, domain_limit_per_minute=domain_limit,
                send_rate_per_second=send_rate, paused=paused, source=leads.name,
            )
        finally:
            await mgr.close()
        data = result.to_json()
        if as_json:
            emit_json(data)
            return
        state = "created paused" if result.paused else "created"
        out.print(f"Schedule [bold]{result.name}[/] {state}: {result.leads_accepted} leads accepted, "
                  f"{len(result.leads_rejected)} rejected; cron {result.cron!r} ({result.timezone})",
                  highlight=False)
        out.print(f"Next runs: {_when(data['next_runs'])}", highlight=False)
        out.print(f"Watch it: {result.ui_url}", highlight=False)

    run(go())


@schedule_app.command("list")
def list_(as_json: bool = _JSON) -> None:
    """Every recurring campaign: cron, paused, next runs and the campaigns it started."""
    from rich.table import Table

    from starter.cli import emit_json, out, run

    summaries = run(_manager().list())
    if as_json:
        emit_json([s.to_json() for s in summaries])
        return
    if not summaries:
        out.print("No schedules. Create one with `campaign schedule create NAME --cron ... "
                  "--leads FILE`.")
        return
    table = Table("name", "cron", "state", "leads", "next runs", "recent campaigns")
    for column in table.columns:
        column.overflow = "fold"
    for s in summaries:
        data = s.to_json()
        state = "paused" + (f" ({s.note})" if s.note else "") if s.paused else "active"
        table.add_row(s.name, f"{s.cron} ({s.timezone})", state,
                      "" if s.leads is None else str(s.leads), _when(data["next_runs"][:2]),
                      ", ".join(s.recent_campaigns[:3]) or "none yet")
    out.print(table)


@schedule_app.command("pause")
def pause(name: str = _NAME,
          note: str | None = typer.Option(None, "--note", help="Why (shown in list and the UI).")
          ) -> None:
    """Stop firing until resumed; campaigns already started go on."""
    from starter.cli import err, run

    run(_manager().pause(name, note))
    err.print(f"Paused schedule {name}: no new campaign starts until "
              f"`campaign schedule resume {name}`.", highlight=False)


@schedule_app.command("resume")
def resume(name: str = _NAME) -> None:
    """Fire again on the schedule's cron."""
    from starter.cli import err, run

    run(_manager().resume(name))
    err.print(f"Resumed schedule {name}.", highlight=False)


@schedule_app.command("trigger")
def trigger(name: str = _NAME) -> None:
    """Fire once now (even while paused): one new campaign from the schedule's leads."""
    from starter.cli import err, run

    run(_manager().trigger(name))
    err.print(f"Triggered schedule {name}: a new campaign starts now (see `campaign schedule "
              "list`).", highlight=False)


@schedule_app.command("delete")
def delete(name: str = _NAME) -> None:
    """Delete the schedule; the campaigns it started go on."""
    from starter.cli import err, run

    run(_manager().delete(name))
    err.print(f"Deleted schedule {name}; the campaigns it started are not affected.",
              highlight=False)
