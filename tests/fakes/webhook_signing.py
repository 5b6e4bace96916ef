"""Standard Webhooks signing for tests, written out by hand (not with the code under test).

`signed_headers` computes `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">` with the
key under `whsec_`, so the tests check the wire format itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid

INBOUND_SECRET = "whsec_aW5ib3VuZC10ZXN0LWtleS0wMTIzNDU2Nzg5YWJjZA=="
DELIVERY_SECRET = "whsec_ZGVsaXZlcnktdGVzdC1rZXktMDEyMzQ1Njc4OWFiYw=="


def signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(body: bytes, secret: str = INBOUND_SECRET, *, msg_id: str | None = None,
                   timestamp: int | None = None) -> dict[str, str]:
    """The three headers for `body`; a fresh id and the current time unless given."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {"webhook-id": msg_id, "webhook-timestamp": ts,
            "webhook-signature": signature(secret, msg_id, ts, body)}


def check_signed(headers: dict[str, str], body: bytes, secret: str = DELIVERY_SECRET) -> None:
    """Assert that a received request carries a valid signature of its body (case-insensitive
    header names), within 5 minutes of now."""
    lower = {k.lower(): v for k, v in headers.items()}
    expected = signature(secret, lower["webhook-id"], lower["webhook-timestamp"], body)
    assert hmac.compare_digest(lower["webhook-signature"], expected), "signature mismatch"
    assert abs(int(lower["webhook-timestamp"]) - time.time()) < 300
