"""The benchmark harness: the offer service against the framework's own limit, on this machine.

Every figure is a ratio measured in the same run against a baseline measured the same way, so it
says something about the service rather than the machine. Servers are started here, one uvicorn
worker each on the same transport (the service as `offer-service serve` starts it: see
UVICORN_FLAGS), pinned to one core (`--server-cpu`); the load generator (wrk when installed,
else Locust's fast HTTP client) runs on another (`--client-cpu`). Each comparison is
interleaved over rounds (A B, B A, A B, ...) and reported as the median ratio with its min and
max: the service against the bare endpoint over many short rounds (`--offers-rounds`,
`--latency-rounds`, `--short-duration` s each), since this machine's speed moves within seconds;
the other sections over `--rounds` rounds of `--duration` s.

Sections (`--only a,b`; default all):
  offers   warm-cache GET /v1/offers (product_page, 4 offers, a visitor_id so the visitor filters
           run, signed tokens) throughput vs a bare Starlette + orjson endpoint answering the same
           bytes. Target >= 0.65x.
  latency  p99 at half the bare endpoint's maximum rate, service vs bare, the maximum measured
           again at the start of each of --latency-rounds rounds. Target <= 2x.
  redis    offers throughput on the Redis backend vs warm SQLite. Target >= 0.6x. Skipped (with
           a message) when the Redis backend or redis-server is missing.
  events   events ingested per second on one core, 20 per POST /v1/events, each committed before
           the 202 (checked by counting stored rows). Target >= 20,000/s.
  flat     p99 with 1M products and 5M order lines vs 1k products (stores in the real data's shape,
           see synthetic.py; built once and cached in --workdir): warm product pages, and cold
           carts whose anchor sets are all new (every request a cache miss), the same requests
           to both stores, both files read into the OS cache first. Target <= 1.2x.
  memory   resident size of the service per 100k products (and the SQLite file per 100k).

    python load_tests/bench.py                    # all sections; the first run builds the stores
    python load_tests/bench.py --only offers,latency --profile
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# The checkout this file is in, ahead of any installed copy: the harness and its servers
# measure this checkout's code (a second worktree benchmarks its own).
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import synthetic  # noqa: E402 (sibling modules)
import workload as wl  # noqa: E402
from workload import DEFAULT_DATASET  # noqa: E402

SECTIONS = ("offers", "latency", "redis", "events", "flat", "memory")
# The service runs as deployments start it, `offer-service serve` (SERVICE_COMMAND): the app of
# `serving_app` (the interpreter tuned for serving), uvicorn on uvloop with the service's own
# httptools protocol (web/connections.py: a deadline for each request's headers), no access
# log, and X-Forwarded-For believed from no peer (OFFER_TRUST_PROXY is not set). The bare
# endpoint gets uvicorn's flags for the same transport: uvloop, httptools, and proxy headers
# off, which uvicorn would otherwise read from 127.0.0.1 on every request.
UVICORN_FLAGS = ["--workers", "1", "--loop", "uvloop", "--http", "httptools"]
UVICORN_FLAGS += ["--no-proxy-headers", "--no-access-log", "--log-level", "warning"]
# The service's app: a server of it starts through SERVICE_COMMAND, which serves this app.
SERVICE_APP = "offer_service.cli:serving_app"
# (No drain at the end of a run: SIGTERM stops it at once.)
SERVICE_COMMAND = ["-m", "offer_service.cli", "serve", "--drain-seconds", "0"]
BARE_APP = "bare_app:create_app"
OFFERS_LIMIT = 4
EVENTS_PER_BATCH = 20
HOT_PRODUCTS = 200
VISITORS = 1000
REAL_CACHE_VERSION = 1
SEEDED_CACHE_VERSION = 1
# A seeded store older than this is seeded again: its impressions would have left the window.
SEEDED_MAX_AGE_S = 86_400
# Requests the Locust fallback replays of the real-traffic model (it sends a list of paths).
LOCUST_TRAFFIC_PATHS = 200_000

TARGETS = {
    "offers": (">=", 0.65),
    "offers_cpu": (">=", 0.65),
    "offers_best": (">=", 0.65),
    "offers_best_cpu": (">=", 0.65),
    "latency": ("<=", 2.0),
    "latency_best": ("<=", 2.0),
    "redis": (">=", 0.6),
    "redis_cpu": (">=", 0.6),
    "redis_best": (">=", 0.6),
    "redis_best_cpu": (">=", 0.6),
    "events": (">=", 20_000),
    "events_cpu": (">=", 20_000),
    "flat_warm": ("<=", 1.2),
    "flat_cold": ("<=", 1.2),
}


# --- results -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Load:
    """One load run: what the generator saw."""

    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    errors: int  # connect, read, write, timeout
    bad_status: int  # answers >= 400
    accepted: int = 0  # events section: batches answered 202 with every event accepted
    server_cpu_s: float = 0.0  # CPU time the server process used during the run
    client_cpu_s: float = 0.0  # CPU time the load generator used (warm-up excluded)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        """Server CPU time per request: unlike req/s, barely moved by other work on the machine."""
        return self.server_cpu_s / self.requests * 1e6 if self.requests else 0.0


@dataclass(slots=True)
class Row:
    """One line of the printed table."""

    key: str
    label: str
    values: list[float] = field(default_factory=list)
    unit: str = "x"
    note: str = ""
    skipped: str = ""

    def median(self) -> float:
        return statistics.median(self.values)

    def met(self) -> str:
        if self.skipped or self.key not in TARGETS or not self.values:
            return ""
        op, limit = TARGETS[self.key]
        ok = self.median() >= limit if op == ">=" else self.median() <= limit
        return "yes" if ok else "NO"

    def target(self) -> str:
        if self.key not in TARGETS:
            return ""
        op, limit = TARGETS[self.key]
        return f"{op} {_fmt(limit, self.unit)}"


def _fmt(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "MB":
        return f"{value:,.1f} MB"
    return f"{value:,.2f}{unit}"


def render(rows: list[Row], header: str) -> str:
    lines = [header, ""]
    lines.append(
        f"{'measure':<56} {'median':>10} {'min':>10} {'max':>10} {'target':>10} {'met':>4}"
    )
    lines.append("-" * 105)
    for row in rows:
        if row.skipped or not row.values:
            lines.append(f"{row.label:<56} skipped: {row.skipped or 'no data'}")
            continue
        lo, hi = min(row.values), max(row.values)
        lines.append(
            f"{row.label:<56} {_fmt(row.median(), row.unit):>10} {_fmt(lo, row.unit):>10} "
            f"{_fmt(hi, row.unit):>10} {row.target():>10} {row.met():>4}"
        )
        if row.note:
            lines.append(f"    {row.note}")
    return "\n".join(lines)


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """One uvicorn process, pinned to a core."""

    def __init__(
        self, name: str, app: str, env: dict[str, str], cpu: str, log_dir: Path, workers: int = 1
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        if app == SERVICE_APP:
            # With several workers, its supervisor shares /metrics between them.
            command = ["taskset", "-c", cpu, sys.executable, *SERVICE_COMMAND]
            command += ["--workers", str(workers)]
        else:
            command = ["taskset", "-c", cpu, sys.executable, "-m", "uvicorn", app, "--factory"]
            command += UVICORN_FLAGS
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            command,
            cwd=HERE,
            env={**os.environ, **env, "PYTHONPATH": os.pathsep.join((str(HERE), str(ROOT)))},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                if get(self.url + "/healthz")[0] == 200:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {self.log_path}")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the process and of its worker processes (all
        their threads)."""
        return sum(_cpu_seconds(pid) for pid in (self.pid, *_children(self.pid)))

    def rss_mb(self, field: str = "VmRSS") -> float:
        """Resident size in MB: all of it (VmRSS), or the process's own memory (RssAnon), or
        the pages of files it maps (RssFile: SQLite's read map, the OS's file cache)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(field + r":\s+(\d+) kB", status)
        return int(match.group(1)) / 1024 if match else 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _children_cpu_s() -> float:
    """CPU time of this process's children that have ended (wrk's, once it has)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # gone meanwhile
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """Every live descendant of a process (uvicorn's workers and their children)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found += [int(child), *_children(int(child))]
    return found


def get(url: str, timeout: float = 30.0) -> tuple[int, bytes]:
    status, body, _ = get_with_headers(url, timeout)
    return status, body


def get_with_headers(url: str, timeout: float = 30.0) -> tuple[int, bytes, list[list[str]]]:
    """Status, body and the response's headers as [name, value] pairs (names lower case)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            pairs = [[k.lower(), v] for k, v in response.headers.items()]
            return response.status, response.read(), pairs
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), [[k.lower(), v] for k, v in exc.headers.items()]


