"""Build wire events: canonical keys, validation, sanitizing, identity.

Everything that leaves the process passes through `build_event`. It keeps only the
fields the ingest contract names, drops metadata that could carry prompt or output
text, and fixes the event's identity (`idempotencyKey`, `occurredAt`) once, so that
every retry resends the same event.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from ._errors import InvalidEventError, describe
from ._usage import MAX_COUNT, copy_wire_usage, usage_from_openai

Event = dict[str, Any]
Scalar = str | int | float | bool | None
Validator = Callable[[str, Any], Any]

STRING_FIELDS = frozenset(
    {
        "provider",
        "model",
        "externalCustomerId",
        "customerId",
        "feature",
        "environment",
        "promptType",
        "operation",
        "status",
        "providerRequestId",
        "providerResponseId",
        "traceId",
        "attributionQuality",
        "granularity",
        "idempotencyKey",
        "occurredAt",
    }
)
EVENT_FIELDS = STRING_FIELDS | {"durationMs", "usage", "cost", "units", "metadata"}
STATUSES = ("success", "error", "cancelled", "timeout")

MAX_METADATA_KEYS = 24
MAX_METADATA_KEY_LENGTH = 64
MAX_METADATA_VALUE_LENGTH = 512

_SENSITIVE_KEY = re.compile(
    r"prompt|message|input|output|response|completion|content|image|file|tool"
    r"|argument|api[\s_-]?key|authori[sz]ation|password|secret|token",
    re.IGNORECASE,
)


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _aliases(fields: frozenset[str] | set[str]) -> dict[str, str]:
    table = {name: name for name in fields}
    table.update({_snake_case(name): name for name in fields})
    return table


_EVENT_KEYS = _aliases(EVENT_FIELDS)
_COST_KEYS = _aliases({"amount", "currency", "source", "priceVersion", "metadata"})
_UNIT_KEYS = _aliases(
    {
        "quantity",
        "billableQuantity",
        "unitName",
        "unitType",
        "providerRawKey",
        "metadata",
    }
)


def canonical_key(key: str) -> str | None:
    """Return the wire spelling of an event field, or None for an unknown field."""
    return _EVENT_KEYS.get(key)


_verdicts: dict[str, bool] = {}
_MAX_VERDICTS = 4096


def is_sensitive_key(key: str) -> bool:
    """Tell whether a metadata key looks like it could carry user content or secrets."""
    verdict = _verdicts.get(key)
    if verdict is None:
        verdict = _SENSITIVE_KEY.search(key) is not None
        if len(_verdicts) < _MAX_VERDICTS:
            _verdicts[key] = verdict
    return verdict


def sanitize_metadata(value: Any) -> dict[str, Scalar] | None:
    """Keep scalar operational labels only, within the contract's limits.

    Sensitive-looking keys, nested values and non-finite numbers are dropped; string
    values are cut to 512 characters. Returns None when nothing is left.
    """
    if type(value) is not dict and not isinstance(value, Mapping):
        return None
    kept: dict[str, Scalar] = {}
    for raw_key, raw_value in value.items():
        if len(kept) >= MAX_METADATA_KEYS:
            break
        # Judged whole, before it is cut: a sensitive word past the cut, or one the
        # cut splits, still drops the key.
        key = str(raw_key).strip()
        if not key or is_sensitive_key(key) or not _is_unicode(key):
            continue
        key = key[:MAX_METADATA_KEY_LENGTH]
        if isinstance(raw_value, str):
            if _is_unicode(raw_value):
                kept[key] = raw_value[:MAX_METADATA_VALUE_LENGTH]
        elif isinstance(raw_value, float):
            if math.isfinite(raw_value):
                kept[key] = raw_value
        elif raw_value is None or isinstance(raw_value, int | bool):
            kept[key] = raw_value
    return kept or None


_second_cache: tuple[int, str] = (-1, "")


def utc_now_iso() -> str:
    """Return the current time as ISO 8601 UTC with milliseconds and a `Z` suffix.

    The text of the current second is cached: formatting a datetime costs more than
    the rest of `track()`, and the second changes rarely.
    """
    global _second_cache
    now = time.time()
    second = int(now)
    cached_second, text = _second_cache
    if cached_second != second:
        moment = datetime.fromtimestamp(second, timezone.utc)
        text = moment.strftime("%Y-%m-%dT%H:%M:%S")
        _second_cache = (second, text)
    return f"{text}.{int((now - second) * 1000):03d}Z"


class _KeyMaker:
    """Make idempotency keys: UUID-shaped, random per process, a counter within it.

    `uuid.uuid4()` reads the OS's random source for every event; here 74 random bits
    are drawn once per process (again after fork) and a 48-bit counter, started at a
    random point, tells the events of one process apart. The process id is checked
    on every key, since servers that fork without Python's hooks (uWSGI, C
    extensions) would otherwise leave parent and children making the same keys.
    """

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        head = uuid.UUID(bytes=secrets.token_bytes(16), version=4).hex
        self._prefix = f"{head[:8]}-{head[8:12]}-{head[12:16]}-{head[16:20]}-"
        self._counter = itertools.count(secrets.randbits(47))
        self._pid = os.getpid()

    def __call__(self) -> str:
        if os.getpid() != self._pid:
            self.reseed()
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"


new_idempotency_key = _KeyMaker()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=new_idempotency_key.reseed)


def build_event(fields: Mapping[str, Any]) -> Event:
    """Return a validated, sanitized wire event built from `fields`.

    Accepts camelCase or snake_case keys and drops any other key. Sets
    `idempotencyKey` and `occurredAt` unless given. Never mutates `fields`.
    Raises `InvalidEventError` naming the field, what was expected and what came.
    """
    event = check_fields(fields)
    provider = event.get("provider")
    if not provider:
        received = "an empty string" if provider == "" else "nothing"
        raise InvalidEventError("provider", "a non-empty string", received)
    if "idempotencyKey" not in event:
        event["idempotencyKey"] = new_idempotency_key()
    if "occurredAt" not in event:
        event["occurredAt"] = utc_now_iso()
    return event


def check_fields(fields: Mapping[str, Any]) -> Event:
    """Return `fields` validated and under their wire names, without an identity.

    What `build_event` does to each field, for a part of an event (e.g. the
    attribution an instrumented call is recorded with); no field is required.
    """
    if not isinstance(fields, Mapping):
        raise InvalidEventError("event", "a mapping of event fields", describe(fields))

    event: Event = {}
    for raw_key, value in fields.items():
        key = _EVENT_KEYS.get(raw_key)
        if key is None or value is None:
            continue
        if key in event:
            received = f"{raw_key} beside another spelling of it"
            raise InvalidEventError(key, f"one spelling of {key}", received)
        if type(value) is str and key in _PLAIN_STRINGS and value.isascii():
            event[key] = value
            continue
        checked = _VALIDATORS[key](key, value)
        if checked or key != "metadata":
            event[key] = checked
    return event


def _string(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidEventError(field, "a string", describe(value))
    if not _is_unicode(value):
        received = "a string with a lone surrogate (a cut emoji?)"
        raise InvalidEventError(field, "a string of valid Unicode", received)
    return value


def _is_unicode(text: str) -> bool:
    """Tell whether `text` can be sent as UTF-8 (no lone surrogates)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _status(field: str, value: Any) -> str:
    if value not in STATUSES:
        raise InvalidEventError(field, f"one of {', '.join(STATUSES)}", describe(value))
    return str(value)


