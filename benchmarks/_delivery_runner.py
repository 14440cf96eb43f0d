"""Run one benchmark phase for one contender; print its result as one JSON line.

`bench_delivery.py` starts this script once per (contender, phase), under the
project's venv for `traket` and under the peers' venv for the others, so that each
measurement starts from a fresh interpreter with nothing but its own SDK loaded. The
only argument is a JSON spec (see `bench_delivery.py`). The process leaves with
`os._exit` once the result is written, so that no SDK's exit hook waits on an
ingest that was told never to answer.
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import os
import sys
import threading
import time
import tracemalloc
import urllib.request
from array import array
from collections.abc import Callable
from typing import Any, Protocol

MARKER = "zqbenchevt"  # counted by `_delivery_ingest.py`; once in every event
WRITE_KEY = "bench-write-key"
QUEUE_EVENTS = 20_000  # every contender's queue bound: traket's default
BURST = 10  # latency producers sleep to their schedule once per burst
SETTLE = 3.0  # seconds the memory phase lets a queue settle before it measures


class Contender(Protocol):
    """What a phase needs: build an input (untimed), make the call (timed), flush."""

    def make(self, i: int) -> Any: ...

    def call(self, item: Any) -> None: ...

    def flush(self, timeout: float) -> None: ...

    def held(self) -> int | None: ...


def _usage(i: int) -> dict[str, Any]:
    return {
        "input_tokens": 1200 + i % 97,
        "output_tokens": 310,
        "total_tokens": 1510 + i % 97,
        "input_tokens_details": {"cached_tokens": 256},
        "output_tokens_details": {"reasoning_tokens": 64},
    }


def _traket_event(i: int) -> dict[str, Any]:
    """A typical usage event: what an OpenAI call made under `attribute()` yields."""
    return {
        "provider": "openai",
        "model": "gpt-4o-mini-2024-07-18",
        "operation": "responses.create",
        "status": "success",
        "externalCustomerId": f"cus_{i % 1000:04d}",
        "feature": MARKER,
        "environment": "production",
        "providerResponseId": f"resp_{i:012d}",
        "durationMs": 412,
        "usage": _usage(i),
        "metadata": {"plan": "pro", "region": "eu-west-1"},
    }


class Traket:
    """The working tree's `traket` (the reference), with its defaults."""

    def __init__(self, url: str, hold: bool) -> None:
        import traket

        self.module_file = traket.__file__
        self.client = traket.create_margins(
            write_key=WRITE_KEY,
            endpoint=f"{url}/api/v1/usage/events",
            max_queue_events=QUEUE_EVENTS,
        )
        self._track = self.client.track

    make = staticmethod(_traket_event)

    def call(self, item: dict[str, Any]) -> None:
        self._track(item)

    def flush(self, timeout: float) -> None:
        self.client.flush(timeout)

    def held(self) -> int | None:
        return self.client.stats().pending


class Traket010:
    """The published `traket-sdk` 0.1.0: sends on the caller's thread every 20."""

    def __init__(self, url: str, hold: bool) -> None:
        # The peers' venv's `traket` is 0.1.0; loaded by name so that type checkers
        # do not take it for the working tree's.
        traket = importlib.import_module("traket")
        self.module_file = traket.__file__
        options: dict[str, Any] = {}
        if hold:  # it has no background sender: keep everything in its list
            options = {"batch_size": 10**9, "flush_interval_ms": 10**9}
        self.client = traket.create_margins(
            write_key=WRITE_KEY, endpoint=f"{url}/api/v1/usage/events", **options
        )
        self._track = self.client.track

    make = staticmethod(_traket_event)

    def call(self, item: dict[str, Any]) -> None:
        self._track(item)

    def flush(self, timeout: float) -> None:
        self.client.flush()

    def held(self) -> int | None:
        queue = getattr(self.client, "_queue", None)
        return len(queue) if queue is not None else None


