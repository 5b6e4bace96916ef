"""DKIM private keys made on the spot for tests (PEM text, as `--dkim-key FILE` holds).

Made with `cryptography`, as `openssl genrsa` / `openssl genpkey -algorithm ed25519` would
write them: no key is checked into the repository.
"""

from __future__ import annotations

from functools import cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def _pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey,
         fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
         password: bytes | None = None) -> str:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password
        else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption).decode("ascii")


@cache
def rsa_key(bits: int = 2048, index: int = 0) -> rsa.RSAPrivateKey:
    """An RSA key (`index` tells apart two keys of one size); made once per test run."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def rsa_pem(bits: int = 2048, index: int = 0, *, pkcs1: bool = False) -> str:
    """PKCS#8 `PRIVATE KEY` PEM, or PKCS#1 `RSA PRIVATE KEY` with `pkcs1`."""
    fmt = (serialization.PrivateFormat.TraditionalOpenSSL if pkcs1
           else serialization.PrivateFormat.PKCS8)
    return _pem(rsa_key(bits, index), fmt)


def rsa_public_pkcs1(bits: int = 2048, index: int = 0) -> bytes:
    """The bare RSAPublicKey DER (the other form a DKIM `p=` may take)."""
    return rsa_key(bits, index).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1)


@cache
def _ed25519(index: int) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def ed25519_pem(index: int = 0) -> str:
    """PKCS#8 `PRIVATE KEY` PEM, as `openssl genpkey -algorithm ed25519` writes it."""
    return _pem(_ed25519(index))


def ec_pem() -> str:
    """A P-256 key: a valid private key DKIM does not sign with."""
    return _pem(ec.generate_private_key(ec.SECP256R1()))


def encrypted_rsa_pem() -> str:
    """An RSA-2048 key under a passphrase."""
    return _pem(rsa_key(2048), password=b"secret passphrase")
