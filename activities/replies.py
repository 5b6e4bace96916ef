"""The reply agent: one pass over the IMAP reply mailboxes: `CAMPAIGN_IMAP_URL`'s and each
sender's own (issue 28; campaign_core/reply_mailboxes.py).

Started by the reply-mailbox schedule's workflow. It reads the URLs (with their passwords)
from the worker's own settings and, for a sender, unseals the stored reference
(`env:VAR` or `enc:...`) itself, so no secret ever enters Temporal history; it signals
the campaigns of the replies it matches through the worker's Temporal client, and it
heartbeats the UID it reached. See campaign_core/imap.py for how each message is
processed exactly once.

The signals go by the workflows' handler references, which an activity may not import
(tests/shape/test_layering.py): the worker gives the agent how to make them
(`workflows.signals.TemporalCampaignSignals`, in worker_main.build_agents).
"""

from __future__ import annotations

from collections.abc import Callable

from temporalio import activity

from activities.base import Agent, permanent
from campaign_core.imap import PollSummary, ReplyPollInput
from campaign_core.replies import CampaignSignals, ReplyDesk
from campaign_core.reply_mailboxes import poll_reply_mailboxes
from campaign_core.settings import Settings
from campaign_core.store.base import Store


class ReplyAgent(Agent):
    name = "replies"

    def __init__(self, store: Store, settings: Settings, *,
                 signals: Callable[..., CampaignSignals]) -> None:
        super().__init__(store, settings)
        #: How to tell campaigns through a Temporal client (the activity's, the worker's),
        #: given it and the deployment's task-queue `prefix`.
        self.signals = signals

    @activity.defn(name="poll_reply_mailbox")
    async def poll_reply_mailbox(self, inp: ReplyPollInput) -> PollSummary:
        """Process the new messages of CAMPAIGN_IMAP_URL's mailbox and of each sender's
        (at most `inp.limit` a mailbox); counts of what came. A sender's mailbox that
        cannot be read is skipped (named in `skipped`, the reason in the worker's log)."""
        # The replies' action workflows start on this deployment's queues (issue 27).
        desk = ReplyDesk(self.store, self.signals(activity.client(), prefix=inp.queue_prefix),
                         source="imap",
                         trusted_authserv_id=self.settings.trusted_authserv_id)
        try:
            report = await poll_reply_mailboxes(
                self.store, self.settings, desk, limit=inp.limit,
                progress=lambda uid: activity.heartbeat(uid))
        except ValueError as exc:  # nothing to read, or CAMPAIGN_IMAP_URL malformed
            raise permanent("InvalidInput", f"{exc}: the reply mailbox cannot be polled on "
                            "this worker") from None
        return PollSummary.of(report)
