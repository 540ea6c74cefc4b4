"""The load-test runner's guards: what it refuses before it sends a request."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_slo_runner_never_imports_the_data_set_into_the_demo_store() -> None:
    # Port 1 on loopback: nothing listens there, so any request would fail differently.
    r = subprocess.run(
        [
            sys.executable,
            "load_tests/run_slo.py",
            "--host",
            "http://127.0.0.1:1",
            "--import-orders",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1
    assert "refuses the demo store" in r.stderr and "--store-json" in r.stderr
    assert "Traceback" not in r.stderr
