"""How a call ended, and the labels that say so, whichever way it was made.

A Responses API object reports its own outcome (`completed`, `failed`,
`incomplete`): a failed response is an error with the provider's code, streamed
or not, sync or async, parsed or raw. Traket's own labels survive however many
labels the caller adds, and a usage report missing a count never reads as zero.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pytest
from recordings import Capture, json_recording, sse, stream_recording

import traket
from examples.replay import Recording, ReplayServer
from traket._instrument import instrument
from traket.testing import capture_events

MESSAGES = [{"role": "user", "content": "hello"}]
# The Responses API came with openai 1.66; the matrix runs older releases too.
needs_responses = pytest.mark.skipif(
    importlib.util.find_spec("openai.resources.responses") is None,
    reason=f"openai {openai.__version__} has no Responses API",
)
SECRET = "the model choked on the user's secret prompt"
USAGE = {
    "input_tokens": 9,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 12,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 21,
}
USAGE_CHAT = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}


def _response(status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": "resp_synthetic",
        "object": "response",
        "created_at": 1,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "model": "gpt-4.1-2025-04-14",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "service_tier": "default",
        "usage": USAGE,
        **fields,
    }


FAILED = _response("failed", error={"code": "server_error", "message": SECRET})
INCOMPLETE = _response("incomplete", incomplete_details={"reason": "max_output_tokens"})
OUTCOMES = {"failed": FAILED, "incomplete": INCOMPLETE}


def _as_json(response: dict[str, Any]) -> Recording:
    return json_recording("synthetic_response", response)


def _as_stream(response: dict[str, Any]) -> Recording:
    created = _response("in_progress", usage=None)
    terminal = f"response.{response['status']}"
    return stream_recording(
        "synthetic_response_stream",
        sse(
            {"type": "response.created", "sequence_number": 0, "response": created},
            {"type": terminal, "sequence_number": 1, "response": response},
        ),
    )


def _chat_with(usage: dict[str, Any]) -> Recording:
    return json_recording(
        "compatible_chat",
        {
            "id": "chatcmpl-compatible",
            "object": "chat.completion",
            "created": 1,
            "model": "local-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi"},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        },
    )


def _chat_stream_with(usage: dict[str, Any]) -> Recording:
    chunk = {
        "id": "chatcmpl-compatible",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "local-model",
    }
    delta = {"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}
    return stream_recording(
        "compatible_chat_stream",
        sse(
            {**chunk, "choices": [delta]},
            {**chunk, "choices": [], "usage": usage},
            "[DONE]",
        ),
    )


# -- every way of making the call, sync and async --------------------------------


def _create(client: Any, **kwargs: Any) -> Any:
    return client.responses.create(model="gpt-4.1", input="hi", **kwargs)


def _sync_stream(client: Any) -> None:
    assert list(_create(client, stream=True))


def _sync_raw(client: Any) -> None:
    raw = client.responses.with_raw_response.create(model="gpt-4.1", input="hi")
    assert raw.parse().status in OUTCOMES


def _sync_streaming(client: Any) -> None:
    create = client.responses.with_streaming_response.create
    with create(model="gpt-4.1", input="hi") as response:
        assert response.parse().status in OUTCOMES


def _sync_parse(client: Any) -> None:
    assert client.responses.parse(model="gpt-4.1", input="hi").status in OUTCOMES


def _sync_helper_stream(client: Any) -> None:
    with client.responses.stream(model="gpt-4.1", input="hi") as stream:
        assert list(stream)


async def _async_create(client: Any) -> None:
    assert (await _create(client)).status in OUTCOMES


async def _async_stream(client: Any) -> None:
    stream = await _create(client, stream=True)
    assert [event async for event in stream]


async def _async_raw(client: Any) -> None:
    raw = await client.responses.with_raw_response.create(model="gpt-4.1", input="hi")
    assert raw.parse().status in OUTCOMES


async def _async_streaming(client: Any) -> None:
    create = client.responses.with_streaming_response.create
    async with create(model="gpt-4.1", input="hi") as response:
        assert (await response.parse()).status in OUTCOMES


async def _async_parse(client: Any) -> None:
    parsed = await client.responses.parse(model="gpt-4.1", input="hi")
    assert parsed.status in OUTCOMES


async def _async_helper_stream(client: Any) -> None:
    async with client.responses.stream(model="gpt-4.1", input="hi") as stream:
        assert [event async for event in stream]


SYNC_WAYS: dict[str, tuple[bool, Callable[[Any], Any]]] = {
    "create": (False, _create),
    "create stream": (True, _sync_stream),
    "with_raw_response": (False, _sync_raw),
    "with_streaming_response": (False, _sync_streaming),
    "parse": (False, _sync_parse),
    "stream helper": (True, _sync_helper_stream),
}
ASYNC_WAYS: dict[str, tuple[bool, Callable[[Any], Awaitable[Any]]]] = {
    "create": (False, _async_create),
    "create stream": (True, _async_stream),
    "with_raw_response": (False, _async_raw),
    "with_streaming_response": (False, _async_streaming),
    "parse": (False, _async_parse),
    "stream helper": (True, _async_helper_stream),
}


def _assert_outcome(outcome: str, event: dict[str, Any]) -> None:
    metadata = event["metadata"]
    assert event["usage"] == USAGE  # reported: billed, kept
    assert event["providerResponseId"] == "resp_synthetic"
    assert metadata["finish_state"] == outcome
    if outcome == "failed":
        assert event["status"] == "error"
        assert metadata["error_code"] == "server_error"
    else:
        assert event["status"] == "success"
        assert metadata["incomplete_reason"] == "max_output_tokens"
        assert "error_code" not in metadata
    assert SECRET not in json.dumps(event)


@needs_responses
@pytest.mark.parametrize("outcome", list(OUTCOMES))
@pytest.mark.parametrize("way", list(SYNC_WAYS))
def test_a_responses_outcome_is_the_same_every_sync_way(
    way: str, outcome: str, server: ReplayServer, capture: Capture
) -> None:
    streamed, call = SYNC_WAYS[way]
    response = OUTCOMES[outcome]
    server.respond_with(_as_stream(response) if streamed else _as_json(response))

    call(openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0))

    _assert_outcome(outcome, capture.one)


@needs_responses
@pytest.mark.parametrize("outcome", list(OUTCOMES))
@pytest.mark.parametrize("way", list(ASYNC_WAYS))
async def test_a_responses_outcome_is_the_same_every_async_way(
    way: str, outcome: str, server: ReplayServer, capture: Capture
) -> None:
    streamed, call = ASYNC_WAYS[way]
    response = OUTCOMES[outcome]
    server.respond_with(_as_stream(response) if streamed else _as_json(response))

    await call(openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0))

    _assert_outcome(outcome, capture.one)


@needs_responses
def test_a_failed_response_is_an_error_on_the_wire(server: ReplayServer) -> None:
    server.respond_with(_as_json(FAILED))
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)

    with capture_events() as captured:
        instrument()
        _create(client)

    (event,) = captured.events
    assert event["status"] == "error"
    assert event["metadata"]["error_code"] == "server_error"
    assert event["usage"] == USAGE
    assert SECRET not in json.dumps(event)


@needs_responses
def test_the_explicit_tracker_reads_a_failed_response_the_same_way(
    server: ReplayServer,
) -> None:
    server.respond_with(_as_json(FAILED))
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)

    with capture_events() as captured:
        returned = captured.client.openai.track(lambda: _create(client))

    assert returned.status == "failed"
    (event,) = captured.events
    assert event["status"] == "error"
    assert event["metadata"]["error_code"] == "server_error"
    assert event["metadata"]["finish_state"] == "failed"
    assert event["usage"] == USAGE
    assert SECRET not in json.dumps(event)


@needs_responses
def test_a_completed_or_queued_response_is_a_success_without_labels(
    server: ReplayServer, capture: Capture
) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    for status in ("completed", "queued"):  # queued: a background response
        server.respond_with(_as_json(_response(status)))
        _create(client, background=status == "queued")

    assert len(capture.events) == 2
    for event in capture.events:
        assert event["status"] == "success"
        assert "finish_state" not in event["metadata"]
        assert "error_code" not in event["metadata"]


@needs_responses
def test_a_stream_closed_after_its_last_response_keeps_what_it_reported(
    server: ReplayServer, capture: Capture
) -> None:
    server.respond_with(_as_stream(FAILED))
    stream = _create(
        openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0),
        stream=True,
    )

    for event in stream:
        if event.type == "response.failed":
            break  # the app stops at the terminal event, before the stream ends
    stream.close()

    _assert_outcome("failed", capture.one)


@needs_responses
def test_a_stream_left_before_its_last_response_is_still_unfinished(
    server: ReplayServer, capture: Capture
) -> None:
    server.respond_with(_as_stream(FAILED))
    stream = _create(
        openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0),
        stream=True,
    )

    next(stream)  # response.created: still in progress
    stream.close()

    assert capture.one["status"] == "cancelled"
    assert capture.one["metadata"]["finish_state"] == "unfinished"


# -- traket's own labels always fit ----------------------------------------------


def _many_labels(prefix: str, count: int) -> dict[str, str]:
    return {f"{prefix}_{index:02d}": "x" for index in range(count)}


OWN_LABELS = ("stream", "requested_model", "http_status", "service_tier")


@needs_responses
@pytest.mark.parametrize("where", ["default_attrs", "scope", "both"])
def test_traket_labels_survive_a_caller_who_fills_the_metadata(
    where: str, server: ReplayServer
) -> None:
    server.respond_with(_as_json(FAILED))
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    defaults = {"metadata": _many_labels("default", 30)} if where != "scope" else {}
    scoped = _many_labels("scope", 24) if where != "default_attrs" else {}

    with capture_events() as captured:
        instrument(default_attrs=defaults)
        with traket.attribute(metadata=scoped):
            _create(client)

    (event,) = captured.events
    metadata = event["metadata"]
    assert len(metadata) == 24
    own = (*OWN_LABELS, "finish_state", "error_code")
    assert {key: metadata.get(key) for key in own} == {
        "stream": False,
        "requested_model": "gpt-4.1",
        "http_status": 200,
        "service_tier": "default",
        "finish_state": "failed",
        "error_code": "server_error",
    }
    assert len([key for key in metadata if key not in own]) == 24 - len(own)


async def test_traket_labels_survive_a_full_scope_on_an_async_chat_stream(
    server: ReplayServer,
) -> None:
    server.respond_with(_chat_stream_with(USAGE_CHAT))
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)

    with capture_events() as captured:
        instrument(default_attrs={"metadata": _many_labels("default", 24)})
        with traket.attribute(metadata=_many_labels("scope", 24)):
            stream = await client.chat.completions.create(
                model="local-model", messages=MESSAGES, stream=True
            )
            assert [chunk async for chunk in stream]

    (event,) = captured.events
    metadata = event["metadata"]
    assert len(metadata) == 24
    assert metadata["stream"] is True
    assert metadata["requested_model"] == "local-model"
    assert metadata["http_status"] == 200


@needs_responses
def test_traket_labels_win_a_key_the_caller_also_set(server: ReplayServer) -> None:
    server.respond_with(_as_json(_response("completed")))
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    labels = {"stream": "mine", **_many_labels("user", 30)}

    with capture_events() as captured:
        instrument(default_attrs={"metadata": labels})
        _create(client)

    (event,) = captured.events
    assert event["metadata"]["stream"] is False
    assert event["metadata"]["http_status"] == 200
    assert len(event["metadata"]) == 24


@needs_responses
def test_a_failed_calls_labels_survive_a_full_scope_in_the_tracker(
    server: ReplayServer,
) -> None:
    server.respond_with(
        json_recording(
            "rate_limited",
            {"error": {"message": SECRET, "code": "rate_limit_exceeded"}},
            status=429,
        )
    )
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)

    scope = traket.attribute(metadata=_many_labels("scope", 24))
    rate_limited = pytest.raises(openai.RateLimitError)
    with capture_events() as captured, scope, rate_limited:
        captured.client.openai.track(lambda: _create(client))

    (event,) = captured.events
    metadata = event["metadata"]
    assert len(metadata) == 24
    assert metadata["error_type"] == "RateLimitError"
    assert metadata["http_status"] == 429
    assert metadata["error_code"] == "rate_limit_exceeded"


# -- usage missing a count is never read as zero ---------------------------------


TOTAL_ONLY = {"total_tokens": 30}
UNKNOWN_COUNTS = {
    "total only": (TOTAL_ONLY, {"input_tokens": None, "output_tokens": None}),
    "prompt only": ({"prompt_tokens": 7}, {"input_tokens": 7, "output_tokens": None}),
    "completion only": (
        {"completion_tokens": 3},
        {"input_tokens": None, "output_tokens": 3},
    ),
}


def _usage_answer(api: str, usage: dict[str, Any]) -> Recording:
    if api == "chat":
        return _chat_with(usage)
    if api == "chat stream":
        return _chat_stream_with(usage)
    return _as_json(_response("completed", usage=usage))


def _sync_call(client: Any, api: str) -> None:
    if api == "responses":
        _create(client)
        return
    result = client.chat.completions.create(
        model="local-model", messages=MESSAGES, stream=api == "chat stream"
    )
    if api == "chat stream":
        assert list(result)


async def _async_call(client: Any, api: str) -> None:
    if api == "responses":
        await _create(client)
        return
    result = await client.chat.completions.create(
        model="local-model", messages=MESSAGES, stream=api == "chat stream"
    )
    if api == "chat stream":
        assert [chunk async for chunk in result]


def _assert_unknown_counts(usage: dict[str, Any], expected: dict[str, Any]) -> None:
    assert {key: usage[key] for key in expected} == expected
    assert 0 not in (usage["input_tokens"], usage["output_tokens"])


APIS = ["chat", "chat stream", pytest.param("responses", marks=needs_responses)]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("case", list(UNKNOWN_COUNTS))
def test_a_usage_missing_a_count_leaves_it_unknown_sync(
    case: str, api: str, server: ReplayServer, capture: Capture
) -> None:
    usage, expected = UNKNOWN_COUNTS[case]
    server.respond_with(_usage_answer(api, usage))

    _sync_call(openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0), api)

    _assert_unknown_counts(capture.one["usage"], expected)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("case", list(UNKNOWN_COUNTS))
async def test_a_usage_missing_a_count_leaves_it_unknown_async(
    case: str, api: str, server: ReplayServer, capture: Capture
) -> None:
    usage, expected = UNKNOWN_COUNTS[case]
    server.respond_with(_usage_answer(api, usage))
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)

    await _async_call(client, api)

    _assert_unknown_counts(capture.one["usage"], expected)


def test_a_total_only_usage_goes_on_the_wire_as_unknown_counts(
    server: ReplayServer,
) -> None:
    server.respond_with(_chat_with(TOTAL_ONLY))
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)

    with capture_events() as captured:
        instrument()
        client.chat.completions.create(model="local-model", messages=MESSAGES)
        assert captured.client.flush(timeout=5)

    (body,) = captured.bodies
    (event,) = json.loads(body)["events"]
    assert event["usage"] == {
        "input_tokens": None,
        "input_tokens_details": {"cached_tokens": None},
        "output_tokens": None,
        "output_tokens_details": {"reasoning_tokens": None},
        "total_tokens": 30,
    }
