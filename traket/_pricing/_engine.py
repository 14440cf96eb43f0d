"""Price one event: the caller's cost, else an estimate, else a reason."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from traket._pricing._buckets import (
    PartialUsage,
    TokenBuckets,
    UsageError,
    buckets_from_usage,
)
from traket._pricing._catalog import LibraryCatalog
from traket._pricing._overrides import PriceFile, load_price_file
from traket._pricing._rates import Rates, Unpriced, price_buckets
from traket._pricing._result import ESTIMATE_SOURCE, CostResult

logger = logging.getLogger(__name__)

PRICE_FILE_ENV = "TRAKET_PRICES"
_AZURE = frozenset({"azure_openai", "azure"})
_TIMESTAMP = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?"
)


class CostEngine:
    """Estimate event costs from a price file and the genai-prices library.

    `price_file` adds or corrects prices (see docs/PRICING.md); its entries win over
    the library. `azure_deployments` maps Azure deployment names to model names, on
    top of the file's own `[azure_deployments]` table.
    """

    def __init__(
        self,
        *,
        price_file: PriceFile | str | Path | None = None,
        azure_deployments: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(price_file, (str, Path)):
            price_file = load_price_file(price_file)
        self._prices = price_file or PriceFile()
        self._deployments = {
            **self._prices.azure_deployments,
            **(azure_deployments or {}),
        }
        self._library = LibraryCatalog()

    def estimate(self, event: Mapping[str, Any]) -> CostResult:
        """Return the event's cost: its own when it carries one, else an estimate."""
        buckets: TokenBuckets | None = None
        inconsistent: UsageError | None = None
        try:
            buckets = buckets_from_usage(event.get("usage"))
        except UsageError as exc:
            inconsistent = exc

        recorded = _recorded_cost(event.get("cost"), buckets)
        if recorded is not None:
            return recorded
        if isinstance(inconsistent, PartialUsage):
            return CostResult("unpriced", reason=f"partial usage: {inconsistent}")
        if inconsistent is not None:
            return CostResult("unpriced", reason=f"inconsistent usage: {inconsistent}")
        if buckets is None:
            return CostResult("missing_usage", reason="the provider reported no usage")

        provider = str(event.get("provider") or "").strip().lower()
        model = str(event.get("model") or "").strip()
        tier = _service_tier(event.get("metadata"))
        if not model:
            return CostResult(
                "unpriced", reason="the event names no model", buckets=buckets
            )
        if provider in _AZURE:
            model = self._deployments.get(model, model)

        at = _occurred_at(event.get("occurredAt"))
        try:
            return self._price(provider, model, at, tier, buckets)
        except Unpriced as exc:
            return CostResult(
                "unpriced", reason=exc.reason, service_tier=tier, buckets=buckets
            )

    def _price(
        self,
        provider: str,
        model: str,
        at: datetime,
        tier: str | None,
        buckets: TokenBuckets,
    ) -> CostResult:
        override = self._prices.resolve(provider, model, at, tier)
        rates: Rates
        if override is not None:
            entry, match = override
            rates = entry.rates
            priced_as = f"{self._prices.source}/{entry.model}"
            version = self._prices.version(entry, at)
        else:
            rates, priced_as, match, version = self._library.resolve(
                provider, model, at, tier, buckets.input_total
            )

        amount, components = price_buckets(buckets, rates, name=priced_as)
        return CostResult(
            "estimate",
            amount=amount,
            currency=rates.currency,
            source=ESTIMATE_SOURCE,
            price_version=version,
            priced_as=priced_as,
            match=match,
            service_tier=tier,
            buckets=buckets,
            components=components,
        )


_default: CostEngine | None = None
_warned = False


def default_engine() -> CostEngine:
    """Return the shared engine, reading the price file named by `TRAKET_PRICES`."""
    global _default
    if _default is None:
        path = os.environ.get(PRICE_FILE_ENV)
        _default = CostEngine(price_file=path or None)
    return _default


def estimate_cost(
    event: Mapping[str, Any], *, engine: CostEngine | None = None
) -> CostResult:
    """Return the cost of one wire event (see `CostEngine.estimate`)."""
    return (engine or default_engine()).estimate(event)


def attach_estimate(
    event: dict[str, Any], *, engine: CostEngine | None = None
) -> dict[str, Any]:
    """Return the event with an estimated `cost` added, when one can be made.

    The caller's own cost is kept; an unpriced event is returned without a cost
    (never $0). The input is not mutated, and this never raises: a failure is
    logged and the event goes out as it came.
    """
    if event.get("cost"):
        return event
    try:
        wire = estimate_cost(event, engine=engine).to_wire()
    except Exception:
        # Never let pricing stop an event; warn once, then only at DEBUG.
        global _warned
        level = logging.DEBUG if _warned else logging.WARNING
        _warned = True
        logger.log(
            level, "cost estimate failed; event sent without cost", exc_info=True
        )
        return event
    if wire is None:
        return event
    return {**event, "cost": wire}


def _recorded_cost(cost: Any, buckets: TokenBuckets | None) -> CostResult | None:
    if not isinstance(cost, Mapping):
        return None
    value = cost.get("amount")
    if value is None or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    if not amount.is_finite():
        return None
    return CostResult(
        "recorded",
        amount=amount,
        currency=str(cost.get("currency") or "usd").lower(),
        source=str(cost.get("source") or "caller"),
        price_version=_optional_text(cost.get("priceVersion")),
        buckets=buckets,
    )


def _service_tier(metadata: Any) -> str | None:
    if not isinstance(metadata, Mapping):
        return None
    tier = metadata.get("service_tier")
    return tier.strip().lower() if isinstance(tier, str) and tier.strip() else None


def parse_occurred_at(value: Any) -> datetime | None:
    """Parse a wire timestamp into an aware UTC datetime; `None` when it is not one.

    Takes `Z` or an offset and any number of fractional digits, which Python 3.10's
    `datetime.fromisoformat` does not.
    """
    found = _TIMESTAMP.fullmatch(value.strip()) if isinstance(value, str) else None
    if found is None:
        return None
    day, hour, minute, second, fraction, zone = found.groups()
    text = f"{day}T{hour}:{minute}:{second or '00'}"
    text += f".{(fraction or '0')[:6].ljust(6, '0')}"
    if zone and zone != "Z":
        zone = zone.replace(":", "")
        text += f"{zone[:3]}:{zone[3:] or '00'}"
    else:
        text += "+00:00"
    try:
        return datetime.fromisoformat(text).astimezone(timezone.utc)
    except ValueError:
        return None


def _occurred_at(value: Any) -> datetime:
    return parse_occurred_at(value) or datetime.now(timezone.utc)


def _optional_text(value: Any) -> str | None:
    return str(value) if value is not None else None
