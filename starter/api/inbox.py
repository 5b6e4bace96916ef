"""The inbox over HTTP: the replies that need a person, their answers, sending one once.

Through the same `starter.inbox` as `campaign inbox` and the page `/review/inbox`. The
service token, or a reviewer's token (the gate lets it reach these routes, as it does the
review routes; the reviewer then is who acts, whatever `by` says). 404 for an unknown reply,
409 when its state refuses (an answer already sent cannot be edited, a webhook campaign or a
suppressed address gets no answer), 422 for a body that does not fit.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from campaign_core.intents import ReplyIntent
from campaign_core.store.rows import InboxItem
from starter import inbox
from starter.actor import acting_as
from starter.api.deps import AUTHORISED, Manager
from starter.inbox import AnswerSaved, AnswerSent, Done, IntentChanged
from starter.limits import MAX_BODY, MAX_SUBJECT

router = APIRouter(dependencies=AUTHORISED)

ReplyId = Annotated[str, Path(min_length=1, max_length=200)]
By = Field(default=None, min_length=1, max_length=200,
           description="Who acts (default `api`; a reviewer's token names its reviewer).")


class AnswerRequest(BaseModel):
    """`POST /inbox/{reply_id}/answer`: an edit of the answer, and whether to send it."""

    model_config = ConfigDict(extra="forbid")

    subject: str | None = Field(default=None, min_length=1, max_length=MAX_SUBJECT)
    body: str | None = Field(default=None, min_length=1, max_length=MAX_BODY)
    send: bool = Field(default=False, description="Send the answer (once, however often "
                       "asked); false: only save the edit.")
    by: str | None = By


class IntentRequest(BaseModel):
    """`POST /inbox/{reply_id}/intent`: a person's reading of the reply."""

    model_config = ConfigDict(extra="forbid")

    intent: ReplyIntent
    by: str | None = By


class DoneRequest(BaseModel):
    """`POST /inbox/{reply_id}/done` (the body is optional)."""

    model_config = ConfigDict(extra="forbid")

    by: str | None = By


@router.get("/inbox", response_model=list[InboxItem])
async def list_inbox(
    m: Manager,
    campaign: Annotated[str | None, Query(min_length=1, max_length=64,
                                          description="Only this campaign's replies.")] = None,
    intent: Annotated[list[ReplyIntent] | None, Query(
        description="Only these intents (repeat the parameter for several).")] = None,
) -> list[InboxItem]:
    """The replies that need a person, newest first (as `campaign inbox --json`): each with
    `reply_id`, `campaign_id`, `lead_id`, `email`, `intent`, `confidence`, `action`,
    `received_at`, `excerpt` and `answer` (`status` `drafted|sending|sent|none`, `subject`,
    `body`)."""
    return await inbox.inbox(m, campaign_id=campaign,
                             intents=[i.value for i in intent] if intent else None)


@router.post("/inbox/{reply_id}/answer", response_model=AnswerSent | AnswerSaved,
             responses={404: {"description": "No such reply"},
                        409: {"description": "The answer was sent already (an edit), or cannot "
                                             "go: webhook channel, suppressed address, "
                                             "unverified reply"}})
async def answer(reply_id: ReplyId, body: AnswerRequest, request: Request, m: Manager
                 ) -> AnswerSent | AnswerSaved:
    """Edit the answer (`subject`, `body`) and, with `"send": true`, send it: exactly once,
    however often this is called (`status` `sent`, then `already_sent`; `sending` while the
    workflow still runs)."""
    who = acting_as(request, body.by)
    if body.send:
        return await inbox.send_answer(m, reply_id, by=who, subject=body.subject,
                                       body=body.body)
    return await inbox.save_answer(m, reply_id, subject=body.subject, body=body.body, by=who)


@router.post("/inbox/{reply_id}/intent", response_model=IntentChanged,
             responses={404: {"description": "No such reply"}})
async def change_intent(reply_id: ReplyId, body: IntentRequest, request: Request, m: Manager
                        ) -> IntentChanged:
    """Record the person's reading of the reply; the action follows the new intent."""
    return await inbox.change_intent(m, reply_id, body.intent.value,
                                     by=acting_as(request, body.by))


@router.post("/inbox/{reply_id}/done", response_model=Done,
             responses={404: {"description": "No such reply"}})
async def done(reply_id: ReplyId, request: Request, m: Manager, body: DoneRequest | None = None
               ) -> Done:
    """Take the reply off the inbox."""
    return await inbox.mark_done(m, reply_id, by=acting_as(request, body.by if body else None))
