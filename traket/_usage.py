"""Map every OpenAI usage report onto the one usage shape the wire carries.

The Responses API's shape is the wire shape: `input_tokens` includes cached tokens,
`output_tokens` includes reasoning tokens. Chat Completions and embeddings report
`prompt_tokens` and `completion_tokens`; those are mapped onto it here, once. A count
the provider did not report is None (null on the wire), never zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Usage = dict[str, Any]


class _Attributes:
    """A read-only `get` over the attributes of an object that is not a mapping."""

    __slots__ = ("_source",)

    def __init__(self, source: Any) -> None:
        self._source = source

    def get(self, key: str) -> Any:
        return getattr(self._source, key, None)


def fields_of(source: Any) -> Any:
    """Return something with `.get(key)` over the fields of `source`, or None.

    A mapping is returned as it is. A pydantic model answers a missing attribute
    by building and raising an error, which costs microseconds, so its `__dict__`
    (plus its extras, fields the installed SDK does not know yet) is read instead.
    Anything else is read attribute by attribute.
    """
    if type(source) is dict:
        return source
    if source is None:
        return None
    if hasattr(type(source), "__pydantic_fields__"):
        values = getattr(source, "__dict__", None)
        if type(values) is dict:
            extra = getattr(source, "__pydantic_extra__", None)
            return {**extra, **values} if extra else values
    if isinstance(source, Mapping):
        return source
    return _Attributes(source)


def read_field(source: Any, key: str) -> Any:
    """Read `key` from a mapping, a pydantic model or any object; None if absent."""
    fields = fields_of(source)
    return None if fields is None else fields.get(key)


# The largest count any JSON reader keeps exactly (a double's integer range); a
# larger one is no real token count, and some ingests refuse it.
MAX_COUNT = 2**53 - 1


def _count(value: Any) -> int | None:
    """Return a token count as a non-negative int, or None when it is not one."""
    if type(value) is int:
        return value if 0 <= value <= MAX_COUNT else None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value) if 0 <= value <= MAX_COUNT else None
    if isinstance(value, float) and value.is_integer() and 0 <= value <= MAX_COUNT:
        return int(value)
    return None


def _exact_count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_COUNT


def copy_wire_usage(usage: Any) -> Usage | None:
    """Return a copy of `usage` when it is a plain dict already in the wire shape.

    The fast path for events built from instrumentation, whose usage was mapped
    once already. Returns None for anything else, which takes the full path.
    """
    if type(usage) is not dict:
        return None
    input_tokens = usage.get("input_tokens")
    output_tokens = usage.get("output_tokens")
    total_tokens = usage.get("total_tokens")
    input_details: Any = usage.get("input_tokens_details")
    output_details: Any = usage.get("output_tokens_details")
    simple = (
        len(usage) == 5
        and _exact_count(input_tokens)
        and _exact_count(output_tokens)
        and _exact_count(total_tokens)
        and type(input_details) is dict
        and type(output_details) is dict
        and len(output_details) == 1
        and _exact_count(output_details.get("reasoning_tokens"))
        and 1 <= len(input_details) <= 2
        and _exact_count(input_details.get("cached_tokens"))
    )
    if not simple:
        return None
    if len(input_details) == 2 and not _exact_count(
        input_details.get("cache_write_tokens")
    ):
        return None
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": dict(input_details),
        "output_tokens": output_tokens,
        "output_tokens_details": dict(output_details),
        "total_tokens": total_tokens,
    }


def usage_from_openai(usage: Any) -> Usage | None:
    """Return `usage` in the wire shape, or None when it reports no token counts.

    Accepts Responses, Chat Completions and embeddings usage, as pydantic objects or
    mappings. A main count the provider left out is derived from the total when it
    can be, else it is None (null on the wire, as in 0.1.0): unknown, never zero.
    Never raises: anything unreadable counts as no usage.
    """
    if usage is None:
        return None
    try:
        return _map_usage(usage)
    except Exception:  # a foreign object whose attributes raise
        return None


def _main_counts(get: Any) -> tuple[int | None, int | None, int | None]:
    """Return input, output and total tokens; each None when it is unknown."""
    input_tokens = _count(get("input_tokens"))
    if input_tokens is None:
        input_tokens = _count(get("prompt_tokens"))
    output_tokens = _count(get("output_tokens"))
    if output_tokens is None:
        output_tokens = _count(get("completion_tokens"))
    total_tokens = _count(get("total_tokens"))

    if total_tokens is None:
        if input_tokens is not None and output_tokens is not None:
            total_tokens = input_tokens + output_tokens
    elif input_tokens is None:
        if output_tokens is not None and output_tokens <= total_tokens:
            input_tokens = total_tokens - output_tokens
    elif output_tokens is None and input_tokens <= total_tokens:
        output_tokens = total_tokens - input_tokens  # embeddings: zero
    return input_tokens, output_tokens, total_tokens


def _part(reported: int | None, whole: int | None) -> int | None:
    """Return a detail count within its whole: none reported is none, if known."""
    if whole is None:
        return reported
    return min(reported or 0, whole)


def _map_usage(source: Any) -> Usage | None:
    # Written out field by field: this runs once per metered call.
    get = fields_of(source).get
    input_tokens, output_tokens, total_tokens = _main_counts(get)
    if input_tokens is None and output_tokens is None and total_tokens is None:
        return None

    input_details = get("input_tokens_details")
    if input_details is None:
        input_details = get("prompt_tokens_details")
    output_details = get("output_tokens_details")
    if output_details is None:
        output_details = get("completion_tokens_details")

    cached: int | None = None
    cache_write: int | None = None
    if input_details is not None:
        details_of = fields_of(input_details).get
        cached = _count(details_of("cached_tokens"))
        cache_write = _count(details_of("cache_write_tokens"))
    if cache_write is None:
        cache_write = _count(get("cache_creation_input_tokens"))
    details: dict[str, int | None] = {"cached_tokens": _part(cached, input_tokens)}
    if cache_write is not None:
        details["cache_write_tokens"] = cache_write
    reasoning = None
    if output_details is not None:
        reasoning = _count(fields_of(output_details).get("reasoning_tokens"))

    return {
        "input_tokens": input_tokens,
        "input_tokens_details": details,
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": _part(reasoning, output_tokens)},
        "total_tokens": total_tokens,
    }


def normalize_openai_usage(usage: Any) -> dict[str, int]:
    """Return flat token counts from any OpenAI usage report (the 0.1.0 helper).

    Missing usage, or a missing count, gives zeros, as it did in 0.1.0; events
    themselves never carry zeros for unknown usage.
    """
    mapped = usage_from_openai(usage)
    if mapped is None:
        mapped = usage_from_openai({"input_tokens": 0, "output_tokens": 0}) or {}
    input_tokens: int = mapped["input_tokens"] or 0
    output_tokens: int = mapped["output_tokens"] or 0
    cached: int = mapped["input_tokens_details"]["cached_tokens"] or 0
    reasoning: int = mapped["output_tokens_details"]["reasoning_tokens"] or 0
    total = mapped["total_tokens"]
    return {
        "cached_tokens": cached,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "reasoning_tokens": reasoning,
        "total_tokens": input_tokens + output_tokens if total is None else total,
        "uncached_input_tokens": max(0, input_tokens - cached),
    }
