"""The guardrails' phone pre-check skips only texts in which no valid number can be."""

from __future__ import annotations

import phonenumbers
import pytest
from phonenumbers import PhoneMetadata
from phonenumbers.phonenumberutil import COUNTRY_CODES_FOR_NON_GEO_REGIONS, SUPPORTED_REGIONS

from activities import guardrails
from activities.guardrails import MIN_PHONE_DIGITS, PHONE_REGIONS, may_hold_phone


def shortest(md: PhoneMetadata | None) -> int | None:
    desc = md.general_desc if md is not None else None
    lengths = [n for n in (desc.possible_length if desc is not None else ()) or () if n > 0]
    return min(lengths) if lengths else None


def test_min_phone_digits_is_no_more_than_the_metadata_allows() -> None:
    national = [shortest(PhoneMetadata.metadata_for_region(r)) for r in PHONE_REGIONS]
    international = [len(str(md.country_code)) + n for md in
                     [PhoneMetadata.metadata_for_region(r) for r in SUPPORTED_REGIONS]
                     + [PhoneMetadata.metadata_for_nongeo_region(c)
                        for c in COUNTRY_CODES_FOR_NON_GEO_REGIONS]
                     if md is not None and (n := shortest(md)) is not None]
    assert min([n for n in national if n is not None] + international) >= MIN_PHONE_DIGITS


def matcher(text: str) -> set[str]:
    """What the phone matcher finds, with no pre-check."""
    return {m.raw_string for r in PHONE_REGIONS for m in phonenumbers.PhoneNumberMatcher(
        text, r, leniency=phonenumbers.Leniency.VALID)}


@pytest.mark.parametrize("text", [
    "Call +1 415 555 2671 today.", "Our desk: 020 7946 0958", "Tel. (030) 1234567",
    "Ring +44 20 7946 0958 ext. 12",
    "Phone: \uff0b\uff11 \uff14\uff11\uff15 \uff15\uff15\uff15 \uff12\uff16\uff17\uff11", "+49 30 901820",
    "Hi Lead1,\nwould a 20-minute call next week be useful?", "Co 1, 2, 3 and 4", "no digits",
    "12-34", "1234", "Lead12 Co34 56", "+683 4002",
])
def test_pre_check_never_hides_a_number_the_matcher_finds(text: str) -> None:
    found = matcher(text)
    assert not found or may_hold_phone(text), found
    assert set(guardrails._phones(text)) == found


def test_prose_without_a_long_enough_digit_run_skips_the_matcher() -> None:
    assert not may_hold_phone("Hi Lead1,\n\nWould a 20-minute call next week be useful?")
    assert may_hold_phone("Call +1 415 555 2671")
