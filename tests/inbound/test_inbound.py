"""Inbound mail, parsed and classified (campaign_core/inbound.py): no I/O.

The neutral shape validates what a relay sends (addresses parsed and normalised, ids
unbracketed, header-unsafe characters removed, sizes capped); a raw RFC 5322 message
becomes the same shape; RFC 3834 headers and out-of-office subjects make an automatic
reply; a `multipart/report; report-type=delivery-status` DSN is a bounce, with its
Final-Recipient and the returned message's id.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

import pytest
from pydantic import ValidationError

from campaign_core.inbound import (
    MAX_TEXT,
    UNKNOWN_SENDER,
    InboundMessage,
    classify,
    excerpt,
    message_ids,
    parse_raw,
)


def msg(**fields: Any) -> InboundMessage:
    return InboundMessage.model_validate({"from": "Ana <ana@example.com>", **fields})


# -- the neutral shape ----------------------------------------------------------------------------


def test_addresses_are_parsed_and_normalised_and_ids_unbracketed() -> None:
    m = msg(**{"from": '"Ana, Sales" <Ana@Example.COM>'}, to="Us <replies@ours.test>, b@x.org",
            message_id="<r1@mail.example.com>", in_reply_to="<m1@ours.test>",
            references="<m0@ours.test>\r\n <m1@ours.test>")
    assert m.from_ == "ana@example.com"
    assert m.to == ["replies@ours.test", "b@x.org"]
    assert (m.message_id, m.in_reply_to, m.references) == (
        "r1@mail.example.com", ["m1@ours.test"], ["m0@ours.test", "m1@ours.test"])
    assert msg(references=["<a@x>", "b@y"]).references == ["a@x", "b@y"]
    assert message_ids("a@x, b@y") == ["a@x", "b@y"]  # relays that drop the brackets


def test_header_unsafe_characters_are_removed() -> None:
    m = msg(subject="Hi\r\nBcc: victim@example.org\x00", headers={"X-Thing": "a\r\nb",
                                                                    "Precedence": ["bulk"]},
            text="line one\r\nline\x00 two\x1b[31m")
    assert m.subject == "Hi Bcc: victim@example.org"
    assert m.headers == {"x-thing": "a b", "precedence": "bulk"}
    assert m.text == "line one\nline two[31m"


@pytest.mark.parametrize(("fields", "where"), [
    ({"from": "not an address"}, ("from",)),
    ({"from": None}, ("from",)),
    ({"text": "x" * (MAX_TEXT + 1)}, ("text",)),
    ({"message_id": "no brackets no at"}, ("message_id",)),
    ({"headers": {"X": 5}}, ("headers",)),
    ({"headers": "not a dict"}, ("headers",)),
    ({"dsn": {"final_recipient": "rfc822; nobody"}}, ("dsn", "final_recipient")),
])
def test_invalid_fields_are_named(fields: dict[str, Any], where: tuple[str, ...]) -> None:
    data = {"from": "ana@example.com", **fields}
    if data["from"] is None:
        del data["from"]
    with pytest.raises(ValidationError) as exc:
        InboundMessage.model_validate(data)
    assert [tuple(e["loc"]) for e in exc.value.errors()] == [where]


def test_a_message_without_id_gets_a_stable_content_key() -> None:
    a, b = msg(subject="Hi", text="Yes"), msg(subject="Hi", text="Yes")
    assert a.message_id is None and a.key == b.key and a.key.endswith("@inbound.invalid")
    assert msg(subject="Hi", text="No").key != a.key


# -- classification ---------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {"Auto-Submitted": "auto-replied"}, {"Auto-Submitted": "auto-generated; owner=x"},
    {"X-Autoreply": "yes"}, {"X-Autorespond": "1"},
    {"Precedence": "auto_reply"}, {"Precedence": "bulk"}, {"Precedence": "JUNK"},
])
def test_rfc_3834_and_common_headers_make_an_automatic_reply(headers: dict[str, str]) -> None:
    assert classify(msg(subject="Re: our call", headers=headers)).kind == "auto_reply"


@pytest.mark.parametrize("headers", [{}, {"Auto-Submitted": "no"}, {"Precedence": "list"}])
def test_a_person_replying_is_a_reply(headers: dict[str, str]) -> None:
    c = classify(msg(subject="Re: our call", headers=headers, text="Sounds good, Tuesday?"))
    assert c.kind == "reply" and not c.permanent_bounce


@pytest.mark.parametrize("subject", [
    "Out of Office: Re: our call", "Automatic reply: our call", "AutoReply: our call",
    "Auto-Reply", "Abwesenheitsnotiz: Re: Termin", "Réponse automatique : notre appel",
    "Reponse automatique", "Respuesta automática: nuestra llamada", "I am out of the office",
])
def test_out_of_office_subjects_make_an_automatic_reply(subject: str) -> None:
    assert classify(msg(subject=subject)).kind == "auto_reply"


def test_mail_from_a_mail_system_is_never_a_persons_reply() -> None:
    c = classify(msg(**{"from": "MAILER-DAEMON@mx.example.com"}, subject="Undelivered Mail"))
    assert c.kind == "auto_reply"


DSN_TEXT = """This is the mail system at host mx.example.com.

I'm sorry to have to inform you that your message could not be delivered.

