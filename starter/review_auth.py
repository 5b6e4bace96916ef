"""Reviewers: their tokens, one-time sign-in codes, the pages' signed session and CSRF tokens.

A reviewer token (`crt_` + 32 random bytes) is shown once and stored only as its SHA-256:
it is a bearer token for the review routes of the API and the sign-in of the pages. The
pages then carry the reviewer in a session cookie (HttpOnly, SameSite=Strict) signed with
HMAC-SHA256 under a key kept in the store (`get_or_create_secret`), so every API process
shares it; the cookie holds the reviewer's name, when it was issued, a random nonce and the
reviewer's session epoch, and expires after `SESSION_TTL`. Every request looks the reviewer
up and compares epochs: signing out bumps the stored epoch (as does removing the reviewer),
so a cookie issued before, even one copied to another browser, stops working on the server
side, not only where the cookie was deleted. A session of a removed (or removed and
re-added) reviewer stops working at once. Every form carries a CSRF token derived from the
session's nonce (or, before sign-in, from a pre-session cookie's nonce).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from campaign_core.store.base import Store, now_utc
from campaign_core.store.rows import ReviewerRow
from starter.manager import BadInput

#: What every reviewer token starts with, so a leaked one is recognised (and told apart
#: from the service token without a store lookup).
TOKEN_PREFIX = "crt_"
#: How long a sign-in code from `campaign dev` may be exchanged for a session.
CODE_TTL = timedelta(minutes=15)
#: How long a session lasts from sign-in.
SESSION_TTL = timedelta(hours=12)
#: The store secret that signs sessions and CSRF tokens.
SESSION_KEY_NAME = "review_session"
SESSION_COOKIE = "campaign_review"
PRE_SESSION_COOKIE = "campaign_review_pre"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def check_name(name: str) -> str:
    """A reviewer name as given, or BadInput naming the rule."""
    if not _NAME.match(name):
        raise BadInput(f"reviewer name {name!r}: 1-64 letters, digits, '.', '_', '@' or '-', "
                       "starting with a letter or digit")
    return name


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    """The stored form of a token or sign-in code: SHA-256 (they are 256-bit random)."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def is_reviewer_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX)


class Reviewers:
    """Reviewer accounts over the store: what the CLI, the API gate and the pages use."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, name: str) -> str:
        """Create the reviewer and return their token (shown once, never stored)."""
        token = new_token()
        if not await self.store.add_reviewer(check_name(name), secret_hash(token)):
            raise BadInput(f"reviewer {name!r} already exists (remove them first to give "
                           "them a new token)")
        return token

    async def ensure(self, name: str) -> bool:
        """Create the reviewer (with a token nobody sees) unless they exist; True if created.
        `campaign dev` signs its reviewer in with one-time codes instead."""
        if await self.store.get_reviewer(check_name(name)) is not None:
            return False
        return await self.store.add_reviewer(name, secret_hash(new_token()))

    async def remove(self, name: str) -> None:
        if not await self.store.remove_reviewer(name):
            raise BadInput(f"no reviewer {name!r}")

    async def list(self) -> list[ReviewerRow]:
        return await self.store.list_reviewers()

    async def by_token(self, token: str) -> ReviewerRow | None:
        if not is_reviewer_token(token):
            return None
        return await self.store.reviewer_by_token(secret_hash(token))

    async def sign_in_code(self, name: str, ttl: timedelta = CODE_TTL) -> str:
        """A one-time code for `name`'s sign-in link (its hash is stored, the code is not)."""
        if await self.store.get_reviewer(name) is None:
            raise BadInput(f"no reviewer {name!r}")
        code = secrets.token_urlsafe(32)
        await self.store.add_sign_in_code(secret_hash(code), name, now_utc() + ttl)
        return code

    async def redeem(self, code: str) -> ReviewerRow | None:
        """The reviewer a valid code was made for; the code dies whatever the outcome."""
        if not code or len(code) > 200:
            return None
        name = await self.store.take_sign_in_code(secret_hash(code))
        return await self.store.get_reviewer(name) if name else None


# -- sessions and CSRF ---------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    reviewer: str
    issued_at: int  # unix seconds
    nonce: str
    #: The reviewer's session epoch at sign-in: the session ends once the stored one moves on.
    epoch: int = 0


class SessionSigner:
    """Signs and reads session cookies, and derives CSRF tokens, with one HMAC key."""

    def __init__(self, key: bytes, ttl: timedelta = SESSION_TTL) -> None:
        self.key = key
        self.ttl = ttl

    def _mac(self, purpose: str, data: bytes) -> bytes:
        return hmac.new(self.key, purpose.encode() + b"\0" + data, hashlib.sha256).digest()

    def issue(self, reviewer: str, now: datetime | None = None, *, epoch: int = 0) -> str:
        """A signed cookie for `reviewer`, valid while their stored epoch is `epoch`."""
        claims = {"r": reviewer, "iat": int((now or now_utc()).timestamp()),
                  "n": secrets.token_urlsafe(16), "e": epoch}
        body = json.dumps(claims, separators=(",", ":")).encode()
        return f"{_b64(body)}.{_b64(self._mac('session', body))}"

    def read(self, cookie: str | None, now: datetime | None = None) -> Session | None:
        """The session, or None if the cookie is missing, forged, malformed or expired."""
        if not cookie or len(cookie) > 1000 or "." not in cookie:
            return None
        body_text, _, mac_text = cookie.partition(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac("session", body)):
            return None
        try:
            claims = json.loads(body)
            session = Session(str(claims["r"]), int(claims["iat"]), str(claims["n"]),
                              int(claims["e"]))
        except (ValueError, KeyError, TypeError):
            return None  # a cookie from before epochs (no "e") too: sign in again
        t = int((now or now_utc()).timestamp())
        if not session.issued_at - 60 <= t < session.issued_at + int(self.ttl.total_seconds()):
            return None
        return session

    def csrf(self, nonce: str) -> str:
        """The CSRF token of the forms of the session (or pre-session) with this nonce."""
        return _b64(self._mac("csrf", nonce.encode()))

    def csrf_ok(self, nonce: str | None, given: str | None) -> bool:
        if not nonce or not given:
            return False
        return hmac.compare_digest(given.encode(), self.csrf(nonce).encode())


async def session_signer(store: Store) -> SessionSigner:
    """The signer with the store's session key (made on first use, shared by every process)."""
    key = await store.get_or_create_secret(SESSION_KEY_NAME, secrets.token_urlsafe(32))
    return SessionSigner(key.encode())


def reviewer_still_valid(reviewer: ReviewerRow | None, session: Session) -> bool:
    """The reviewer exists, is not removed, was not re-created after the sign-in, and has
    not signed out since (their stored epoch is still the session's)."""
    if reviewer is None or reviewer.session_epoch != session.epoch:
        return False
    created = datetime.fromisoformat(reviewer.created_at)
    return int(created.timestamp()) <= session.issued_at
