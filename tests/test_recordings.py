"""Every shared recording, replayed through the real `openai` client, sync and async.

Each call must yield exactly one event, equal to the recording's `expected` block.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import openai
import pytest
from recordings import Capture, assert_matches_expected, recording, recording_names

from examples.replay import Recording, ReplayServer

pytestmark = pytest.mark.fixtures


def _is_azure(rec: Recording) -> bool:
    return rec.path.startswith("/openai/")


def _client_kwargs(rec: Recording, server: ReplayServer) -> dict[str, Any]:
    if _is_azure(rec):
        query = parse_qs(urlsplit(rec.path).query)
        return {
            "azure_endpoint": server.azure_endpoint,
            "api_version": query.get("api-version", ["2024-02-01"])[0],
            "api_key": "test-key",
            "max_retries": 0,
        }
    return {"base_url": server.base_url, "api_key": "test-key", "max_retries": 0}


def _call_args(rec: Recording) -> tuple[str, dict[str, Any]]:
    body = rec.request_body if isinstance(rec.request_body, dict) else {}
    operation = rec.expected["operation"]
    model = body.get("model") or rec.expected.get("model") or "gpt-4o-mini"
    if _is_azure(rec):
        model = rec.path.split("/deployments/")[1].split("/")[0]
    if operation == "embeddings.create":
        kwargs: dict[str, Any] = {"model": model, "input": "hello"}
        if "encoding_format" in body:
            kwargs["encoding_format"] = body["encoding_format"]
        return operation, kwargs
    if operation == "responses.create":
        return operation, {"model": model, "input": "hello", "stream": rec.is_stream}
    messages = [{"role": "user", "content": "hello"}]
    return operation, {"model": model, "messages": messages, "stream": rec.is_stream}


def _resource(client: Any, operation: str) -> Any:
    if operation == "chat.completions.create":
        return client.chat.completions
    if operation == "responses.create":
        if not hasattr(client, "responses"):
            pytest.skip(f"openai {openai.__version__} has no Responses API")
        return client.responses
    return client.embeddings


@pytest.mark.parametrize("name", recording_names())
def test_sync_replay_yields_the_expected_event(
    name: str, server: ReplayServer, capture: Capture
) -> None:
    rec = recording(name)
    server.respond_with(rec)
    cls = openai.AzureOpenAI if _is_azure(rec) else openai.OpenAI
    client = cls(**_client_kwargs(rec, server))
    operation, kwargs = _call_args(rec)

    resource = _resource(client, operation)

    if rec.status >= 400:
        with pytest.raises(openai.APIStatusError) as raised:
            resource.create(**kwargs)
        assert raised.value.status_code == rec.status
    else:
        result = resource.create(**kwargs)
        if rec.is_stream:
            assert isinstance(result, openai.Stream)
            assert list(result)

    assert_matches_expected(capture.one, rec.expected)
    if _is_azure(rec):
        assert capture.one["provider"] == "azure_openai"
        assert capture.one["metadata"]["azure_deployment"] == kwargs["model"]


@pytest.mark.parametrize("name", recording_names())
async def test_async_replay_yields_the_expected_event(
    name: str, server: ReplayServer, capture: Capture
) -> None:
    rec = recording(name)
    server.respond_with(rec)
    cls = openai.AsyncAzureOpenAI if _is_azure(rec) else openai.AsyncOpenAI
    client = cls(**_client_kwargs(rec, server))
    operation, kwargs = _call_args(rec)

    resource = _resource(client, operation)

    if rec.status >= 400:
        with pytest.raises(openai.APIStatusError):
            await resource.create(**kwargs)
    else:
        result = await resource.create(**kwargs)
        if rec.is_stream:
            assert isinstance(result, openai.AsyncStream)
            assert [item async for item in result]

    assert_matches_expected(capture.one, rec.expected)
