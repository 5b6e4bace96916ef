"""The task queues and their limits, and the search attributes every workflow sets.

What the control plane and the worker both name: a starter puts a campaign on
`WORKFLOW_QUEUE` (under the deployment's prefix), the worker polls every queue here. Which
agent runs on which queue is the agent registry's business (activities/registry.py), which
only the worker and the workflows import: it knows the agent classes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QueueSpec:
    """A task queue and its limits: concurrency per worker, a server-enforced rate."""

    name: str
    max_concurrent: int
    rate_per_second: float | None = None


WORKFLOW_QUEUE = "workflows"

QUEUES: dict[str, QueueSpec] = {
    q.name: q
    for q in (
        QueueSpec(WORKFLOW_QUEUE, max_concurrent=200),  # orchestrators
        QueueSpec("store", max_concurrent=20),  # reads and writes to the store
        QueueSpec("knowledge", max_concurrent=8),  # retrieval over the knowledge base
        QueueSpec("llm", max_concurrent=8, rate_per_second=5.0),  # the copywriter
        QueueSpec("delivery", max_concurrent=4, rate_per_second=10.0),  # sending
    )
}

#: Search attributes every workflow of this project sets (no personal data in them).
SEARCH_ATTRIBUTES = {"CampaignId": "Keyword", "CampaignStage": "Keyword", "Flow": "Keyword"}


def queue_name(queue: str, prefix: str = "") -> str:
    """The real task-queue name for a logical queue under a deployment prefix."""
    return f"{prefix}{queue}"
