"""Faults injected on purpose: after each clears, every event is stored exactly once.

The ingest stores events once per idempotency key, as the real one does; each test
checks that what it holds equals what was submitted, byte for byte, so a key or a
timestamp that changed on a retry would show up as a missing or extra event.
"""

from __future__ import annotations

import json
import logging
import time
from email.utils import formatdate

import pytest
from ingest_fakes import (
    WRITE_KEY,
    FakeIngest,
    Fault,
    RawIngest,
    _http_server,
    ingest,
    make_event,
    raw_ingest,
    sender_for,
    senders,
    slow,
    status,
)

from traket._retry import RetryPolicy
from traket._sender import BatchSender, DeliveryFailure

__all__ = ["_http_server", "ingest", "raw_ingest", "senders"]


def _deliver(
    url: str, made: list[BatchSender], count: int = 25, **options: object
) -> tuple[BatchSender, list[dict[str, object]]]:
    sender = sender_for(url, made, **options)  # type: ignore[arg-type]
    events = [make_event(i) for i in range(count)]
    for event in events:
        assert sender.submit(event)
    assert sender.flush(10)
    return sender, events


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param([status(500), status(500)], id="500"),
        pytest.param([status(503), status(502), status(504)], id="503"),
        pytest.param([status(408)], id="408"),
        pytest.param([status(429, retry_after="1")], id="429-seconds"),
        pytest.param(
            [status(429, retry_after=formatdate(time.time() + 2, usegmt=True))],
            id="429-http-date",
        ),
        pytest.param([status(429, retry_after="86400000")], id="429-absurd"),
        pytest.param([status(429, retry_after="0")] * 3, id="429-zero"),
    ],
)
def test_retryable_answers_are_retried_until_stored_once(
    ingest: FakeIngest, senders: list[BatchSender], faults: list[Fault]
) -> None:
    ingest.then(*faults)

    sender, events = _deliver(ingest.url, senders, batch_size=100)

    ingest.store.assert_exactly(events)
    stats = sender.stats()
    assert stats.delivered == len(events)
    assert stats.retried == len(events) * len(faults)


