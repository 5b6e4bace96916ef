"""The `campaign` command line run in-process (Typer's CliRunner), for tests that drive it
beside a server or store of their own: in a thread, because the CLI runs its own event loop."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from typer.testing import CliRunner

from starter.cli import app as cli_app


async def cli(*args: str) -> tuple[int, str, str]:
    """`campaign ARGS`: exit code, stdout, stderr."""
    result = await asyncio.to_thread(CliRunner().invoke, cli_app, list(args))
    return result.exit_code, result.stdout, result.stderr


async def cli_json(*args: str) -> Any:
    """`campaign ARGS --json`, which must succeed: its parsed output."""
    code, out, err = await cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)
