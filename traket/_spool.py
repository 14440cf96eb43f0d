"""Keep submitted events in a local SQLite file until the ingest has taken them.

Opt-in durability (`spool_path=`): a process killed during an outage leaves its events
on disk, and the next process with the same path sends them. The ingest de-duplicates
by idempotency key, so a row sent just before a crash and sent again counts once.

One process owns a spool file at a time. A child after fork reopens the file and
spools its own events beside the parent's, but only loads rows when a process starts.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator

from ._errors import ConfigurationError, describe

__all__ = ["ADD_WAIT", "REMOVE_WAIT", "Spool", "SpoolError"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY, data BLOB NOT NULL)"
)
# How long a write may wait for the file (another connection's lock) or for this
# spool's own lock. `add` runs on the caller's thread inside `track()`, so it gives
# up quickly and the event stays in memory; `remove` runs on a sending thread.
ADD_WAIT = 0.1
REMOVE_WAIT = 1.0
# Opening waits this long for a lock: the owner's writes take milliseconds, so a file
# locked for longer belongs to another process, and waiting more would only delay
# the `ConfigurationError` that says so.
_OPEN_WAIT = 0.5


def _path(value: object) -> str:
    path = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(path, str):
        raise ConfigurationError(
            f"spool_path: expected a file path (str or os.PathLike), "
            f"received {describe(value)}"
        )
    return path


def _reason(exc: sqlite3.Error, path: str) -> str:
    """Say why a spool file cannot be opened, in words a caller can act on."""
    message = str(exc)
    if "locked" in message or "busy" in message:
        return (
            f"it is in use by another process (locked for over {_OPEN_WAIT:g} s); "
            "one process may use a spool file at a time"
        )
    if os.path.isdir(path):
        return "it is a directory; expected a file path"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"its directory {parent!r} does not exist"
    return message[:200]


class SpoolError(Exception):
    """The spool could not be read or written: the file is locked, full or broken.

    The message is SQLite's (or says the spool was busy); it never holds row data.
    """


class Spool:
    """A bounded table of serialized events, one row per event.

    Calls are short local writes under the spool's own lock; network I/O never happens
    under it. Each write waits at most its `wait` for that lock and for the file, then
    raises `SpoolError`, so a submit is never held for seconds by a locked file. A
    path that cannot be opened as a spool (a directory, a missing directory, a file
    another process holds) raises `ConfigurationError` naming `spool_path`.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, max_events: int = 100_000
    ) -> None:
        self.path = _path(path)
        self.max_events = max_events
        self._lock = threading.Lock()
        self._conn, self._count = self._open()
        self._wait = _OPEN_WAIT

    def _open(self) -> tuple[sqlite3.Connection, int]:
        """Connect and count the rows, or raise `ConfigurationError` naming the path.

        The open waits `_OPEN_WAIT` at most, so a file another process holds fails
        at once rather than after a long wait.
        """
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            count = conn.execute("SELECT COUNT(*) FROM spool").fetchone()[0]
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            reason = _reason(exc, self.path)
            raise ConfigurationError(
                f"spool_path: cannot use {self.path!r} as a spool: {reason}"
            ) from exc
        return conn, int(count)

    def __repr__(self) -> str:
        return f"Spool(path={self.path!r}, rows={self._count})"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=_OPEN_WAIT,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _rows(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM spool").fetchone()[0])

    def __len__(self) -> int:
        return self._count

    @contextlib.contextmanager
    def _writing(self, wait: float) -> Iterator[sqlite3.Connection]:
        """Hold the lock and set SQLite's busy timeout to `wait`; raise `SpoolError`.

        The lock is taken with the same bound as the file, so a caller's `add` is not
        held behind a sending thread's `remove` that waits out a locked file.
        """
        if not self._lock.acquire(timeout=max(wait, 0.0)):
            raise SpoolError(f"the spool was busy for {wait:g} s")
        try:
            if wait != self._wait:
                self._conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
                self._wait = wait
            yield self._conn
        except sqlite3.Error as exc:
            raise SpoolError(str(exc)[:200]) from exc
        finally:
            self._lock.release()

    def add(self, data: bytes, *, wait: float = ADD_WAIT) -> int | None:
        """Store one serialized event; return its row id, or `None` when full.

        Raises `SpoolError` when the file stays locked for `wait` seconds or cannot
        be written.
        """
        with self._writing(wait) as conn:
            if self._count >= self.max_events:
                return None
            cursor = conn.execute("INSERT INTO spool (data) VALUES (?)", (data,))
            self._count += 1
            return int(cursor.lastrowid or 0)

    def remove(self, rows: Iterable[int], *, wait: float = REMOVE_WAIT) -> None:
        """Delete rows the ingest took (or that were dropped and reported).

        Raises `SpoolError` when they cannot be deleted; the rows then stay on disk,
        and a later process sends them again (the ingest de-duplicates).
        """
        ids = [(row,) for row in rows]
        if not ids:
            return
        with self._writing(wait) as conn:
            conn.execute("BEGIN")
            try:
                cursor = conn.executemany("DELETE FROM spool WHERE id = ?", ids)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
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
        self._wait = _OPEN_WAIT
        self._count = self._rows()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
