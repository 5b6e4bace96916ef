"""Issue 11, end to end: a hostile leads file through a whole campaign.

Encoded words, a NUL, Rich markup, an ANSI escape, fullwidth and IDN spellings of one
address and a phishing link in the notes: run on the time-skipping server, approve,
deliver to the outbox, then check what reached the .eml files and the terminal.
"""

from __future__ import annotations

import asyncio
import json
import re
from email import policy
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import urlsplit

from typer.testing import CliRunner

from campaign_core.leads import normalise_email, read_leads_file
from campaign_core.models import Stage
from starter.cli import app as cli_app
from starter.manager import CampaignManager
from starter.start_options import CampaignOptions
from tests.conftest import KB
from tests.workflows.test_campaign_workflow import outbox, result_handle, wait_stage

CID = "c-hostile"
BRIEF = "Book a 20-minute call about faster month-end close."
ROWS = [
    {"email": "ana@example.com", "first_name": "=?utf-8?b?QmNjOiBldmlsQGV2aWwuZXhhbXBsZQ==?="},
    {"email": "bo@example.org", "first_name": "Bo", "company": "Ledger\x00ly"},
    {"email": "cy@example.net", "first_name": "Cy", "company": "Acme [conceal]x[/conceal]",
     "website": "https://acme.example"},
    {"email": "dee@example.com", "first_name": "Dee", "title": "CTO\x1b[31m red"},
    {"email": "jane@example.com", "first_name": "Jane", "company": "Janeco",
     "notes": "Urgent: log in at http://evil.example/login to keep your account"},
    {"email": "jane@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com", "title": "CFO"},
    {"email": "user@ex\u00e4mple.com", "first_name": "Uli", "company": "Umlaut GmbH"},
    {"email": "user@xn--exmple-cua.com", "notes": "see http://evil.example/login now"},
]
#: The headers a delivered message may carry (anything else was injected).
HEADERS = {"from", "to", "subject", "date", "message-id", "list-unsubscribe",
           "list-unsubscribe-post", "mime-version", "content-type", "content-transfer-encoding",
           "x-campaign-id", "x-campaign-message-key", "reply-to", "auto-submitted",
           "precedence", "feedback-id", "x-mailer"}
URL = re.compile(r"https?://[^\s<>()\"']+")


def allowed_hosts(public_url: str) -> set[str]:
    text = BRIEF + " ".join(p.read_text() for p in KB.rglob("*") if p.is_file())
    hosts = {urlsplit(u).hostname for u in URL.findall(text)}
    hosts |= {urlsplit(str(r.get("website"))).hostname for r in ROWS if r.get("website")}
    hosts.add(urlsplit(public_url).hostname)  # the unsubscribe link
    return {h for h in hosts if h}


async def test_a_hostile_leads_file_through_a_whole_campaign(
        ts_env, settings, store, prefix, run_workers, tmp_path: Path) -> None:
    leads_file = tmp_path / "leads.jsonl"
    leads_file.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    intake = read_leads_file(leads_file, CID)
    rejected = {r.row: r.error for r in intake.rejected}
    assert set(rejected) == {1, 2, 4}, rejected
    assert rejected[1].startswith("first_name:") and "=?" in rejected[1]
    assert rejected[2].startswith("company:") and "U+0000" in rejected[2]
    assert rejected[4].startswith("title:") and "U+001B" in rejected[4]
    assert [lead.email for lead in intake.leads] == [
        "cy@example.net", "jane@example.com", "user@xn--exmple-cua.com"]

    async with run_workers(ts_env.client):
        mgr = CampaignManager(settings, client=ts_env.client, store=store, queue_prefix=prefix,
                              use_search_attributes=False)
        await mgr.start(intake, CampaignOptions(brief=BRIEF, kb=str(KB)), name="hostile", campaign_id=CID)
        await wait_stage(ts_env, CID, Stage.AWAITING_APPROVAL)
        shown = await asyncio.to_thread(CliRunner().invoke, cli_app, ["drafts", CID])
        await mgr.approve(CID, by="tester")
        final = await result_handle(ts_env, CID).result()
    assert final.stage is Stage.COMPLETED and final.counts.sent == 3

    # `campaign drafts` shows the markup as it is, not as Rich would render it.
    assert shown.exit_code == 0, shown.output
    assert "Acme [conceal]x[/conceal]" in shown.output
    assert "\x1b" not in shown.output

    files = outbox(settings)
    recipients = []
    hosts = allowed_hosts(settings.public_url)
    for path in files:
        msg = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        names = {k.lower() for k in msg}
        assert names <= HEADERS, (path.name, names - HEADERS)
        assert len(msg.get_all("To") or []) == 1 and msg.get_all("Bcc") is None
        for key, value in msg.items():
            assert "\n" not in str(value) and "\r" not in str(value), (key, value)
            assert "evil" not in str(value).lower(), (key, value)
        recipients += [normalise_email(a.addr_spec) for a in msg["To"].addresses]
        body = msg.get_body(preferencelist=("plain",))
        assert body is not None
        text = body.get_content()
        assert "evil.example" not in text
        for url in URL.findall(text):
            assert urlsplit(url).hostname in hosts, (path.name, url)
    assert sorted(recipients) == ["cy@example.net", "jane@example.com", "user@xn--exmple-cua.com"]