def cpu_busy(seconds: float = 1.0) -> float:
    """The share of all CPUs' time spent busy over `seconds` (/proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


# --- load generation ------------------------------------------------------------------------------

_LUA_DONE = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function done(summary, latency, requests)
  if save_sessions then save_sessions(threads) end
  local accepted = 0
  for _, t in ipairs(threads) do accepted = accepted + (t:get("accepted") or 0) end
  local e = summary.errors
  io.write(string.format("WRKJSON {\\"requests\\":%d,\\"us\\":%d,\\"errors\\":%d,\\"status\\":%d,"
    .. "\\"p50\\":%d,\\"p90\\":%d,\\"p99\\":%d,\\"p999\\":%d,\\"max\\":%d,\\"accepted\\":%d}\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, accepted))
end
"""


def _lua_list(values: Sequence[str]) -> str:
    return "{" + ",".join(json.dumps(v) for v in values) + "}"


@dataclass(frozen=True, slots=True)
class Plan:
    """What to send: GETs of `paths` in a round robin, or (with `events_key`) POST /v1/events
    batches of 20 impressions as the snippet sends them: random UUIDs, one visitor a batch.
    With `rate`, each connection waits an exponential gap (wrk's `delay`, whole milliseconds)
    after each answer before its next request, the gaps' mean set so that the connections
    together would send `rate` requests per second if answers took no time: a closed loop with
    think time, so each answer's own time lowers the rate sent (by about answer time / (gap +
    answer time)). Without it, each connection sends its next request as soon as the answer is
    in."""

    paths: tuple[str, ...] = ()
    rate: float | None = None
    events_key: str = ""
    tokens: tuple[str, ...] = ()
    visitors: int = 5000
    # Real traffic's shape, generated per request (see RealTraffic) instead of `paths`.
    traffic: RealTraffic | None = None

    def lua(self, connections: int, sessions_file: Path | None = None) -> str:
        if self.traffic is not None:
            script = self.traffic.lua(sessions_file)
        else:
            script = self._lua_events() if self.events_key else self._lua_get()
        if self.rate:
            mean_ms = connections * 1000.0 / self.rate
            script += (
                "function delay() return math.floor(-math.log(1 - math.random()) * "
                f"{mean_ms:.4f} + 0.5) end\n"
            )
        return script + _LUA_DONE

    def _lua_get(self) -> str:
        return f"""
local paths = {_lua_list(self.paths)}
local reqs = {{}}
for k, p in ipairs(paths) do reqs[k] = wrk.format("GET", p) end
local n = #reqs
local i = 0
function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
  i = math.random(n)
end
function request() i = i % n + 1; return reqs[i] end
"""

    def _lua_events(self) -> str:
        return f"""
local tokens = {_lua_list(self.tokens)}
local nt = #tokens
local head = '{{"key":"{self.events_key}","events":['
local ts = string.format("%d", os.time() * 1000)
local headers = {{["Content-Type"] = "text/plain;charset=UTF-8"}}
local r = math.random
local counter = 0
local batches = 0
accepted = 0
function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end
-- A version 4 UUID, as the snippet's crypto.randomUUID() makes.
local function uuid()
  return string.format("%08x-%04x-4%03x-%x%03x-%06x%06x", r(0, 0xffffffff), r(0, 0xffff),
    r(0, 0xfff), r(8, 11), r(0, 0xfff), r(0, 0xffffff), r(0, 0xffffff))
end
function request()
  local parts = {{}}
  batches = batches + 1
  local visitor = '","ts":' .. ts .. ',"visitor_id":"ev-' .. (batches % {self.visitors}) .. '"}}'
  for k = 1, {EVENTS_PER_BATCH} do
    counter = counter + 1
    parts[k] = '{{"id":"' .. uuid() .. '","type":"impression","token":"'
      .. tokens[counter % nt + 1] .. visitor
  end
  return wrk.format("POST", "/v1/events", headers, head .. table.concat(parts, ",") .. "]}}")
end
function response(status, headers, body)
  if status == 202 and string.find(body, '"accepted":{EVENTS_PER_BATCH},', 1, true) then
    accepted = accepted + 1
  end
end
"""


