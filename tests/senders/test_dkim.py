"""DKIM (issue 28): a message the engine renders and signs verifies, as the channels send it.

The message is made by the engine's own `render_message` (a follow-up: In-Reply-To and
References; List-Unsubscribe with the one-click POST), signed by `sign_message`, and then
serialised the way each channel does: the outbox's `write_outbox` file, the bytes a real
SMTP server on loopback received from `send_smtp`, and `send_smtp`'s UTF-8 form for an
address that needs SMTPUTF8. `dkim.verify` fetches the public key from a DNS server on
loopback through dnspython, as a receiver would, and a changed body or signed header
breaks the signature.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest

from activities.channels import parse_smtp_url, send_smtp, write_outbox
from activities.rendering import UTF8_MAIL_POLICY, render_message
from campaign_core.dkim_sign import SIGNED_HEADERS, DkimKey, load_dkim_key, sign_message
from tests.fakes.dkim_keys import (
    ec_pem,
    ed25519_pem,
    encrypted_rsa_pem,
    rsa_pem,
    rsa_public_pkcs1,
)
from tests.fakes.dns_server import LoopbackDns, dkim_dnsfunc, dns_server
from tests.fakes.smtp_server import smtp_server

DOMAIN = "acme.test"
SENDER = "Ana Ruiz <ana@acme.test>"
KEYS = {"rsa": rsa_pem(2048), "ed25519": ed25519_pem()}
#: Selector per key type, as a sender signing with either would publish them.
SELECTORS = {"rsa": "s2048", "ed25519": "ed1"}


@pytest.fixture(scope="module")
def dns() -> Iterator[LoopbackDns]:
    records = {f"{SELECTORS[kind]}._domainkey.{DOMAIN}": {
        "TXT": [load_dkim_key(pem).public_record()]} for kind, pem in KEYS.items()}
    with dns_server(records) as server:
        yield server


def follow_up(to: str = "bo@example.test", sender: str = SENDER) -> EmailMessage:
    """Step 2 of a sequence as the delivery agent renders it."""
    return render_message(
        key="c1-lead7-s2", sender=sender, to=to, to_name="Bo Lindqvist",
        subject="Re: the café rollout, and a long subject that goes past the seventy-eight "
                "characters where headers are usually folded",
        body="Hi Bo,\n\nFollowing up on my note about the café rollout.\n\n.\nAna\n",
        unsubscribe_url="https://campaign.example.test/unsubscribe?token=abc.DEF-123",
        mailto="mailto:unsubscribe@acme.test?subject=unsubscribe%20c1-lead7-s2",
        postal_address="Acme Ltd\n1 Harbour Street\nBristol", references=[
            "<c1-lead7-s1@acme.test>", "<reply-123@example.test>"])


def verifies(data: bytes, dns: LoopbackDns) -> bool:
    return bool(dkim.verify(data, dnsfunc=dkim_dnsfunc(dns.address)))


def signature_tags(msg: EmailMessage) -> dict[str, str]:
    value = re.sub(r"\s+", "", str(msg["DKIM-Signature"]))
    return dict(part.split("=", 1) for part in value.split(";") if part)


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_signed_outbox_message_verifies_and_breaks_when_altered(
        kind: str, dns: LoopbackDns, tmp_path: Path) -> None:
    msg = follow_up()
    sign_message(msg, selector=SELECTORS[kind], domain=DOMAIN, key_pem=KEYS[kind])

    written = write_outbox(tmp_path, "c1-lead7-s2", msg).read_bytes()
    assert written.startswith(b"DKIM-Signature: ")  # prepended, RFC 6376 5.6
    assert verifies(written, dns)

    tags = signature_tags(msg)
    assert tags["a"] == ("rsa-sha256" if kind == "rsa" else "ed25519-sha256")
    assert (tags["c"], tags["d"], tags["s"]) == ("relaxed/relaxed", DOMAIN, SELECTORS[kind])
    # Every header of the list the message has, and only those (Cc is absent).
    assert tags["h"].split(":") == [name.lower() for name in SIGNED_HEADERS]

    body_changed = written.replace(b"Following up", b"Following-up")
    assert body_changed != written and not verifies(body_changed, dns)
    subject_changed = written.replace(b"the caf", b"thy caf", 1)
    assert subject_changed != written and not verifies(subject_changed, dns)
    # A header outside the list may be added in transit (a Received: line does).
    relayed = b"Received: from relay.example.test by mx.example.test\r\n" + written
    assert verifies(relayed, dns)


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
async def test_message_received_by_a_real_smtp_server_verifies(
        kind: str, dns: LoopbackDns) -> None:
    """The bytes on the wire: `send_smtp`'s DATA (dot-stuffed, CRLF) as the server kept it."""
    msg = follow_up()
    sign_message(msg, selector=SELECTORS[kind], domain=DOMAIN, key_pem=KEYS[kind])

    async def nothing(*_: object) -> None:
        return None

    with smtp_server() as (sink, url):
        await send_smtp(parse_smtp_url(url, require_tls=False), msg,
                        recipient="bo@example.test", before_data=nothing,
                        data_refused=nothing)
    [received] = sink.messages
    assert received.content.startswith(b"DKIM-Signature: ")
    assert verifies(received.content, dns)
    assert not verifies(received.content.replace(b"rollout.", b"rollout!"), dns)


