"""OpenTelemetry traces (OTEL_EXPORTER_OTLP_ENDPOINT) over OTLP/HTTP to a loopback receiver.

A tiny HTTP server records what the exporter POSTs to /v1/traces; a campaign run by
workers built from a traced client must produce spans for the workflows and their
activities. Without the variable, clients get no interceptor and workers the plain
sandbox.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from campaign_core.ids import campaign_workflow_id
from campaign_core.leads import parse_lead_rows
from campaign_core.models import CampaignStatus, Stage
from campaign_core.settings import Settings
from campaign_core.temporal import client_interceptors, connect
from campaign_core.tracing import (
    DEFAULT_SERVICE_NAME,
    is_traced,
    service_name,
    tracer_provider,
    traces_endpoint,
    tracing_interceptors,
)
from starter.manager import CampaignManager
from starter.start_options import CampaignOptions
from tests.conftest import KB
from worker_main import workflow_runner


class Receiver:
    """Records OTLP/HTTP trace exports: (path, ExportTraceServiceRequest)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, ExportTraceServiceRequest]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                outer.requests.append((self.path, req))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[tuple[str, str]]:
        """(service name, span name) of every span received."""
        out: list[tuple[str, str]] = []
        for _, req in self.requests:
            for rs in req.resource_spans:
                service = next(a.value.string_value for a in rs.resource.attributes
                               if a.key == "service.name")
                out.extend((service, s.name) for ss in rs.scope_spans for s in ss.spans)
        return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


async def test_a_campaign_run_exports_workflow_and_activity_spans(
    ts_env, settings, store, prefix, run_workers, receiver, monkeypatch
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    settings.otlp_endpoint = receiver.url
    interceptors = client_interceptors(settings)
    assert [type(i) for i in interceptors] == [TracingInterceptor]
    client = Client(ts_env.client.service_client, namespace=ts_env.client.namespace,
                    data_converter=pydantic_data_converter, interceptors=interceptors)
    runner = workflow_runner(client)
    assert isinstance(runner, SandboxedWorkflowRunner)
    assert "opentelemetry" in runner.restrictions.passthrough_modules

    cid = "c-traced"
    leads = [{"email": "ana@example.com", "first_name": "Ana", "company": "Northwind"}]
    async with run_workers(client):
        mgr = CampaignManager(settings, client=client, store=store, queue_prefix=prefix,
                              use_search_attributes=False)
        await mgr.start(parse_lead_rows(enumerate(leads, start=2), cid),
                        CampaignOptions(brief="Book a call.", kb=str(KB)), name="traced", campaign_id=cid)
        handle = client.get_workflow_handle(campaign_workflow_id(cid), result_type=CampaignStatus)
        for _ in range(400):
            st = await handle.query("status", result_type=CampaignStatus)
            if st.stage is Stage.AWAITING_APPROVAL:
                break
            await asyncio.sleep(0.05)
        await mgr.reject(cid, by="tester")
        assert (await handle.result()).stage is Stage.REJECTED

    provider = tracer_provider(settings)
    assert provider is not None
    assert await asyncio.to_thread(provider.force_flush, 10_000)
    assert receiver.requests and {p for p, _ in receiver.requests} == {"/v1/traces"}
    spans = receiver.spans()
    assert {service for service, _ in spans} == {DEFAULT_SERVICE_NAME}
    names = {name for _, name in spans}
    for expected in ("StartWorkflow:CampaignWorkflow", "RunWorkflow:CampaignWorkflow",
                     "StartChildWorkflow:LeadOrchestrator", "RunWorkflow:LeadOrchestrator",
                     "StartActivity:store_lead", "RunActivity:store_lead",
                     "RunActivity:retrieve_knowledge", "RunActivity:write_draft"):
        assert expected in names, f"no {expected!r} span in {sorted(names)}"


async def test_unset_means_no_interceptor_and_the_plain_sandbox(ts_env, home, monkeypatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    settings = Settings()
    assert tracer_provider(settings) is None
    assert tracing_interceptors(settings) == [] and client_interceptors(settings) == []
    client = await connect(settings, address=ts_env.client.service_client.config.target_host)
    assert list(client.config()["interceptors"]) == []
    assert not is_traced(client.config()["interceptors"])
    runner = workflow_runner(client)
    assert isinstance(runner, SandboxedWorkflowRunner)
    assert "opentelemetry" not in runner.restrictions.passthrough_modules


def test_endpoint_and_service_name(monkeypatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert traces_endpoint("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_endpoint("collector:4318") == "http://collector:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://x.example/traces")
    assert traces_endpoint("http://collector:4318") == "https://x.example/traces"
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    assert service_name() == DEFAULT_SERVICE_NAME
    monkeypatch.setenv("OTEL_SERVICE_NAME", "campaign-eu")
    assert service_name() == "campaign-eu"
