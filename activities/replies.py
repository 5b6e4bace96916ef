"""The reply agent: one pass over the IMAP reply mailbox (`CAMPAIGN_IMAP_URL`).

Started by the reply-mailbox schedule's workflow. It reads the URL (with its password)
from the worker's own settings, so the secret never enters Temporal history; it signals
the campaigns of the replies it matches through the worker's Temporal client, and it
heartbeats the UID it reached. See campaign_core/imap.py for how each message is
processed exactly once.
"""

from __future__ import annotations

from temporalio import activity

from activities.base import Agent, permanent
from campaign_core.imap import (
    SETTING,
    PollSummary,
    ReplyPollInput,
    parse_imap_url,
    poll_mailbox,
)
from campaign_core.replies import ReplyDesk, temporal_signal


class ReplyAgent(Agent):
    name = "replies"

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
        desk = ReplyDesk(self.store, temporal_signal(activity.client()), source="imap",
                         trusted_authserv_id=self.settings.trusted_authserv_id)
        report = await poll_mailbox(config, self.store, desk, limit=inp.limit,
                                    progress=lambda uid: activity.heartbeat(uid))
        return PollSummary.of(report)
