"""A canary placed everywhere a secret or a text could be never leaves the process.

Prompts, outputs, the OpenAI API key, request headers, an error message and
sensitive metadata keys all carry one unique string. It must appear neither in the
bytes the ingest receives nor in any log record of ours, at DEBUG.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import openai
import pytest
from pytest_httpserver import HTTPServer
from recordings import recording, with_body
from werkzeug import Request, Response

import traket
from examples.replay import ReplayServer
from traket._instrument import instrument

CANARY = f"canary-{uuid.uuid4().hex}"


def _with_canary_output(body: str) -> str:
    data = json.loads(body)
    data["choices"][0]["message"]["content"] = CANARY
    return json.dumps(data)


def _with_canary_delta(body: str) -> str:
    marker = '"delta":{"content":"'
    assert marker in body
    return body.replace(marker, marker + CANARY, 1)


def _with_canary_error(body: str) -> str:
    data = json.loads(body)
    data["error"]["message"] = CANARY
    return json.dumps(data)


def test_the_canary_reaches_neither_the_ingest_nor_the_logs(
    server: ReplayServer, httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    received: list[bytes] = []

    def ingest(request: Request) -> Response:
        received.append(request.get_data())
        count = len(json.loads(request.get_data())["events"])
        answer = {"accepted": count, "duplicates": 0, "rejected": []}
        return Response(json.dumps(answer), 200, content_type="application/json")

    httpserver.expect_request("/api/v1/usage/events").respond_with_handler(ingest)
    margins = traket.create_margins(
        write_key="wk_privacy_test", endpoint=httpserver.url_for("/api/v1/usage/events")
    )
    instrument(
        margins=margins,
        default_attrs={"metadata": {"prompt": CANARY, "api_key": CANARY}},
        stream_usage=True,
    )
    client = openai.OpenAI(base_url=server.base_url, api_key=CANARY, max_retries=0)
    secret_call: dict[str, Any] = {
        "model": "gpt-4.1-nano",
        "messages": [{"role": "user", "content": CANARY}],
        "extra_headers": {"X-Canary": CANARY},
        "user": CANARY,
    }

    chat = recording("chat_basic_gpt41_nano")
    stream = recording("chat_stream_include_usage_gpt4")
    error = recording("error_400_missing_required_parameter_chat")
    with (
        caplog.at_level(logging.DEBUG),
        traket.attribute(
            customer="acme", metadata={"message": CANARY, "authorization": CANARY}
        ),
    ):
        server.respond_with(with_body(chat, _with_canary_output(chat.body)))
        answer = client.chat.completions.create(**secret_call)
        server.respond_with(with_body(stream, _with_canary_delta(stream.body)))
        chunks = list(client.chat.completions.create(**secret_call, stream=True))
        server.respond_with(with_body(error, _with_canary_error(error.body)))
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(**secret_call)
        assert margins.flush(timeout=10)

    assert answer.choices[0].message.content == CANARY
    assert any(
        CANARY in (c.choices[0].delta.content or "") for c in chunks if c.choices
    )
    assert CANARY in str(raised.value)
    assert all(CANARY in r.headers["Authorization"] for r in server.requests)
    assert all(r.headers["X-Canary"] == CANARY for r in server.requests)
    sent = b"".join(received)
    assert sent.count(b'"operation"') == 3
    assert CANARY.encode() not in sent
    ours = [
        r
        for r in caplog.records
        if not r.name.startswith(("openai", "httpx", "httpcore"))
    ]
    assert ours, "expected traket's own DEBUG records to be checked"
    assert not [r for r in ours if CANARY in r.getMessage()]
    margins.shutdown(timeout=2)
