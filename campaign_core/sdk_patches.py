"""Every private part of Temporal's Python SDK the worker relies on, in one module.

Three things here reach past the SDK's public API, each for a cost measured in a profile
of the worker (the figures, and what would let each go upstream, are in
docs/performance.md, "The SDK patches and what would let them go"):

- `FastSandboxedWorkflowRunner`: the SDK's workflow sandbox, kept exactly as it is for
  workflow code (module isolation, restrictions, each run imported afresh), minus two
  per-payload costs. For every payload of every activation and completion the SDK asks the
  workflow instance for the payload's serialization context (and on completion its
  external-store context), up to seven times a payload; the sandboxed instance answers by
  `exec`-ing a source string inside the sandbox's import hooks, compiling it afresh each
  time. Here the sandbox's fixed code strings are compiled once, and the two context
  questions go straight to the in-sandbox instance (the same object the exec'd string
  would have called). It subclasses the private `_Instance`; where that is not what this
  module expects, it falls back to the SDK's own behaviour rather than guess.
- `install_payload_walks()`: the SDK walks a workflow task's activation protobuf three
  times in Python before the workflow sees it (storage references, external storage, the
  payload codec) and the completion three times after, even when the data converter has
  neither a codec nor external storage and every walk returns each payload list unchanged
  (the SDK's own `DataConverter._decode_payload_has_effect` says as much). It wraps the two
  functions the workflow worker calls for this (`temporalio.bridge.worker.decode_activation`
  and `encode_completion`, looked up on that module at each call): with neither a codec
  nor external storage they return at once; otherwise they call the SDK's own, unchanged.
  With CAMPAIGN_ENCRYPTION_KEY set there is a codec, so every payload is still encrypted
  and decrypted. Given up without a codec: the SDK would name a payload stored externally
  by another client (TMPRL1105) when this worker has no external storage; the engine never
  stores payloads externally, and such a payload would fail to decode instead.
- `activity_name()`: the type name `@activity.defn` gave a callable, read from the SDK's
  private `_Definition` (the SDK offers no public way to read it).

They were written for temporalio `WRITTEN_FOR` (pyproject.toml pins that minor version).
`sandbox_runner()`, which the worker calls to build its workers, checks the installed
version: on another minor it logs a warning naming both and gives the SDK's own sandbox
and payload walks, so the worker runs correctly, only slower. Both patches change speed,
not results, and a worker that refused to start over a speed-up would be the worse
failure. An SDK that has dropped the private names fails the import of this module with a
message naming both versions. To move to a new minor version: run tests/workflows/test_sandbox_runner.py
and tests/workflows/test_payload_walks.py against it, then raise `WRITTEN_FOR` with the pin.

Only worker_main.py imports this module (and the tests of it): tests/shape/test_layering.py
holds that, so no CLI command or API process patches the SDK.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from collections.abc import Awaitable, Callable
from types import CodeType
from typing import Any

import temporalio.bridge.worker as bridge_worker
from temporalio import activity
from temporalio.converter import DataConverter, SerializationContext
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

#: The temporalio minor version these patches were written for and measured on.
WRITTEN_FOR = "1.35"

log = logging.getLogger("campaign.worker")


def installed_version() -> str:
    """The version of the installed temporalio distribution."""
    return importlib.metadata.version("temporalio")


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


try:
    from temporalio.converter._extstore import StorageDriverStoreContext, StorageOperationMetrics
    from temporalio.worker._command_aware_visitor import CommandInfo
    from temporalio.worker.workflow_sandbox._runner import _Instance
except ImportError as err:  # only an SDK other than the pinned one can get here
    raise ImportError(
        f"campaign_core/sdk_patches.py was written for temporalio {WRITTEN_FOR}.x; the installed "
        f"temporalio {installed_version()} has no {err.name or err}. Install temporalio "
        f"{WRITTEN_FOR}.x as pyproject.toml pins it (pip install -e .), or update this module "
        "for the new SDK (docs/performance.md, 'The SDK patches and what would let them go')."
    ) from err


def patches_apply(version: str | None = None) -> bool:
    """Whether the installed SDK (or `version`) is the minor version the patches were
    written for."""
    return _minor(version or installed_version()) == WRITTEN_FOR


# -- the sandbox ---------------------------------------------------------------------------

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


# -- the payload walks ---------------------------------------------------------------------

_Walk = Callable[..., Awaitable[StorageOperationMetrics]]

#: Set on a wrapper so `install_payload_walks()` never wraps twice.
_MARK = "__campaign_skips_idle_walks__"


def walks_change_nothing(converter: object) -> bool:
    """True when the converter has no codec and no external storage (walks are no-ops)."""
    return (isinstance(converter, DataConverter) and converter.payload_codec is None
            and getattr(converter, "external_storage", None) is None)


def _skipping(walk: _Walk) -> _Walk:
    @functools.wraps(walk)
    async def wrapper(message: Any, data_converter: Any, *args: Any,
                      **kwargs: Any) -> StorageOperationMetrics:
        if walks_change_nothing(data_converter):
            return StorageOperationMetrics()
        return await walk(message, data_converter, *args, **kwargs)

    setattr(wrapper, _MARK, True)
    return wrapper


def install_payload_walks() -> None:
    """Wrap the SDK's two walks (once per process; later calls do nothing)."""
    for name in ("decode_activation", "encode_completion"):
        walk = getattr(bridge_worker, name, None)
        if walk is None or getattr(walk, _MARK, False):
            continue  # an SDK without it keeps its own behaviour; already wrapped
        setattr(bridge_worker, name, _skipping(walk))


# -- what the worker calls -----------------------------------------------------------------

def sandbox_runner(restrictions: SandboxRestrictions = SandboxRestrictions.default) -> WorkflowRunner:
    """The worker's workflow runner: the fast sandbox with the idle payload walks skipped on
    the SDK these patches were written for; on any other, the SDK's own, with a warning."""
    version = installed_version()
    if not patches_apply(version):
        log.warning(
            "temporalio %s is installed; the worker's SDK patches (campaign_core/sdk_patches.py) "
            "were written for %s.x, so they are not applied: the SDK's own sandbox and payload "
            "walks run (correct, slower: docs/performance.md). Install temporalio %s.x as "
            "pyproject.toml pins it, or check the patches against %s and raise WRITTEN_FOR.",
            version, WRITTEN_FOR, WRITTEN_FOR, version)
        return SandboxedWorkflowRunner(restrictions=restrictions)
    install_payload_walks()
    return FastSandboxedWorkflowRunner(restrictions=restrictions)


def activity_name(fn: Callable[..., Any]) -> str:
    """The activity type name `fn` is registered under (its `@activity.defn(name=...)`)."""
    name = activity._Definition.must_from_callable(fn).name
    assert name is not None, f"{fn!r} is a dynamic activity"
    return name
