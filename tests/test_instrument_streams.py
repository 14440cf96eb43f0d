"""Streams stay the SDK's streams, end in exactly one event, and look unchanged."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from recordings import Capture, recording, sse, stream_recording, with_body

import traket
from examples.replay import Recording, ReplayServer
from traket._instrument import instrument

MESSAGES = [{"role": "user", "content": "hello"}]
USAGE_STREAM = "chat_stream_include_usage_gpt4"
RESPONSES_STREAM = "responses_stream_basic_gpt41"


def _client(server: ReplayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)


def _aclient(server: ReplayServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)


def _stream(client: Any, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model="gpt-4", messages=MESSAGES, stream=True, **kwargs
    )


def _needs(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not hasattr(obj, part):
            pytest.skip(f"{path} is not in openai {openai.__version__}")
        obj = getattr(obj, part)
    return obj


def _events(body: str) -> list[str]:
    return [part for part in body.split("\n\n") if part.strip()]


def _without_usage_chunk(body: str) -> str:
    kept = []
    for event in _events(body):
        data = event.removeprefix("data: ")
        if data != "[DONE]":
            payload = json.loads(data)
            if payload.get("usage") and not payload.get("choices"):
                continue
        kept.append(event)
    return "\n\n".join(kept) + "\n\n"


def _with_usage_chunk(body: str, usage: dict[str, Any]) -> str:
    events = _events(body)
    first = json.loads(events[0].removeprefix("data: "))
    chunk = {**first, "choices": [], "usage": usage}
    done = events.pop() if events[-1] == "data: [DONE]" else None
    events.append("data: " + json.dumps(chunk))
    if done:
        events.append(done)
    return "\n\n".join(events) + "\n\n"


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}

TOOL_CALL_STREAM = sse(
    {
        "id": "chatcmpl-tool",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4.1-nano-2025-04-14",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "lookup", "arguments": ""},
                        }
                    ],
                },
                "finish_reason": None,
            }
        ],
    },
    {
        "id": "chatcmpl-tool",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4.1-nano-2025-04-14",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]
                },
                "finish_reason": "tool_calls",
            }
        ],
    },
    "[DONE]",
)


def _identity_cases() -> list[tuple[str, str, str]]:
    """(case, body the bare client gets, body the metered client gets)."""
    with_usage = recording(USAGE_STREAM).body
    n2 = recording("chat_stream_n2_no_usage_gpt35").body
    return [
        ("single choice", _without_usage_chunk(with_usage), with_usage),
        ("n=2", n2, _with_usage_chunk(n2, USAGE)),
        ("tool calls", TOOL_CALL_STREAM, _with_usage_chunk(TOOL_CALL_STREAM, USAGE)),
    ]


@pytest.mark.parametrize("case", ["single choice", "n=2", "tool calls"])
def test_asked_for_usage_the_app_sees_identical_chunks(
    case: str, server: ReplayServer
) -> None:
    bare_body, metered_body = {c[0]: c[1:] for c in _identity_cases()}[case]
    client = _client(server)
    server.respond_with(stream_recording("bare", bare_body))
    bare = [chunk.model_dump() for chunk in _stream(client)]
    assert "stream_options" not in json.loads(server.requests[-1].body)

    capture = Capture()
    instrument(margins=capture, stream_usage=True)
    server.respond_with(stream_recording("metered", metered_body))
    metered = [chunk.model_dump() for chunk in _stream(client)]

    assert metered == bare
    sent = json.loads(server.requests[-1].body)
    assert sent["stream_options"] == {"include_usage": True}
    assert capture.one["usage"]["total_tokens"] in (10, 17)


def test_the_callers_arguments_are_not_mutated(
    server: ReplayServer, capture: Capture
) -> None:
    instrument(margins=capture, stream_usage=True)
    server.respond_with(recording(USAGE_STREAM))
    stream_options: dict[str, Any] = {}
    kwargs = {"model": "gpt-4", "messages": MESSAGES, "stream": True}
    snapshot = json.dumps(kwargs)

    list(
        _client(server).chat.completions.create(**kwargs, stream_options=stream_options)
    )

    assert stream_options == {}
    assert json.dumps(kwargs) == snapshot
    assert json.loads(server.requests[-1].body)["stream_options"] == {
        "include_usage": True
    }


def test_a_caller_who_declined_usage_gets_every_chunk(
    server: ReplayServer, capture: Capture
) -> None:
    instrument(margins=capture, stream_usage=True)
    server.respond_with(recording(USAGE_STREAM))

    chunks = list(_stream(_client(server), stream_options={"include_usage": False}))

    assert chunks[-1].usage is not None  # not ours to hide
    assert capture.one["usage"]["total_tokens"] == 17


@pytest.mark.parametrize(
    ("stream_usage", "azure", "asked"),
    [
        (None, False, False),
        (None, True, True),
        (True, False, True),
        (False, True, False),
    ],
)
def test_usage_is_asked_for_where_known_to_work_or_when_switched(
    server: ReplayServer, stream_usage: bool | None, azure: bool, asked: bool
) -> None:
    capture = Capture()
    instrument(margins=capture, stream_usage=stream_usage)
    rec = recording("chat_stream_no_usage_gpt4")
    server.respond_with(rec)
    client: Any = (
        openai.AzureOpenAI(
            azure_endpoint=server.azure_endpoint,
            api_key="k",
            api_version="2024-02-01",
            max_retries=0,
        )
        if azure
        else _client(server)
    )

    list(_stream(client))

    sent = json.loads(server.requests[-1].body)
    assert ("stream_options" in sent) is asked
    assert "usage" not in capture.one  # none arrived: unknown, never zero


def test_the_last_usage_reported_wins(server: ReplayServer, capture: Capture) -> None:
    body = recording(USAGE_STREAM).body
    early = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    events = _events(body)
    first = json.loads(events[1].removeprefix("data: "))
    events.insert(2, "data: " + json.dumps({**first, "usage": early}))
    server.respond_with(with_body(recording(USAGE_STREAM), "\n\n".join(events)))

    list(_stream(_client(server)))

    assert capture.one["usage"]["total_tokens"] == 17


# -- every way a stream ends ------------------------------------------------------


def test_a_stream_is_still_the_sdks_stream(
    server: ReplayServer, capture: Capture
) -> None:
    server.respond_with(recording(USAGE_STREAM))

    stream = _stream(_client(server))

    assert isinstance(stream, openai.Stream)
    assert stream.response.status_code == 200
    with stream as entered:
        assert entered is stream
        assert list(entered)
    assert capture.one["status"] == "success"


def test_exhausted_then_closed_yields_one_event(
    server: ReplayServer, capture: Capture
) -> None:
    server.respond_with(recording(USAGE_STREAM))
    stream = _stream(_client(server))

    list(stream)
    stream.close()
    list(stream)

    assert capture.one["status"] == "success"
    assert capture.one["usage"]["total_tokens"] == 17


def test_break_then_close_is_marked_unfinished(
    server: ReplayServer, capture: Capture
) -> None:
    server.respond_with(recording(USAGE_STREAM))
    stream = _stream(_client(server))

    for _chunk in stream:
        break
    assert capture.events == []
    stream.close()

    event = capture.one
    assert event["status"] == "cancelled"
    assert event["metadata"]["finish_state"] == "unfinished"
    assert event["model"] == "gpt-4-0613"  # what was seen is kept
    assert "usage" not in event


def test_leaving_the_with_block_early_yields_one_event(
    server: ReplayServer, capture: Capture
) -> None:
    server.respond_with(recording(USAGE_STREAM))

    with _stream(_client(server)) as stream:
        next(stream)

    assert capture.one["status"] == "cancelled"


def test_garbage_collection_yields_one_event(
    server: ReplayServer, capture: Capture
) -> None:
    server.respond_with(recording(USAGE_STREAM))
    stream = _stream(_client(server))
    next(stream)

    del stream
    gc.collect()

    assert capture.one["status"] == "cancelled"


def test_an_error_mid_stream_yields_one_error_event(
    server: ReplayServer, capture: Capture
) -> None:
    events = _events(recording(USAGE_STREAM).body)
    error = {"error": {"message": "boom", "type": "server_error", "code": "overloaded"}}
    body = "\n\n".join([*events[:2], "data: " + json.dumps(error)]) + "\n\n"
    server.respond_with(with_body(recording(USAGE_STREAM), body))
    stream = _stream(_client(server))

    with pytest.raises(openai.APIError):
        list(stream)
    stream.close()

    assert capture.one["status"] == "error"
    assert capture.one["metadata"]["error_code"] == "overloaded"
    assert "boom" not in json.dumps(capture.one)


def test_a_base_exception_mid_stream_passes_through(
    server: ReplayServer, capture: Capture
) -> None:
    server.respond_with(recording(USAGE_STREAM))
    stream = _stream(_client(server))
    interrupt = KeyboardInterrupt()

    def interrupted() -> Iterator[Any]:
        raise interrupt
        yield

    stream.__wrapped__._iterator = interrupted()
    with pytest.raises(KeyboardInterrupt) as raised:
        next(stream)

    assert raised.value is interrupt
    assert capture.one["status"] == "cancelled"


def test_a_stream_helper_left_early_yields_one_event(
    server: ReplayServer, capture: Capture
) -> None:
    server.respond_with(recording(USAGE_STREAM))

    helper = _needs(_client(server), "chat.completions.stream")
    with helper(model="m", messages=MESSAGES) as s:
        next(iter(s))
        assert capture.events == []

    assert capture.one["status"] == "cancelled"  # at the end of the block
    del s
    gc.collect()
    assert len(capture.events) == 1


@pytest.mark.parametrize("path", ["chat.completions.stream", "responses.stream"])
async def test_an_async_stream_helper_left_early_is_recorded_as_its_block_ends(
    server: ReplayServer, capture: Capture, path: str
) -> None:
    stream = USAGE_STREAM if path.startswith("chat") else RESPONSES_STREAM
    server.respond_with(recording(stream))
    helper = _needs(_aclient(server), path)
    arguments: dict[str, Any] = {"model": "m"}
    if path.startswith("chat"):
        arguments["messages"] = MESSAGES
    else:
        arguments["input"] = "hi"

    async with helper(**arguments) as s:
        await s.__anext__()

    assert capture.one["status"] == "cancelled"


def test_attribution_is_taken_when_the_call_is_made(
    server: ReplayServer, capture: Capture
) -> None:
    server.respond_with(recording(USAGE_STREAM))

    with traket.attribute(customer="acme"):
        stream = _stream(_client(server))
    with traket.attribute(customer="other"):
        list(stream)

    assert capture.scopes[0]["externalCustomerId"] == "acme"


def test_a_responses_stream_left_early_keeps_what_it_saw(
    server: ReplayServer, capture: Capture
) -> None:
    server.respond_with(recording("responses_stream_basic_gpt41"))
    create = _needs(_client(server), "responses.create")
    stream = create(model="gpt-4.1", input="hi", stream=True)

    next(stream)
    stream.close()

    assert capture.one["status"] == "cancelled"
    assert capture.one["model"] == "gpt-4.1-2025-04-14"


# -- async ----------------------------------------------------------------------------


async def _astream(server: ReplayServer, rec: Recording | None = None) -> Any:
    server.respond_with(rec or recording(USAGE_STREAM))
    return await _stream(_aclient(server))


async def test_an_async_stream_is_still_the_sdks_stream(
    server: ReplayServer, capture: Capture
) -> None:
    stream = await _astream(server)

    assert isinstance(stream, openai.AsyncStream)
    async with stream as entered:
        assert entered is stream
        assert [chunk async for chunk in entered]
    assert capture.one["status"] == "success"
    assert capture.one["usage"]["total_tokens"] == 17


async def test_an_async_break_then_close_yields_one_event(
    server: ReplayServer, capture: Capture
) -> None:
    stream = await _astream(server)

    async for _chunk in stream:
        break
    await stream.close()

    assert capture.one["status"] == "cancelled"


async def test_leaving_an_async_with_early_yields_one_event(
    server: ReplayServer, capture: Capture
) -> None:
    async with await _astream(server) as stream:
        await stream.__anext__()

    assert capture.one["status"] == "cancelled"


async def test_an_async_stream_collected_yields_one_event(
    server: ReplayServer, capture: Capture
) -> None:
    stream = await _astream(server)
    await stream.__anext__()

    del stream
    gc.collect()

    assert capture.one["status"] == "cancelled"


async def test_an_async_stream_can_be_read_from_another_task(
    server: ReplayServer, capture: Capture
) -> None:
    stream = await _astream(server)
    first = await stream.__anext__()

    async def rest(items: AsyncIterator[Any]) -> list[Any]:
        return [item async for item in items]

    remaining = await asyncio.create_task(rest(stream))

    assert first is not None
    assert remaining
    assert capture.one["status"] == "success"


async def test_an_async_stream_helper_yields_one_event(
    server: ReplayServer, capture: Capture
) -> None:
    server.respond_with(recording(USAGE_STREAM))
    client = _aclient(server)

    helper = _needs(client, "chat.completions.stream")
    async with helper(model="m", messages=MESSAGES) as stream:
        completion = await stream.get_final_completion()

    assert completion.usage is not None
    assert capture.one["usage"]["total_tokens"] == 17