def _non_empty_string(field: str, value: Any) -> str:
    text = _string(field, value)
    if not text.strip():
        raise InvalidEventError(field, "a non-empty string", "an empty string")
    return text


def _timestamp(field: str, value: Any) -> str:
    expected = "an ISO 8601 timestamp with a time zone, or an aware datetime"
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidEventError(field, expected, describe(value)) from None
    else:
        raise InvalidEventError(field, expected, describe(value))
    if moment.tzinfo is None:
        raise InvalidEventError(field, expected, f"{describe(value)} without time zone")
    utc = moment.astimezone(timezone.utc)
    if not _EARLIEST <= utc <= datetime.now(timezone.utc) + _AHEAD:
        expected = "a time from 2000 to a week from now"
        raise InvalidEventError(field, expected, describe(value))
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# What an event's time may be: no usage predates 2000, and a week ahead is more than
# any clock drifts. A year typed wrong would otherwise stretch a report over centuries.
_EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
_AHEAD = timedelta(days=7)


def _number(field: str, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise InvalidEventError(field, "a number", describe(value))
    number = float(value) if isinstance(value, Decimal) else value
    if not math.isfinite(number):
        raise InvalidEventError(field, "a finite number", describe(value))
    return number


def _duration(field: str, value: Any) -> int:
    number = _number(field, value)
    if not 0 <= number <= MAX_COUNT:
        expected = f"a non-negative number of ms no larger than {MAX_COUNT}"
        raise InvalidEventError(field, expected, describe(value))
    return round(number)


# A cost above a billion in one event is a unit mistake (cents for dollars, an
# exponent), not a bill: refused, so that it never distorts a report.
MAX_AMOUNT = 1e9


def _amount(field: str, value: Any) -> int | float:
    number = _number(field, value)
    if not -MAX_AMOUNT <= number <= MAX_AMOUNT:
        expected = "an amount from -1e9 to 1e9"
        raise InvalidEventError(field, expected, describe(value))
    return number


def _quantity(field: str, value: Any) -> int | float:
    number = _number(field, value)
    if not 0 <= number <= MAX_COUNT:
        expected = f"a non-negative quantity no larger than {MAX_COUNT}"
        raise InvalidEventError(field, expected, describe(value))
    return number


_TOKEN_KEYS = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "prompt_tokens",
    "completion_tokens",
)
_DETAIL_KEYS = {
    "input_tokens_details": ("cached_tokens", "cache_write_tokens"),
    "prompt_tokens_details": ("cached_tokens", "cache_write_tokens"),
    "output_tokens_details": ("reasoning_tokens",),
    "completion_tokens_details": ("reasoning_tokens",),
}


