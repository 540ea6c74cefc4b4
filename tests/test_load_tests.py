"""The load-test runner: what it refuses before it sends a request, and a short run spread over
two real `serve` processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.flows import UNLIMITED
from tests.processes import two_instances

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "load_tests"))
import workload as wl  # a sibling module of the runner, as it imports it

ROOT = Path(__file__).resolve().parents[1]


def run_slo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """load_tests/run_slo.py with these arguments, as a user runs it from the checkout."""
    return subprocess.run(
        [sys.executable, "load_tests/run_slo.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_slo_runner_never_imports_the_data_set_into_the_demo_store() -> None:
    # Port 1 on loopback: nothing listens there, so any request would fail differently.
    r = run_slo("--host", "http://127.0.0.1:1", "--import-orders")
    assert r.returncode == 1
    assert "refuses the demo store" in r.stderr and "--store-json" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_locust_that_cannot_start_says_why_in_the_runners_verdict(tmp_path: Path) -> None:
    if not wl.DEFAULT_DATASET.exists():
        pytest.skip(f"the data set is not present at {wl.DEFAULT_DATASET}")
    # Nothing listens on port 1: the Locust's first admin call (the catalog) fails at start.
    r = run_slo(
        "--host",
        "http://127.0.0.1:1",
        "--secret-key",
        "sk_none",
        "--shape",
        "smoke",
        "--minutes",
        "0.1",
        "--csv",
        str(tmp_path / "run"),
    )
    assert r.returncode == 2, r.stderr[-3000:]
    verdict = r.stderr[r.stderr.index("no request was made to http://127.0.0.1:1") :]
    assert "its Locust exited 1" in verdict
    assert "  | cannot read the store's catalog" in verdict and "Connection refused" in verdict


# The first invoice lines of the data set: enough products for the shoppers to browse and buy.
SLICE_LINES = 3000


def small_store(store_url: str, host: str, directory: Path) -> Path:
    """A store of its own holding a slice of the data set (the demo store holds none of its
    products) with rate limits lifted; the path of its keys, as `stores create` prints them."""
    command = ["stores", "create", "--name", "Load", "--store-url", store_url]
    created = subprocess.run(
        [sys.executable, "-m", "offer_service.cli", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    keys = directory / "store.json"
    keys.write_text(created)
    secret = json.loads(created)["secret_key"]
    rules = wl.admin_call(host, secret, "GET", "/v1/admin/rules")
    rules["rate_limits"] = {**rules["rate_limits"], **UNLIMITED}
    wl.admin_call(host, secret, "PUT", "/v1/admin/rules", json.dumps(rules).encode())
    lines = wl.online_retail_csv(wl.DEFAULT_DATASET).split(b"\n")[: SLICE_LINES + 1]
    path = "/v1/admin/orders?currency=GBP"
    wl.admin_call(host, secret, "POST", path, b"\n".join(lines) + b"\n", "text/csv")
    return keys


def test_the_slo_runner_spreads_its_shoppers_over_two_hosts(tmp_path: Path) -> None:
    if not wl.DEFAULT_DATASET.exists():
        pytest.skip(f"the data set is not present at {wl.DEFAULT_DATASET}")
    store_url = f"sqlite:///{tmp_path / 'offers.db'}"
    with two_instances(store_url, tmp_path) as (first, second):
        keys = small_store(store_url, first.url, tmp_path)
        r = run_slo(
            "--host",
            f"{first.url},{second.url}/",
            "--host",
            first.url,  # named twice, loaded once
            "--store-json",
            str(keys),
            "--charge-server",
            f"127.0.0.1:{free_port()}",
            "--shape",
            "smoke",
            "--users",
            "4",
            "--minutes",
            "0.25",
            "--think",
            "0.2",
            "--p99-ms",
            "5000",
            "--max-error-rate",
            "0",
            "--csv",
            str(tmp_path / "run"),
            timeout=240,
        )
        secret = json.loads(keys.read_text())["secret_key"]
        charge_url = wl.admin_call(first.url, secret, "GET", "/v1/admin/rules")["charge_url"]
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-20000:]
    assert charge_url is None  # pointed at the runner's endpoint once, and restored once
    summary = json.loads((tmp_path / "run_slo.json").read_text())
    assert summary["hosts"] == [first.url, second.url]
    per_host = {host: stats["Aggregated"] for host, stats in summary["per_host"].items()}
    total = summary["stats"]["Aggregated"]
    print(f"\nrequests per host: { {h: s['requests'] for h, s in per_host.items()} }")
    assert all(s["requests"] > 20 and s["failures"] == 0 for s in per_host.values())
    assert total["requests"] == sum(s["requests"] for s in per_host.values())
    assert total["p99_ms"] == max(s["p99_ms"] for s in per_host.values())
    assert f"== {first.url}" in r.stdout and f"== {second.url}" in r.stdout
    assert "== all 2 hosts" in r.stdout
    for name in ("run-host1_stats.csv", "run-host2_stats.csv"):
        assert (tmp_path / name).exists()
