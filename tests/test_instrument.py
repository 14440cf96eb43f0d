"""instrument() / uninstrument(): who is metered, once, and what the app still sees."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import wrapt
from recordings import ROOT, Capture, json_recording, recording

import traket
from examples.replay import ReplayServer
from traket import _scope
from traket._instrument import _calls, _patches, instrument, uninstrument

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def chat(server: ReplayServer) -> ReplayServer:
    server.respond_with(recording("chat_basic_gpt41_nano"))
    return server


def _client(server: ReplayServer, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0, **kwargs)


def _create(client: Any) -> Any:
    return client.chat.completions.create(model="gpt-4.1-nano", messages=MESSAGES)


def test_every_client_is_metered_when_none_is_given(chat: ReplayServer) -> None:
    before = _client(chat)
    capture = Capture()
    instrument(margins=capture)
    after = _client(chat)

    _create(before)
    _create(after)

    assert len(capture.events) == 2


def test_a_given_client_and_its_copies_only_are_metered(chat: ReplayServer) -> None:
    metered, other = _client(chat), _client(chat)
    capture = Capture()
    instrument(metered, margins=capture)

    _create(other)
    _create(metered)
    _create(metered.with_options(timeout=3))
    _create(metered.copy())

    assert len(capture.events) == 3


def test_instrumenting_twice_never_double_counts(chat: ReplayServer) -> None:
    client = _client(chat)
    first, second = Capture(), Capture()
    instrument(margins=first)
    instrument(margins=second)
    instrument(client, margins=second)

    _create(client)

    assert first.events == []
    assert len(second.events) == 1
    assert len(_patches.applied()) == len(
        {(p.owner, p.attribute) for p in _patches.applied()}
    )


def test_uninstrument_restores_the_originals(chat: ReplayServer) -> None:
    from openai._base_client import AsyncAPIClient, SyncAPIClient

    originals = (
        vars(SyncAPIClient)["request"],
        vars(AsyncAPIClient)["request"],
        vars(openai.OpenAI)["copy"],
    )
    capture = Capture()
    instrument(margins=capture)
    assert vars(SyncAPIClient)["request"] is not originals[0]

    uninstrument()
    _create(_client(chat))

    assert (
        vars(SyncAPIClient)["request"],
        vars(AsyncAPIClient)["request"],
        vars(openai.OpenAI)["copy"],
    ) == originals
    assert capture.events == []
    assert _patches.applied() == []


def test_uninstrumenting_a_client_keeps_the_others(chat: ReplayServer) -> None:
    one, two = _client(chat), _client(chat)
    capture = Capture()
    instrument(one, margins=capture)
    instrument(two, margins=capture)

    uninstrument(one)
    _create(one)
    _create(two)

    assert len(capture.events) == 1


def test_a_patch_wrapped_again_by_someone_else_is_disabled_not_removed(
    chat: ReplayServer,
) -> None:
    from openai._base_client import SyncAPIClient

    capture = Capture()
    instrument(margins=capture)
    ours = vars(SyncAPIClient)["request"]
    theirs = wrapt.FunctionWrapper(ours, lambda w, i, a, k: w(*a, **k))
    SyncAPIClient.request = theirs  # type: ignore[method-assign]
    try:
        uninstrument()
        _create(_client(chat))
        assert vars(SyncAPIClient)["request"] is theirs
        assert capture.events == []
    finally:
        SyncAPIClient.request = ours.__wrapped__  # type: ignore[method-assign]


def test_openai_imported_after_traket_is_metered(chat: ReplayServer) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from traket._instrument import instrument
        assert "openai" not in sys.modules
        events = []
        class Capture:
            def record_observed(self, observed, *, scope, defaults):
                events.append(observed)
        instrument(margins=Capture())
        import openai
        client = openai.OpenAI(base_url={chat.base_url!r}, api_key="k", max_retries=0)
        client.chat.completions.create(model="m", messages=[])
        assert len(events) == 1, events
        print(events[0]["usage"]["total_tokens"])
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "22"


def test_the_result_is_the_clients_own_object(chat: ReplayServer) -> None:
    from openai.types.chat import ChatCompletion

    instrument(margins=Capture())

    result = _create(_client(chat))

    assert type(result) is ChatCompletion
    assert not isinstance(result, wrapt.ObjectProxy)
    assert result.usage is not None
    assert result.usage.total_tokens == 22


def test_a_failed_call_yields_one_error_event_and_the_same_exception(
    server: ReplayServer,
) -> None:
    rec = recording("error_404_model_not_found_chat")
    server.respond_with(rec)
    capture = Capture()
    instrument(margins=capture)

    with pytest.raises(openai.NotFoundError) as raised:
        _create(_client(server))

    assert type(raised.value) is openai.NotFoundError
    event = capture.one
    assert event["status"] == "error"
    assert event["model"] == "gpt-4.1-nano"  # the requested model
    assert event["metadata"]["http_status"] == 404
    assert event["metadata"]["error_code"] == "model_not_found"
    assert raised.value.message not in json.dumps(event)


def test_a_connection_error_is_recorded_and_reraised() -> None:
    capture = Capture()
    instrument(margins=capture)
    client = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=0)

    with pytest.raises(openai.APIConnectionError):
        _create(client)

    assert capture.one["status"] == "error"
    assert capture.one["metadata"]["error_type"] == "APIConnectionError"


def test_a_base_exception_passes_through_and_marks_the_call_cancelled(
    chat: ReplayServer,
) -> None:
    capture = Capture()
    instrument(margins=capture)

    def interrupt(request: Any) -> None:
        raise KeyboardInterrupt

    client = _client(
        chat,
        http_client=openai.DefaultHttpxClient(event_hooks={"request": [interrupt]}),
    )
    with pytest.raises(KeyboardInterrupt):
        _create(client)

    assert capture.one["status"] == "cancelled"


async def test_task_cancellation_passes_through(chat: ReplayServer) -> None:
    capture = Capture()
    instrument(margins=capture)
    started = asyncio.Event()

    async def stall(request: Any) -> None:
        started.set()
        await asyncio.sleep(30)

    client = openai.AsyncOpenAI(
        base_url=chat.base_url,
        api_key="k",
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [stall]}),
    )
    task = asyncio.ensure_future(_create(client))
    await started.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert capture.one["status"] == "cancelled"


def test_our_own_failure_never_breaks_the_call(
    chat: ReplayServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Broken:
        def record_observed(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("boom")

    instrument(margins=Broken())
    monkeypatch.setattr(_calls, "warn", _calls._Warnings())
    client = _client(chat)

    with caplog.at_level(logging.DEBUG, logger="traket"):
        first, second = _create(client), _create(client)

    assert first.id == second.id
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "RuntimeError" in warnings[0].getMessage()


def test_a_failure_reading_the_response_never_breaks_the_call(
    chat: ReplayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: Any) -> None:
        raise ValueError("unreadable")

    instrument(margins=Capture())
    monkeypatch.setattr(_calls._extract, "read_result", explode)

    assert _create(_client(chat)).usage is not None


def test_no_write_key_warns_once_and_drops(
    chat: ReplayServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    instrument()
    monkeypatch.setattr(_calls, "warn", _calls._Warnings())
    client = _client(chat)

    with caplog.at_level(logging.WARNING, logger="traket"):
        _create(client)
        _create(client)

    assert len([r for r in caplog.records if "write key" in r.getMessage()]) == 1


def test_missing_fields_are_tolerated(server: ReplayServer) -> None:
    body = {"id": "x", "object": "chat.completion", "choices": None, "usage": None}
    server.respond_with(json_recording("empty", body))
    capture = Capture()
    instrument(margins=capture)

    _create(_client(server))

    assert capture.one["status"] == "success"
    assert "usage" not in capture.one
    assert capture.one["model"] == "gpt-4.1-nano"


def test_a_generator_argument_reaches_the_provider_intact(chat: ReplayServer) -> None:
    def messages() -> Iterator[dict[str, str]]:
        yield {"role": "system", "content": "be brief"}
        yield {"role": "user", "content": "hello"}

    client = _client(chat)
    client.chat.completions.create(model="m", messages=messages())
    bare = chat.requests[-1].body
    instrument(margins=Capture())
    client.chat.completions.create(model="m", messages=messages())

    assert chat.requests[-1].body == bare
    assert b"be brief" in bare


def test_a_generator_input_fares_exactly_as_without_us(server: ReplayServer) -> None:
    # openai serializes a Responses `input` generator as it is, and fails to:
    # the caller must see the same failure, the generator in the same state.
    server.respond_with(recording("responses_basic_gpt4o_mini"))
    client = _client(server)
    if not hasattr(client, "responses"):
        pytest.skip(f"openai {openai.__version__} has no Responses API")

    def attempt() -> tuple[str, list[dict[str, str]]]:
        def items() -> Iterator[dict[str, str]]:
            yield {"role": "developer", "content": "be brief"}
            yield {"role": "user", "content": "hello"}

        given = items()
        try:
            client.responses.create(model="m", input=given)  # type: ignore[arg-type]
        except Exception as error:
            outcome = f"{type(error).__name__}: {error}"
        else:
            outcome = server.requests[-1].body.decode()
        return outcome, list(given)

    bare = attempt()
    instrument(margins=Capture())
    assert attempt() == bare


def test_attribution_and_defaults_are_handed_over(chat: ReplayServer) -> None:
    capture = Capture()
    instrument(margins=capture, default_attrs={"environment": "test"})

    with traket.attribute(customer="acme", feature="search"):
        _create(_client(chat))

    assert capture.scopes[0]["externalCustomerId"] == "acme"
    assert capture.scopes[0]["feature"] == "search"
    assert capture.defaults[0] == {"environment": "test"}


def test_a_metered_call_is_noted_for_the_explicit_tracker(chat: ReplayServer) -> None:
    instrument(margins=Capture())

    with _scope.interception() as counter:
        _create(_client(chat))

    assert counter == [1]


def test_other_compatible_hosts_are_named_by_host(chat: ReplayServer) -> None:
    capture = Capture()
    instrument(margins=capture)
    client = openai.OpenAI(
        base_url=f"http://localhost:{chat.port}/v1", api_key="k", max_retries=0
    )

    _create(client)

    assert capture.one["provider"] == "localhost"


def test_azure_reports_its_deployment_beside_the_model(server: ReplayServer) -> None:
    server.respond_with(recording("azure_chat_gpt41_mini"))
    capture = Capture()
    instrument(margins=capture)
    client = openai.AzureOpenAI(
        azure_endpoint=server.azure_endpoint,
        api_key="k",
        api_version="2024-02-01",
        max_retries=0,
    )

    client.chat.completions.create(model="my-deployment", messages=MESSAGES)

    assert capture.one["provider"] == "azure_openai"
    assert capture.one["model"] == "gpt-4.1-mini-2025-04-14"
    assert capture.one["metadata"]["azure_deployment"] == "my-deployment"


@pytest.mark.slow
def test_memory_stays_flat_over_ten_thousand_calls() -> None:
    """No per-call state outlives the call.

    The client runs over an in-memory transport serving a shared recording: the
    replay server's own allocations (same process) and its latency would drown
    the measurement and make 10,000 traced calls take minutes.
    """
    rec = recording("chat_basic_gpt41_nano")
    httpx_module = sys.modules[openai.DefaultHttpxClient.__mro__[1].__module__]
    body = rec.body.encode()

    def answer(request: Any) -> Any:
        return httpx_module.Response(200, headers=rec.headers, content=body)

    http_client = openai.DefaultHttpxClient(
        transport=httpx_module.MockTransport(answer)
    )
    client = openai.OpenAI(
        base_url="http://127.0.0.1:1/v1",
        api_key="k",
        max_retries=0,
        http_client=http_client,
    )
    capture = Capture()
    instrument(margins=capture)
    traket_files = tracemalloc.Filter(True, f"{ROOT / 'traket'}{os.sep}*")

    def calls(n: int) -> None:
        for _ in range(n):
            _create(client)
        assert len(capture.events) == n
        capture.events.clear()
        capture.scopes.clear()
        capture.defaults.clear()

    calls(200)  # warm caches
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces([traket_files])
        calls(10_000)
        after = tracemalloc.take_snapshot().filter_traces([traket_files])
    finally:
        tracemalloc.stop()

    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 16 * 1024, f"{grown} bytes retained by traket over 10,000 calls"
