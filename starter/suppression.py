"""The suppression list and erasure requests, for `campaign suppress` / `campaign forget` and
`POST /suppressions` / `POST /erasure` alike.

Erasure lets the store erase (`Store.forget`), then deletes the outbox `.eml` copies
addressed to the person, and reports what went in one JSON document.
"""

from __future__ import annotations

from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from campaign_core.leads import Lead, address_forms, valid_email
from campaign_core.settings import Settings
from campaign_core.store.base import Store
from campaign_core.store.erasure import FORGOTTEN_REASON, subject_digest
from starter.manager import BadInput

#: The reason recorded for addresses suppressed by hand (CLI or API).
MANUAL_REASON = "manual"


class SuppressionResult(BaseModel):
    """What adding addresses to the suppression list did."""

    added: int
    already_suppressed: int


class ErasureReport(BaseModel):
    """What `forget` erased: rows per table (and outbox files), and the campaigns touched."""

    email: str
    subject: str
    campaigns: int
    counts: dict[str, int]
    suppressed: bool = True
    reason: str = FORGOTTEN_REASON


def valid_addresses(emails: list[str], what: str) -> list[str]:
    """The normalised addresses, duplicates merged; BadInput naming the first invalid one."""
    try:
        return list(dict.fromkeys(valid_email(e) for e in emails))
    except ValueError as exc:
        raise BadInput(f"{what}: {exc}") from exc


async def suppress(store: Store, emails: list[str]) -> SuppressionResult:
    """Add the (valid, normalised) addresses to the suppression list, never sent to again."""
    addresses = valid_addresses(emails, "suppress")
    added = await store.add_suppressions(addresses, MANUAL_REASON)
    return SuppressionResult(added=added, already_suppressed=len(addresses) - added)


async def forget(settings: Settings, store: Store, email: str) -> ErasureReport:
    """Erase everything stored about the person at `email`, in every campaign, delete the
    outbox copies of their messages, and keep the address suppressed (idempotent)."""
    [address] = valid_addresses([email], "forget")
    counts: dict[str, Any] = await store.forget(address, derived_text_hashes=lead_text_hashes)
    counts["outbox"] = erase_outbox(settings.outbox_dir, address)
    campaigns = int(counts.pop("campaigns"))
    return ErasureReport(email=address, subject=subject_digest(address), campaigns=campaigns,
                         counts=counts)


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
