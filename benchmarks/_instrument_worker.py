"""One contender of `bench_instrument_peers.py`, alone in its own process.

Started by the benchmark with the interpreter of the venv the contender lives in
(the project's for the bare client and traket, the peers' venv for OpenLLMetry
and Langfuse). It installs one instrumentation, makes one `openai.OpenAI` client
pointed at the benchmark's replay server, and then answers commands, one JSON
object per line on stdin, with one JSON object per line on its original stdout
(anything the libraries print goes to stderr instead).

Commands: `run` (time `n` calls of a scenario), `collect` (keep one real
stream's items for the memory scenarios), `count` (flush and count what the
instrumentation recorded), `profile` (cProfile `n` calls) and `quit`.

Every socket is held to the loopback interface: a connection or a name lookup
anywhere else raises, so a misconfigured peer fails loudly instead of reaching
the internet.
"""

from __future__ import annotations

import gc
import gzip
import io
import ipaddress
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any, TextIO

_LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _is_loopback(host: object) -> bool:
    if host is None or host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False


def _hold_to_loopback() -> None:
    """Make every connection and name lookup outside 127.0.0.0/8 and ::1 fail."""
    connect = socket.socket.connect
    connect_ex = socket.socket.connect_ex
    getaddrinfo = socket.getaddrinfo

    def check(address: Any) -> None:
        if isinstance(address, tuple) and not _is_loopback(address[0]):
            raise OSError(f"benchmark: refusing a connection to {address[0]!r}")

    def guarded_connect(self: socket.socket, address: Any) -> None:
        check(address)
        connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return connect_ex(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_loopback(host):
            raise socket.gaierror(f"benchmark: refusing to look up {host!r}")
        return getaddrinfo(host, *args, **kwargs)

    sock: Any = socket.socket
    sock.connect = guarded_connect
    sock.connect_ex = guarded_connect_ex
    socket.getaddrinfo = guarded_getaddrinfo


# -- contenders: each installs itself and returns a "count what was recorded" ----


def _setup_bare(config: dict[str, Any]) -> Callable[[], int]:
    return lambda: 0


class _CountingTransport:
    """An ingest in memory that counts the events of each batch it is sent.

    `traket.testing.InMemoryTransport` parses every batch back into dicts, work
    a real transport does not do and the peers' in-memory exporters have no
    counterpart for. Here the batch is serialized, compressed if configured and
    handed over as for a real ingest, and only counted; the answer is the
    ingest's, which the sender reads as it would from the network.
    """

    def __init__(self) -> None:
        self.events = 0

    def send(self, payload: bytes, *, gzipped: bool, timeout: float) -> Any:
        from traket._transport import TransportResponse

        body = gzip.decompress(payload) if gzipped else payload
        count = body.count(b'"idempotencyKey":')
        self.events += count
        answer = f'{{"accepted":{count},"duplicates":0,"rejected":[]}}'
        return TransportResponse(200, {}, answer.encode())

    def reset(self) -> None:
        """Nothing to forget after a fork."""

    def close(self) -> None:
        """Nothing to release."""


def _setup_traket(config: dict[str, Any]) -> Callable[[], int]:
    import traket

    transport = _CountingTransport()
    margins = traket.configure(write_key="bench", transport=transport)
    traket.instrument()

    def count() -> int:
        margins.flush(10.0)
        return transport.events

    return count


def _setup_openllmetry(config: dict[str, Any]) -> Callable[[], int]:
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    OpenAIInstrumentor().instrument(tracer_provider=provider)

    def count() -> int:
        provider.force_flush(10_000)
        return len(exporter.get_finished_spans())

    return count


def _setup_langfuse(config: dict[str, Any]) -> Callable[[], int]:
    from langfuse import Langfuse
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    exporter = InMemorySpanExporter()
    # Spans go to memory; anything else the client sends goes to the local sink.
    client = Langfuse(
        public_key="pk-lf-bench",
        secret_key="sk-lf-bench",
        base_url=config["sink_url"],
        span_exporter=exporter,
    )
    import langfuse.openai  # noqa: F401  (patches the openai resources on import)

    def count() -> int:
        client.flush()
        return len(exporter.get_finished_spans())

    return count


CONTENDERS: dict[str, Callable[[dict[str, Any]], Callable[[], int]]] = {
    "bare": _setup_bare,
    "traket": _setup_traket,
    "openllmetry": _setup_openllmetry,
    "langfuse": _setup_langfuse,
}

_VERSIONED = (
    "openai",
    "httpx",
    "httpx2",
    "wrapt",
    "opentelemetry-instrumentation-openai",
    "opentelemetry-sdk",
    "langfuse",
)


def _versions() -> dict[str, str]:
    found = {}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


# -- the calls being timed -----------------------------------------------------------

# A scenario makes one call and returns (items the app saw, wall ns, CPU ns); the
# times are None when the whole call is to be timed from outside.
Scenario = Callable[[], tuple[int, int | None, int | None]]

# What the memory streams yield instead of parsing the wire (None: the wire).
_replayed: list[list[Any] | None] = [None]
# The pre-parsed items of each memory scenario, kept by `collect`.
_memory: dict[str, list[Any]] = {}


def _install_memory_streams() -> None:
    """Let `openai.Stream` yield pre-parsed items instead of reading the wire.

    Every instrumentation here wraps the `Stream` object (a proxy, a wrapped
    `_iterator`, a hook on `__iter__`) and none replaces `__stream__`, so the items
    still pass through each of them exactly as real chunks do. The HTTP exchange
    still happens; its body is simply not read.
    """
    from openai import Stream

    original = Stream.__stream__

    def replay(self: Any) -> Any:
        items = _replayed[0]
        if items is None:
            yield from original(self)
            return
        self.response.close()
        yield from items

    Stream.__stream__ = replay  # type: ignore[method-assign]


def _scenarios(client: Any) -> dict[str, Scenario]:
    """Return one callable per scenario."""
    messages = [{"role": "user", "content": "Where is my refund for order A-10472?"}]
    clock, cpu = time.perf_counter_ns, time.process_time_ns

    def chat() -> tuple[int, int | None, int | None]:
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        return 0, None, None

    def responses() -> tuple[int, int | None, int | None]:
        client.responses.create(
            model="gpt-4.1-mini",
            instructions="You are a concise support assistant for an online shop.",
            input="When will I get my refund for order A-10472?",
        )
        return 0, None, None

    def open_chat_stream() -> Any:
        # The caller asks for usage itself, so every contender sees the same
        # chunks and traket has nothing to add to the request or hide.
        return client.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )

    def open_responses_stream() -> Any:
        return client.responses.create(
            model="gpt-4.1-nano",
            input="Tell the customer where to find their invoice.",
            stream=True,
        )

    def whole(open_stream: Callable[[], Any]) -> Scenario:
        def run() -> tuple[int, int | None, int | None]:
            items = 0
            for _ in open_stream():
                items += 1
            return items, None, None

        return run

    def iteration_only(open_stream: Callable[[], Any]) -> Scenario:
        def run() -> tuple[int, int | None, int | None]:
            stream = open_stream()
            items = 0
            wall, used = clock(), cpu()
            for _ in stream:
                items += 1
            return items, clock() - wall, cpu() - used

        return run

    return {
        "chat": chat,
        "responses": responses,
        "chat_stream": whole(open_chat_stream),
        "responses_stream": whole(open_responses_stream),
        "chat_stream_memory": iteration_only(open_chat_stream),
        "responses_stream_memory": iteration_only(open_responses_stream),
    }


