"""Imports run one way, and a CLI command that runs no worker stays light.

The layers, lowest first: `campaign_core` (what everything shares), `activities` (the
agents), `workflows` (the orchestrators), `worker_main` (the worker, which alone knows both
the workflows and the agents' implementations). The control plane (`starter/`) sits beside
them: it may import the core, and the workflows for their references, and its worker and
dev-stack commands import the worker; nothing imports the control plane. Each import
statement counts, read with `ast` as tests/shape/test_import_cycles.py reads them: at module
level, inside functions, under `if TYPE_CHECKING:` and under
`workflow.unsafe.imports_passed_through()`.

`campaign_core/sdk_patches.py` (the private parts of Temporal's SDK the worker patches) is
imported by `worker_main` alone, and by tests: no CLI command or API process patches the SDK.

What a CLI command that runs no worker imports is checked in a child interpreter: none of
the five heavy libraries the agents import where their work is done.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shape.test_import_cycles import ROOT, imported_modules, project_modules

#: The packages a layer may not import (by top-level name).
FORBIDDEN: dict[str, frozenset[str]] = {
    "campaign_core": frozenset({"activities", "workflows", "starter", "worker_main"}),
    "activities": frozenset({"workflows", "starter", "worker_main"}),
    "workflows": frozenset({"starter", "worker_main"}),
    "worker_main": frozenset({"starter"}),
    "starter": frozenset(),
}

SDK_PATCHES = "campaign_core.sdk_patches"
#: The only project module that may import SDK_PATCHES (tests may too).
PATCHERS = frozenset({"worker_main"})

#: What the agents import where the work is done, and the CLI must not load for nothing.
HEAVY = ("openai", "bm25s", "numpy", "aiosmtplib", "phonenumbers", "dateparser")

#: `campaign` commands that run no worker (each a help page: parsing, no connection).
LIGHT_COMMANDS = (
    ("--help",),
    ("status", "--help"),
    ("report", "--help"),
    ("schedule", "list", "--help"),
    ("replies", "--help"),
)


def all_imports() -> list[tuple[str, Path, int, str]]:
    """(importing module, its file, line, imported module) for every import statement of
    the project's packages, project modules or not."""
    modules = project_modules()
    return [(name, path, line, target)
            for name, path in modules.items()
            for target, line in imported_modules(path, name, set(modules))]


def upward_imports() -> list[str]:
    """Every import that runs against the layering, as `file:line: a imports b`."""
    bad = []
    for name, path, line, target in all_imports():
        layer, top = name.split(".")[0], target.split(".")[0]
        where = f"{path.relative_to(ROOT)}:{line}"
        if top in FORBIDDEN[layer]:
            bad.append(f"{where}: {name} ({layer}) imports {target} ({top} is above it)")
        if (target == SDK_PATCHES or target.startswith(f"{SDK_PATCHES}.")) and name not in PATCHERS:
            bad.append(f"{where}: {name} imports {SDK_PATCHES}, which only worker_main may import")
    return bad


def test_the_walk_sees_imports_in_functions_and_passed_through_the_sandbox() -> None:
    seen = {(name, target) for name, _, _, target in all_imports()}
    # Inside `with workflow.unsafe.imports_passed_through():`.
    assert ("workflows.agents", "activities.registry") in seen
    # Inside a function.
    assert ("starter.cli.stack", "worker_main") in seen
    # A library imported where the work is done.
    assert ("activities.guardrails", "phonenumbers") in seen


def test_no_module_imports_a_layer_above_it() -> None:
    bad = upward_imports()
    assert not bad, "imports against the layering:\n  " + "\n  ".join(bad)


def test_only_the_worker_imports_the_sdk_patches() -> None:
    importers = {name for name, _, _, target in all_imports() if target == SDK_PATCHES}
    assert importers == {"worker_main"}
    bench = [f"{p.relative_to(ROOT)}" for p in (ROOT / "bench").glob("*.py")
             if SDK_PATCHES in p.read_text(encoding="utf-8")
             or "from campaign_core import sdk_patches" in p.read_text(encoding="utf-8")]
    assert not bench, f"benchmarks must patch the SDK through worker_main: {bench}"


_CHILD = """
import json, sys
args, watched = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["campaign", *args]
from starter.cli import app  # main() ends the process with os._exit
try:
    app()
except SystemExit as exit:
    code = exit.code
else:
    code = 0
print("LOADED=" + json.dumps({"code": code, "heavy": [m for m in watched if m in sys.modules]}))
"""


def run_light_command(args: tuple[str, ...]) -> tuple[dict[str, object], str]:
    """Run `campaign <args>` in a child interpreter on this tree: what it loaded (from the
    child's sys.modules) and its `-X importtime` report."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "COLUMNS": "100"}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", _CHILD, json.dumps(args), json.dumps(HEAVY)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("LOADED=")), None)
    assert line is not None, f"campaign {' '.join(args)} printed no report:\n{proc.stderr[-3000:]}"
    return json.loads(line.removeprefix("LOADED=")), proc.stderr


def who_imported(importtime: str, module: str) -> list[str]:
    """The chain of imports that first loaded `module`, outermost first, from an
    `-X importtime` report (a module's line follows its children's, indented less)."""
    rows = []
    for text in importtime.splitlines():
        if text.startswith("import time:") and text.count("|") == 2:
            name = text.rsplit("|", 1)[1]
            rows.append((len(name) - len(name.lstrip()), name.strip()))
    start = next((i for i, (_, name) in enumerate(rows) if name == module), None)
    if start is None:
        return [module]
    chain, depth = [module], rows[start][0]
    for indent, name in rows[start + 1:]:
        if indent < depth:
            chain.append(name)
            depth = indent
    return list(reversed(chain))


@pytest.mark.parametrize("args", LIGHT_COMMANDS, ids=" ".join)
def test_a_command_that_runs_no_worker_loads_no_heavy_library(args: tuple[str, ...]) -> None:
    loaded, importtime = run_light_command(args)
    assert loaded["code"] == 0, f"campaign {' '.join(args)} exited {loaded['code']}"
    heavy = loaded["heavy"]
    assert isinstance(heavy, list)
    chains = [" -> ".join(c for c in who_imported(importtime, lib)
                          if c.split(".")[0] in FORBIDDEN or c == lib) for lib in heavy]
    assert not heavy, (f"campaign {' '.join(args)} loaded {', '.join(heavy)}:\n  "
                       + "\n  ".join(chains))
