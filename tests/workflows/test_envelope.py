"""The canonical envelope: nothing without provenance, stable ids, round-trips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from campaign_core.envelope import Envelope, EnvelopeMetadata, Provenance, Record, digest

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def prov(**kw: object) -> Provenance:
    base = dict(source="kb:pricing.md", agent="knowledge", created_at=T0,
                inputs_digest=digest({"a": 1}))
    return Provenance(**{**base, **kw})


def meta(**kw: object) -> EnvelopeMetadata:
    base = dict(campaign_id="c1", run_id="r1", agent="knowledge.retrieve", agent_version="1",
                attempt=1, started_at=T0, ended_at=T0 + timedelta(seconds=1))
    return EnvelopeMetadata(**{**base, **kw})


def test_record_without_provenance_is_rejected() -> None:
    with pytest.raises(ValidationError, match="provenance"):
        Record.model_validate({"kind": "draft", "key": "l1", "data": {}})
    with pytest.raises(ValidationError, match="provenance"):
        Record.model_validate({"kind": "draft", "key": "l1", "provenance": None})


def test_envelope_with_a_bare_record_is_rejected() -> None:
    raw = {"metadata": meta().model_dump(), "records": [{"kind": "passage", "key": "p1"}]}
    with pytest.raises(ValidationError, match=r"records\.0"):
        Envelope.model_validate(raw)


def test_provenance_needs_a_real_digest_and_agent() -> None:
    with pytest.raises(ValidationError, match="inputs_digest"):
        prov(inputs_digest="md5:abc")
    with pytest.raises(ValidationError, match="agent"):
        prov(agent="")


def test_metadata_times_must_be_ordered_and_attempt_positive() -> None:
    with pytest.raises(ValidationError, match="ended_at"):
        meta(ended_at=T0 - timedelta(seconds=1))
    with pytest.raises(ValidationError, match="attempt"):
        meta(attempt=0)


def test_digest_is_stable_and_order_insensitive() -> None:
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2})


def test_envelope_round_trips_and_id_is_deterministic() -> None:
    env = Envelope(metadata=meta(), records=[
        Record(kind="draft", key="l1", data={"subject": "Hi"}, provenance=prov(model="gpt-x")),
    ])
    again = Envelope.model_validate_json(env.model_dump_json())
    assert again == env
    assert again.envelope_id == env.envelope_id
    other = env.model_copy(update={"records": []})
    assert other.envelope_id != env.envelope_id
    assert again.records[0].provenance.model == "gpt-x"
