"""The control plane's shape: the HTTP API is one package of routers, and the services speak
no door's language.

- `create_app` only puts the app together (under 40 lines): the routes live in the router
  modules of `starter/api/`, one per resource, never in `create_app` or outside the package.
- The services (`CampaignManager`, `ScheduleManager`, suppression, replies, reviewers, the
  start options) name no CLI flag and no `campaign <command>` in their messages: their errors
  carry the field at fault, and the CLI phrases it as its flag, the API as the body's field.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastapi.routing
import pytest
from fastapi.routing import APIRoute
from pydantic import SecretStr

from campaign_core.settings import Settings
from starter.api import create_app, main
from starter.cli.app import phrased
from starter.manager import BadInput, Conflict, NotFound

ROOT = Path(__file__).resolve().parents[2]
#: The services every door shares: their messages must suit every door.
SERVICES = ("manager.py", "schedules.py", "suppression.py", "replies.py", "review_auth.py",
            "start_options.py", "actor.py", "limits.py", "inbox.py")
#: A CLI flag (`--id`, `--send-passing`), not a decrement or an SQL comment's dashes.
FLAG = re.compile(r"(?<![\w-])--[a-z]")
#: A CLI command as advice (`campaign schedule list`, "see campaign add-leads").
COMMAND = re.compile(r"`campaign [a-z]|\bcampaign (start|schedule|add-leads|forget|replies|"
                     r"approve|reject|resume|dev|api|suppress|reviewer|db)\b")


def _routes(routes: list[Any]) -> Iterator[Any]:
    """The app's routes, those of included routers too (FastAPI 0.165+ nests them)."""
    flat = getattr(fastapi.routing, "iter_route_contexts", lambda routes: routes)
    yield from flat(routes)


def _app() -> Any:
    return create_app(Settings(api_token=SecretStr("t" * 32)), manager=object())  # type: ignore[arg-type]


def test_create_app_only_puts_the_app_together() -> None:
    lines = inspect.getsource(main.create_app).splitlines()
    assert len(lines) < 40, f"create_app is {len(lines)} lines: routes belong in routers"


def test_every_route_is_defined_in_a_router_module_of_the_api_package() -> None:
    api_routes = [r for r in _routes(_app().routes)
                  if isinstance(getattr(r, "original_route", r), APIRoute)]
    assert len(api_routes) > 30  # the whole API, the review pages included
    misplaced = sorted(f"{r.path} {sorted(r.methods)}: {r.endpoint.__module__}"
                       for r in api_routes
                       if not r.endpoint.__module__.startswith("starter.api.")
                       or r.endpoint.__module__ == main.__name__
                       or "<locals>" in r.endpoint.__qualname__)
    assert not misplaced, "routes outside the routers of starter/api/:\n" + "\n".join(misplaced)


def _messages(path: Path) -> Iterator[tuple[int, str]]:
    """The string literals of a module that can reach a user (docstrings excepted)."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docstrings):
            yield node.lineno, node.value


def door_words(path: Path) -> list[str]:
    return [f"{path.name}:{line}: {text!r}" for line, text in sorted(_messages(path))
            if FLAG.search(text) or COMMAND.search(text)]


@pytest.mark.parametrize("module", SERVICES)
def test_the_services_name_no_cli_flag_or_command(module: str) -> None:
    found = door_words(ROOT / "starter" / module)
    assert not found, ("a service's message speaks the CLI's language; raise BadInput(..., "
                       "field=...) and let each door phrase it:\n" + "\n".join(found))


def test_the_scan_finds_what_it_forbids(tmp_path: Path) -> None:
    """The scan above is not vacuous: it catches a flag and a command, not a docstring."""
    bad = tmp_path / "bad.py"
    bad.write_text('"""Use --flag in the docstring: allowed."""\n'
                   'def f(x):\n    raise ValueError(f"--send-passing: {x}")\n'
                   'def g():\n    raise ValueError("see `campaign schedule list`")\n'
                   'def h():\n    return "a-- b, x--y, -- c"\n')
    assert [w.split(":")[1] for w in door_words(bad)] == ["3", "5"]


def test_each_door_phrases_the_field_of_a_service_error() -> None:
    err = BadInput("'0' is not a duration like 72h", field="approval_timeout")
    assert str(err) == "approval_timeout: '0' is not a duration like 72h"  # the API's words
    assert phrased(err) == "--approval-timeout: '0' is not a duration like 72h"  # the CLI's
    smtp = BadInput("set CAMPAIGN_SMTP_URL", field="channel", value="smtp")
    assert (str(smtp), phrased(smtp)) == ("channel smtp: set CAMPAIGN_SMTP_URL",
                                          "--channel smtp: set CAMPAIGN_SMTP_URL")
    assert phrased(BadInput("3x is no delay", field="follow_ups")) == "--follow-up: 3x is no delay"
    hints: dict[type[BadInput], str] = {NotFound: "see `campaign schedule list`"}
    assert phrased(NotFound("unknown schedule 'x'"), hints) == (
        "unknown schedule 'x' (see `campaign schedule list`)")
    assert phrased(Conflict("taken"), hints) == "taken"
