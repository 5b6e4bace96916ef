"""Payload encryption: every payload Temporal stores is AES-256-GCM encrypted.

Keys come from `CAMPAIGN_ENCRYPTION_KEY`; the first encrypts, all decrypt by key id, which
is how keys rotate. See "Temporal connection, encryption and tracing" in docs/architecture.md.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32
NONCE_BYTES = 12
SETTING = "CAMPAIGN_ENCRYPTION_KEY"
REQUIRE_SETTING = "CAMPAIGN_REQUIRE_ENCRYPTION"
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")


class EncryptionKeyError(ValueError):
    """CAMPAIGN_ENCRYPTION_KEY is malformed; the message names the entry, never the key."""


class DecryptionError(ValueError):
    """A payload cannot be decrypted with the configured keys."""


@dataclass(frozen=True)
class Keyring:
    """The configured keys in order; the first encrypts. Never shows key material."""

    ids: tuple[str, ...]
    _ciphers: dict[str, AESGCM] = field(repr=False, compare=False)

    @property
    def current(self) -> str:
        return self.ids[0]

    def cipher(self, key_id: str) -> AESGCM:
        try:
            return self._ciphers[key_id]
        except KeyError:
            raise DecryptionError(
                f"payload was encrypted with key id {key_id!r}, which {SETTING} does not hold "
                f"(it holds: {', '.join(self.ids)}); add that key back after the current one"
            ) from None


def _decode_key(text: str) -> bytes | None:
    """Standard or URL-safe base64, padding optional; None when it is not base64."""
    text = text.strip()
    if not _BASE64.match(text):
        return None
    bare = text.rstrip("=").replace("+", "-").replace("/", "_")
    try:
        return base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
    except (binascii.Error, ValueError):
        return None


def parse_keyring(value: str) -> Keyring:
    """Parse `KEY_ID:BASE64[,KEY_ID:BASE64...]`, or raise `EncryptionKeyError`."""
    entries = [e.strip() for e in value.split(",")]
    if not any(entries):
        raise EncryptionKeyError(f"{SETTING} is set but holds no key (expected KEY_ID:BASE64,...)")
    ids: list[str] = []
    ciphers: dict[str, AESGCM] = {}
    for position, entry in enumerate(entries, start=1):
        where = f"{SETTING} entry {position}"
        if not entry:
            raise EncryptionKeyError(f"{where} is empty (expected KEY_ID:BASE64, comma-separated)")
        key_id, sep, material = entry.partition(":")
        key_id = key_id.strip()
        if not sep:
            raise EncryptionKeyError(f"{where} has no ':' (expected KEY_ID:BASE64)")
        if not _KEY_ID.match(key_id):
            raise EncryptionKeyError(
                f"{where}: the key id must be 1-64 letters, digits, '.', '_' or '-'")
        where = f"{where} (key id {key_id!r})"
        if key_id in ciphers:
            raise EncryptionKeyError(f"{where}: key id {key_id!r} appears more than once")
        raw = _decode_key(material)
        if raw is None:
            raise EncryptionKeyError(f"{where}: the key is not valid base64")
        if len(raw) != KEY_BYTES:
            raise EncryptionKeyError(
                f"{where}: the key is {len(raw)} bytes, expected {KEY_BYTES} (AES-256); "
                "make one with: python -c "
                "'import os,base64; print(base64.b64encode(os.urandom(32)).decode())'"
            )
        ids.append(key_id)
        ciphers[key_id] = AESGCM(raw)
    return Keyring(tuple(ids), ciphers)


class EncryptionCodec(PayloadCodec):
    """AES-GCM payload codec over a `Keyring` (Temporal's `encryption/` sample, with rotation)."""

    def __init__(self, keyring: Keyring, *, require_encrypted: bool = False) -> None:
        self.keyring = keyring
        self.require_encrypted = require_encrypted

    def __repr__(self) -> str:
        return (f"EncryptionCodec(key_ids={self.keyring.ids!r}, "
                f"require_encrypted={self.require_encrypted})")

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self.keyring.current
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.keyring.cipher(key_id).encrypt(
            nonce, payload.SerializeToString(), key_id.encode())
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            if self.require_encrypted:
                raise DecryptionError(
                    f"payload is not encrypted and {REQUIRE_SETTING} is on: refusing it (drain "
                    f"runs started in clear before turning {REQUIRE_SETTING} on)")
            return payload  # written before encryption was on: readable as it is
        raw_id = payload.metadata.get(KEY_ID_METADATA)
        if not raw_id:
            raise DecryptionError(f"encrypted payload has no {KEY_ID_METADATA!r} metadata")
        key_id = raw_id.decode("utf-8", "replace")
        cipher = self.keyring.cipher(key_id)
        data = payload.data
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise DecryptionError(
                f"payload encrypted with key id {key_id!r} does not decrypt: the key under "
                f"that id in {SETTING} is not the one it was written with, or the data was altered"
            ) from None
        result = Payload()
        result.ParseFromString(plain)
        return result


def codec_from_setting(value: str | None, *, require: bool = False) -> EncryptionCodec | None:
    """The codec for a `CAMPAIGN_ENCRYPTION_KEY` value; None when unset or blank, which
    `require` (CAMPAIGN_REQUIRE_ENCRYPTION) refuses with `EncryptionKeyError`."""
    if value is None or not value.strip():
        if require:
            raise EncryptionKeyError(
                f"{REQUIRE_SETTING} is on but {SETTING} is not set: refusing to run without "
                "encryption (set KEY_ID:BASE64 entries of 32-byte keys)")
        return None
    return EncryptionCodec(parse_keyring(value), require_encrypted=require)
