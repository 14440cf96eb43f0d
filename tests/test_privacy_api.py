"""The explicit API keeps the canary in the process too.

`tests/test_privacy.py` covers instrumented calls. Here one unique string goes
everywhere a caller of `track`, `track_batch`, `capture_usage`, `openai.track` and
`attribute` could put text that must not leave: sensitive metadata keys, unknown
top-level keys, nested metadata, unknown keys of `cost` and `units`, the response
a tracked callable returns, the message of the exception it raises, and the write
key. It must appear neither in the bytes the ingest receives (bodies, and headers
other than `Authorization`) nor in any log record at DEBUG, nor in an error the
API raises for a bad event.
"""

from __future__ import annotations

import gzip
import json
import logging
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import traket
from traket import DeliveryFailure, InvalidEventError

CANARY = f"canary-{uuid.uuid4().hex}"
WRITE_KEY = f"wk_live_{CANARY}"
WRONG_KEY = f"wk_revoked_{CANARY}"
PATH = "/api/v1/usage/events"

SENSITIVE = {
    "prompt": CANARY,
    "system_message": CANARY,
    "user_input": CANARY,
    "output_text": CANARY,
    "response": CANARY,
    "completion": CANARY,
    "content": CANARY,
    "image_url": CANARY,
    "file_id": CANARY,
    "tool_call": CANARY,
    "arguments": CANARY,
    "api_key": CANARY,
    "OpenAI-API-Key": CANARY,
    "authorization": CANARY,
    "password": CANARY,
    "client_secret": CANARY,
    "access_token": CANARY,
}


def leaky_event(**extra: Any) -> dict[str, Any]:
    """An event with the canary wherever the contract says it is dropped."""
    return {
        "provider": "openai",
        "model": "gpt-4.1-mini",
        "external_customer_id": "acme",
        "feature": "support-chat",
        "usage": {"input_tokens": 10, "output_tokens": 5},
        # unknown top-level keys
        "prompt": CANARY,
        "messages": [{"role": "user", "content": CANARY}],
        "input": CANARY,
        "output": {"text": CANARY},
        "headers": {"Authorization": f"Bearer {CANARY}"},
        # sensitive metadata keys, nested metadata, non-scalar values
        "metadata": {
            **SENSITIVE,
            "plan": "pro",
            "nested": {"note": CANARY},
            "listed": [CANARY],
        },
        # unknown keys of cost and units, sensitive keys in their metadata
        "cost": {
            "amount": 0.001,
            "currency": "usd",
            "source": "manual_override",
            "note": CANARY,
            "metadata": {"prompt": CANARY},
        },
        "units": [
            {
                "quantity": 1,
                "unit_name": "image",
                "description": CANARY,
                "metadata": {"content": CANARY},
            }
        ],
        **extra,
    }


class Ingest:
    """Accepts `WRITE_KEY`, answers 401 to any other; keeps every request."""

    def __init__(self, server: HTTPServer) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        server.expect_request(PATH, method="POST").respond_with_handler(self._handle)
        self.url = str(server.url_for(PATH))

    def _handle(self, request: Request) -> Response:
        body = request.get_data()
        self.requests.append((dict(request.headers), body))
        if request.headers.get("Authorization") != f"Bearer {WRITE_KEY}":
            return Response('{"error": "invalid write key"}', 401)
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        count = len(json.loads(body)["events"])
        answer = {"accepted": count, "duplicates": 0, "rejected": []}
        return Response(json.dumps(answer), 200, content_type="application/json")

    def received(self) -> bytes:
        """Every byte the ingest got but the Authorization headers, bodies unzipped."""
        parts = []
        for headers, body in self.requests:
            if headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            others = {k: v for k, v in headers.items() if k != "Authorization"}
            parts += [json.dumps(others).encode(), body]
        return b"\n".join(parts)

    def events(self) -> list[dict[str, Any]]:
        decoded = []
        for headers, body in self.requests:
            if headers.get("Authorization") != f"Bearer {WRITE_KEY}":
                continue
            if headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            decoded += json.loads(body)["events"]
        return decoded


