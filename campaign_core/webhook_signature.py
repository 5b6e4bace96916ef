"""Standard Webhooks signatures (https://www.standardwebhooks.com), both ways.

Headers `webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature:
v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<raw body>">`, keyed by the base64 part of
a `whsec_<base64>` secret: `CAMPAIGN_WEBHOOK_SECRET` for calls to `/webhooks/*`,
`CAMPAIGN_DELIVERY_WEBHOOK_SECRET` for the webhook channel's posts. The `standardwebhooks`
package signs and verifies (constant-time compare, 5-minute timestamp tolerance).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from standardwebhooks import Webhook, WebhookVerificationError

PREFIX = "whsec_"
INBOUND_SECRET = "CAMPAIGN_WEBHOOK_SECRET"
DELIVERY_SECRET = "CAMPAIGN_DELIVERY_WEBHOOK_SECRET"
#: Shortest key accepted, in bytes (the spec recommends 24 to 64).
MIN_KEY_BYTES = 16
MAKE_ONE = ("python -c 'import base64,os; print(\"whsec_\" + "
            "base64.b64encode(os.urandom(32)).decode())'")
_TIMESTAMP = re.compile(r"^\d{1,12}$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


class WebhookSecretError(ValueError):
    """A webhook secret is not `whsec_<base64>`; the message names the setting, never the key."""


class SignatureError(ValueError):
    """A webhook call's signature headers are missing, stale or do not match its body."""


def signer(secret: str, setting: str) -> Webhook:
    """The signer/verifier for a `whsec_<base64>` secret, or `WebhookSecretError`."""
    value = secret.strip()
    if not value.startswith(PREFIX):
        raise WebhookSecretError(f"{setting} must be whsec_<base64> (Standard Webhooks); "
                                 f"make one with: {MAKE_ONE}")
    material = value.removeprefix(PREFIX)
    try:
        if not _BASE64.match(material):
            raise binascii.Error("not base64")
        key = base64.b64decode(material + "=" * (-len(material) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookSecretError(f"{setting}: the part after whsec_ is not valid base64; "
                                 f"make one with: {MAKE_ONE}") from None
    if len(key) < MIN_KEY_BYTES:
        raise WebhookSecretError(f"{setting}: the key is {len(key)} bytes, at least "
                                 f"{MIN_KEY_BYTES} needed; make one with: {MAKE_ONE}")
    return Webhook(key)


def sign(webhook: Webhook, msg_id: str, body: bytes, *, at: datetime | None = None) -> dict[str, str]:
    """The three headers for one message (`body` is UTF-8 JSON)."""
    when = (at or datetime.now(UTC)).replace(microsecond=0)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": webhook.sign(msg_id, when, body.decode("utf-8")),
    }


def verify(webhook: Webhook, body: bytes, headers: Mapping[str, str]) -> str:
    """The call's `webhook-id` when its signature matches and its timestamp is within
    5 minutes of now; `SignatureError` saying what is wrong otherwise."""
    wanted = {k: headers.get(k, "").strip()
              for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    missing = [k for k, v in wanted.items() if not v]
    if missing:
        raise SignatureError(f"missing {', '.join(missing)} header(s) (Standard Webhooks)")
    if not _TIMESTAMP.match(wanted["webhook-timestamp"]):
        raise SignatureError("webhook-timestamp must be unix seconds")
    try:
        webhook.verify(body.decode("utf-8"), wanted, json_parse=False)
    except WebhookVerificationError as err:
        reason = str(err).lower()
        if "timestamp" in reason:
            raise SignatureError("webhook-timestamp is more than 5 minutes from now "
                                 "(a replay, or a clock that is off)") from None
        raise SignatureError("webhook-signature does not match the body (expected v1,<base64 "
                             "HMAC-SHA256 of id.timestamp.body> with the whsec_ secret)") from None
    except (ValueError, binascii.Error):  # a malformed signature list, a body not UTF-8
        raise SignatureError("webhook-signature does not match the body") from None
    return wanted["webhook-id"]
