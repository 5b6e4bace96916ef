"""Senders (issue 28): the mailboxes a campaign sends from, as records.

A sender is a mailbox with a From, a way to send (an SMTP URL, or the outbox), an optional
reply mailbox, caps (a rolling 24 hours, a rolling hour, a minimum gap), an optional warm-up
ramp and an optional DKIM key. Its secrets (the URLs, the DKIM key) are stored as a
reference, never in clear: `env:VARIABLE` (read by the worker when it sends) or `enc:...`
(AES-GCM under CAMPAIGN_ENCRYPTION_KEY; `campaign_core/secret_refs.py`).

Every send of a mailbox, from every campaign, is one row of `sender_sends` (a *claim*),
appended in order (`seq`) when the send is made: the caps are checked against those rows
at that moment, so two campaigns sharing a mailbox share its cap
(`campaign_core/sender_capacity.py`). A send without capacity waits on the store's
schedule (`sequence_steps`, `wait_reason`) until its planned slot.

These are the shapes every layer shares: the store returns them, the control plane
prints them (`campaign sender list --json`), the delivery agent reads them.
"""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import formataddr, parseaddr
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: How a sender sends: through its SMTP URL, or into the outbox folder with its From.
SenderTransport = Literal["smtp", "outbox"]
#: Why a send waits on the schedule instead of going out: no capacity in the mailbox
#: now (`capacity`), or its sender is paused (`paused`) until a person resumes it.
WaitReason = Literal["capacity", "paused"]
#: What a delivery event did to the sender's health.
SenderEventKind = Literal["bounce", "complaint"]

#: A sender's name: what `--senders a,b` and the URLs name.
SENDER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

#: Defaults when `campaign sender add` leaves a flag out (issue 28): Instantly recommends
#: about 30 a day per mailbox and lemlist at most 40 for a new one; 12 an hour and a
#: minute between two sends keep a day's sends spread out (docs/senders.md).
DEFAULT_DAILY_CAP = 40
DEFAULT_HOURLY_CAP = 12
DEFAULT_MIN_GAP_SECONDS = 60
#: The health window: rates over the sender's last this many sends.
HEALTH_WINDOW = 100
#: A sender pauses itself when complaints pass this rate with at least one complaint
#: (Gmail's bulk-sender rule: under 0.3%, aim for 0.1%).
MAX_COMPLAINT_RATE = 0.001
MIN_COMPLAINTS = 1
#: ... or when bounces pass CAMPAIGN_SENDER_MAX_BOUNCE_RATE with at least this many.
MIN_BOUNCES = 3