def _collect(client: Any, scenario: str, command: dict[str, Any]) -> int:
    """Keep the items of one real stream, the middle ones repeated, for replay."""
    opener: Callable[[], Any] = {
        "chat_stream_memory": lambda: client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        ),
        "responses_stream_memory": lambda: client.responses.create(
            model="gpt-4.1-nano", input="hi", stream=True
        ),
    }[scenario]
    _replayed[0] = None
    items = list(opener())
    head, tail, repeat = command["head"], command["tail"], command["repeat"]
    middle = items[head : len(items) - tail]
    _memory[scenario] = items[:head] + middle * repeat + items[len(items) - tail :]
    return len(_memory[scenario])


def _time(call: Scenario, n: int) -> tuple[list[int], list[int], int]:
    gc.collect()
    clock, cpu = time.perf_counter_ns, time.process_time_ns
    walls, cpus = [], []
    items = 0
    for _ in range(n):
        wall, used = clock(), cpu()
        items, inner_wall, inner_cpu = call()
        wall, used = clock() - wall, cpu() - used
        walls.append(wall if inner_wall is None else inner_wall)
        cpus.append(used if inner_cpu is None else inner_cpu)
    return walls, cpus, items


def _profile(call: Scenario, n: int, limit: int) -> str:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        call()
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats("traket", limit)
    return text.getvalue()


def _serve(
    out: TextIO, scenarios: dict[str, Scenario], client: Any, count: Any
) -> None:
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "quit":
            return
        scenario = command.get("scenario", "")
        _replayed[0] = _memory.get(scenario)
        if op == "run":
            walls, cpus, items = _time(scenarios[scenario], command["n"])
            answer: dict[str, Any] = {"ns": walls, "cpu": cpus, "chunks": items}
        elif op == "collect":
            answer = {"items": _collect(client, scenario, command)}
        elif op == "count":
            answer = {"recorded": count()}
        elif op == "profile":
            text = _profile(scenarios[scenario], command["n"], command["limit"])
            answer = {"text": text}
        else:
            answer = {"error": f"unknown op {op!r}"}
        _replayed[0] = None
        out.write(json.dumps(answer) + "\n")
        out.flush()


def main() -> None:
    contender, config = sys.argv[1], json.loads(sys.argv[2])
    # Answers go to a private copy of stdout; library output goes to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    _hold_to_loopback()

    count = CONTENDERS[contender](config)
    import openai

    client = openai.OpenAI(
        base_url=config["base_url"], api_key="sk-bench", max_retries=0
    )
    _install_memory_streams()
    scenarios = _scenarios(client)
    out.write(json.dumps({"ready": True, "versions": _versions()}) + "\n")
    out.flush()
    _serve(out, scenarios, client, count)


if __name__ == "__main__":
    main()