@dataclass(frozen=True, slots=True)
class RealTraffic:
    """GET /v1/offers as real storefront traffic asks (workload.Traffic): each request a page
    view of one of `traffic.sessions` open sessions, its visitor out of `traffic.population`;
    a product page of a product drawn by real popularity over the whole catalog (`products`,
    `cumulative` weights), or with `cart_share` a cart of 1-3 items of a real basket (`carts`).
    wrk's Lua draws each request (a binary search of the weights), so no list of paths repeats.
    The open sessions outlive a run: wrk writes them to a file at its end and the next run
    against the same server takes them up (a run of seconds would otherwise meet every
    session anew, its first view only, where a session's views span about a minute)."""

    key: str
    products: tuple[str, ...]  # URL-quoted
    cumulative: tuple[int, ...]
    traffic: wl.Traffic
    carts: tuple[str, ...] = ()  # URL-quoted, comma-joined items
    cart_share: float = 0.0

    def lua(self, sessions_file: Path | None = None) -> str:
        """The script; `sessions_file`: where the open sessions are taken from and left (wrk
        -t1: one thread's sessions)."""
        t = self.traffic
        saved = json.dumps(str(sessions_file)) if sessions_file is not None else "nil"
        return f"""
local products = {_lua_list(self.products)}
local cum = {{{",".join(map(str, self.cumulative))}}}
local carts = {_lua_list(self.carts)}
local np, nc, total = #products, #carts, cum[#cum]
local pop, nsess, views, share = {t.population}, {t.sessions}, {t.views}, {self.cart_share}
local page = "/v1/offers?key={self.key}&surface=product_page&limit={OFFERS_LIMIT}&product_id="
local cart = "/v1/offers?key={self.key}&surface=cart&items="
local who = "&visitor_id={t.prefix}"
local r = math.random
local saved = {saved}
sessions = {{}}
function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
  local f = saved and io.open(saved, "r")
  if f then
    for line in f:lines() do sessions[#sessions + 1] = tonumber(line) end
    f:close()
  end
  for k = #sessions + 1, nsess do sessions[k] = r(0, pop - 1) end
end
if saved then
  function save_sessions(threads)
    local open = threads[1]:get("sessions")
    local f = io.open(saved, "w")
    for k = 1, nsess do f:write(open[k], "\\n") end
    f:close()
  end
end
local function product()
  local x, lo, hi = r() * total, 1, np
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cum[mid] < x then lo = mid + 1 else hi = mid end
  end
  return products[lo]
end
function request()
  local slot = r(nsess)
  local v = sessions[slot]
  if r() * views < 1 then sessions[slot] = r(0, pop - 1) end
  if nc > 0 and r() < share then
    return wrk.format("GET", cart .. carts[r(nc)] .. who .. v)
  end
  return wrk.format("GET", page .. product() .. who .. v)
end
"""

    def paths(self, n: int, seed: int = 7) -> tuple[str, ...]:
        """`n` requests of the same model, for a generator that replays a list (Locust)."""
        rng = random.Random(seed)
        sessions = wl.Sessions(self.traffic, rng)
        page = f"/v1/offers?key={self.key}&surface=product_page&limit={OFFERS_LIMIT}&product_id="
        cart = f"/v1/offers?key={self.key}&surface=cart&items="
        out = []
        for _ in range(n):
            visitor = sessions.next_visitor()
            if self.carts and rng.random() < self.cart_share:
                out.append(f"{cart}{rng.choice(self.carts)}&visitor_id={visitor}")
            else:
                pick = rng.choices(self.products, cum_weights=self.cumulative, k=1)[0]
                out.append(f"{page}{pick}&visitor_id={visitor}")
        return tuple(out)


