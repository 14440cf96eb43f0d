"""One cost engine for the SDK and the local ingest.

Usage is split into disjoint buckets once (uncached input, cached input, cache
writes, output with reasoning inside), priced with `Decimal` from the user's price
file and the optional `genai-prices` library, and returned with its audit trail.
`genai-prices` is imported only when a price is looked up.
"""

from traket._pricing._buckets import TokenBuckets, UsageError, buckets_from_usage
from traket._pricing._engine import (
    PRICE_FILE_ENV,
    CostEngine,
    attach_estimate,
    default_engine,
    estimate_cost,
    parse_occurred_at,
)
from traket._pricing._overrides import (
    PriceEntry,
    PriceFile,
    load_price_file,
    parse_price_file,
)
from traket._pricing._rates import Rates
from traket._pricing._result import (
    BUCKETS,
    WIRE_COMPONENT_KEYS,
    CostComponent,
    CostResult,
)

__all__ = [
    "BUCKETS",
    "PRICE_FILE_ENV",
    "CostComponent",
    "CostEngine",
    "CostResult",
    "PriceEntry",
    "PriceFile",
    "Rates",
    "WIRE_COMPONENT_KEYS",
    "TokenBuckets",
    "UsageError",
    "attach_estimate",
    "buckets_from_usage",
    "default_engine",
    "estimate_cost",
    "load_price_file",
    "parse_occurred_at",
    "parse_price_file",
]
