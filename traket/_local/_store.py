"""The local ingest's event store: one SQLite table, one row per idempotency key."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "SCHEMA_VERSION",
    "EventStore",
    "InsertResult",
    "encode_event",
    "parse_timestamp",
]

SCHEMA_VERSION = 1

# Rows fetched per query by `EventStore.events`; the lock is released between pages.
_PAGE_SIZE = 500

_MAX_SQLITE_INT = 2**63 - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    idempotency_key TEXT PRIMARY KEY,
    received_at TEXT,
    occurred_at TEXT,
    provider TEXT,
    model TEXT,
    external_customer_id TEXT,
    customer_id TEXT,
    feature TEXT,
    environment TEXT,
    operation TEXT,
    status TEXT,
    duration_ms INTEGER,
    input_tokens INTEGER,
    cached_tokens INTEGER,
    cache_write_tokens INTEGER,
    output_tokens INTEGER,
    reasoning_tokens INTEGER,
    total_tokens INTEGER,
    cost_amount TEXT,
    cost_currency TEXT,
    cost_source TEXT,
    price_version TEXT,
    event_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_occurred_at ON events (occurred_at);
CREATE INDEX IF NOT EXISTS events_external_customer_id
    ON events (external_customer_id);
CREATE INDEX IF NOT EXISTS events_feature ON events (feature);
"""

_COLUMNS = (
    "idempotency_key",
    "received_at",
    "occurred_at",
    "provider",
    "model",
    "external_customer_id",
    "customer_id",
    "feature",
    "environment",
    "operation",
    "status",
    "duration_ms",
    "input_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost_amount",
    "cost_currency",
    "cost_source",
    "price_version",
    "event_json",
)

_INSERT = "INSERT OR IGNORE INTO events ({}) VALUES ({})".format(
    ", ".join(_COLUMNS), ", ".join("?" for _ in _COLUMNS)
)

_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?"
)


@dataclass(frozen=True)
class InsertResult:
    """What one `EventStore.insert_batch` call did: new rows and ignored resends."""

    accepted: int
    duplicates: int


def parse_timestamp(text: str) -> datetime | None:
    """Parse an ISO 8601 date and time into an aware UTC datetime, or return `None`.

    Accepts `Z` or a numeric offset, a `T` or a space between date and time, and any
    number of fractional digits (truncated to microseconds): Python 3.10's
    `datetime.fromisoformat` takes far fewer spellings. A time without an offset is
    taken as UTC, which is what the wire contract asks senders to use.
    """
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        return None

    year, month, day, hour, minute, second, fraction = match.group(1, 2, 3, 4, 5, 6, 7)
    sign, offset_hours, offset_minutes = match.group(9, 10, 11)
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        offset = timedelta(0)
        if sign is not None:
            offset = timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
            offset = -offset if sign == "-" else offset
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            micros,
            tzinfo=timezone(offset),
        )
        return moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None