class Driver:
    """Runs load against a URL: wrk with a generated Lua script, or Locust's fast client."""

    def __init__(self, cpu: str, connections: int, workdir: Path, force_locust: bool) -> None:
        self.cpu = cpu
        self.connections = connections
        self.workdir = workdir
        self.wrk = None if force_locust else shutil.which("wrk")
        self.name = self.wrk_version() if self.wrk else "Locust FastHttpUser (wrk not found)"

    def wrk_version(self) -> str:
        assert self.wrk is not None
        out = subprocess.run([self.wrk, "-v"], capture_output=True, text=True)
        first = (out.stdout or out.stderr).strip().splitlines()[0]
        return first.split("[")[0].strip()

    def run(self, url: str, plan: Plan, seconds: float, connections: int | None = None) -> Load:
        connections = connections or self.connections
        if self.wrk is None:
            return self._locust(url, plan, seconds, connections)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", dir=self.workdir, delete=False) as f:
            # Real traffic's sessions go on from the last run against this server.
            f.write(plan.lua(connections, self.workdir / ("sessions-" + re.sub(r"\W", "_", url))))
        try:
            command = ["taskset", "-c", self.cpu, self.wrk, "-t1", f"-c{connections}"]
            command += [f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", f.name, url]
            before = _children_cpu_s()
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            client_cpu_s = _children_cpu_s() - before
        finally:
            os.unlink(f.name)
        match = re.search(r"^WRKJSON (.*)$", out, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"wrk printed no summary:\n{out}")
        d = json.loads(match.group(1))
        return Load(
            requests=d["requests"],
            seconds=d["us"] / 1e6,
            p50_ms=d["p50"] / 1000,
            p90_ms=d["p90"] / 1000,
            p99_ms=d["p99"] / 1000,
            p999_ms=d["p999"] / 1000,
            max_ms=d["max"] / 1000,
            errors=d["errors"],
            bad_status=d["status"],
            accepted=d["accepted"],
            client_cpu_s=client_cpu_s,
        )

    def _locust(self, url: str, plan: Plan, seconds: float, connections: int) -> Load:
        """The fallback: Locust's FastHttpUser sending the same requests (locust_driver.py)."""
        spec = self.workdir / "locust_plan.json"
        if plan.traffic is not None:
            plan = replace(plan, paths=plan.traffic.paths(LOCUST_TRAFFIC_PATHS), traffic=None)
        spec.write_text(json.dumps(asdict(plan)))
        command = ["taskset", "-c", self.cpu, sys.executable, str(HERE / "locust_driver.py")]
        command += ["--host", url, "--plan", str(spec), "--users", str(connections)]
        command += ["--seconds", str(seconds)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        d = json.loads(out.strip().splitlines()[-1])
        return Load(**d)


# --- the stores under test ------------------------------------------------------------------------


def real_store_db(workdir: Path, dataset: Path) -> Path:
    """The full Online Retail import in a SQLite file, built once (about 40 s) and cached."""
    stat = dataset.stat()
    db = workdir / f"retail-v{REAL_CACHE_VERSION}-{stat.st_size}-{stat.st_mtime_ns}.db"
    if db.exists():
        return db
    from offer_service.storage.sqlite.store import SQLiteStore

    print(f"importing {dataset.name} into {db} (once)", file=sys.stderr, flush=True)
    building = db.with_suffix(".building.db")
    for leftover in workdir.glob(building.name + "*"):
        leftover.unlink()

    async def build() -> None:
        store = SQLiteStore(str(building))
        await store.open()
        try:
            await synthetic.import_real(store, dataset)
        finally:
            await store.close()

    asyncio.run(build())
    synthetic._checkpoint(building)
    building.replace(db)
    return db


def seeded_store_db(workdir: Path, dataset: Path, traffic: wl.Traffic) -> Path:
    """The real store with the history of every stateful visitor of `traffic` (workload.
    seed_history), built from `real_store_db` and cached for a day."""
    real = real_store_db(workdir, dataset)
    key = f"{traffic.population}-{traffic.stateful_every}-{traffic.prefix}"
    db = workdir / f"{real.stem}-seeded-v{SEEDED_CACHE_VERSION}-{key}.db"
    if db.exists() and time.time() - db.stat().st_mtime < SEEDED_MAX_AGE_S:
        return db
    from offer_service.storage.sqlite.store import SQLiteStore

    print(f"seeding visitor history into {db} (once a day)", file=sys.stderr, flush=True)
    building = db.with_suffix(".building.db")
    for leftover in workdir.glob(building.name + "*"):
        leftover.unlink()
    shutil.copyfile(real, building)

    async def seed() -> dict[str, int]:
        store = SQLiteStore(str(building))
        await store.open()
        try:
            return await seed_visitors(store, dataset, traffic)
        finally:
            await store.close()

    print(f"  {asyncio.run(seed())}", file=sys.stderr, flush=True)
    synthetic._checkpoint(building)
    building.replace(db)
    return db


async def seed_visitors(store: Any, dataset: Path, traffic: wl.Traffic) -> dict[str, int]:
    picker = wl.Picker(wl.from_dataset(dataset), random.Random(5))
    return await wl.seed_history(store, synthetic.KEYS.store_id, traffic, picker)


def real_traffic(dataset: Path, traffic: wl.Traffic, cart_share: float) -> RealTraffic:
    """The real-traffic requests of the bench store: every product of the data set's orders
    (whether or not it answers 4 offers), weighted by the baskets holding it."""
    from urllib.parse import quote

    workload = wl.from_dataset(dataset)
    cumulative, total = [], 0
    for weight in workload.weights:
        total += max(weight, 1)
        cumulative.append(total)
    picker = wl.Picker(workload, random.Random(3))
    carts = [",".join(quote(i, safe="") for i in picker.cart()) for _ in range(20_000)]
    return RealTraffic(
        key=synthetic.KEYS.publishable_key,
        products=tuple(quote(p, safe="") for p in workload.products),
        cumulative=tuple(cumulative),
        traffic=traffic,
        carts=tuple(carts) if cart_share else (),
        cart_share=cart_share,
    )


def fresh_copy(db: Path, run_dir: Path, name: str) -> Path:
    """A copy the run may write to, so every run starts from the same cached state."""
    target = run_dir / name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(db, target)
    return target


def read_into_page_cache(db: Path) -> None:
    """Read the file once, as a server that has answered for a while holds its hot pages in
    memory: a first read from disk measures the disk, not the catalog's size."""
    with db.open("rb") as f:
        while f.read(1 << 24):
            pass


def best_sellers(store_url: str, limit: int) -> list[str]:
    from offer_service.storage import open_store

    async def read() -> list[str]:
        store = open_store(store_url)
        await store.open()
        try:
            return [
                pid for pid, _ in await store.best_sellers(synthetic.KEYS.store_id, None, limit)
            ]
        finally:
            await store.close()

    return asyncio.run(read())


def offers_path(product: str, visitor: str) -> str:
    from urllib.parse import quote

    return (
        f"/v1/offers?key={synthetic.KEYS.publishable_key}&surface=product_page"
        f"&product_id={quote(product, safe='')}&visitor_id={visitor}&limit={OFFERS_LIMIT}"
    )


def cart_path(items: Sequence[str], visitor: str) -> str:
    from urllib.parse import quote

    joined = ",".join(quote(i, safe="") for i in items)
    return (
        f"/v1/offers?key={synthetic.KEYS.publishable_key}&surface=cart"
        f"&items={joined}&visitor_id={visitor}"
    )


@dataclass(slots=True)
class Warm:
    """A warmed store: paths that answer 4 offers, an answer's bytes and headers, tokens for
    events."""

    paths: list[str]
    products: list[str]
    visitors: list[str]
    answer: bytes
    headers: list[list[str]]
    tokens: list[str]


def warm_up(server: Server, candidates: list[str], want_products: int, seed: int = 1) -> Warm:
    """Find visitors outside the holdout and products answering 4 offers, and fill the cache."""
    from offer_service.web.models import OffersResponse

    rng = random.Random(seed)
    visitors = []
    for i in range(VISITORS * 2):
        visitor = f"bench-v-{i}"
        status, body = get(server.url + offers_path(candidates[0], visitor))
        if status == 200 and not OffersResponse.model_validate_json(body).holdout:
            visitors.append(visitor)
        if len(visitors) == VISITORS:
            break
    products: list[str] = []
    answers: list[bytes] = []
    tokens: list[str] = []
    # Every answer of these paths carries the same headers (a request id of its own aside).
    headers: list[list[str]] = []
    for product in candidates:
        status, body, sent = get_with_headers(server.url + offers_path(product, visitors[0]))
        if status != 200:
            continue
        parsed = OffersResponse.model_validate_json(body)
        if len(parsed.offers) == OFFERS_LIMIT:
            products.append(product)
            answers.append(body)
            headers = sent
            tokens.extend(o.token for o in parsed.offers)
        if len(products) == want_products:
            break
    if not products:
        raise RuntimeError(f"no product of {server.name} answers {OFFERS_LIMIT} offers")
    paths = [offers_path(rng.choice(products), v) for v in visitors for _ in range(5)]
    rng.shuffle(paths)
    answers.sort(key=len)
    return Warm(paths, products, visitors, answers[len(answers) // 2], headers, tokens)


# --- the sections --------------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    driver: Driver
    run_dir: Path
    traffic: wl.Traffic
    real: RealTraffic
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    servers: list[Server] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # CPU busy share seen just before each measured run (our servers idle): other processes.
    background: list[float] = field(default_factory=list)

    def quiet(self) -> None:
        """Wait (up to --quiet-wait s) until other processes leave the machine nearly idle: a
        shared machine's other work lands on the pinned cores too and skews a run."""
        deadline = time.monotonic() + self.args.quiet_wait
        busy = cpu_busy()
        while busy > self.args.quiet_busy and time.monotonic() < deadline:
            busy = cpu_busy(2.0)
        self.background.append(busy)

    def server(self, name: str, app: str, env: dict[str, str], workers: int = 1) -> Server:
        s = Server(name, app, env, self.args.server_cpu, self.run_dir, workers)
        self.servers.append(s)
        return s

    def stop(self, server: Server) -> None:
        server.stop()
        self.servers.remove(server)

    def interleave(self, runs: dict[str, Callable[[], Load]], rounds: int) -> dict[str, list[Load]]:
        """Each round runs every measurement once, alternating the order round by round."""
        names = list(runs)
        out: dict[str, list[Load]] = {n: [] for n in names}
        for r in range(rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                load = runs[name]()
                out[name].append(load)
                self.report(r, name, load)
        return out

    def report(self, r: int, name: str, load: Load) -> None:
        print(
            f"    round {r + 1} {name}: {load.rps:,.0f} req/s, p50 {load.p50_ms:.2f} ms,"
            f" p99 {load.p99_ms:.2f} ms, {load.cpu_us:.0f} us CPU/request,"
            f" errors {load.errors + load.bad_status}",
            file=sys.stderr,
            flush=True,
        )

    def closed(
        self, server: Server, plan: Plan, connections: int | None = None, *, short: bool = False
    ) -> Callable[[], Load]:
        """Warm-up, then one measured run (`short`: the paired sections' brief ones)."""
        args = self.args
        warmup, seconds = (
            (args.short_warmup, args.short_duration) if short else (args.warmup, args.duration)
        )

        def run() -> Load:
            self.quiet()
            self.driver.run(server.url, plan, warmup, connections)
            return self.measure(server, plan, seconds, connections)

        return run

    def measure(
        self, server: Server, plan: Plan, seconds: float, connections: int | None = None
    ) -> Load:
        """One measured run, with the server's CPU time over it."""
        cpu0 = server.cpu_seconds()
        load = self.driver.run(server.url, plan, seconds, connections)
        load.server_cpu_s = server.cpu_seconds() - cpu0
        return load

    def add(self, row: Row, loads: dict[str, list[Load]] | None = None) -> None:
        self.rows.append(row)
        if loads:
            self.raw[row.key] = {
                k: [asdict(v) | {"rps": v.rps, "cpu_us": v.cpu_us} for v in ls]
                for k, ls in loads.items()
            }


def warm_real(b: Bench, svc: Server, plan: Plan) -> None:
    """Real traffic for --real-warmup s before the first measured run, as a process that has
    served a while: each product's offer list prepared once, the learner's first load done."""
    print(f"warming {svc.name} with real traffic for {b.args.real_warmup:g} s", file=sys.stderr)
    load = b.driver.run(svc.url, plan, b.args.real_warmup)
    b.notes.append(
        f"{svc.name} warmed with {load.requests:,} real-traffic requests "
        f"({b.args.real_warmup:g} s, p99 {load.p99_ms:,.0f} ms)"
    )


# The two workloads every throughput and latency comparison runs: real traffic's shape and the
# best case (a warm cache, 1,000 visitors asking about 200 best sellers again and again).
WORKLOADS = {"real": "real traffic", "best": "best case, warm cache"}


def run_offers_and_latency(b: Bench, sqlite_db: Path) -> tuple[Server, Warm, dict[str, Plan]]:
    """Both workloads against one bare endpoint, each on a service of its own (the same store,
    two copies), all interleaved round by round. Returns the real-traffic service, the warm
    paths and the plan of each workload."""
    args = b.args
    best_db = fresh_copy(sqlite_db, b.run_dir, "retail-best.db")
    svc = b.server(
        "service-sqlite",
        SERVICE_APP,
        {"OFFER_STORE_URL": f"sqlite:///{sqlite_db}"},
        workers=args.workers,
    )
    svc_best = b.server(
        "service-sqlite-best",
        SERVICE_APP,
        {"OFFER_STORE_URL": f"sqlite:///{best_db}"},
        workers=args.workers,
    )
    warm = warm_up(svc_best, best_sellers(f"sqlite:///{best_db}", HOT_PRODUCTS * 2), HOT_PRODUCTS)
    payload = b.run_dir / "bare_payload.json"
    payload.write_bytes(warm.answer)
    # The same response: the service's headers too (a fresh request id on each, as it gives).
    headers = b.run_dir / "bare_headers.json"
    headers.write_bytes(json.dumps(warm.headers).encode())
    b.raw["answer_bytes"] = len(warm.answer)
    traffic = b.traffic
    b.notes.append(
        f"bare answer: product_page, {OFFERS_LIMIT} offers, {len(warm.answer):,} bytes. "
        f"Real traffic: sessions of visitors out of {traffic.population:,}, "
        f"{traffic.sessions:,} open, {traffic.views:g} page views each on average; 1 visitor in "
        f"{traffic.stateful_every} with history; products by popularity over all "
        f"{len(b.real.products):,} ordered products; carts {b.real.cart_share:.0%}. "
        f"Best case: {len(warm.products)} products x {len(warm.visitors)} visitors"
        + (
            f"; services with {args.workers} workers on CPU {args.server_cpu}"
            if args.workers > 1
            else ""
        )
    )
    bare = b.server("bare", BARE_APP, {"BARE_PAYLOAD": str(payload), "BARE_HEADERS": str(headers)})
    plans = {"real": Plan(traffic=b.real), "best": Plan(tuple(warm.paths))}
    services = {"real": svc, "best": svc_best}
    warm_real(b, svc, plans["real"])
    if "offers" in args.only:
        # For the record: the same body without the service's headers (what the ratio would
        # be if the headers' own cost were counted as the service's work).
        body_only = b.server("bare-body", BARE_APP, {"BARE_PAYLOAD": str(payload)})
        print("offers: throughput, service vs bare, both workloads", file=sys.stderr)
        loads = b.interleave(
            {
                "bare": b.closed(bare, plans["best"], short=True),
                "service": b.closed(svc, plans["real"], short=True),
                "service-best": b.closed(svc_best, plans["best"], short=True),
                "bare-body": b.closed(body_only, plans["best"], short=True),
            },
            args.offers_rounds,
        )
        b.stop(body_only)
        med = statistics.median
        for name, label in WORKLOADS.items():
            run = "service" if name == "real" else "service-best"
            key = "offers" if name == "real" else "offers_best"
            mine = loads[run]
            generator_us = med(x.client_cpu_s * 1e6 / max(x.requests, 1) for x in mine)
            per_worker = (
                f"; {med(s.rps for s in mine) / args.workers:,.0f} req/s per worker"
                if args.workers > 1
                else ""
            )
            b.add(
                Row(
                    key,
                    f"offers throughput / bare, {label}",
                    [s.rps / a.rps for s, a in zip(mine, loads["bare"], strict=True)],
                    note=f"service {med(s.rps for s in mine):,.0f} req/s, "
                    f"bare {med(a.rps for a in loads['bare']):,.0f} req/s, "
                    f"{args.connections} connections; "
                    f"errors {sum(x.errors + x.bad_status for x in mine)}{per_worker}; "
                    f"load generator's CPU {med(x.client_cpu_s / x.seconds for x in mine):.0%}"
                    f" of a core ({generator_us:.0f} us per request)",
                ),
                {"bare": loads["bare"], run: mine},
            )
            b.add(
                Row(
                    key + "_cpu",
                    "  same, by server CPU time per request (bare / service)",
                    [a.cpu_us / s.cpu_us for s, a in zip(mine, loads["bare"], strict=True)],
                    note=f"service {med(s.cpu_us for s in mine):,.0f} us, "
                    f"bare {med(a.cpu_us for a in loads['bare']):,.0f} us of CPU per request",
                )
            )
        pairs = list(zip(loads["service-best"], loads["bare-body"], loads["bare"], strict=True))
        b.add(
            Row(
                "offers_body_only",
                "  best case vs a bare endpoint sending the body alone",
                [s.rps / body.rps for s, body, _ in pairs],
                note=f"bare-body {med(x.rps for x in loads['bare-body']):,.0f} "
                f"req/s; the service's {len(warm.headers)} headers cost the bare endpoint "
                f"{med(a.cpu_us - body.cpu_us for _, body, a in pairs):.0f} us "
                "of CPU per request (no target: for the record)",
            )
        )
        if args.profile:
            profile(b, svc, plans["real"], "offers-real")
            profile(b, svc_best, plans["best"])
    if "latency" in args.only:
        run_latency(b, bare, services, plans)
    b.stop(bare)
    b.stop(svc_best)
    return svc, warm, plans


def run_latency(
    b: Bench, bare: Server, services: dict[str, Server], plans: dict[str, Plan]
) -> None:
    """p99 at half the bare endpoint's maximum rate, of the bare endpoint and of the service
    under each workload. The maximum is measured again at the start of each round: this
    machine's speed drifts over minutes, and a rate taken from an earlier, faster spell would
    ask more than half of what the bare endpoint can do now."""
    args = b.args
    print("latency: p99 at half the bare maximum (measured first in each round)", file=sys.stderr)
    loads: dict[str, list[Load]] = {"bare max": [], "bare": [], "real": [], "best": []}
    rates: list[float] = []
    for r in range(args.latency_rounds):
        top = b.closed(bare, plans["best"], short=True)()
        b.report(r, "bare max", top)
        loads["bare max"].append(top)
        rates.append(top.rps / 2)
        runs = {
            "bare": (bare, plans["best"]),
            "real": (services["real"], plans["real"]),
            "best": (services["best"], plans["best"]),
        }
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]
        for name in order:
            server, plan = runs[name]
            load = b.closed(server, replace(plan, rate=rates[-1]), short=True)()
            b.report(r, name, load)
            loads[name].append(load)
    med = statistics.median
    for name, label in WORKLOADS.items():
        b.add(
            Row(
                "latency" if name == "real" else "latency_best",
                f"p99 at half bare max / bare p99, {label}",
                [s.p99_ms / a.p99_ms for s, a in zip(loads[name], loads["bare"], strict=True)],
                note=f"service p99 {med(s.p99_ms for s in loads[name]):.2f} ms "
                f"(p99.9 {med(s.p999_ms for s in loads[name]):.2f}, max "
                f"{max(s.max_ms for s in loads[name]):.1f}) at "
                f"{med(s.rps for s in loads[name]):,.0f} req/s; bare p99 "
                f"{med(a.p99_ms for a in loads['bare']):.2f} ms at "
                f"{med(a.rps for a in loads['bare']):,.0f} req/s; {len(rates)} rounds, each at "
                f"half its own bare maximum ({min(rates):,.0f}-{max(rates):,.0f} req/s)",
            ),
            {"bare": loads["bare"], "bare max": loads["bare max"], name: loads[name]},
        )
    if args.profile:
        profile(b, services["real"], replace(plans["real"], rate=med(rates)), "latency-real")


RAW_TO = ("-f", "raw", "-o")


def profile(b: Bench, svc: Server, script: Plan, name: str = "offers") -> None:
    """py-spy on the service under a load (the offers one unless named): where its time goes."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        b.notes.append("profile: py-spy not installed (pip install py-spy)")
        return
    out = b.run_dir / f"profile-{name}.txt"
    seconds = max(5, round(b.args.duration))
    print(f"profile: py-spy record for {seconds} s under the {name} load", file=sys.stderr)
    spy_proc = subprocess.Popen(
        [spy, "record", "-p", str(svc.pid), "-d", str(seconds), "-r", "250", *RAW_TO, str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    load = b.measure(svc, script, seconds + 1)
    spy_proc.wait()
    if not out.exists():
        b.notes.append("profile: py-spy wrote nothing (ptrace not permitted? try as root)")
        return
    b.raw.setdefault("profiles", {})[name] = {
        "file": str(out),
        "summary": summarise_profile(out, load.cpu_us, load.rps),
    }
    b.notes.append(f"profile ({name}): {out} (collapsed stacks, for flamegraph.pl or speedscope)")


# A thread pool's worker waiting for work: py-spy does not always see that it sleeps.
IDLE_FRAMES = frozenset({"_worker (concurrent/futures/thread.py)"})


def summarise_profile(path: Path, cpu_us: float, rps: float, top: int = 25) -> str:
    """Self and inclusive time per function, as shares of all samples and as microseconds of
    CPU per request (the share of the server's measured CPU time per request)."""
    self_time: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        if frames[-1] in IDLE_FRAMES:
            idle += n  # py-spy samples these waiting threads as if they ran
            continue
        total += n
        self_time[frames[-1]] = self_time.get(frames[-1], 0) + n
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n
    if not total:
        return "no samples"

    def table(counts: dict[str, int], title: str) -> list[str]:
        lines = [
            f"{title} (share of samples; us of CPU per request, of {cpu_us:,.0f} us measured at "
            f"{rps:,.0f} req/s under py-spy):"
        ]
        for name, n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]:
            share = n / total
            lines.append(f"  {100 * share:5.1f}%  {share * cpu_us:7.1f} us  {name}")
        return lines

    interesting = {
        k: v
        for k, v in inclusive.items()
        if any(m in k for m in ("offer_service/", "starlette/", "pydantic/", "urllib/"))
    }
    dropped = f"({idle:,} samples of idle pool threads left out)"
    return "\n".join([*table(self_time, "self"), "", *table(interesting, "inclusive"), dropped])


# A cache for the benchmark: nothing to persist.
REDIS_FLAGS = ("--save", "", "--appendonly", "no")


def run_redis(
    b: Bench, sqlite_svc: Server, sqlite_warm: Warm, plans: dict[str, Plan], dataset: Path
) -> None:
    reason = redis_missing()
    if reason:
        b.add(Row("redis", "offers on Redis / SQLite", skipped=reason))
        return
    port = free_port()
    redis_dir = b.run_dir / "redis"
    redis_dir.mkdir(exist_ok=True)
    command = ["taskset", "-c", b.args.client_cpu, "redis-server", *REDIS_FLAGS]
    command += ["--dir", str(redis_dir), "--port", str(port)]
    redis = subprocess.Popen(
        command,
        stdout=(b.run_dir / "redis.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        _wait_port(port)
        print(
            "redis: importing the data set and the visitors' history through the Store API",
            file=sys.stderr,
            flush=True,
        )
        from offer_service.storage import open_store

        async def load() -> None:
            store = open_store(url)
            await store.open()
            try:
                await synthetic.import_real(store, dataset)
                await seed_visitors(store, dataset, b.traffic)
            finally:
                await store.close()

        asyncio.run(load())
        svc = b.server("service-redis", SERVICE_APP, {"OFFER_STORE_URL": url})
        warm = warm_up(svc, sqlite_warm.products, HOT_PRODUCTS)
        warm_real(b, svc, plans["real"])
        print("redis: throughput, Redis vs SQLite backend, both workloads", file=sys.stderr)
        loads = b.interleave(
            {
                "sqlite": b.closed(sqlite_svc, plans["real"]),
                "redis": b.closed(svc, plans["real"]),
                "sqlite-best": b.closed(sqlite_svc, plans["best"]),
                "redis-best": b.closed(svc, plans["best"]),
            },
            b.args.rounds,
        )
        med = statistics.median
        for name, label in WORKLOADS.items():
            tail = "" if name == "real" else "-best"
            mine, base = loads["redis" + tail], loads["sqlite" + tail]
            key = "redis" if name == "real" else "redis_best"
            b.add(
                Row(
                    key,
                    f"offers on Redis / SQLite, {label}",
                    [r.rps / s.rps for r, s in zip(mine, base, strict=True)],
                    note=f"redis {med(r.rps for r in mine):,.0f} req/s, sqlite "
                    f"{med(s.rps for s in base):,.0f} req/s; redis-server on CPU "
                    f"{b.args.client_cpu} with the load generator; "
                    f"{len(warm.products)} best-case products answer {OFFERS_LIMIT} offers on both",
                ),
                {"sqlite" + tail: base, "redis" + tail: mine},
            )
            b.add(
                Row(
                    key + "_cpu",
                    "  same, by service CPU time per request (SQLite / Redis)",
                    [s.cpu_us / r.cpu_us for r, s in zip(mine, base, strict=True)],
                    note=f"redis {med(r.cpu_us for r in mine):,.0f} us, "
                    f"sqlite {med(s.cpu_us for s in base):,.0f} us of "
                    "service CPU per request (redis-server's own CPU not counted)",
                )
            )
        if b.args.profile:
            profile(b, svc, plans["real"], "redis-offers")
        b.stop(svc)
    finally:
        redis.terminate()
        redis.wait(timeout=15)


def redis_missing() -> str:
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server)"
    return ""


def _wait_port(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port}") from None
            time.sleep(0.05)


# Every event stored, as the SQLite event log holds them (a row per write, a JSON array each).
EVENTS_STORED = "SELECT COALESCE(SUM(json_array_length(events)), 0) FROM event_log"


def count_events(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute(EVENTS_STORED).fetchone()[0])
    finally:
        conn.close()


def run_events(b: Bench, svc: Server, warm: Warm, db: Path) -> None:
    print("events: batches of 20 impressions, committed before the 202", file=sys.stderr)
    rates, durable = [], []
    loads: list[Load] = []
    for r in range(b.args.rounds):
        script = Plan(events_key=synthetic.KEYS.publishable_key, tokens=tuple(warm.tokens[:200]))
        b.quiet()
        before = count_events(db)
        load = b.measure(svc, script, b.args.duration)
        stored = count_events(db) - before
        accepted = load.accepted * EVENTS_PER_BATCH
        rates.append(accepted / load.seconds)
        durable.append(stored >= accepted > 0)
        loads.append(load)
        print(
            f"    round {r + 1}: {accepted / load.seconds:,.0f} events/s "
            f"({load.rps:,.0f} batches/s, p99 {load.p99_ms:.1f} ms), {stored:,} rows stored for "
            f"{accepted:,} accepted",
            file=sys.stderr,
            flush=True,
        )
    b.add(
        Row(
            "events",
            f"events ingested per second, one core, {EVENTS_PER_BATCH} per batch",
            rates,
            unit="/s",
            note=f"every acknowledged event found stored: {'yes' if all(durable) else 'NO'} "
            "(rows counted after each run; a batch is committed before its 202, SQLite WAL with "
            "synchronous=NORMAL: survives a process crash, an OS crash can lose the last commits)",
        ),
        {"service": loads},
    )
    b.add(
        Row(
            "events_cpu",
            "  same, per second of service CPU time",
            [x.accepted * EVENTS_PER_BATCH / x.server_cpu_s for x in loads if x.server_cpu_s],
            unit="/s",
            note="events acknowledged / CPU seconds the service used (its writer thread included)",
        )
    )
    if b.args.profile:
        tokens = tuple(warm.tokens[:200])
        plan = Plan(events_key=synthetic.KEYS.publishable_key, tokens=tokens)
        profile(b, svc, plan, "events")


def _count(n: int) -> str:
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= size and n % size == 0:
            return f"{n // size}{suffix}"
    return f"{n:,}"


def run_flat(b: Bench, dataset: Path) -> None:
    args = b.args
    cached = synthetic.cached_sqlite
    small_db, small_meta = cached(args.workdir, dataset, args.small_products, args.small_lines)
    big_db, big_meta = cached(args.workdir, dataset, args.big_products, args.big_lines)
    small_db = fresh_copy(small_db, b.run_dir, "small.db")
    servers = {
        "small": b.server(
            "service-small", SERVICE_APP, {"OFFER_STORE_URL": f"sqlite:///{small_db}"}
        ),
        "big": b.server("service-big", SERVICE_APP, {"OFFER_STORE_URL": f"sqlite:///{big_db}"}),
    }
    rss_start = {k: s.rss_mb() for k, s in servers.items()}
    for db in (small_db, big_db):
        read_into_page_cache(db)
    # The same requests to both: products of the 1k store, which is the 1M store's first shard
    # (same ids, same co-purchases), so the two answer with the same work and differ only in
    # the size of everything around it. Best sellers of the 1M store would come from different
    # shards, and a cart of two of them loads twice the candidates of a one-shard cart.
    candidates = best_sellers(f"sqlite:///{small_db}", 20 * HOT_PRODUCTS)
    warm = {name: warm_up(servers[name], candidates, 2 * HOT_PRODUCTS) for name in servers}
    label = {
        "small": f"{small_meta['products']:,} products / {small_meta['order_lines']:,} lines",
        "big": f"{big_meta['products']:,} products / {big_meta['order_lines']:,} lines",
    }
    sizes = f"{_count(args.big_products)} / {_count(args.small_products)}"
    print(f"flat: warm product pages at {args.flat_rate:g} req/s", file=sys.stderr)
    runs = {
        n: b.closed(servers[n], Plan(tuple(warm[n].paths), rate=args.flat_rate), 16)
        for n in servers
    }
    loads = b.interleave(runs, args.rounds)
    med = statistics.median
    b.add(
        Row(
            "flat_warm",
            f"flat p99, warm product pages: {sizes} products",
            [g.p99_ms / s.p99_ms for g, s in zip(loads["big"], loads["small"], strict=True)],
            note=f"p99 {med(x.p99_ms for x in loads['big']):.2f} ms ({label['big']}) vs "
            f"{med(x.p99_ms for x in loads['small']):.2f} ms ({label['small']}) "
            f"at {args.flat_rate:g} req/s",
        ),
        loads,
    )

    print(f"flat: cold carts (new anchor sets) at {args.flat_cold_rate:g} req/s", file=sys.stderr)
    # Both stores get the same sequence of carts: the same random source, the same products.
    rngs = {n: random.Random(11) for n in servers}
    used: dict[str, set[tuple[str, ...]]] = {n: set() for n in servers}

    def fresh_pair(name: str) -> list[str]:
        """Two anchors never asked for together before: a pair seen before is a cache hit."""
        while True:
            pair = tuple(sorted(rngs[name].sample(warm["small"].products, 2)))
            if pair not in used[name]:
                used[name].add(pair)
                return list(pair)

    def cold(name: str) -> Callable[[], Load]:
        def run() -> Load:
            paths = tuple(
                cart_path(fresh_pair(name), rngs[name].choice(warm["small"].visitors))
                for _ in range(int(args.flat_cold_rate * (args.flat_cold_duration + 2) * 1.5))
            )
            plan = Plan(paths, rate=args.flat_cold_rate)
            b.quiet()
            return b.measure(servers[name], plan, args.flat_cold_duration, connections=8)

        return run

    loads = b.interleave({n: cold(n) for n in servers}, args.rounds)
    b.add(
        Row(
            "flat_cold",
            f"flat p99, cold carts (all cache misses): {sizes}",
            [g.p99_ms / s.p99_ms for g, s in zip(loads["big"], loads["small"], strict=True)],
            note=f"p99 {med(x.p99_ms for x in loads['big']):.2f} ms vs "
            f"{med(x.p99_ms for x in loads['small']):.2f} ms at {args.flat_cold_rate:g} req/s, "
            f"{args.flat_cold_duration:g} s per run",
        ),
        loads,
    )
    if "memory" in args.only:
        rss, mapped, own = (
            {k: s.rss_mb(field) for k, s in servers.items()}
            for field in ("VmRSS", "RssFile", "RssAnon")
        )
        per: float = (args.big_products - args.small_products) / 100_000

        def per_100k(mb: dict[str, float]) -> float:
            return (mb["big"] - mb["small"]) / per

        big, small = _count(args.big_products), _count(args.small_products)
        file_mb = {
            "small": small_db.stat().st_size / 2**20,
            "big": big_db.stat().st_size / 2**20,
        }
        b.add(
            Row(
                "memory",
                "service resident size per 100k products",
                [per_100k(rss)],
                unit="MB",
                note=f"RSS after the flat runs {rss['big']:,.0f} MB ({big}) vs "
                f"{rss['small']:,.0f} MB ({small}); at start {rss_start['big']:,.0f} vs "
                f"{rss_start['small']:,.0f} MB; of the RSS after, file pages mapped (SQLite's "
                f"read map, the OS's file cache) {mapped['big']:,.0f} vs {mapped['small']:,.0f} "
                "MB. The catalog lives in the store: SQLite file "
                f"{per_100k(file_mb):,.0f} MB per 100k products "
                f"(with its {big_meta['order_lines']:,} order lines and pair counts)",
            )
        )
        b.add(
            Row(
                "memory_own",
                "  same, the process's own memory (RssAnon)",
                [per_100k(own)],
                unit="MB",
                note=f"{own['big']:,.0f} MB ({big}) vs {own['small']:,.0f} MB ({small}): the "
                "resident size without the file pages SQLite maps, which the OS can reclaim",
            )
        )
    for s in list(servers.values()):
        b.stop(s)


# --- main ---------------------------------------------------------------------------------------


def machine(driver: Driver, args: argparse.Namespace) -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = ", ".join(
        f"{p} {importlib.metadata.version(p)}"
        for p in ("uvicorn", "starlette", "orjson", "pydantic")
    )
    flags = " ".join(UVICORN_FLAGS)
    return (
        f"{os.cpu_count()} x {model}, Linux {platform.release()}, "
        f"Python {platform.python_version()}; {versions}\n"
        f"servers on CPU {args.server_cpu}: the service as `offer-service serve` starts it, "
        f"the bare endpoint on uvicorn {flags}"
        + (f" (the offers services: {args.workers} workers)" if args.workers > 1 else "")
        + "; "
        f"load: {driver.name} on CPU {args.client_cpu}, -t1 -c{args.connections}; "
        f"offers and latency: {args.offers_rounds} and {args.latency_rounds} rounds interleaved, "
        f"{args.short_duration:g} s per run after {args.short_warmup:g} s warm-up; "
        f"other sections: {args.rounds} rounds, {args.duration:g} s per run after "
        f"{args.warmup:g} s warm-up"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated: {','.join(SECTIONS)}"
    )
    p.add_argument(
        "--rounds", type=int, default=5, help="rounds of the redis, events and flat sections"
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each run")
    # The service against the bare endpoint: many short rounds rather than a few long ones.
    # This machine's speed moves by a third from one second to the next (2-s windows, both
    # servers alternating: the bare endpoint 78-150 us of CPU per request, the ratio 0.55-1.15
    # around a median of 0.72), so a run pairs with the other server's only moments apart and
    # the median rests on many pairs.
    p.add_argument(
        "--offers-rounds", type=int, default=15, help="rounds of the offers section (default 15)"
    )
    p.add_argument(
        "--latency-rounds",
        type=int,
        default=12,
        help="rounds of the latency section (default 12), each measuring the bare maximum first",
    )
    p.add_argument(
        "--short-duration",
        type=float,
        default=4.0,
        help="seconds per measured run of the offers and latency sections (default 4)",
    )
    p.add_argument(
        "--short-warmup",
        type=float,
        default=1.0,
        help="seconds of load before each run of the offers and latency sections (default 1)",
    )
    p.add_argument("--connections", type=int, default=50)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes of the offers and latency sections' services (started as "
        "`offer-service serve --workers N`, pinned to --server-cpu: give it as many cores)",
    )
    # Real traffic's shape, one option per field of workload.Traffic (its defaults).
    traffic = wl.Traffic()
    for name, kind, meaning in (
        ("population", int, "distinct visitors"),
        ("sessions", int, "sessions open at once"),
        ("views", float, "mean page views per session"),
        ("stateful_every", int, "every n-th visitor has a history seeded in the store"),
    ):
        default = getattr(traffic, name)
        shown = f"{default:,}" if isinstance(default, int) else f"{default:g}"
        p.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=default,
            help=f"real traffic: {meaning} (default {shown})",
        )
    p.add_argument(
        "--real-warmup",
        type=float,
        default=30.0,
        help="seconds of real traffic a service gets before its first measured run (default 30)",
    )
    p.add_argument(
        "--cart-share",
        type=float,
        default=0.0,
        help="real traffic: share of requests that are carts of 1-3 items of a real basket "
        "(default 0: see load_tests/README.md)",
    )
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--client-cpu", default="1")
    p.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "offer_bench")
    p.add_argument("--flat-rate", type=float, default=400.0, help="req/s of warm product pages")
    p.add_argument("--flat-cold-rate", type=float, default=50.0, help="req/s of cold carts")
    p.add_argument(
        "--flat-cold-duration",
        type=float,
        default=30.0,
        help="seconds per cold-cart run: at 50 req/s, the p99 of 30 s rests on its 15 slowest "
        "answers (of 10 s, on 5)",
    )
    p.add_argument("--big-products", type=int, default=1_000_000)
    p.add_argument("--big-lines", type=int, default=5_000_000)
    p.add_argument("--small-products", type=int, default=1_000)
    p.add_argument("--small-lines", type=int, default=5_000)
    p.add_argument(
        "--quiet-busy",
        type=float,
        default=0.15,
        help="before each run, wait until at most this share of all CPUs is busy (default 0.15)",
    )
    p.add_argument("--quiet-wait", type=float, default=120.0, help="wait at most this long (s)")
    p.add_argument("--profile", action="store_true", help="py-spy the service under offers load")
    p.add_argument("--locust", action="store_true", help="drive with Locust even if wrk exists")
    p.add_argument("--json", type=Path, help="also write every measurement here")
    args = p.parse_args(argv)
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = args.only - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if min(args.rounds, args.offers_rounds, args.latency_rounds) < 1:
        p.error("every --...rounds option must be at least 1")
    return args


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # through main's `finally`: the servers are stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    if not args.dataset.exists():
        raise SystemExit(f"the data set is not at {args.dataset} (--dataset)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=args.workdir))
    driver = Driver(args.client_cpu, args.connections, run_dir, args.locust)
    traffic = wl.Traffic(
        population=args.population,
        sessions=args.sessions,
        views=args.views,
        stateful_every=args.stateful_every,
    )
    real = real_traffic(args.dataset, traffic, args.cart_share)
    b = Bench(args, driver, run_dir, traffic, real)
    started = time.monotonic()
    try:
        needs_service = args.only & {"offers", "latency", "redis", "events"}
        if needs_service:
            seeded = seeded_store_db(args.workdir, args.dataset, b.traffic)
            db = fresh_copy(seeded, run_dir, "retail.db")
            svc, warm, plans = run_offers_and_latency(b, db)
            if "redis" in args.only:
                run_redis(b, svc, warm, plans, args.dataset)
            if "events" in args.only:
                run_events(b, svc, warm, db)
            b.stop(svc)
        if args.only & {"flat", "memory"}:
            run_flat(b, args.dataset)
    finally:
        for s in list(b.servers):
            s.stop()
    header = machine(driver, args)
    if b.background:
        noisy = sum(1 for x in b.background if x > args.quiet_busy)
        header += (
            f"\nother processes before each run: median {statistics.median(b.background):.0%}, "
            f"max {max(b.background):.0%} of all CPUs busy"
            + (f"; {noisy} run(s) started on a busy machine: treat as noisy" if noisy else "")
        )
    if b.notes:
        header += "\n" + "\n".join(b.notes)
    print()
    print(render(b.rows, header))
    for name, found in b.raw.get("profiles", {}).items():
        print(f"\nprofile of the {name} load:")
        print(found["summary"])
    print(f"\n({time.monotonic() - started:.0f} s; logs and scripts in {run_dir})")
    if args.json:
        args.json.write_text(
            json.dumps({"machine": header, "rows": [asdict(r) for r in b.rows], **b.raw}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
