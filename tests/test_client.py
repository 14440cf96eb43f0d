"""The explicit API of 0.1.0, kept working over the background sender."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import traket
from traket import ConfigurationError, InvalidEventError, create_margins
from traket.testing import InMemoryTransport

WRITE_KEY = "wk_test_0123456789"


class Ingest:
    """A local ingest that records every batch it is sent."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        server.expect_request(
            "/api/v1/usage/events", method="POST"
        ).respond_with_handler(self._handle)

    def _handle(self, request: Request) -> Response:
        body = json.loads(request.get_data())
        self.requests.append((dict(request.headers), body))
        answer = {"accepted": len(body["events"]), "duplicates": 0, "rejected": []}
        return Response(json.dumps(answer), 200, content_type="application/json")

    @property
    def url(self) -> str:
        return str(self.server.url_for("/api/v1/usage/events"))

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for _, body in self.requests for event in body["events"]]


@pytest.fixture
def ingest(httpserver: HTTPServer) -> Ingest:
    return Ingest(httpserver)


def make_client(ingest: Ingest, **options: Any) -> traket.Margins:
    return create_margins(write_key=WRITE_KEY, endpoint=ingest.url, **options)


def response(**fields: Any) -> SimpleNamespace:
    return SimpleNamespace(**fields)


