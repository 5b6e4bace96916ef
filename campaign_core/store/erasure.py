"""Erasure (`Store.forget`): the steps written once, over small per-backend hooks.

`Erasure.forget` is a template method: each backend supplies the primitives (suppress,
find, redact, delete) inside its own unit of work (one SQL transaction; a sequence of
idempotent REST requests). What is deleted, redacted, recorded and kept, and why:
docs/architecture.md ("The store") ("Erasure").
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from abc import ABC, abstractmethod
from collections import Counter, defaultdict
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Generic, TypeVar

from campaign_core.envelope import Envelope, EnvelopeMetadata, Provenance, Record, digest
from campaign_core.leads import address_forms, lead_id_for, normalise_email
from campaign_core.store.base import DerivedHashes, StoreError, now_utc, parse_lead

#: The suppression reason `forget` writes (an earlier reason is replaced by this one).
FORGOTTEN_REASON = "forgotten (erasure request)"
#: The suppression source `forget` writes (schema 14): such an entry is never lifted.
ERASURE_SOURCE: Final = "erasure"

#: What redacted text is replaced with.
ERASED = "[erased]"

#: The keys of the dict `forget` returns, in order: rows deleted per table, then
#: `audit_log_redacted` (campaign-level entries redacted), `approvals` (decisions
#: redacted), `sender_sends_unlinked` (a mailbox's sends to the person, kept without
#: their lead id), `suppressions` (1 when the address was added or its reason changed)
#: and `campaigns` (how many campaigns held the person's data: each got an erasure entry).
FORGET_KEYS = ("leads", "drafts", "draft_versions", "retrievals", "deliveries",
               "delivery_events", "audit_log", "replies", "sequence_steps", "suggested_leads",
               "embeddings",
               "audit_log_redacted", "approvals", "sender_sends_unlinked", "suppressions",
               "campaigns")

#: The tables whose rows belong to one lead, found by (campaign_id, lead_id); `leads`
#: is deleted last, so an erasure cut short is still found (by address) when it is re-run.
LEAD_TABLES = ("drafts", "draft_versions", "retrievals", "deliveries", "audit_log",
               "delivery_events", "replies", "sequence_steps", "leads")
#: The tables also searched by address: a reply that matched no lead is found this way.
ADDRESS_TABLES = frozenset({"leads", "delivery_events", "replies"})
#: The tables whose rows of a lead are kept, its lead id cleared (schema 16): a mailbox's
#: sends (`sender_sends`) hold no address, and its caps and health must go on counting
#: every send it made, so they stay, linked to no lead. (The lead's assigned sender,
#: `leads.sender`, goes with its lead row.)
UNLINKED_TABLES = ("sender_sends",)

def forget_addresses(email: str) -> list[str]:
    """The forms an address may be stored under: normalised first, then older forms."""
    return address_forms(email)


def subject_digest(email: str) -> str:
    """The erasure's subject in the audit trail: sha256 of the normalised address.

    Not anonymous (anyone who knows the address can compute it, and the suppression
    list keeps the address anyway), but it lets an operator answer "was this address
    erased, and when?" without the trail itself holding the address.
    """
    return "sha256:" + hashlib.sha256(normalise_email(email).encode()).hexdigest()


def forget_pairs(email: str, campaigns: Iterable[tuple[str, str | None]]
                 ) -> set[tuple[str, str]]:
    """(campaign_id, lead_id) the address has in each (campaign, lead-id salt), whether a
    lead row exists: each campaign's own scheme, salted or (older campaigns) not."""
    return {(cid, lead_id_for(cid, email, salt)) for cid, salt in campaigns}


def redact(value: Any, lead_ids: Iterable[str], addresses: Iterable[str]) -> Any:
    """`value` (parsed JSON) without the lead ids and addresses: list items that are one
    are dropped (an approval's `lead_ids`), and inside any other text each becomes
    "[erased]" (addresses case-insensitively)."""
    ids = frozenset(lead_ids)
    addresses = list(addresses)
    pattern = re.compile("|".join(
        [re.escape(i) for i in sorted(ids, key=len, reverse=True)]
        + [re.escape(a) for a in addresses]), re.IGNORECASE)

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return pattern.sub(ERASED, v)
        if isinstance(v, list):
            return [walk(x) for x in v if not (isinstance(x, str) and x in ids)]
        if isinstance(v, dict):
            return {walk(k): walk(x) for k, x in v.items()}
        return v

    return walk(value) if ids or addresses else value