def _canonical(moment: datetime) -> str:
    """Format a datetime as fixed-width UTC text, so text order is time order."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= _MAX_SQLITE_INT else None


def _amount(value: object) -> str | None:
    """Return a number as a plain decimal string (`1e-07` becomes `0.0000001`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return None
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    return format(number, "f") if number.is_finite() else None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def encode_event(event: Mapping[str, Any]) -> str:
    """Serialize an event compactly, as it is stored in `event_json`.

    Raise `ValueError` for NaN or infinite numbers: they are not JSON.
    """
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _row(event: Mapping[str, Any], text: str, received_at: str) -> tuple[object, ...]:
    """Build the `events` row of one wire event, tolerating odd field types."""
    key = event.get("idempotencyKey")
    if not isinstance(key, str) or not key:
        raise ValueError("every event needs a non-empty string idempotencyKey")

    occurred = event.get("occurredAt")
    moment = parse_timestamp(occurred) if isinstance(occurred, str) else None
    occurred_at = _canonical(moment) if moment is not None else received_at

    usage = event.get("usage")
    if isinstance(usage, Mapping):
        input_details = _mapping(usage.get("input_tokens_details"))
        output_details = _mapping(usage.get("output_tokens_details"))
        tokens = (
            _count(usage.get("input_tokens")),
            _count(input_details.get("cached_tokens")),
            _count(input_details.get("cache_write_tokens")),
            _count(usage.get("output_tokens")),
            _count(output_details.get("reasoning_tokens")),
            _count(usage.get("total_tokens")),
        )
    else:
        tokens = (None,) * 6

    cost = _mapping(event.get("cost"))
    price_version = cost.get("priceVersion", event.get("priceVersion"))

    return (
        key,
        received_at,
        occurred_at,
        _text(event.get("provider")),
        _text(event.get("model")),
        _text(event.get("externalCustomerId")),
        _text(event.get("customerId")),
        _text(event.get("feature")),
        _text(event.get("environment")),
        _text(event.get("operation")),
        _text(event.get("status")),
        _count(event.get("durationMs")),
        *tokens,
        _amount(cost.get("amount")),
        _text(cost.get("currency")),
        _text(cost.get("source")),
        _text(price_version),
        text,
    )


class EventStore:
    """Store wire events in SQLite, once per idempotency key.

    One connection serves every thread, guarded by a lock: the ingest's request
    threads come and go, and a connection per thread would outlive them. WAL mode lets
    another process (`traket report`) read while the ingest writes. `synchronous=NORMAL`
    keeps every committed batch across a crash of the process, though not across a
    power cut, which is enough for a local development ingest.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = str(path)
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)

        self._lock = threading.RLock()
        self._closed = False
        self._conn = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, timeout=10.0
        )
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._create_schema()
        except BaseException:
            self._conn.close()
            raise

    def _create_schema(self) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            if row[0] is None:
                conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self._path} has schema version {row[0]}; this traket reads "
                    f"version {SCHEMA_VERSION} or older: upgrade traket-sdk"
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def __repr__(self) -> str:
        return f"EventStore({self._path!r})"

    def __enter__(self) -> EventStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        return self._conn

    def insert_batch(self, events: Sequence[Mapping[str, Any]]) -> InsertResult:
        """Store a batch of wire events in one transaction.

        An event whose idempotency key is already stored, or appears earlier in the
        same batch, counts as a duplicate and is not stored again: the first copy wins.
        Raise `ValueError` for an event without a string `idempotencyKey`, and store
        nothing of that batch.
        """
        return self._insert(events, [encode_event(event) for event in events])

    def _insert(
        self, events: Sequence[Mapping[str, Any]], texts: Sequence[str]
    ) -> InsertResult:
        """Store events already serialized by `encode_event` (the ingest's path)."""
        received_at = _canonical(datetime.now(timezone.utc))
        rows = [
            _row(event, text, received_at)
            for event, text in zip(events, texts, strict=True)
        ]

        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.total_changes
                conn.executemany(_INSERT, rows)
                accepted = conn.total_changes - before
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return InsertResult(accepted=accepted, duplicates=len(rows) - accepted)

    def events(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        customer: str | None = None,
        feature: str | None = None,
        environment: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield the stored wire events in `occurredAt` order, as they were received.

        `since` is inclusive and `until` exclusive; a naive datetime is taken as UTC.
        `customer` matches `externalCustomerId`. Rows are read a page at a time, so the
        store stays usable by other threads while a caller walks a large result.
        """
        clauses: list[str] = []
        params: list[object] = []
        for column, operator, value in (
            ("occurred_at", ">=", None if since is None else _canonical(since)),
            ("occurred_at", "<", None if until is None else _canonical(until)),
            ("external_customer_id", "=", customer),
            ("feature", "=", feature),
            ("environment", "=", environment),
        ):
            if value is not None:
                clauses.append(f"{column} {operator} ?")
                params.append(value)

        cursor_clause = "(occurred_at, idempotency_key) > (?, ?)"
        last: tuple[str, str] | None = None
        while True:
            where = [*clauses, cursor_clause] if last is not None else clauses
            query = "SELECT occurred_at, idempotency_key, event_json FROM events"
            if where:
                query += " WHERE " + " AND ".join(where)
            query += " ORDER BY occurred_at, idempotency_key LIMIT ?"
            page_params = [*params, *(last or ()), _PAGE_SIZE]

            with self._lock:
                rows = self._connection().execute(query, page_params).fetchall()

            for _occurred_at, _key, text in rows:
                yield json.loads(text)
            if len(rows) < _PAGE_SIZE:
                return
            last = (rows[-1][0], rows[-1][1])

    def count(self) -> int:
        """Return the number of stored events."""
        with self._lock:
            row = self._connection().execute("SELECT COUNT(*) FROM events").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the database; further calls raise `RuntimeError`. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
