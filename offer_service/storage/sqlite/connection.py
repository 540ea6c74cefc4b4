"""SQLite's connections (reads on the loop, writes on one writer thread) and query helpers."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any, Self, TypeVar

import orjson

from offer_service.exceptions import StoreError, StoreMissing
from offer_service.storage.sqlite.event_log import EventIds
from offer_service.storage.sqlite.schema import migrate

T = TypeVar("T")

# How long reads may share one read transaction (see SQLiteConnection._snapshot).
SNAPSHOT_MAX_S = 0.01

# The WAL is copied into the database by a passive checkpoint on its own connection, at most
# this often after writes, so that no write waits for one (a commit is durable once in the WAL).
CHECKPOINT_INTERVAL_S = 0.1
# Reads see the file through a memory map (SQLite caps the size at its build's limit, 2 GB in
# the common builds): a page the OS holds costs a memory access instead of a read() and a copy
# into SQLite's own cache. Cold answers on a big catalog read pages all over the file: on one of
# 1M products, 1.9 ms of CPU per cold cart instead of 2.8 (in process). The mapped pages are the
# OS's file cache, shared and reclaimable; they count in the process's resident size as RssFile.
READ_MAP_BYTES = 1 << 32

# The writer checkpoints by itself only if the WAL grows past this many pages regardless.
WRITER_CHECKPOINT_PAGES = 16384

# Ids lists travel as one JSON parameter: no limit on host parameters, one cached statement.
IN_IDS = "IN (SELECT value FROM json_each(?))"


def ids_param(ids: Iterable[str]) -> bytes:
    """The parameter of an `IN_IDS` clause."""
    return orjson.dumps(list(ids))


def require_store(conn: sqlite3.Connection, store_id: str) -> None:
    if conn.execute("SELECT 1 FROM stores WHERE id = ?", (store_id,)).fetchone() is None:
        raise StoreError(f"unknown store {store_id!r}")


def bump_version(conn: sqlite3.Connection, store_id: str) -> None:
    conn.execute("UPDATE stores SET version = version + 1 WHERE id = ?", (store_id,))


def in_transaction(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    # IMMEDIATE takes the file's write lock up front: a read-then-write cannot interleave with
    # another process's write, and a busy file waits `busy_timeout` instead of failing later.
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


@contextmanager
def _wrapped(action: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite store could not {action}: {exc}") from exc


def _passive_checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


# The open connections of this process, by file: a write through one ends the read snapshots
# of all (see SQLiteConnection._snapshot). Objects on other threads' loops may come and go
# while a writer reads the set: it is changed and copied under the lock.
_OPEN: dict[str, weakref.WeakSet[SQLiteConnection]] = {}
_OPEN_LOCK = threading.Lock()


class SQLiteConnection:
    """Opening, closing and the read and write paths every part of SQLiteStore uses.

    Two connections per object. Reads run on the event loop thread: they are short, and in
    WAL mode they never wait for a writer. Writes run one at a time in a worker thread on the
    writer connection, each in one `BEGIN IMMEDIATE` transaction, so a big import never
    blocks the loop and a read-then-write is atomic across processes sharing the file.
    """

    def __init__(self, path: str, *, busy_timeout_ms: int = 5000, create: bool = True) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        # False for commands that only use an existing store: a mistyped path must not leave
        # an empty database behind that later commands would take for the real one.
        self.create = create
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._snapshot_until = 0.0  # the shared read transaction's end (monotonic time)
        self._file = os.path.realpath(path) if path != ":memory:" else path
        self._write_lock = asyncio.Lock()
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpoint: asyncio.Task[None] | None = None
        self._checkpointed_at = 0.0
        # A `:memory:` database belongs to one connection: there is only one, used inline.
        self._in_memory = path == ":memory:"
        self._event_ids = EventIds()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it was opened on

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> Self:
        """`sqlite:///relative/path`, `sqlite:////absolute/path` or `sqlite:///:memory:`;
        with `create=False`, opening a file that does not exist raises StoreMissing."""
        prefix = "sqlite:///"
        path = url[len(prefix) :].split("?", 1)[0]
        if not url.startswith(prefix) or not path:
            raise ValueError(f"expected sqlite:///<path>, got {url!r}")
        return cls(path, create=create)

    # lifecycle

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    async def open(self) -> None:
        """Create the file, its directory and the schema if missing (unless `create` is
        False: then a missing file raises StoreMissing); safe in every process."""
        if self._writer is not None:
            return
        if not (self._in_memory or self.create or os.path.isfile(self.path)):
            raise StoreMissing(f"no store database at {os.path.abspath(self.path)}")
        with _wrapped("open the database"):
            if not self._in_memory:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            writer = self._connect()
            try:
                if not self._in_memory:
                    writer.execute("PRAGMA journal_mode = WAL")  # persists in the file
                writer.execute("PRAGMA cache_size = -65536")  # 64 MiB for bulk writes
                # A big import grows the WAL; truncate it after checkpoints, not keep it.
                writer.execute("PRAGMA journal_size_limit = 67108864")
                migrate(writer)
                if self._in_memory:
                    reader = writer
                else:
                    reader = self._connect()
                    reader.execute("PRAGMA query_only = ON")
                    reader.execute(f"PRAGMA mmap_size = {READ_MAP_BYTES}")
                    writer.execute(f"PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}")
                    self._checkpointer = self._connect()
            except BaseException:
                writer.close()
                raise
        self._writer, self._reader = writer, reader
        self._event_ids = EventIds()  # read from the file again when first needed
        # Its reader is used on this loop's thread only (sqlite3 connections are not safe to
        # share between threads): another loop's write ends its snapshot through this loop.
        self._loop = asyncio.get_running_loop()
        with _OPEN_LOCK:
            _OPEN.setdefault(self._file, weakref.WeakSet()).add(self)

    async def close(self) -> None:
        self._end_snapshot()
        reader, writer = self._reader, self._writer
        self._reader = self._writer = None
        with _OPEN_LOCK:
            _OPEN.get(self._file, weakref.WeakSet()).discard(self)
        if writer is None:
            return
        async with self._write_lock:  # let a write in flight finish
            checkpoint = self._checkpoint
            if checkpoint is not None:
                await checkpoint
            checkpointer, self._checkpointer = self._checkpointer, None
            with _wrapped("close the database"):
                if checkpointer is not None:
                    checkpointer.close()
                if reader is not None and reader is not writer:
                    reader.close()
                writer.close()

    async def ping(self) -> None:
        self._query("answer a ping", "SELECT 1")

    # plumbing

    def _query(self, action: str, sql: str, params: Any = ()) -> list[Any]:
        """A read, on the loop thread, in the current read snapshot (see `_snapshot`)."""
        reader = self._reader
        if reader is None:
            raise StoreError("SQLite store is not open")
        try:  # as _wrapped does, without a context manager per read
            if not self._in_memory:
                self._snapshot(reader)
            return reader.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store could not {action}: {exc}") from exc

    def _snapshot(self, reader: sqlite3.Connection) -> None:
        """Reads share one read transaction for up to SNAPSHOT_MAX_S.

        Starting a read transaction on a WAL file (a read mark, a file lock, the WAL index)
        costs more than a small indexed query, so consecutive reads reuse one. Every write made
        in this process, through any store object on the file, ends the shared snapshots
        before it is acknowledged (see `_on_writer`): this process reads its own writes at
        once, and another process's within SNAPSHOT_MAX_S.
        """
        now = time.monotonic()
        if now < self._snapshot_until and reader.in_transaction:
            return
        self._end_snapshot()
        reader.execute("BEGIN")
        self._snapshot_until = now + SNAPSHOT_MAX_S
        with suppress(RuntimeError):  # without a running loop, the next read or close ends it
            # Not left open on an idle process: it would hold back checkpoints.
            asyncio.get_running_loop().call_later(SNAPSHOT_MAX_S, self._end_stale_snapshot)

    def _end_snapshot(self) -> None:
        self._snapshot_until = 0.0
        reader = self._reader
        if reader is not None and reader.in_transaction:
            with suppress(sqlite3.Error):
                reader.execute("COMMIT")

    def _end_snapshot_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """End the snapshot now if this object reads on `loop`, else on its own loop's thread
        at its next turn (or not at all once that loop is closed: its object is closing too)."""
        if self._loop is loop:
            self._end_snapshot()
        elif self._loop is not None:
            with suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._end_snapshot)

    def _end_stale_snapshot(self) -> None:
        if time.monotonic() >= self._snapshot_until:
            self._end_snapshot()

    async def _write(self, action: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one `BEGIN IMMEDIATE` transaction on the writer, off the loop."""
        return await self._on_writer(action, partial(in_transaction, fn))

    async def _on_writer(self, action: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` with the writer connection in a worker thread, one call at a time."""
        async with self._write_lock:
            writer = self._writer
            if writer is None:
                raise StoreError("SQLite store is not open")
            with _wrapped(action):
                if self._in_memory:
                    return fn(writer)
                try:
                    return await asyncio.to_thread(fn, writer)
                finally:
                    # Before the caller goes on: later reads here must see this write.
                    with _OPEN_LOCK:
                        stores = list(_OPEN.get(self._file, ()))
                    here = asyncio.get_running_loop()
                    for store in stores:
                        store._end_snapshot_on(here)
                    self._start_checkpoint()

    def _start_checkpoint(self) -> None:
        """A passive checkpoint in the background, unless one ran within CHECKPOINT_INTERVAL_S."""
        now = time.monotonic()
        if self._checkpoint is not None or now - self._checkpointed_at < CHECKPOINT_INTERVAL_S:
            return
        checkpointer = self._checkpointer
        if checkpointer is None:
            return
        self._checkpointed_at = now
        task = asyncio.get_running_loop().create_task(self._run_checkpoint(checkpointer))
        self._checkpoint = task

    async def _run_checkpoint(self, checkpointer: sqlite3.Connection) -> None:
        try:
            await asyncio.to_thread(_passive_checkpoint, checkpointer)
        except sqlite3.Error:
            pass  # the next one, or the writer's own, copies what this one left
        finally:
            self._checkpoint = None

    async def _off_loop(self, fn: Callable[[], T]) -> T:
        """CPU-heavy preparation of a big write, before it takes the write lock."""
        return fn() if self._in_memory else await asyncio.to_thread(fn)
