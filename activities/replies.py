"""The reply agent: one pass over the IMAP reply mailbox (`CAMPAIGN_IMAP_URL`).

Started by the reply-mailbox schedule's workflow. It reads the URL (with its password)
from the worker's own settings, so the secret never enters Temporal history; it signals
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
from campaign_core.imap import (
    SETTING,
    PollSummary,
    ReplyPollInput,
    parse_imap_url,
    poll_mailbox,
)
from campaign_core.replies import CampaignSignals, ReplyDesk
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
        """Process the mailbox's new messages (at most `inp.limit`); counts of what came."""
        url = self.settings.imap_url.get_secret_value() if self.settings.imap_url else ""
        if not url.strip():
            raise permanent("InvalidInput", f"{SETTING} is not set on this worker: the reply "
                            "mailbox cannot be polled")
        try:
            config = parse_imap_url(url)
        except ValueError as exc:
            raise permanent("InvalidInput", str(exc)) from None
        # The replies' action workflows start on this deployment's queues (issue 27).
        desk = ReplyDesk(self.store, self.signals(activity.client(), prefix=inp.queue_prefix),
                         source="imap",
                         trusted_authserv_id=self.settings.trusted_authserv_id)
        report = await poll_mailbox(config, self.store, desk, limit=inp.limit,
                                    progress=lambda uid: activity.heartbeat(uid))
        return PollSummary.of(report)
