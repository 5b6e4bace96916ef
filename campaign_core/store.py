"""The store interface every agent and the control plane use, and how to open one.

Activities never talk to a database directly: they call a `Store`, so the backend is
a setting, not a code change:

- SQLite (`sqlite:///PATH`, the embedded default under CAMPAIGN_HOME),
- PostgreSQL (`CAMPAIGN_STORE_URL=postgresql://...`, also a Supabase project's database),
- Supabase's REST API (only `SUPABASE_URL` and `SUPABASE_KEY` set).

Every write is an idempotent upsert by natural key, so a retried activity never
duplicates a row. Two kinds of failure are kept apart on purpose, because Temporal
treats them differently:

- a store that is down or busy raises `StoreUnavailable` (naming the store) or its
  driver's own error: ordinary exceptions, so the activity is retried until the
  store is back and no lead fails for an outage;
- a row the store will never accept (a constraint violation, a malformed row)
  raises `StoreError` naming the table and the key: retrying cannot help, so an
  agent should turn it into a non-retryable error rather than retry it forever.

The schema is versioned by numbered SQL migrations shipped in this package (one
folder per dialect, same numbers in both). The embedded SQLite store migrates itself
on first use; shared stores (PostgreSQL, Supabase) refuse a schema older than the
code and ask for `campaign db migrate`, so that upgrading one worker never changes a
database under the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from campaign_core.envelope import Envelope, EnvelopeMetadata, Provenance, Record, digest
from campaign_core.leads import Lead, lead_id_for, normalise_email
from campaign_core.models import Counts

if TYPE_CHECKING:
    from campaign_core.settings import Settings

#: The schema this code reads and writes: the highest migration number shipped.
SCHEMA_VERSION = 5

#: Stages after which a draft that was not approved will never be sent.
DECIDED_STAGES = frozenset({"delivering", "completed", "rejected", "expired"})


class StoreError(Exception):
    """A store problem no retry will fix (bad row, constraint, wrong schema).

    `table` and `key` say which row, so that an operator can find it; both are also
    in the message, which is what ends up in Temporal's failure and the lead's error.
    """

    def __init__(self, message: str, *, table: str | None = None, key: str | None = None) -> None:
        if table is not None:
            message = f"{table}[{key}]: {message}" if key else f"{table}: {message}"
        super().__init__(message)
        self.table = table
        self.key = key


class StoreUnavailable(Exception):
    """The store cannot be reached right now: retryable, and says which store and why.

    Deliberately not a StoreError: Temporal retries it like any ordinary exception,
    so a database that is down delays leads instead of failing them.
    """


class Store(Protocol):
    """What the engine needs from its durable record."""

    async def migrate(self, target: int | None = None) -> int:
        """Apply pending migrations (up to `target`, default all); return the version."""
        ...

    async def schema_version(self) -> int: ...

    async def ensure_schema(self) -> int:
        """Make sure the schema is the code's: embedded stores migrate, shared ones refuse."""
        ...

    async def close(self) -> None:
        """Release connections; the store may be used again afterwards (it reconnects)."""
        ...

    async def upsert_campaign(
        self, *, campaign_id: str, name: str, brief: str, channel: str,
        kb_dir: str | None, workflow_id: str,
    ) -> None: ...

    async def get_campaign(self, campaign_id: str) -> dict[str, Any] | None: ...

    async def set_stage(self, campaign_id: str, stage: str) -> None: ...

    async def upsert_leads(self, campaign_id: str, leads: list[Lead]) -> int: ...

    async def get_lead(self, campaign_id: str, lead_id: str) -> Lead | None: ...

    async def list_lead_ids(self, campaign_id: str, after: str | None, limit: int) -> list[str]: ...

    async def set_lead_status(
        self, campaign_id: str, lead_id: str, status: str, error: str | None = None
    ) -> None: ...

    async def save_envelope(self, envelope: Envelope, lead_id: str | None = None) -> str: ...

    async def get_envelope(self, envelope_id: str) -> Envelope | None: ...

    async def save_retrieval(
        self, campaign_id: str, lead_id: str, passages: list[dict[str, Any]], envelope_id: str
    ) -> None: ...

    async def get_retrieval(self, campaign_id: str, lead_id: str) -> list[dict[str, Any]]: ...

    async def upsert_draft(
        self, *, campaign_id: str, lead_id: str, step: int, subject: str, body: str,
        citations: list[str], provenance: dict[str, Any], envelope_id: str,
    ) -> None: ...

    async def list_drafts(self, campaign_id: str) -> list[dict[str, Any]]: ...

    async def get_draft(self, campaign_id: str, lead_id: str, step: int = 1) -> dict[str, Any] | None:
        ...

    async def record_decision(
        self, *, campaign_id: str, decision_id: str, decision: str, lead_ids: list[str] | None,
        by: str, note: str | None,
    ) -> int: ...

    async def list_approved_lead_ids(
        self, campaign_id: str, after: str | None, limit: int
    ) -> list[str]: ...

    async def add_suppressions(self, emails: list[str], reason: str) -> int: ...

    async def is_suppressed(self, email: str) -> bool: ...

    async def get_delivery(self, message_key: str) -> dict[str, Any] | None: ...

    async def upsert_delivery(
        self, *, message_key: str, campaign_id: str, lead_id: str, step: int, channel: str,
        status: str, message_id: str | None = None, error: str | None = None,
    ) -> None: ...

    async def find_delivery_by_message_id(self, message_id: str) -> dict[str, Any] | None:
        """The delivery row whose RFC 5322 Message-ID this is (with or without <>)."""
        ...

    async def record_delivery_event(
        self, *, event_id: str, kind: str, email: str, source: str,
        campaign_id: str | None = None, lead_id: str | None = None,
        message_key: str | None = None, detail: str | None = None,
    ) -> bool:
        """Record a bounce/complaint/unsubscribe once; True when it was new."""
        ...

    async def list_delivery_events(self, campaign_id: str) -> list[dict[str, Any]]: ...

    async def get_or_create_secret(self, name: str, candidate: str) -> str:
        """The shared secret `name`; `candidate` becomes it if none exists yet.

        Concurrent callers with different candidates all get the one that was stored
        first, so every worker and API process signs and checks with the same key.
        """
        ...

    async def claim_webhook_id(self, webhook_id: str) -> bool:
        """Record a signed webhook's `webhook-id`; False when it was recorded before
        (a retry or a replay: answer it without acting again). Atomic (schema 5)."""
        ...

    async def release_webhook_id(self, webhook_id: str) -> None:
        """Forget a claimed id whose handling failed, so the sender's retry is acted on."""
        ...

    async def counts(self, campaign_id: str) -> Counts: ...

    async def report(self, campaign_id: str) -> list[dict[str, Any]]: ...

    async def audit(self, campaign_id: str, lead_id: str | None = None) -> list[dict[str, Any]]:
        ...

    # -- embeddings (schema 4) --------------------------------------------------------

    async def get_embeddings(self, model: str, hashes: list[str]) -> dict[str, list[float]]:
        """The stored vectors of `model` for those text hashes that have one."""
        ...

    async def put_embeddings(self, model: str, vectors: dict[str, list[float]]) -> None:
        """Store vectors by text hash; a hash already stored keeps its vector (idempotent)."""
        ...

    async def vector_search(
        self, model: str, query_vector: list[float], hashes: list[str], k: int
    ) -> list[tuple[str, float]] | None:
        """The `k` hashes among `hashes` most similar to the query, as (hash, cosine), best
        first; or None when this backend cannot search vectors itself (SQLite, Postgres
        without pgvector, Supabase without `match_embeddings`): the caller searches in memory.
        """
        ...

    # -- erasure (`campaign forget`) ---------------------------------------------------

    async def forget(
        self, email: str, *, derived_text_hashes: DerivedHashes | None = None
    ) -> dict[str, int]:
        """Erase everything the store holds about the person with this address, in every
        campaign, and suppress the address; returns how many rows each table lost.

        See "erasure" below for what is deleted, what is redacted and what is kept.
        `derived_text_hashes(lead, brief)` names the text hashes of caches built from
        the lead (the dense-retrieval query's embedding), which are deleted too.
        Idempotent: forgetting the same address again erases nothing more.
        """
        ...


