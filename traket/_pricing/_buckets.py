"""Split an event's usage into disjoint token buckets, once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class UsageError(ValueError):
    """The usage cannot be split into buckets (a count is negative or inconsistent)."""


class PartialUsage(UsageError):
    """A main count is present as null: the provider did not report it."""


@dataclass(frozen=True)
class TokenBuckets:
    """Disjoint token counts: each token is billed in exactly one bucket.

    `uncached_input + cached_input + cache_write` equals the reported input tokens,
    and `output` is the reported output tokens with reasoning already inside it.
    `reasoning` is informational only: it is part of `output` and never priced again.
    """

    uncached_input: int
    cached_input: int
    cache_write: int
    output: int
    reasoning: int = 0

    @property
    def input_total(self) -> int:
        """Return every input token, cached or not."""
        return self.uncached_input + self.cached_input + self.cache_write

    @property
    def total(self) -> int:
        """Return every token, input and output."""
        return self.input_total + self.output


def buckets_from_usage(usage: Any) -> TokenBuckets | None:
    """Derive the disjoint buckets from wire usage; `None` when there is no usage.

    Reads the Responses shape (`input_tokens` with cached inside, `output_tokens` with
    reasoning inside) and, for events from older senders, the Chat Completions
    spelling. Raises `UsageError` when the counts contradict each other.
    """
    if not isinstance(usage, Mapping) or not usage:
        return None

    input_details = _details(usage, "input_tokens_details", "prompt_tokens_details")
    output_details = _details(
        usage, "output_tokens_details", "completion_tokens_details"
    )
    input_tokens = _count(usage, "input_tokens", "prompt_tokens")
    output_tokens = _count(usage, "output_tokens", "completion_tokens")
    if input_tokens is None and output_tokens is None:
        return None
    # A count sent as null is unknown (an absent one is zero, as older senders
    # omit output_tokens for embeddings): pricing it as 0 would under-bill.
    for key in ("input_tokens", "output_tokens"):
        if key in usage and usage[key] is None:
            raise PartialUsage(f"{key} was not reported")

    input_total = input_tokens or 0
    cached = _count(input_details, "cached_tokens") or 0
    cache_write = _count(input_details, "cache_write_tokens") or 0
    output = output_tokens or 0
    reasoning = _count(output_details, "reasoning_tokens") or 0

    if cached + cache_write > input_total:
        raise UsageError(
            f"cached ({cached}) and cache-write ({cache_write}) tokens exceed "
            f"input_tokens ({input_total})"
        )
    if reasoning > output:
        raise UsageError(
            f"reasoning_tokens ({reasoning}) exceed output_tokens ({output})"
        )

    return TokenBuckets(
        uncached_input=input_total - cached - cache_write,
        cached_input=cached,
        cache_write=cache_write,
        output=output,
        reasoning=reasoning,
    )


def _details(usage: Mapping[str, Any], *keys: str) -> Mapping[str, Any]:
    for key in keys:
        value = usage.get(key)
        if isinstance(value, Mapping):
            return value
    return {}


def _count(source: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = source.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{key} must be a number, got {type(value).__name__}")
        if value < 0 or value != int(value):
            raise UsageError(f"{key} must be a whole number >= 0, got {value!r}")
        return int(value)
    return None
