"""How a sender's secrets (its SMTP and IMAP URLs, its DKIM key) are kept: never in clear.

A secret reaches the store in one of two forms, and only these:

- `env:VARIABLE` — a reference, kept as given. The worker reads the variable when it sends,
  so the secret never leaves the machine that uses it (and rotating it needs no write).
- `enc:<key_id>:<base64>` — the value, AES-256-GCM encrypted under the first key of
  `CAMPAIGN_ENCRYPTION_KEY` (the same keyring as Temporal's payload codec, so one key
  rotation covers both): a random 96-bit nonce, and associated data naming the purpose and
  the key id, so a sealed secret cannot be passed off as another kind of ciphertext. Every
  key of the ring decrypts, by the id written in the value.

Without a key a value that is not `env:` is refused rather than kept in clear. Errors name
the variable, the key id or the field, never the value. Listings show `redact(...)`.
The codec (and with it `cryptography` and `temporalio`) is imported where a value is sealed
or opened, so importing this module stays cheap for `campaign --help`.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from campaign_core.settings import Settings

if TYPE_CHECKING:
    from campaign_core.codec import Keyring

ENV_PREFIX = "env:"
ENC_PREFIX = "enc:"
#: What `env:` may name: a portable environment variable name.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Associated data of every sealed secret (with the key id appended): a ciphertext made for
#: another purpose under the same key (a Temporal payload) does not open as a secret.
PURPOSE = b"campaign-secret-ref:v1:"
NONCE_BYTES = 12
#: Shown for a sealed value that is not a URL (a DKIM key) or cannot be opened here.
ENCRYPTED = "(encrypted)"


class SecretRefError(ValueError):
    """A secret cannot be sealed or opened; the message names the field, variable or key id
    and says what to do, and never contains the secret."""


def seal(value: str, settings: Settings, *, what: str = "the value") -> str:
    """The form to store: `env:VARIABLE` as given (name checked), a value already sealed
    under a key we hold as it is (so saving a row again does not re-encrypt it), anything
    else encrypted under CAMPAIGN_ENCRYPTION_KEY's first key. `what` names the field in
    errors (`smtp_url`, `--dkim-key`)."""
    text = value.strip()
    if not text:
        raise SecretRefError(f"{what} is empty")
    if text.startswith(ENV_PREFIX):
        env_name(text, what=what)
        return text
    keyring = _keyring(settings)
    if keyring is None:
        raise SecretRefError(
            f"{what} is a secret: give it as env:VARIABLE, or set CAMPAIGN_ENCRYPTION_KEY "
            "to store it encrypted")
    if text.startswith(ENC_PREFIX) and _opens(text, keyring):
        return text
    key_id = keyring.current
    nonce = os.urandom(NONCE_BYTES)
    sealed = keyring.cipher(key_id).encrypt(nonce, value.encode(), _aad(key_id))
    return f"{ENC_PREFIX}{key_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"


def unseal(stored: str, settings: Settings, environ: Mapping[str, str] = os.environ) -> str:
    """The clear value, at the moment it is used: the variable's value for `env:`, the
    decrypted value for `enc:`. Raises `SecretRefError` naming the variable or key id."""
    if stored.startswith(ENV_PREFIX):
        name = env_name(stored)
        found = environ.get(name)
        if found is None or not found.strip():
            raise SecretRefError(
                f"environment variable {name} is not set (the secret is given as env:{name}); "
                "set it where the worker runs")
        return found
    if stored.startswith(ENC_PREFIX):
        key_id, data = _parts(stored)
        keyring = _keyring(settings)
        if keyring is None:
            raise SecretRefError(
                f"the secret was stored encrypted with key id {key_id!r}, but "
                "CAMPAIGN_ENCRYPTION_KEY is not set here")
        return _decrypt(keyring, key_id, data)
    raise SecretRefError(
        "a stored secret is neither env:VARIABLE nor enc:KEY_ID:... (it was not sealed); "
        "add the sender again")


def redact(stored: str | None, settings: Settings) -> str | None:
    """The form fit for a listing: `env:VAR` as is; an encrypted URL opened and shown with
    its password (and query values) hidden; `(encrypted)` for a sealed value that is not a
    URL (a DKIM key) or that this process cannot open. Never the secret."""
    if stored is None:
        return None
    if stored.startswith(ENV_PREFIX):
        return stored
    from campaign_core.store.base import redact_url

    if not stored.startswith(ENC_PREFIX):
        # Not sealed (should not happen): a URL loses its password, anything else is hidden.
        return redact_url(stored) if "://" in stored else ENCRYPTED
    try:
        clear = unseal(stored, settings)
    except SecretRefError:
        return ENCRYPTED
    return redact_url(clear) if "://" in clear and "\n" not in clear else ENCRYPTED


def env_name(stored: str, *, what: str = "the secret") -> str:
    """The variable an `env:VARIABLE` reference names (checked)."""
    name = stored[len(ENV_PREFIX):]
    if not ENV_NAME.match(name):
        # The text after env: is not echoed: it may be a secret given in the wrong form.
        raise SecretRefError(
            f"{what}: env: must be followed by an environment variable's name (letters, "
            "digits and _, not starting with a digit)")
    return name


def is_sealed(stored: str) -> bool:
    """Whether a stored value is in one of the two sealed forms."""
    return stored.startswith((ENV_PREFIX, ENC_PREFIX))


# -- internals ----------------------------------------------------------------------------


def _keyring(settings: Settings) -> Keyring | None:
    """The configured keys, or None when CAMPAIGN_ENCRYPTION_KEY is unset or blank; a
    malformed setting raises SecretRefError (its message names the entry, not the key)."""
    from campaign_core.codec import EncryptionKeyError, parse_keyring

    secret = settings.encryption_key
    value = secret.get_secret_value() if secret is not None else ""
    if not value.strip():
        return None
    try:
        return parse_keyring(value)
    except EncryptionKeyError as exc:
        raise SecretRefError(str(exc)) from None


def _aad(key_id: str) -> bytes:
    return PURPOSE + key_id.encode()


def _parts(stored: str) -> tuple[str, bytes]:
    """(key id, nonce + ciphertext) of an `enc:` value."""
    key_id, sep, encoded = stored[len(ENC_PREFIX):].partition(":")
    if not sep or not key_id:
        raise SecretRefError("a stored secret is malformed (expected enc:KEY_ID:BASE64)")
    try:
        data = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise SecretRefError(
            f"a stored secret (key id {key_id!r}) is not valid base64") from None
    if len(data) <= NONCE_BYTES:
        raise SecretRefError(f"a stored secret (key id {key_id!r}) is too short")
    return key_id, data


def _decrypt(keyring: Keyring, key_id: str, data: bytes) -> str:
    from cryptography.exceptions import InvalidTag

    from campaign_core.codec import DecryptionError

    if key_id not in keyring.ids:
        raise SecretRefError(
            f"the secret was stored encrypted with key id {key_id!r}, which "
            f"CAMPAIGN_ENCRYPTION_KEY does not hold (it holds: {', '.join(keyring.ids)}); "
            "add that key back after the current one")
    try:
        plain = keyring.cipher(key_id).decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:],
                                               _aad(key_id))
    except (InvalidTag, DecryptionError):
        raise SecretRefError(
            f"the secret encrypted with key id {key_id!r} does not decrypt: the key under that "
            "id in CAMPAIGN_ENCRYPTION_KEY is not the one it was sealed with, or it was "
            "altered") from None
    try:
        return plain.decode()
    except UnicodeDecodeError:
        raise SecretRefError(f"the secret under key id {key_id!r} is not text") from None


def _opens(stored: str, keyring: Keyring) -> bool:
    """Whether an `enc:` value is a secret sealed under one of our keys."""
    try:
        key_id, data = _parts(stored)
        _decrypt(keyring, key_id, data)
    except SecretRefError:
        return False
    return True
