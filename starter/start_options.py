"""The options every door that starts campaigns shares: `campaign start`, `campaign schedule
create`, `POST /campaigns`, the campaign webhook and `POST /schedules`.

One parser per option, so the CLI and the API accept and refuse the same values with the
same words. A knowledge base named over HTTP is confined to `CAMPAIGN_KB_ROOT`
(`kb_under_root`), so an API caller can never make the engine read the server's files;
the CLI, run by someone who can read them anyway, takes any folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from campaign_core.send_window import SendWindow, zone
from starter.manager import BadInput

#: Sends a minute to one recipient domain, unless the start says otherwise.
DEFAULT_DOMAIN_LIMIT = 20
#: The slowest per-campaign send rate accepted (one message in about 17 minutes).
MIN_SEND_RATE = 0.001
#: The variable that confines knowledge bases named over HTTP.
KB_ROOT_VARIABLE = "CAMPAIGN_KB_ROOT"
#: What an approval timeout looks like (`parse_duration` reads it).
DURATION_PATTERN = r"^\s*\d+\s*[smhdwSMHDW]?\s*$"

ApprovalTimeout = Annotated[str, Field(default="72h", pattern=DURATION_PATTERN,
                                       description="e.g. 72h, 3d, 90m.")]


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


class CampaignOptions(BaseModel):
    """How a campaign drafts and sends, as `campaign start` takes them: the knowledge base,
    the send window, the pacing and the LLM budget. Shared by the API's start and schedule bodies."""

    model_config = ConfigDict(extra="forbid")

    kb: str | None = Field(
        default=None, min_length=1, max_length=1000,
        description=f"Knowledge-base folder, relative to {KB_ROOT_VARIABLE} (a path that "
        f"resolves outside it, or any value while it is unset, is a 422).")
    timezone: str = Field(default="UTC", max_length=100,
                          description="IANA zone of the send window for leads without one.")
    send_window: str | None = Field(
        default=None, max_length=200,
        description="Send only then, in each lead's time zone: '09:00-17:00 Mon-Fri'.")
    domain_limit: int = Field(default=DEFAULT_DOMAIN_LIMIT, ge=1, le=100_000,
                              description="At most this many sends a minute to one domain.")
    send_rate: float | None = Field(default=None, ge=MIN_SEND_RATE, le=10_000,
                                    description="This campaign's sends per second.")
    budget_usd: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="Cap on the campaign's LLM spend in USD: drafting pauses before a call "
        "that could pass it (`resume` with a higher budget goes on).")

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

    def window(self) -> SendWindow | None:
        return parse_send_window(self.send_window, self.timezone)

    def start_kwargs(self, kb_root: Path | None) -> dict[str, Any]:
        """The keyword arguments of `CampaignManager.start` / `ScheduleManager.create`
        these options stand for, the knowledge base confined to `kb_root`."""
        return {
            "kb_dir": kb_under_root(self.kb, kb_root) if self.kb is not None else None,
            "send_window": self.window(),
            "domain_limit_per_minute": self.domain_limit,
            "send_rate_per_second": self.send_rate,
            "budget_usd": self.budget_usd,
        }
