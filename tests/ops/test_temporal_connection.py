"""Reaching Temporal with the SDK's environment configuration, as the `temporal` CLI does.

mTLS against a real TLS endpoint on loopback (a TLS front for the dev server requiring a
client certificate, certificates from trustme), the API key by the `authorization`
header that endpoint records, the TOML profile file, `.env` values, and dev.json when
nothing is set.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.testing import WorkflowEnvironment

from campaign_core.settings import Settings
from campaign_core.temporal import (
    TemporalConfigError,
    TemporalUnreachable,
    connect,
    connect_config,
)
from tests.fakes.tls_proxy import TLSProxy

TEMPORAL_VARS = ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_PROFILE",
                 "TEMPORAL_CONFIG_FILE", "TEMPORAL_TLS", "TEMPORAL_TLS_CLIENT_CERT_PATH",
                 "TEMPORAL_TLS_CLIENT_KEY_PATH", "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
                 "TEMPORAL_TLS_SERVER_NAME", "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION")


@pytest.fixture(autouse=True)
def clean_env(home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TEMPORAL_* from the machine, and no user-level temporal.toml either."""
    for var in TEMPORAL_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "user" / ".config"))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pki(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    """Server certificate for localhost, a client certificate, both from one test CA."""
    out = tmp_path / "pki"
    out.mkdir()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("campaign-worker@example.test", common_name="campaign-worker")
    paths = {"ca": out / "ca.pem", "server": out / "server.pem", "client": out / "client.pem",
             "client_key": out / "client.key"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(paths["server"]))
    client.cert_chain_pems[0].write_to_path(str(paths["client"]))
    client.private_key_pem.write_to_path(str(paths["client_key"]))
    return {k: str(v) for k, v in paths.items()}


def upstream(env: WorkflowEnvironment) -> tuple[str, int]:
    host, port = env.client.service_client.config.target_host.rsplit(":", 1)
    return host, int(port)


@pytest.fixture
def tls_env(monkeypatch: pytest.MonkeyPatch, pki: dict[str, str]) -> Iterator[None]:
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", pki["ca"])
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_NAME", "localhost")
    yield


async def test_mtls_with_only_temporal_variables(
    dev_env: WorkflowEnvironment, settings: Settings, pki: dict[str, str], tls_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with TLSProxy(upstream(dev_env), pki["server"], pki["server"],
                        client_ca=pki["ca"]) as proxy:
        monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{proxy.port}")
        monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", pki["client"])
        monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", pki["client_key"])
        client = await connect(settings)
        info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
        assert info.server_version
        assert proxy.client_subjects and proxy.client_subjects[0] == "campaign-worker"
        assert any(r.get(":path", "").endswith("/GetSystemInfo") for r in proxy.requests)


async def test_mtls_endpoint_refuses_a_client_without_its_certificate(
    dev_env: WorkflowEnvironment, settings: Settings, pki: dict[str, str], tls_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with TLSProxy(upstream(dev_env), pki["server"], pki["server"],
                        client_ca=pki["ca"]) as proxy:
        monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{proxy.port}")
        with pytest.raises(TemporalUnreachable, match="TEMPORAL_TLS"):
            await connect(settings)
        assert proxy.requests == []


async def test_api_key_is_sent_as_the_authorization_header(
    dev_env: WorkflowEnvironment, settings: Settings, pki: dict[str, str], tls_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with TLSProxy(upstream(dev_env), pki["server"], pki["server"]) as proxy:
        monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{proxy.port}")
        monkeypatch.setenv("TEMPORAL_API_KEY", "tk-test-0123456789")
        monkeypatch.setenv("TEMPORAL_NAMESPACE", "default")
        await connect(settings)
    assert proxy.requests, "the client made no request through the TLS endpoint"
    assert {r.get("authorization") for r in proxy.requests} == {"Bearer tk-test-0123456789"}
    assert {r.get("temporal-namespace") for r in proxy.requests} <= {"default", None}


def test_dev_json_wins_when_nothing_is_set(settings: Settings) -> None:
    settings.campaign_home.mkdir(parents=True, exist_ok=True)
    settings.dev_file.write_text(json.dumps({"address": "127.0.0.1:17233"}))
    config = connect_config(Settings())
    assert config["target_host"] == "127.0.0.1:17233"
    assert "tls" not in config and "api_key" not in config


def test_toml_profile_and_dotenv_values(settings: Settings, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "temporal.toml"
    toml.write_text('[profile.staging]\naddress = "staging.example:7233"\n'
                    'namespace = "growth"\napi_key = "from-file"\n')
    (tmp_path / ".env").write_text(f"TEMPORAL_CONFIG_FILE={toml}\nTEMPORAL_PROFILE=staging\n")
    monkeypatch.chdir(tmp_path)
    config = connect_config(Settings())
    assert config["target_host"] == "staging.example:7233"
    assert config["namespace"] == "growth"
    assert config["api_key"] == "from-file" and config["tls"] is True
    monkeypatch.setenv("TEMPORAL_ADDRESS", "override.example:7233")  # the environment wins
    assert connect_config(Settings())["target_host"] == "override.example:7233"


def test_a_broken_config_file_is_a_clear_error(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "temporal.toml"
    toml.write_text("[profile.default\naddress = ")
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(toml))
    with pytest.raises(TemporalConfigError, match="Temporal connection settings"):
        connect_config(Settings())
