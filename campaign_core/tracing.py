"""OpenTelemetry traces over OTLP, through Temporal's tracing interceptor.

Installed only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
See "Temporal connection, encryption and tracing" in docs/architecture.md.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from temporalio.client import Interceptor

from campaign_core.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

DEFAULT_SERVICE_NAME = "campaign-engine"
INSTRUMENTATION = "campaign_engine"

_providers: dict[tuple[str, str], TracerProvider] = {}
_lock = threading.Lock()


def traces_endpoint(base: str) -> str:
    """The OTLP/HTTP traces URL for an `OTEL_EXPORTER_OTLP_ENDPOINT` base."""
    explicit = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if explicit:
        return explicit
    base = base.strip()
    if "://" not in base:
        base = f"http://{base}"
    return f"{base.rstrip('/')}/v1/traces"


def service_name() -> str:
    return os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME


def tracer_provider(settings: Settings) -> TracerProvider | None:
    """The process's provider for the configured endpoint (one per endpoint), or None."""
    if not settings.otlp_endpoint or not settings.otlp_endpoint.strip():
        return None
    url, name = traces_endpoint(settings.otlp_endpoint), service_name()
    with _lock:
        provider = _providers.get((url, name))
        if provider is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import SERVICE_NAME, Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            # Flushed and shut down at interpreter exit (the provider's default), so a
            # short CLI command still delivers its spans.
            provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
            _providers[(url, name)] = provider
    return provider


def flush_tracing() -> None:
    """Deliver and close every provider this process made: for a process that ends with
    `os._exit`, where the providers' own exit hooks never run."""
    for provider in list(_providers.values()):
        provider.shutdown()
    _providers.clear()


def tracing_interceptors(
    settings: Settings, provider: TracerProvider | None = None
) -> list[Interceptor]:
    """`[TracingInterceptor]` when tracing is configured (or a provider is given), else `[]`."""
    provider = provider or tracer_provider(settings)
    if provider is None:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(provider.get_tracer(INSTRUMENTATION))]


def is_traced(interceptors: Iterable[object]) -> bool:
    """Whether a client's interceptors include Temporal's tracing interceptor."""
    module = sys.modules.get("temporalio.contrib.opentelemetry")
    if module is None:  # never imported, so no such interceptor exists
        return False
    return any(isinstance(i, module.TracingInterceptor) for i in interceptors)
