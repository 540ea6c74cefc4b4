"""One capacity run: `run_slo.py` against `serve` processes on this machine, with each one's CPU.

run_slo.py gives the SLO verdict, latency and errors; this adds what a process costs: its rate
in the shape's main stage and its CPU time per request (from /proc/<pid>/stat, over the whole
run). Run it at increasing `--users` to find the highest rate each process holds within the SLO,
then several times at that rate (docs/performance.md, "Capacity per process").

    python load_tests/capacity.py --host http://127.0.0.1:8001,http://127.0.0.1:8002 \
        --pid 1234 --pid 1235 --store-json store.json --charge-url http://127.0.0.1:8099/charge \
        --users 120 --minutes 3 --csv load-results/cap-120

It prints one JSON line; `--redis-port` adds Redis's LATENCY LATEST (spikes of 20 ms and more,
with `CONFIG SET latency-monitor-threshold 20`), read and reset after the run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def main_stage_rps(history: Path) -> float:
    """Mean requests/s while the shape held its peak of users, once the ramp had settled."""
    rows = [r for r in csv.DictReader(history.open()) if r["Name"] == "Aggregated"]
    peak = max(int(r["User Count"]) for r in rows)
    held = [float(r["Requests/s"]) for r in rows if int(r["User Count"]) == peak]
    held = held[len(held) // 6 :]
    return sum(held) / len(held)


def redis_cli(port: int, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True
    ).stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", required=True, help="comma-separated, as run_slo.py takes it")
    parser.add_argument(
        "--pid", type=int, action="append", required=True, help="per host, in order"
    )
    parser.add_argument("--store-json", required=True)
    parser.add_argument("--charge-url", default="")
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--minutes", default="3")
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--nice", default="10", help="the load generator's niceness")
    parser.add_argument("--redis-port", type=int)
    args = parser.parse_args()
    hosts = args.host.split(",")
    if len(hosts) != len(args.pid):
        raise SystemExit("give one --pid per host, in the same order")
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    before = [cpu_s(pid) for pid in args.pid]
    started = time.monotonic()
    command = [
        *("nice", "-n", args.nice, sys.executable, str(HERE / "run_slo.py")),
        *("--host", args.host, "--store-json", args.store_json, "--shape", "average"),
        *("--users", str(args.users), "--minutes", args.minutes, "--csv", str(args.csv)),
        *(("--charge-url", args.charge_url) if args.charge_url else ()),
    ]
    run = subprocess.run(command, capture_output=True, text=True)
    Path(f"{args.csv}_stdout.txt").write_text(run.stdout + run.stderr)
    used = [cpu_s(pid) - b for pid, b in zip(args.pid, before, strict=True)]
    slo_path = Path(f"{args.csv}_slo.json")
    if not slo_path.exists():
        print(run.stdout[-2000:], run.stderr[-2000:], file=sys.stderr)
        return 2
    summary = json.loads(slo_path.read_text())
    total = summary["stats"]["Aggregated"]
    per_host: dict[str, Any] = {}
    for i, (host, spent) in enumerate(zip(hosts, used, strict=True), 1):
        stats = summary["per_host"][host]["Aggregated"]
        prefix = args.csv if len(hosts) == 1 else args.csv.with_name(f"{args.csv.name}-host{i}")
        per_host[host] = {
            "main_stage_rps": round(main_stage_rps(Path(f"{prefix}_stats_history.csv")), 1),
            "requests": stats["requests"],
            "failures": stats["failures"],
            "p99_ms": stats["p99_ms"],
            "cpu_ms_per_request": round(spent / max(stats["requests"], 1) * 1000, 2),
        }
    result = {
        "users": args.users,
        "minutes": args.minutes,
        "slo_ok": summary["ok"],
        "requests": total["requests"],
        "failures": total["failures"],
        "error_rate": total["error_rate"],
        "p99_ms": total["p99_ms"],
        "wall_s": round(time.monotonic() - started),
        "per_host": per_host,
    }
    if args.redis_port:
        result["redis_latency_latest"] = redis_cli(args.redis_port, "latency", "latest").split()
        redis_cli(args.redis_port, "latency", "reset")
    Path(f"{args.csv}_capacity.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
