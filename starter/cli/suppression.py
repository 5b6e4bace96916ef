"""`campaign suppress` and `campaign forget`: the suppression list and erasure requests.

`forget` validates the address, asks before erasing, lets the store do the erasure
(`Store.forget`), deletes the outbox `.eml` copies and says what went.
"""

from __future__ import annotations

import sys
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Annotated, Any

import typer

from campaign_core.leads import Lead, address_forms, valid_email
from campaign_core.settings import load_settings
from campaign_core.store.erasure import FORGOTTEN_REASON, subject_digest
from campaign_core.store.factory import open_store
from starter.cli.app import JsonFlag, emit_json, err, fail, out, run, shown

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


def suppress(emails: Annotated[list[str], typer.Argument(metavar="EMAIL...")]) -> None:
    """Add addresses to the suppression list (never sent to, in any campaign)."""
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


def forget(
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The address to erase.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonFlag = False,
) -> None:
    # The help text is FORGET_HELP (given at registration): paragraphs, not a docstring.
    try:
        address = valid_email(email)
    except ValueError as exc:
        fail(2, f"forget: {exc}; nothing was erased")
    if not yes:
        if not stdin_is_tty():
            fail(2, f"forget: erasing {address} cannot be undone and there is no terminal to "
                    "confirm it at: pass --yes")
        if not typer.confirm(f"Erase everything stored about {address}, in every campaign, "
                             "and suppress the address?", err=True):
            fail(1, "forget: not confirmed; nothing was erased")
    settings = load_settings()

    async def go() -> dict[str, int]:
        store = open_store(settings)
        try:
            return await store.forget(address, derived_text_hashes=lead_text_hashes)
        finally:
            await store.close()

    counts = run(go())
    counts["outbox"] = erase_outbox(settings.outbox_dir, address)
    doc: dict[str, Any] = {"email": address, "subject": subject_digest(address),
                           "campaigns": counts.pop("campaigns"), "counts": counts,
                           "suppressed": True, "reason": FORGOTTEN_REASON}
    if as_json:
        emit_json(doc)
        return
    erased = ", ".join(f"{k} {v}" for k, v in counts.items() if v and k != "suppressions")
    out.print(f"Erased {shown(address)} from {doc['campaigns']} campaign(s): "
              f"{shown(erased or 'nothing was stored about it')}.", highlight=False)
    out.print(f"It stays on the suppression list ({FORGOTTEN_REASON}), so it is never emailed "
              "again.", highlight=False)
    if doc["campaigns"]:
        out.print(f"Each campaign's audit trail records the erasure as {shown(doc['subject'])}.",
                  highlight=False)


def stdin_is_tty() -> bool:
    """Whether someone can answer the confirmation (tests replace this)."""
    return sys.stdin.isatty()


def lead_text_hashes(lead: Lead, brief: str) -> list[str]:
    """The text hashes of what retrieval embedded for the lead (its own fields).

    When the lead has no fields the query is the campaign's brief, which is no one's
    personal data and is shared by other leads: that embedding stays.
    """
    from activities.knowledge import dense_query
    from activities.retrieval.dense import text_hash

    query = dense_query(lead, brief)
    return [text_hash(query)] if query and query != brief else []


def erase_outbox(outbox: Path, address: str) -> int:
    """Delete the outbox `.eml` files addressed to `address`; returns how many."""
    if not outbox.is_dir():
        return 0
    wanted = set(address_forms(address))
    parser = BytesParser(policy=policy.default)
    removed = 0
    for path in sorted(outbox.glob("*.eml")):
        try:
            with path.open("rb") as fh:
                headers = parser.parse(fh, headersonly=True)
            recipients = [a.addr_spec for field in ("To", "Cc", "Bcc")
                          for a in getattr(headers[field], "addresses", ())]
        except (OSError, ValueError):
            continue
        if any(not wanted.isdisjoint(address_forms(r)) for r in recipients):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