# -- migrations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file; the number is the schema version it brings the store to."""

    version: int
    name: str
    sql: str


def migrations(dialect: str) -> list[Migration]:
    """The migrations shipped for `dialect` ("sqlite" or "postgres"), in order.

    They are package data next to this module, so they are found the same way in a
    checkout, an editable install and an installed wheel (which pip always unpacks).
    """
    folder = Path(__file__).resolve().parent / "migrations" / dialect
    found = [
        Migration(int(f.name.split("_", 1)[0]), f.name, f.read_text(encoding="utf-8"))
        for f in folder.glob("[0-9]*.sql")
    ]
    return sorted(found, key=lambda m: m.version)


def check_version(version: int, where: str, *, how_to_migrate: str = "run `campaign db migrate`") -> int:
    """Refuse a schema that is not the code's, saying what to do; return it otherwise."""
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"store {where} has schema version {version}, newer than this code "
            f"({SCHEMA_VERSION}): upgrade campaign-engine"
        )
    if version < SCHEMA_VERSION:
        state = "no campaign schema yet" if version == 0 else (
            f"schema version {version}, older than this code's ({SCHEMA_VERSION})")
        raise StoreError(f"store {where} has {state}: {how_to_migrate}")
    return version


def redact_url(url: str) -> str:
    """A store URL fit for messages and logs: no password, and no query value (libpq takes
    `?password=`, `sslpassword=`...), is ever shown; a key=value DSN loses its password."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", url, flags=re.IGNORECASE)
    rest, qmark, query = rest.partition("?")
    if qmark:
        query = "&".join(p.split("=", 1)[0] + "=***" if "=" in p else p
                         for p in query.split("#", 1)[0].split("&"))
    if "@" in rest:
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        rest = f"{user}:***@{host}" if ":" in creds else f"{user}@{host}"
    return f"{scheme}://{rest}{qmark}{query}"


# -- helpers every backend shares -------------------------------------------------------------


def now_utc() -> datetime:
    """Wall-clock time of a write (the store is only called from activities and the CLI)."""
    return datetime.now(UTC)


#: Columns holding times; rows from every backend carry them as ISO 8601 text in UTC.
TIME_COLUMNS = frozenset({"created_at", "updated_at", "started_at", "ended_at", "applied_at"})


def iso(value: Any) -> Any:
    """A timestamp as ISO 8601 text in UTC with microseconds, whatever the backend returned.

    SQLite holds the text we wrote, psycopg returns datetimes and PostgREST returns
    Postgres's JSON rendering (which drops trailing zeros): one shape keeps sorting
    and comparing times the same on every backend. Anything else is returned as is.
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return value


