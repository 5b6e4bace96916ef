"""Deterministic ids: the same inputs always give the same workflow and message ids.

Deterministic workflow ids make `start --id` idempotent and let Temporal refuse a
duplicate campaign; deterministic message keys are what makes delivery exactly-once.
"""

from __future__ import annotations

import hashlib
import re
import uuid

_SLUG = re.compile(r"[^a-z0-9]+")
#: What a campaign id may look like: safe in workflow ids, URLs and file names.
CAMPAIGN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def new_campaign_id(name: str) -> str:
    """A readable, unique id for a campaign started without `--id`."""
    slug = _SLUG.sub("-", name.lower()).strip("-")[:32] or "campaign"
    return f"{slug}-{uuid.uuid4().hex[:8]}"


def campaign_workflow_id(campaign_id: str) -> str:
    return f"campaign:{campaign_id}"


def lead_workflow_id(campaign_id: str, lead_id: str) -> str:
    return f"campaign:{campaign_id}:lead:{lead_id}"


def delivery_workflow_id(campaign_id: str) -> str:
    return f"campaign:{campaign_id}:delivery"


def message_key(campaign_id: str, lead_id: str, step: int = 1) -> str:
    """The idempotency key of one message: (campaign, lead, step)."""
    raw = f"{campaign_id}\n{lead_id}\n{step}".encode()
    return "msg_" + hashlib.sha256(raw).hexdigest()[:32]
