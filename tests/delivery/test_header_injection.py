"""No header injection from lead data, not even through encoded words (issue 11).

`=?utf-8?q?Eve=0D=0ABcc:_v@evil.com?=` holds no literal CR/LF, yet the email package
decodes it while folding the header and writes a real `Bcc:` line. Intake refuses such
names and companies (row and field named, the other rows go on); rendering neutralises
them again for leads that reach it some other way, and the webhook's header fields too.
"""

from __future__ import annotations

import pytest

from activities.channels import webhook_payload
from activities.rendering import header_safe, render_message
from campaign_core.leads import parse_lead_rows
from campaign_core.models import Channel
from campaign_core.settings import Settings
from tests.delivery.test_rendered_messages import _lead, deliver_on

BCC_NAME = "=?utf-8?q?Eve=0D=0ABcc:_v@evil.com?="
REPLY_TO_COMPANY = "=?utf-8?q?Acme=0D=0AReply-To:_attacker@evil.com?="
EXPECTED_HEADERS = ["Message-ID", "Date", "From", "To", "Subject", "List-Unsubscribe",
                    "List-Unsubscribe-Post", "X-Campaign-Message-Key", "MIME-Version",
                    "Content-Type"]


# -- rendering: defence in depth for leads that skipped intake -------------------------------


@pytest.mark.parametrize("channel", [Channel.OUTBOX, Channel.SMTP], ids=lambda c: c.value)
async def test_encoded_words_and_controls_forge_no_header(channel, store, settings: Settings,
                                                          hook):
    lead = _lead(first_name=BCC_NAME, last_name="Smith\x00\x07\x1b", company=REPLY_TO_COMPANY)
    got = await deliver_on(channel, store, settings, hook, lead,
                           subject=f"An idea for {REPLY_TO_COMPANY}", body="Hi,\n\nShall we?")
    msg = got["msg"]
    assert list(msg.keys()) == EXPECTED_HEADERS
    assert msg["Bcc"] is None and msg["Reply-To"] is None
    assert [a.addr_spec for a in msg["To"].addresses] == ["ana@example.com"]
    raw = got["raw"].replace(b"\r\n", b"\n")
    assert b"\nBcc:" not in raw and b"\nReply-To:" not in raw
    head = raw.split(b"\n\n", 1)[0]
    assert not any(b < 0x20 and b not in (0x0A, 0x09) for b in head), "no control byte"
    for name in ("To", "Subject"):
        value = str(msg[name])
        assert "=?" not in value and "\x00" not in value and "\r" not in value, (name, value)
    assert str(msg["Subject"]).startswith("An idea for = ?utf-8?q?Acme")


async def test_webhook_payload_header_fields_are_safe(store, settings: Settings, hook):
    lead = _lead(first_name=BCC_NAME, company="Acme")
    got = await deliver_on(Channel.WEBHOOK, store, settings, hook, lead,
                           subject=f"Hi {REPLY_TO_COMPANY}\x00")
    doc = got["doc"]
    for field in ("subject", "to_header", "from"):
        assert "\r" not in doc[field] and "\n" not in doc[field] and "\x00" not in doc[field]
        assert "=?" not in doc[field], (field, doc[field])


def test_webhook_payload_reencodes_decoded_headers():
    """A subject that decodes into CR/LF (set by something other than render_message)
    reaches the webhook as one safe line."""
    msg = render_message(key="k", sender="C <c@x.test>", to="a@x.test", to_name=None,
                         subject="s", body="Hello there", unsubscribe_url="http://u/")
    msg.replace_header("Subject", "=?utf-8?q?Hi=0D=0ABcc:_x@evil.com?=")
    doc = webhook_payload(msg, key="k", campaign_id="c", lead_id="l", step=1,
                          recipient="a@x.test")
    assert "\n" not in doc["subject"] and "\r" not in doc["subject"]


def test_header_safe_removes_every_control_character():
    assert header_safe("A\x00B\x01C\x7fD\x85E\u2028F\u2029G\tH\r\nI") == "A B C D E F G H I"
    assert "=?" not in header_safe("=?utf-8?b?QQ==?=")
    assert header_safe("Zoë O'Brien & Co") == "Zoë O'Brien & Co"


# -- intake: the row is refused, with its number and field ----------------------------------


def test_intake_rejects_encoded_words_and_controls_in_names_and_company():
    rows = [
        {"email": "ok@example.com", "first_name": "Ana", "company": "Acme = ? Corp"},
        {"email": "eve@example.com", "first_name": BCC_NAME},
        {"email": "mal@example.com", "company": REPLY_TO_COMPANY},
        {"email": "nul@example.com", "last_name": "Smith\x00"},
        {"email": "bel@example.com", "title": "CTO\x07"},
        {"email": "nl@example.com", "first_name": "Eve\nBcc: v@evil.com"},
        {"email": "notes@example.com", "notes": "line one\x00"},
        {"email": "multi@example.com", "notes": "line one\nline two\tand a tab"},
    ]
    result = parse_lead_rows(enumerate(rows, start=2), "c-intake")
    assert [lead.email for lead in result.leads] == ["ok@example.com", "multi@example.com"]
    errors = {r.row: r.error for r in result.rejected}
    assert sorted(errors) == [3, 4, 5, 6, 7, 8]
    assert errors[3].startswith("first_name: contains '=?'")
    assert errors[4].startswith("company: contains '=?'")
    assert errors[5].startswith("last_name: contains the control character U+0000")
    assert errors[6].startswith("title: contains the control character U+0007")
    assert errors[7].startswith("first_name: contains the control character U+000A")
    assert errors[8].startswith("notes: contains the control character U+0000")
