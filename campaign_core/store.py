"""The store interface every agent and the control plane use, and how to open one.

Activities never talk to a database directly: they call a `Store`, so the backend
(SQLite by default; Postgres and Supabase later) is a setting, not a code change.
Every write is an idempotent upsert by natural key, so a retried activity never
duplicates a row.
"""

from __future__ import annotations

from typing import Any, Protocol

from campaign_core.envelope import Envelope
from campaign_core.leads import Lead
from campaign_core.models import Counts

SCHEMA_VERSION = 1


class StoreError(Exception):
    """A store problem no retry will fix (bad row, constraint); names table and key."""


class Store(Protocol):
    """What the engine needs from its durable record."""

    async def migrate(self) -> int: ...

    async def schema_version(self) -> int: ...

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

    async def counts(self, campaign_id: str) -> Counts: ...

    async def report(self, campaign_id: str) -> list[dict[str, Any]]: ...

    async def audit(self, campaign_id: str, lead_id: str | None = None) -> list[dict[str, Any]]:
        ...


def open_store(url: str) -> Store:
    """The store for a URL: `sqlite:///path` (embedded default)."""
    if url.startswith("sqlite:///"):
        from campaign_core.sqlite_store import SqliteStore

        return SqliteStore(url.removeprefix("sqlite:///"))
    raise StoreError(
        f"unsupported store URL scheme in {url.split(':', 1)[0]!r}: use sqlite:///PATH"
    )
