"""The engine benchmark's short mode, so `make bench` keeps working (figures are not checked)."""

from __future__ import annotations

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
