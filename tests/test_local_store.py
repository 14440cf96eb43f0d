"""The local ingest's SQLite store: one row per idempotency key, filtered reads."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from traket._local import _store
from traket._local._store import (
    SCHEMA_VERSION,
    EventStore,
    InsertResult,
    parse_timestamp,
)


def make_event(key: str, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "provider": "openai",
        "idempotencyKey": key,
        "occurredAt": "2026-01-01T12:00:00Z",
    }
    event.update(fields)
    return event


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[EventStore]:
    with EventStore(db_path) as store:
        yield store


def row(db_path: Path, key: str) -> sqlite3.Row:
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        found: sqlite3.Row | None = conn.execute(
            "SELECT * FROM events WHERE idempotency_key = ?", (key,)
        ).fetchone()
    finally:
        conn.close()
    assert found is not None
    return found


def test_insert_batch_counts_accepted_events() -> None:
    with EventStore(":memory:") as store:
        result = store.insert_batch([make_event("a"), make_event("b")])

        assert result == InsertResult(accepted=2, duplicates=0)
        assert store.count() == 2


def test_a_resent_event_is_a_duplicate_and_stored_once(store: EventStore) -> None:
    store.insert_batch([make_event("a"), make_event("b")])

    result = store.insert_batch([make_event("b"), make_event("c")])

    assert result == InsertResult(accepted=1, duplicates=1)
    assert store.count() == 3


def test_the_first_copy_of_a_key_wins_within_one_batch(store: EventStore) -> None:
    result = store.insert_batch(
        [make_event("a", feature="first"), make_event("a", feature="second")]
    )

    assert result == InsertResult(accepted=1, duplicates=1)
    assert [event["feature"] for event in store.events()] == ["first"]


def test_an_event_without_a_key_stores_nothing_of_its_batch(store: EventStore) -> None:
    event = make_event("b")
    del event["idempotencyKey"]

    with pytest.raises(ValueError, match="idempotencyKey"):
        store.insert_batch([make_event("a"), event])

    assert store.count() == 0


def test_columns_hold_usage_cost_and_attribution(
    store: EventStore, db_path: Path
) -> None:
    usage = {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 5},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 20},
        "total_tokens": 130,
    }
    cost = {
        "amount": 1e-07,
        "currency": "usd",
        "source": "manual_override",
        "priceVersion": "2026-01",
    }
    store.insert_batch(
        [
            make_event(
                "a",
                model="gpt-4.1-mini-2025-04-14",
                externalCustomerId="cus_1",
                customerId="tc_1",
                feature="search",
                environment="production",
                operation="responses.create",
                status="success",
                durationMs=812,
                usage=usage,
                cost=cost,
                occurredAt="2026-01-01T14:00:00+02:00",
            )
        ]
    )

    found = row(db_path, "a")

    assert found["occurred_at"] == "2026-01-01T12:00:00.000000Z"
    assert found["received_at"].endswith("Z")
    assert (found["provider"], found["model"]) == ("openai", "gpt-4.1-mini-2025-04-14")
    assert (found["external_customer_id"], found["customer_id"]) == ("cus_1", "tc_1")
    assert (found["feature"], found["environment"]) == ("search", "production")
    assert (found["operation"], found["status"]) == ("responses.create", "success")
    assert found["duration_ms"] == 812
    tokens = ("input", "cached", "cache_write", "output", "reasoning", "total")
    assert [found[f"{name}_tokens"] for name in tokens] == [100, 40, 5, 30, 20, 130]
    assert found["cost_amount"] == "0.0000001"
    assert (found["cost_currency"], found["cost_source"]) == ("usd", "manual_override")
    assert found["price_version"] == "2026-01"


def test_token_and_cost_columns_are_null_without_usage_or_cost(
    store: EventStore, db_path: Path
) -> None:
    store.insert_batch([make_event("a")])

    found = row(db_path, "a")

    for name in ("input", "cached", "cache_write", "output", "reasoning", "total"):
        assert found[f"{name}_tokens"] is None
    assert found["cost_amount"] is None
    assert found["cost_currency"] is None


def test_zero_usage_is_stored_as_zero_not_null(
    store: EventStore, db_path: Path
) -> None:
    store.insert_batch([make_event("a", usage={"input_tokens": 0, "total_tokens": 0})])

    found = row(db_path, "a")

    assert (found["input_tokens"], found["total_tokens"]) == (0, 0)
    assert found["output_tokens"] is None


def test_events_yields_the_events_as_received_in_occurred_at_order(
    store: EventStore,
) -> None:
    late = make_event("late", occurredAt="2026-01-02T00:00:00Z", extra={"x": [1]})
    early = make_event("early", occurredAt="2026-01-01T23:00:00-02:00")
    middle = make_event("middle", occurredAt="2026-01-01T23:30:00.5Z")
    store.insert_batch([late, early, middle])

    assert list(store.events()) == [middle, late, early]


def test_events_filters_by_time_customer_feature_and_environment(
    store: EventStore,
) -> None:
    store.insert_batch(
        [
            make_event("a", occurredAt="2026-01-01T00:00:00Z", externalCustomerId="c1"),
            make_event("b", occurredAt="2026-01-02T00:00:00Z", externalCustomerId="c1"),
            make_event("c", occurredAt="2026-01-03T00:00:00Z", feature="chat"),
            make_event("d", occurredAt="2026-01-04T00:00:00Z", environment="prod"),
        ]
    )

    def keys(**filters: Any) -> list[str]:
        return [event["idempotencyKey"] for event in store.events(**filters)]

    day2 = datetime(2026, 1, 2, tzinfo=timezone.utc)
    assert keys(since=day2) == ["b", "c", "d"]
    assert keys(until=day2) == ["a"]
    assert keys(since=day2, until=day2 + timedelta(days=2)) == ["b", "c"]
    assert keys(since=datetime(2026, 1, 2)) == ["b", "c", "d"]  # naive is UTC
    assert keys(since=datetime(2026, 1, 2, 1, tzinfo=timezone(timedelta(hours=2)))) == [
        "b",
        "c",
        "d",
    ]
    assert keys(customer="c1") == ["a", "b"]
    assert keys(customer="c1", since=day2) == ["b"]
    assert keys(feature="chat") == ["c"]
    assert keys(environment="prod") == ["d"]
    assert keys(customer="nobody") == []


def test_events_reads_page_by_page(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_store, "_PAGE_SIZE", 3)
    same_time = [make_event(f"k{i:02}") for i in range(7)]
    later = [make_event(f"z{i}", occurredAt="2026-02-01T00:00:00Z") for i in range(3)]
    store.insert_batch(later + same_time)

    keys = [event["idempotencyKey"] for event in store.events()]

    assert keys == [f"k{i:02}" for i in range(7)] + ["z0", "z1", "z2"]


def test_the_store_can_be_written_while_a_caller_walks_events(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_store, "_PAGE_SIZE", 2)
    store.insert_batch([make_event(f"k{i}") for i in range(5)])

    walked = 0
    for _event in store.events():
        walked += 1
        store.insert_batch(
            [make_event(f"other{walked}", occurredAt="2025-01-01T00:00Z")]
        )

    assert walked == 5
    assert store.count() == 10


def test_schema_is_versioned_and_in_wal_mode(store: EventStore, db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    try:
        version = conn.execute("SELECT version FROM schema_version").fetchall()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        indexes = {
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index'"
            )
        }
    finally:
        conn.close()

    assert version == [(SCHEMA_VERSION,)]
    assert mode == "wal"
    assert {
        "events_occurred_at",
        "events_external_customer_id",
        "events_feature",
    } <= indexes


def test_reopening_keeps_events_and_one_schema_row(db_path: Path) -> None:
    with EventStore(db_path) as store:
        store.insert_batch([make_event("a")])

    with EventStore(db_path) as store:
        assert store.count() == 1
        assert store.insert_batch([make_event("a")]).duplicates == 1

    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone() == (1,)
    finally:
        conn.close()


def test_a_database_from_a_newer_traket_is_refused(db_path: Path) -> None:
    EventStore(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()

    with pytest.raises(RuntimeError, match="schema version"):
        EventStore(db_path)


def test_the_parent_directory_is_created(tmp_path: Path) -> None:
    with EventStore(tmp_path / "a" / "b" / "events.db") as store:
        assert store.count() == 0


def test_threads_share_one_store(store: EventStore) -> None:
    def insert(worker: int) -> None:
        for batch in range(20):
            keys = [f"{worker}-{batch}-{i}" for i in range(10)]
            # Every worker also resends the keys shared by all of them.
            store.insert_batch([make_event(key) for key in [*keys, f"shared-{batch}"]])

    threads = [threading.Thread(target=insert, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert store.count() == 6 * 20 * 10 + 20


def test_a_closed_store_refuses_calls(db_path: Path) -> None:
    store = EventStore(db_path)
    store.close()
    store.close()

    with pytest.raises(RuntimeError, match="closed"):
        store.count()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T12:00:00Z", datetime(2026, 1, 1, 12, tzinfo=timezone.utc)),
        ("2026-01-01T12:00:00.123Z", datetime(2026, 1, 1, 12, 0, 0, 123000)),
        ("2026-01-01T12:00:00.1234567Z", datetime(2026, 1, 1, 12, 0, 0, 123456)),
        ("2026-01-01T14:00:00+02:00", datetime(2026, 1, 1, 12)),
        ("2026-01-01T07:00:00-0500", datetime(2026, 1, 1, 12)),
        ("2026-01-01 12:00:00", datetime(2026, 1, 1, 12)),
        ("2026-01-01T12:00Z", datetime(2026, 1, 1, 12)),
    ],
)
def test_parse_timestamp_reads_iso_8601(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected.replace(tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2026-01-01",
        "2026-13-01T00:00:00Z",
        "2026-01-01T25:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "2026-01-01T12:00:00Zjunk",
    ],
)
def test_parse_timestamp_returns_none_for_anything_else(text: str) -> None:
    assert parse_timestamp(text) is None
