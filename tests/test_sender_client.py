"""Delivery through the public client: what `track()` promises about each event."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ingest_fakes import (
    FAST_RETRY,
    WRITE_KEY,
    FakeIngest,
    _http_server,
    ingest,
    senders,
    silent_endpoint,
    status,
)

import traket
from traket import DeliveryFailure, create_margins
from traket._sender import BatchSender

__all__ = ["_http_server", "ingest", "senders", "silent_endpoint"]

CANARY = "CANARY-prompt-text-4411"


def _client(url: str, made: list[BatchSender], **options: Any) -> traket.Margins:
    options.setdefault("flush_interval_ms", 20)
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("request_timeout", 2.0)
    margins = create_margins(write_key=WRITE_KEY, endpoint=url, **options)
    made.append(margins._sender)
    return margins


def test_the_key_and_time_set_by_track_survive_every_retry(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    ingest.then(status(503), status(500))
    margins = _client(ingest.url, senders, flush_interval_ms=3_600_000)

    for index in range(5):
        margins.track({"provider": "openai", "feature": f"f{index}"})
    assert margins.flush(10)

    sent = [json.loads(body)["events"] for body in ingest.bodies]
    assert len(sent) == 3
    assert sent[0] == sent[1] == sent[2]
    keys = {event["idempotencyKey"] for event in sent[0]}
    assert len(keys) == 5
    assert all(event["occurredAt"].endswith("Z") for event in sent[0])
    assert len(ingest.store.events) == 5
    assert margins.stats().retried == 10


def test_on_error_gets_the_sanitized_event_never_what_was_dropped(
    ingest: FakeIngest,
    senders: list[BatchSender],
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures: list[DeliveryFailure] = []
    ingest.then(status(400))
    margins = _client(ingest.url, senders, on_error=failures.append)

    with caplog.at_level(logging.DEBUG):
        margins.track(
            {
                "provider": "openai",
                "external_customer_id": "acme",
                "messages": [{"role": "user", "content": CANARY}],
                "metadata": {"prompt": CANARY, "nested": {"x": CANARY}, "tier": "pro"},
            }
        )
        assert margins.flush(5)

    (failure,) = failures
    (event,) = failure.events
    assert failure.reason == "malformed"
    assert event["externalCustomerId"] == "acme"
    assert event["metadata"] == {"tier": "pro"}
    seen = repr(failures) + caplog.text
    assert CANARY not in seen
    assert WRITE_KEY not in seen


def test_a_logging_handler_that_tracks_cannot_deadlock_the_client(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    ingest.then(status(503), status(401), status(400))
    margins = _client(ingest.url, senders, max_queue_events=40)

    class TrackEveryRecord(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            margins.track({"provider": "openai", "feature": "log-line"})

    handler = TrackEveryRecord(level=logging.DEBUG)
    package = logging.getLogger("traket")
    package.addHandler(handler)
    previous = package.level
    package.setLevel(logging.DEBUG)
    done = threading.Event()

    def produce() -> None:
        for index in range(200):
            margins.track({"provider": "openai", "feature": f"f{index}"})
        margins.flush(10)
        done.set()

    try:
        threading.Thread(target=produce, daemon=True).start()
        assert done.wait(20), "tracking from a log handler deadlocked the sender"
    finally:
        package.removeHandler(handler)
        package.setLevel(previous)

    stats = margins.stats()
    assert stats.enqueued == stats.delivered + stats.dropped_total + stats.pending
    assert stats.dropped["unauthorized"] >= 1


async def test_aflush_leaves_the_event_loop_running_while_the_ingest_hangs(
    silent_endpoint: str, senders: list[BatchSender]
) -> None:
    margins = _client(silent_endpoint, senders, request_timeout=30)
    margins.track({"provider": "openai"})
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    try:
        delivered = await margins.aflush(timeout=0.5)
    finally:
        ticker.cancel()

    assert delivered is False
    assert time.monotonic() - started < 0.5 + 0.25
    assert ticks >= 10  # the loop kept running during the half second


async def test_aflush_delivers(ingest: FakeIngest, senders: list[BatchSender]) -> None:
    margins = _client(ingest.url, senders, flush_interval_ms=3_600_000)
    margins.track({"provider": "openai"})

    assert await margins.aflush(timeout=5) is True
    assert len(ingest.store.events) == 1


def test_a_serverless_invocation_that_flushes_at_its_end_delivers_while_frozen(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    # Between invocations a platform freezes the process, and with it the sender's
    # thread; the flush at the end of an invocation sends on the handler's thread.
    margins = _client(ingest.url, senders, flush_interval_ms=3_600_000)
    thaw = threading.Event()
    margins._sender._worker_loop = thaw.wait  # type: ignore[method-assign]

    def handler(request: dict[str, str]) -> dict[str, int]:
        margins.track({"provider": "openai", "external_customer_id": request["who"]})
        margins.flush(timeout=5)
        return {"statusCode": 200}

    try:
        for who in ("acme", "globex", "initech"):
            assert handler({"who": who}) == {"statusCode": 200}
            assert (
                len(ingest.store.events) == ["acme", "globex", "initech"].index(who) + 1
            )
    finally:
        thaw.set()


def test_track_with_a_locked_spool_neither_raises_nor_waits(
    ingest: FakeIngest,
    senders: list[BatchSender],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "spool.db"
    margins = _client(ingest.url, senders, spool_path=str(path))
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # another connection holds the write lock
    try:
        with caplog.at_level(logging.WARNING, logger="traket"):
            started = time.monotonic()
            for index in range(3):
                margins.track({"provider": "openai", "feature": f"f{index}"})
            elapsed = time.monotonic() - started
            assert margins.flush(5)
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    assert elapsed < 1.0  # a short wait per event, not SQLite's 5 s
    stats = margins.stats()
    assert (stats.delivered, stats.pending, stats.unspooled) == (3, 0, 3)
    assert len(ingest.store.events) == 3  # kept in memory, so still delivered
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("traket")]
    assert len(warnings) == 1
    assert "kept in memory only" in warnings[0]
    assert "database is locked" in warnings[0]
