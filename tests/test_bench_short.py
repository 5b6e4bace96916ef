"""The engine benchmark's short mode, so `make bench` keeps working (figures are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_engine_short_mode_runs_every_shape() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.bench_engine", "--leads", "20",
                           "--runs", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=540, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for shape in ("engine (offline writer)", "bare child-per-lead", "bare flat"):
        assert f"| {shape} |" in out
    assert "Ratio to the bare child shape" in out


def _run(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=540, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_llm_rate_short_mode_counts_one_call_a_lead() -> None:
    result = json.loads(_run("bench.bench_llm_rate", "--leads", "12", "--workers", "2",
                             "--latency", "0.05", "--json").splitlines()[-1])
    assert result["drafted"] == 12 and result["stage"] == "awaiting_approval"
    assert result["calls"] == 12  # the test server logs every chat request it answered
    assert result["achieved_per_s"] > 0 and result["busiest_window_per_s"] > 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_workers_and_latency_short_modes_run() -> None:
    out = _run("bench.bench_workers", "--leads", "10", "--layouts", "1,2-split")
    assert "| 1 worker process | 10 |" in out
    assert "| 2 processes, split queues" in out
    out = _run("bench.bench_latency", "--runs", "3", "--warmup", "1")
    assert "one-lead campaigns, 3 runs" in out
    assert "| orchestration (the difference) |" in out


def test_busiest_window_and_interval_union() -> None:
    """The two figures the benchmarks judge by, on known inputs."""
    from bench.bench_latency import union_seconds
    from bench.bench_llm_rate import busiest_window

    assert busiest_window([0.0, 1.0, 2.0, 4.9, 5.0, 9.0]) == 4  # [0, 5) holds four
    assert busiest_window([0.0, 10.0, 20.0]) == 1
    assert busiest_window([]) == 0
    assert union_seconds([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)], until=10.0) == 4.0
    assert union_seconds([(0.0, 2.0), (1.0, 3.0)], until=1.5) == 1.5
