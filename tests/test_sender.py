"""The batch sender: a submit that never waits, bounded batches, honest accounting."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ingest_fakes import (
    WRITE_KEY,
    FakeIngest,
    _http_server,
    ingest,
    make_event,
    sender_for,
    senders,
    silent_endpoint,
    status,
)

from traket._errors import ConfigurationError
from traket._sender import BatchSender, DeliveryFailure, DeliveryStats, event_of
from traket._transport import HttpTransport

__all__ = ["_http_server", "ingest", "senders", "silent_endpoint"]

MARGIN = 0.25  # what a deadline may be overrun by on a loaded 2-core machine


def _holds(stats: DeliveryStats) -> bool:
    return stats.enqueued == stats.delivered + stats.dropped_total + stats.pending


def test_importing_and_constructing_starts_no_thread() -> None:
    code = (
        "import threading, traket._sender, traket._transport as t;"
        "traket._sender.BatchSender(t.HttpTransport('http://127.0.0.1:9/x', 'k'));"
        "print(threading.active_count())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert out.stdout.strip() == "1"


def test_the_worker_starts_on_the_first_submit(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    sender = sender_for(ingest.url, senders)
    assert sender._workers == []

    sender.submit(make_event())

    assert [t.name for t in sender._workers] == ["traket-sender"]
    assert sender.flush(5)


def test_events_are_delivered_unchanged_in_batches_of_at_most_batch_size(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    sender = sender_for(ingest.url, senders, batch_size=40)
    events = [make_event(i) for i in range(250)]

    assert all(sender.submit(event) for event in events)
    assert sender.flush(5)

    ingest.store.assert_exactly(events)
    assert all(len(json.loads(body)["events"]) <= 40 for body in ingest.bodies)
    assert sender.stats() == DeliveryStats(
        enqueued=250,
        delivered=250,
        retried=0,
        pending=0,
        dropped=sender.stats().dropped,
    )
    assert sender.stats().dropped_total == 0


def test_a_batch_is_sent_when_it_fills_without_waiting_for_the_interval(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    sender = sender_for(ingest.url, senders, batch_size=10, flush_interval=3600)
    events = [make_event(i) for i in range(10)]

    for event in events:
        sender.submit(event)

    deadline = time.monotonic() + 5
    while len(ingest.store.events) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    ingest.store.assert_exactly(events)


def test_a_partial_batch_is_sent_after_the_interval(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    sender = sender_for(ingest.url, senders, flush_interval=0.05)
    event = make_event()

    sender.submit(event)

    deadline = time.monotonic() + 5
    while not ingest.store.events and time.monotonic() < deadline:
        time.sleep(0.01)
    ingest.store.assert_exactly([event])


def test_batches_stay_under_the_byte_limit(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    sender = sender_for(ingest.url, senders, max_batch_bytes=60_000)
    events = [make_event(i, traceId="x" * 15_000) for i in range(20)]

    for event in events:
        sender.submit(event)
    assert sender.flush(5)

    ingest.store.assert_exactly(events)
    assert max(len(body) for body in ingest.bodies) <= 60_000
    assert len(ingest.bodies) >= 5


def test_an_event_over_32_kib_is_dropped_and_reported_by_size_only(
    ingest: FakeIngest,
    senders: list[BatchSender],
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures: list[DeliveryFailure] = []
    sender = sender_for(ingest.url, senders, on_error=failures.append)
    huge = make_event(0, traceId="CONTENT-CANARY" * 3000)
    small = make_event(1)

    with caplog.at_level(logging.DEBUG, logger="traket"):
        sender.submit(huge)
        sender.submit(small)
        assert sender.flush(5)

    ingest.store.assert_exactly([small])
    assert [(f.reason, f.events) for f in failures] == [("too_large", (huge,))]
    assert "32768" in failures[0].detail
    assert "CONTENT-CANARY" not in caplog.text
    assert sender.stats().dropped["too_large"] == 1


def test_gzip_bodies_are_delivered(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    sender = sender_for(ingest.url, senders, gzip=True)
    events = [make_event(i) for i in range(30)]

    for event in events:
        sender.submit(event)
    assert sender.flush(5)

    ingest.store.assert_exactly(events)
    assert all(gzip.decompress(body) for body in ingest.bodies)


def test_a_full_queue_drops_the_newest_counts_and_reports_them(
    silent_endpoint: str,
    senders: list[BatchSender],
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures: list[DeliveryFailure] = []
    sender = sender_for(
        silent_endpoint,
        senders,
        max_queue_events=10,
        flush_interval=3600,
        batch_size=100,
        on_error=failures.append,
    )
    events = [make_event(i) for i in range(15)]

    with caplog.at_level(logging.WARNING, logger="traket"):
        taken = [sender.submit(event) for event in events]
        sender.flush(0.2)

    assert taken == [True] * 10 + [False] * 5
    assert sender.stats().dropped["queue_full"] == 5
    assert [f.events for f in failures if f.reason == "queue_full"] == [
        tuple(events[10:])
    ]
    warnings = [r for r in caplog.records if "queue_full" in r.getMessage()]
    assert len(warnings) == 1
    assert "5 event" in warnings[0].getMessage()


def test_a_full_queue_in_block_mode_waits_a_bounded_time_then_drops(
    silent_endpoint: str, senders: list[BatchSender]
) -> None:
    sender = sender_for(
        silent_endpoint,
        senders,
        max_queue_events=5,
        flush_interval=3600,
        when_full="block",
        block_timeout=0.2,
    )
    for i in range(5):
        assert sender.submit(make_event(i))

    started = time.monotonic()
    taken = sender.submit(make_event(99))

    assert taken is False
    assert time.monotonic() - started < 0.2 + MARGIN
    assert sender.stats().dropped["queue_full"] == 1


def test_block_mode_takes_the_event_once_room_is_made(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    sender = sender_for(
        ingest.url,
        senders,
        max_queue_events=5,
        batch_size=5,
        when_full="block",
        block_timeout=5,
    )
    events = [make_event(i) for i in range(50)]

    assert all(sender.submit(event) for event in events)
    assert sender.flush(5)
    ingest.store.assert_exactly(events)


@pytest.mark.parametrize("spooled", [False, True], ids=["memory", "spool"])
def test_submit_returns_while_the_ingest_hangs(
    silent_endpoint: str, senders: list[BatchSender], tmp_path: Path, spooled: bool
) -> None:
    spool = {"spool_path": tmp_path / "spool.db"} if spooled else {}
    sender = sender_for(
        silent_endpoint, senders, request_timeout=30, batch_size=5, **spool
    )
    done = threading.Event()

    def produce() -> None:
        for i in range(2000):
            sender.submit(make_event(i))
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()

    assert done.wait(10), "submit blocked behind a request the ingest never answered"
    producer.join()


def test_flush_returns_false_by_its_deadline_when_the_ingest_never_answers(
    silent_endpoint: str, senders: list[BatchSender]
) -> None:
    sender = sender_for(silent_endpoint, senders, request_timeout=30)
    for i in range(10):
        sender.submit(make_event(i))

    started = time.monotonic()
    delivered = sender.flush(timeout=0.5)

    assert delivered is False
    assert time.monotonic() - started < 0.5 + MARGIN
    assert sender.stats().pending == 10


def test_flush_deadline_covers_backoff_sleeps(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    from traket._retry import RetryPolicy

    ingest.fault = status(503, retry_after="30")
    sender = sender_for(
        ingest.url,
        senders,
        retry=RetryPolicy(initial_backoff=20, max_backoff=60, max_retry_after=60),
    )
    sender.submit(make_event())

    started = time.monotonic()
    assert sender.flush(timeout=0.4) is False
    assert time.monotonic() - started < 0.4 + MARGIN


def test_shutdown_returns_by_its_deadline_and_drops_what_is_left(
    silent_endpoint: str, senders: list[BatchSender]
) -> None:
    failures: list[DeliveryFailure] = []
    sender = sender_for(
        silent_endpoint, senders, request_timeout=30, on_error=failures.append
    )
    for i in range(5):
        sender.submit(make_event(i))

    started = time.monotonic()
    assert sender.shutdown(timeout=0.5) is False
    assert time.monotonic() - started < 0.5 + MARGIN

    assert sender.stats().dropped["shutdown"] == 5
    assert sum(len(f.events) for f in failures if f.reason == "shutdown") == 5
    assert sender.submit(make_event()) is False
    assert sender.stats().dropped["shutdown"] == 6


def test_flush_sends_on_the_calling_thread_when_no_worker_can_start(
    ingest: FakeIngest,
    senders: list[BatchSender],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    start = threading.Thread.start

    def refuse_sender_threads(self: threading.Thread) -> None:
        if self.name == "traket-sender":
            raise RuntimeError("can't create new thread at interpreter shutdown")
        start(self)

    monkeypatch.setattr(threading.Thread, "start", refuse_sender_threads)
    sender = sender_for(ingest.url, senders, flush_interval=3600)
    events = [make_event(i) for i in range(120)]

    for event in events:
        sender.submit(event)
    assert sender.flush(5)

    ingest.store.assert_exactly(events)


def test_flush_delivers_while_the_worker_is_frozen(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    thaw = threading.Event()
    sender = sender_for(ingest.url, senders, flush_interval=0.01)
    sender._worker_loop = thaw.wait  # type: ignore[method-assign]
    events = [make_event(i) for i in range(30)]

    for event in events:
        sender.submit(event)
    try:
        assert sender.flush(5)
    finally:
        thaw.set()

    ingest.store.assert_exactly(events)


def test_the_accounting_adds_up_at_every_moment(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    ingest.then(*(status(503) for _ in range(5)))
    sender = sender_for(ingest.url, senders, batch_size=20, max_queue_events=300)
    stop = threading.Event()
    broken: list[DeliveryStats] = []

    def watch() -> None:
        while not stop.is_set():
            stats = sender.stats()
            if not _holds(stats):
                broken.append(stats)

    watcher = threading.Thread(target=watch)
    watcher.start()
    producers = [
        threading.Thread(
            target=lambda: [sender.submit(make_event(i)) for i in range(500)]
        )
        for _ in range(4)
    ]
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join()
    assert sender.flush(10)
    stop.set()
    watcher.join()

    final = sender.stats()
    assert broken == []
    assert final.enqueued == 2000
    assert final.pending == 0
    assert final.delivered == len(ingest.store.events)
    assert final.delivered + final.dropped["queue_full"] == 2000
    assert final.retried > 0


def test_sixteen_threads_deliver_exactly_160000_distinct_events(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    sender = sender_for(ingest.url, senders, max_queue_events=200_000)
    keys: list[list[str]] = [[] for _ in range(16)]

    def produce(slot: int) -> None:
        for i in range(10_000):
            event = {"provider": "openai", "idempotencyKey": f"{slot}-{i}"}
            keys[slot].append(event["idempotencyKey"])
            sender.submit(event)

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sender.flush(60)

    assert len(ingest.store.events) == 160_000
    assert set(ingest.store.events) == {key for slot in keys for key in slot}
    assert all(count == 1 for count in ingest.store.arrivals.values())
    assert sender.stats().delivered == 160_000


def test_several_requests_are_in_flight_against_a_slow_ingest(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    from ingest_fakes import slow

    ingest.fault = slow(0.05)
    sender = sender_for(ingest.url, senders, max_in_flight=4)
    events = [make_event(i) for i in range(2000)]

    for event in events:
        sender.submit(event)
    assert sender.flush(20)

    ingest.store.assert_exactly(events)
    assert ingest.max_in_flight > 1


def test_a_logging_handler_that_submits_cannot_deadlock_the_sender(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    ingest.then(status(503), status(503), status(400))
    sender = sender_for(ingest.url, senders, max_queue_events=50)

    class Resubmit(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            sender.submit(make_event(0, feature="log-line"))

    handler = Resubmit(level=logging.DEBUG)
    package = logging.getLogger("traket")
    package.addHandler(handler)
    previous = package.level
    package.setLevel(logging.DEBUG)
    try:
        for i in range(300):
            sender.submit(make_event(i))
        assert sender.flush(10)
    finally:
        package.removeHandler(handler)
        package.setLevel(previous)
    assert _holds(sender.stats())


def test_on_error_that_raises_does_not_stop_delivery(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    def explode(failure: DeliveryFailure) -> None:
        raise ValueError("callback bug")

    ingest.then(status(400))
    sender = sender_for(ingest.url, senders, on_error=explode)
    first = make_event(0)
    sender.submit(first)
    assert sender.flush(5)
    later = [make_event(i) for i in range(1, 5)]

    for event in later:
        sender.submit(event)
    assert sender.flush(5)

    ingest.store.assert_exactly(later)


def test_expired_events_are_dropped_and_reported(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    from traket._retry import RetryPolicy

    failures: list[DeliveryFailure] = []
    ingest.fault = status(503)
    sender = sender_for(
        ingest.url,
        senders,
        retry=RetryPolicy(initial_backoff=0.02, max_backoff=0.05, max_event_age=0.3),
        on_error=failures.append,
    )
    event = make_event()
    sender.submit(event)

    assert sender.flush(5)
    assert sender.stats().dropped["expired"] == 1
    assert [(f.reason, f.events) for f in failures] == [("expired", (event,))]


def test_the_write_key_never_reaches_logs_repr_or_on_error(
    ingest: FakeIngest,
    senders: list[BatchSender],
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures: list[DeliveryFailure] = []
    ingest.then(status(503), status(400), status(401))
    sender = sender_for(ingest.url, senders, on_error=failures.append)

    with caplog.at_level(logging.DEBUG):
        for batch in range(3):
            sender.submit(make_event(batch))
            sender.flush(5)
        sender.shutdown(5)

    seen = caplog.text + repr(sender) + repr(failures) + repr(sender.stats())
    assert failures
    assert WRITE_KEY not in seen


@pytest.mark.parametrize(
    "options",
    [
        {"batch_size": 0},
        {"batch_size": 101},
        {"max_queue_events": 0},
        {"flush_interval": -1},
        {"request_timeout": float("nan")},
        {"when_full": "drop_oldest"},
        {"retry": {"max_backoff": 5}},
        {"on_error": "print"},
        {"max_in_flight": 65},
    ],
)
def test_bad_settings_are_refused_by_name(options: dict[str, Any]) -> None:
    transport = HttpTransport("https://traket.ai/x", WRITE_KEY)

    with pytest.raises(ConfigurationError, match=next(iter(options))):
        BatchSender(transport, **options)


def test_an_outage_costs_a_probe_per_backoff_not_a_request_per_batch(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    from traket._retry import RetryPolicy

    ingest.fault = status(503)
    sender = sender_for(
        ingest.url,
        senders,
        batch_size=10,
        max_in_flight=4,
        retry=RetryPolicy(initial_backoff=10, max_backoff=10),
    )
    for i in range(500):
        sender.submit(make_event(i))

    assert sender.flush(0.5) is False
    # The first answers set the backoff; until one arrives, up to 4 workers and the
    # thread in flush() may each have sent a batch: 5 at most, never 50.
    assert 1 <= ingest.requests <= 5
    assert sender.stats().pending == 500


def test_the_queue_is_bounded_by_bytes_as_well_as_count(
    silent_endpoint: str, senders: list[BatchSender]
) -> None:
    sender = sender_for(
        silent_endpoint,
        senders,
        flush_interval=3600,
        max_queue_events=1_000,
        max_queue_bytes=20_000,
    )

    taken = [sender.submit(make_event(i, traceId="t" * 4_000)) for i in range(10)]

    assert 3 <= taken.count(True) <= 5
    assert taken == sorted(taken, reverse=True)  # the newest are the ones dropped
    assert sender.stats().dropped["queue_full"] == taken.count(False)


def test_events_waiting_out_an_outage_are_compacted_and_delivered_unchanged(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    from traket._retry import RetryPolicy

    ingest.fault = status(503)
    sender = sender_for(
        ingest.url,
        senders,
        batch_size=10,
        max_in_flight=2,
        retry=RetryPolicy(initial_backoff=0.3, max_backoff=0.3),
    )
    events = [make_event(i) for i in range(300)]
    for event in events:
        sender.submit(dict(event))

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with sender._lock:
            queued = list(sender._queue)
        compacted = [item for item in queued if item.event is None]
        if len(compacted) >= len(queued) - 20:
            break
        time.sleep(0.02)
    assert len(compacted) >= len(queued) - 20 > 0
    assert all(item.data for item in compacted)

    ingest.fault = None
    assert sender.flush(10) is True
    ingest.store.assert_exactly(events)
    assert _holds(sender.stats())


def test_repeated_drop_warnings_are_folded_into_counts(
    ingest: FakeIngest,
    senders: list[BatchSender],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ingest.fault = status(400)
    sender = sender_for(ingest.url, senders)

    with caplog.at_level(logging.WARNING, logger="traket"):
        for round_ in range(1, 4):
            for i in range(round_):
                sender.submit(make_event(i))
            assert sender.flush(5)
        sender.shutdown(5)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "traket dropped 1 event(s): malformed",
        "traket dropped 5 event(s): malformed",  # held back, then told at shutdown
    ]
    assert sender.stats().dropped["malformed"] == 6


def test_events_behind_requests_that_hang_are_compacted_all_the_same(
    silent_endpoint: str, senders: list[BatchSender]
) -> None:
    # Every sending slot is stuck on a request the ingest never answers; what waits
    # behind them must still shrink to its JSON, or memory grows by whole dicts.
    sender = sender_for(
        silent_endpoint, senders, batch_size=10, max_in_flight=2, request_timeout=30
    )
    for i in range(300):
        sender.submit(make_event(i))

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with sender._lock:
            queued = list(sender._queue)
            in_flight = len(sender._inflight)
        whole = [item for item in queued if item.event is not None]
        if len(whole) < 2 * 10 and in_flight == 2:
            break
        time.sleep(0.02)
    assert in_flight == 2  # never more requests than max_in_flight
    assert len(whole) < 2 * 10 < len(queued)


def test_events_behind_a_stuck_ingest_are_packed_and_come_back_unchanged(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    gate = threading.Event()
    failures: list[DeliveryFailure] = []
    ingest.then(lambda events: gate.wait(10) and None)  # holds the one slot
    sender = sender_for(
        ingest.url,
        senders,
        batch_size=10,
        max_in_flight=1,
        request_timeout=10,
        on_error=failures.append,
        max_queue_events=250,
    )
    events = [make_event(i, metadata={"plan": "pro"}) for i in range(300)]
    taken = [sender.submit(dict(event)) for event in events]
    refused = tuple(event for event, ok in zip(events, taken, strict=True) if not ok)

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with sender._lock:
            queued = list(sender._queue)
        packed = [item for item in queued if (item.data or b"{")[:1] != b"{"]
        if len(packed) >= len(queued) - 20 > 0:
            break
        time.sleep(0.02)
    gate.set()
    assert len(packed) >= len(queued) - 20 > 0
    assert all(len(item.data or b"") < 200 for item in packed)  # JSON is ~280 B
    by_key = {event["idempotencyKey"]: event for event in events}
    unpacked = [event_of(item) for item in packed]  # what on_error would be given
    assert unpacked == [by_key[event["idempotencyKey"]] for event in unpacked]

    assert sender.flush(10) is True
    ingest.store.assert_exactly([event for event in events if event not in refused])
    assert [f.events for f in failures if f.reason == "queue_full"] == [refused]
    assert 40 <= len(refused) <= 50  # the queue bound, beside one batch in flight


@pytest.mark.parametrize("spooled", [False, True], ids=["memory", "spool"])
def test_block_mode_keeps_the_queue_within_its_byte_bound(
    silent_endpoint: str, senders: list[BatchSender], tmp_path: Path, spooled: bool
) -> None:
    spool = {"spool_path": tmp_path / "spool.db"} if spooled else {}
    sender = sender_for(
        silent_endpoint,
        senders,
        flush_interval=3600,
        max_queue_events=1_000,
        max_queue_bytes=20_000,
        when_full="block",
        block_timeout=0.05,
        **spool,
    )

    taken = [sender.submit(make_event(i, traceId="t" * 4_000)) for i in range(10)]

    assert 3 <= taken.count(True) <= 5
    assert taken == sorted(taken, reverse=True)
    assert sender.stats().dropped["queue_full"] == taken.count(False)
    with sender._lock:
        assert sender._queued_bytes <= 20_000


@pytest.mark.parametrize("spooled", [False, True], ids=["memory", "spool"])
def test_an_event_nested_too_deep_to_encode_is_dropped_as_malformed(
    ingest: FakeIngest, senders: list[BatchSender], tmp_path: Path, spooled: bool
) -> None:
    nested: list[Any] = []
    for _ in range(100_000):
        nested = [nested]
    failures: list[DeliveryFailure] = []
    spool = {"spool_path": tmp_path / "spool.db"} if spooled else {}
    sender = sender_for(ingest.url, senders, on_error=failures.append, **spool)
    deep = make_event(0, units=nested)
    others = [make_event(i) for i in range(1, 4)]

    for event in [deep, *others]:
        sender.submit(event)  # never raises
    assert sender.flush(3)

    ingest.store.assert_exactly(others)
    assert sender.stats().dropped["malformed"] == 1
    assert [f.reason for f in failures] == ["malformed"]
    assert failures[0].events[0] is deep


def test_an_on_error_that_raises_is_logged_as_such_not_as_a_drop(
    ingest: FakeIngest,
    senders: list[BatchSender],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(failure: DeliveryFailure) -> None:
        raise ValueError("callback bug")

    ingest.then(status(400))
    sender = sender_for(ingest.url, senders, on_error=explode)

    with caplog.at_level(logging.WARNING, logger="traket"):
        sender.submit(make_event())
        assert sender.flush(5)

    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("traket")]
    assert warnings == [
        "traket dropped 1 event(s): malformed",
        "traket on_error callback raised 1 time(s): ValueError; delivery goes on",
    ]
    assert sender.stats().dropped_total == 1
