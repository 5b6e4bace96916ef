"""`campaign suppress`, `suppressions`, `unsuppress` and `forget`: the suppression list and
erasure requests. They need the store alone (Temporal need not run).

`forget` validates the address, asks before erasing, then erases through
`starter.suppression.forget` (as `POST /erasure` does) and says what went.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from campaign_core.settings import load_settings
from campaign_core.store.erasure import FORGOTTEN_REASON
from campaign_core.store.factory import open_store
from campaign_core.store.rows import SuppressionRow
from starter import suppression
from starter.cli.app import JsonFlag, emit_json, err, fail, out, run, shown
from starter.cli.campaigns import os_user
from starter.errors import BadInput, Conflict, NotFound
from starter.suppression import (  # re-exported: the erasure's parts, named as before
    ErasureReport,
    SuppressionResult,
    Unsuppressed,
    erase_outbox,
    lead_text_hashes,
    valid_addresses,
)

__all__ = ["FORGET_HELP", "erase_outbox", "forget", "lead_text_hashes", "stdin_is_tty",
           "suppress", "suppressions", "unsuppress"]

FORGET_HELP = "\n\n".join((
    "Erase a person's data from the store and suppress the address.",
    "Deletes, in every campaign, the person's lead (name, company, notes...), drafts, retrieved"
    ' passages, delivery rows, bounce/complaint/unsubscribe events, replies (also those that'
    ' matched no lead), their audit entries and the'
    ' embedding of their retrieval query; removes their lead id and address from approval '
    'decisions; deletes the outbox `.eml` files addressed to them. Each campaign they were in '
    'gets one audit entry saying that an erasure happened and when, with the sha256 of the '
    'address, nothing else. The address itself stays on the suppression list ("forgotten '
    '(erasure request)"), so that no campaign ever emails it again: the lawful exception that '
    'makes the erasure stick.',
    'Works on the store alone (Temporal need not run). A campaign that is still running finds '
    'the lead gone: drafting fails that lead and delivery reports it send_failed (and the '
    'address is suppressed anyway), while every other lead goes on. An activity in flight at '
    'that moment may still write a row for the lead: run forget again once the campaign has '
    "ended (it is idempotent). Temporal's own workflow histories are not in the store; they "
    "expire with the namespace's retention period.",
    'Asks for confirmation unless --yes; without a terminal (CI) --yes is required.',
))


def suppress(
    emails: Annotated[list[str], typer.Argument(metavar="EMAIL...")],
    as_json: JsonFlag = False,
) -> None:
    """Add addresses to the suppression list (never sent to, in any campaign)."""
    try:
        valid_addresses(emails, "suppress")
    except BadInput as exc:
        fail(2, f"{exc}; nothing was added")

    async def go() -> SuppressionResult:
        store = open_store(load_settings())
        try:
            return await suppression.suppress(store, emails)
        finally:
            await store.close()

    result = run(go())
    if as_json:
        emit_json(result.model_dump())
        return
    err.print(f"{result.added} address(es) added to the suppression list "
              f"({result.already_suppressed} already there)")


def suppressions(as_json: JsonFlag = False) -> None:
    """The suppression list, newest first: each address, why, where from (reply,
    unsubscribe_link, one_click, mailto, bounce, complaint, manual, erasure) and since when."""

    async def go() -> list[SuppressionRow]:
        store = open_store(load_settings())
        try:
            return await suppression.list_suppressions(store)
        finally:
            await store.close()

    rows = run(go())
    if as_json:
        emit_json([r.model_dump() for r in rows])
        return
    table = Table("email", "source", "reason", "since")
    for r in rows:
        table.add_row(shown(r.email), shown(r.source), shown(r.reason),
                      shown(r.created_at[:19].replace("T", " ")))
    out.print(table)
    err.print(f"{len(rows)} address(es) on the suppression list")


def unsuppress(
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The address to lift.")],
    reason: Annotated[str, typer.Option("--reason", help="Why the suppression is lifted "
                                        "(kept in the audit trail).")],
    by: Annotated[str | None, typer.Option(
        "--by", help="Who lifts it (default: the OS user name).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Lift an address's suppression, so campaigns may email it again (audited; refused for
    an erased person)."""
    try:
        valid_addresses([email], "unsuppress")
    except BadInput as exc:
        fail(2, f"{exc}; nothing was lifted")

    async def go() -> Unsuppressed:
        store = open_store(load_settings())
        try:
            return await suppression.unsuppress(store, email, reason=reason, by=by or os_user())
        finally:
            await store.close()

    result = run(go(), hints={NotFound: "see `campaign suppressions`",
                              Conflict: "nothing was lifted"})
    if as_json:
        emit_json(result.model_dump())
        return
    was = ", ".join(f"{r.source}: {r.reason}" for r in result.removed)
    out.print(f"{shown(result.email)} is no longer suppressed (it was: {shown(was)}); "
              f"lifted by {shown(result.by)}.", highlight=False)


def forget(
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The address to erase.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonFlag = False,
) -> None:
    # The help text is FORGET_HELP (given at registration): paragraphs, not a docstring.
    try:
        [address] = valid_addresses([email], "forget")
    except BadInput as exc:
        fail(2, f"{exc}; nothing was erased")
    if not yes:
        if not stdin_is_tty():
            fail(2, f"forget: erasing {address} cannot be undone and there is no terminal to "
                    "confirm it at: pass --yes")
        if not typer.confirm(f"Erase everything stored about {address}, in every campaign, "
                             "and suppress the address?", err=True):
            fail(1, "forget: not confirmed; nothing was erased")
    settings = load_settings()

    async def go() -> ErasureReport:
        store = open_store(settings)
        try:
            return await suppression.forget(settings, store, address)
        finally:
            await store.close()

    report = run(go())
    if as_json:
        emit_json(report.model_dump())
        return
    erased = ", ".join(f"{k} {v}" for k, v in report.counts.items() if v and k != "suppressions")
    out.print(f"Erased {shown(address)} from {report.campaigns} campaign(s): "
              f"{shown(erased or 'nothing was stored about it')}.", highlight=False)
    out.print(f"It stays on the suppression list ({FORGOTTEN_REASON}), so it is never emailed "
              "again.", highlight=False)
    if report.campaigns:
        out.print(f"Each campaign's audit trail records the erasure as {shown(report.subject)}.",
                  highlight=False)


def stdin_is_tty() -> bool:
    """Whether someone can answer the confirmation (tests replace this)."""
    return sys.stdin.isatty()
