"""Every call path is metered exactly once, sync and async, and returns what it did.

A path missing from the installed `openai` (e.g. `responses` before 1.66, the
`beta` spellings after they were removed) is skipped, not passed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pytest
from recordings import Capture, assert_matches_expected, recording

from examples.replay import ReplayServer

MESSAGES = [{"role": "user", "content": "hello"}]


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not hasattr(obj, part):
            pytest.skip(f"{path} is not in openai {openai.__version__}")
        obj = getattr(obj, part)
    return obj


CHAT = "chat_basic_gpt41_nano"
CHAT_STREAM = "chat_stream_include_usage_gpt4"
RESPONSES = "responses_basic_gpt4o_mini"
RESPONSES_STREAM = "responses_stream_basic_gpt41"
EMBEDDINGS = "embeddings_ada002"


def _chat(c: Any, path: str, **kw: Any) -> Any:
    return _get(c, path)(model="gpt-4.1-nano", messages=MESSAGES, **kw)


def _responses(c: Any, path: str, **kw: Any) -> Any:
    return _get(c, path)(model="gpt-4.1", input="hello", **kw)


def _embed(c: Any, path: str) -> Any:
    return _get(c, path)(
        model="text-embedding-ada-002", input="hi", encoding_format="float"
    )


def _drain(stream: Any) -> Any:
    items = list(stream)
    assert items
    return stream


def _helper_stream(manager: Any) -> None:
    with manager as stream:
        assert list(stream)


def _has_its_request_id(raw: Any) -> None:
    request_id = raw.headers.get("x-request-id")
    assert request_id
    if hasattr(type(getattr(raw, "__wrapped__", raw)), "request_id"):
        assert raw.request_id == request_id


def _raw(c: Any, path: str, call: Callable[..., Any], stream: bool = False) -> None:
    raw = call(c, path, stream=True) if stream else call(c, path)
    _has_its_request_id(raw)
    parsed = raw.parse()
    if stream:
        _drain(parsed)
    else:
        assert parsed.usage is not None


def _streaming(c: Any, path: str, call: Callable[..., Any], stream: bool) -> None:
    manager = call(c, path, stream=True) if stream else call(c, path)
    with manager as response:
        assert response.http_request is not None
        parsed = response.parse()
        if stream:
            _drain(parsed)
        else:
            assert parsed.usage is not None


SYNC_PATHS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "chat.completions.create": (CHAT, lambda c: _chat(c, "chat.completions.create")),
    "chat.completions.create stream": (
        CHAT_STREAM,
        lambda c: _drain(_chat(c, "chat.completions.create", stream=True)),
    ),
    "chat.completions.parse": (CHAT, lambda c: _chat(c, "chat.completions.parse")),
    "beta.chat.completions.parse": (
        CHAT,
        lambda c: _chat(c, "beta.chat.completions.parse"),
    ),
    "chat.completions.stream": (
        CHAT_STREAM,
        lambda c: _helper_stream(_chat(c, "chat.completions.stream")),
    ),
    "beta.chat.completions.stream": (
        CHAT_STREAM,
        lambda c: _helper_stream(_chat(c, "beta.chat.completions.stream")),
    ),
    "chat with_raw_response": (
        CHAT,
        lambda c: _raw(c, "chat.completions.with_raw_response.create", _chat),
    ),
    "chat with_raw_response stream": (
        CHAT_STREAM,
        lambda c: _raw(c, "chat.completions.with_raw_response.create", _chat, True),
    ),
    "chat.parse with_raw_response": (
        CHAT,
        lambda c: _raw(c, "chat.completions.with_raw_response.parse", _chat),
    ),
    "chat with_streaming_response": (
        CHAT,
        lambda c: _streaming(
            c, "chat.completions.with_streaming_response.create", _chat, False
        ),
    ),
    "chat with_streaming_response stream": (
        CHAT_STREAM,
        lambda c: _streaming(
            c, "chat.completions.with_streaming_response.create", _chat, True
        ),
    ),
    "responses.create": (RESPONSES, lambda c: _responses(c, "responses.create")),
    "responses.create stream": (
        RESPONSES_STREAM,
        lambda c: _drain(_responses(c, "responses.create", stream=True)),
    ),
    "responses.parse": (RESPONSES, lambda c: _responses(c, "responses.parse")),
    "responses.stream": (
        RESPONSES_STREAM,
        lambda c: _helper_stream(_responses(c, "responses.stream")),
    ),
    "beta.responses.create": (
        RESPONSES,
        lambda c: _responses(c, "beta.responses.create"),
    ),
    "responses with_raw_response": (
        RESPONSES,
        lambda c: _raw(c, "responses.with_raw_response.create", _responses),
    ),
    "responses with_streaming_response": (
        RESPONSES,
        lambda c: _streaming(
            c, "responses.with_streaming_response.create", _responses, False
        ),
    ),
    "responses with_streaming_response stream": (
        RESPONSES_STREAM,
        lambda c: _streaming(
            c, "responses.with_streaming_response.create", _responses, True
        ),
    ),
    "embeddings with_raw_response": (
        EMBEDDINGS,
        lambda c: _raw(c, "embeddings.with_raw_response.create", _embed),
    ),
    "embeddings.create": (
        EMBEDDINGS,
        lambda c: _get(c, "embeddings.create")(
            model="text-embedding-ada-002", input="hi", encoding_format="float"
        ),
    ),
    "with_options copy": (
        CHAT,
        lambda c: _chat(c.with_options(timeout=5), "chat.completions.create"),
    ),
    "copy": (CHAT, lambda c: _chat(c.copy(), "chat.completions.create")),
}


@pytest.mark.parametrize("path", list(SYNC_PATHS))
def test_sync_path_is_metered_exactly_once(
    path: str, server: ReplayServer, capture: Capture
) -> None:
    name, call = SYNC_PATHS[path]
    rec = recording(name)
    server.respond_with(rec)
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)

    call(client)

    assert_matches_expected(capture.one, rec.expected)


async def _adrain(stream: Any) -> Any:
    items = [item async for item in stream]
    assert items
    return stream


async def _ahelper_stream(manager: Any) -> None:
    async with manager as stream:
        assert [event async for event in stream]


async def _araw(c: Any, path: str, call: Callable[..., Any], stream: bool) -> None:
    raw = await (call(c, path, stream=True) if stream else call(c, path))
    _has_its_request_id(raw)
    parsed = raw.parse()
    if stream:
        await _adrain(parsed)
    else:
        assert parsed.usage is not None


async def _astreaming(
    c: Any, path: str, call: Callable[..., Any], stream: bool
) -> None:
    manager = call(c, path, stream=True) if stream else call(c, path)
    async with manager as response:
        parsed = await response.parse()
        if stream:
            await _adrain(parsed)
        else:
            assert parsed.usage is not None


ASYNC_PATHS: dict[str, tuple[str, Callable[[Any], Awaitable[Any]]]] = {
    "chat.completions.create": (CHAT, lambda c: _chat(c, "chat.completions.create")),
    "chat.completions.create stream": (
        CHAT_STREAM,
        lambda c: _aawait_drain(_chat(c, "chat.completions.create", stream=True)),
    ),
    "chat.completions.parse": (CHAT, lambda c: _chat(c, "chat.completions.parse")),
    "beta.chat.completions.parse": (
        CHAT,
        lambda c: _chat(c, "beta.chat.completions.parse"),
    ),
    "chat.completions.stream": (
        CHAT_STREAM,
        lambda c: _ahelper_stream(_chat(c, "chat.completions.stream")),
    ),
    "beta.chat.completions.stream": (
        CHAT_STREAM,
        lambda c: _ahelper_stream(_chat(c, "beta.chat.completions.stream")),
    ),
    "chat with_raw_response": (
        CHAT,
        lambda c: _araw(c, "chat.completions.with_raw_response.create", _chat, False),
    ),
    "chat with_raw_response stream": (
        CHAT_STREAM,
        lambda c: _araw(c, "chat.completions.with_raw_response.create", _chat, True),
    ),
    "chat.parse with_raw_response": (
        CHAT,
        lambda c: _araw(c, "chat.completions.with_raw_response.parse", _chat, False),
    ),
    "chat with_streaming_response": (
        CHAT,
        lambda c: _astreaming(
            c, "chat.completions.with_streaming_response.create", _chat, False
        ),
    ),
    "chat with_streaming_response stream": (
        CHAT_STREAM,
        lambda c: _astreaming(
            c, "chat.completions.with_streaming_response.create", _chat, True
        ),
    ),
    "responses.create": (RESPONSES, lambda c: _responses(c, "responses.create")),
    "responses.create stream": (
        RESPONSES_STREAM,
        lambda c: _aawait_drain(_responses(c, "responses.create", stream=True)),
    ),
    "responses.parse": (RESPONSES, lambda c: _responses(c, "responses.parse")),
    "responses.stream": (
        RESPONSES_STREAM,
        lambda c: _ahelper_stream(_responses(c, "responses.stream")),
    ),
    "beta.responses.create": (
        RESPONSES,
        lambda c: _responses(c, "beta.responses.create"),
    ),
    "responses with_raw_response": (
        RESPONSES,
        lambda c: _araw(c, "responses.with_raw_response.create", _responses, False),
    ),
    "responses with_streaming_response": (
        RESPONSES,
        lambda c: _astreaming(
            c, "responses.with_streaming_response.create", _responses, False
        ),
    ),
    "responses with_streaming_response stream": (
        RESPONSES_STREAM,
        lambda c: _astreaming(
            c, "responses.with_streaming_response.create", _responses, True
        ),
    ),
    "embeddings with_raw_response": (
        EMBEDDINGS,
        lambda c: _araw(c, "embeddings.with_raw_response.create", _embed, False),
    ),
    "embeddings.create": (
        EMBEDDINGS,
        lambda c: _get(c, "embeddings.create")(
            model="text-embedding-ada-002", input="hi", encoding_format="float"
        ),
    ),
    "with_options copy": (
        CHAT,
        lambda c: _chat(c.with_options(timeout=5), "chat.completions.create"),
    ),
    "copy": (CHAT, lambda c: _chat(c.copy(), "chat.completions.create")),
}


async def _aawait_drain(value: Awaitable[Any]) -> Any:
    return await _adrain(await value)


@pytest.mark.parametrize("path", list(ASYNC_PATHS))
async def test_async_path_is_metered_exactly_once(
    path: str, server: ReplayServer, capture: Capture
) -> None:
    name, call = ASYNC_PATHS[path]
    rec = recording(name)
    server.respond_with(rec)
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)

    await call(client)

    assert_matches_expected(capture.one, rec.expected)