def _check_counts(field: str, source: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        value = source.get(key)
        if value is None or (type(value) is int and 0 <= value <= MAX_COUNT):
            continue
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if is_int and 0 <= value <= MAX_COUNT:
            continue
        expected = f"a non-negative integer no larger than {MAX_COUNT}"
        raise InvalidEventError(f"{field}.{key}", expected, describe(value))


def _usage(field: str, value: Any) -> dict[str, Any]:
    copied = copy_wire_usage(value)
    if copied is not None:
        return copied
    if isinstance(value, Mapping):
        _check_counts(field, value, _TOKEN_KEYS)
        for group, keys in _DETAIL_KEYS.items():
            details = value.get(group)
            if details is None:
                continue
            if not isinstance(details, Mapping):
                expected = "a mapping of token counts"
                raise InvalidEventError(f"{field}.{group}", expected, describe(details))
            _check_counts(f"{field}.{group}", details, keys)
    usage = usage_from_openai(value)
    if usage is None:
        expected = "a usage mapping with input_tokens or output_tokens"
        raise InvalidEventError(field, expected, describe(value))
    return usage


def _metadata(field: str, value: Any) -> dict[str, Scalar]:
    if type(value) is not dict and not isinstance(value, Mapping):
        expected = "a mapping of scalar labels"
        raise InvalidEventError(field, expected, describe(value))
    return sanitize_metadata(value) or {}


def _sub_mapping(
    field: str, value: Any, keys: Mapping[str, str], checks: Mapping[str, Validator]
) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidEventError(field, "a mapping", describe(value))
    result: dict[str, Any] = {}
    for raw_key, item in value.items():
        key = keys.get(raw_key) if isinstance(raw_key, str) else None
        if key is None or item is None:
            continue
        result[key] = checks[key](f"{field}.{key}", item)
    return result


def _currency(field: str, value: Any) -> str:
    text = _string(field, value).strip()
    if not re.fullmatch(r"[A-Za-z]{3}", text):
        raise InvalidEventError(field, "a three-letter ISO currency code", repr(text))
    return text.lower()


def _cost(field: str, value: Any) -> dict[str, Any]:
    cost = _sub_mapping(field, value, _COST_KEYS, _COST_CHECKS)
    if "metadata" in cost and not cost["metadata"]:
        del cost["metadata"]
    return cost


def _units(field: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list | tuple):
        raise InvalidEventError(field, "a list of unit mappings", describe(value))
    units = []
    for index, unit in enumerate(value):
        checked = _sub_mapping(f"{field}[{index}]", unit, _UNIT_KEYS, _UNIT_CHECKS)
        if "metadata" in checked and not checked["metadata"]:
            del checked["metadata"]
        units.append(checked)
    return units


_COST_CHECKS: dict[str, Validator] = {
    "amount": _amount,
    "currency": _currency,
    "source": _string,
    "priceVersion": _string,
    "metadata": _metadata,
}
_UNIT_CHECKS: dict[str, Validator] = {
    "quantity": _quantity,
    "billableQuantity": _quantity,
    "unitName": _string,
    "unitType": _string,
    "providerRawKey": _string,
    "metadata": _metadata,
}
_CHECKED_STRINGS = frozenset({"provider", "idempotencyKey", "status", "occurredAt"})
_PLAIN_STRINGS = STRING_FIELDS - _CHECKED_STRINGS
_VALIDATORS: dict[str, Validator] = {name: _string for name in STRING_FIELDS}
_VALIDATORS.update(
    {
        "provider": _non_empty_string,
        "idempotencyKey": _non_empty_string,
        "status": _status,
        "occurredAt": _timestamp,
        "durationMs": _duration,
        "usage": _usage,
        "cost": _cost,
        "units": _units,
        "metadata": _metadata,
    }
)
