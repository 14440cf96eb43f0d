"""Assert on the events your code produces, without a network or an ingest.

    from traket.testing import capture_events

    def test_summaries_are_attributed(openai_client):
        with capture_events() as captured:
            traket.instrument(openai_client)
            with traket.attribute(customer="acme", feature="summaries"):
                summarize(openai_client, "...")
        assert captured.events[0]["feature"] == "summaries"

`capture_events` installs a default client whose transport keeps every request
body in memory, and flushes it when the block ends.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._client import Margins, swap_default
from ._transport import TransportResponse

__all__ = ["CapturedEvents", "InMemoryTransport", "capture_events"]


class InMemoryTransport:
    """A transport that accepts every batch and keeps the events it was sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []

    def send(
        self, payload: bytes, *, gzipped: bool, timeout: float
    ) -> TransportResponse:
        """Keep the batch's events and answer as an ingest that took them all."""
        body = gzip.decompress(payload) if gzipped else payload
        events = json.loads(body)["events"]
        with self._lock:
            self.bodies.append(body)
            self._events.extend(events)
        answer = {"accepted": len(events), "duplicates": 0, "rejected": []}
        return TransportResponse(200, {}, json.dumps(answer).encode())

    def reset(self) -> None:
        """Nothing to forget after a fork."""

    def close(self) -> None:
        """Nothing to release."""

    @property
    def events(self) -> list[dict[str, Any]]:
        """The events received so far, in wire form, oldest first."""
        with self._lock:
            return list(self._events)


class CapturedEvents:
    """The events a `capture_events` block produced."""

    def __init__(self, client: Margins, transport: InMemoryTransport) -> None:
        self.client = client
        self._transport = transport

    def flush(self, timeout: float | None = 5.0) -> None:
        """Deliver everything tracked so far to memory."""
        self.client.flush(timeout)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event delivered so far, flushing first."""
        self.flush()
        return self._transport.events

    @property
    def bodies(self) -> list[bytes]:
        """Every request body the client sent, as bytes (for privacy checks)."""
        self.flush()
        return list(self._transport.bodies)


@contextmanager
def capture_events(**options: Any) -> Iterator[CapturedEvents]:
    """Make a capturing client the default for the block; restore the old one."""
    transport = InMemoryTransport()
    options.setdefault("write_key", "traket-testing")
    client = Margins(transport=transport, **options)
    previous = swap_default(client)
    captured = CapturedEvents(client, transport)
    try:
        yield captured
    finally:
        client.shutdown(timeout=5.0)
        swap_default(previous)
