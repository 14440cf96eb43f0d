"""Local ingests that misbehave on cue, for the delivery tests.

`FakeIngest` runs on pytest-httpserver and stores each event once per idempotency key,
as the real ingest does; faults are scripted per request. `RawIngest` works at the
socket level for what an HTTP server will not do on purpose: store a batch and hang up
without answering, or reset the connection. Both listen on 127.0.0.1 only.
"""

from __future__ import annotations

import gzip
import json
import socket
import socketserver
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Container, Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from traket._retry import RetryPolicy
from traket._sender import BatchSender
from traket._transport import HttpTransport

WRITE_KEY = "tk_live_SECRET-canary-7f3a"
FAST_RETRY = RetryPolicy(initial_backoff=0.02, max_backoff=0.1, max_retry_after=0.3)

Fault = Callable[[list[dict[str, Any]]], "Response | None"]


def make_event(index: int = 0, **extra: Any) -> dict[str, Any]:
    """Return a wire event with its identity fixed, as the event builder makes it."""
    return {
        "provider": "openai",
        "model": "gpt-4.1-mini",
        "externalCustomerId": f"cust-{index % 7}",
        "feature": "summaries",
        "idempotencyKey": str(uuid.uuid4()),
        "occurredAt": "2026-12-03T10:00:00.000Z",
        "usage": {"input_tokens": 10 + index, "output_tokens": 5, "total_tokens": 15},
        **extra,
    }


class Store:
    """Events kept once per idempotency key, with how often each key arrived."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict[str, dict[str, Any]] = {}
        self.arrivals: dict[str, int] = {}

    def add(self, events: list[dict[str, Any]]) -> int:
        with self.lock:
            duplicates = 0
            for event in events:
                key = event["idempotencyKey"]
                duplicates += key in self.events
                self.events.setdefault(key, event)
                self.arrivals[key] = self.arrivals.get(key, 0) + 1
            return duplicates

    def assert_exactly(self, expected: list[dict[str, Any]]) -> None:
        """Check that exactly `expected` is stored, each event unchanged."""
        with self.lock:
            assert len(self.events) == len(expected)
            for event in expected:
                assert self.events[event["idempotencyKey"]] == event


class FakeIngest:
    """An ingest on pytest-httpserver that answers as INGEST.md says, or faults."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.url = server.url_for("/api/v1/usage/events")
        self.store = Store()
        self.script: deque[Fault] = deque()
        self.fault: Fault | None = None  # applied to every request while set
        self.max_body: int | None = None
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        server.expect_request(
            "/api/v1/usage/events", method="POST"
        ).respond_with_handler(self._handle)

    def then(self, *faults: Fault) -> FakeIngest:
        """Answer the next requests with `faults`, one each, then normally."""
        self.script.extend(faults)
        return self

    def _handle(self, request: Request) -> Response:
        raw = request.get_data()
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            fault = self.script.popleft() if self.script else self.fault
            self.bodies.append(raw)
            self.headers.append(dict(request.headers))
        try:
            return self._answer(request, raw, fault)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _answer(self, request: Request, raw: bytes, fault: Fault | None) -> Response:
        if request.headers.get("Authorization") != f"Bearer {WRITE_KEY}":
            return Response(status=401)
        if request.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        if self.max_body is not None and len(raw) > self.max_body:
            return Response(status=413)
        events = json.loads(raw)["events"]
        if fault is not None:
            answer = fault(events)
            if answer is not None:
                return answer
        return self.accept(events)

    def accept(
        self, events: list[dict[str, Any]], rejected: tuple[int, ...] = ()
    ) -> Response:
        taken = [event for index, event in enumerate(events) if index not in rejected]
        duplicates = self.store.add(taken)
        body = {
            "accepted": len(taken) - duplicates,
            "duplicates": duplicates,
            "rejected": [
                {
                    "index": index,
                    "idempotencyKey": events[index]["idempotencyKey"],
                    "error": "usage.input_tokens: expected an integer",
                }
                for index in rejected
            ],
        }
        return Response(json.dumps(body), status=200, content_type="application/json")


def status(code: int, retry_after: str | None = None) -> Fault:
    """Answer with `code` (and `Retry-After`) without storing anything."""
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return lambda events: Response('{"error":"no"}', status=code, headers=headers)


def slow(seconds: float) -> Fault:
    """Store the batch, but only after `seconds` (longer than the client waits)."""

    def fault(events: list[dict[str, Any]]) -> None:
        time.sleep(seconds)

    return fault


@pytest.fixture(scope="session")
def _http_server() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ingest(_http_server: HTTPServer) -> Iterator[FakeIngest]:
    """A threaded fake ingest on 127.0.0.1, fresh for each test."""
    _http_server.clear()
    yield FakeIngest(_http_server)
    _http_server.clear()


class _RawHandler(socketserver.BaseRequestHandler):
    server: _RawServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                return
            body += chunk

        owner = self.server.owner
        with owner.lock:
            mode = owner.script.popleft() if owner.script else "ok"
            owner.requests += 1
        events = json.loads(body)["events"]
        if mode == "reset":
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            sock.close()
            return
        owner.store.add(events)
        if mode == "store_then_drop":
            sock.close()
            return
        answer = json.dumps({"accepted": len(events), "rejected": []}).encode()
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: "
            + str(len(answer)).encode()
            + b"\r\n\r\n"
            + answer
        )
        sock.close()


class _RawServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: RawIngest


class RawIngest:
    """A socket-level ingest; `script` holds "reset" or "store_then_drop"."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.script: deque[str] = deque()
        self.store = Store()
        self.requests = 0
        self._server = _RawServer(("127.0.0.1", 0), _RawHandler)
        self._server.owner = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/events"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def raw_ingest() -> Iterator[RawIngest]:
    """A socket-level fake ingest on 127.0.0.1."""
    server = RawIngest()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A URL whose server accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/events"
    finally:
        listener.close()


@pytest.fixture(autouse=True)
def senders() -> Iterator[list[BatchSender]]:
    """Collect the senders a test makes; shut each down and check no thread survives.

    Sender threads that were running before the test (other modules' clients) are not
    this test's to answer for.
    """
    before = set(_sender_threads())
    made: list[BatchSender] = []
    yield made
    for sender in made:
        sender.shutdown(timeout=0.3)
    assert_no_sender_threads(ignore=before)


def _sender_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "traket-sender"]


def assert_no_sender_threads(
    grace: float = 2.0, ignore: Container[threading.Thread] = ()
) -> None:
    """Wait briefly for sender threads to end, then fail if any is still running."""
    deadline = time.monotonic() + grace
    while True:
        alive = [t for t in _sender_threads() if t not in ignore]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    if alive:
        raise AssertionError(f"sender threads still running: {alive}")


def sender_for(url: str, made: list[BatchSender], **options: Any) -> BatchSender:
    """Make a sender with test-sized timeouts and backoffs, shut down after the test."""
    options.setdefault("flush_interval", 0.02)
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("request_timeout", 2.0)
    sender = BatchSender(HttpTransport(url, WRITE_KEY), **options)
    made.append(sender)
    return sender