def test_a_missing_write_key_is_a_configuration_error_naming_it() -> None:
    with pytest.raises(ConfigurationError, match="write_key") as caught:
        create_margins()
    assert "TRAKET_WRITE_KEY" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_write_key_and_endpoint_fall_back_to_the_environment(
    ingest: Ingest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAKET_WRITE_KEY", WRITE_KEY)
    monkeypatch.setenv("TRAKET_ENDPOINT", ingest.url)
    margins = create_margins()
    margins.track({"provider": "openai", "model": "gpt-4.1"})
    assert margins.flush(timeout=5)
    headers, body = ingest.requests[0]
    assert headers["Authorization"] == f"Bearer {WRITE_KEY}"
    assert headers["Content-Type"] == "application/json"
    assert body["events"][0]["model"] == "gpt-4.1"


def test_default_endpoint_is_hosted_traket() -> None:
    margins = create_margins(write_key=WRITE_KEY, transport=InMemoryTransport())
    assert margins.endpoint == traket.DEFAULT_ENDPOINT
    assert traket.DEFAULT_ENDPOINT == "https://traket.ai/api/v1/usage/events"


def test_track_queues_and_flush_delivers_camel_case_events(ingest: Ingest) -> None:
    margins = make_client(ingest)
    margins.track(
        {
            "provider": "openai",
            "external_customer_id": "user_123",
            "feature": "generate_blog_post",
            "model": "gpt-5.4-mini",
            "cost": {"amount": 0.0042, "currency": "usd", "source": "manual_override"},
        }
    )
    assert ingest.requests == []
    assert margins.flush(timeout=5) is True
    (event,) = ingest.events
    assert event["externalCustomerId"] == "user_123"
    assert event["cost"] == {
        "amount": 0.0042,
        "currency": "usd",
        "source": "manual_override",
    }
    assert event["idempotencyKey"]
    assert event["occurredAt"].endswith("Z")


def test_capture_usage_and_camel_case_aliases_are_the_same_calls(
    ingest: Ingest,
) -> None:
    margins = traket.createMargins(write_key=WRITE_KEY, endpoint=ingest.url)
    margins.capture_usage({"provider": "openai", "feature": "a"})
    margins.captureUsage({"provider": "openai", "feature": "b"})
    margins.trackBatch(events=[{"provider": "openai", "feature": "c"}])
    margins.flush(timeout=5)
    assert sorted(event["feature"] for event in ingest.events) == ["a", "b", "c"]


def test_track_batch_takes_both_spellings(ingest: Ingest) -> None:
    margins = make_client(ingest)
    first = margins.track_batch(events=[{"provider": "openai"}] * 2)
    second = margins.track_batch({"events": [{"provider": "openai"}]})
    margins.flush(timeout=5)
    assert first["queued"] == 2
    assert second["queued"] == 1
    assert len(ingest.events) == 3
    assert len({event["idempotencyKey"] for event in ingest.events}) == 3


@pytest.mark.parametrize("count", [0, 101])
def test_track_batch_needs_1_to_100_events(ingest: Ingest, count: int) -> None:
    margins = make_client(ingest)
    with pytest.raises(InvalidEventError, match="1 to 100") as caught:
        margins.track_batch(events=[{"provider": "openai"}] * count)
    assert caught.value.field == "events"
    assert str(count) in caught.value.received


def test_track_batch_without_events_names_the_field(ingest: Ingest) -> None:
    margins = make_client(ingest)
    with pytest.raises(InvalidEventError) as caught:
        margins.track_batch({})
    assert caught.value.field == "events"


def test_one_malformed_event_rejects_the_batch_and_queues_nothing(
    ingest: Ingest,
) -> None:
    margins = make_client(ingest)
    batch = [
        {"provider": "openai"},
        {"provider": "openai", "usage": {"input_tokens": -5}},
    ]
    with pytest.raises(InvalidEventError) as caught:
        margins.track_batch(events=batch)
    assert caught.value.field == "events[1].usage.input_tokens"
    assert "-5" in str(caught.value)
    assert margins.stats().enqueued == 0


def test_bad_input_never_loses_or_corrupts_other_events(ingest: Ingest) -> None:
    margins = make_client(ingest)
    margins.track({"provider": "openai", "feature": "before"})
    with pytest.raises(InvalidEventError):
        margins.track({"provider": "openai", "durationMs": "slow"})
    margins.track({"provider": "openai", "feature": "after"})
    margins.flush(timeout=5)
    assert [event["feature"] for event in ingest.events] == ["before", "after"]


def test_the_0_1_0_transport_callable_still_works() -> None:
    calls: list[tuple[str, dict[str, str], bytes]] = []

    def transport(url: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        calls.append((url, dict(headers), body))
        return {"accepted": 1, "duplicates": 0, "rejected": []}

    margins = create_margins(
        write_key=WRITE_KEY, endpoint="https://ingest.example/e", transport=transport
    )
    margins.track({"provider": "openai"})
    assert margins.flush(timeout=5)
    url, headers, body = calls[0]
    assert url == "https://ingest.example/e"
    assert headers["Authorization"] == f"Bearer {WRITE_KEY}"
    assert json.loads(body)["events"][0]["provider"] == "openai"


def test_a_0_1_0_transport_callable_gets_plain_json_even_with_gzip_on() -> None:
    bodies: list[bytes] = []

    def transport(url: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        bodies.append(body)
        return {"accepted": 1, "duplicates": 0, "rejected": []}

    margins = create_margins(write_key=WRITE_KEY, transport=transport, gzip=True)
    margins.track({"provider": "openai"})
    assert margins.flush(timeout=5)
    assert json.loads(bodies[0])["events"][0]["provider"] == "openai"


def test_the_write_key_stays_out_of_repr() -> None:
    margins = create_margins(write_key=WRITE_KEY, transport=InMemoryTransport())
    assert WRITE_KEY not in repr(margins)


def test_openai_track_returns_the_response_and_records_what_it_reports() -> None:
    transport = InMemoryTransport()
    margins = create_margins(write_key=WRITE_KEY, transport=transport)
    result = response(
        id="resp_1",
        model="gpt-4.1-2025-04-14",
        _request_id="req_1",
        usage={"input_tokens": 9, "output_tokens": 12, "total_tokens": 21},
    )
    returned = margins.openai.track(
        lambda: result,
        {"external_customer_id": "user_1", "feature": "blog", "prompt_type": "post"},
    )
    assert returned is result
    margins.flush(timeout=5)
    (event,) = transport.events
    assert event["provider"] == "openai"
    assert event["operation"] == "responses.create"
    assert event["model"] == "gpt-4.1-2025-04-14"
    assert event["providerResponseId"] == "resp_1"
    assert event["providerRequestId"] == "req_1"
    assert event["usage"]["total_tokens"] == 21
    assert event["externalCustomerId"] == "user_1"
    assert event["attributionQuality"] == "explicit"
    assert event["promptType"] == "post"
    assert event["status"] == "success"
    assert isinstance(event["durationMs"], int)


def test_openai_track_reraises_the_original_exception_and_records_an_error() -> None:
    transport = InMemoryTransport()
    margins = create_margins(write_key=WRITE_KEY, transport=transport)
    failure = RuntimeError("provider said: the secret prompt was rejected")

    def call() -> None:
        raise failure

    with pytest.raises(RuntimeError) as caught:
        margins.openai.track(call, {"feature": "blog"})
    assert caught.value is failure
    margins.flush(timeout=5)
    (event,) = transport.events
    assert event["status"] == "error"
    assert event["metadata"]["error_type"] == "RuntimeError"
    assert "secret" not in json.dumps(event)


def test_openai_track_awaits_async_calls() -> None:
    transport = InMemoryTransport()
    margins = create_margins(write_key=WRITE_KEY, transport=transport)

    async def call() -> SimpleNamespace:
        await asyncio.sleep(0)
        return response(id="chatcmpl_1", model="gpt-4o", usage=None)

    result = asyncio.run(
        margins.openai.track(call, {"operation": "chat.completions.create"})
    )
    assert result.id == "chatcmpl_1"
    margins.flush(timeout=5)
    (event,) = transport.events
    assert event["operation"] == "chat.completions.create"
    assert "usage" not in event


def test_module_flush_uses_the_default_client_from_the_environment(
    ingest: Ingest, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert traket.flush(timeout=1) is True
    monkeypatch.setenv("TRAKET_WRITE_KEY", WRITE_KEY)
    monkeypatch.setenv("TRAKET_ENDPOINT", ingest.url)
    traket.get_client().track({"provider": "openai"})
    assert traket.flush(timeout=5) is True
    assert len(ingest.events) == 1


async def test_aflush_does_not_block_the_event_loop(ingest: Ingest) -> None:
    margins = make_client(ingest)
    margins.track({"provider": "openai"})
    assert await margins.aflush(timeout=5) is True
    assert len(ingest.events) == 1


def test_estimate_cost_attaches_an_estimate_before_sending() -> None:
    pytest.importorskip("genai_prices")
    transport = InMemoryTransport()
    margins = create_margins(
        write_key=WRITE_KEY, transport=transport, estimate_cost=True
    )
    margins.track(
        {
            "provider": "openai",
            "model": "gpt-4o-2024-08-06",
            "occurred_at": "2025-06-01T00:00:00Z",
            "usage": {
                "input_tokens": 1220,
                "input_tokens_details": {"cached_tokens": 1152},
                "output_tokens": 100,
            },
        }
    )
    margins.track(
        {
            "provider": "openai",
            "model": "gpt-4o",
            "cost": {"amount": 1.5, "currency": "usd", "source": "manual_override"},
        }
    )
    margins.flush(timeout=5)
    estimated, own = transport.events
    assert estimated["cost"]["amount"] == pytest.approx(0.00261)
    assert estimated["cost"]["currency"] == "usd"
    assert own["cost"]["source"] == "manual_override"


# -- every bad input names the field, what was expected and what was received -----


def _client() -> traket.Margins:
    return create_margins(write_key=WRITE_KEY, transport=InMemoryTransport())


BAD_EVENTS: list[tuple[Any, str, str, str]] = [
    # (event, field, words of what was expected, words of what was received)
    (None, "event", "a mapping", "None"),
    ([], "event", "a mapping", "list"),
    ({}, "provider", "non-empty string", "nothing"),
    ({"provider": ""}, "provider", "non-empty string", "an empty string"),
    ({"provider": 5}, "provider", "a string", "5 (int)"),
    ({"provider": "openai", "feature": 7}, "feature", "a string", "7 (int)"),
    ({"provider": "openai", "model": ["a"]}, "model", "a string", "list"),
    ({"provider": "openai", "status": "ok"}, "status", "success", "'ok'"),
    ({"provider": "openai", "duration_ms": -3}, "durationMs", "non-negative", "-3"),
    ({"provider": "openai", "durationMs": "slow"}, "durationMs", "number", "'slow'"),
    ({"provider": "openai", "occurred_at": "soon"}, "occurredAt", "ISO 8601", "soon"),
    (
        {"provider": "openai", "occurred_at": "2026-01-01T00:00:00"},
        "occurredAt",
        "time zone",
        "without time zone",
    ),
    ({"provider": "openai", "idempotency_key": ""}, "idempotencyKey", "non-empty", ""),
    ({"provider": "openai", "metadata": [1]}, "metadata", "mapping", "list"),
    ({"provider": "openai", "usage": "lots"}, "usage", "usage mapping", "'lots'"),
    ({"provider": "openai", "usage": {}}, "usage", "input_tokens", "dict of length 0"),
    (
        {"provider": "openai", "usage": {"input_tokens": True}},
        "usage.input_tokens",
        "non-negative integer",
        "True (bool)",
    ),
    (
        {"provider": "openai", "usage": {"output_tokens": 1.5}},
        "usage.output_tokens",
        "non-negative integer",
        "1.5 (float)",
    ),
    (
        {
            "provider": "openai",
            "usage": {"input_tokens": 3, "input_tokens_details": {"cached_tokens": -1}},
        },
        "usage.input_tokens_details.cached_tokens",
        "non-negative integer",
        "-1",
    ),
    ({"provider": "openai", "cost": "1"}, "cost", "a mapping", "'1'"),
    ({"provider": "openai", "cost": {"amount": "1"}}, "cost.amount", "number", "'1'"),
    (
        {"provider": "openai", "cost": {"amount": 1, "currency": "dollars"}},
        "cost.currency",
        "three-letter",
        "'dollars'",
    ),
    ({"provider": "openai", "units": {}}, "units", "a list", "dict"),
    (
        {"provider": "openai", "units": [{"quantity": "x"}]},
        "units[0].quantity",
        "number",
        "'x'",
    ),
]


@pytest.mark.parametrize(("event", "field", "expected", "received"), BAD_EVENTS)
def test_a_bad_event_is_an_error_naming_field_expected_and_received(
    event: Any, field: str, expected: str, received: str
) -> None:
    margins = _client()
    with pytest.raises(InvalidEventError) as caught:
        margins.track(event)
    error = caught.value
    assert (error.field, isinstance(error, ValueError)) == (field, True)
    assert expected in error.expected
    assert received in error.received
    assert f"{field!r}" in str(error)
    assert error.expected in str(error)
    assert error.received in str(error)
    assert margins.stats().enqueued == 0


@pytest.mark.parametrize(("event", "field", "expected", "received"), BAD_EVENTS)
def test_a_bad_event_in_a_batch_names_its_index_and_queues_nothing(
    event: Any, field: str, expected: str, received: str
) -> None:
    margins = _client()
    batch = [{"provider": "openai"}, {"provider": "openai"}, event]
    with pytest.raises(InvalidEventError) as caught:
        margins.track_batch(events=batch)
    path = "events[2]" if field == "event" else f"events[2].{field}"
    assert caught.value.field == path
    assert expected in caught.value.expected
    assert received in caught.value.received
    assert margins.stats().enqueued == 0


@pytest.mark.parametrize(
    ("call", "received"),
    [
        (lambda m: m.track_batch(events=5), "5 (int)"),
        (lambda m: m.track_batch({"events": 5}), "5 (int)"),
        (lambda m: m.track_batch({"events": None}), "None"),
        (lambda m: m.track_batch({"events": {}}), "dict"),
        (lambda m: m.track_batch({"events": "abc"}), "str"),
        (lambda m: m.track_batch(), "nothing"),
        (lambda m: m.track_batch("x"), "'x' (str)"),
        (lambda m: m.track_batch(5), "5 (int)"),
        (lambda m: m.track_batch([{"provider": "openai"}]), "list"),
        (
            lambda m: m.track_batch(
                {"events": [{"provider": "openai"}]}, events=[{"provider": "openai"}]
            ),
            "both",
        ),
    ],
)
def test_a_malformed_batch_is_an_error_naming_events(call: Any, received: str) -> None:
    margins = _client()
    with pytest.raises(InvalidEventError) as caught:
        call(margins)
    assert caught.value.field == "events"
    assert "events" in caught.value.expected
    assert received in caught.value.received
    assert margins.stats().enqueued == 0


def test_track_batch_takes_any_iterable_of_events() -> None:
    margins = _client()
    result = margins.track_batch(events=({"provider": "openai"} for _ in range(3)))
    assert result["queued"] == 3


@pytest.mark.parametrize("count", [1, 100])
def test_track_batch_takes_1_and_100_events(count: int) -> None:
    transport = InMemoryTransport()
    margins = create_margins(write_key=WRITE_KEY, transport=transport)
    result = margins.track_batch(events=[{"provider": "openai"}] * count)
    assert margins.flush(timeout=5)
    assert (result["queued"], len(transport.events)) == (count, count)


def test_openai_track_names_a_bad_attribution_before_calling() -> None:
    margins = _client()
    calls: list[int] = []
    attributions: list[tuple[Any, str, str]] = [
        ("acme", "attribution", "'acme' (str)"),
        ({"custmer": "acme"}, "custmer", "unknown field"),
        ({"metadata": "x"}, "metadata", "'x' (str)"),
        ({"feature": 5}, "feature", "5 (int)"),
    ]
    for attribution, field, received in attributions:
        with pytest.raises(InvalidEventError) as caught:
            margins.openai.track(lambda: calls.append(1), attribution)
        assert (caught.value.field, received in caught.value.received) == (field, True)
    assert calls == []


def test_openai_track_names_a_call_that_is_not_callable() -> None:
    with pytest.raises(TypeError, match=r"call: expected a callable.*5 \(int\)"):
        _client().openai.track(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "name", "received"),
    [
        ({"write_key": ""}, "write_key", "an empty string"),
        ({"write_key": 5}, "write_key", "int"),
        ({"endpoint": 5}, "endpoint", "int"),
        ({"endpoint": "ftp://ingest.example"}, "endpoint", "ftp://"),
        ({"endpoint": "http://ingest.example/e"}, "endpoint", "http://ingest.example"),
        ({"batch_size": 0}, "batch_size", "0"),
        ({"batch_size": 0.4}, "batch_size", "0.4"),
        ({"batch_size": "10"}, "batch_size", "'10'"),
        ({"flush_interval_ms": -1}, "flush_interval_ms", "-1"),
        ({"flush_interval_ms": "x"}, "flush_interval_ms", "'x'"),
        ({"transport": 5}, "transport", "int"),
        ({"on_error": 5}, "on_error", "5 (int)"),
    ],
)
def test_a_bad_option_is_a_configuration_error_naming_it(
    options: dict[str, Any], name: str, received: str
) -> None:
    options.setdefault("write_key", WRITE_KEY)
    with pytest.raises(ConfigurationError) as caught:
        create_margins(**options)
    message = str(caught.value)
    assert message.startswith(f"{name}: expected ")
    assert received in message


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("wk_live\r\nX-Evil: 1", "a line break at position 8"),
        ("ключ-секрет", "a non-ASCII character at position 1"),
        ("wk_live_abc ", "whitespace at position 12"),
        ("wk\tlive", "whitespace at position 3"),
        ("wk\x1blive", "a control character at position 3"),
        ("wk\x7flive", "a control character at position 3"),
    ],
)
@pytest.mark.parametrize("via_environment", [False, True])
def test_a_write_key_that_cannot_travel_in_a_header_is_refused_unquoted(
    monkeypatch: pytest.MonkeyPatch, key: str, problem: str, via_environment: bool
) -> None:
    options: dict[str, Any] = {"transport": InMemoryTransport()}
    if via_environment:
        monkeypatch.setenv("TRAKET_WRITE_KEY", key)
    else:
        options["write_key"] = key

    with pytest.raises(ConfigurationError) as caught:
        create_margins(**options)

    message = str(caught.value)
    assert message.startswith("write_key")
    assert "printable ASCII" in message
    assert problem in message
    assert ("TRAKET_WRITE_KEY" in message) == via_environment
    for part in ("wk_live", "ключ", "секрет", "X-Evil", "live"):
        assert part not in message


def test_a_printable_ascii_write_key_is_kept_as_given() -> None:
    key = "wk_live_AZaz09-._~+/=!#$%&'*^`|"
    margins = create_margins(write_key=key, transport=InMemoryTransport())
    assert margins.write_key == key


@pytest.mark.parametrize(
    ("options", "name", "received"),
    [
        ({"gzip": "yes"}, "gzip", "'yes' (str)"),
        ({"gzip": 1}, "gzip", "1 (int)"),
        ({"estimate_cost": "false"}, "estimate_cost", "'false' (str)"),
        ({"estimate_cost": None}, "estimate_cost", "None"),
        ({"allow_insecure_http": "no"}, "allow_insecure_http", "'no' (str)"),
        ({"request_timeout": 0}, "request_timeout", "0 (int)"),
        ({"request_timeout": -1.5}, "request_timeout", "-1.5 (float)"),
        ({"request_timeout": float("inf")}, "request_timeout", "inf"),
        ({"request_timeout": "10"}, "request_timeout", "'10' (str)"),
        ({"request_timeout": True}, "request_timeout", "True (bool)"),
        ({"endpoint": "https://ingest.example:99999/e"}, "endpoint", "out of range"),
        ({"endpoint": "https://ingest.example:http/e"}, "endpoint", "'http'"),
        ({"endpoint": "https://ingest.example:0/e"}, "endpoint", "port 0"),
        ({"endpoint": "http://[::1/e"}, "endpoint", "Invalid IPv6 URL"),
    ],
)
@pytest.mark.parametrize("transport", [None, InMemoryTransport])
def test_a_bad_flag_timeout_or_port_is_a_configuration_error_naming_it(
    options: dict[str, Any], name: str, received: str, transport: Any
) -> None:
    options = {"write_key": WRITE_KEY, **options}
    if transport is not None:
        options["transport"] = transport()

    with pytest.raises(ConfigurationError) as caught:
        create_margins(**options)

    message = str(caught.value)
    assert message.startswith(f"{name}: expected ")
    assert received in message


def test_an_endpoint_port_error_never_quotes_the_rest_of_the_url() -> None:
    with pytest.raises(ConfigurationError) as caught:
        create_margins(
            write_key=WRITE_KEY, endpoint="https://user:s3cret@ingest.example:x/e"
        )

    assert "s3cret" not in str(caught.value)


def test_an_endpoint_port_from_the_environment_is_checked_the_same_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRAKET_ENDPOINT", "http://127.0.0.1:87870/api/v1/usage/events")

    with pytest.raises(ConfigurationError) as caught:
        create_margins(write_key=WRITE_KEY)

    assert str(caught.value).startswith("endpoint (from TRAKET_ENDPOINT): expected")
    assert "out of range" in str(caught.value)


def test_an_endpoint_with_a_valid_port_is_kept() -> None:
    endpoint = "https://ingest.example:8443/api/v1/usage/events"
    margins = create_margins(write_key=WRITE_KEY, endpoint=endpoint)
    assert margins.endpoint == endpoint


def test_a_write_key_is_never_quoted_in_an_error() -> None:
    with pytest.raises(ConfigurationError) as caught:
        create_margins(write_key=b"wk_bytes_secret")  # type: ignore[arg-type]
    assert "wk_bytes_secret" not in str(caught.value)


def test_an_unknown_option_is_named_with_the_ones_there_are() -> None:
    with pytest.raises(
        TypeError, match=r"create_margins\(\).*'bogus'.*max_queue_events"
    ):
        create_margins(write_key=WRITE_KEY, bogus=1)


def test_a_fractional_flush_interval_is_kept_not_rounded_to_zero() -> None:
    margins = create_margins(
        write_key=WRITE_KEY, transport=InMemoryTransport(), flush_interval_ms=0.5
    )
    assert margins.flush_interval_ms == 0.5


@pytest.mark.parametrize("timeout", ["soon", -1, float("nan"), True])
def test_flush_names_a_bad_timeout(timeout: Any) -> None:
    margins = _client()
    with pytest.raises(ValueError, match=r"timeout: expected None or a number"):
        margins.flush(timeout)
    with pytest.raises(ValueError, match=r"timeout: expected None or a number"):
        asyncio.run(margins.aflush(timeout))
    with pytest.raises(ValueError, match=r"timeout: expected None or a number"):
        traket.flush(timeout)


@pytest.mark.parametrize(
    "value",
    [
        [{"role": "user", "content": "the secret prompt"}],
        {"content": "the secret prompt"},
        ("the secret prompt",),
        b"the secret prompt",
        response(output_text="the secret prompt"),
    ],
)
def test_an_error_describes_a_structured_value_by_type_never_its_content(
    value: Any,
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        _client().track({"provider": "openai", "model": value})
    assert "secret" not in str(caught.value)
    assert type(value).__name__ in caught.value.received


def test_track_sends_the_event_as_given_whatever_the_scope() -> None:
    transport = InMemoryTransport()
    margins = create_margins(write_key=WRITE_KEY, transport=transport)
    with traket.attribute(customer="acme", feature="search"):
        margins.track({"provider": "openai", "feature": "given"})
    assert margins.flush(timeout=5)
    (event,) = transport.events
    assert event["feature"] == "given"
    assert "externalCustomerId" not in event
    assert "attributionQuality" not in event


def test_a_batch_size_over_100_is_capped_at_what_the_ingest_takes() -> None:
    margins = create_margins(
        write_key=WRITE_KEY, transport=InMemoryTransport(), batch_size=500
    )
    assert margins.batch_size == 100


def test_the_event_passed_in_is_never_modified() -> None:
    import copy

    event = {
        "provider": "openai",
        "external_customer_id": "acme",
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        "metadata": {"plan": "pro", "prompt": "dropped", "nested": {"a": 1}},
        "unknown": "dropped",
    }
    before = copy.deepcopy(event)
    margins = _client()
    margins.track(event)
    margins.track_batch(events=[event])
    assert event == before


def test_capture_events_keeps_events_and_bodies_and_restores_the_default() -> None:
    from traket.testing import capture_events

    before = traket.configure(write_key=WRITE_KEY, transport=InMemoryTransport())
    with capture_events() as captured:
        assert traket.get_client() is captured.client
        traket.get_client().track({"provider": "openai", "feature": "a"})
        traket.get_client().track_batch(events=[{"provider": "openai"}] * 2)
        assert [e.get("feature") for e in captured.events] == ["a", None, None]
        assert b'"feature":"a"' in b"".join(captured.bodies).replace(b" ", b"")
    assert traket.get_client() is before
