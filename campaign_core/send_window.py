"""Send windows: when a message may go out, in the recipient's own time zone.

A pure function of (now, window, zone) so the delivery orchestrator can compute
its durable timer deterministically inside workflow code.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator, model_validator

DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_SPEC = re.compile(r"^\s*(\d{1,2}:\d{2})\s*-\s*(\d{1,2}:\d{2})\s*(.*)$")


class SendWindow(BaseModel):
    """Local hours and weekdays in which sending is allowed, e.g. 09:00-17:00 Mon-Fri."""

    start: time
    end: time
    days: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4])
    timezone: str = Field(default="UTC", description="Default zone for leads without one.")

    @field_validator("days")
    @classmethod
    def _days(cls, days: list[int]) -> list[int]:
        if not days or any(d < 0 or d > 6 for d in days):
            raise ValueError("days must be weekday numbers 0 (Mon) to 6 (Sun), at least one")
        return sorted(set(days))

    @field_validator("timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        zone(name)
        return name

    @model_validator(mode="after")
    def _ordered(self) -> SendWindow:
        if self.end <= self.start:
            raise ValueError("the window must end after it starts (same day)")
        return self

    @classmethod
    def parse(cls, spec: str, timezone: str = "UTC") -> SendWindow:
        """'09:00-17:00 Mon-Fri', '08:30-12:00 Mon,Wed,Fri', '10:00-16:00' (every day)."""
        match = _SPEC.match(spec)
        if not match:
            raise ValueError(f"send window {spec!r} is not like '09:00-17:00 Mon-Fri'")
        start, end, rest = match.groups()
        days = parse_days(rest) if rest.strip() else list(range(7))
        return cls(start=time.fromisoformat(start.zfill(5)), end=time.fromisoformat(end.zfill(5)),
                   days=days, timezone=timezone)

    def spec(self) -> str:
        """The text `parse` reads back into this window (with `timezone` given beside it):
        what `--send-window` and the API's `send_window` take."""
        days = ",".join(DAY_NAMES[d].title() for d in self.days)
        return f"{self.start:%H:%M}-{self.end:%H:%M} {days}"

    def describe(self) -> str:
        days = ",".join(DAY_NAMES[d].title() for d in self.days)
        return f"{self.start:%H:%M}-{self.end:%H:%M} {days} ({self.timezone} by default)"


def parse_days(text: str) -> list[int]:
    """'Mon-Fri', 'Mon,Wed,Fri', 'Sat-Sun' → weekday numbers."""
    days: set[int] = set()
    for part in re.split(r"[,\s]+", text.strip().lower()):
        if not part:
            continue
        first, _, last = part.partition("-")
        try:
            a = DAY_NAMES.index(first[:3])
            b = DAY_NAMES.index(last[:3]) if last else a
        except ValueError:
            raise ValueError(f"unknown weekday in {text!r}: use Mon..Sun") from None
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return sorted(days)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def next_open(now: datetime, window: SendWindow, tz_name: str | None) -> datetime:
    """The first moment at or after `now` inside the window, in the lead's zone (or default)."""
    tz = zone(tz_name or window.timezone)
    local = now.astimezone(tz)
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        if day.weekday() not in window.days:
            continue
        opens = datetime.combine(day, window.start, tzinfo=tz)
        closes = datetime.combine(day, window.end, tzinfo=tz)
        if local < opens:
            return opens.astimezone(now.tzinfo)
        if local < closes:
            return now
    raise AssertionError("a window with at least one weekday opens within 8 days")
