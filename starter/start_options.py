"""The options every door that starts campaigns shares: `campaign start`, `campaign schedule
create`, `POST /campaigns`, the campaign webhook and `POST /schedules`.

`CampaignOptions` is the one thing those doors build and validate, under the names users
see (`follow_ups`, `approval_timeout`, `domain_limit`, `send_rate`, ...). The workflow's input
keeps the names recorded in its histories (`follow_up_seconds`, `approval_timeout_seconds`,
`domain_limit_per_minute`, `send_rate_per_second`, ...): `CampaignOptions.campaign_input` is
the one place that maps the first onto the second, and `CampaignOptions.stored` what the
store's campaign row keeps (the brief, the knowledge base, the budget). A new option is a
field here, a line in one of those two, and its flag and body key at the doors;
tests/workflows/test_start_options_reach_workflow.py fails until it reaches the workflow.

One validator per option, so the CLI and the API accept and refuse the same values with the
same words (the CLI names the flag, the API the body field: `cli_message`, FastAPI's 422).
A knowledge base named over HTTP is confined to `CAMPAIGN_KB_ROOT` (`under_kb_root`), so an
API caller can never make the engine read the server's files; the CLI, run by someone who
can read them anyway, takes any folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from campaign_core.budget import check_budget
from campaign_core.envelope import digest
from campaign_core.leads import IntakeResult
from campaign_core.models import DEFAULT_APPROVAL_TIMEOUT_SECONDS, CampaignInput, Channel
from campaign_core.send_window import SendWindow, zone
from campaign_core.senders import SENDER_NAME
from campaign_core.sequence import MAX_FOLLOW_UPS, follow_up_seconds
from starter.errors import BadInput

#: Sends a minute to one recipient domain, unless the start says otherwise.
DEFAULT_DOMAIN_LIMIT = 20
#: The slowest per-campaign send rate accepted (one message in about 17 minutes).
MIN_SEND_RATE = 0.001
#: The variable that confines knowledge bases named over HTTP.
KB_ROOT_VARIABLE = "CAMPAIGN_KB_ROOT"
#: What an approval timeout looks like (`duration_seconds` reads it).
DURATION_PATTERN = r"^\s*\d+\s*[smhdwSMHDW]?\s*$"
#: The approval timeout of a start that gives none ("72h").
DEFAULT_APPROVAL_TIMEOUT = f"{DEFAULT_APPROVAL_TIMEOUT_SECONDS // 3600}h"
#: The most senders one start may name.
MAX_SENDERS = 1000
#: Options a start's idempotency digests leave out while at their default, so the digests
#: (and the start memo) of a start that does not use them stay what they were before the
#: option existed (issue 28): a retry of such a start still matches, and a memo without
#: the key means the default (`CampaignManager._same_start`).
DIGESTED_WHEN_SET: dict[str, Any] = {"senders": None, "strict_senders": False}

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_seconds(text: str) -> int:
    """'72h', '3d', '90m', '3600' -> seconds; ValueError unless a positive duration."""
    match = _DURATION.match(text.lower())
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration like 72h, 3d or 90m")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _duration(text: str) -> str:
    duration_seconds(text)
    return text


def _follow_up(text: str) -> str:
    follow_up_seconds(text)
    return text


def sender_names(value: Any) -> Any:
    """`--senders a,b` (or the flag repeated, or a JSON list whose items may hold commas)
    as a list of names, in the order given, each once; ValueError naming a bad name."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        return value  # pydantic says what type it wants
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            return value
        for name in (part.strip() for part in item.split(",")):
            if not SENDER_NAME.match(name):
                raise ValueError(f"{name!r} is not a sender's name (lower-case letters, "
                                 "digits, - and _)")
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError("name at least one sender, or leave the option out for every "
                         "active sender")
    if len(names) > MAX_SENDERS:
        raise ValueError(f"at most {MAX_SENDERS} senders, got {len(names)}")
    return names


def _budget(field: str) -> AfterValidator:
    """A budget as given (None: no cap), refused unless finite and more than 0."""
    def check(value: float | None) -> float | None:
        return None if value is None else check_budget(value, field)
    return AfterValidator(check)


