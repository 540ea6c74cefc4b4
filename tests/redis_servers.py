"""Real `redis-server` processes for the tests: one server, and a 3-master Redis Cluster.

Servers listen on free loopback ports with AOF on in a temporary directory, so a test can kill
one with SIGKILL and start it again on the same data. They use `appendfsync everysec`, the weaker
of the two settings the documentation allows: the one that can lose acknowledged writes. When
`redis-server` is missing it is installed with apt (as `scripts/test` does); tests skip only
when it can be neither found nor installed. The shared instances (for the storage contract
suite) start on first use and stop when the test process exits.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from offer_service.storage.protocols import Store
from offer_service.storage.redis.store import RedisStore

# The suite runs on a small, busy machine (two cores shared by service processes, Redis and
# the tests): a 100 ms read timeout meant for production would make it flaky. Tests about
# timeouts and outages use the defaults on purpose; a killed server fails fast either way.
RELAXED = (
    "?read_timeout_ms=3000&connect_timeout_ms=3000&accept_timeout_ms=5000&events_timeout_ms=5000"
)

_install_tried = False


def redis_binaries() -> tuple[str, str]:
    """Paths of redis-server and redis-cli, installing them with apt when missing."""
    global _install_tried
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if (server is None or cli is None) and not _install_tried:
        _install_tried = True
        if os.geteuid() == 0 and shutil.which("apt-get"):
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, timeout=300)
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", "redis-server"],
                check=False,
                env=env,
                timeout=600,
            )
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        pytest.skip("redis-server is not installed and could not be installed")
    return server, cli


def bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class RedisServer:
    """One redis-server process; `kill` and `start` again keep its port and its AOF."""

    def __init__(self, directory: Path, *, port: int | None = None, cluster_port: int = 0):
        self.directory = directory
        self.port = port or free_port()
        self.cluster_port = cluster_port
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        server, _ = redis_binaries()
        args = [
            server,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--dir",
            str(self.directory),
            "--logfile",
            "redis.log",
        ]
        if self.cluster_port:
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
                str(self.cluster_port),
                "--cluster-node-timeout",
                "5000",
            ]
        return args

    def start(self, timeout_s: float = 20) -> None:
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited early:\n{self.log()}")
            if self.cli("PING", check=False).strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer:\n{self.log()}")

    def cli(self, *args: str, check: bool = True) -> str:
        _, cli = redis_binaries()
        done = subprocess.run(
            [cli, "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"redis-cli {' '.join(args)}: {done.stderr}")
        return done.stdout

    def log(self) -> str:
        try:
            return (self.directory / "redis.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    @property
    def aof_directory(self) -> Path:
        return self.directory / "appendonlydir"

    def rewrite_aof(self, timeout_s: float = 20) -> None:
        """Rewrite the append-only file and wait until it is done: everything written so far is
        then in the AOF's files, whatever `appendfsync` postponed."""
        self.cli("BGREWRITEAOF")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = self.cli("INFO", "persistence")
            if "aof_rewrite_in_progress:0" in info and "aof_rewrite_scheduled:0" in info:
                return
            time.sleep(0.05)
        raise RuntimeError("the AOF rewrite did not finish")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync (the AOF keeps what Redis had written)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # A paused server (SIGSTOP, to hang it) would leave SIGTERM pending until resumed.
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None


def running_redis(directory: Path) -> Iterator[RedisServer]:
    """For a fixture: `yield from running_redis(tmp_path / "redis")`, a server of the test's own
    (one it may stop, kill or pause), stopped after it."""
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class RedisClusterServers:
    """Three masters, no replicas, created with `redis-cli --cluster create`."""

    def __init__(self, directory: Path) -> None:
        self.nodes: list[RedisServer] = []
        for i in range(3):
            port, bus = self._port_pair()
            self.nodes.append(RedisServer(directory / f"node{i}", port=port, cluster_port=bus))

    @staticmethod
    def _port_pair() -> tuple[int, int]:
        for _ in range(100):
            port, bus = free_port(), free_port()
            if port != bus and bindable(port) and bindable(bus):
                return port, bus
        raise RuntimeError("no free ports for a cluster node")

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout_s: float = 60) -> None:
        for node in self.nodes:
            node.start()
        self.nodes[0].cli(
            "--cluster",
            "create",
            *(f"127.0.0.1:{node.port}" for node in self.nodes),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = [node.cli("CLUSTER", "INFO", check=False) for node in self.nodes]
            if all("cluster_state:ok" in s and "cluster_slots_ok:16384" in s for s in states):
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not become ready")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


_shared: dict[str, RedisServer | RedisClusterServers] = {}


def _cleanup(directory: str, server: RedisServer | RedisClusterServers) -> None:
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def shared_redis() -> RedisServer:
    """One server for the whole test run (tests create their own stores, so they can share)."""
    server = _shared.get("redis")
    if server is None:
        redis_binaries()
        directory = tempfile.mkdtemp(prefix="offer-redis-")
        server = RedisServer(Path(directory))
        server.start()
        atexit.register(_cleanup, directory, server)
        _shared["redis"] = server
    assert isinstance(server, RedisServer)
    return server


def shared_cluster() -> RedisClusterServers:
    cluster = _shared.get("cluster")
    if cluster is None:
        redis_binaries()
        directory = tempfile.mkdtemp(prefix="offer-redis-cluster-")
        cluster = RedisClusterServers(Path(directory))
        try:
            cluster.start()
        except BaseException:
            _cleanup(directory, cluster)
            raise
        atexit.register(_cleanup, directory, cluster)
        _shared["cluster"] = cluster
    assert isinstance(cluster, RedisClusterServers)
    return cluster


@asynccontextmanager
async def opened_redis(url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def redis_backend(tmp_path: Path) -> AsyncIterator[Store]:
    """A factory for the storage contract suite: a store on the shared server."""
    async with opened_redis(shared_redis().url + RELAXED) as store:
        yield store


@asynccontextmanager
async def redis_cluster_backend(tmp_path: Path) -> AsyncIterator[Store]:
    """A factory for the storage contract suite: a store on the shared 3-master cluster."""
    async with opened_redis(shared_cluster().url + RELAXED) as store:
        yield store
