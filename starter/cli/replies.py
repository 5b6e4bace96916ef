"""`campaign replies ID` (what came back to a campaign) and `campaign replies poll` (read
the IMAP reply mailbox once, as its schedule does)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from campaign_core.settings import load_settings
from starter.cli.app import JsonFlag, emit_json, err, manager, out, run, shown, with_logging
from starter.manager import BadInput, NotFound

#: The word that makes `campaign replies` poll instead of listing a campaign.
POLL = "poll"
#: Lines of a reply's text shown in the table (`--json` has all that is stored).
LINES_SHOWN = 3


@with_logging
def replies(
    target: Annotated[str, typer.Argument(
        metavar="ID|poll", help="A campaign id: list its replies. `poll`: read the reply "
        "mailbox (CAMPAIGN_IMAP_URL) once.")],
    as_json: JsonFlag = False,
) -> None:
    """The replies to a campaign: lead, time, kind (reply, auto_reply, bounce) and their
    first lines; or `campaign replies poll`, one pass over the IMAP reply mailbox."""
    if target == POLL:
        poll(as_json)
    else:
        list_replies(target, as_json)


def list_replies(campaign_id: str, as_json: bool) -> None:
    async def go() -> None:
        mgr = manager()
        try:
            if await mgr.store.get_campaign(campaign_id) is None:
                raise NotFound(f"unknown campaign {campaign_id!r}")
            rows = await mgr.store.list_replies(campaign_id)
        finally:
            await mgr.close()
        if as_json:
            emit_json([r.model_dump() for r in rows])
            return
        table = Table("time", "lead", "email", "kind", "step", "first lines")
        for column in table.columns:
            column.overflow = "fold"
        for r in rows:
            lines = "\n".join(r.text.splitlines()[:LINES_SHOWN])
            table.add_row(shown(r.received_at[:19]), shown(r.lead_id or ""), shown(r.email),
                          shown(r.kind), shown(r.step or ""), shown(lines, multiline=True))
        out.print(table)
        err.print(f"{len(rows)} repl{'y' if len(rows) == 1 else 'ies'}", highlight=False)

    run(go())


def poll(as_json: bool) -> None:
    from starter.replies import poll_by_hand

    async def go() -> None:
        settings = load_settings()
        mgr = manager(settings)
        try:
            client = await mgr.client()  # before the mailbox: replies are signalled at once
            try:
                report = await poll_by_hand(settings, mgr.store, client)
            except ValueError as exc:
                raise BadInput(str(exc)) from exc
        finally:
            await mgr.close()
        if as_json:
            emit_json(report.model_dump())
            return
        kinds = [r.kind for r in report.results]
        unmatched = [r for r in report.results if r.status == "unmatched"]
        out.print(f"{report.processed} new message(s) in {shown(report.mailbox)}: "
                  f"{kinds.count('reply')} replies, {kinds.count('auto_reply')} automatic, "
                  f"{kinds.count('bounce')} bounces, {len(unmatched)} unmatched"
                  + (" (more waiting: poll again)" if report.more else ""), highlight=False)
        for r in report.results:
            for match in r.matches:
                out.print(f"  {shown(r.kind)}: campaign {shown(match.campaign_id)}, lead "
                          f"{shown(match.lead_id)} (by {shown(match.matched_by)})"
                          + (", already recorded" if match.duplicate else ""), highlight=False)
        for r in unmatched:
            out.print(f"  {shown(r.kind)}: matched no lead ({shown(r.message_id)})",
                      highlight=False)

    run(go())
