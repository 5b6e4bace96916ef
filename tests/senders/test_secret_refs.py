"""A sender's secrets are kept as `env:VARIABLE` or sealed under CAMPAIGN_ENCRYPTION_KEY
(campaign_core/secret_refs.py): they round-trip, a rotated-out key still opens what it
sealed, nothing is kept in clear without a key, and no error or listing shows the secret."""

from __future__ import annotations

import base64
import os

import pytest
from pydantic import SecretStr

from campaign_core.secret_refs import ENCRYPTED, SecretRefError, redact, seal, unseal
from campaign_core.settings import Settings

KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(100, 132))).decode()
PASSWORD = "s3cret-Pa55"
SMTP_URL = f"smtps://ana%40acme.io:{PASSWORD}@smtp.acme.io:465"
DKIM_PEM = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGZha2Uta2V5LWZvci10ZXN0cw==\n" \
           "-----END PRIVATE KEY-----\n"


def keyed(settings: Settings, value: str | None) -> Settings:
    return settings.model_copy(
        update={"encryption_key": SecretStr(value) if value is not None else None})


def test_a_url_is_sealed_under_the_first_key_and_opens_again(settings: Settings) -> None:
    s = keyed(settings, f"a:{KEY_A}")
    stored = seal(SMTP_URL, s)
    assert stored.startswith("enc:a:")
    assert PASSWORD not in stored and "smtp.acme.io" not in stored
    assert unseal(stored, s) == SMTP_URL
    assert seal(SMTP_URL, s) != stored  # a random nonce each time
    assert unseal(seal(DKIM_PEM, s), s) == DKIM_PEM  # multi-line values too


def test_sealing_a_sealed_value_again_keeps_it(settings: Settings) -> None:
    s = keyed(settings, f"a:{KEY_A}")
    stored = seal(SMTP_URL, s)
    assert seal(stored, s) == stored


def test_env_references_are_kept_and_read_at_use(settings: Settings) -> None:
    assert seal(" env:ANA_SMTP_URL ", settings) == "env:ANA_SMTP_URL"  # no key needed
    assert unseal("env:ANA_SMTP_URL", settings, {"ANA_SMTP_URL": SMTP_URL}) == SMTP_URL


def test_an_unset_variable_is_named(settings: Settings) -> None:
    with pytest.raises(SecretRefError, match="ANA_SMTP_URL is not set"):
        unseal("env:ANA_SMTP_URL", settings, {})
    with pytest.raises(SecretRefError, match="ANA_SMTP_URL is not set"):
        unseal("env:ANA_SMTP_URL", settings, {"ANA_SMTP_URL": "  "})


@pytest.mark.parametrize("ref", ["env:", "env:1ABC", "env:A-B", f"env:{SMTP_URL}"])
def test_a_bad_variable_name_is_refused_without_echoing_it(settings: Settings, ref: str) -> None:
    with pytest.raises(SecretRefError, match="smtp_url: env: must be followed") as err:
        seal(ref, settings, what="smtp_url")
    assert PASSWORD not in str(err.value)


def test_without_a_key_a_clear_secret_is_refused(settings: Settings) -> None:
    s = keyed(settings, None)
    with pytest.raises(SecretRefError) as err:
        seal(SMTP_URL, s, what="smtp_url")
    message = str(err.value)
    assert message.startswith("smtp_url is a secret: give it as env:VARIABLE, or set "
                              "CAMPAIGN_ENCRYPTION_KEY to store it encrypted")
    assert PASSWORD not in message


def test_a_rotated_out_key_still_opens_what_it_sealed(settings: Settings) -> None:
    old = seal(SMTP_URL, keyed(settings, f"a:{KEY_A}"))
    rotated = keyed(settings, f"b:{KEY_B},a:{KEY_A}")
    assert unseal(old, rotated) == SMTP_URL
    new = seal(SMTP_URL, rotated)
    assert new.startswith("enc:b:") and unseal(new, rotated) == SMTP_URL


def test_opening_fails_by_key_id_never_by_value(settings: Settings) -> None:
    stored = seal(SMTP_URL, keyed(settings, f"a:{KEY_A}"))
    cases = {
        "not set here": keyed(settings, None),
        "does not hold": keyed(settings, f"b:{KEY_B}"),
        "does not decrypt": keyed(settings, f"a:{KEY_B}"),  # same id, another key
    }
    for expected, s in cases.items():
        with pytest.raises(SecretRefError, match=expected) as err:
            unseal(stored, s)
        assert "'a'" in str(err.value) and PASSWORD not in str(err.value)


def test_an_altered_value_does_not_open(settings: Settings) -> None:
    s = keyed(settings, f"a:{KEY_A}")
    prefix, key_id, data = seal(SMTP_URL, s).split(":")
    raw = bytearray(base64.urlsafe_b64decode(data))
    raw[-1] ^= 1
    with pytest.raises(SecretRefError, match="does not decrypt"):
        unseal(f"{prefix}:{key_id}:{base64.urlsafe_b64encode(bytes(raw)).decode()}", s)


def test_a_value_stored_in_clear_is_not_opened(settings: Settings) -> None:
    with pytest.raises(SecretRefError, match="neither env:VARIABLE nor enc:") as err:
        unseal(SMTP_URL, keyed(settings, f"a:{KEY_A}"))
    assert PASSWORD not in str(err.value)


def test_redact_never_shows_the_password(settings: Settings) -> None:
    s = keyed(settings, f"a:{KEY_A}")
    with_query = seal("imaps://ana:pw@imap.acme.io/INBOX?password=" + PASSWORD, s)
    shown = {
        "url": redact(seal(SMTP_URL, s), s),
        "query": redact(with_query, s),
        "dkim": redact(seal(DKIM_PEM, s), s),
        "no key here": redact(seal(SMTP_URL, s), keyed(settings, None)),
        "other key": redact(seal(SMTP_URL, s), keyed(settings, f"b:{KEY_B}")),
        "env": redact("env:ANA_SMTP_URL", s),
        "clear": redact(SMTP_URL, s),
    }
    assert shown["url"] == "smtps://ana%40acme.io:***@smtp.acme.io:465"
    assert shown["query"] == "imaps://ana:***@imap.acme.io/INBOX?password=***"
    assert shown["dkim"] == shown["no key here"] == shown["other key"] == ENCRYPTED
    assert shown["env"] == "env:ANA_SMTP_URL"
    assert shown["clear"] == "smtps://ana%40acme.io:***@smtp.acme.io:465"
    assert redact(None, s) is None
    for value in shown.values():
        assert value is not None and PASSWORD not in value and "MC4CAQAw" not in value


def test_a_malformed_key_setting_is_named_not_shown(settings: Settings) -> None:
    with pytest.raises(SecretRefError, match=r"entry 1.*not valid base64") as err:
        seal(SMTP_URL, keyed(settings, "a:not!base64"))
    assert "not!base64" not in str(err.value)


def test_unseal_reads_the_process_environment_by_default(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BO_SMTP_URL", SMTP_URL)
    assert unseal("env:BO_SMTP_URL", settings) == os.environ["BO_SMTP_URL"]
