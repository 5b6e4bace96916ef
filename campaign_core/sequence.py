"""Sequences: follow-up delays, stop reasons and freemail domains, shared by every layer.

A sequence is step 1 and up to `MAX_FOLLOW_UPS` follow-ups, each sent a delay after the
previous step's send, unless a stop condition holds when it is due. The store holds who is
due when (`sequence_steps`); the delivery orchestrator holds the clock. See
"Sequences" in docs/architecture.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

#: At most this many follow-ups after the first message (the issue: one to three).
MAX_FOLLOW_UPS = 3
#: The shortest follow-up delay: anything shorter is a typo, not a sequence.
MIN_FOLLOW_UP_SECONDS = 1
MAX_FOLLOW_UP_SECONDS = 365 * 86400

#: Why a step was not sent (`report --json` `stop_reason`).
StopReason = Literal["replied", "unsubscribed", "suppressed", "bounced", "complained",
                     "excluded", "cancelled"]
STOP_REASONS: tuple[str, ...] = ("replied", "unsubscribed", "suppressed", "bounced",
                                 "complained", "excluded", "cancelled")

_FOLLOW_UP = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class FollowUpError(ValueError):
    """A follow-up delay that is not a duration like 30s, 2m, 12h or 3d."""


def follow_up_seconds(text: str) -> int:
    """'3d' -> 259200. Units s, m, h, d; the number must be positive."""
    match = _FOLLOW_UP.match(text.lower())
    if not match or int(match.group(1)) <= 0:
        raise FollowUpError(f"{text!r} is not a duration like 30s, 2m, 12h or 3d")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_FOLLOW_UP_SECONDS:
        raise FollowUpError(f"{text!r} is longer than a year")
    return seconds


def parse_follow_ups(texts: Iterable[str]) -> list[int]:
    """Every delay in seconds, in order; FollowUpError naming the bad one (1-based)."""
    values = list(texts)
    if len(values) > MAX_FOLLOW_UPS:
        raise FollowUpError(f"at most {MAX_FOLLOW_UPS} follow-ups, got {len(values)}")
    out = []
    for i, text in enumerate(values, start=1):
        try:
            out.append(follow_up_seconds(text))
        except FollowUpError as err:
            raise FollowUpError(f"follow-up {i}: {err}") from err
    return out


def describe_seconds(seconds: int) -> str:
    """3 days as '3d', 90 minutes as '90m': the shortest exact spelling."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


#: Mailbox providers whose domain says nothing about a company: a reply from one address
#: there never stops anyone else (`--stop-on-company-reply`).
FREEMAIL_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "hotmail.co.uk", "hotmail.fr",
    "hotmail.de", "hotmail.it", "hotmail.es", "live.com", "live.co.uk", "live.fr", "live.de",
    "msn.com", "passport.com", "windowslive.com", "yahoo.com", "yahoo.co.uk", "yahoo.fr",
    "yahoo.de", "yahoo.es", "yahoo.it", "yahoo.co.jp", "yahoo.com.br", "ymail.com",
    "rocketmail.com", "aol.com", "aim.com", "icloud.com", "me.com", "mac.com", "proton.me",
    "protonmail.com", "protonmail.ch", "pm.me", "tutanota.com", "tutanota.de", "tuta.io",
    "gmx.com", "gmx.net", "gmx.de", "gmx.at", "gmx.ch", "web.de", "t-online.de", "freenet.de",
    "mail.com", "email.com", "zoho.com", "zohomail.com", "yandex.com", "yandex.ru", "ya.ru",
    "mail.ru", "bk.ru", "inbox.ru", "list.ru", "rambler.ru", "qq.com", "163.com", "126.com",
    "sina.com", "yeah.net", "naver.com", "hanmail.net", "daum.net", "orange.fr", "wanadoo.fr",
    "free.fr", "laposte.net", "sfr.fr", "libero.it", "virgilio.it", "alice.it", "tiscali.it",
    "btinternet.com", "sky.com", "virginmedia.com", "ntlworld.com", "talktalk.net",
    "comcast.net", "verizon.net", "att.net", "sbcglobal.net", "bellsouth.net", "cox.net",
    "charter.net", "earthlink.net", "optonline.net", "rediffmail.com", "fastmail.com",
    "fastmail.fm", "hey.com", "hushmail.com", "mailbox.org", "posteo.de", "seznam.cz",
    "wp.pl", "o2.pl", "onet.pl", "interia.pl", "bigpond.com", "shaw.ca", "rogers.com",
    "sympatico.ca", "uol.com.br", "bol.com.br", "terra.com.br", "inbox.com", "duck.com",
})


def company_domain(email: str) -> str | None:
    """The company an address belongs to (its domain), or None for a freemail address."""
    domain = email.rpartition("@")[2].strip().lower().rstrip(".")
    if not domain or domain in FREEMAIL_DOMAINS:
        return None
    return domain


def replied_in(campaign_id: str) -> str:
    """The stop reason of a sequence stopped by the person's reply to another campaign
    (issue 27): `replied in campaign <id>`; `report --json` shows it as `stop_reason`."""
    return f"replied in campaign {campaign_id}"


def stop_reason_for_suppression(reason: str | None) -> str:
    """The stop reason behind a suppression-list entry (its `reason` text)."""
    text = (reason or "").lower()
    if text.startswith("unsubscribe"):
        return "unsubscribed"
    if text.startswith("bounce"):
        return "bounced"
    if text.startswith("complaint"):
        return "complained"
    return "suppressed"
