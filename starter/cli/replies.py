"""`campaign replies ID` (what came back to a campaign), `campaign replies poll` (read
the IMAP reply mailbox once, as its schedule does) and `campaign replies confirm REPLY_ID`
(a person vouches for a reply matched by an address nobody vouched for)."""

from __future__ import annotations

from typing import Annotated

import typer

from campaign_core.settings import load_settings
from starter.cli.app import (
    JsonFlag,
    emit_json,
    err,
    fail,
    folded_table,
    manager,
    out,
    run,
    shown,
    with_logging,
)
from starter.cli.campaigns import By, os_user
from starter.manager import BadInput, NotFound

#: The word that makes `campaign replies` poll instead of listing a campaign.
POLL = "poll"
#: The word that makes `campaign replies` confirm the reply named next.
CONFIRM = "confirm"
#: Lines of a reply's text shown in the table (`--json` has all that is stored).
LINES_SHOWN = 3


@with_logging
def replies(
    target: Annotated[str, typer.Argument(
        metavar="ID|poll|confirm", help="A campaign id: list its replies. `poll`: read the "
        "reply mailbox (CAMPAIGN_IMAP_URL) once. `confirm REPLY_ID`: act on a reply "
        "recorded unverified.")],
    reply_id: Annotated[str | None, typer.Argument(
        metavar="[REPLY_ID]", help="With `confirm`: the reply's id (`replies ID --json`).")
    ] = None,
    as_json: JsonFlag = False,
    by: By = None,
) -> None:
    """The replies to a campaign: lead, time, kind (reply, auto_reply, bounce), whether it
    is verified, and their first lines; `campaign replies poll`, one pass over the IMAP
    reply mailbox; or `campaign replies confirm REPLY_ID`: a reply matched by its sender's
    address alone, with nothing vouching for the address (unverified), did nothing;
    confirming it does what it would have done (stop the sequence)."""
    if target == CONFIRM:
        if not reply_id:
            fail(2, "confirm: name the reply (REPLY_ID, from `replies ID --json`)")
        confirm(reply_id, by or os_user(), as_json)
        return
    if reply_id is not None:
        fail(2, f"unexpected argument {reply_id!r} (only `confirm` takes a REPLY_ID)")
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
        table = folded_table("time", "lead", "email", "kind", "step", "intent", "first lines")
        for r in rows:
            lines = "\n".join(r.text.splitlines()[:LINES_SHOWN])
            kind = r.kind if r.verified else f"{r.kind} (unverified: {r.reply_id})"
            # What the reply agent read and did; blank until it has read the reply.
            intent = f"{r.intent} → {r.action}" if r.intent and r.action else (r.intent or "")
            table.add_row(shown(r.received_at[:19]), shown(r.lead_id or ""), shown(r.email),
                          shown(kind), shown(r.step or ""), shown(intent),
                          shown(lines, multiline=True))
        out.print(table)
        unverified = sum(not r.verified for r in rows)
        err.print(f"{len(rows)} repl{'y' if len(rows) == 1 else 'ies'}"
                  + (f", {unverified} unverified (nothing done until `campaign replies "
                     "confirm REPLY_ID`)" if unverified else ""), highlight=False)

    run(go())


def confirm(reply_id: str, by: str, as_json: bool) -> None:
    from campaign_core.replies import NothingToConfirm, UnknownReply
    from starter.replies import confirm_reply

    async def go() -> None:
        mgr = manager()
        try:
            try:
                result = await confirm_reply(mgr.store, await mgr.client(), reply_id, by=by,
                                             prefix=mgr.queue_prefix)
            except UnknownReply as exc:
                raise NotFound(str(exc)) from exc
            except NothingToConfirm as exc:
                raise BadInput(str(exc)) from exc
        finally:
            await mgr.close()
        if as_json:
            emit_json(result.model_dump())
            return
        out.print(f"reply {shown(result.reply_id)} ({shown(result.kind)}, lead "
                  f"{shown(result.lead_id)} of campaign {shown(result.campaign_id)}): "
                  + ("confirmed" if result.confirmed else "was verified already")
                  + ("; the campaign was told" if result.notified else ""), highlight=False)

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
                  + (f", {kinds.count('unparseable')} unparseable (recorded, passed over)"
                     if "unparseable" in kinds else "")
                  + (" (more waiting: poll again)" if report.more else ""), highlight=False)
        for r in report.results:
            for match in r.matches:
                out.print(f"  {shown(r.kind)}: campaign {shown(match.campaign_id)}, lead "
                          f"{shown(match.lead_id)} (by {shown(match.matched_by)})"
                          + ("" if match.verified else
                             f", unverified ({shown(r.trust or '')}): `campaign replies "
                             f"confirm {shown(match.reply_id)}` to act on it")
                          + (", already recorded" if match.duplicate else ""), highlight=False)
        for r in unmatched:
            out.print(f"  {shown(r.kind)}: matched no lead ({shown(r.message_id)})"
                      + (f": {shown(r.trust)}" if r.trust else ""), highlight=False)
        for r in report.results:
            if r.unsubscribe is not None:
                out.print(f"  unsubscribe by mail: campaign {shown(r.unsubscribe.campaign_id)}, "
                          f"lead {shown(r.unsubscribe.lead_id)}"
                          + (", already recorded" if r.unsubscribe.duplicate else ""),
                          highlight=False)

    run(go())
