"""The measuring tools beside the Locust suite: the aggregator's script times on a real
redis-server, and the capacity run's checks before it starts any load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.redis_servers import redis_binaries

ROOT = Path(__file__).resolve().parents[1]


def test_script_times_counts_a_backlog_and_names_each_script() -> None:
    redis_binaries()  # skips when redis-server cannot be had
    r = subprocess.run(
        [sys.executable, "load_tests/script_times.py", "--events", "1500"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "counted 1500 events" in r.stdout
    # Each phase names its script: the SLOWLOG's calls are matched to the sources.
    assert "record_events" in r.stdout and "apply_events" in r.stdout


def test_a_capacity_run_needs_one_process_per_host() -> None:
    r = subprocess.run(
        [
            *(sys.executable, "load_tests/capacity.py", "--host", "http://a:1,http://b:1"),
            *("--pid", "1", "--store-json", "store.json", "--users", "10", "--csv", "x"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert "one --pid per host" in r.stderr
