"""Run the Locust suite headless against a deployment, keep Locust's CSVs, gate on SLOs.

It starts no service: it points Locust at `--host`, or at each of several hosts (one Locust per
host, each with its share of the shoppers; figures per host and in total). Optionally it imports
the Online Retail data set into the store first (over HTTP, idempotent) and starts the tiny
approving charge endpoint for one-click accepts. The exit status is 0 when every SLO held, 1 when
one was breached, 2 when the run itself failed (Locust crashed, or no request was made).

    python load_tests/run_slo.py --host http://127.0.0.1:8000 --store-json store.json \
        --import-orders --charge-server 127.0.0.1:8099 --shape average --p99-ms 100

See load_tests/README.md for what each SLO means and how to read the output.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workload as wl  # noqa: E402 (a sibling module, as Locust imports it)

AGGREGATED = "Aggregated"


@dataclass(frozen=True, slots=True)
class RouteStats:
    name: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    slo: str
    limit: float
    measured: float
    ok: bool


def read_stats(path: Path) -> dict[str, RouteStats]:
    """Locust's `<prefix>_stats.csv`, by request name ("Aggregated" for all of them)."""

    def ms(value: str) -> float:
        return float(value) if value not in ("", "N/A") else 0.0

    out = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            out[row["Name"]] = RouteStats(
                name=row["Name"],
                requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]),
                rps=float(row["Requests/s"]),
                p50_ms=ms(row["50%"]),
                p95_ms=ms(row["95%"]),
                p99_ms=ms(row["99%"]),
                max_ms=ms(row["Max Response Time"]),
            )
    return out


def judge(
    stats: dict[str, RouteStats],
    p99_ms: float,
    route_p99: dict[str, float],
    max_error_rate: float,
) -> list[Verdict]:
    total = stats[AGGREGATED]
    verdicts = [
        Verdict("p99 latency, all requests (ms)", p99_ms, total.p99_ms, total.p99_ms <= p99_ms),
        Verdict(
            "error rate, all requests",
            max_error_rate,
            total.error_rate,
            total.error_rate <= max_error_rate,
        ),
    ]
    for name, limit in route_p99.items():
        found = stats.get(name)
        if found is None:
            verdicts.append(Verdict(f"p99 {name} (ms): no such request name", limit, 0, False))
        else:
            verdicts.append(Verdict(f"p99 {name} (ms)", limit, found.p99_ms, found.p99_ms <= limit))
    return verdicts


def combine(per_host: dict[str, dict[str, RouteStats]]) -> dict[str, RouteStats]:
    """The total over hosts: counts and rates add up; each percentile is the worst host's, an
    upper bound (no more than 1% of all requests are slower than every host's p99)."""
    names = sorted({name for stats in per_host.values() for name in stats})
    total = {}
    for name in names:
        rows = [stats[name] for stats in per_host.values() if name in stats]
        total[name] = RouteStats(
            name=name,
            requests=sum(r.requests for r in rows),
            failures=sum(r.failures for r in rows),
            rps=sum(r.rps for r in rows),
            p50_ms=max(r.p50_ms for r in rows),
            p95_ms=max(r.p95_ms for r in rows),
            p99_ms=max(r.p99_ms for r in rows),
            max_ms=max(r.max_ms for r in rows),
        )
    return total


def report(stats: dict[str, RouteStats], verdicts: list[Verdict], failures: Path | None) -> str:
    lines = [
        f"{'request':<34} {'count':>8} {'fail%':>7} {'req/s':>8} "
        f"{'p50':>6} {'p95':>6} {'p99':>6} {'max':>7}  (ms)"
    ]
    ordered = sorted((s for n, s in stats.items() if n != AGGREGATED), key=lambda s: -s.requests)
    for s in [*ordered, stats[AGGREGATED]]:
        lines.append(
            f"{s.name[:34]:<34} {s.requests:>8} {100 * s.error_rate:>6.2f}% {s.rps:>8.1f} "
            f"{s.p50_ms:>6.0f} {s.p95_ms:>6.0f} {s.p99_ms:>6.0f} {s.max_ms:>7.0f}"
        )
    if failures is not None and failures.exists():
        with failures.open(newline="") as handle:
            rows = sorted(csv.DictReader(handle), key=lambda r: -int(r["Occurrences"]))
        if rows:
            lines.append("")
            lines.append("failures (most frequent first):")
            for row in rows[:10]:
                lines.append(f"  {row['Occurrences']:>6}  {row['Name']}: {row['Error'][:100]}")
    lines.append("")
    for v in verdicts:
        shown = f"{v.measured:.4f}" if v.limit < 1 else f"{v.measured:.0f}"
        lines.append(f"{'PASS' if v.ok else 'FAIL'}  {v.slo}: {shown} (limit {v.limit:g})")
    return "\n".join(lines)


def _route_limit(text: str) -> tuple[str, float]:
    name, sep, limit = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=MS, got {text!r}")
    return name, float(limit)


