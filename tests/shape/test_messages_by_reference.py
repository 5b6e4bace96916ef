"""Updates, queries and signals are sent by handler reference, never by name (issue 26).

`handle.execute_update(CampaignWorkflow.approve_update, approval)` names a method the type
checker knows, and a renamed or removed handler fails at import, not on a running campaign;
`handle.execute_update("approve", approval)` would fail only when sent. The wire names stay
on the decorators (`@workflow.update(name="approve")`), which the recorded histories and the
`temporal` CLI's `--name approve` rely on.

The walk reads our source with `ast` and, at every send, asks what its first argument is:
a handler (`Class.handler`), a parameter typed as a handler, a local or module constant
bound to one, or an entry of a table of them. A string, an f-string, a parameter typed
`str` (or untyped), or anything it cannot tell is reported as file:line.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio import workflow

ROOT = Path(__file__).resolve().parents[2]
#: Our code: what the walk reads (tests may send by name when the wire name is the point).
SOURCES = ("starter", "workflows", "activities", "campaign_core", "worker_main.py")
#: Methods whose first argument (or these keywords) is the update, query or signal sent.
SENDS = {"signal", "query", "execute_update", "start_update",
         "execute_update_with_start_workflow", "start_update_with_start_workflow"}
HANDLER_KEYWORDS = {"signal", "query", "update"}
#: Keywords of a start that carry a signal (signal-with-start).
SIGNAL_KEYWORDS = {"start_signal"}


def source_files(root: Path) -> Iterator[Path]:
    for name in SOURCES:
        path = root / name
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from sorted(path.rglob("*.py"))


@dataclass
class Module:
    """One parsed file, with what its names are bound to at the top level."""

    path: Path
    tree: ast.Module
    parents: dict[ast.AST, ast.AST]

    @classmethod
    def parse(cls, path: Path, text: str | None = None) -> Module:
        tree = ast.parse(text if text is not None else path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        return cls(path, tree, parents)

    def functions_around(self, node: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef
                                                          | ast.Lambda]:
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield node


def bindings(scope: ast.AST, name: str, *, top_level: bool) -> list[ast.expr | None]:
    """The values `name` is assigned in `scope` (None: bound some way the walk cannot read,
    such as a loop variable or an import). `top_level`: only the module's own statements."""
    found: list[ast.expr | None] = []
    nodes = scope.body if top_level and isinstance(scope, ast.Module) else list(ast.walk(scope))
    for node in nodes:
        value: ast.expr | None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign | ast.NamedExpr):
            targets, value = [node.target], node.value
        elif isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
            targets, value = [node.target], None
        elif isinstance(node, ast.Import | ast.ImportFrom):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                found.append(None)
            continue
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name
               for target in targets for t in ast.walk(target)):
            found.append(value)
    return found


#: Annotations that say a parameter may hold a name.
NAME_TYPES = {"str", "Any", "object", "Literal", "LiteralString"}


def may_hold_a_name(annotation: ast.expr) -> bool:
    """`str`, `Any`, `object`, `Literal[...]`, or a union or Optional with one of them; a
    `Callable[..., Any]` or `UpdateMethodMultiParam[...]` holds a handler, whatever its
    arguments are."""
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return may_hold_a_name(ast.parse(annotation.value, mode="eval").body)
    if isinstance(annotation, ast.Name | ast.Attribute):
        return (annotation.id if isinstance(annotation, ast.Name) else annotation.attr
                ) in NAME_TYPES
    if isinstance(annotation, ast.BinOp):
        return may_hold_a_name(annotation.left) or may_hold_a_name(annotation.right)
    if isinstance(annotation, ast.Subscript):
        base = annotation.value
        base_name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
        if base_name in ("Optional", "Union"):
            inner = annotation.slice
            parts = inner.elts if isinstance(inner, ast.Tuple) else [inner]
            return any(may_hold_a_name(p) for p in parts)
        return base_name in NAME_TYPES
    return False


