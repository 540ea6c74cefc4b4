"""The measuring tools beside the Locust suite: the aggregator's script times on a real
redis-server, the capacity run's checks before it starts any load, and the benchmark's real
traffic carrying its sessions from one wrk run to the next."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

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


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def test_real_traffic_sessions_go_on_from_one_wrk_run_to_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (the test command installs it)")
    monkeypatch.syspath_prepend(str(ROOT / "load_tests"))
    bench = importlib.import_module("bench")
    workload = importlib.import_module("workload")
    traffic = workload.Traffic(sessions=20_000)
    plan = bench.Plan(traffic=bench.RealTraffic("k", ("p1", "p2"), (1, 3), traffic))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    saved = tmp_path / "sessions"
    script = tmp_path / "real.lua"
    script.write_text(plan.lua(4, saved))

    def run() -> list[int]:
        out = subprocess.run(
            ["wrk", "-t1", "-c4", "-d1s", "-s", str(script), url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "WRKJSON" in out.stdout, out.stdout + out.stderr
        return [int(line) for line in saved.read_text().split()]

    try:
        first, second = run(), run()
    finally:
        server.shutdown()
    assert len(first) == len(second) == 20_000
    assert all(0 <= n < traffic.population for n in first)
    # Each view ends its session with probability 1/4: of 20,000 sessions, a second's few
    # thousand views end a minority. Sessions drawn anew would keep almost none of the slots.
    kept = sum(a == b for a, b in zip(first, second, strict=True))
    assert 0.5 * len(first) < kept < len(first)