@pytest.mark.parametrize("to, sender", [
    ("jos\u00e9.mu\u00f1oz@example.test", SENDER),        # rendered in the UTF-8 policy
    ("bo@example.test", "Ana <an\u00e1@acme.test>"),      # From needs SMTPUTF8 only
])
def test_utf8_headers_sign_the_form_smtputf8_sends(
        to: str, sender: str, dns: LoopbackDns, tmp_path: Path) -> None:
    """`send_smtp` writes `msg.as_bytes(policy=UTF8_MAIL_POLICY)` when an address needs
    SMTPUTF8, the outbox `bytes(msg)`: after signing both are the signed bytes."""
    msg = follow_up(to=to, sender=sender)
    sign_message(msg, selector=SELECTORS["rsa"], domain=DOMAIN, key_pem=KEYS["rsa"])

    smtp_form = msg.as_bytes(policy=UTF8_MAIL_POLICY)
    outbox_form = write_outbox(tmp_path, "k", msg).read_bytes()
    assert smtp_form == outbox_form
    assert to.encode("utf-8") in smtp_form  # the address in UTF-8, not an encoded word
    assert verifies(smtp_form, dns)


def test_signing_again_replaces_the_signature(dns: LoopbackDns) -> None:
    msg = follow_up()
    sign_message(msg, selector=SELECTORS["rsa"], domain=DOMAIN, key_pem=KEYS["rsa"])
    sign_message(msg, selector=SELECTORS["ed25519"], domain=DOMAIN, key_pem=KEYS["ed25519"])
    assert len(msg.get_all("DKIM-Signature", [])) == 1
    assert signature_tags(msg)["s"] == SELECTORS["ed25519"]
    assert verifies(bytes(msg), dns)


def test_key_of_another_selector_does_not_verify(dns: LoopbackDns) -> None:
    """Signed with the Ed25519 key but naming the RSA selector: the DNS key is not it."""
    msg = follow_up()
    sign_message(msg, selector=SELECTORS["rsa"], domain=DOMAIN, key_pem=rsa_pem(2048, 1))
    assert not verifies(bytes(msg), dns)


def test_public_records() -> None:
    rsa_key = load_dkim_key(KEYS["rsa"])
    assert (rsa_key.algorithm, rsa_key.bits, rsa_key.describe()) == ("rsa", 2048, "RSA-2048")
    assert rsa_key.public_record() == f"v=DKIM1; k=rsa; p={rsa_key.public_key}"
    assert len(rsa_key.public_record()) > 255  # served as two TXT strings, joined on read
    ed = load_dkim_key(KEYS["ed25519"])
    assert (ed.algorithm, ed.describe()) == ("ed25519", "Ed25519")
    assert re.fullmatch(r"v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=", ed.public_record())
    # A PKCS#1 "RSA PRIVATE KEY" file is the same key.
    assert load_dkim_key(rsa_pem(2048, pkcs1=True)).public_key == rsa_key.public_key
    # The private key never shows in a repr (logs, tracebacks).
    assert "PRIVATE" not in repr(rsa_key) and "PRIVATE" not in repr(ed)
    assert isinstance(rsa_key, DkimKey)
    assert rsa_public_pkcs1(2048)  # the other p= form, used by the check tests


@pytest.mark.parametrize("pem, reason", [
    (rsa_pem(1024), "the DKIM key is RSA-1024: use RSA of at least 2048 bits"),
    ("just some notes, not a key\n", "the DKIM key is not a PEM private key"),
    ("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
     "the DKIM key is not a readable PEM private key"),
    (ec_pem(), "the DKIM key is an EC key (secp256r1): DKIM signs with RSA"),
    (encrypted_rsa_pem(), "the DKIM key is encrypted with a passphrase"),
])
def test_unusable_keys_are_refused_with_one_line(pem: str, reason: str) -> None:
    with pytest.raises(ValueError) as refused:
        load_dkim_key(pem)
    message = str(refused.value)
    assert message.startswith(reason)
    assert "\n" not in message
    with pytest.raises(ValueError, match=re.escape(reason)):
        sign_message(follow_up(), selector="s1", domain=DOMAIN, key_pem=pem)


def test_a_public_key_is_refused() -> None:
    from cryptography.hazmat.primitives import serialization

    from tests.fakes.dkim_keys import rsa_key

    public_pem = rsa_key(2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(ValueError, match="the DKIM key is a public key"):
        load_dkim_key(public_pem)
