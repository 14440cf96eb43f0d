"""What a metered call's event holds, through the real client and sender.

The other instrumentation tests look at what instrumentation observed (a
stand-in for `Margins`); these look at the wire event `Margins` built from it:
providers, attribution, timing, and our own failures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

import openai
import pytest
from recordings import Capture, recording

import traket
from examples.replay import ReplayServer
from traket._errors import InvalidEventError
from traket._instrument import _calls, instrument
from traket.testing import capture_events

MESSAGES = [{"role": "user", "content": "hello"}]
CHAT = "chat_basic_gpt41_nano"
USAGE_STREAM = "chat_stream_include_usage_gpt4"


def _client(server: ReplayServer, host: str = "127.0.0.1") -> openai.OpenAI:
    base_url = f"http://{host}:{server.port}/v1"
    return openai.OpenAI(base_url=base_url, api_key="k", max_retries=0)


def _create(client: Any, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model="gpt-4.1-nano", messages=MESSAGES, **kwargs
    )


def test_a_compatible_hosts_provider_comes_from_default_attrs_else_the_host(
    server: ReplayServer,
) -> None:
    server.respond_with(recording(CHAT))
    client = _client(server, host="localhost")

    with capture_events() as captured:
        instrument()
        _create(client)
        instrument(default_attrs={"provider": "groq"})
        _create(client)

    assert [e["provider"] for e in captured.events] == ["localhost", "groq"]


def test_azure_is_reported_with_its_deployment_on_the_wire(
    server: ReplayServer,
) -> None:
    server.respond_with(recording("azure_chat_gpt41_mini"))
    client = openai.AzureOpenAI(
        azure_endpoint=server.azure_endpoint,
        api_key="k",
        api_version="2024-02-01",
        max_retries=0,
    )

    with capture_events() as captured:
        instrument()
        client.chat.completions.create(model="my-deployment", messages=MESSAGES)

    (event,) = captured.events
    assert event["provider"] == "azure_openai"
    assert event["model"] == "gpt-4.1-mini-2025-04-14"
    assert event["metadata"]["azure_deployment"] == "my-deployment"


def test_a_new_base_url_on_a_client_is_a_new_provider(server: ReplayServer) -> None:
    server.respond_with(recording(CHAT))
    client = _client(server)
    capture = Capture()
    instrument(margins=capture)

    _create(client)
    client.base_url = f"http://localhost:{server.port}/v1"
    _create(client)

    assert [e["provider"] for e in capture.events] == ["127.0.0.1", "localhost"]


def test_each_call_gets_the_attribution_of_its_own_block(
    server: ReplayServer,
) -> None:
    server.respond_with(recording(CHAT))
    client = _client(server)
    defaults = {"environment": "prod", "metadata": {"team": "a"}}

    with capture_events() as captured:
        instrument(default_attrs=defaults)
        defaults["environment"] = "changed later"  # instrument() kept a copy
        defaults["metadata"]["team"] = "changed later"  # type: ignore[index]
        for customer in ("acme", "globex", "acme"):
            with traket.attribute(customer=customer, feature="search"):
                _create(client)
        _create(client)

    events = captured.events
    assert [e.get("externalCustomerId") for e in events] == [
        "acme",
        "globex",
        "acme",
        None,
    ]
    assert [e["attributionQuality"] for e in events] == [
        "scope",
        "scope",
        "scope",
        "missing",
    ]
    assert {e["environment"] for e in events} == {"prod"}
    assert {e["metadata"]["team"] for e in events} == {"a"}
    assert len({e["idempotencyKey"] for e in events}) == 4


def test_malformed_default_attrs_are_an_error_naming_the_field() -> None:
    with pytest.raises(InvalidEventError, match="feature"):
        instrument(margins=Capture(), default_attrs={"feature": 42})


def test_the_duration_runs_from_the_call_to_the_end_of_its_stream(
    server: ReplayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(_calls, "perf_counter", lambda: now[0])
    server.respond_with(recording(USAGE_STREAM))
    capture = Capture()
    instrument(margins=capture)

    stream = _create(_client(server), stream=True)
    now[0] = 102.5  # the app reads the stream later
    list(stream)

    assert capture.one["durationMs"] == 2500


# -- our own failures ------------------------------------------------------------


def _fail_observing(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(self: Any, item: Any) -> bool:
        raise RuntimeError("observer bug")

    monkeypatch.setattr(_calls.Call, "_observe_chunk", explode)
    monkeypatch.setattr(_calls, "warn", _calls._Warnings())


def test_a_failure_observing_a_stream_leaves_the_stream_untouched(
    server: ReplayServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = recording(USAGE_STREAM)
    client = _client(server)
    server.respond_with(rec)
    bare = [chunk.model_dump() for chunk in _create(client, stream=True)]
    capture = Capture()
    instrument(margins=capture)
    _fail_observing(monkeypatch)

    with caplog.at_level(logging.DEBUG, logger="traket"):
        metered = [chunk.model_dump() for chunk in _create(client, stream=True)]

    assert metered == bare
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "RuntimeError" in warnings[0].getMessage()
    assert "observer bug" not in caplog.text
    event = capture.one
    assert event["status"] == "success"
    assert event["metadata"]["observed"] == "partial"
    assert "usage" not in event  # unknown, never a guess


def test_a_failure_observing_a_stream_still_hides_the_usage_chunk_we_asked_for(
    server: ReplayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = recording(USAGE_STREAM)
    client = _client(server)
    instrument(margins=Capture(), stream_usage=True)
    _fail_observing(monkeypatch)
    server.respond_with(rec)

    chunks = list(_create(client, stream=True))

    assert json.loads(server.requests[-1].body)["stream_options"] == {
        "include_usage": True
    }
    assert all(chunk.choices for chunk in chunks)


async def test_a_failure_observing_an_async_stream_leaves_it_untouched(
    server: ReplayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.respond_with(recording(USAGE_STREAM))
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    capture = Capture()
    instrument(margins=capture)
    _fail_observing(monkeypatch)

    stream = await _create(client, stream=True)
    chunks = [chunk async for chunk in stream]

    assert chunks[-1].usage is not None  # the caller asked: not ours to hide
    assert capture.one["status"] == "success"


async def test_cancelling_a_task_reading_an_async_stream_passes_through(
    server: ReplayServer,
) -> None:
    server.respond_with(recording(USAGE_STREAM))
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    capture = Capture()
    instrument(margins=capture)
    stream = await _create(client, stream=True)
    reading = asyncio.Event()

    async def read_slowly() -> None:
        async for _chunk in stream:
            reading.set()
            await asyncio.sleep(30)

    task = asyncio.ensure_future(read_slowly())
    await reading.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    await stream.close()
    event = capture.one
    assert event["status"] == "cancelled"
    assert event["metadata"]["finish_state"] == "unfinished"


async def test_an_error_in_the_middle_of_an_async_stream_is_one_error_event(
    server: ReplayServer,
) -> None:
    events = [e for e in recording(USAGE_STREAM).body.split("\n\n") if e.strip()]
    error = {"error": {"message": "boom", "type": "server_error", "code": "overloaded"}}
    body = "\n\n".join([*events[:2], "data: " + json.dumps(error)]) + "\n\n"
    rec = recording(USAGE_STREAM)
    server.respond_with(type(rec)(**{**rec.__dict__, "body": body}))
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    capture = Capture()
    instrument(margins=capture)

    stream = await _create(client, stream=True)
    with pytest.raises(openai.APIError):
        _ = [chunk async for chunk in stream]
    await stream.close()

    assert capture.one["status"] == "error"
    assert capture.one["metadata"]["error_code"] == "overloaded"


def test_a_timeout_is_recorded_as_a_timeout(server: ReplayServer) -> None:
    capture = Capture()
    instrument(margins=capture)
    # openai 3.x ships its own httpx: take the one its client is built on.
    httpx_module = sys.modules[openai.DefaultHttpxClient.__mro__[1].__module__]

    def stall(request: Any) -> None:
        raise httpx_module.ReadTimeout("timed out", request=request)

    client = openai.OpenAI(
        base_url=server.base_url,
        api_key="k",
        max_retries=0,
        http_client=openai.DefaultHttpxClient(event_hooks={"request": [stall]}),
    )
    with pytest.raises(openai.APITimeoutError):
        _create(client)

    assert capture.one["status"] == "timeout"
    assert capture.one["metadata"]["error_type"] == "APITimeoutError"


def test_a_raw_response_stream_is_never_asked_for_usage(server: ReplayServer) -> None:
    server.respond_with(recording("chat_stream_no_usage_gpt4"))
    capture = Capture()
    instrument(margins=capture, stream_usage=True)
    client = _client(server)

    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4", messages=MESSAGES, stream=True
    )
    assert list(raw.parse())

    assert "stream_options" not in json.loads(server.requests[-1].body)
    assert "usage" not in capture.one


@pytest.mark.parametrize(
    ("base_url", "provider"),
    [
        ("https://api.openai.com/v1", "openai"),
        ("https://my-resource.openai.azure.com/openai", "azure_openai"),
        ("https://x.cognitiveservices.azure.com/openai", "azure_openai"),
        ("https://x.services.ai.azure.com/openai", "azure_openai"),
        ("https://api.groq.com/openai/v1", "api.groq.com"),
        ("http://LOCALHOST:8000/v1", "localhost"),
    ],
)
def test_the_provider_is_named_by_the_base_url(base_url: str, provider: str) -> None:
    from traket._instrument._providers import provider_of

    assert provider_of(openai.OpenAI(base_url=base_url, api_key="k")) == provider


def test_default_attrs_take_the_names_attribute_takes(server: ReplayServer) -> None:
    server.respond_with(recording(CHAT))
    with pytest.raises(InvalidEventError, match="custmer"):
        instrument(margins=Capture(), default_attrs={"custmer": "tenant-1"})

    with capture_events() as captured:
        instrument(default_attrs={"customer": "tenant-1", "prompt_type": "qa"})
        _create(_client(server))

    (event,) = captured.events
    assert event["externalCustomerId"] == "tenant-1"
    assert event["promptType"] == "qa"
    assert event["attributionQuality"] == "default"
