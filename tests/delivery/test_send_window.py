"""Send windows: the next allowed moment, in the lead's own time zone."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest
from pydantic import ValidationError

from campaign_core.send_window import SendWindow, next_open, parse_days

BUSINESS = SendWindow(start=time(9), end=time(17), days=[0, 1, 2, 3, 4], timezone="UTC")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_inside_the_window_sends_now() -> None:
    now = utc(2026, 11, 18, 10, 30)  # Wednesday
    assert next_open(now, BUSINESS, None) == now


def test_after_hours_waits_for_next_morning() -> None:
    assert next_open(utc(2026, 11, 18, 17, 0), BUSINESS, None) == utc(2026, 11, 19, 9, 0)


def test_friday_evening_waits_for_monday() -> None:
    assert next_open(utc(2026, 11, 20, 18, 0), BUSINESS, None) == utc(2026, 11, 23, 9, 0)


def test_lead_zone_beats_campaign_default() -> None:
    # 10:00 UTC Wednesday is 19:00 in Tokyo: closed there, opens Thursday 09:00 JST.
    opens = next_open(utc(2026, 11, 18, 10, 0), BUSINESS, "Asia/Tokyo")
    assert opens == utc(2026, 11, 19, 0, 0)


def test_daylight_saving_change_is_respected() -> None:
    # New York leaves DST on 2026-11-01: 09:00 local is 13:00 UTC before, 14:00 UTC after.
    before = next_open(utc(2026, 10, 30, 3, 0), BUSINESS, "America/New_York")
    after = next_open(utc(2026, 11, 2, 3, 0), BUSINESS, "America/New_York")
    assert before == utc(2026, 10, 30, 13, 0)
    assert after == utc(2026, 11, 2, 14, 0)


def test_parse_specs() -> None:
    w = SendWindow.parse("9:00-17:30 Mon-Fri", "Europe/Berlin")
    assert (w.start, w.end, w.days, w.timezone) == (time(9), time(17, 30), [0, 1, 2, 3, 4],
                                                    "Europe/Berlin")
    assert SendWindow.parse("10:00-12:00").days == list(range(7))
    assert parse_days("Fri-Mon") == [0, 4, 5, 6]
    assert parse_days("mon, wed,fri") == [0, 2, 4]


@pytest.mark.parametrize("spec", ["17:00-09:00 Mon", "9-17", "09:00-17:00 Funday"])
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises((ValueError, ValidationError)):
        SendWindow.parse(spec)


def test_unknown_default_zone_is_refused() -> None:
    with pytest.raises(ValidationError, match="unknown time zone"):
        SendWindow(start=time(9), end=time(17), timezone="Mars/Base")