def _wait_for_port(host: str, port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"the charge endpoint did not start on {host}:{port}") from None
            time.sleep(0.05)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--host",
        required=True,
        action="append",
        help="the deployment, e.g. http://127.0.0.1:8000; several hosts (repeated, or "
        "comma-separated) share the load, one Locust each",
    )
    keys = p.add_argument_group("the store under test")
    keys.add_argument("--key", default="pk_demo", help="publishable key (default pk_demo)")
    keys.add_argument(
        "--secret-key",
        default="sk_demo",
        help="secret key: orders for thank-you pages and accepts, catalog check, import "
        "(default sk_demo; pass '' to leave those out)",
    )
    keys.add_argument(
        "--store-json", type=Path, help="take both keys from `offer-service stores create` output"
    )
    keys.add_argument("--dataset", type=Path, default=wl.DEFAULT_DATASET)
    keys.add_argument(
        "--import-orders",
        action="store_true",
        help="import the data set into the store over HTTP first, unless it holds it already",
    )
    charge = p.add_argument_group("one-click accepts")
    charge.add_argument(
        "--charge-server",
        metavar="HOST:PORT",
        help="start the approving charge endpoint there and point the store at it for the run",
    )
    charge.add_argument(
        "--charge-url", help="the URL the service reaches it by (default http://HOST:PORT/charge)"
    )
    load = p.add_argument_group("load")
    load.add_argument(
        "--shape", default="smoke", choices=["smoke", "average", "stress", "soak", "none"]
    )
    load.add_argument("--users", type=int, help="expected peak of concurrent shoppers")
    load.add_argument("--minutes", type=float, help="how long the shape's main stage holds")
    load.add_argument("--think", type=float, default=1.0, help="mean seconds between requests")
    load.add_argument("--processes", type=int, default=1, help="Locust processes (-1: a core each)")
    load.add_argument("--cpu", help="pin Locust (and the charge endpoint) to these CPUs (taskset)")
    load.add_argument(
        "--locust-arg",
        action="append",
        default=[],
        help="passed to Locust as is (repeatable), e.g. --locust-arg=--run-time=5m",
    )
    slo = p.add_argument_group("SLOs")
    slo.add_argument(
        "--p99-ms", type=float, default=100.0, help="p99 of all requests (default 100)"
    )
    slo.add_argument(
        "--p99",
        type=_route_limit,
        action="append",
        default=[],
        metavar="NAME=MS",
        help="p99 of one request name, e.g. '/v1/offers?surface=product_page=50' (repeatable)",
    )
    slo.add_argument(
        "--max-error-rate", type=float, default=0.001, help="failed / all requests (default 0.001)"
    )
    p.add_argument(
        "--csv",
        type=Path,
        help="CSV prefix (default load-results/<shape>-<UTC time>); Locust writes "
        "<prefix>_stats.csv, _failures.csv, _exceptions.csv, _stats_history.csv",
    )
    args = p.parse_args(argv)
    args.hosts = list(
        dict.fromkeys(h.strip().rstrip("/") for v in args.host for h in v.split(",") if h.strip())
    )
    if not args.hosts:
        p.error("--host names no host")
    if args.store_json:
        created = json.loads(args.store_json.read_text())
        args.key, args.secret_key = created["publishable_key"], created["secret_key"]
    return args


DEMO_SECRET_KEY = "sk_demo"