ApprovalTimeout = Annotated[str, Field(
    default=DEFAULT_APPROVAL_TIMEOUT, description="e.g. 72h, 3d, 90m.",
    json_schema_extra={"pattern": DURATION_PATTERN}), AfterValidator(_duration)]
FollowUp = Annotated[str, AfterValidator(_follow_up)]
Budget = Annotated[float | None, Field(json_schema_extra={"exclusiveMinimum": 0})]


def parse_send_window(spec: str | None, timezone: str = "UTC") -> SendWindow | None:
    """`'09:00-17:00 Mon-Fri'` read in `timezone` (for leads without their own), or None.
    ValueError says what is wrong with either."""
    if spec is None:
        zone(timezone)  # a zone is checked even when no window uses it yet
        return None
    return SendWindow.parse(spec, timezone)


class KbOutsideRoot(BadInput):
    """A knowledge base named over HTTP that is not a folder under CAMPAIGN_KB_ROOT."""


def kb_under_root(kb: str, root: Path | None) -> Path:
    """The folder `kb` names (relative to `root`, or absolute), symlinks resolved, if it is
    `root` or a folder under it; else KbOutsideRoot naming CAMPAIGN_KB_ROOT.

    The messages go to API callers: they never show the server's paths.
    """
    if root is None:
        raise KbOutsideRoot(f"kb: {KB_ROOT_VARIABLE} is not set, so a campaign started over "
                            "HTTP cannot name a knowledge base; set it to the folder that "
                            "holds the knowledge bases")
    try:
        base = root.resolve(strict=True)
        resolved = (base / kb).resolve()  # an absolute `kb` replaces `base`
    except (OSError, ValueError, RuntimeError) as err:  # missing root, NUL byte, symlink loop
        raise KbOutsideRoot(f"kb: {kb!r} is not a folder under {KB_ROOT_VARIABLE} "
                            f"({type(err).__name__})") from err
    if not base.is_dir():
        raise KbOutsideRoot(f"kb: {KB_ROOT_VARIABLE} is not a folder on the server")
    if not resolved.is_relative_to(base):
        raise KbOutsideRoot(f"kb: {kb!r} lies outside {KB_ROOT_VARIABLE} (symlinks resolved); "
                            "name a folder under it, relative to it")
    if not resolved.is_dir():
        raise KbOutsideRoot(f"kb: {kb!r} is not a folder under {KB_ROOT_VARIABLE}")
    return resolved


@dataclass(frozen=True)
class EngineTuning:
    """How the engine pages and batches a campaign's work: not a user option (no flag or
    body key sets it). Tests and benchmarks shrink it to reach continue-as-new quickly, or
    turn per-domain pacing off (`domain_limit` then goes unused) to time the engine alone."""

    window: int = 200
    leads_per_run: int = 1000
    page_size: int = 100
    per_domain_pacing: bool = True


