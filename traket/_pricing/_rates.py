"""Rates per million tokens, and the arithmetic that turns buckets into money."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from traket._pricing._buckets import TokenBuckets
from traket._pricing._result import CostComponent

_PER = Decimal(1_000_000)


class Unpriced(Exception):
    """No price is known for an event; `reason` says why, for the report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Rates:
    """Prices per million tokens for each bucket.

    A missing cached-input or cache-write rate means the provider gives no discount:
    those tokens are billed at the input rate, as the provider bills them.
    """

    input: Decimal | None
    output: Decimal | None
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    currency: str = "usd"


def price_buckets(
    buckets: TokenBuckets, rates: Rates, *, name: str
) -> tuple[Decimal, tuple[CostComponent, ...]]:
    """Price each bucket once and return the total with its components.

    Raise `Unpriced` when a bucket holding tokens has no rate at all.
    """
    plan = (
        ("uncached_input", buckets.uncached_input, rates.input),
        ("cached_input", buckets.cached_input, _or(rates.cached_input, rates.input)),
        ("cache_write", buckets.cache_write, _or(rates.cache_write, rates.input)),
        ("output", buckets.output, rates.output),
    )

    components: list[CostComponent] = []
    for bucket, tokens, rate in plan:
        if rate is None:
            if tokens:
                raise Unpriced(f"{name} has no {bucket.replace('_', ' ')} token price")
            continue
        amount = Decimal(tokens) * rate / _PER
        components.append(CostComponent(bucket, tokens, rate, amount))

    total = sum((item.amount for item in components), Decimal(0))
    return total, tuple(components)


def _or(first: Decimal | None, second: Decimal | None) -> Decimal | None:
    return first if first is not None else second
