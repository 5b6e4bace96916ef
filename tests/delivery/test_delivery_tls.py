"""The smtp channel over TLS: STARTTLS, smtps://, certificate checks, AUTH over TLS.

A real aiosmtpd server on loopback with a certificate from a throwaway `trustme` CA.
The client trusts that CA the standard way, through `SSL_CERT_FILE` (OpenSSL's default
verify paths): there is no setting that turns verification off, and none is needed.

An untrusted certificate is a transport failure, retried (`SmtpTlsError`): nothing was
sent, the delivery row stays `sending`, and once the CA is trusted the retry delivers
the message, once.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError

from activities import channels
from activities.channels import ChannelRefused, SmtpTlsError, parse_smtp_url
from activities.registry import PERMANENT_ERRORS
from campaign_core.ids import message_key
from campaign_core.models import Channel
from tests.delivery.test_delivery_channels import deliver, parsed_leads, seed
from tests.fakes.smtp_server import smtp_server

USER = "mailer@example.com"
PASSWORD = "pa:ss/w@rd%Zq9"  # needs percent-encoding in the URL
URL_PASSWORD = "pa%3Ass%2Fw%40rd%25Zq9"


# aiosmtpd's auth_require_tls does not know implicit TLS, so smtps:// servers turn it off.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Requiring AUTH while not requiring TLS:UserWarning")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or ("127.0.0.1", "localhost"))).configure_cert(ctx)
    return ctx


@pytest.fixture
def trust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`trust(ca)`: make the client trust only `ca`, through SSL_CERT_FILE."""

    def _trust(authority: trustme.CA) -> Path:
        pem = tmp_path / f"ca-{id(authority)}.pem"
        authority.cert_pem.write_to_path(str(pem))
        monkeypatch.setenv("SSL_CERT_FILE", str(pem))
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        return pem

    return _trust


@pytest.fixture
def no_password_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Everything the client side logs (the test server's own log aside) lacks the password."""
    caplog.set_level(logging.DEBUG)
    yield
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in ours)
    assert PASSWORD not in text and URL_PASSWORD not in text


def creds_url(url: str) -> str:
    """The sink's URL carries the raw password; CAMPAIGN_SMTP_URL carries it encoded."""
    return url.replace(f":{PASSWORD}@", f":{URL_PASSWORD}@")


def chain_text(err: BaseException) -> str:
    parts: list[str] = []
    cur: BaseException | None = err
    while cur is not None:
        parts.append(f"{type(cur).__name__}: {cur}")
        cur = cur.__cause__ or cur.__context__
    return "\n".join(parts)


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_tls_message_arrives_over_tls_with_auth(store, settings, ca, trust, mode,
                                                      no_password_logged):
    """(a) STARTTLS required before AUTH/MAIL, (b) smtps://, (d) AUTH from the URL over TLS."""
    cid = f"c-tls-{mode}"
    [lead] = await seed(store, cid, parsed_leads(cid)[:1])
    trust(ca)
    with smtp_server(user=USER, password=PASSWORD, tls=mode,
                     tls_context=server_context(ca)) as (sink, url):
        settings.smtp_url = SecretStr(creds_url(url))
        assert url.startswith("smtps://" if mode == "implicit" else "smtp://")
        out = await deliver(store, settings, cid, lead.lead_id, Channel.SMTP)
    assert out.status == "sent"
    [received] = sink.messages
    assert received.tls is not None and received.tls.startswith("TLSv1."), "the session was TLS"
    assert received.login == USER, "the client authenticated with the URL's user, over TLS"
    assert received.rcpt_tos == ["ana@example.com"]
    assert received.message["Message-ID"] == out.message_id
    # The audit record says the message went over TLS.
    sent = [a for a in await store.audit(cid) if a.agent.startswith("delivery")]
    assert sent[-1].envelope["records"][0]["data"]["tls"] == received.tls