def why_not_a_reference(module: Module, expr: ast.expr | None, at: ast.AST,
                        seen: frozenset[str] = frozenset()) -> str | None:
    """None when `expr` is a handler reference; else what it is instead."""
    if expr is None:
        return "a value the walk cannot follow"
    if isinstance(expr, ast.Constant):
        return f"the string {expr.value!r}" if isinstance(expr.value, str) else "a constant"
    if isinstance(expr, ast.JoinedStr | ast.BinOp):
        return "a name built as a string"
    if isinstance(expr, ast.Attribute):
        owner = expr.value
        owner_name = owner.id if isinstance(owner, ast.Name) else (
            owner.attr if isinstance(owner, ast.Attribute) else "")
        if owner_name[:1].isupper():
            return None  # `CampaignWorkflow.pause`: a handler of a class
        return f"the attribute {ast.unparse(expr)!r}, which may hold a name"
    if isinstance(expr, ast.IfExp):
        return (why_not_a_reference(module, expr.body, at, seen)
                or why_not_a_reference(module, expr.orelse, at, seen))
    if isinstance(expr, ast.Subscript):
        return why_not_a_table(module, expr.value, at, seen)
    if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
            and expr.func.attr == "get"):
        return why_not_a_table(module, expr.func.value, at, seen)
    if isinstance(expr, ast.Name):
        return why_name_not_a_reference(module, expr.id, at, seen)
    return f"{ast.unparse(expr)!r}, which the walk cannot tell is a handler"


def why_not_a_table(module: Module, expr: ast.expr, at: ast.AST, seen: frozenset[str]
                    ) -> str | None:
    """A lookup in a table of handlers is a reference when every entry is one."""
    if isinstance(expr, ast.Dict):
        for value in expr.values:
            why = why_not_a_reference(module, value, at, seen)
            if why:
                return f"a table holding {why}"
        return None
    if isinstance(expr, ast.Name) and expr.id not in seen:
        values = resolve(module, expr.id, at)
        if values is None or not values:
            return f"a lookup in {expr.id!r}, which the walk cannot follow"
        for bound in values:
            if bound is None:
                return f"a lookup in {expr.id!r}, which the walk cannot follow"
            why = why_not_a_table(module, bound, at, seen | {expr.id})
            if why:
                return why
        return None
    return f"a lookup in {ast.unparse(expr)!r}, which the walk cannot tell holds handlers"


def resolve(module: Module, name: str, at: ast.AST) -> list[ast.expr | None] | None:
    """What `name` is bound to where `at` is: in the innermost function that binds it, else
    at the module's top level. None: it is a parameter (see `why_name_not_a_reference`)."""
    for fn in module.functions_around(at):
        args = fn.args
        if any(a.arg == name for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)):
            return None
        if not isinstance(fn, ast.Lambda):
            found = bindings(fn, name, top_level=False)
            if found:
                return found
    return bindings(module.tree, name, top_level=True)


def why_name_not_a_reference(module: Module, name: str, at: ast.AST,
                             seen: frozenset[str]) -> str | None:
    if name in seen:
        return f"{name!r}, bound to itself"
    for fn in module.functions_around(at):
        args = fn.args
        for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs):
            if arg.arg != name:
                continue
            if arg.annotation is None:
                return f"the parameter {name!r}, untyped: it may hold a name"
            if may_hold_a_name(arg.annotation):
                return (f"the parameter {name!r} typed {ast.unparse(arg.annotation)}: it may "
                        "hold a name")
            return None  # typed as a handler (`Callable[...]`, `UpdateMethodMultiParam[...]`)
        if isinstance(fn, ast.Lambda):
            continue
        found = bindings(fn, name, top_level=False)
        if found:
            return first_reason(module, found, at, seen | {name}, name)
    found = bindings(module.tree, name, top_level=True)
    if not found:
        return f"{name!r}, bound nowhere the walk can see"
    return first_reason(module, found, at, seen | {name}, name)


def first_reason(module: Module, values: list[ast.expr | None], at: ast.AST,
                 seen: frozenset[str], name: str) -> str | None:
    for value in values:
        why = why_not_a_reference(module, value, at, seen)
        if why:
            return f"{name!r}, bound to {why}"
    return None


def sends_by_name(module: Module, root: Path) -> list[str]:
    """`file:line .method(...)`: every send in `module` that is not by handler reference."""
    found = []
    for node in ast.walk(module.tree):
        if not isinstance(node, ast.Call):
            continue
        checked: list[tuple[str, ast.expr]] = []
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in SENDS:
            if node.args:
                checked.append((f".{func.attr}(...)", node.args[0]))
            checked += [(f".{func.attr}({k.arg}=...)", k.value) for k in node.keywords
                        if k.arg in HANDLER_KEYWORDS]
        checked += [(f"{k.arg}=...", k.value) for k in node.keywords
                    if k.arg in SIGNAL_KEYWORDS]
        for what, arg in checked:
            why = why_not_a_reference(module, arg, node)
            if why:
                where = module.path.relative_to(root) if module.path.is_relative_to(root) else (
                    module.path)
                found.append(f"{where}:{node.lineno} {what} sends {why}")
    return found


