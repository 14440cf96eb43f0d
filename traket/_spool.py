"""Keep submitted events in a local SQLite file until the ingest has taken them.

Opt-in durability (`spool_path=`): a process killed during an outage leaves its events
on disk, and the next process with the same path sends them. The ingest de-duplicates
by idempotency key, so a row sent just before a crash and sent again counts once.

One process owns a spool file at a time. A child after fork reopens the file and
spools its own events beside the parent's, but only loads rows when a process starts.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable

__all__ = ["Spool"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY, data BLOB NOT NULL)"
)


class Spool:
    """A bounded table of serialized events, one row per event.

    Calls are short local writes under the spool's own lock; network I/O never happens
    under it, so a submit waits at most for another thread's SQLite statement.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, max_events: int = 100_000
    ) -> None:
        self.path = os.fspath(path)
        self.max_events = max_events
        self._lock = threading.Lock()
        self._conn = self._connect()
        self._count = self._rows()

    def __repr__(self) -> str:
        return f"Spool(path={self.path!r}, rows={self._count})"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=5.0, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(_SCHEMA)
        return conn

    def _rows(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM spool").fetchone()[0])

    def __len__(self) -> int:
        return self._count

    def add(self, data: bytes) -> int | None:
        """Store one serialized event; return its row id, or `None` when full."""
        with self._lock:
            if self._count >= self.max_events:
                return None
            cursor = self._conn.execute("INSERT INTO spool (data) VALUES (?)", (data,))
            self._count += 1
            return int(cursor.lastrowid or 0)

    def remove(self, rows: Iterable[int]) -> None:
        """Delete rows the ingest took (or that were dropped and reported)."""
        ids = [(row,) for row in rows]
        if not ids:
            return
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                cursor = self._conn.executemany("DELETE FROM spool WHERE id = ?", ids)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._count = max(0, self._count - max(cursor.rowcount, 0))

    def load(self) -> list[tuple[int, bytes]]:
        """Return every row, oldest first: the events a previous process left behind."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, data FROM spool ORDER BY id"
            ).fetchall()
        return [(int(row), bytes(data)) for row, data in rows]

    def reopen(self) -> None:
        """Open a new connection in a child process; the parent's is not shareable."""
        self._lock = threading.Lock()
        self._conn = self._connect()
        self._count = self._rows()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
