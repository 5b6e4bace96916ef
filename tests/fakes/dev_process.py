"""`campaign dev` as a real subprocess, for the end-to-end tests that run it as a user does.

`DevProcess` starts `campaign dev` on free ports, waits for its sign-in line, keeps reading
its output in the background (so a chatty run never fills the pipe and blocks the
process), and stops it with SIGTERM. `dev_cli_env` is the environment a user's shell would
have: no TEMPORAL_* or CAMPAIGN_* variables leaking in from the test run, only
CAMPAIGN_HOME.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from campaign_core.ports import free_port

CAMPAIGN = str(Path(sys.executable).parent / "campaign")


class DevProcess:
    def __init__(self, env: dict[str, str], home: Path) -> None:
        self.env, self.home = env, home
        self.port, self.ui_port, self.api_port = free_port(), free_port(), free_port()
        #: Not the default 9464: another test's process (or the user's) may hold it.
        self.metrics_port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.ui = ""
        self.sign_in = ""
        self._reader: asyncio.Task[None] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def args(self) -> list[str]:
        """The `campaign dev` command line (free ports for everything it serves)."""
        return ["dev", "--port", str(self.port), "--ui-port", str(self.ui_port),
                "--api-port", str(self.api_port), "--metrics-port", str(self.metrics_port)]

    async def start(self) -> str:
        self.proc = await asyncio.create_subprocess_exec(
            CAMPAIGN, *self.args(),
            env=self.env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(90):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                assert line, f"campaign dev exited early: {''.join(self.lines)}"
                self.lines.append(line)
                if line.startswith("Temporal Web UI:"):
                    self.ui = line.split(":", 1)[1].strip()
                if line.startswith("Review sign-in"):
                    self.sign_in = line.rsplit(" ", 1)[1].strip()
                    self._reader = asyncio.create_task(self._read_rest())
                    return self.ui

    async def _read_rest(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode())

    async def stop(self) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            if self._reader is not None:
                await self._reader
            else:
                self.lines.append((await self.proc.stdout.read()).decode())
            return await self.proc.wait()


@pytest.fixture
def dev_cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "CAMPAIGN_"))}
    env.update({"CAMPAIGN_HOME": str(home), "NO_COLOR": "1"})
    return env
