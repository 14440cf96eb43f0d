"""Read what a metered call reported, and build the event it is recorded as.

Only model, ids, usage and error details are read from a response or an
exception; nothing else of a provider's answer (its text, its headers, its
message) is ever kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

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
from ._usage import fields_of, usage_from_openai


def _get(source: Any, key: str) -> Any:
    if isinstance(source, Mapping):
        return source.get(key)
    return getattr(source, key, None)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class Outcome(NamedTuple):
    """How a call ended, as its answer reports it: the event status and labels."""

    status: str
    labels: dict[str, str]


def _code(value: Any) -> str | None:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value) or None
    return None


def response_outcome(response: Any) -> Outcome | None:
    """Return how a Responses API object says its call ended; None while under way.

    The one reading of a response's `status`, for every path that meets one
    (streamed or not, instrumented or tracked). `failed` is an error with the
    provider's error code, never its message. `incomplete` was billed: a success
    labelled with the reason it stopped. `queued` and `in_progress` (a background
    response, or a stream's first events) tell nothing yet.
    """
    values = fields_of(response)
    if values is None:
        return None
    state = values.get("status")
    if state == "completed":
        return Outcome("success", {})
    if state == "failed":
        labels = {"finish_state": "failed"}
        code = _code(_get(values.get("error"), "code"))
        if code:
            labels["error_code"] = code
        return Outcome("error", labels)
    if state == "incomplete":
        labels = {"finish_state": "incomplete"}
        reason = _text(_get(values.get("incomplete_details"), "reason"))
        if reason:
            labels["incomplete_reason"] = reason
        return Outcome("success", labels)
    if state == "cancelled":
        return Outcome("cancelled", {"finish_state": "cancelled"})
    return None


def observe_response(response: Any) -> dict[str, Any]:
    """Return the wire fields a response reports about itself, its outcome too."""
    observed: dict[str, Any] = {"status": "success"}
    try:
        model = _text(_get(response, "model"))
        response_id = _text(_get(response, "id"))
        request_id = _text(_get(response, "_request_id")) or _text(
            _get(response, "request_id")
        )
        usage = usage_from_openai(_get(response, "usage"))
        # Only a Responses API object's `status` is a call's outcome (a batch's
        # or a fine-tuning job's is not).
        is_response = _get(response, "object") == "response"
        outcome = response_outcome(response) if is_response else None
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
    if outcome is not None:
        observed["status"] = outcome.status
        if outcome.labels:
            observed["metadata"] = dict(outcome.labels)
    return observed


def error_metadata(error: BaseException) -> dict[str, Any]:
    """Return scalar labels for a failed call: type, HTTP status, provider code."""
    metadata: dict[str, Any] = {"error_type": type(error).__name__}
    status = getattr(error, "status_code", None)
    if isinstance(status, int):
        metadata["http_status"] = status
    code = _code(getattr(error, "code", None))
    if code:
        metadata["error_code"] = code
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
    # Each checked on its own, so that a spelling in one (external_customer_id)
    # is overridden by the other's (externalCustomerId), never refused as a clash.
    checked = check_fields(scope)
    if defaults:
        checked = _scope.merge_fields(check_fields(defaults), checked)
    if type(scope) is MappingProxyType and (
        defaults is None or type(defaults) is MappingProxyType
    ):
        _last_checked = (scope, defaults, checked)
    return checked


def _labels(
    own: Mapping[str, Any] | None, callers: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """Return traket's own labels and the caller's, traket's first.

    The key limit keeps the first keys: with traket's labels (`http_status`,
    `error_code`, `stream`, ...) in front it never cuts them, and drops the
    caller's surplus keys instead, as it drops any keys past the limit. On a key
    both set, traket's value wins.
    """
    if own and callers:
        merged = dict(own)
        for key, value in callers.items():
            merged.setdefault(key, value)
        return sanitize_metadata(merged)
    labels = own or callers
    return sanitize_metadata(labels) if labels else None


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
    labels = _labels(observed.get("metadata"), attribution.get("metadata"))
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