class SenderSpec(BaseModel):
    """What `campaign sender add` and `POST /senders` give, validated at the boundary.

    `smtp_url`, `imap_url` and `dkim_key` are in clear here (or `env:VAR`); the store
    only ever receives them sealed (`secret_refs.seal`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(description="The sender's name: lower-case letters, digits, - and _.")
    from_: str = Field(alias="from", description='"Display Name <address>"')
    transport: SenderTransport = "smtp"
    smtp_url: str | None = Field(default=None, description="smtp(s):// URL or env:VARIABLE")
    imap_url: str | None = Field(default=None, description="imap(s):// URL or env:VARIABLE")
    daily_cap: int = Field(default=DEFAULT_DAILY_CAP, ge=1, le=100_000)
    hourly_cap: int = Field(default=DEFAULT_HOURLY_CAP, ge=1, le=100_000)
    min_gap_seconds: int = Field(default=DEFAULT_MIN_GAP_SECONDS, ge=0, le=86_400)
    ramp_start: int | None = Field(default=None, ge=1, le=100_000)
    ramp_step: int | None = Field(default=None, ge=0, le=100_000)
    dkim_selector: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    dkim_key: str | None = Field(default=None, description="The DKIM private key, PEM.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not SENDER_NAME.match(value):
            raise ValueError("a sender's name is 1-63 lower-case letters, digits, - or _, "
                             "starting with a letter or digit")
        return value

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        name, address = parseaddr(value)
        if not address or "@" not in address or address.startswith("@") or "\n" in value:
            raise ValueError('give the From as "Display Name <address@domain>"')
        return formataddr((" ".join(name.split()), address)) if name else address

    @model_validator(mode="after")
    def _consistent(self) -> SenderSpec:
        if self.transport == "smtp" and not self.smtp_url:
            raise ValueError("an smtp sender needs smtp_url (a URL or env:VARIABLE)")
        if self.transport == "outbox" and self.smtp_url:
            raise ValueError("an outbox sender takes no smtp_url")
        if (self.ramp_start is None) != (self.ramp_step is None):
            raise ValueError("give ramp_start and ramp_step together")
        if (self.dkim_key is None) != (self.dkim_selector is None):
            raise ValueError("give dkim_key and dkim_selector together")
        return self


class SenderRow(BaseModel):
    """A sender as the store holds it: secrets sealed (`env:VAR` or `enc:...`)."""

    model_config = ConfigDict(frozen=True)

    name: str
    from_addr: str = Field(description='"Display Name <address>" as given')
    transport: SenderTransport
    smtp_url: str | None = None
    imap_url: str | None = None
    daily_cap: int = DEFAULT_DAILY_CAP
    hourly_cap: int = DEFAULT_HOURLY_CAP
    min_gap_seconds: int = DEFAULT_MIN_GAP_SECONDS
    ramp_start: int | None = None
    ramp_step: int | None = None
    dkim_selector: str | None = None
    dkim_key: str | None = None
    paused: bool = False
    paused_reason: str | None = None
    paused_at: datetime | None = None
    created_at: datetime
    removed_at: datetime | None = None

    @property
    def address(self) -> str:
        return parseaddr(self.from_addr)[1]

    @property
    def display_name(self) -> str:
        return parseaddr(self.from_addr)[0]

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()


class SenderClaim(BaseModel):
    """One send of a mailbox (any campaign), appended in order when it is made.

    `seq` is the sender's own sequence number (1, 2, ...): a claim is written as
    `seq = last + 1`, and a second writer that read the same last claim fails on the
    (sender, seq) key and reads again, so the caps are checked against every earlier send
    on every backend. `day_number` is n for the n-th UTC day on which the sender sent
    anything (the warm-up ramp's day)."""

    model_config = ConfigDict(frozen=True)

    sender: str
    seq: int
    message_key: str
    campaign_id: str | None = None
    lead_id: str | None = None
    sent_at: datetime
    day_number: int = 1
    bounced: bool = False
    complained: bool = False


class SenderHealth(BaseModel):
    """Bounces and complaints over the sender's last HEALTH_WINDOW sends."""

    sends: int = 0
    bounces: int = 0
    complaints: int = 0

    @property
    def bounce_rate(self) -> float:
        return self.bounces / self.sends if self.sends else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.sends if self.sends else 0.0


class SenderStatus(BaseModel):
    """One item of `campaign sender list --json` / `GET /senders` (CONTRACT.md, Senders)."""

    name: str
    from_: str = Field(serialization_alias="from")
    transport: SenderTransport
    smtp_url: str | None = Field(default=None, description="redacted")
    imap_url: str | None = Field(default=None, description="redacted")
    daily_cap: int
    hourly_cap: int
    min_gap_seconds: int
    ramp_start: int | None = None
    ramp_step: int | None = None
    today_cap: int = Field(description="The cap of the rolling 24 hours today, under the ramp.")
    sent_24h: int
    sent_1h: int
    next_slot: datetime | None = Field(
        description="When the next send may go (now if it may go now).")
    bounce_rate: float
    complaint_rate: float
    paused: bool
    paused_reason: str | None = None
    dkim_selector: str | None = None
    created_at: datetime


class SlotGranted(BaseModel):
    """The send may go now: its claim is recorded."""

    claim: SenderClaim


class SlotWait(BaseModel):
    """The send must wait: until `next_slot` (capacity), or until the sender is resumed
    (`paused`, `next_slot` None)."""

    reason: WaitReason
    next_slot: datetime | None = None
    detail: str = ""