def bare_message_id(message_id: str) -> str:
    """A Message-ID as stored, without the angle brackets providers often drop or add."""
    return message_id.strip().removeprefix("<").removesuffix(">")


def normalise_address(email: str) -> str:
    """Suppressions are keyed like leads: trimmed and lower-cased."""
    return email.strip().lower()


def trace_fields(envelope: Envelope) -> dict[str, Any]:
    """The node trace lifted out of an envelope into audit-log columns (schema 2).

    `outcome` lists each record's kind, with its `status` where it has one
    (`delivery:sent`, `lead:drafting`); `inputs_digest` is the records' shared
    inputs digest, or a digest of their distinct digests when they differ.
    """
    m = envelope.metadata
    outcomes: list[str] = []
    for r in envelope.records:
        status = r.data.get("status")
        label = f"{r.kind}:{status}" if isinstance(status, str) and status else r.kind
        if label not in outcomes:
            outcomes.append(label)
    digests = sorted({r.provenance.inputs_digest for r in envelope.records})
    return {
        "run_id": m.run_id,
        "attempt": m.attempt,
        "agent_version": m.agent_version,
        "started_at": m.started_at.astimezone(UTC),
        "ended_at": m.ended_at.astimezone(UTC),
        "duration_ms": round((m.ended_at - m.started_at).total_seconds() * 1000),
        "record_count": len(envelope.records),
        "outcome": ",".join(outcomes) or None,
        "inputs_digest": digests[0] if len(digests) == 1 else (digest(digests) if digests else None),
    }


