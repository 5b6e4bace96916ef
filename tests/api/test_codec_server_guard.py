"""Issue 11, item 13: the codec server answers only under allowed Host names, does not
listen beyond loopback without a token, and CAMPAIGN_REQUIRE_ENCRYPTION makes every
process refuse to start without a key and refuse payloads in clear.

A DNS-rebinding page calls the server under its own name (`Host: evil.example`): that
is refused even though the TCP peer is loopback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from campaign_core.codec import (
    DecryptionError,
    EncryptionCodec,
    EncryptionKeyError,
    codec_from_setting,
)
from campaign_core.ports import free_port
from campaign_core.settings import Settings
from campaign_core.temporal import data_converter
from starter.cli import app as cli_app
from tests.api.test_codec import KEY_A, MARKER, as_json, codec, payload, serve


async def test_codec_server_refuses_other_host_names(settings: Settings) -> None:
    c = codec(f"a:{KEY_A}")
    encrypted = await c.encode([payload(MARKER)])
    async with serve(settings, c, allowed_hosts=["codec.internal"]) as client:
        for host in ("evil.example", "evil.example:8081", "127.0.0.1.evil.example", ""):
            r = await client.post("/decode", json=as_json(encrypted), headers={"Host": host})
            assert r.status_code == 400 and "Host" in r.text, (host, r.text)
            pre = await client.options("/decode", headers={"Host": host})
            assert pre.status_code == 400, host
        for host in ("localhost:8081", "127.0.0.1", "[::1]:8081", "LOCALHOST", "codec.internal:443"):
            r = await client.post("/decode", json=as_json(encrypted), headers={"Host": host})
            assert r.status_code == 200, (host, r.text)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, home: Path) -> list[dict[str, Any]]:
    """uvicorn.run recorded instead of run (no server starts in these tests)."""
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    monkeypatch.setenv("CAMPAIGN_ENCRYPTION_KEY", f"a:{KEY_A}")
    return calls


def test_codec_server_off_loopback_needs_the_token(served, monkeypatch) -> None:
    runner = CliRunner()
    for host in ("0.0.0.0", "192.168.1.10", "::"):
        result = runner.invoke(cli_app, ["codec-server", "--host", host, "--port", str(free_port())])
        assert result.exit_code == 2 and "--require-token" in result.output, (host, result.output)
    assert served == []
    for host in ("127.0.0.1", "localhost", "::1"):
        result = runner.invoke(cli_app, ["codec-server", "--host", host, "--port", str(free_port())])
        assert result.exit_code == 0, result.output
    monkeypatch.setenv("CAMPAIGN_API_TOKEN", "t0ken-for-the-codec")
    result = runner.invoke(cli_app, ["codec-server", "--host", "0.0.0.0", "--require-token",
                                     "--allowed-host", "codec.internal"])
    assert result.exit_code == 0, result.output
    assert [c["host"] for c in served] == ["127.0.0.1", "localhost", "::1", "0.0.0.0"]


# -- CAMPAIGN_REQUIRE_ENCRYPTION --------------------------------------------------------------


def test_required_encryption_without_a_key_is_refused(settings: Settings) -> None:
    settings.require_encryption = True
    with pytest.raises(EncryptionKeyError, match=r"CAMPAIGN_REQUIRE_ENCRYPTION.*CAMPAIGN_ENCRYPTION_KEY"):
        data_converter(settings)
    settings.encryption_key = SecretStr(f"a:{KEY_A}")
    assert isinstance(data_converter(settings).payload_codec, EncryptionCodec)


async def test_required_encryption_refuses_payloads_in_clear(settings: Settings) -> None:
    settings.encryption_key = SecretStr(f"a:{KEY_A}")
    lenient = data_converter(settings).payload_codec
    assert lenient is not None
    clear = payload(MARKER)
    assert await lenient.decode([clear]) == [clear]  # the default: history from before
    settings.require_encryption = True
    strict = data_converter(settings).payload_codec
    assert strict is not None
    with pytest.raises(DecryptionError, match=r"not encrypted.*drain"):
        await strict.decode([clear])
    sealed = await strict.encode([clear])
    assert await strict.decode(sealed) == [clear]
    required = codec_from_setting(f"a:{KEY_A}", require=True)
    assert required is not None
    async with serve(settings, required) as client:
        r = await client.post("/decode", json=as_json([clear]))
        assert r.status_code == 400 and "not encrypted" in r.text, r.text


BUSY = "{busy}"  # a metrics port something already listens on


@pytest.mark.parametrize("args", [["status", "c1"], ["worker", "--metrics-port", BUSY],
                                  ["api", "--metrics-port", BUSY], ["dev", "--metrics-port", BUSY],
                                  ["codec-server"], ["schedule", "list"]])
def test_every_process_refuses_to_start_without_a_key(args: list[str], served, monkeypatch) -> None:
    """The missing key is the error, whatever else is wrong (here: the metrics port is
    taken), so the check comes before anything the process opens."""
    import socket

    import starter.devstack

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    args = [a.replace(BUSY, str(taken.getsockname()[1])) for a in args]

    async def no_dev(*_: Any, **__: Any) -> None:
        served.append({"host": "dev"})

    monkeypatch.setattr(starter.devstack, "run_dev", no_dev)
    monkeypatch.delenv("CAMPAIGN_ENCRYPTION_KEY")
    monkeypatch.setenv("CAMPAIGN_REQUIRE_ENCRYPTION", "true")
    monkeypatch.setenv("CAMPAIGN_API_TOKEN", "t0ken")
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:9")  # nothing listens: the check comes first
    with taken:
        result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 2, result.output
    assert "CAMPAIGN_REQUIRE_ENCRYPTION" in result.output and "CAMPAIGN_ENCRYPTION_KEY" in result.output
    assert served == []
