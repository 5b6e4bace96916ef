"""ReplyMailboxPoll: what the reply-mailbox schedule starts, every CAMPAIGN_IMAP_POLL_SECONDS.

One activity does the pass (the agent reads the mailbox URL from its worker's settings);
the workflow only gives it Temporal's retries and a place in the Web UI. The schedule
skips a firing while the previous poll still runs.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.replies import ReplyAgent
    from campaign_core.imap import PollSummary, ReplyPollInput
    from workflows.agents import call_agent

#: The schedule's id and its workflows' base id (Temporal appends each firing's time).
REPLY_SCHEDULE_ID = "campaign-replies-poll"


def reply_schedule_id(prefix: str = "") -> str:
    """One reply-mailbox schedule per deployment (task-queue prefix)."""
    return f"{prefix}{REPLY_SCHEDULE_ID}"


@workflow.defn(name="ReplyMailboxPoll")
class ReplyMailboxPoll:
    @workflow.run
    async def run(self, inp: ReplyPollInput) -> PollSummary:
        summary = await call_agent(ReplyAgent.poll_reply_mailbox, inp, prefix=inp.queue_prefix,
                                   summary="read the reply mailbox's new messages")
        workflow.set_current_details(
            f"{summary.processed} message(s): {summary.replies} replies, {summary.auto_replies} "
            f"automatic, {summary.bounces} bounces, {summary.unmatched} unmatched")
        return summary
