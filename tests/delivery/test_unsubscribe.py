"""Unsubscribe tokens: what they name, and that nothing else gets through."""

from __future__ import annotations

import base64

import pytest

from campaign_core.unsubscribe import BadToken, Claims, make_token, read_token

KEY = b"k" * 32


def test_a_token_names_its_message_and_survives_a_round_trip() -> None:
    claims = Claims("q4.outreach-1", "ld_abc123", 2)
    token = make_token(KEY, claims)
    assert read_token(KEY, token) == claims
    assert token.startswith("u1.") and "@" not in token and len(token) < 120


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),   # tag altered
    lambda t: t.replace(t.split(".")[1], base64.urlsafe_b64encode(
        b'["q4","ld_other",1]').rstrip(b"=").decode()),          # payload swapped
    lambda t: "u2" + t[2:],                                        # unknown version
    lambda t: t + ".x",                                            # extra part
    lambda t: "",                                                  # empty
    lambda t: "u1.%%%.@@@",                                        # not base64
])
def test_altered_or_foreign_tokens_are_refused(mangle) -> None:
    token = make_token(KEY, Claims("q4", "ld_1"))
    with pytest.raises(BadToken):
        read_token(KEY, mangle(token))


def test_a_token_from_another_key_is_refused() -> None:
    with pytest.raises(BadToken, match="signature"):
        read_token(KEY, make_token(b"other key", Claims("q4", "ld_1")))
