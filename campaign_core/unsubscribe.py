"""Signed unsubscribe tokens: who a link unsubscribes, and proof that we made the link.

HMAC-signed, no address inside, never expiring; the key is shared through the store unless
set. See "HTTP API and unsubscribe" in docs/architecture.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from campaign_core.settings import Settings
from campaign_core.store.base import Store

#: Token format version, first in every token so the format can change later.
VERSION = "u1"
#: Bytes of the HMAC-SHA256 tag kept in a token: 128 bits is ample against forgery.
TAG_BYTES = 16
SECRET_NAME = "unsubscribe"


class BadToken(ValueError):
    """The token is malformed, altered, or was signed with another key."""


@dataclass(frozen=True)
class Claims:
    """What an unsubscribe token names: one message of one lead in one campaign."""

    campaign_id: str
    lead_id: str
    step: int = 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(key: bytes, body: str) -> bytes:
    return hmac.new(key, f"{VERSION}.{body}".encode(), hashlib.sha256).digest()[:TAG_BYTES]


def make_token(key: bytes, claims: Claims) -> str:
    """`u1.<payload>.<tag>`, URL-safe, about 100 characters."""
    payload = json.dumps([claims.campaign_id, claims.lead_id, claims.step],
                         separators=(",", ":")).encode()
    body = _b64(payload)
    return f"{VERSION}.{body}.{_b64(_tag(key, body))}"


def read_token(key: bytes, token: str) -> Claims:
    """The claims of a token we signed; BadToken for anything else."""
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        raise BadToken("not an unsubscribe token")
    _, body, tag = parts
    try:
        given = _unb64(tag)
        if not hmac.compare_digest(given, _tag(key, body)):
            raise BadToken("the token's signature does not match")
        campaign_id, lead_id, step = json.loads(_unb64(body))
    except (binascii.Error, ValueError, TypeError) as err:
        if isinstance(err, BadToken):
            raise
        raise BadToken("malformed unsubscribe token") from err
    if not isinstance(campaign_id, str) or not isinstance(lead_id, str) or not isinstance(step, int):
        raise BadToken("malformed unsubscribe token")
    return Claims(campaign_id, lead_id, step)


async def signing_key(settings: Settings, store: Store) -> bytes:
    """The key for unsubscribe links: configured, else the one kept in the store."""
    if settings.unsubscribe_secret is not None:
        return settings.unsubscribe_secret.get_secret_value().encode()
    return (await store.get_or_create_secret(SECRET_NAME, secrets.token_urlsafe(32))).encode()