def locust_command(
    args: argparse.Namespace, host: str, prefix: Path, charge_url: str, pin: list[str]
) -> list[str]:
    return [
        *pin,
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(HERE / "locustfile.py"),
        "--headless",
        "--host",
        host,
        "--csv",
        str(prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--offer-key",
        args.key,
        "--offer-secret-key",
        args.secret_key,
        "--offer-dataset",
        str(args.dataset),
        "--offer-charge-url",
        charge_url,
        "--offer-think",
        str(args.think),
        *(["--processes", str(args.processes)] if args.processes != 1 else []),
        *args.locust_arg,
    ]


class Locust:
    """One running Locust whose error output passes through to ours, its last lines kept: when
    it fails, they say why beside the other Locusts' output."""

    TAIL_LINES = 30

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.tail: deque[str] = deque(maxlen=self.TAIL_LINES)
        # Undecodable bytes replaced: a reader that stopped would leave the Locust blocked on
        # a full pipe.
        self.proc = subprocess.Popen(
            command, env=env, stderr=subprocess.PIPE, text=True, errors="replace"
        )
        self.reader = threading.Thread(target=self._pass_through, daemon=True)
        self.reader.start()

    def _pass_through(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            sys.stderr.write(line)
            self.tail.append(line)

    def wait(self) -> int:
        code = self.proc.wait()
        self.reader.join(timeout=10)
        return code

    def said(self) -> str:
        return "".join(self.tail)


def run_locusts(
    args: argparse.Namespace, prefixes: dict[str, Path], charge_url: str, pin: list[str]
) -> list[tuple[int, str]]:
    """One Locust per host, all at once, each running its share of the shape's shoppers; their
    exit statuses and last lines of error output. With several hosts the store's charge URL is
    pointed here once for all of them (each Locust would otherwise save and restore it over the
    others')."""
    env = {**os.environ, "OFFER_SHAPE": args.shape, "OFFER_SHAPE_SHARE": str(len(prefixes))}
    if args.users:
        env["OFFER_SHAPE_USERS"] = str(args.users)
    if args.minutes:
        env["OFFER_SHAPE_MINUTES"] = str(args.minutes)
    shared = len(prefixes) > 1 and bool(charge_url) and bool(args.secret_key)
    first = next(iter(prefixes))
    saved: object = None
    if shared:
        rules = wl.admin_call(first, args.secret_key, "GET", "/v1/admin/rules")
        saved, rules["charge_url"] = rules.get("charge_url"), charge_url
        wl.admin_call(first, args.secret_key, "PUT", "/v1/admin/rules", json.dumps(rules).encode())
    try:
        running = []
        for host, prefix in prefixes.items():
            command = locust_command(args, host, prefix, "" if shared else charge_url, pin)
            print("+", shlex.join(command), flush=True)
            running.append(Locust(command, env))
        return [(locust.wait(), locust.said()) for locust in running]
    finally:
        if shared:
            rules = wl.admin_call(first, args.secret_key, "GET", "/v1/admin/rules")
            rules["charge_url"] = saved
            body = json.dumps(rules).encode()
            wl.admin_call(first, args.secret_key, "PUT", "/v1/admin/rules", body)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hosts: list[str] = args.hosts
    host = hosts[0]
    prefix: Path = args.csv or Path("load-results") / (
        f"{args.shape}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    )
    prefix.parent.mkdir(parents=True, exist_ok=True)
    pin = ["taskset", "-c", args.cpu] if args.cpu else []

    if args.import_orders:
        if not args.secret_key:
            raise SystemExit("--import-orders needs the secret key")
        if args.secret_key == DEMO_SECRET_KEY:
            # The data set's 1,000 best sellers would take over the demo shop's pages for good.
            raise SystemExit(
                "--import-orders refuses the demo store: create a store of its own "
                "(`offer-service stores create ... > store.json`) and pass --store-json store.json"
            )
        workload = wl.from_dataset(args.dataset)
        print("import:", wl.ensure_imported(host, args.secret_key, args.dataset, workload))

    charge: subprocess.Popen[bytes] | None = None
    charge_url = args.charge_url or ""
    if args.charge_server:
        c_host, _, c_port = args.charge_server.rpartition(":")
        server = [
            sys.executable,
            str(HERE / "charge_server.py"),
            "--host",
            c_host,
            "--port",
            c_port,
        ]
        charge = subprocess.Popen([*pin, *server])
        _wait_for_port(c_host, int(c_port))
        charge_url = charge_url or f"http://{c_host}:{c_port}/charge"

    # One host keeps the prefix as given; several get one each, suffixed -host1, -host2...
    prefixes = (
        {host: prefix}
        if len(hosts) == 1
        else {h: prefix.with_name(f"{prefix.name}-host{i}") for i, h in enumerate(hosts, 1)}
    )
    try:
        codes = run_locusts(args, prefixes, charge_url, pin)
    finally:
        if charge is not None:
            charge.terminate()
            charge.wait(timeout=10)

    per_host: dict[str, dict[str, RouteStats]] = {}
    for (name, each), (code, said) in zip(prefixes.items(), codes, strict=True):
        stats_path = Path(f"{each}_stats.csv")
        stats = read_stats(stats_path) if stats_path.exists() else {}
        if AGGREGATED not in stats or stats[AGGREGATED].requests == 0:
            print(
                f"no request was made to {name}: its Locust exited {code}, its last lines:\n"
                + textwrap.indent(said or "(none)\n", "  | "),
                file=sys.stderr,
            )
            return 2
        per_host[name] = stats
    stats = per_host[host] if len(hosts) == 1 else combine(per_host)
    verdicts = judge(stats, args.p99_ms, dict(args.p99), args.max_error_rate)
    print()
    if len(hosts) > 1:
        for name, each in prefixes.items():
            print(f"== {name}")
            print(report(per_host[name], [], Path(f"{each}_failures.csv")))
        print(f"== all {len(hosts)} hosts (percentiles: the worst host's)")
    print(report(stats, verdicts, Path(f"{prefix}_failures.csv") if len(hosts) == 1 else None))
    summary = {
        "host": host,
        "hosts": hosts,
        "shape": args.shape,
        "stats": {n: {**asdict(s), "error_rate": s.error_rate} for n, s in stats.items()},
        "per_host": {
            h: {n: {**asdict(s), "error_rate": s.error_rate} for n, s in by_name.items()}
            for h, by_name in per_host.items()
        },
        "slos": [asdict(v) for v in verdicts],
        "ok": all(v.ok for v in verdicts),
    }
    Path(f"{prefix}_slo.json").write_text(json.dumps(summary, indent=2))
    print(f"\nCSVs: {prefix}*_*.csv; verdicts: {prefix}_slo.json")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
