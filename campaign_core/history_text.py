"""Text fit for Temporal history when no encryption key is set: no address, no quoted text.

History (inputs, results, failures, summaries) is readable by anyone with access to the
Temporal UI or API, and stays in clear unless `CAMPAIGN_ENCRYPTION_KEY` is set. Workflows
carry ids; these helpers are the safety net for failure messages, whose full text is kept
in the store instead. See the README ("What Temporal history holds").
"""

from __future__ import annotations

import hashlib
import re

#: Anything shaped like a mail address (also inside <...> or after "RCPT TO:").
_ADDRESS = re.compile(r"[^\s<>()\[\]{}\"',;:]+@[^\s<>()\[\]{}\"',;:]+")
#: Quoted or bracketed text: where provider replies and validators put the values they saw.
_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"|<[^>\n]*>|`[^`\n]*`")
#: Longest failure message put into history.
MAX_CHARS = 300

ADDRESS_MARK = "<address>"
QUOTE_MARK = "…"


def without_addresses(text: str) -> str:
    """`text` with every mail address replaced by "<address>"."""
    return _ADDRESS.sub(ADDRESS_MARK, text)


def foreign_message(text: str) -> str:
    """A message written by a library or a server (an SMTP reply, a validator), made fit
    for history: addresses and every quoted or bracketed value removed, length capped."""
    cleaned = _QUOTED.sub(QUOTE_MARK, without_addresses(text))
    return " ".join(cleaned.split())[:MAX_CHARS]


def own_message(text: str) -> str:
    """A message this project wrote for history (ids and counts): addresses removed as a
    safety net, length capped."""
    return without_addresses(text)[:MAX_CHARS]


def domain_key(campaign_id: str, email: str) -> str:
    """The recipient's mail domain as delivery pacing sees it: an opaque key, equal for
    equal domains in one campaign (a company's domain names the company)."""
    domain = email.rpartition("@")[2].lower()
    return "dom_" + hashlib.sha256(f"{campaign_id}\n{domain}".encode()).hexdigest()[:16]
