"""Issue 11, item 14: secrets stay out of reprs and messages; SMTP never goes out in clear.

`repr(Settings)` shows no store or webhook URL credentials; `redact_url` hides query
values (`?password=`) too; and with CAMPAIGN_SMTP_REQUIRE_TLS (on by default for every
host but loopback) a server that offers no STARTTLS gets nothing, even without AUTH.
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from activities import channels
from activities.channels import SmtpTlsError, parse_smtp_url
from campaign_core.ids import message_key
from campaign_core.models import Channel
from campaign_core.settings import Settings
from campaign_core.store.base import redact_url
from campaign_core.store.factory import open_store
from tests.delivery.test_delivery_channels import deliver, parsed_leads, seed
from tests.fakes.smtp_server import smtp_server

PG_PASSWORD = "hunter2-pg"
HOOK_TOKEN = "hook-token-xyz"


def test_settings_repr_shows_no_url_credentials(home: object) -> None:
    settings = Settings(CAMPAIGN_STORE_URL=f"postgresql://app:{PG_PASSWORD}@db:5432/c",
                        CAMPAIGN_WEBHOOK_URL=f"https://hooks.example/in?token={HOOK_TOKEN}")
    for text in (repr(settings), str(settings), str(settings.model_dump())):
        assert PG_PASSWORD not in text and HOOK_TOKEN not in text
    assert settings.resolved_store_url == f"postgresql://app:{PG_PASSWORD}@db:5432/c"
    store = open_store(settings)
    assert PG_PASSWORD not in repr(store) and "app:***@db:5432/c" in repr(store)


@pytest.mark.parametrize(("url", "shown"), [
    (f"postgresql://app@db/c?password={PG_PASSWORD}&sslmode=require",
     "postgresql://app@db/c?password=***&sslmode=***"),
    (f"postgresql://db/c?sslpassword={PG_PASSWORD}", "postgresql://db/c?sslpassword=***"),
    (f"postgresql://app:{PG_PASSWORD}@db/c?application_name=x",
     "postgresql://app:***@db/c?application_name=***"),
    (f"host=db user=app password={PG_PASSWORD} dbname=c", "host=db user=app password=*** dbname=c"),
    ("postgresql://app@db/c", "postgresql://app@db/c"),
])
def test_redact_url_hides_query_values_and_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert PG_PASSWORD not in redact_url(url)


def test_smtp_require_tls_defaults_on_except_loopback() -> None:
    assert parse_smtp_url("smtp://mail.example.com:587").require_tls
    assert not parse_smtp_url("smtp://127.0.0.1:2525").require_tls
    assert not parse_smtp_url("smtp://localhost:2525").require_tls
    assert parse_smtp_url("smtp://127.0.0.1:2525", require_tls=True).require_tls
    assert not parse_smtp_url("smtp://mail.example.com", require_tls=False).require_tls


async def test_no_starttls_to_a_remote_host_sends_nothing_in_clear(
        store, settings, monkeypatch) -> None:
    """No credentials (so no AUTH to protect) and still: nothing goes out without TLS."""
    cid = "c-clear"
    [lead] = await seed(store, cid, parsed_leads(cid)[:1])
    monkeypatch.setattr(channels, "_is_loopback", lambda host: False)  # pretend it is remote
    with smtp_server() as (sink, url):
        settings.smtp_url = SecretStr(url)
        with pytest.raises(SmtpTlsError, match="offers no STARTTLS and CAMPAIGN_SMTP_REQUIRE_TLS"):
            await deliver(store, settings, cid, lead.lead_id, Channel.SMTP)
        assert sink.messages == []
        assert (await store.get_delivery(message_key(cid, lead.lead_id))).status == "sending"
        settings.smtp_require_tls = False  # an explicit opt-out (a relay on a trusted network)
        out = await deliver(store, settings, cid, lead.lead_id, Channel.SMTP)
    assert out.status == "sent" and len(sink.messages) == 1


async def test_require_tls_on_loopback_when_asked(store, settings, monkeypatch) -> None:
    cid = "c-clear-lo"
    [lead] = await seed(store, cid, parsed_leads(cid)[:1])
    monkeypatch.setenv("CAMPAIGN_SMTP_REQUIRE_TLS", "true")
    strict = Settings()
    with smtp_server() as (sink, url):
        strict.smtp_url = SecretStr(url)
        with pytest.raises(SmtpTlsError, match="CAMPAIGN_SMTP_REQUIRE_TLS"):
            await deliver(store, strict, cid, lead.lead_id, Channel.SMTP)
    assert sink.messages == []
