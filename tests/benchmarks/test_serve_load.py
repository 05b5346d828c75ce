"""``benchmarks/serve_load.py`` end to end on a few requests, so that it cannot rot: a real
``pixelwise serve`` subprocess on loopback, the JSON it writes and the figures in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("httpx")
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_serve_load_smoke(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = ROOT / "benchmarks" / "serve_load.py"
    argv = ["--requests", "6", "--concurrency", "3", "--workers", "1", "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(script), *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "serve_load.json").read_text())
    figures = report["servers"]["workers=1"]
    assert figures["errors"] == 0 and figures["statuses"] == {"200": 6}
    assert 0 < figures["p50_s"] <= figures["p95_s"] <= figures["p99_s"]
    assert figures["requests_per_s"] > 0 and report["in_process"]["median_s"] > 0
    assert "workers=1: 6 requests, 3 at a time, errors 0" in done.stdout
