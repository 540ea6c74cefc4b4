"""The event spool: a local append-only file that keeps events while the shared store is down.

When `record_events` fails because the store cannot be reached, the batch is appended to this
process's spool file (flushed and fsynced before the 202 goes out) and replayed into the store
once it answers again. Replay is idempotent: the store de-duplicates by event id, so a batch
replayed twice, or one that reached the store before the connection broke, is counted once.

Files are `events-<host>-<pid>-<random>-<n>.spool` in one directory, one JSON line per batch.
The process writing a file holds an exclusive `flock` on it. A replayer takes every file it can
lock: sealed files of its own, and files whose writer died, so a restarted or sibling process
on the same machine replays what a crashed one left. A line cut short by a crash (never
acknowledged) is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
import secrets
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import orjson

from offer_service.domain.events import StoredEvent
from offer_service.exceptions import StoreError, StoreUnavailable
from offer_service.serving.group_commit import GroupCommit
from offer_service.settings import DEFAULT_SPOOL_DIR
from offer_service.storage.protocols import Store

SUFFIX = ".spool"

log = logging.getLogger(__name__)


class Spool:
    """This process's spool file, and the replay of every spool file in its directory."""

    def __init__(self, directory: str | Path = DEFAULT_SPOOL_DIR, *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self._name = f"events-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._segment = 0
        self._file: IO[bytes] | None = None
        self._written = 0
        self._lock = asyncio.Lock()
        # For the metrics: events this process spooled, and events it replayed into the store.
        self.spooled = 0
        self.replayed = 0

    async def append(
        self, store_id: str, events: Sequence[StoredEvent], dedupe_since_ms: int
    ) -> None:
        """Keep a batch durably (on disk, fsynced) for a later replay."""
        line = orjson.dumps(
            {"s": store_id, "d": dedupe_since_ms, "e": [dataclasses.astuple(e) for e in events]}
        )
        async with self._lock:
            await asyncio.to_thread(self._write, line + b"\n")
        self.spooled += len(events)

    def _write(self, line: bytes) -> None:
        if self._file is None:
            self._file = self._open_segment()
        self._file.write(line)
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        self._written += len(line)

    def _open_segment(self) -> IO[bytes]:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._segment += 1
        path = self.directory / f"{self._name}-{self._segment:06d}{SUFFIX}"
        f = open(path, "ab")  # noqa: SIM115 (kept open while this process appends to it)
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        if self.fsync:  # the new file's directory entry must survive a crash too
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._written = 0
        return f

    def depth(self) -> tuple[int, int]:
        """Spool files waiting in the directory (every process's) and their bytes."""
        files = size = 0
        try:
            for p in self.directory.glob("*" + SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    n = p.stat().st_size
                    files, size = files + (n > 0), size + n
        except OSError:
            pass
        return files, size

    def pending(self) -> bool:
        """Whether any spool file (this process's or an orphan) waits for a replay."""
        if self._written:
            return True
        try:
            return any(p.stat().st_size > 0 for p in self.directory.glob("*" + SUFFIX))
        except OSError:
            return False

    async def replay(self, store: Store) -> int:
        """Send every spooled batch to the store, oldest file first; the events sent. Stops
        (leaving the rest for next time) at the first failure."""
        async with self._lock:
            # Seal the file being written: new batches go to a new one, this one is replayed.
            if self._file is not None and self._written:
                self._file.close()
                self._file = None
                self._written = 0
        sent = 0
        for path in sorted(self.directory.glob("*" + SUFFIX)):
            sent += await self._replay_file(path, store)
        return sent

    async def _replay_file(self, path: Path, store: Store) -> int:
        try:
            f = open(path, "rb")  # noqa: SIM115 (closed below, after the unlink)
        except FileNotFoundError:
            return 0  # another replayer finished it
        try:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # a live writer, or another replayer
            if not path.exists():
                return 0
            sent = 0
            for line in f:
                batch = _parse(line)
                if batch is None:
                    continue
                store_id, since, events = batch
                await store.record_events(store_id, events, since)
                sent += len(events)
                self.replayed += len(events)
            path.unlink()
            log.info("replayed %d spooled events from %s", sent, path.name)
            return sent
        finally:
            f.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _parse(line: bytes) -> tuple[str, int, list[StoredEvent]] | None:
    try:
        raw = orjson.loads(line)
        return raw["s"], int(raw["d"]), [StoredEvent(*fields) for fields in raw["e"]]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None  # a line cut short by a crash: it was never acknowledged


async def record_events(
    store: Store | GroupCommit,
    spool: Spool | None,
    store_id: str,
    events: Sequence[StoredEvent],
    dedupe_since_ms: int,
) -> list[bool]:
    """`store.record_events`, falling back to the spool when the store is unreachable. Spooled
    events are reported as new: their duplicates are found when they are replayed."""
    try:
        return await store.record_events(store_id, events, dedupe_since_ms)
    except StoreUnavailable:
        if spool is None or not events:
            raise
        await spool.append(store_id, events, dedupe_since_ms)
        return [True] * len(events)


async def replay_before_exit(spool: Spool, store: Store, timeout_s: float) -> None:
    """A last replay of what waits in the spool, if the store answers within `timeout_s`; what
    stays is replayed by a sibling or the next process on this machine."""
    if not spool.pending():
        return
    try:
        async with asyncio.timeout(timeout_s):
            await store.ping()
            await spool.replay(store)
    except (StoreError, TimeoutError) as exc:
        log.warning("spooled events left for the next process: %s", exc)
    except OSError as exc:
        log.warning("spool replay failed: %s", exc)


async def replay_forever(
    spool: Spool, store: Store, stop: asyncio.Event, interval_s: float = 0.5
) -> None:
    """Replay the spool whenever it holds something and the store answers again."""
    while not stop.is_set():
        if spool.pending():
            try:
                await store.ping()
                await spool.replay(store)
            except StoreError as exc:
                log.debug("spool replay waits for the store: %s", exc)
            except OSError as exc:
                log.warning("spool replay failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
