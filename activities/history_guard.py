"""The worker interceptor that keeps personal data in activity failures out of history.

A failure message reaches Temporal history (the activity's failed/started events, then
the workflow's), and an exception's causes travel with it. Every exception leaving an
activity is replaced by one `ApplicationError` with the same type and retry settings, a
message fit for history (`campaign_core.history_text`) and no cause; the full reason is
written to the lead's audit trail, where `record_lead_failure` and `campaign audit` find it.
"""

from __future__ import annotations

import logging
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, FailureError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from campaign_core.envelope import (
    Envelope,
    EnvelopeMetadata,
    Provenance,
    Record,
    digest,
    now_utc,
)
from campaign_core.history_text import foreign_message, own_message
from campaign_core.store.base import Store

log = logging.getLogger("campaign.history_guard")

#: The audit record kind of a failure's full reason.
FAILURE_KIND = "failure"
#: Longest reason kept.
MAX_REASON = 2000


class PrivateReasonError(ApplicationError):
    """An agent's error whose message is written for history and whose `private` reason
    (quoting lead data, claim text or a provider's reply) goes to the store only."""

    def __init__(self, message: str, *, type: str, private: str, non_retryable: bool = True
                 ) -> None:
        super().__init__(message, type=type, non_retryable=non_retryable)
        self.private = private


def full_reason(err: BaseException) -> str:
    """What the store keeps: the innermost cause's message (the one that names what went
    wrong, as the workflows' `failure_reason` reads it), a `PrivateReasonError`'s own
    reason in full."""
    cur, seen = err, {id(err)}
    while cur.__cause__ is not None and id(cur.__cause__) not in seen:
        cur = cur.__cause__
        seen.add(id(cur))
    if isinstance(cur, PrivateReasonError):
        return cur.private[:MAX_REASON]
    text = cur.message if isinstance(cur, FailureError) else str(cur)
    return (text or type(cur).__name__)[:MAX_REASON]


def history_safe(err: Exception) -> ApplicationError:
    """`err` as it may enter history: same type and retry settings, a safe message."""
    if isinstance(err, ApplicationError):  # written by an agent: ids and counts
        message = own_message(err.message)
        return ApplicationError(message, type=err.type, non_retryable=err.non_retryable,
                                next_retry_delay=err.next_retry_delay, category=err.category)
    return ApplicationError(foreign_message(str(err)) or type(err).__name__,
                            type=type(err).__name__)


class HistoryGuard(Interceptor):
    """Installed on every worker (worker_main.build_workers)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Guarded(next, self.store)


class _Guarded(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, store: Store) -> None:
        super().__init__(next)
        self.store = store

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await self.next.execute_activity(input)
        except Exception as err:
            if isinstance(err, FailureError) and not isinstance(err, ApplicationError):
                raise  # cancellation and other SDK signals pass as they are
            safe = history_safe(err)
            await self._keep(input, err, safe)
            raise safe from None

    async def _keep(self, input: ExecuteActivityInput, err: Exception, safe: ApplicationError
                    ) -> None:
        """Write the full reason to the lead's audit trail (activities about one lead)."""
        arg = input.args[0] if input.args else None
        campaign_id = getattr(arg, "campaign_id", None)
        lead_id = getattr(arg, "lead_id", None)
        if not isinstance(campaign_id, str) or not isinstance(lead_id, str):
            return
        info = activity.info()
        at = now_utc()
        data = {"activity": info.activity_type, "attempt": info.attempt,
                "error_type": safe.type, "reason": full_reason(err),
                "in_history": safe.message, "retryable": not safe.non_retryable}
        envelope = Envelope(
            metadata=EnvelopeMetadata(
                campaign_id=campaign_id, run_id=info.workflow_run_id or info.activity_id,
                agent=f"worker.{info.activity_type}", agent_version="1", attempt=info.attempt,
                started_at=at, ended_at=at),
            records=[Record(kind=FAILURE_KIND, key=f"{info.activity_type}:{info.attempt}",
                            data=data, provenance=Provenance(
                                source=f"activity:{info.activity_type}", agent="worker",
                                created_at=at, inputs_digest=digest(data)))],
        )
        try:
            await self.store.save_envelope(envelope, lead_id)
        except Exception as exc:  # the store may be what failed; the failure still stands
            log.warning("could not keep the full reason of a failed %s: %s",
                        info.activity_type, type(exc).__name__)


async def latest_failure_reason(store: Store, campaign_id: str, lead_id: str) -> str | None:
    """The full reason of the lead's latest activity failure, from its audit trail."""
    for entry in reversed(await store.audit(campaign_id, lead_id)):
        for record in entry.envelope.get("records", []):
            if record.get("kind") == FAILURE_KIND:
                reason = record.get("data", {}).get("reason")
                return str(reason) if reason is not None else None
    return None
