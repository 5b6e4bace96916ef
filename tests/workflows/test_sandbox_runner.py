"""The worker's sandbox runner: same answers as the SDK's, by the fast path it claims; and
only on the SDK version the patches were written for, which pyproject.toml pins."""

from __future__ import annotations

import dataclasses
import logging
import tomllib
from pathlib import Path

import temporalio.converter
import temporalio.workflow
from temporalio.api.common.v1 import Payloads
from temporalio.api.failure.v1 import Failure
from temporalio.converter import WorkflowSerializationContext
from temporalio.worker import WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _fake_info

from campaign_core import sdk_patches
from campaign_core.sdk_patches import IN_SANDBOX, FastSandboxedWorkflowRunner, _FastInstance, compiled
from workflows.lead import LeadOrchestrator


def details(workflow: type) -> WorkflowInstanceDetails:
    info = dataclasses.replace(_fake_info, namespace="ns", workflow_id="wf-1")
    return WorkflowInstanceDetails(
        payload_converter_factory=temporalio.converter.DataConverter.default._new_payload_converter,
        failure_converter_class=temporalio.converter.DataConverter.default.failure_converter_class,
        interceptor_classes=[], defn=temporalio.workflow._Definition.must_from_class(workflow),
        info=info, randomness_seed=1, extern_functions={}, disable_eager_activity_execution=False,
        worker_level_failure_exception_types=[], patch_activation_callback=None,
        last_completion_result=Payloads(), last_failure=Failure())


async def test_contexts_come_from_the_in_sandbox_instance_without_exec() -> None:
    fast = FastSandboxedWorkflowRunner().create_instance(details(LeadOrchestrator))
    stock = SandboxedWorkflowRunner().create_instance(details(LeadOrchestrator))
    assert isinstance(fast, _FastInstance)
    assert fast.globals_and_locals.get(IN_SANDBOX) is not None  # the fast path, not the fallback
    calls: list[str] = []
    fast._run_code = lambda code, **kw: calls.append(code)  # type: ignore[method-assign]
    expected = WorkflowSerializationContext(namespace="ns", workflow_id="wf-1")
    assert fast.get_serialization_context(None) == expected
    assert stock.get_serialization_context(None) == expected
    assert fast.get_external_store_context(None) == stock.get_external_store_context(None)
    assert calls == []  # answered by a method call, no code run in the sandbox


def test_sandbox_code_is_compiled_once() -> None:
    source = "x = 1\n"
    assert compiled(source) is compiled(source)


def test_the_pinned_sdk_gets_the_fast_runner() -> None:
    assert sdk_patches.patches_apply(), "the installed temporalio is not the minor the pin names"
    assert isinstance(sdk_patches.sandbox_runner(), FastSandboxedWorkflowRunner)


def test_another_sdk_minor_gets_the_sdks_own_runner_and_a_warning(monkeypatch, caplog) -> None:
    monkeypatch.setattr(sdk_patches, "installed_version", lambda: "1.36.0")
    with caplog.at_level(logging.WARNING, logger="campaign.worker"):
        runner = sdk_patches.sandbox_runner()
    assert type(runner) is SandboxedWorkflowRunner  # the SDK's own, not the patched one
    assert "temporalio 1.36.0 is installed" in caplog.text
    assert f"written for {sdk_patches.WRITTEN_FOR}.x" in caplog.text


def test_pyproject_pins_temporalio_to_the_minor_the_patches_were_written_for() -> None:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("temporalio")]
    major, minor = sdk_patches.WRITTEN_FOR.split(".")
    assert pins == [f"temporalio>={major}.{minor},<{major}.{int(minor) + 1}"]
