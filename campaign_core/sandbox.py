"""Temporal's workflow sandbox, without two per-payload costs that are not the sandbox's job.

For every payload of every workflow activation and completion, the SDK (1.35) asks the
workflow instance for the payload's serialization context (and, on completion, its
external-store context): up to seven times a payload. The sandboxed instance answers each
question by `exec`-ing a source string inside the sandbox's import hooks: it compiles the
string afresh each time and installs and removes the hooks around a call that imports
nothing and runs only SDK code (a lookup in the run's pending activities and children).
A profile of the engine's benchmark put that at about a third of the worker's CPU.

`FastSandboxedWorkflowRunner` keeps the sandbox exactly as it is for workflow code
(module isolation, restrictions, each run imported afresh) and changes two things:

- the sandbox's fixed code strings are compiled once, not at every activation;
- the two context questions go straight to the in-sandbox instance (the same object the
  exec'd string would have called), so they cost a method call.

Both rest on private parts of the SDK's sandbox (`_Instance`); where those are not what
this module expects, it falls back to the SDK's own behaviour rather than guess.
"""

from __future__ import annotations

import functools
from types import CodeType
from typing import Any

from temporalio.converter import SerializationContext
from temporalio.converter._extstore import StorageDriverStoreContext
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker._command_aware_visitor import CommandInfo
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _Instance

#: Where the SDK's sandbox keeps its in-sandbox object (`_Instance._create_instance`).
IN_SANDBOX = "__temporal_in_sandbox"


@functools.lru_cache(maxsize=256)
def compiled(source: str) -> CodeType:
    """The sandbox's code string compiled once; `exec` of it is what `exec(source)` does."""
    return compile(source, "<string>", "exec")


class _FastInstance(_Instance):
    """The SDK's sandboxed instance with compiled code and direct context lookups."""

    def _run_code(self, code: str, **extra_globals: Any) -> None:
        # exec() takes the code object as it takes the string, with the same globals.
        super()._run_code(compiled(code), **extra_globals)  # type: ignore[arg-type]

    def _in_sandbox(self) -> Any:
        return self.globals_and_locals.get(IN_SANDBOX)

    def get_serialization_context(
        self, command_info: CommandInfo | None,
    ) -> SerializationContext | None:
        inner = self._in_sandbox()
        if inner is None or not hasattr(inner, "get_serialization_context"):
            return super().get_serialization_context(command_info)
        context: SerializationContext | None = inner.get_serialization_context(command_info)
        return context

    def get_external_store_context(
        self, command_info: CommandInfo | None,
    ) -> StorageDriverStoreContext:
        inner = self._in_sandbox()
        if inner is None or not hasattr(inner, "get_external_store_context"):
            return super().get_external_store_context(command_info)
        context: StorageDriverStoreContext = inner.get_external_store_context(command_info)
        return context


class FastSandboxedWorkflowRunner(SandboxedWorkflowRunner):
    """`SandboxedWorkflowRunner` with the same restrictions, minus the per-payload costs."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _FastInstance(det, self.runner_class, self.restrictions)