def test_a_server_slower_than_the_request_timeout_stores_each_event_once(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    ingest.then(slow(0.6))

    sender, events = _deliver(ingest.url, senders, request_timeout=0.2)

    deadline = time.monotonic() + 5  # the slow handler stores after the resend
    while min(ingest.store.arrivals.values()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    ingest.store.assert_exactly(events)
    assert set(ingest.store.arrivals.values()) == {2}  # sent twice, stored once
    assert sender.stats().retried == len(events)


def test_a_connection_reset_is_retried(
    raw_ingest: RawIngest, senders: list[BatchSender]
) -> None:
    raw_ingest.script.extend(["reset", "reset"])

    sender, events = _deliver(raw_ingest.url, senders)

    raw_ingest.store.assert_exactly(events)
    assert sender.stats().retried == 2 * len(events)


def test_a_batch_stored_before_the_connection_dropped_is_stored_once(
    raw_ingest: RawIngest, senders: list[BatchSender]
) -> None:
    raw_ingest.script.append("store_then_drop")

    sender, events = _deliver(raw_ingest.url, senders)

    raw_ingest.store.assert_exactly(events)
    assert all(count == 2 for count in raw_ingest.store.arrivals.values())
    assert sender.stats().delivered == len(events)


def test_413_splits_the_batch_and_drops_a_single_event_still_too_large(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    failures: list[DeliveryFailure] = []
    ingest.max_body = 3_000
    sender = sender_for(ingest.url, senders, on_error=failures.append)
    events = [make_event(i) for i in range(40)]
    too_big = make_event(99, traceId="t" * 5_000)  # under 32 KiB, over this ingest

    for event in [*events[:20], too_big, *events[20:]]:
        sender.submit(event)
    assert sender.flush(10)

    ingest.store.assert_exactly(events)
    assert [(f.reason, f.events, f.status) for f in failures] == [
        ("too_large", (too_big,), 413)
    ]
    assert sender.stats().dropped["too_large"] == 1
    assert ingest.requests > 3  # split and resent, not given up on


def test_400_is_reported_and_not_retried(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    failures: list[DeliveryFailure] = []
    ingest.then(status(400))
    sender = sender_for(ingest.url, senders, on_error=failures.append)
    refused = [make_event(0)]  # a batch of several is halved: see below
    for event in refused:
        sender.submit(event)
    assert sender.flush(5)
    later = [make_event(i) for i in range(1, 10)]

    for event in later:
        sender.submit(event)
    assert sender.flush(5)

    ingest.store.assert_exactly(later)
    assert ingest.requests == 2
    assert [(f.reason, f.events, f.status) for f in failures] == [
        ("malformed", tuple(refused), 400)
    ]
    assert "HTTP 400" in failures[0].detail


def test_401_is_reported_loudly_once_and_not_retried(
    ingest: FakeIngest,
    senders: list[BatchSender],
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures: list[DeliveryFailure] = []
    ingest.then(status(401), status(401))
    sender = sender_for(ingest.url, senders, on_error=failures.append)

    with caplog.at_level(logging.WARNING, logger="traket"):
        for round_ in range(2):
            sender.submit(make_event(round_))
            assert sender.flush(5)
    fixed = [make_event(i) for i in range(2, 6)]
    for event in fixed:
        sender.submit(event)
    assert sender.flush(5)

    ingest.store.assert_exactly(fixed)
    assert ingest.requests == 3
    assert [f.reason for f in failures] == ["unauthorized", "unauthorized"]
    loud = [r for r in caplog.records if "write key" in r.getMessage()]
    assert len(loud) == 1
    assert loud[0].levelno == logging.ERROR
    assert sender.stats().dropped["unauthorized"] == 2


def test_a_2xx_that_rejects_some_events_reports_only_those(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    failures: list[DeliveryFailure] = []
    ingest.then(lambda events: ingest.accept(events, rejected=(1, 3)))
    sender = sender_for(ingest.url, senders, on_error=failures.append)
    events = [make_event(i) for i in range(6)]

    for event in events:
        sender.submit(event)
    assert sender.flush(5)

    accepted = [e for i, e in enumerate(events) if i not in (1, 3)]
    ingest.store.assert_exactly(accepted)
    assert ingest.requests == 1
    assert [(f.reason, f.events) for f in failures] == [
        ("rejected", (events[1], events[3]))
    ]
    assert "usage.input_tokens" in failures[0].detail
    stats = sender.stats()
    assert (stats.delivered, stats.dropped["rejected"], stats.pending) == (4, 2, 0)


def test_a_2xx_with_an_unreadable_body_counts_as_delivered(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    from werkzeug import Response

    def garbled(events: list[dict[str, object]]) -> Response:
        ingest.accept(events)  # type: ignore[arg-type]
        return Response("not json", status=202)

    ingest.then(garbled)

    sender, events = _deliver(ingest.url, senders)

    ingest.store.assert_exactly(events)
    assert ingest.requests == 1
    assert sender.stats().delivered == len(events)


def test_retries_keep_the_exact_bytes_of_each_event(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    ingest.then(status(503), status(503))

    _deliver(ingest.url, senders, count=10, batch_size=100)

    sent = [json.loads(body)["events"] for body in ingest.bodies]
    assert sent[0] == sent[1] == sent[2]


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(lambda: "1", id="seconds"),
        pytest.param(lambda: formatdate(time.time() + 2, usegmt=True), id="http-date"),
    ],
)
def test_retry_after_is_waited_out_before_the_resend(
    ingest: FakeIngest, senders: list[BatchSender], header: object
) -> None:
    times: list[float] = []

    def busy_then_fine(events: list[dict[str, object]]) -> object:
        times.append(time.monotonic())
        if len(times) == 1:
            return status(429, retry_after=header())(events)  # type: ignore[operator]
        return None

    ingest.fault = busy_then_fine  # type: ignore[assignment]
    policy = RetryPolicy(initial_backoff=0.01, max_backoff=0.02, max_retry_after=5)

    _, events = _deliver(ingest.url, senders, count=5, retry=policy)

    ingest.store.assert_exactly(events)
    # A lower bound only: the wait the server asked for (an HTTP date has whole
    # seconds, so "in 2 s" may mean a little over 1 s) was not cut short.
    assert times[1] - times[0] >= 0.9


def test_a_redirect_is_not_followed_and_the_batch_is_reported(
    ingest: FakeIngest, raw_ingest: RawIngest, senders: list[BatchSender]
) -> None:
    from werkzeug import Response

    failures: list[DeliveryFailure] = []
    ingest.then(
        lambda events: Response(status=307, headers={"Location": raw_ingest.url})
    )
    sender = sender_for(ingest.url, senders, on_error=failures.append)
    event = make_event()

    sender.submit(event)
    assert sender.flush(5)

    assert raw_ingest.requests == 0  # the write key went nowhere else
    assert [(f.reason, f.events, f.status) for f in failures] == [
        ("malformed", (event,), 307)
    ]


def test_an_ingest_that_echoes_the_write_key_does_not_leak_it(
    ingest: FakeIngest,
    senders: list[BatchSender],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from werkzeug import Response

    failures: list[DeliveryFailure] = []

    def echo(events: list[dict[str, object]]) -> Response:
        return Response(f"bad request, Authorization: Bearer {WRITE_KEY}", 400)

    def echo_rejected(events: list[dict[str, object]]) -> Response:
        rejected = [{"index": 0, "error": f"key {WRITE_KEY} may not send this"}]
        return Response(json.dumps({"accepted": 0, "rejected": rejected}), 200)

    ingest.then(echo, echo_rejected)
    sender = sender_for(ingest.url, senders, on_error=failures.append)

    with caplog.at_level(logging.DEBUG):
        for index in range(2):
            sender.submit(make_event(index))
            assert sender.flush(5)

    assert [f.reason for f in failures] == ["malformed", "rejected"]
    assert all("Bearer" in f.detail or "key" in f.detail for f in failures)
    assert WRITE_KEY not in repr(failures) + caplog.text


def test_a_2xx_whose_body_is_too_deep_to_parse_counts_as_delivered_and_warns_once(
    ingest: FakeIngest,
    senders: list[BatchSender],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from werkzeug import Response

    def nested_too_deep(events: list[dict[str, object]]) -> Response:
        ingest.accept(events)
        return Response("[" * 100_000 + "]" * 100_000, status=200)

    failures: list[DeliveryFailure] = []
    ingest.fault = nested_too_deep
    sender = sender_for(ingest.url, senders, on_error=failures.append)
    events = [make_event(i) for i in range(10)]

    with caplog.at_level(logging.WARNING, logger="traket"):
        for half in (events[:5], events[5:]):
            for event in half:
                sender.submit(event)
            assert sender.flush(3)  # settled, and nothing raised to the caller

    ingest.store.assert_exactly(events)
    stats = sender.stats()
    assert (stats.delivered, stats.pending, stats.dropped_total) == (10, 0, 0)
    assert failures == []
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("traket")]
    assert len(warnings) == 1
    assert "RecursionError" in warnings[0]
    assert "count as delivered" in warnings[0]


class _PolicyWithABug(RetryPolicy):
    def backoff(self, attempt: int, retry_after: str | None = None) -> float:
        raise ZeroDivisionError("a bug in a custom retry policy")


@pytest.mark.parametrize("settled_by", ["flush", "worker"])
def test_an_unexpected_error_on_a_batch_settles_it_as_internal_error(
    ingest: FakeIngest, senders: list[BatchSender], settled_by: str
) -> None:
    failures: list[DeliveryFailure] = []
    ingest.then(status(503))
    sender = sender_for(
        ingest.url, senders, retry=_PolicyWithABug(), on_error=failures.append
    )
    events = [make_event(i) for i in range(3)]

    for event in events:
        sender.submit(event)
    if settled_by == "flush":
        assert sender.flush(3)  # returns, never raises
    else:
        deadline = time.monotonic() + 3
        while sender.stats().pending and time.monotonic() < deadline:
            time.sleep(0.01)

    stats = sender.stats()
    assert (stats.pending, stats.dropped.get("internal_error")) == (0, 3)
    assert stats.enqueued == stats.delivered + stats.dropped_total + stats.pending
    assert [(f.reason, f.events) for f in failures] == [
        ("internal_error", tuple(events))
    ]
    assert "ZeroDivisionError" in failures[0].detail
    later = [make_event(i) for i in range(3, 6)]
    for event in later:
        sender.submit(event)
    assert sender.flush(5)
    ingest.store.assert_exactly(later)  # delivery goes on


def _refuses_marked(events: list[dict[str, object]]) -> object:
    """A 400 naming the first event whose feature is "bad", as INGEST.md says."""
    from werkzeug import Response

    for index, event in enumerate(events):
        if event.get("feature") == "bad":
            body = {"error": f"events[{index}].feature: refused"}
            return Response(json.dumps(body), status=400)
    return None


def test_a_400_for_one_event_drops_that_event_alone(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    failures: list[DeliveryFailure] = []
    ingest.fault = _refuses_marked  # type: ignore[assignment]
    sender = sender_for(ingest.url, senders, on_error=failures.append)
    events = [
        make_event(i, feature="bad" if i in (7, 60) else "ok") for i in range(100)
    ]
    for event in events:
        assert sender.submit(event)

    assert sender.flush(10)

    good = [event for event in events if event["feature"] == "ok"]
    ingest.store.assert_exactly(good)
    stats = sender.stats()
    assert (stats.delivered, stats.dropped["malformed"]) == (98, 2)
    assert stats.dropped_total == 2
    dropped = [event for failure in failures for event in failure.events]
    assert sorted(event["idempotencyKey"] for event in dropped) == sorted(
        event["idempotencyKey"] for event in events if event["feature"] == "bad"
    )
    assert {failure.reason for failure in failures} == {"malformed"}
    assert ingest.requests <= 40  # halving: far fewer requests than events


def test_text_that_is_not_unicode_fails_its_own_event_only(
    ingest: FakeIngest, senders: list[BatchSender]
) -> None:
    failures: list[DeliveryFailure] = []
    sender = sender_for(ingest.url, senders, on_error=failures.append)
    cut_emoji = json.loads('"bob\\ud83d"')  # a lone surrogate, as JSON can carry
    events = [make_event(i) for i in range(5)]
    events[2]["externalCustomerId"] = cut_emoji
    for event in events:
        sender.submit(event)

    assert sender.flush(10)

    ingest.store.assert_exactly(events[:2] + events[3:])
    assert [failure.reason for failure in failures] == ["malformed"]