def parse_json(value: Any, table: str, key: str) -> Any:
    """A JSON column's value: parsed when stored as text (SQLite), as is otherwise."""
    if not isinstance(value, str | bytes):
        return value
    try:
        return json.loads(value)
    except ValueError as exc:
        raise StoreError(f"malformed JSON in stored row: {exc}", table=table, key=key) from exc


def parse_lead(value: Any, key: str) -> Lead:
    """A stored lead, or StoreError naming it if the row no longer fits the model."""
    try:
        return Lead.model_validate(parse_json(value, "leads", key))
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise StoreError(f"malformed lead row: {exc}", table="leads", key=key) from exc


def parse_envelope(value: Any, key: str) -> Envelope:
    """A stored envelope, or StoreError naming it if the row no longer fits the model."""
    try:
        return Envelope.model_validate(parse_json(value, "audit_log", key))
    except ValueError as exc:
        raise StoreError(f"malformed envelope row: {exc}", table="audit_log", key=key) from exc


def draft_row(row: dict[str, Any]) -> dict[str, Any]:
    """A draft as every backend returns it: JSON parsed, `approved` a bool, times as text."""
    key = f"{row.get('campaign_id')}/{row.get('lead_id')}/{row.get('step')}"
    d = plain_row(row) or {}
    d["citations"] = parse_json(d["citations"], "drafts", key)
    d["provenance"] = parse_json(d["provenance"], "drafts", key)
    d["approved"] = bool(d["approved"])
    return d