Reporting-MTA: dns; mx.example.com
Arrival-Date: Tue, 7 May 2024 09:00:00 +0000

Final-Recipient: rfc822; Gone@Example.com
Original-Recipient: rfc822;gone@example.com
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <gone@example.com>: Recipient address rejected
"""


def test_a_relayed_dsn_is_a_bounce_with_its_fields() -> None:
    m = msg(**{"from": "Mail Delivery System <MAILER-DAEMON@mx.example.com>"},
            subject="Undelivered Mail Returned to Sender",
            headers={"Content-Type": 'multipart/report; report-type="delivery-status"; '
                                     'boundary="x"', "Auto-Submitted": "auto-replied"},
            text=DSN_TEXT + "Original-Message-ID: <m1@ours.test>\n")
    c = classify(m)
    assert c.kind == "bounce" and c.permanent_bounce and c.dsn is not None
    assert (c.dsn.final_recipient, c.dsn.original_message_id, c.dsn.status) == (
        "gone@example.com", "m1@ours.test", "5.1.1")


def test_a_delayed_dsn_is_a_soft_bounce_and_a_delivered_one_is_a_notice() -> None:
    ctype = {"Content-Type": "multipart/report; report-type=delivery-status"}
    delayed = classify(msg(headers=ctype, text="Final-Recipient: rfc822; a@b.org\n"
                                               "Action: delayed\nStatus: 4.4.1\n"))
    assert delayed.kind == "bounce" and not delayed.permanent_bounce
    delivered = classify(msg(headers=ctype, text="Final-Recipient: rfc822; a@b.org\n"
                                                 "Action: delivered\nStatus: 2.0.0\n"))
    assert delivered.kind == "auto_reply"


# -- raw RFC 5322 messages ---------------------------------------------------------------------------


def raw_reply(**headers: str) -> bytes:
    m = EmailMessage()
    m["From"] = headers.pop("From", "Ana Example <ana@example.com>")
    m["To"] = "replies@ours.test"
    m["Subject"] = headers.pop("Subject", "Re: our call")
    m["Message-ID"] = headers.pop("Message_ID", "<r1@mail.example.com>")
    for k, v in headers.items():
        m[k.replace("_", "-")] = v
    m.set_content("Yes, Tuesday works.\n\nOn Mon, 6 May 2024, Us wrote:\n> Hello Ana\n")
    return m.as_bytes()


def test_a_raw_reply_becomes_the_neutral_shape_with_its_references_chain() -> None:
    m = parse_raw(raw_reply(In_Reply_To="<m2@ours.test>",
                            References="<m1@ours.test> <m2@ours.test>"))
    assert (m.from_, m.to, m.subject, m.message_id) == (
        "ana@example.com", ["replies@ours.test"], "Re: our call", "r1@mail.example.com")
    assert m.in_reply_to == ["m2@ours.test"] and m.references == ["m1@ours.test", "m2@ours.test"]
    assert classify(m).kind == "reply"
    assert excerpt(m.text) == "Yes, Tuesday works."


def test_raw_rfc_2047_subjects_and_auto_headers_are_read() -> None:
    m = parse_raw(raw_reply(Subject="=?utf-8?q?R=C3=A9ponse_automatique?=",
                            Auto_Submitted="auto-replied"))
    assert m.subject == "Réponse automatique" and classify(m).kind == "auto_reply"


def test_a_raw_message_without_a_readable_sender_is_still_kept() -> None:
    m = parse_raw(b"Subject: hi\r\nMessage-ID: not-an-id\r\n\r\nbody\r\n")
    assert m.from_ == UNKNOWN_SENDER and m.message_id is None and m.text.strip() == "body"


def dsn_bytes(original_id: str = "<m1@ours.test>", action: str = "failed") -> bytes:
    """A multipart/report DSN as Postfix writes one (human part, status, returned headers)."""
    return f"""From: Mail Delivery System <MAILER-DAEMON@mx.example.com>
To: campaigns@ours.test
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn-1@mx.example.com>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain; charset=us-ascii

Your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com

Final-Recipient: rfc822; gone@example.com
Action: {action}
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 no such user

--B
Content-Type: text/rfc822-headers

From: Us <campaigns@ours.test>
To: gone@example.com
Subject: Hello
Message-ID: {original_id}

--B--
""".replace("\n", "\r\n").encode()


def test_a_raw_dsn_is_a_bounce_naming_the_recipient_and_our_message() -> None:
    m = parse_raw(dsn_bytes())
    assert m.dsn is not None and m.text.strip() == "Your message could not be delivered."
    c = classify(m)
    assert c.kind == "bounce" and c.permanent_bounce and c.dsn is not None
    assert (c.dsn.final_recipient, c.dsn.original_message_id, c.dsn.diagnostic) == (
        "gone@example.com", "m1@ours.test", "smtp; 550 5.1.1 no such user")


def test_excerpt_keeps_the_first_lines_without_the_quoted_thread() -> None:
    text = ("\n\nThanks!\n\n\nCall me Tuesday.\n> quoted\n"
            "-----Original Message-----\nFrom: us\nOur whole pitch")
    assert excerpt(text) == "Thanks!\n\nCall me Tuesday."
    assert excerpt("Am Mo., 6. Mai 2024 schrieb Us <u@x>:\nHallo") == ""
    assert len(excerpt("word " * 2000)) <= 2000
