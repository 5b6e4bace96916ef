"""A person's answer to a reply: what the answer workflow carries and how its message is named.

The inbox (starter/inbox.py) claims the answer in the store (`claim_answer_send`), then
starts `AnswerWorkflow` (workflows/answer.py) with the id `answer_workflow_id(reply_id)`;
its activity (`DeliveryAgent.send_answer`) renders and sends the message. Only the reply's
id travels through history: the text, the address and the name of who sent it stay in the
store. The message key, and so the Message-ID, is a function of the reply's id: every
attempt, and every press of "send", names the same message.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from pydantic import BaseModel, Field

#: The answer's subject when nobody wrote one: `Re:` and theirs (a reply in their thread).
_RE = re.compile(r"^(\s*re\s*:\s*)+", re.IGNORECASE)
#: The audit record kinds of an answer: the moment before the SMTP commit, and the send.
ANSWER_COMMITTING = "answer_committing"
ANSWER_SENT = "answer_sent"


class AnswerInput(BaseModel):
    """What `AnswerWorkflow` and its activity are given: the reply's id, nothing personal."""

    reply_id: str = Field(min_length=1, max_length=200)
    queue_prefix: str = ""


class AnswerOutcome(BaseModel):
    """What became of the send: `sent` now, or `already_sent` by an earlier run."""

    reply_id: str
    status: Literal["sent", "already_sent"]
    message_id: str | None = None
    channel: str | None = None


def answer_workflow_id(reply_id: str) -> str:
    """The one workflow that may send the answer to this reply."""
    return f"answer:{reply_id}"


def answer_key(reply_id: str) -> str:
    """The message key (and so the Message-ID's left part) of the answer to this reply."""
    return "ans_" + hashlib.sha256(reply_id.encode()).hexdigest()[:32]


def reply_subject(their_subject: str) -> str:
    """`Re: <their subject>`, with no pile-up of `Re:`; `Re:` alone when they gave none."""
    base = _RE.sub("", their_subject.strip())
    return f"Re: {base}".strip()[:998]