def plain_row(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """A row with timestamps as ISO strings, so callers see one shape on every backend."""
    if row is None:
        return None
    return {k: iso(v) if k in TIME_COLUMNS else v for k, v in row.items()}


def report_rows(rows: list[dict[str, Any]], stage: str | None) -> list[dict[str, Any]]:
    """One outcome per lead, in the contract's shape, from the joined store rows.

    Each input row has: lead_id, email, draft_status, draft_error, approved,
    delivery, message_id, delivery_error. Shared so that every backend reports the
    same outcome for the same facts.
    """
    decided = stage in DECIDED_STAGES
    out = []
    for r in rows:
        draft_status = r["draft_status"] if r["draft_status"] in {"drafted", "failed"} else "pending"
        if r["delivery"] in {"sent", "suppressed", "failed"}:
            delivery = r["delivery"]
        elif draft_status == "failed" or (decided and not r["approved"]):
            delivery = "not_approved"
        else:
            delivery = "pending"
        out.append({
            "lead_id": r["lead_id"],
            "email": r["email"],
            "draft_status": draft_status,
            "delivery_status": delivery,
            "message_id": r["message_id"],
            "error": r["delivery_error"] or r["draft_error"],
        })
    return out


# -- erasure (`campaign forget`) --------------------------------------------------------------
#
# What `Store.forget(email)` does, the same on every backend (in one transaction on SQLite
# and PostgreSQL; as a sequence of idempotent requests over Supabase's REST API, the
# suppression first, so a run cut short has already stopped every send and is finished
# by running it again):
#
# - deleted, in every campaign: the person's `leads` rows (the lead JSON: name, company,
#   notes...), their `drafts`, `retrievals`, `deliveries` (status, Message-ID, provider
#   errors: nothing is kept, not even an anonymised row, so every count stays consistent
#   with the leads that remain), `delivery_events` for the address or the lead, their
#   lead-level `audit_log` entries (envelopes hold the lead and the drafts), and the
#   `embeddings` of texts derived from the lead (see `derived_text_hashes`);
# - redacted: the lead's id is removed from `approvals.lead_ids` and from campaign-level
#   audit entries (approval decisions), and the address is replaced with "[erased]" there;
# - recorded: one audit entry per campaign the person was in (agent `store.forget`,
#   record kind `erasure`) with the time, the reason, how many rows were erased and
#   the sha256 of the normalised address, but nothing else about the person: an
#   operator can show that an erasure happened and when, not what the data was;
# - kept: the normalised address in `suppressions`, with the reason "forgotten (erasure
#   request)". Keeping the address so that it is never contacted again is the standard,
#   lawful exception: the minimum needed to honour the objection to direct marketing
#   (GDPR art. 21(3)); without it a later import of the same list would email them again.
#
# Rows are found by the lead id the address has in each campaign (`lead_id_for`, a pure
# function of campaign and address) as well as by the address itself, so rows written
# after the lead row was gone (an activity in flight during the erasure) are found too
# by a second run. Not erased, because they are not in the store: Temporal's workflow
# histories (kept for the namespace's retention period; their payloads are encrypted
# when CAMPAIGN_ENCRYPTION_KEY is set) and messages already delivered (the `forget`
# command also deletes the outbox `.eml` files addressed to the person). Free text that
# mentions the person inside someone else's record (another lead's notes, an approval
# note) is not searched.

#: The suppression reason `forget` writes (an earlier reason is replaced by this one).
FORGOTTEN_REASON = "forgotten (erasure request)"

#: What redacted text is replaced with.
ERASED = "[erased]"

#: The keys of the dict `forget` returns, in order: rows deleted per table, then
#: `audit_log_redacted` (campaign-level entries redacted), `approvals` (decisions
#: redacted), `suppressions` (1 when the address was added or its reason changed) and
#: `campaigns` (how many campaigns held the person's data: each got an erasure entry).
FORGET_KEYS = ("leads", "drafts", "retrievals", "deliveries", "delivery_events", "audit_log",
               "embeddings", "audit_log_redacted", "approvals", "suppressions", "campaigns")

#: The tables whose rows belong to one lead, found by (campaign_id, lead_id); `leads`
#: is deleted last, so an erasure cut short is still found (by address) when it is re-run.
LEAD_TABLES = ("drafts", "retrievals", "deliveries", "audit_log", "delivery_events", "leads")

#: `derived_text_hashes(lead, campaign_brief)`: hashes of cached texts made from the lead.
DerivedHashes = Callable[[Lead, str], Iterable[str]]


def forget_addresses(email: str) -> list[str]:
    """The forms an address may be stored under: as leads (NFC) and as suppressions."""
    return list(dict.fromkeys([normalise_email(email), normalise_address(email)]))


def subject_digest(email: str) -> str:
    """The erasure's subject in the audit trail: sha256 of the normalised address.

    Not anonymous (anyone who knows the address can compute it, and the suppression
    list keeps the address anyway), but it lets an operator answer "was this address
    erased, and when?" without the trail itself holding the address.
    """
    return "sha256:" + hashlib.sha256(normalise_email(email).encode()).hexdigest()


def forget_pairs(email: str, campaign_ids: Iterable[str]) -> set[tuple[str, str]]:
    """(campaign_id, lead_id) the address has in each campaign, whether a lead row exists."""
    return {(cid, lead_id_for(cid, email)) for cid in campaign_ids}


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


# -- choosing a backend ---------------------------------------------------------------------


def open_store(target: str | Settings, *, auto_migrate: bool | None = None) -> Store:
    """The store for a URL or for the settings; nothing is connected until first use.

    With settings: `CAMPAIGN_STORE_URL` if set, else Supabase's REST API when both
    `SUPABASE_URL` and `SUPABASE_KEY` are set, else the embedded SQLite file.
    URLs: `sqlite:///PATH`, `postgresql://...` (or `postgres://...`).
    `auto_migrate` overrides the backend's default (SQLite migrates itself; shared
    stores only check the version).
    """
    if not isinstance(target, str):
        settings = target
        if not settings.store_url and settings.supabase_url and settings.supabase_key:
            from campaign_core.supabase_store import SupabaseStore

            return SupabaseStore(settings.supabase_url, settings.supabase_key.get_secret_value())
        target = settings.resolved_store_url
    url = target
    if url.startswith("sqlite:///"):
        from campaign_core.sqlite_store import SqliteStore

        return SqliteStore(url.removeprefix("sqlite:///"),
                           auto_migrate=True if auto_migrate is None else auto_migrate)
    if url.startswith(("postgresql://", "postgres://")):
        from campaign_core.postgres_store import PostgresStore

        return PostgresStore(url, auto_migrate=bool(auto_migrate))
    raise StoreError(
        f"unsupported store URL scheme {url.split(':', 1)[0]!r} in CAMPAIGN_STORE_URL: "
        "use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB"
    )