class CampaignOptions(BaseModel):
    """Every choice a campaign starts with, as `campaign start` and `POST /campaigns` name
    them: what to write (brief, knowledge base), how to deliver (channel, send window,
    pacing, follow-ups), how long to wait for approval, and the LLM budget. The campaign's
    name and id, and its leads, are not options: each door gives them beside these."""

    model_config = ConfigDict(extra="forbid")

    brief: str = Field(default="", description="What the messages are to say.")
    kb: str | None = Field(
        default=None, min_length=1, max_length=1000,
        description=f"Knowledge-base folder, relative to {KB_ROOT_VARIABLE} (a path that "
        f"resolves outside it, or any value while it is unset, is a 422).")
    channel: Channel = Field(default=Channel.OUTBOX, description="How messages are delivered.")
    approval_timeout: ApprovalTimeout = DEFAULT_APPROVAL_TIMEOUT
    timezone: str = Field(default="UTC", max_length=100,
                          description="IANA zone of the send window for leads without one.")
    send_window: str | None = Field(
        default=None, max_length=200,
        description="Send only then, in each lead's time zone: '09:00-17:00 Mon-Fri'.")
    domain_limit: int = Field(default=DEFAULT_DOMAIN_LIMIT, ge=1, le=100_000,
                              description="At most this many sends a minute to one domain.")
    send_rate: float | None = Field(default=None, ge=MIN_SEND_RATE, le=10_000,
                                    description="This campaign's sends per second.")
    follow_ups: list[FollowUp] = Field(
        default_factory=list, json_schema_extra={"maxItems": MAX_FOLLOW_UPS},
        description="Follow-up delays, each after the previous step's send: 30s, 2m, 12h, 3d.")
    stop_on_company_reply: bool = Field(
        default=False, description="A reply from a company domain stops its other leads too.")
    budget_usd: Annotated[Budget, _budget("budget_usd")] = Field(
        default=None, description="Cap on the campaign's LLM spend in USD: drafting pauses "
        "before a call that could pass it (`resume` with a higher budget goes on).")
    allow_overlap: bool = Field(
        default=False, description="Keep the people who are in another campaign's sequence "
        "still going on, or who replied within CAMPAIGN_REPLY_COOLDOWN; without it they are "
        "skipped and listed in `leads_skipped`. Applied where the leads are taken in (the "
        "start, each schedule firing), so it reaches no campaign workflow.")
    senders: list[str] | None = Field(
        default=None, json_schema_extra={"maxItems": MAX_SENDERS},
        description="The senders (mailboxes, `GET /senders`) the leads are spread over, for "
        "the smtp and outbox channels; each must exist and not be removed. Default: every "
        "sender that is not paused or removed (none defined: CAMPAIGN_FROM over "
        "CAMPAIGN_SMTP_URL or the outbox, as before senders). The webhook channel ignores it.")
    strict_senders: bool = Field(
        default=False, description="Refuse the start when a chosen smtp sender fails its DNS "
        "check (MX, SPF, DKIM, DMARC); without it a failing check is a warning.")

    @field_validator("kb", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        """A `Path` (the CLI's `--kb`) is taken as its text."""
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        zone(value)
        return value

    @field_validator("send_window")
    @classmethod
    def _readable_window(cls, value: str | None, info: ValidationInfo) -> str | None:
        timezone = info.data.get("timezone")
        if value is not None and timezone is not None:  # a bad zone is reported on its own
            parse_send_window(value, timezone)
        return value

    @field_validator("senders", mode="before")
    @classmethod
    def _sender_names(cls, value: Any) -> Any:
        return sender_names(value)

    @field_validator("follow_ups", mode="before")
    @classmethod
    def _few_follow_ups(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and len(value) > MAX_FOLLOW_UPS:
            raise ValueError(f"at most {MAX_FOLLOW_UPS} follow-ups, got {len(value)}")
        return value

    @classmethod
    def of(cls, body: BaseModel) -> Self:
        """The options part of a door's body (`POST /campaigns`, `POST /schedules`: these
        options and the name, leads and id beside them)."""
        return cls.model_validate(body.model_dump(include=set(cls.model_fields)))

    # -- what the options stand for ----------------------------------------------------------

    def window(self) -> SendWindow | None:
        return parse_send_window(self.send_window, self.timezone)

    def approval_timeout_seconds(self) -> int:
        return duration_seconds(self.approval_timeout)

    def follow_up_seconds(self) -> list[int]:
        return [follow_up_seconds(text) for text in self.follow_ups]

    def kb_dir(self) -> Path | None:
        return Path(self.kb) if self.kb is not None else None

    def under_kb_root(self, root: Path | None) -> Self:
        """These options with the knowledge base confined to `root` and resolved (the
        API's doors); KbOutsideRoot when it lies elsewhere."""
        if self.kb is None:
            return self
        return self.model_copy(update={"kb": str(kb_under_root(self.kb, root))})

    # -- the one mapping onto what the workflow and the store keep ---------------------------

    def campaign_input(self, *, campaign_id: str, name: str, queue_prefix: str = "",
                       use_search_attributes: bool = True,
                       tuning: EngineTuning | None = None) -> CampaignInput:
        """The campaign workflow's input these options stand for, under the names its
        recorded histories hold (the delivery workflow's input is derived from this one:
        `CampaignInput.delivery_input`).

        `senders` passes as it is: the control plane resolves it against the store first
        (the named senders checked, or every active one: `starter.senders.resolve`) and
        maps the options with the resolved list in it; the webhook channel has none."""
        shape = tuning or EngineTuning()
        return CampaignInput(
            campaign_id=campaign_id, name=name, channel=self.channel,
            approval_timeout_seconds=self.approval_timeout_seconds(),
            queue_prefix=queue_prefix, window=shape.window, send_window=self.window(),
            leads_per_run=shape.leads_per_run, sends_per_run=shape.leads_per_run,
            page_size=shape.page_size,
            domain_limit_per_minute=self.domain_limit if shape.per_domain_pacing else None,
            send_rate_per_second=self.send_rate, use_search_attributes=use_search_attributes,
            follow_up_seconds=self.follow_up_seconds(),
            stop_on_company_reply=self.stop_on_company_reply,
            senders=None if self.channel is Channel.WEBHOOK else self.senders)

    def stored(self) -> dict[str, Any]:
        """What the store's campaign row keeps of these options (`upsert_campaign`'s
        keywords): the activities read the brief, knowledge base and budget from there."""
        kb = self.kb_dir()
        return {"brief": self.brief, "channel": self.channel.value,
                "kb_dir": str(kb.resolve()) if kb else None, "budget_usd": self.budget_usd}

    def digest_values(self) -> dict[str, Any]:
        """Each option as a start's idempotency compares it, keyed by its name: the value
        the campaign runs with (seconds, the parsed window, the resolved folder), so `72h`
        and `3d` are the same start. The time zone counts as part of the send window."""
        window = self.window()
        stored = self.stored()
        canonical: dict[str, Any] = {
            "kb": stored["kb_dir"],
            "approval_timeout": self.approval_timeout_seconds(),
            "send_window": window.model_dump(mode="json") if window else None,
            "follow_ups": self.follow_up_seconds(),
            "senders": sorted(self.senders) if self.senders is not None else None,
        }
        plain = self.model_dump(mode="json")
        return {option: canonical[option] if option in canonical else plain[option]
                for option in type(self).model_fields if option != "timezone"
                and not (option in DIGESTED_WHEN_SET
                         and getattr(self, option) == DIGESTED_WHEN_SET[option])}

    def digests(self, intake: IntakeResult, *, name: str) -> dict[str, str]:
        """One digest per option of a start with these options, keyed by the option's name
        (what a refusal names), plus the name and the leads: a campaign's start memo, which
        a start again with its id must match (`CampaignManager.start`).

        Digests, not values: the memo lies in Temporal's history, where a brief or the leads
        must not be readable. The leads count by their content (ids and source rows aside),
        so the same file read again is the same start, in any row order.
        """
        leads = sorted((lead.model_dump(mode="json", exclude={"lead_id", "rows"})
                        for lead in intake.leads), key=lambda lead: str(lead["email"]))
        values = {"name": name, **self.digest_values(), "leads": leads}
        return {option: digest(value) for option, value in values.items()}

    def describe(self) -> str:
        """The options as the Web UI's details of a start show them (markdown list)."""
        kb = self.kb_dir()
        window = self.window()
        return (f"* approval timeout: {timedelta(seconds=self.approval_timeout_seconds())}\n"
                f"* knowledge base: {kb.name if kb else 'none'}\n"
                f"* send window: {window.describe() if window else 'any time'}")


class ScheduleOptions(CampaignOptions):
    """A recurring campaign's options: each firing's campaign starts with the
    `CampaignOptions`; the rest says when it fires and what all firings may spend."""

    cron: str = Field(max_length=200, json_schema_extra={"minLength": 1},
                      description="When to fire, e.g. '0 9 * * MON'; @daily, @weekly and "
                      "'@every 24h' work too.")
    cron_timezone: str = Field(default="UTC", max_length=100,
                               description="IANA zone the cron expression is read in.")
    paused: bool = Field(default=False, description="Create it paused (resume to start).")
    total_budget_usd: Annotated[Budget, _budget("total_budget_usd")] = Field(
        default=None, description="Cap on what all the schedule's campaigns spend on the LLM "
        "together: once spent, no firing starts a campaign and the schedule pauses.")

    @field_validator("cron")
    @classmethod
    def _some_cron(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("give a cron expression such as '0 9 * * MON'")
        return value

    @field_validator("cron_timezone")
    @classmethod
    def _known_cron_zone(cls, value: str) -> str:
        zone(value)
        return value

    def campaign_options(self) -> CampaignOptions:
        """The options each firing's campaign starts with."""
        return CampaignOptions.of(self)
