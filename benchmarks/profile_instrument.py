"""Break traket's per-call and per-chunk cost into its parts, without a network.

A companion to `bench_instrument_peers.py` for whoever works on `traket/_instrument`:
the replay-server benchmark says how much traket adds; this says where it goes.
It runs in the project's venv only, in one process:

1. the whole call, in process: a bare and an instrumented `openai.OpenAI` whose
   HTTP transport answers from memory (no server, no sockets), CPU time per call;
2. the pieces of the hot path, each timed alone with `timeit` (best of 7), on
   the parsed objects of the recordings in `examples/recordings`.

It reads private traket modules (`_usage`, `_event`, `_instrument._extract`,
`_instrument._providers`); when one of them changes shape, the line that uses it
reports the error and the others still run.

    .venv/bin/python benchmarks/profile_instrument.py
"""

from __future__ import annotations

import inspect
import json
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402
from openai._models import construct_type  # noqa: E402

from examples.replay import load_recordings  # noqa: E402

try:  # openai 3.x ships its own fork of httpx
    import httpx2 as httpx
except ImportError:  # pragma: no cover - openai 1.x and 2.x
    import httpx  # type: ignore[no-redef]


def _recording(name: str) -> Any:
    by_name = {r.name: r for r in load_recordings(ROOT / "examples" / "recordings")}
    return by_name[name]


def _client(body: bytes) -> openai.OpenAI:
    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "application/json", "x-request-id": "req_1"}
        return httpx.Response(200, headers=headers, content=body)

    return openai.OpenAI(
        base_url="http://127.0.0.1:9/v1",
        api_key="sk-bench",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(answer)),
    )


def _cpu_per_call(call: Callable[[], Any], batch: int = 200, repeat: int = 9) -> float:
    """Return the median over `repeat` batches of the process CPU µs per call."""
    for _ in range(batch):
        call()
    batches = []
    for _ in range(repeat):
        started = time.process_time_ns()
        for _ in range(batch):
            call()
        batches.append((time.process_time_ns() - started) / batch / 1000)
    return sorted(batches)[repeat // 2]


def whole_calls() -> None:
    print("## whole call, in process (CPU µs per call, median of 9 x 200)\n")
    chat_body = _recording("chat_basic_gpt4o_mini").body.encode()
    responses_body = _recording("responses_basic_gpt41_mini").body.encode()
    chat_client, responses_client = _client(chat_body), _client(responses_body)
    messages: Any = [{"role": "user", "content": "hi"}]

    def chat() -> Any:
        return chat_client.chat.completions.create(
            model="gpt-4o-mini", messages=messages
        )

    def responses() -> Any:
        return responses_client.responses.create(model="gpt-4.1-mini", input="hi")

    bare = {"chat": _cpu_per_call(chat), "responses": _cpu_per_call(responses)}

    import traket
    from traket.testing import InMemoryTransport

    traket.configure(write_key="bench", transport=InMemoryTransport())
    traket.instrument()
    metered = {"chat": _cpu_per_call(chat), "responses": _cpu_per_call(responses)}
    traket.uninstrument()
    for name in bare:
        added = metered[name] - bare[name]
        print(
            f"- {name}: bare {bare[name]:.1f} µs, traket {metered[name]:.1f} µs, "
            f"added {added:.1f} µs ({100 * added / bare[name]:+.1f}%)"
        )


def _best(statement: Callable[[], Any], number: int = 2000) -> float:
    return min(timeit.repeat(statement, number=number, repeat=7)) / number * 1e6


def pieces() -> None:
    print("\n## pieces of the hot path (µs, best of 7)\n")
    from openai.types.chat import ChatCompletion
    from openai.types.responses import Response, ResponseTextDeltaEvent

    chat: Any = construct_type(
        type_=ChatCompletion, value=json.loads(_recording("chat_basic_gpt4o_mini").body)
    )
    response: Any = construct_type(
        type_=Response, value=json.loads(_recording("responses_basic_gpt41_mini").body)
    )
    delta = ResponseTextDeltaEvent.construct(
        type="response.output_text.delta",
        sequence_number=5,
        item_id="msg_1",
        output_index=0,
        content_index=0,
        delta=" word",
        logprobs=[],
    )
    client = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="sk-bench")

    from traket import _event, _scope, _usage
    from traket._instrument import _extract, _providers

    # `read_result` gained a keyword-only `responses` flag; accept both shapes.
    keywords = inspect.signature(_extract.read_result).parameters

    def read(result: Any, *, responses: bool) -> None:
        if "responses" in keywords:
            _extract.read_result(result, {}, {}, responses=responses)
        else:
            _extract.read_result(result, {}, {})

    fields = {
        "provider": "openai",
        "operation": "chat.completions.create",
        "model": "gpt-4o-mini-2024-07-18",
        "providerResponseId": "chatcmpl-1",
        "providerRequestId": "req_1",
        "status": "success",
        "durationMs": 3,
        "metadata": {"stream": False, "requested_model": "gpt-4o-mini"},
    }
    statements: list[tuple[str, Callable[[], Any]]] = [
        ("getattr(model, present field, None)", lambda: getattr(delta, "delta", None)),
        (
            "getattr(model, missing field, None)",
            lambda: getattr(delta, "response", None),
        ),
        ("model.__dict__.get(missing field)", lambda: delta.__dict__.get("response")),
        ("usage_from_openai(chat usage)", lambda: _usage.usage_from_openai(chat.usage)),
        (
            "usage_from_openai(responses usage)",
            lambda: _usage.usage_from_openai(response.usage),
        ),
        ("read_result(chat completion)", lambda: read(chat, responses=False)),
        ("read_result(response)", lambda: read(response, responses=True)),
        ("provider_of(client)", lambda: _providers.provider_of(client)),
        ("current_scope()", _scope.current_scope),
        (
            "build_event(fields + wire usage)",
            lambda: _event.build_event(
                {**fields, "usage": _usage.usage_from_openai(chat.usage)}
            ),
        ),
        ("utc_now_iso()", _event.utc_now_iso),
    ]
    for label, statement in statements:
        try:
            print(f"- {label}: {_best(statement):.2f}")
        except Exception as error:  # a private module changed shape
            print(f"- {label}: failed ({type(error).__name__}: {error})")


if __name__ == "__main__":
    whole_calls()
    pieces()
