"""Minimal, fast HTTP ingests on 127.0.0.1 for `bench_delivery.py`.

One asyncio loop, in a daemon thread, serves three listeners: a fast ingest that
answers at once, a distant one that answers each request after a fixed delay, and a
black hole that reads requests and never answers. Every POST is answered 200 with the
body INGEST.md describes (an empty body on `/v1/...`, where the OTLP exporter would
try to read protobuf), and the events in it are counted by a marker string that each
contender puts exactly once in every event. `GET /_bench/stats` returns the counts;
`POST /_bench/reset` zeroes them. Standard library only: the runner of every venv can
import it, and the parser does no more than the benchmark needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import threading
import time
import zlib
from dataclasses import dataclass

MARKER = b"zqbenchevt"

_MAX_HEAD = 64 * 1024


@dataclass
class Counts:
    """What one listener has received since its last reset."""

    requests: int = 0
    events: int = 0
    body_bytes: int = 0
    first: float = 0.0
    last: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "events": self.events,
            "body_bytes": self.body_bytes,
            "first": self.first,
            "last": self.last,
        }


def _answer(status: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n\r\n"
    )
    return head.encode("ascii") + body


def _decode(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


class _Listener:
    """One ingest: answers after `delay` seconds, or never when `delay` is None."""

    def __init__(self, delay: float | None) -> None:
        self.delay = delay
        self.counts = Counts()
        self.port = 0

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        except asyncio.CancelledError:  # shutting down; 3.11's streams would log it
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return False
        if not head:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()

        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(reader)
        else:
            body = await reader.readexactly(int(headers.get("content-length", "0")))

        if path.startswith("/_bench/"):
            writer.write(self._control(method, path))
            await writer.drain()
            return True

        events = _decode(body, headers.get("content-encoding", "")).count(MARKER)
        now = time.monotonic()
        counts = self.counts
        counts.requests += 1
        counts.events += events
        counts.body_bytes += len(body)
        counts.first = counts.first or now
        counts.last = now

        if self.delay is None:  # a black hole: never answer, wait for the close
            while await reader.read(65536):
                pass
            return False
        if self.delay:
            await asyncio.sleep(self.delay)
        if path.startswith("/v1/"):
            writer.write(_answer("200 OK", b"", "application/x-protobuf"))
        else:
            answer = {"accepted": events, "duplicates": 0, "rejected": []}
            payload = json.dumps(answer).encode()
            writer.write(_answer("200 OK", payload, "application/json"))
        await writer.drain()
        return headers.get("connection", "").lower() != "close"

    def _control(self, method: str, path: str) -> bytes:
        if method == "POST" and path == "/_bench/reset":
            self.counts = Counts()
        payload = json.dumps(self.counts.as_dict()).encode()
        return _answer("200 OK", payload, "application/json")


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readline()).split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readline()
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readline()


class Ingests:
    """The fast, distant and black-hole ingests, served from one background loop."""

    def __init__(self, distant_delay: float = 0.05) -> None:
        self.fast = _Listener(0.0)
        self.distant = _Listener(distant_delay)
        self.blackhole = _Listener(None)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="bench-ingests", daemon=True
        )

    def start(self) -> Ingests:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the benchmark ingests did not start")
        return self

    def urls(self) -> dict[str, str]:
        """Return the base URL of each listener, by role."""
        return {
            "fast": f"http://127.0.0.1:{self.fast.port}",
            "distant": f"http://127.0.0.1:{self.distant.port}",
            "blackhole": f"http://127.0.0.1:{self.blackhole.port}",
        }

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        servers = []
        for listener in (self.fast, self.distant, self.blackhole):
            server = self._loop.run_until_complete(
                asyncio.start_server(
                    listener.handle, "127.0.0.1", 0, backlog=1024, limit=_MAX_HEAD
                )
            )
            listener.port = server.sockets[0].getsockname()[1]
            servers.append(server)
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        """Cancel every connection's task, then stop the loop and its thread."""

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(cancel_all(), self._loop)
        self._thread.join(5)