async def test_starttls_by_host_name_in_certificate(store, settings, ca, trust):
    """The certificate names `localhost`: the client checks the URL's host against it."""
    cid = "c-tls-name"
    [lead] = await seed(store, cid, parsed_leads(cid)[:1])
    trust(ca)
    with smtp_server(tls="starttls", tls_context=server_context(ca, "localhost"),
                     host="localhost") as (sink, url):
        settings.smtp_url = SecretStr(url)
        out = await deliver(store, settings, cid, lead.lead_id, Channel.SMTP)
    assert out.status == "sent" and len(sink.messages) == 1 and sink.messages[0].tls


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
@pytest.mark.parametrize("problem", ["unknown-ca", "wrong-name"])
async def test_untrusted_certificate_is_refused_retried_then_sent_once(
        store, settings, ca, trust, mode, problem, no_password_logged):
    """(c) Verification is on by default; a refused certificate sends nothing, is retried,
    and once the certificate is trusted the retry delivers exactly one message."""
    cid = f"c-untrusted-{mode}-{problem}"
    [lead] = await seed(store, cid, parsed_leads(cid)[:1])
    key = message_key(cid, lead.lead_id)
    names = ("mail.example.test",) if problem == "wrong-name" else ("127.0.0.1", "localhost")
    trust(trustme.CA() if problem == "unknown-ca" else ca)  # the client trusts another CA
    with smtp_server(user=USER, password=PASSWORD, tls=mode,
                     tls_context=server_context(ca, *names)) as (sink, url):
        settings.smtp_url = SecretStr(creds_url(url))
        port = parse_smtp_url(creds_url(url)).port
        with pytest.raises(SmtpTlsError) as info:
            await deliver(store, settings, cid, lead.lead_id, Channel.SMTP)
        err = info.value
        assert f"SMTP server 127.0.0.1:{port}: certificate not trusted" in str(err)
        if problem == "wrong-name":
            assert "mismatch" in str(err).lower() and "host name the certificate" in str(err)
        else:
            assert "unable to get local issuer certificate" in str(err)
            assert "SSL_CERT_FILE" in str(err)
        assert "Nothing was sent; the send is retried." in str(err)
        assert PASSWORD not in chain_text(err) and URL_PASSWORD not in chain_text(err)
        # A transport failure: the activity's retry policy retries it.
        assert not isinstance(err, ApplicationError)
        assert type(err).__name__ not in PERMANENT_ERRORS
        assert sink.messages == [] and sink.logins == [], "no AUTH, no MAIL before TLS"
        row = await store.get_delivery(key)
        assert row is not None and row.status == "sending", "not failed: the retry may send"
        # The retry still refuses while nothing changed ...
        with pytest.raises(SmtpTlsError):
            await deliver(store, settings, cid, lead.lead_id, Channel.SMTP)
        # ... and delivers once the operator fixes trust (here: the right certificate).
        if problem == "unknown-ca":
            trust(ca)
            out = await deliver(store, settings, cid, lead.lead_id, Channel.SMTP)
    if problem == "wrong-name":
        with smtp_server(user=USER, password=PASSWORD, tls=mode,
                         tls_context=server_context(ca)) as (sink, url):
            settings.smtp_url = SecretStr(creds_url(url))
            out = await deliver(store, settings, cid, lead.lead_id, Channel.SMTP)
    assert out.status == "sent"
    assert len(sink.messages) == 1 and sink.messages[0].tls
    assert getattr(await store.get_delivery(key), "status", None) == "sent"


async def test_wrong_password_over_tls_is_refused_without_showing_it(store, settings, ca, trust,
                                                                    no_password_logged):
    """A 535 is the server's permanent answer; the error and the row never carry the password."""
    cid = "c-tls-badpass"
    [lead] = await seed(store, cid, parsed_leads(cid)[:1])
    trust(ca)
    with smtp_server(user=USER, password="the-right-one", tls="starttls",
                     tls_context=server_context(ca)) as (sink, url):
        settings.smtp_url = SecretStr(url.replace(":the-right-one@", f":{URL_PASSWORD}@"))
        with pytest.raises(ApplicationError) as info:
            await deliver(store, settings, cid, lead.lead_id, Channel.SMTP)
    assert info.value.non_retryable and "535" in str(info.value)
    assert isinstance(info.value.__cause__, ChannelRefused)
    text = chain_text(info.value)
    assert PASSWORD not in text and URL_PASSWORD not in text
    row = await store.get_delivery(message_key(cid, lead.lead_id))
    assert row is not None and row.status == "failed" and PASSWORD not in (row.error or "")
    assert sink.messages == []
    assert PASSWORD not in repr(parse_smtp_url(settings.smtp_url.get_secret_value()))


async def test_password_never_sent_in_clear_to_a_remote_host(store, settings, monkeypatch,
                                                            no_password_logged):
    """No STARTTLS offered and a host that is not loopback: fail before AUTH, retryable."""
    cid = "c-cleartext"
    [lead] = await seed(store, cid, parsed_leads(cid)[:1])
    monkeypatch.setattr(channels, "_is_loopback", lambda host: False)  # pretend it is remote
    with pytest.warns(UserWarning, match="Requiring AUTH while not requiring TLS"), \
            smtp_server(user=USER, password=PASSWORD) as (sink, url):
        settings.smtp_url = SecretStr(creds_url(url))
        with pytest.raises(SmtpTlsError, match="offers no STARTTLS: not sending the password"):
            await deliver(store, settings, cid, lead.lead_id, Channel.SMTP)
    assert sink.logins == [] and sink.messages == []
    assert getattr(await store.get_delivery(message_key(cid, lead.lead_id)), "status", None) == "sending"


def test_loopback_hosts():
    assert channels._is_loopback("127.0.0.1") and channels._is_loopback("::1")
    assert channels._is_loopback("LOCALHOST")
    assert not channels._is_loopback("smtp.example.com")
    assert not channels._is_loopback("10.0.0.1")


def test_client_context_verifies_by_default(monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    ctx = channels.smtp_tls_context()
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