class PostHog:
    """`posthog.Client` with its defaults, its queue raised to traket's bound."""

    def __init__(self, url: str, hold: bool) -> None:
        posthog = importlib.import_module("posthog")

        logging.getLogger("posthog").setLevel(logging.CRITICAL)
        self.module_file = posthog.__file__
        self.client = posthog.Client(
            "phc_bench_project_key", host=url, max_queue_size=QUEUE_EVENTS
        )
        self._capture = self.client.capture

    @staticmethod
    def make(i: int) -> tuple[str, dict[str, Any]]:
        event = _traket_event(i)
        customer = event.pop("externalCustomerId")
        event["feature"] = "chat"
        return customer, event

    def call(self, item: tuple[str, dict[str, Any]]) -> None:
        self._capture(MARKER, distinct_id=item[0], properties=item[1])

    def flush(self, timeout: float) -> None:
        self.client.flush(timeout_seconds=timeout)

    def held(self) -> int | None:
        queue = getattr(self.client, "queue", None)
        size = getattr(queue, "qsize", None)
        return size() if callable(size) else None


class OtelBatchSpanProcessor:
    """OpenTelemetry's `BatchSpanProcessor` and OTLP/HTTP exporter, one span each."""

    def __init__(self, url: str, hold: bool) -> None:
        exporter = importlib.import_module(
            "opentelemetry.exporter.otlp.proto.http.trace_exporter"
        )
        trace = importlib.import_module("opentelemetry.sdk.trace")
        export = importlib.import_module("opentelemetry.sdk.trace.export")

        self.module_file = export.__file__
        self.provider = trace.TracerProvider()
        self.processor = export.BatchSpanProcessor(
            exporter.OTLPSpanExporter(endpoint=f"{url}/v1/traces"),
            max_queue_size=QUEUE_EVENTS,
        )
        self.provider.add_span_processor(self.processor)
        self._start = self.provider.get_tracer("bench").start_span

    @staticmethod
    def make(i: int) -> dict[str, Any]:
        return {
            "gen_ai.system": "openai",
            "gen_ai.operation.name": "responses.create",
            "gen_ai.request.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.response.id": f"resp_{i:012d}",
            "gen_ai.usage.input_tokens": 1200 + i % 97,
            "gen_ai.usage.output_tokens": 310,
            "gen_ai.usage.cached_tokens": 256,
            "gen_ai.usage.reasoning_tokens": 64,
            "customer.id": f"cus_{i % 1000:04d}",
            "feature": "chat",
            "environment": "production",
            "duration_ms": 412,
        }

    def call(self, item: dict[str, Any]) -> None:
        self._start(MARKER, attributes=item).end()

    def flush(self, timeout: float) -> None:
        self.provider.force_flush(int(timeout * 1000))

    def held(self) -> int | None:
        inner = getattr(self.processor, "_batch_processor", self.processor)
        queue = getattr(inner, "_queue", None)
        return len(queue) if queue is not None else None


CONTENDERS: dict[str, Callable[[str, bool], Contender]] = {
    "traket": Traket,
    "traket-0.1.0": Traket010,
    "posthog": PostHog,
    "otel-bsp": OtelBatchSpanProcessor,
}


def _ingest(url: str, action: str) -> dict[str, Any]:
    method = "POST" if action == "reset" else "GET"
    request = urllib.request.Request(f"{url}/_bench/{action}", b"", method=method)
    with urllib.request.urlopen(request, timeout=5) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def _percentiles(samples: list[int]) -> dict[str, float]:
    samples.sort()
    count = len(samples)

    def at(q: float) -> float:
        return samples[min(count - 1, int(q * count))] / 1000

    return {
        "n": count,
        "p50_us": at(0.50),
        "p99_us": at(0.99),
        "p999_us": at(0.999),
        "max_us": samples[-1] / 1000,
        "mean_us": sum(samples) / count / 1000,
    }


