"""The ids an import has read so far, and where each was first: a dict, then a temporary file."""

from __future__ import annotations

import sqlite3

# Past this many ids the rest go to disk: a body of millions of products would otherwise hold
# every id in memory (about 100 bytes each) until its last row.
SPILL_AT = 20_000


class FirstSeen:
    """Where each id of an import was first read (a line or an index), held in a dict up to
    SPILL_AT ids and beyond that in a private temporary SQLite database, whose few pages in
    memory bound what it costs however many ids follow."""

    def __init__(self, spill_at: int = SPILL_AT) -> None:
        self._spill_at = spill_at
        self._seen: dict[str, int] = {}
        self._disk: sqlite3.Connection | None = None

    def first(self, key: str, at: int) -> int | None:
        """Where `key` was first read, or None when it is new (it is then recorded at `at`)."""
        disk = self._disk
        if disk is None:
            first = self._seen.get(key)
            if first is not None:
                return first
            self._seen[key] = at
            if len(self._seen) > self._spill_at:
                self._spill()
            return None
        # Rows only come back from an insert that happened: none means the id was there.
        if disk.execute(_INSERT, (key, at)).fetchone() is not None:
            return None
        row = disk.execute("SELECT at FROM seen WHERE id = ?", (key,)).fetchone()
        return int(row[0])

    def _spill(self) -> None:
        # "" opens a private on-disk database, removed when it is closed.
        disk = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        disk.execute("PRAGMA journal_mode = OFF")
        disk.execute("PRAGMA synchronous = OFF")
        disk.execute("CREATE TABLE seen (id TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID")
        disk.execute("BEGIN")  # never committed: the file goes with the connection
        disk.executemany("INSERT INTO seen VALUES (?, ?)", self._seen.items())
        self._seen = {}
        self._disk = disk

    def close(self) -> None:
        """Remove the temporary database, if there is one."""
        if self._disk is not None:
            self._disk.close()
            self._disk = None


_INSERT = "INSERT INTO seen VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING at"
