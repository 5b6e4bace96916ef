"""DKIM for a sender (issue 28): its key, checked when it is added, and the signature.

A sender with a DKIM key signs every message it sends (RFC 6376, relaxed/relaxed) with
`d=` its From domain, so DMARC sees the signature aligned. Keys are RSA of at least 2048
bits (RFC 8301 forbids fewer than 1024 and 2048 is what Gmail asks for) or Ed25519
(RFC 8463), given in PEM; anything else is refused when the sender is added, with one line
saying why, so a bad key never reaches a send.

A DKIM signature covers bytes, not a message object: `sign_message` signs the very bytes
the channels put on the wire (`wire_bytes`) and adds the header so that serialising the
message again gives those bytes with the signature in front. The message must not change
after it is signed.

`dkim` (dkimpy, with PyNaCl for Ed25519) and `cryptography` are imported where a key is
read or a message signed: `campaign --help` stays light.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP, EmailPolicy
from email.utils import getaddresses
from typing import Any, Literal

from campaign_core.leads import needs_smtputf8

DkimAlgorithm = Literal["rsa", "ed25519"]

#: The header fields signed, when present (issue 28): what a receiver shows or acts on.
#: Content-Type and MIME-Version are left out on purpose, as most signers do: the body
#: hash already covers what the parts say.
SIGNED_HEADERS = (
    "From", "To", "Subject", "Date", "Message-ID", "In-Reply-To", "References",
    "List-Unsubscribe", "List-Unsubscribe-Post",
)
#: RFC 8301 3.2: signers MUST use at least 1024 bits and SHOULD use 2048; we refuse less.
MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class DkimKey:
    """A validated DKIM private key: its algorithm and the public half to publish.

    The private key stays out of `repr` (and so out of logs and tracebacks)."""

    algorithm: DkimAlgorithm
    #: The `p=` value of the public record: base64 of the SubjectPublicKeyInfo (RSA) or of
    #: the raw 32-byte public key (Ed25519, RFC 8463).
    public_key: str
    #: The key size for RSA, 256 for Ed25519.
    bits: int
    #: What dkimpy takes: a PKCS#1 PEM (RSA) or base64 of the raw 32-byte private key.
    _signing_key: bytes = field(repr=False, compare=False)

    def public_record(self) -> str:
        """The TXT value to publish at `<selector>._domainkey.<domain>`."""
        return f"v=DKIM1; k={self.algorithm}; p={self.public_key}"

    @property
    def signature_algorithm(self) -> str:
        return "rsa-sha256" if self.algorithm == "rsa" else "ed25519-sha256"

    def describe(self) -> str:
        """One line for listings: "RSA-2048" or "Ed25519"."""
        return f"RSA-{self.bits}" if self.algorithm == "rsa" else "Ed25519"


def load_dkim_key(pem: str) -> DkimKey:
    """The key in `pem`, or ValueError with one line saying why it cannot sign.

    Accepted: an RSA key of at least 2048 bits (PKCS#1 `RSA PRIVATE KEY` or PKCS#8
    `PRIVATE KEY`), or an Ed25519 key (PKCS#8 `PRIVATE KEY`, as `openssl genpkey -algorithm
    ed25519` writes it). Refused with a reason: no PEM, a public key, an encrypted key, a
    short RSA key, any other algorithm. The messages never quote the key.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    text = pem.strip()
    if "-----BEGIN" not in text:
        raise ValueError("the DKIM key is not a PEM private key (expected a file starting "
                         "with -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)")
    if "PUBLIC KEY-----" in text and "PRIVATE KEY-----" not in text:
        raise ValueError("the DKIM key is a public key: give the private key (the public "
                         "one is what you publish in DNS)")
    if "ENCRYPTED" in text:
        raise ValueError("the DKIM key is encrypted with a passphrase: give it unencrypted "
                         "(the sender keeps it sealed)")
    if "OPENSSH PRIVATE KEY" in text:
        raise ValueError("the DKIM key is in OpenSSH format: convert it to PKCS#8 PEM "
                         "(ssh-keygen -p -m PKCS8 -f FILE)")
    try:
        key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
    except TypeError as err:  # a passphrase is needed
        raise ValueError("the DKIM key is encrypted with a passphrase: give it unencrypted "
                         "(the sender keeps it sealed)") from err
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm) as err:
        raise ValueError("the DKIM key is not a readable PEM private key "
                         "(RSA or Ed25519 expected)") from err
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"the DKIM key is RSA-{key.key_size}: use RSA of at least "
                             f"{MIN_RSA_BITS} bits (RFC 8301) or Ed25519")
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        signing = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption())
        return DkimKey("rsa", base64.b64encode(spki).decode("ascii"), key.key_size, signing)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw_public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        raw_private = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption())
        return DkimKey("ed25519", base64.b64encode(raw_public).decode("ascii"), 256,
                       base64.b64encode(raw_private))
    raise ValueError(f"the DKIM key is {_kind(key)}: DKIM signs with RSA "
                     f"({MIN_RSA_BITS} bits or more) or Ed25519")


def _kind(key: object) -> str:
    """"an EC key (secp256r1)", "a DSA key", ...: what a refused key is, in a few words."""
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, x448, x25519

    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"an EC key ({key.curve.name})"
    if isinstance(key, dsa.DSAPrivateKey):
        return "a DSA key"
    for module, name in ((ed448, "Ed448"), (x25519, "X25519"), (x448, "X448")):
        if isinstance(key, getattr(module, f"{name}PrivateKey")):
            return f"an {name} key"
    return "a key of another type"


def same_public_key(published: str, configured: str) -> bool:
    """Whether two `p=` values name the same key, whitespace aside.

    An RSA key may be published as a SubjectPublicKeyInfo (what `public_record` gives) or
    as a bare PKCS#1 RSAPublicKey (both verify, RFC 6376 3.6.1); they are compared as keys."""
    a, b = "".join(published.split()), "".join(configured.split())
    if a == b:
        return True
    if not a or not b:
        return False
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        keys = [serialization.load_der_public_key(base64.b64decode(v, validate=True))
                for v in (a, b)]
    except ValueError:
        return False  # not DER (an Ed25519 key is compared as text above), or bad base64
    first, second = keys
    return (isinstance(first, rsa.RSAPublicKey) and isinstance(second, rsa.RSAPublicKey)
            and first.public_numbers() == second.public_numbers())


def needs_utf8_headers(msg: EmailMessage) -> bool:
    """Whether the message travels with raw UTF-8 headers (RFC 6532): its policy says so,
    or its From or To has a non-ASCII local part, which `channels.send_smtp` sends with
    SMTPUTF8 and UTF-8 headers whatever the message's policy."""
    if _policy_utf8(msg):
        return True
    values = [str(v) for name in ("From", "To") for v in msg.get_all(name, [])]
    return any(needs_smtputf8(addr) for _, addr in getaddresses(values))


def wire_bytes(msg: EmailMessage) -> bytes:
    """The bytes a channel sends or writes for this message: `bytes(msg)`, with UTF-8
    headers when `needs_utf8_headers` (the form `send_smtp` chooses). What is signed."""
    if needs_utf8_headers(msg) and not _policy_utf8(msg):
        return msg.as_bytes(policy=_utf8_policy(msg))
    return bytes(msg)


def _policy_utf8(msg: EmailMessage) -> bool:
    return isinstance(msg.policy, EmailPolicy) and msg.policy.utf8


def _utf8_policy(msg: EmailMessage) -> EmailPolicy[Any]:
    """The message's policy with UTF-8 headers: `SMTP` becomes `SMTPUTF8`, line length and
    line ends kept (the rendering's `MAIL_POLICY` becomes its `UTF8_MAIL_POLICY`)."""
    policy = msg.policy if isinstance(msg.policy, EmailPolicy) else SMTP
    return policy.clone(utf8=True)


def sign_message(msg: EmailMessage, *, selector: str, domain: str, key_pem: str) -> None:
    """Add a `DKIM-Signature` (relaxed/relaxed, rsa-sha256 or ed25519-sha256, `d=domain`,
    `s=selector`) over the headers of SIGNED_HEADERS that the message has and its body.

    Call it after every other header is set, and change nothing afterwards. A message
    whose From or To needs UTF-8 headers is switched to its policy's UTF-8 form first, so
    `bytes(msg)` (the outbox) and `send_smtp`'s SMTPUTF8 serialisation are both exactly the
    bytes signed; the MIME boundary is fixed by that first serialisation. A signature
    already on the message (a retry signing the same object) is replaced.

    Raises ValueError for a key `load_dkim_key` refuses or a message dkimpy cannot sign.
    """
    import dkim

    key = load_dkim_key(key_pem)
    del msg["DKIM-Signature"]
    if needs_utf8_headers(msg) and not _policy_utf8(msg):
        msg.policy = _utf8_policy(msg)
    data = bytes(msg)
    present = [name.encode("ascii") for name in SIGNED_HEADERS if name in msg]
    try:
        header = dkim.sign(
            data, selector.encode("ascii"), domain.encode("idna"), key._signing_key,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=key.signature_algorithm.encode("ascii"),
            include_headers=present, linesep=b"\r\n")
    except dkim.DKIMException as err:
        raise ValueError(f"DKIM signing failed: {err}") from err
    # Keep dkimpy's folding as it is: the header is stored as source lines, which the
    # generator writes back unchanged (they are far under the 998-character limit).
    lines = header.decode("ascii").splitlines(keepends=True)
    name, value = msg.policy.header_source_parse(lines)
    _prepend_header(msg, name, value)


def _prepend_header(msg: EmailMessage, name: str, value: str) -> None:
    """Put a header first (RFC 6376 5.6: a signature SHOULD be prepended), through the
    public API: take the headers out in order and put them back behind it."""
    existing = list(msg.raw_items())
    for header in {n.lower() for n, _ in existing}:
        del msg[header]
    msg.set_raw(name, value)
    for old_name, old_value in existing:
        msg.set_raw(old_name, old_value)
