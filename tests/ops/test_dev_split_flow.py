"""The README's split flow, typed as it is written: `campaign dev --no-worker` in one
terminal, `campaign worker` in the next, and a second `campaign worker` on the same host.

`campaign dev --no-worker` once took the workers' metrics port (9464), so the worker
beside it exited 2 ("port 9464 is in use"), and so did a second worker. Here the server runs
with free ports for Temporal, its UI and the API (as tests/fakes/dev_process.py starts it) but
default metrics flags, and the two workers with no flag at all: both must run, each with its
own /metrics, and between them draft the demo campaign. A worker that cannot reach Temporal
must say why in whole words (exit 3), not `message: "Co); start the...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from campaign_core.ports import free_port
from starter.cli import app as cli_app
from tests.cli.test_cli_e2e import cli_json, wait_stage
from tests.fakes import dev_process
from tests.fakes.dev_process import CAMPAIGN, DevProcess

dev_cli_env = dev_process.dev_cli_env

DEMO = Path(__file__).resolve().parents[2] / "starter" / "demo_data"
DEFAULT_METRICS_PORT = 9464
#: What a worker logs when the default metrics port is taken: the port it serves instead.
FALLBACK = re.compile(r"serving /metrics on 127\.0\.0\.1:(\d+) instead")


class ServerOnly(DevProcess):
    """`campaign dev --no-worker` with the README's metrics flags (none)."""

    def args(self) -> list[str]:
        return ["dev", "--no-worker", "--port", str(self.port), "--ui-port", str(self.ui_port),
                "--api-port", str(self.api_port)]


class Worker:
    """`campaign worker` as typed, its output read in the background."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            CAMPAIGN, "worker", env=self.env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [asyncio.create_task(self._read(self.proc.stdout, self.out)),
                         asyncio.create_task(self._read(self.proc.stderr, self.err))]
        async with asyncio.timeout(60):  # connected: it says which version it serves
            while not any(line.startswith("deployment version:") for line in self.out):
                assert self.proc.returncode is None, self.text()
                await asyncio.sleep(0.1)

    @staticmethod
    async def _read(stream: asyncio.StreamReader, into: list[str]) -> None:
        while line := await stream.readline():
            into.append(line.decode())

    def text(self) -> str:
        return "".join(self.out) + "".join(self.err)

    def metrics_port(self) -> int:
        """The port it serves /metrics on: the default, or the one its warning names."""
        found = FALLBACK.search("".join(self.err))
        return int(found.group(1)) if found else DEFAULT_METRICS_PORT

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            await asyncio.gather(*self._readers)
            return await self.proc.wait()


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on (Linux: its sockets' inodes in /proc/net)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def drafted_on(port: int) -> float:
    """`campaign_leads_drafted_total` on the /metrics at `port`."""
    await asyncio.sleep(1.5)  # let the exporter see the last points
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).raise_for_status().text
    assert "temporal_" in text, "the SDK's own metrics are on the listener"
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.name == "campaign_leads_drafted_total")


@contextlib.asynccontextmanager
async def running(*procs: ServerOnly | Worker) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for p in reversed(procs):
            if p.proc is not None:
                await p.stop()


@pytest.mark.slow
async def test_dev_no_worker_then_two_workers_as_the_readme_types_them(dev_cli_env, home):
    dev = ServerOnly(dev_cli_env, home)
    first, second = Worker(dev_cli_env), Worker(dev_cli_env)
    async with running(dev, first, second):
        await dev.start()
        assert dev.proc is not None
        served = listening_ports(dev.proc.pid)
        assert DEFAULT_METRICS_PORT not in served, "--no-worker serves no worker metrics"
        assert served == {dev.api_port}, served

        await first.start()
        await second.start()
        assert first.proc is not None and second.proc is not None
        assert first.proc.returncode is None and second.proc.returncode is None
        ports = {first.metrics_port(), second.metrics_port()}
        assert len(ports) == 2, (first.text(), second.text())
        assert FALLBACK.search("".join(second.err)), "the second worker says where it went"

        started = await cli_json(dev_cli_env, "start", "--leads", str(DEMO / "leads.csv"),
                                 "--kb", str(DEMO / "kb"),
                                 "--brief-file", str(DEMO / "brief.md"), "--id", "split")
        status = await wait_stage(dev_cli_env, "split", {"awaiting_approval", "failed"})
        assert status["stage"] == "awaiting_approval", status
        counts = status["counts"]
        assert counts["drafted"] == started["leads_accepted"] > 0, counts
        # Each worker's /metrics answers; between them they count every lead drafted.
        assert sum([await drafted_on(p) for p in sorted(ports)]) == counts["drafted"]
    assert first.proc.returncode == 0 and second.proc.returncode == 0, second.text()
    assert dev.proc.returncode == 0, "".join(dev.lines)


async def test_a_worker_that_cannot_reach_temporal_says_why_in_whole(dev_cli_env):
    env = {**dev_cli_env, "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"}  # nobody listens
    proc = await asyncio.create_subprocess_exec(
        CAMPAIGN, "worker", "--metrics-port", "0", env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    text = " ".join(err.decode().split())  # as one line, however the terminal wrapped it
    assert proc.returncode == 3, text
    assert "(tcp connect error: Connection refused); start the embedded stack with " \
           "`campaign dev` (or set TEMPORAL_ADDRESS)." in text, text
    assert "tonic::" not in text, "the reason in words, not the SDK's debug form"


def test_a_metrics_port_given_and_taken_is_still_exit_2(home, monkeypatch) -> None:
    """Only the default falls back: a port the user chose and that is taken is their error."""
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:9")  # never reached: the port comes first
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli_app, ["worker", "--metrics-port", str(port)])
    assert result.exit_code == 2, result.output
    assert f"--metrics-port {port}: 127.0.0.1:{port} is in use" in result.output
