"""The outcome of pricing one event: an amount with its audit trail, or a reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from traket._pricing._buckets import TokenBuckets

#: `recorded`: the event carried its own cost. `estimate`: priced here.
#: `unpriced`: no price is known. `missing_usage`: the provider reported no usage.
Status = Literal["recorded", "estimate", "unpriced", "missing_usage"]

ESTIMATE_SOURCE = "estimate"

BUCKETS = ("uncached_input", "cached_input", "cache_write", "output")
#: The keys of each bucket's amount in `cost.metadata`. They avoid the words the
#: metadata sanitizer drops as sensitive ("input", "output", "token").
WIRE_COMPONENT_KEYS = {
    "uncached_input": "uncachedInAmount",
    "cached_input": "cachedInAmount",
    "cache_write": "cacheWriteAmount",
    "output": "outAmount",
}


@dataclass(frozen=True)
class CostComponent:
    """One bucket's share of an estimate: tokens times a rate per million."""

    bucket: str
    tokens: int
    rate_per_mtok: Decimal
    amount: Decimal


@dataclass(frozen=True)
class CostResult:
    """The cost of one event and how it was found.

    `amount` is `None` unless the status is `recorded` or `estimate`: an unpriced event
    is never $0. Money stays `Decimal`; round only when displaying it.
    """

    status: Status
    amount: Decimal | None = None
    currency: str = "usd"
    source: str | None = None
    price_version: str | None = None
    priced_as: str | None = None
    match: str | None = None
    service_tier: str | None = None
    reason: str | None = None
    buckets: TokenBuckets | None = None
    components: tuple[CostComponent, ...] = field(default=())

    @property
    def priced(self) -> bool:
        """Return whether the result carries an amount."""
        return self.amount is not None

    def component(self, bucket: str) -> Decimal:
        """Return the amount of one bucket, zero when it was not priced."""
        for item in self.components:
            if item.bucket == bucket:
                return item.amount
        return Decimal(0)

    def to_wire(self) -> dict[str, Any] | None:
        """Return the event's `cost` object for an estimate, `None` otherwise."""
        if self.status != "estimate" or self.amount is None:
            return None

        metadata: dict[str, Any] = {"pricedAs": self.priced_as, "match": self.match}
        if self.service_tier:
            metadata["serviceTier"] = self.service_tier
        for item in self.components:
            metadata[WIRE_COMPONENT_KEYS[item.bucket]] = float(item.amount)

        return {
            "amount": float(self.amount),
            "currency": self.currency,
            "source": self.source or ESTIMATE_SOURCE,
            "priceVersion": self.price_version,
            "metadata": metadata,
        }
