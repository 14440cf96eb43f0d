"""Read what a metered call reported: model, ids, usage, and error details.

Only these fields are read from a response or an exception; nothing else of a
provider's answer (its text, its headers, its message) is ever kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._usage import usage_from_openai


def _get(source: Any, key: str) -> Any:
    if isinstance(source, Mapping):
        return source.get(key)
    return getattr(source, key, None)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def observe_response(response: Any) -> dict[str, Any]:
    """Return the wire fields a successful response reports about itself."""
    observed: dict[str, Any] = {"status": "success"}
    try:
        model = _text(_get(response, "model"))
        response_id = _text(_get(response, "id"))
        request_id = _text(_get(response, "_request_id")) or _text(
            _get(response, "request_id")
        )
        usage = usage_from_openai(_get(response, "usage"))
    except Exception:  # an object whose attributes raise: report what we have
        return observed
    if model:
        observed["model"] = model
    if response_id:
        observed["providerResponseId"] = response_id
    if request_id:
        observed["providerRequestId"] = request_id
    if usage is not None:
        observed["usage"] = usage
    return observed


def error_metadata(error: BaseException) -> dict[str, Any]:
    """Return scalar labels for a failed call: type, HTTP status, provider code."""
    metadata: dict[str, Any] = {"error_type": type(error).__name__}
    status = getattr(error, "status_code", None)
    if isinstance(status, int):
        metadata["http_status"] = status
    code = getattr(error, "code", None)
    if isinstance(code, str | int) and not isinstance(code, bool):
        metadata["error_code"] = str(code)
    return metadata


def observe_error(error: BaseException) -> dict[str, Any]:
    """Return the wire fields for a call that raised `error` (never its message)."""
    observed: dict[str, Any] = {"status": "error", "metadata": error_metadata(error)}
    request_id = _text(getattr(error, "request_id", None))
    if request_id:
        observed["providerRequestId"] = request_id
    return observed
