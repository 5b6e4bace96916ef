"""The Temporal Schedule that polls the IMAP reply mailboxes: one `ReplyMailboxPoll` every
CAMPAIGN_IMAP_POLL_SECONDS, reading CAMPAIGN_IMAP_URL's mailbox and each sender's own
(issue 28). It exists when there is a mailbox to read: CAMPAIGN_IMAP_URL is set, or a
sender has a reply mailbox.

The worker of the workflow queue makes it (or brings it to the current settings) when it
starts, so it sits beside the workflow it starts rather than in the control plane: the
worker imports nothing of `starter/` (tests/shape/test_layering.py).
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from campaign_core.imap import SETTING, ReplyPollInput, parse_imap_url
from campaign_core.queues import WORKFLOW_QUEUE, queue_name
from campaign_core.reply_mailboxes import senders_with_mailbox
from campaign_core.settings import Settings
from campaign_core.store.base import Store
from workflows.replies import ReplyMailboxPoll, reply_schedule_id

log = logging.getLogger("campaign.replies")

#: A poll that has not finished in this time is given up (the next firing goes on).
POLL_TIMEOUT = timedelta(minutes=30)


def reply_schedule(settings: Settings, prefix: str) -> Schedule:
    """Every CAMPAIGN_IMAP_POLL_SECONDS, one `ReplyMailboxPoll`; a firing is skipped while
    the previous poll still runs. The action carries no address and no password."""
    every = timedelta(seconds=settings.imap_poll_seconds)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ReplyMailboxPoll.run, ReplyPollInput(queue_prefix=prefix),
            id=reply_schedule_id(prefix), task_queue=queue_name(WORKFLOW_QUEUE, prefix),
            execution_timeout=POLL_TIMEOUT,
            static_summary=f"Poll the reply mailboxes (every {every})",
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=every),
        state=ScheduleState(note=f"reads {SETTING} and the senders' reply mailboxes every "
                                 f"{every}, marks messages seen, never deletes"),
    )


async def ensure_reply_schedule(client: Client, settings: Settings, prefix: str, *,
                                store: Store | None = None) -> bool:
    """Create the reply-mailbox schedule, or bring an existing one to the current settings
    (keeping its paused state); False when there is no mailbox to poll: CAMPAIGN_IMAP_URL
    is not set and (given the `store`) no sender has a reply mailbox of its own (issue 28).
    Idempotent."""
    url = settings.imap_url.get_secret_value() if settings.imap_url else ""
    if url.strip():
        parse_imap_url(url)  # a bad URL stops the worker here
    elif store is None or not await senders_with_mailbox(store):
        return False
    schedule = reply_schedule(settings, prefix)
    sid = reply_schedule_id(prefix)
    try:
        await client.create_schedule(sid, schedule)
        log.info("reply mailbox: schedule %s created (every %ss)", sid, settings.imap_poll_seconds)
    except ScheduleAlreadyRunningError:
        def keep_state(inp: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=dataclasses.replace(
                schedule, state=inp.description.schedule.state))

        await client.get_schedule_handle(sid).update(keep_state)
    return True