def mentions(text: str, lead_ids: Iterable[str], addresses: Iterable[str]) -> bool:
    """Whether stored text (JSON) names one of the lead ids or addresses."""
    low = text.lower()
    return any(i in text for i in lead_ids) or any(a.lower() in low for a in addresses)


def erasure_envelope(campaign_id: str, subject: str, rows: dict[str, int],
                     at: datetime) -> Envelope:
    """The audit entry that records an erasure in one campaign, without personal data."""
    data = {"status": "erased", "reason": FORGOTTEN_REASON, "subject": subject,
            "erased_at": at.astimezone(UTC).isoformat(), "rows": rows}
    return Envelope(
        metadata=EnvelopeMetadata(campaign_id=campaign_id, run_id="erasure-request",
                                  agent="store.forget", agent_version="1", attempt=1,
                                  started_at=at, ended_at=at),
        records=[Record(kind="erasure", key=subject, data=data, provenance=Provenance(
            source="request:erasure", agent="store", created_at=at,
            inputs_digest=digest([subject, at.isoformat()])))],
    )


def derived_hashes(fn: DerivedHashes | None, data: Any, brief: Any, key: str) -> set[str]:
    """The cache hashes `fn` derives from a stored lead row; none for a malformed row
    (which is erased all the same)."""
    if fn is None:
        return set()
    try:
        lead = parse_lead(data, key)
    except StoreError:
        return set()
    return set(fn(lead, str(brief or "")))


def forget_result(per_campaign: dict[str, dict[str, int]], **extra: int) -> dict[str, int]:
    """The totals `forget` returns, from its per-campaign tallies ("" for rows of no
    campaign) and the other counts; logs the erasure without the address."""
    out = dict.fromkeys(FORGET_KEYS, 0)
    for tally in per_campaign.values():
        for key, n in tally.items():
            out[key] += n
    out.update(extra)
    out["campaigns"] = sum(1 for cid, t in per_campaign.items() if cid and any(t.values()))
    return out


def erased_campaigns(per_campaign: dict[str, dict[str, int]]) -> list[str]:
    """The campaigns that held the person's data, each of which gets an erasure entry."""
    return sorted(cid for cid, t in per_campaign.items() if cid and any(t.values()))


def log_erasure(where: str, subject: str, result: dict[str, int]) -> None:
    """The erasure in the log: the address's digest and the counts, never the address."""
    logging.getLogger("campaign.store").info(
        "erasure request: %s erased from %s (%s)", subject, where,
        ", ".join(f"{k}={v}" for k, v in result.items() if v) or "nothing was stored")


Tx = TypeVar("Tx")
Pairs = set[tuple[str, str]]


@dataclass(frozen=True)
class Mention:
    """A campaign-level row that may name the person: `column` of `table` at `key`."""

    table: str  # "audit_log" or "approvals"
    column: str
    key: dict[str, str]
    campaign_id: str
    value: Any  # parsed JSON


