"""The suppression list and erasure requests, for `campaign suppress` / `suppressions` /
`unsuppress` / `forget` and `POST /suppressions` / `GET /suppressions` /
`DELETE /suppressions/{email}` / `POST /erasure` alike.

Lifting a suppression (`unsuppress`) is refused for an erased person (the entry is what
keeps the erasure) and leaves an audit entry naming who lifted it and why: one in each
campaign that has the person as a lead, and one without the address in the suppression
list's own trail (`SUPPRESSION_TRAIL`).

Erasure lets the store erase (`Store.forget`), then deletes the outbox `.eml` copies
addressed to the person, and reports what went in one JSON document.
"""

from __future__ import annotations

from datetime import datetime
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from campaign_core.envelope import Envelope, EnvelopeMetadata, Provenance, Record, digest
from campaign_core.leads import Lead, address_forms, valid_email
from campaign_core.models import Stage
from campaign_core.settings import Settings
from campaign_core.store.base import Store, now_utc
from campaign_core.store.erasure import ERASURE_SOURCE, FORGOTTEN_REASON, redact, subject_digest
from campaign_core.store.rows import SuppressionRow
from starter.errors import BadInput, Conflict, NotFound

#: The reason recorded for addresses suppressed by hand (CLI or API).
MANUAL_REASON = "manual"

#: Where the suppression list's own audit entries are kept: a reserved campaign id, which no
#: campaign can have (campaign ids begin with a letter or a digit).
SUPPRESSION_TRAIL = "_suppressions"
#: The longest reason a lift may give.
MAX_LIFT_REASON = 1000


class Unsuppressed(BaseModel):
    """What lifting a suppression did: the address, who lifted it and why, and the entries
    removed (more than one when older rows held other spellings of the address)."""

    email: str
    by: str
    reason: str
    removed: list[SuppressionRow]
    audited_campaigns: int


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
    added = await store.add_suppressions(addresses, MANUAL_REASON, source="manual")
    return SuppressionResult(added=added, already_suppressed=len(addresses) - added)


async def list_suppressions(store: Store) -> list[SuppressionRow]:
    """The suppression list, newest first."""
    return await store.list_suppressions()


async def unsuppress(store: Store, email: str, *, reason: str, by: str) -> Unsuppressed:
    """Lift the address's suppression (every stored spelling of it), with audit entries
    naming `by` and `reason`. NotFound when it is not on the list; Conflict for an erased
    person's address, whose suppression is never lifted."""
    [address] = valid_addresses([email], "unsuppress")
    reason = reason.strip()
    if not reason:
        raise BadInput("say why the suppression is lifted", field="reason")
    if len(reason) > MAX_LIFT_REASON:
        raise BadInput(f"at most {MAX_LIFT_REASON} characters", field="reason")
    asked = email.strip()  # its own forms too: older rows kept a trimmed, lower-cased spelling
    entry = await store.get_suppression(asked)
    if entry is None:
        raise NotFound(f"{address} is not on the suppression list")
    removed = [] if entry.source == ERASURE_SOURCE else await store.lift_suppression(asked)
    if not removed:  # erased, or lifted by someone else since it was read
        entry = await store.get_suppression(asked)
        if entry is None:
            raise NotFound(f"{address} is not on the suppression list")
        raise Conflict(f"{address} was erased at the person's request: its "
                       "suppression is what keeps the erasure and is never lifted")
    at = now_utc()
    data: dict[str, Any] = {
        "status": "unsuppressed", "by": by, "reason": reason,
        "previous": [{"reason": r.reason, "source": r.source, "created_at": r.created_at}
                     for r in removed]}
    leads = await store.find_leads_by_email(asked, [s.value for s in Stage])
    for campaign_id, lead_id in leads:
        await store.save_envelope(_lift_record(campaign_id, subject_digest(address), data, at),
                                  lead_id)
    # The list's own trail holds no address (a later erasure could not find it there).
    trail = redact(data, [], address_forms(asked)) | {"subject": subject_digest(address)}
    await store.save_envelope(_lift_record(SUPPRESSION_TRAIL, subject_digest(address), trail, at))
    return Unsuppressed(email=address, by=by, reason=reason, removed=removed,
                        audited_campaigns=len({cid for cid, _ in leads}))


def _lift_record(campaign_id: str, subject: str, data: dict[str, Any], at: datetime) -> Envelope:
    """The audit entry of a lifted suppression."""
    return Envelope(
        metadata=EnvelopeMetadata(campaign_id=campaign_id, run_id="control-plane",
                                  agent="control_plane.unsuppress", agent_version="1",
                                  attempt=1, started_at=at, ended_at=at),
        records=[Record(kind="unsuppressed", key=subject, data=data, provenance=Provenance(
            source="request:unsuppress", agent="control_plane", created_at=at,
            inputs_digest=digest([subject, data, at.isoformat()])))])


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
