"""The canonical envelope every agent returns.

An envelope is the unit of record: who produced what, for which campaign, from which
inputs. A record without provenance cannot be constructed, so nothing enters the
store or the audit trail without saying where it came from.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


def digest(value: Any) -> str:
    """A stable sha256 of any JSON-able value: the 'inputs digest' of provenance."""
    raw = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


class Provenance(BaseModel):
    """Where a record came from: enough to reproduce or challenge it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(min_length=1, description="What the record was derived from.")
    agent: str = Field(min_length=1)
    created_at: datetime
    inputs_digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    model: str | None = Field(default=None, description="The LLM (or template) used, if any.")
    prompt_hash: str | None = Field(default=None, description="Hash of the exact prompt sent.")
    tokens: int | None = Field(default=None, ge=0, description="LLM tokens, prompt + output.")
    cost_usd: float | None = Field(default=None, ge=0)


class Record(BaseModel):
    """One fact an agent produced, e.g. a retrieved passage or a draft."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1)
    key: str = Field(min_length=1, description="Natural key, unique per kind in a campaign.")
    data: dict[str, Any] = Field(default_factory=dict)
    provenance: Provenance

    @model_validator(mode="before")
    @classmethod
    def _require_provenance(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("provenance") is None:
            raise ValueError("a record must carry provenance (source, agent, created_at, digest)")
        return value


class EnvelopeMetadata(BaseModel):
    """Who ran, for which campaign, which attempt, and when."""

    model_config = ConfigDict(extra="forbid")

    campaign_id: str = Field(min_length=1)
    run_id: str = Field(min_length=1, description="The Temporal workflow run that asked.")
    agent: str = Field(min_length=1)
    agent_version: str = Field(min_length=1)
    attempt: int = Field(ge=1)
    started_at: datetime
    ended_at: datetime

    @model_validator(mode="after")
    def _ordered(self) -> EnvelopeMetadata:
        if self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        return self


class Envelope(BaseModel):
    """What every agent returns: metadata plus records with provenance."""

    model_config = ConfigDict(extra="forbid")

    metadata: EnvelopeMetadata
    records: list[Record] = Field(default_factory=list)

    @property
    def envelope_id(self) -> str:
        """Deterministic id: the same agent, campaign, run and records give the same id."""
        m = self.metadata
        return "env_" + digest(
            [m.campaign_id, m.run_id, m.agent, [r.model_dump(mode="json") for r in self.records]]
        )[7:31]


class EnvelopeRef(BaseModel):
    """A pointer to an envelope kept in the store: what workflows carry instead of data."""

    envelope_id: str
    agent: str
    record_count: int = 0
    summary: str = ""
    #: The draft it stored failed its checks (the reason is in the store, not here).
    failed: bool = False


def now_utc() -> datetime:
    """Wall-clock time for activity metadata (never used in workflow code)."""
    return datetime.now(UTC)