def every_log_line(caplog: pytest.LogCaptureFixture) -> str:
    """All records as a handler would write them, tracebacks included."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(record) for record in caplog.records)


class ProviderError(Exception):
    """What a provider client raises: a message quoting the request."""

    status_code = 400
    code = "context_length_exceeded"


@pytest.mark.parametrize("gzipped", [False, True], ids=["json", "gzip"])
def test_the_canary_never_leaves_through_the_explicit_api(
    httpserver: HTTPServer, caplog: pytest.LogCaptureFixture, gzipped: bool
) -> None:
    ingest = Ingest(httpserver)
    failures: list[DeliveryFailure] = []
    caplog.set_level(logging.DEBUG)

    margins = traket.create_margins(
        write_key=WRITE_KEY, endpoint=ingest.url, gzip=gzipped
    )
    margins.track(leaky_event())
    margins.capture_usage(leaky_event(feature="capture"))
    margins.captureUsage(leaky_event(feature="capture-camel"))
    margins.track_batch(events=[leaky_event(feature="batch")] * 2)
    margins.trackBatch({"events": [leaky_event(feature="batch-mapping")]})

    # A batch with one bad event is refused whole; the error quotes the bad
    # field only, never the rest of the batch.
    with pytest.raises(InvalidEventError) as refused:
        margins.track_batch(events=[leaky_event(), leaky_event(status=[CANARY])])
    assert refused.value.field == "events[1].status"

    answer = SimpleNamespace(
        id="resp_1",
        model="gpt-4.1-mini-2025-04-14",
        output_text=CANARY,
        choices=[SimpleNamespace(message=SimpleNamespace(content=CANARY))],
        usage={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
    )
    with traket.attribute(customer="acme", metadata={"message": CANARY}):
        returned = margins.openai.track(
            lambda: answer, {"feature": "tracked", "metadata": {"prompt": CANARY}}
        )

        def failing_call() -> None:
            raise ProviderError(f"request too long: {CANARY}")

        with pytest.raises(ProviderError) as raised:
            margins.openai.track(failing_call, {"feature": "tracked-error"})
    assert returned is answer
    assert CANARY in str(raised.value)
    assert margins.flush(timeout=10)

    # A second client with a revoked key: the 401 is reported, never the key.
    revoked = traket.create_margins(
        write_key=WRONG_KEY, endpoint=ingest.url, on_error=failures.append
    )
    revoked.track(leaky_event(feature="revoked"))
    revoked.flush(timeout=10)

    events = ingest.events()
    assert len(events) == 8
    assert {e["feature"] for e in events} >= {"tracked", "tracked-error", "batch"}
    assert all(e.get("metadata", {}).get("plan", "pro") == "pro" for e in events)
    assert [f.reason for f in failures] == ["unauthorized"]
    auth = [headers["Authorization"] for headers, _ in ingest.requests]
    assert f"Bearer {WRITE_KEY}" in auth
    assert f"Bearer {WRONG_KEY}" in auth

    assert CANARY.encode() not in ingest.received()
    assert CANARY not in every_log_line(caplog)
    assert any(r.name.startswith("traket") for r in caplog.records), (
        "expected traket's own records (the 401 at least) to be checked"
    )
    assert CANARY not in str(refused.value)
    assert CANARY not in repr(failures[0])
    assert CANARY not in repr(margins) + repr(revoked)
    margins.shutdown(timeout=2)
    revoked.shutdown(timeout=2)


def test_the_kept_labels_are_the_safe_ones() -> None:
    from traket.testing import capture_events

    with capture_events() as captured:
        traket.get_client().track(leaky_event())
    (event,) = captured.events
    assert event["metadata"] == {"plan": "pro"}
    assert event["cost"] == {
        "amount": 0.001,
        "currency": "usd",
        "source": "manual_override",
    }
    assert event["units"] == [{"quantity": 1, "unitName": "image"}]
    assert set(event) <= {
        "provider",
        "model",
        "externalCustomerId",
        "feature",
        "usage",
        "metadata",
        "cost",
        "units",
        "idempotencyKey",
        "occurredAt",
    }