def latency(contender: Contender, spec: dict[str, Any]) -> dict[str, Any]:
    """Time each call from `threads` producers pacing `rate` events/s in all."""
    threads = spec["threads"]
    per_thread = spec["events"] // threads
    interval = threads / spec["rate"]
    seconds = spec["seconds"]
    results: list[array[int]] = [array("q") for _ in range(threads)]
    errors = [0] * threads
    barrier = threading.Barrier(threads)

    for i in range(200):  # start the sender thread, open connections
        contender.call(contender.make(i))
    time.sleep(0.1)

    def produce(k: int) -> None:
        samples = results[k]
        make, call, clock = contender.make, contender.call, time.perf_counter_ns
        base = (k + 1) * 1_000_000
        barrier.wait()
        start = time.perf_counter()
        deadline = start + seconds
        for i in range(per_thread):
            if i % BURST == 0:
                now = time.perf_counter()
                if now >= deadline:
                    break
                due = start + i * interval
                if due > now:
                    time.sleep(due - now)
            item = make(base + i)
            began = clock()
            try:
                call(item)
            except Exception:
                errors[k] += 1
            samples.append(clock() - began)

    workers = [
        threading.Thread(target=produce, args=(k,), daemon=True) for k in range(threads)
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(seconds + 30)
    elapsed = time.perf_counter() - started

    merged = [sample for samples in results for sample in samples]
    result = _percentiles(merged)
    result.update(errors=sum(errors), seconds=round(elapsed, 3))
    return result


def throughput(contender: Contender, spec: dict[str, Any]) -> dict[str, Any]:
    """Track as fast as one thread can, flush, and count what the ingest received."""
    url, count, seconds = spec["url"], spec["events"], spec["seconds"]
    for i in range(100):
        contender.call(contender.make(i))
    contender.flush(2.0)
    _ingest(url, "reset")

    make, call, clock = contender.make, contender.call, time.perf_counter
    errors = 0
    tracked = 0
    started = clock()
    deadline = started + seconds
    for i in range(count):
        if i & 127 == 0 and clock() >= deadline:
            break
        try:
            call(make(i))
        except Exception:
            errors += 1
        tracked += 1
    produced = clock() - started
    contender.flush(max(1.0, seconds))
    elapsed = clock() - started

    delivered = int(_ingest(url, "stats")["events"])
    return {
        "tracked": tracked,
        "delivered": delivered,
        "undelivered": tracked - delivered,
        "errors": errors,
        "produce_seconds": round(produced, 3),
        "seconds": round(elapsed, 3),
        "events_per_s": delivered / elapsed,
        "track_per_s": tracked / produced,
    }


def memory(contender: Contender, spec: dict[str, Any]) -> dict[str, Any]:
    """Measure what each queued event holds while the ingest never answers."""
    count = spec["events"]
    for i in range(600):  # let the sender take batches and hang on the ingest
        contender.call(contender.make(i))
    time.sleep(0.3)
    held_before = contender.held()

    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        contender.call(contender.make(1_000_000 + i))
    gc.collect()
    at_once = tracemalloc.get_traced_memory()[0] - base
    # What the queue holds while the outage lasts, once a sender that compacts
    # waiting events (traket does, on a spare thread) has caught up with the burst.
    time.sleep(SETTLE)
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()

    held_after = contender.held()
    return {
        "events": count,
        "bytes": grown,
        "bytes_per_event": grown / count,
        "bytes_per_event_at_once": at_once / count,
        "held_before": held_before,
        "held_after": held_after,
    }


PHASES = {"latency": latency, "throughput": throughput, "memory": memory}


def main() -> None:
    spec = json.loads(sys.argv[1])
    contender = CONTENDERS[spec["contender"]](spec["url"], spec["phase"] == "memory")
    module_file = str(getattr(contender, "module_file", ""))
    result: dict[str, Any] = {"module": module_file, "python": sys.version.split()[0]}
    try:
        result.update(PHASES[spec["phase"]](contender, spec))
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
