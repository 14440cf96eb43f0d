"""Read what a call reported: model, ids, usage, error codes; nothing else.

Responses, chunks and exceptions are read field by field with `getattr` (or
`Mapping.get` for raw JSON). Their text (messages, outputs, error messages) is
never read, so it can never end up in an event or a log line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .._observe import response_outcome
from .._usage import fields_of, read_field, usage_from_openai

# The endpoints we meter, by the path the resource methods post to. Helpers
# (`parse`, `stream`) post to the same paths and are reported as the endpoint
# they call, so the recordings of a `parse` call read `chat.completions.create`.
OPERATIONS = {
    "/chat/completions": "chat.completions.create",
    "/responses": "responses.create",
    "/embeddings": "embeddings.create",
}


def get(source: Any, key: str) -> Any:
    """Read `key` from a pydantic object or a mapping; None when absent."""
    return read_field(source, key)


def text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def operation_of(options: Any) -> str | None:
    """Return the metered operation a request stands for, or None."""
    url = getattr(options, "url", None)
    method = getattr(options, "method", None)
    if not isinstance(url, str) or not isinstance(method, str):
        return None
    if method.lower() != "post":
        return None
    return OPERATIONS.get(url.partition("?")[0])  # beta: `/responses?beta=true`


def requested(options: Any) -> tuple[str | None, bool]:
    """Return the requested model and whether a stream was asked for."""
    body = getattr(options, "json_data", None)
    if not isinstance(body, Mapping):
        return None, False
    return text(body.get("model")), body.get("stream") is True


def read_result(
    result: Any, fields: dict[str, Any], meta: dict[str, Any], *, responses: bool
) -> str | None:
    """Copy model, response id, usage and service tier of a parsed response.

    `responses` says whether it is a Responses API object, the only one that
    reports how it ended: its outcome's labels are copied, and its status is
    returned (None for any other object, or a response still under way).
    """
    values = fields_of(result)
    if values is None:
        return None
    model = text(values.get("model"))
    if model:
        fields["model"] = model
    response_id = text(values.get("id"))
    if response_id:
        fields["providerResponseId"] = response_id
    usage = usage_from_openai(values.get("usage"))
    if usage is not None:
        fields["usage"] = usage
    tier = text(values.get("service_tier"))
    if tier:
        meta["service_tier"] = tier
    if not responses:
        return None
    outcome = response_outcome(values)
    if outcome is None:
        return None
    meta.update(outcome.labels)
    return outcome.status


def read_json_body(http_response: Any) -> Any:
    """Parse a JSON body that was already read; None when it is not JSON."""
    try:
        content_type = http_response.headers.get("content-type", "")
        if "json" not in content_type:
            return None
        return json.loads(http_response.content)
    except Exception:  # unread, not JSON, or not an httpx response
        return None


def read_error(
    error: BaseException, fields: dict[str, Any], meta: dict[str, Any]
) -> None:
    """Copy the status, HTTP status, provider code and request id of a failure."""
    name = type(error).__name__
    meta["error_type"] = name
    if not isinstance(error, Exception):
        fields["status"] = "cancelled"
        return
    fields["status"] = "timeout" if name == "APITimeoutError" else "error"

    status = getattr(error, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool):
        meta["http_status"] = status
    code = getattr(error, "code", None)
    if isinstance(code, str | int) and not isinstance(code, bool):
        meta["error_code"] = str(code)

    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if headers is not None:
        request_id = text(headers.get("x-request-id"))
        if request_id:
            fields["providerRequestId"] = request_id
