"""Replies in, on the control plane: the inbound webhook's body, polling by hand, listing,
and confirming a reply nobody vouched for. The Temporal Schedule that polls the IMAP reply
mailboxes (CAMPAIGN_IMAP_URL's and the senders') is the worker's to make:
workflows/reply_schedule.py.

The matching itself is `campaign_core.replies.ReplyDesk`, the same for the webhook, the
schedule's activity and `campaign replies poll`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError
from temporalio.client import Client

from campaign_core.imap import PollReport
from campaign_core.inbound import InboundMessage, with_report
from campaign_core.replies import ConfirmResult, InboundResult, ReplyDesk
from campaign_core.reply_mailboxes import poll_reply_mailboxes
from campaign_core.settings import Settings
from campaign_core.store.base import Store
from workflows.signals import TemporalCampaignSignals

log = logging.getLogger("campaign.replies")

#: The most messages one inbound webhook call may carry.
MAX_MESSAGES = 100


class InboundBodyError(ValueError):
    """An inbound webhook body that does not fit: FastAPI-style errors, each naming its field."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


def inbound_messages(data: Any) -> list[InboundMessage]:
    """One message or a list of them, every invalid one named by position and field."""
    items = data if isinstance(data, list) else [data]
    if not items or len(items) > MAX_MESSAGES:
        raise InboundBodyError([{"loc": ["body"], "type": "too_long" if items else "too_short",
                                 "msg": f"1 to {MAX_MESSAGES} messages per call"}])
    messages: list[InboundMessage] = []
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = [i] if isinstance(data, list) else []
        try:
            messages.append(InboundMessage.model_validate(item))
        except ValidationError as err:
            errors += [{"loc": ["body", *where, *e["loc"]], "type": e["type"], "msg": e["msg"]}
                       for e in err.errors(include_url=False, include_input=False)]
    if errors:
        raise InboundBodyError(errors[:100])
    return messages


def read_inbound_body(raw: bytes) -> list[InboundMessage]:
    """The inbound webhook's body as messages ready to process: the JSON, each message
    validated, a delivery report's DSN fields read from its text (`with_report`). CPU
    work bounded by the caps, which the route runs on a worker thread so that a large
    body leaves /health and the workers' heartbeats alone (issue 25: a large body froze
    /health; docs/performance.md, "Reading hostile mail"). InboundBodyError names what does not fit."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as err:  # RecursionError: arrays nested thousands deep
        raise InboundBodyError([{"loc": ["body"], "type": "json_invalid",
                                 "msg": f"not JSON: {str(err)[:200]}"}]) from err
    return [with_report(m) for m in inbound_messages(data)]


async def process_inbound(store: Store, client: Client, messages: list[InboundMessage],
                          *, source: str = "webhook", trusted_authserv_id: str | None = None,
                          prefix: str | None = None) -> list[InboundResult]:
    """Match, record and signal each message, in order. `trusted_authserv_id` is
    CAMPAIGN_TRUSTED_AUTHSERV_ID (None: no address-only match is verified)."""
    desk = ReplyDesk(store, TemporalCampaignSignals(client, prefix=prefix), source=source,
                     trusted_authserv_id=trusted_authserv_id)
    return [await desk.process(msg) for msg in messages]


async def confirm_reply(store: Store, client: Client, reply_id: str, *, by: str,
                        prefix: str | None = None) -> ConfirmResult:
    """`campaign replies confirm`: a person vouches for a reply recorded unverified (see
    `ReplyDesk.confirm`: its reply action runs); UnknownReply / NothingToConfirm when there is
    nothing to confirm."""
    desk = ReplyDesk(store, TemporalCampaignSignals(client, prefix=prefix), source="confirm")
    return await desk.confirm(reply_id, by=by)


async def poll_by_hand(settings: Settings, store: Store, client: Client) -> PollReport:
    """`campaign replies poll`: one pass over the reply mailboxes, as the schedule's would
    do: CAMPAIGN_IMAP_URL's and each sender's own (issue 28). ValueError when there is no
    mailbox to read; a sender's mailbox that cannot be read is skipped, its reason in the
    report's `mailboxes` (and the log)."""
    desk = ReplyDesk(store, TemporalCampaignSignals(client, prefix=settings.task_queue_prefix),
                     source="imap", trusted_authserv_id=settings.trusted_authserv_id)
    return await poll_reply_mailboxes(store, settings, desk)