class Erasure(ABC, Generic[Tx]):
    """`forget` written once; a backend implements the `_erase_*` primitives."""

    async def forget(
        self, email: str, *, derived_text_hashes: DerivedHashes | None = None
    ) -> dict[str, int]:
        """Erase the person and suppress the address (the suppression first, leads last)."""
        addresses = forget_addresses(email)
        subject, at = subject_digest(email), now_utc()
        tally: dict[str, Counter[str]] = defaultdict(Counter)
        async with self._erasing(subject) as tx:
            suppressed = await self._erase_suppress(tx, addresses[0])
            pairs = forget_pairs(addresses[0], await self._erase_campaign_ids(tx))
            pairs |= await self._erase_leads_by_address(tx, addresses)
            await self._erase_scope(tx, pairs)
            ids: dict[str, set[str]] = defaultdict(set)
            for cid, lid in pairs:
                ids[cid].add(lid)
            found = {table: await self._erase_find(tx, table)
                     for table in LEAD_TABLES + UNLINKED_TABLES}
            affected = {cid for rows in found.values() for cid, _ in rows}
            affected |= await self._erase_event_campaigns(tx, addresses)
            hashes: set[str] = set()
            if derived_text_hashes is not None and found["leads"]:
                for cid, lid, data, brief in await self._erase_lead_data(tx, found["leads"]):
                    hashes |= derived_hashes(derived_text_hashes, data, brief, f"{cid}/{lid}")
            # Redact campaign-level audit entries and approvals that name the lead.
            for m in await self._erase_mentions(tx, sorted(affected), addresses):
                named = addresses if m.table == "audit_log" else []
                if m.value is None or not mentions(json.dumps(m.value, ensure_ascii=False),
                                                   ids[m.campaign_id], named):
                    continue
                await self._erase_patch(tx, m, redact(m.value, ids[m.campaign_id], addresses))
                tally[m.campaign_id]["audit_log_redacted" if m.table == "audit_log" else m.table] += 1
            # Keep the rows that must stay, linked to no lead; then delete the lead's rows,
            # the lead itself last.
            for table in UNLINKED_TABLES:
                for of in await self._erase_unlink(tx, table, found[table]):
                    tally[of or ""][f"{table}_unlinked"] += 1
            for table in LEAD_TABLES:
                gone = await self._erase_delete(tx, table, found[table])
                if table in ADDRESS_TABLES:  # by address too
                    gone += await self._erase_delete_by_address(tx, table, addresses)
                for of in gone:
                    tally[of or ""][table] += 1
            # A contact someone else's reply named (schema 15): the person themself. (The
            # suggestions their own replies made, and the answers to them, go with those
            # replies: ON DELETE CASCADE.)
            for of in await self._erase_delete_by_address(tx, "suggested_leads", addresses):
                tally[of or ""]["suggested_leads"] += 1
            embeddings = await self._erase_embeddings(tx, sorted(hashes)) if hashes else 0
            per = {cid: dict(t) for cid, t in tally.items()}
            for cid in erased_campaigns(per):
                await self._erase_record(tx, erasure_envelope(cid, subject, per[cid], at))
        result = forget_result(per, embeddings=embeddings, suppressions=suppressed)
        log_erasure(self._where, subject, result)
        return result

    @property
    @abstractmethod
    def _where(self) -> str:
        """The store, for the log line (never with a password)."""

    @abstractmethod
    def _erasing(self, subject: str) -> AbstractAsyncContextManager[Tx]:
        """The unit of work every step runs in."""

    @abstractmethod
    async def _erase_suppress(self, tx: Tx, address: str) -> int:
        """Suppress as forgotten: 1 if the address was added or its reason changed."""

    @abstractmethod
    async def _erase_campaign_ids(self, tx: Tx) -> list[tuple[str, str | None]]:
        """(campaign_id, lead_id_salt) of every campaign."""

    @abstractmethod
    async def _erase_leads_by_address(self, tx: Tx, addresses: list[str]) -> Pairs: ...

    async def _erase_scope(self, tx: Tx, pairs: Pairs) -> None:
        """Remember the (campaign, lead) pairs the next steps work on."""

    @abstractmethod
    async def _erase_find(self, tx: Tx, table: str) -> Pairs:
        """The pairs in scope that have rows in `table`."""

    @abstractmethod
    async def _erase_event_campaigns(self, tx: Tx, addresses: list[str]) -> set[str]:
        """Campaigns with delivery events for the addresses."""

    @abstractmethod
    async def _erase_lead_data(self, tx: Tx, pairs: Pairs) -> list[tuple[str, str, Any, Any]]:
        """(campaign_id, lead_id, lead data, campaign brief) of these leads."""

    @abstractmethod
    async def _erase_mentions(self, tx: Tx, campaigns: list[str], addresses: list[str]
                              ) -> list[Mention]:
        """Campaign-level audit entries and approvals of `campaigns` that may name the person."""

    @abstractmethod
    async def _erase_patch(self, tx: Tx, mention: Mention, value: Any) -> None: ...

    @abstractmethod
    async def _erase_delete(self, tx: Tx, table: str, found: Pairs) -> list[str | None]:
        """Delete the lead's rows of `table`; the campaign id of each row deleted."""

    @abstractmethod
    async def _erase_unlink(self, tx: Tx, table: str, found: Pairs) -> list[str | None]:
        """Clear the lead id of the lead's rows of `table` (kept); the campaign id of each."""

    @abstractmethod
    async def _erase_delete_by_address(self, tx: Tx, table: str, addresses: list[str]
                                       ) -> list[str | None]: ...

    @abstractmethod
    async def _erase_embeddings(self, tx: Tx, hashes: list[str]) -> int: ...

    @abstractmethod
    async def _erase_record(self, tx: Tx, envelope: Envelope) -> None:
        """Save the erasure's audit entry."""
