"""Who decided: kept in the store by the control plane, out of Temporal history.

`campaign approve --by NAME --note TEXT` (and the API) would put a person's name and
free text into the approve Update's payload, which history keeps in clear without an
encryption key. The control plane records them here first, as an audit entry, and the
Update carries only the entry's id (`Approval.request_id`); the store agent that records
the decision reads the name and note back from it.
"""

from __future__ import annotations

from campaign_core.envelope import Envelope, EnvelopeMetadata, Provenance, Record, digest, now_utc

#: The audit record kind that holds a decision's author and note.
DECISION_REQUEST = "decision_request"

#: What the Update's `by` says when the author is in the store.
IN_THE_STORE = "(recorded in the store)"
#: The agent of decision requests: a hand-off to the workflow, not a step of the trail
#: (`audit` leaves them out, so a refused attempt changes nothing a reader sees).
REQUEST_AGENT = "control_plane.decision"


def decision_request(campaign_id: str, decision: str, by: str, note: str | None,
                     lead_ids: list[str] | None = None) -> Envelope:
    """The audit entry of a person's decision as the control plane received it."""
    at = now_utc()
    data = {"decision": decision, "by": by, "note": note, "lead_ids": lead_ids}
    return Envelope(
        metadata=EnvelopeMetadata(campaign_id=campaign_id, run_id="control-plane",
                                  agent=REQUEST_AGENT, agent_version="1", attempt=1,
                                  started_at=at, ended_at=at),
        records=[Record(kind=DECISION_REQUEST, key=decision, data=data, provenance=Provenance(
            source=f"person:{by}", agent="control_plane", created_at=at,
            inputs_digest=digest(data)))],
    )
