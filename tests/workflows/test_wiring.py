"""The wiring holds together: registry, workers and workflows name the same agents.

Every registered agent has a worker on its queue and every activity a worker runs is
registered; every orchestrator runs on the workflow queue; workflows call agents and
children by method reference, never by a string name.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.testing import WorkflowEnvironment

from activities.registry import AGENT_CLASSES, AGENTS, agent_spec
from campaign_core.queues import WORKFLOW_QUEUE, queue_name
from campaign_core.sdk_patches import activity_name
from campaign_core.settings import Settings
from campaign_core.store.sqlite import SqliteStore
from worker_main import WORKFLOWS, build_workers
from workflows.versioned import VERSIONED

WORKFLOW_DIR = Path(__file__).resolve().parents[2] / "workflows"
#: Calls whose first argument names an activity or a workflow.
BY_REFERENCE = {"call_agent", "execute_activity", "execute_activity_method", "start_activity",
                "start_activity_method", "execute_child_workflow", "start_child_workflow"}


def _activity_methods(cls: type) -> set[Any]:
    """The activities `cls` defines itself; one it inherits (a subclass of an agent that
    reuses its machinery) is its base's activity, run by the base's instance."""
    return {fn for fn in vars(cls).values()
            if inspect.isfunction(fn) and activity._Definition.from_callable(fn) is not None}


async def test_every_agent_has_a_worker_and_every_worker_activity_is_registered(
    ts_env: WorkflowEnvironment, store: SqliteStore, settings: Settings
) -> None:
    workers = build_workers(ts_env.client, store, settings, prefix="w-")
    served = {(activity_name(fn), w.task_queue)
              for w in workers for fn in w.config().get("activities", [])}
    registered = {(activity_name(spec.activity), queue_name(spec.queue, "w-")) for spec in AGENTS.values()}
    # Local agents also run on the workflow worker (local activities run where the workflow
    # does); only they may be served twice.
    local = {(activity_name(spec.activity), queue_name(WORKFLOW_QUEUE, "w-"))
             for spec in AGENTS.values() if spec.local}
    assert local, "no agent runs as a local activity"
    assert served == registered | local
    twice = {name for name, _ in served if sum(n == name for n, _ in served) > 1}
    assert twice == {name for name, _ in local}, "an activity on two queues"
    orchestrators = {w.task_queue: list(w.config().get("workflows", [])) for w in workers}
    assert orchestrators.pop(queue_name(WORKFLOW_QUEUE, "w-")) == list(WORKFLOWS)
    assert not any(orchestrators.values()), "orchestrators only run on the workflow queue"


def test_every_agent_method_is_registered_once() -> None:
    methods = [fn for cls in AGENT_CLASSES for fn in _activity_methods(cls)]
    assert len(methods) == len(set(methods)), "an agent method in two classes"
    assert set(methods) == set(AGENTS)
    assert all(agent_spec(fn).activity is fn for fn in methods)
    with pytest.raises(LookupError, match="not in the registry"):
        agent_spec(test_every_agent_method_is_registered_once)  # type: ignore[arg-type]


def test_every_orchestrator_is_run_by_the_worker() -> None:
    defined = set()
    for path in WORKFLOW_DIR.glob("*.py"):
        module = importlib.import_module(f"workflows.{path.stem}")
        defined |= {cls for _, cls in inspect.getmembers(module, inspect.isclass)
                    if cls.__module__ == module.__name__
                    and workflow._Definition.from_class(cls) is not None}
    # Versioned workers run each orchestrator's twin (workflows/versioned.py) instead.
    assert defined == set(WORKFLOWS) | set(VERSIONED.values())


@pytest.mark.parametrize("path", sorted(WORKFLOW_DIR.glob("*.py")), ids=lambda p: p.name)
def test_workflows_call_agents_and_children_by_reference(path: Path) -> None:
    by_name = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        first = node.args[0]
        if called in BY_REFERENCE and isinstance(first, ast.Constant) and isinstance(
                first.value, str):
            by_name.append(f"{path.name}:{node.lineno} {called}({first.value!r}, ...)")
    assert not by_name, f"call these by method reference: {by_name}"


async def test_overrides_must_name_a_registered_activity(
    ts_env: WorkflowEnvironment, store: SqliteStore, settings: Settings
) -> None:
    @activity.defn(name="write_draf")
    async def typo(inp: object) -> None: ...

    @activity.defn(name="store_lead")
    async def misfiled(inp: object) -> None: ...

    with pytest.raises(ValueError, match="unregistered activities: write_draf"):
        build_workers(ts_env.client, store, settings, overrides={"write_draf": typo})
    with pytest.raises(ValueError, match="registered as 'store_lead'"):
        build_workers(ts_env.client, store, settings, overrides={"write_draft": misfiled})