def check_tree(root: Path) -> list[str]:
    return [hit for path in source_files(root) for hit in sends_by_name(Module.parse(path), root)]


def check_text(text: str) -> list[str]:
    return sends_by_name(Module.parse(Path("snippet.py"), textwrap.dedent(text)), Path("."))


def test_our_code_sends_every_update_query_and_signal_by_reference() -> None:
    files = list(source_files(ROOT))
    assert len(files) > 50, "the walk found too few of our files"
    by_name = check_tree(ROOT)
    assert not by_name, ("send these by handler reference "
                         "(`handle.signal(CampaignWorkflow.pause)`):\n" + "\n".join(by_name))


@pytest.mark.parametrize("snippet", [
    # the shapes issue 26 found in our code before the change
    'async def f(handle):\n    await handle.signal("cancel")\n',
    'async def f(handle):\n    await handle.query("status", result_type=int)\n',
    'async def f(handle, chunk):\n    await handle.execute_update("add_leads", chunk)\n',
    'async def f(self, name: str, arg: object = None):\n    await self.h.signal(name, arg)\n',
    'async def f(self, cid: str, name: str, arg: Any):\n'
    '    return await self.h.execute_update(name, arg)\n',
    'async def f(handle, action):\n    await handle.signal(action)\n',
    'REPLY = "reply"\nasync def f(handle, s):\n    await handle.signal(REPLY, s)\n',
    'async def f(handle):\n    name = "pause"\n    await handle.signal(name)\n',
    'async def f(client):\n    await client.start_workflow(W.run, 1, start_signal="approve")\n',
    'async def f(handle, x):\n    await handle.start_update(f"{x}_update", 1)\n',
    'T = {"pause": "pause"}\nasync def f(handle, a: str):\n    await handle.signal(T[a])\n',
    'async def f(self, handle):\n    await handle.signal(self.name)\n',
    'async def f(handle):\n    for n in ("pause", "resume"):\n        await handle.signal(n)\n',
], ids=lambda s: s.splitlines()[-1].strip()[:60])
def test_a_send_by_name_is_reported(snippet: str) -> None:
    hits = check_text(snippet)
    assert hits and all(hit.startswith("snippet.py:") for hit in hits), hits


@pytest.mark.parametrize("snippet", [
    'async def f(handle):\n    await handle.signal(CampaignWorkflow.pause)\n',
    'async def f(handle):\n    await handle.query(CampaignWorkflow.status, rpc_timeout=t)\n',
    'async def f(handle, a):\n    await handle.execute_update(CampaignWorkflow.add_leads, a)\n',
    'async def f(self, update: UpdateMethodMultiParam[[W, A], Any], arg: A):\n'
    '    return await self.h.execute_update(update, arg)\n',
    'async def f(self, signal: Callable[..., Any], arg: object = None):\n'
    '    await self.h.signal(signal, arg)\n',
    'T = {"pause": W.pause, "resume": W.resume}\nasync def f(handle, a: str):\n'
    '    s = T.get(a)\n    await handle.signal(s)\n',
    'T: dict[str, C] = {"pause": W.pause}\nasync def f(handle, a: str):\n'
    '    await handle.signal(T[a])\n',
    'async def f(handle, r):\n    await handle.signal(workflows.campaign.CampaignWorkflow.reply, r)\n',
], ids=lambda s: s.splitlines()[-1].strip()[:60])
def test_a_send_by_reference_passes(snippet: str) -> None:
    assert check_text(snippet) == []


def test_versioned_twins_answer_to_the_same_names() -> None:
    """References come from the plain classes (`CampaignWorkflow.pause`); a versioned worker
    runs the twins of workflows/versioned.py, which inherit the handlers, so every name a
    reference resolves to is one the twin answers."""
    from workflows.versioned import VERSIONED

    for plain, twin in VERSIONED.items():
        a, b = workflow._Definition.must_from_class(plain), workflow._Definition.must_from_class(twin)
        assert a.name == b.name
        assert set(a.signals) == set(b.signals), plain.__name__
        assert set(a.queries) == set(b.queries), plain.__name__
        assert set(a.updates) == set(b.updates), plain.__name__
