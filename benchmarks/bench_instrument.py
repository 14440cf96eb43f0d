"""What the instrumentation adds to an OpenAI call and to each streamed chunk.

    python benchmarks/bench_instrument.py [--rounds 15] [--calls 200]
        [--chunks 2000] [--peers]

Everything runs against the local replay server with the real `openai` client:

- a non-streamed chat call, bare and metered (events built and queued by a real
  `Margins` with an in-memory transport), in alternating rounds;
- a streamed chat call of `--chunks` chunks, bare and metered, giving the time
  added per chunk;
- the metering proxy alone over chunks already parsed, which isolates its own
  per-chunk cost from the network and the SDK's parsing.

`--peers` runs the same first two measurements in subprocesses with OpenLLMetry's
(`opentelemetry-instrumentation-openai`) and Langfuse's (`langfuse.openai`)
instrumentation, when they are installed; their patches cannot be removed, so each
gets a process of its own. Bare and metered rounds alternate and the fastest round
of each is compared; no threshold is asserted (this is a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402

from examples.replay import Recording  # noqa: E402

MESSAGES = [{"role": "user", "content": "hello"}]

CHAT_BODY = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4.1-nano-2025-04-14",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22},
}


def _chunk(index: int, usage: dict[str, int] | None = None) -> str:
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4.1-nano-2025-04-14",
        "choices": [] if usage else [{"index": 0, "delta": {"content": f"t{index}"}}],
        "usage": usage,
    }
    return "data: " + json.dumps(chunk) + "\n\n"


def recordings(chunks: int) -> tuple[Recording, Recording]:
    headers = {"content-type": "application/json", "x-request-id": "req_bench"}
    chat = Recording(
        "bench_chat",
        "POST",
        "/v1/chat/completions",
        200,
        headers,
        json.dumps(CHAT_BODY),
    )
    usage = {
        "prompt_tokens": 20,
        "completion_tokens": chunks,
        "total_tokens": 20 + chunks,
    }
    body = (
        "".join(_chunk(i) for i in range(chunks))
        + _chunk(0, usage)
        + "data: [DONE]\n\n"
    )
    stream_headers = {**headers, "content-type": "text/event-stream"}
    stream = Recording(
        "bench_stream", "POST", "/v1/chat/completions", 200, stream_headers, body
    )
    return chat, stream


class ServerProcess:
    """A replay server in a process of its own, answering with one recording.

    In-process, the server thread and the client share the GIL, and every handoff
    (5 ms switch interval) would swamp what is being measured.
    """

    _CODE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from examples.replay import Recording, ReplayServer
with ReplayServer() as server:
    server.respond_with(Recording(**json.loads(sys.stdin.readline())))
    print(server.base_url, flush=True)
    sys.stdin.read()
"""

    def __init__(self, recording: Recording) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", self._CODE, str(ROOT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(json.dumps(recording.__dict__) + "\n")
        self._process.stdin.flush()
        self.base_url = self._process.stdout.readline().strip()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=10)


