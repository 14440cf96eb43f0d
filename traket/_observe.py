"""Read what a metered call reported, and build the event it is recorded as.

Only model, ids, usage and error details are read from a response or an
exception; nothing else of a provider's answer (its text, its headers, its
message) is ever kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from . import _scope
from ._errors import InvalidEventError, describe
from ._event import (
    STATUSES,
    Event,
    check_fields,
    new_idempotency_key,
    sanitize_metadata,
    utc_now_iso,
)
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


# The attribution last checked, by identity: (scope, defaults, checked fields).
# Only immutable mappings are kept (scope frames, instrumentation's defaults), so
# the many calls made inside one `attribute()` block check it once.
_last_checked: tuple[Any, Any, Event] | None = None


def checked_attribution(
    scope: Mapping[str, Any], defaults: Mapping[str, Any] | None
) -> Event:
    """Return `defaults` overlaid with `scope`, validated and under wire names.

    Raises `InvalidEventError` naming the field when an attribute is malformed.
    """
    global _last_checked
    last = _last_checked
    if last is not None and last[0] is scope and last[1] is defaults:
        return last[2]
    merged = _scope.merge_fields(defaults, scope) if defaults else scope
    checked = check_fields(merged)
    if type(scope) is MappingProxyType and (
        defaults is None or type(defaults) is MappingProxyType
    ):
        _last_checked = (scope, defaults, checked)
    return checked


def observed_event(observed: Mapping[str, Any], attribution: Event) -> Event:
    """Build the wire event of a metered call from what traket observed.

    `observed` comes from traket's own readers (wire keys; strings, counts and
    usage already in wire shape), so only its metadata is sanitized here, merged
    with the attribution's; `attribution` comes from `checked_attribution`. What
    was measured wins over attributes, except a provider the caller named.
    """
    event = dict(attribution)
    keep_provider = "provider" in attribution
    for key, value in observed.items():
        if value is not None and not (keep_provider and key == "provider"):
            event[key] = value
    metadata = observed.get("metadata")
    outer = attribution.get("metadata")
    if outer:
        metadata = {**outer, **metadata} if metadata else outer
    labels = sanitize_metadata(metadata) if metadata else None
    if labels:
        event["metadata"] = labels
    else:
        event.pop("metadata", None)

    if "externalCustomerId" not in event:
        event["attributionQuality"] = "missing"
    elif "attributionQuality" not in event:
        event["attributionQuality"] = "default"
    if not event.get("provider"):
        raise InvalidEventError("provider", "a non-empty string", "nothing")
    if event.get("status") not in STATUSES:
        raise InvalidEventError(
            "status", "a call status", describe(event.get("status"))
        )
    if "idempotencyKey" not in event:
        event["idempotencyKey"] = new_idempotency_key()
    if "occurredAt" not in event:
        event["occurredAt"] = utc_now_iso()
    return event