def _time(fn: Callable[[], Any], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def measure(
    on: Callable[[], None],
    off: Callable[[], None],
    *,
    rounds: int,
    calls: int,
    chunks: int,
    alternate: bool = True,
) -> dict[str, float]:
    """Alternate bare and metered rounds; return the fastest of each, in seconds.

    With `alternate=False` (an instrumentation that cannot be switched off) every
    bare round runs first, then `on()` once, then every metered round.
    """
    chat, stream = recordings(chunks)
    with ServerProcess(chat) as chat_server, ServerProcess(stream) as stream_server:
        client = openai.OpenAI(
            base_url=chat_server.base_url, api_key="k", max_retries=0
        )
        stream_client = client.with_options(base_url=stream_server.base_url)
        return _rounds(client, stream_client, on, off, rounds, calls, alternate)


def _rounds(
    client: Any,
    stream_client: Any,
    on: Callable[[], None],
    off: Callable[[], None],
    rounds: int,
    calls: int,
    alternate: bool,
) -> dict[str, float]:
    def call() -> None:
        client.chat.completions.create(model="gpt-4.1-nano", messages=MESSAGES)

    def streamed() -> None:
        for _ in stream_client.chat.completions.create(
            model="gpt-4.1-nano", messages=MESSAGES, stream=True
        ):
            pass

    results: dict[str, list[float]] = {
        k: [] for k in ("bare", "metered", "sbare", "smetered")
    }
    streams = max(calls // 20, 3)

    def bare_round() -> None:
        off()
        results["bare"].append(_time(call, calls))
        results["sbare"].append(_time(streamed, streams))

    def metered_round() -> None:
        on()
        results["metered"].append(_time(call, calls))
        results["smetered"].append(_time(streamed, streams))

    if alternate:
        for _ in range(rounds):
            bare_round()
            metered_round()
        off()
    else:
        for _ in range(rounds):
            bare_round()
        for _ in range(rounds):
            metered_round()
    # The fastest round is the least disturbed by the rest of the machine.
    return {k: min(v) for k, v in results.items()}


def proxy_only(chunks: int) -> float:
    """Seconds the metering proxy adds per chunk, over chunks already parsed."""
    from openai.types.chat import ChatCompletionChunk

    from traket._instrument._calls import Call, Config
    from traket._instrument._streams import MeteredStream

    class Options:
        url, method = "/chat/completions", "post"

        def __init__(self) -> None:
            self.json_data = {"model": "m", "stream": True}

    parsed = [
        ChatCompletionChunk.model_validate(json.loads(_chunk(i)[6:]))
        for i in range(chunks)
    ]
    client = openai.OpenAI(api_key="k")

    class Source:
        def __init__(self) -> None:
            self._it = iter(parsed)

        def __next__(self) -> Any:
            return next(self._it)

    def bare() -> None:
        for _ in iter(Source().__next__, None):
            pass

    def metered() -> None:
        call = Call(
            client, Config(margins=_Sink()), "chat.completions.create", Options()
        )
        for _ in MeteredStream(Source(), call):
            pass

    bare_t = statistics.median(_time(bare, 1) for _ in range(30))
    metered_t = statistics.median(_time(metered, 1) for _ in range(30))
    return (metered_t - bare_t) / chunks


class _Sink:
    """Takes observations and drops them: the instrumentation's cost alone."""

    def record_observed(self, *args: Any, **kwargs: Any) -> None:
        pass


def wrapper_only(repeat: int = 20_000) -> float:
    """Seconds the `request` wrapper adds to a call whose HTTP part costs nothing."""
    from openai.types.chat import ChatCompletion

    from traket._instrument import _calls, instrument, uninstrument

    completion = ChatCompletion.model_validate(CHAT_BODY)
    client = openai.OpenAI(api_key="k")

    class Options:
        url, method, headers = "/chat/completions", "post", None

        def __init__(self) -> None:
            self.json_data = {"model": "m", "messages": MESSAGES}

    options = Options()

    def original(cast_to: Any, options: Any, **kwargs: Any) -> Any:
        return completion

    instrument(margins=_Sink())
    try:
        bare = min(
            _time(lambda: original(ChatCompletion, options), repeat) for _ in range(5)
        )
        metered = min(
            _time(
                lambda: _calls.request(original, client, (ChatCompletion, options), {}),
                repeat,
            )
            for _ in range(5)
        )
    finally:
        uninstrument()
    return metered - bare


def run_traket(args: argparse.Namespace, *, sink: bool) -> dict[str, float]:
    import traket
    from traket.testing import InMemoryTransport

    margins: Any = (
        _Sink()
        if sink
        else traket.create_margins(write_key="bench", transport=InMemoryTransport())
    )
    return measure(
        lambda: traket._instrument.instrument(margins=margins),
        traket._instrument.uninstrument,
        rounds=args.rounds,
        calls=args.calls,
        chunks=args.chunks,
    )


def run_peer(name: str, args: argparse.Namespace) -> dict[str, float] | None:
    """Measure a peer in a subprocess; None when it is not installed."""
    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
sys.argv = ["bench", "--rounds", "{args.rounds}", "--calls", "{args.calls}",
            "--chunks", "{args.chunks}", "--peer-child", "{name}"]
import runpy
runpy.run_path({str(Path(__file__))!r}, run_name="__main__")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ
    )
    if result.returncode != 0:
        print(f"  {name}: not measured ({result.stderr.strip().splitlines()[-1:]})")
        return None
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def peer_child(name: str, args: argparse.Namespace) -> None:
    """Instrument with a peer once; compare with its instrumentation switched off."""
    if name == "openllmetry":
        from opentelemetry import trace
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        provider = TracerProvider()
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        instrumentor = OpenAIInstrumentor()

        def on() -> None:
            instrumentor.instrument(tracer_provider=provider)

        def off() -> None:
            if instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.uninstrument()
            exporter.clear()

    elif name == "langfuse":
        os.environ.setdefault("LANGFUSE_PUBLIC_KEY", "pk-lf-bench")
        os.environ.setdefault("LANGFUSE_SECRET_KEY", "sk-lf-bench")
        os.environ.setdefault("LANGFUSE_HOST", "http://127.0.0.1:9")

        def on() -> None:
            import langfuse.openai  # noqa: F401  (patches openai for good)

        def off() -> None:
            pass

    else:
        raise SystemExit(f"unknown peer {name}")

    result = measure(
        on,
        off,
        rounds=args.rounds,
        calls=args.calls,
        chunks=args.chunks,
        alternate=name != "langfuse",
    )
    print(json.dumps(result))


def report(name: str, r: dict[str, float], chunks: int) -> None:
    added = (r["metered"] - r["bare"]) / r["bare"] * 100
    per_chunk = (r["smetered"] - r["sbare"]) / (chunks + 1) * 1e6
    print(
        f"  {name:<12} call {r['bare'] * 1e3:7.3f} ms bare, "
        f"{r['metered'] * 1e3:7.3f} ms metered: {added:+6.2f}% | "
        f"stream {per_chunk:+7.3f} us/chunk"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--peers", action="store_true")
    parser.add_argument("--peer-child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.peer_child:
        peer_child(args.peer_child, args)
        return

    print(f"openai {openai.__version__}, python {sys.version.split()[0]}")
    report("traket", run_traket(args, sink=False), args.chunks)
    report("  (no sink)", run_traket(args, sink=True), args.chunks)
    print(f"  wrapper alone {wrapper_only() * 1e6:+.2f} us/call (no HTTP, no sink)")
    print(f"  proxy alone   {proxy_only(args.chunks) * 1e6:+.3f} us/chunk")
    if args.peers:
        for peer in ("openllmetry", "langfuse"):
            result = run_peer(peer, args)
            if result is not None:
                report(peer, result, args.chunks)


if __name__ == "__main__":
    main()
