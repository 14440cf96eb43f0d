"""Aggregate stored events into the margins report, with exact `Decimal` money."""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from traket._errors import ConfigurationError
from traket._pricing import (
    CostEngine,
    CostResult,
    default_engine,
    parse_occurred_at,
)

_ZERO = Decimal(0)
_PER = Decimal(1_000_000)
# "Cost by day" lists every day of a span up to a quarter long, quiet days at zero,
# so gaps show; over a longer span (events years apart), only the days with events.
_FILLED_DAYS = 92


@dataclass(frozen=True)
class Filters:
    """The report's period and slice; `until` is inclusive (a whole day)."""

    since: date | None = None
    until: date | None = None
    customer: str | None = None
    feature: str | None = None
    environment: str | None = None

    def store_kwargs(self) -> dict[str, Any]:
        """Return the keyword arguments for `EventStore.events`."""
        # The last day is included: the store's bound is the next midnight, and
        # there is none after 9999-12-31.
        last = self.until if self.until != date.max else None
        return {
            "since": _midnight(self.since) if self.since else None,
            "until": _midnight(last + timedelta(days=1)) if last else None,
            "customer": self.customer,
            "feature": self.feature,
            "environment": self.environment,
        }

    def describe(self) -> str:
        """Return the filters as one short line for report headers."""
        parts = [
            f"{name}={value}"
            for name, value in (
                ("since", self.since),
                ("until", self.until),
                ("customer", self.customer),
                ("feature", self.feature),
                ("environment", self.environment),
            )
            if value is not None
        ]
        return ", ".join(parts) or "all events"


@dataclass(frozen=True)
class PricedEvent:
    """A stored event with its cost and what caching saved on it."""

    event: Mapping[str, Any]
    cost: CostResult
    cache_savings: Decimal = _ZERO

    @property
    def customer(self) -> str | None:
        """Return the caller's customer id, `None` when unattributed."""
        return _label(self.event.get("externalCustomerId"))

    @property
    def feature(self) -> str | None:
        """Return the product feature, `None` when unattributed."""
        return _label(self.event.get("feature"))

    @property
    def served_model(self) -> str | None:
        """Return the model the response reported."""
        return _label(self.event.get("model"))

    @property
    def requested_model(self) -> str | None:
        """Return the model asked for (`metadata.requested_model`), else the served."""
        metadata = self.event.get("metadata")
        if isinstance(metadata, Mapping):
            requested = _label(metadata.get("requested_model"))
            if requested:
                return requested
        return self.served_model

    @property
    def day(self) -> date | None:
        """Return the UTC day the event occurred on."""
        moment = parse_occurred_at(self.event.get("occurredAt"))
        return moment.date() if moment else None


@dataclass
class Tally:
    """Counts and money for one group of events."""

    events: int = 0
    priced: int = 0
    unpriced: int = 0
    missing_usage: int = 0
    cost: Decimal = _ZERO
    input_tokens: int = 0
    output_tokens: int = 0
    with_usage: int = 0

    def add(self, item: PricedEvent) -> None:
        """Count one event in this group."""
        self.events += 1
        result = item.cost
        if result.amount is not None:
            self.priced += 1
            self.cost += result.amount
        elif result.status == "missing_usage":
            self.missing_usage += 1
        else:
            self.unpriced += 1
        if result.buckets is not None:
            self.with_usage += 1
            self.input_tokens += result.buckets.input_total
            self.output_tokens += result.buckets.output

    @property
    def tokens_known(self) -> bool:
        """Return whether token counts mean something: some event reported usage.

        A group whose events all lack usage has unknown tokens, not zero tokens.
        """
        return self.with_usage > 0 or self.events == 0

    @property
    def known_cost(self) -> Decimal | None:
        """Return the cost, `None` when the group has events but none was priced."""
        if self.events and not self.priced:
            return None
        return self.cost

    @property
    def complete(self) -> bool:
        """Return whether every event of the group has a cost."""
        return self.unpriced == 0 and self.missing_usage == 0


@dataclass(frozen=True)
class CustomerRow:
    """One customer's cost, and margin when revenue is known."""

    customer: str | None
    tally: Tally
    revenue: Decimal | None = None

    @property
    def margin(self) -> Decimal | None:
        """Return revenue minus cost, `None` without revenue."""
        return None if self.revenue is None else self.revenue - self.tally.cost

    @property
    def margin_percent(self) -> Decimal | None:
        """Return the margin as a percentage of revenue, `None` when revenue is 0."""
        if self.revenue is None or self.revenue == 0 or self.margin is None:
            return None
        return self.margin / self.revenue * 100


@dataclass(frozen=True)
class TokenSummary:
    """Tokens by disjoint type, the cache hit rate and what caching saved."""

    uncached_input: int = 0
    cached_input: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0
    cache_savings: Decimal = _ZERO

    @property
    def input_total(self) -> int:
        """Return every input token."""
        return self.uncached_input + self.cached_input + self.cache_write

    @property
    def total(self) -> int:
        """Return every input and output token."""
        return self.input_total + self.output

    @property
    def cache_hit_rate(self) -> Decimal | None:
        """Return cached input over all input, `None` without input."""
        if not self.input_total:
            return None
        return Decimal(self.cached_input) / Decimal(self.input_total)


@dataclass(frozen=True)
class DataQuality:
    """What the numbers leave out and where they come from."""

    unpriced: list[tuple[str, str, int]] = field(default_factory=list)
    missing_usage: int = 0
    missing_usage_by_status: dict[str, int] = field(default_factory=dict)
    cost_sources: dict[str, int] = field(default_factory=dict)
    price_versions: dict[str, int] = field(default_factory=dict)
    currencies: dict[str, int] = field(default_factory=dict)
    customers_without_revenue: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    """The margins report for one period and slice."""

    filters: Filters
    total: Tally
    customers: list[CustomerRow]
    features: list[tuple[str | None, Tally]]
    customer_features: list[tuple[str | None, str | None, Tally]]
    models: list[tuple[str | None, str | None, Tally]]
    days: list[tuple[date, Tally]]
    tokens: TokenSummary
    quality: DataQuality
    has_revenue: bool = False
    currency: str = "usd"
    generated_at: datetime = field(
        default_factory=lambda: datetime.now(timezone.utc).replace(microsecond=0)
    )

    @property
    def every_day(self) -> bool:
        """Return whether `days` holds every day of its span, or only busy days."""
        if not self.days:
            return True
        return (self.days[-1][0] - self.days[0][0]).days + 1 == len(self.days)


def price_events(
    events: Iterable[Mapping[str, Any]], engine: CostEngine | None = None
) -> Iterable[PricedEvent]:
    """Yield each event with its cost: the recorded one, else an estimate now."""
    engine = engine or default_engine()
    for event in events:
        result = engine.estimate(event)
        yield PricedEvent(event, result, _cache_savings(event, result, engine))


def build_report(
    events: Iterable[Mapping[str, Any]],
    *,
    engine: CostEngine | None = None,
    revenue: Mapping[str, Decimal] | None = None,
    filters: Filters | None = None,
) -> Report:
    """Aggregate events (already filtered by the store) into a `Report`."""
    total = Tally()
    customers: dict[str | None, Tally] = defaultdict(Tally)
    features: dict[str | None, Tally] = defaultdict(Tally)
    pairs: dict[tuple[str | None, str | None], Tally] = defaultdict(Tally)
    models: dict[tuple[str | None, str | None], Tally] = defaultdict(Tally)
    days: dict[date, Tally] = defaultdict(Tally)
    tokens = Counter[str]()
    savings = _ZERO
    unpriced = Counter[tuple[str, str]]()
    no_usage = Counter[str]()
    sources = Counter[str]()
    versions = Counter[str]()
    version_dates: dict[str, tuple[str, str]] = {}
    currencies = Counter[str]()

    priced = list(price_events(events, engine))
    currency = _report_currency(priced)
    for item in (_in_currency(each, currency) for each in priced):
        result = item.cost
        for tally in (
            total,
            customers[item.customer],
            features[item.feature],
            pairs[item.customer, item.feature],
            models[item.requested_model, item.served_model],
        ):
            tally.add(item)
        if item.day is not None:
            days[item.day].add(item)

        if result.buckets is not None:
            buckets = result.buckets
            tokens["uncached_input"] += buckets.uncached_input
            tokens["cached_input"] += buckets.cached_input
            tokens["cache_write"] += buckets.cache_write
            tokens["output"] += buckets.output
            tokens["reasoning"] += buckets.reasoning
        savings += item.cache_savings

        if result.status == "missing_usage":
            no_usage[str(item.event.get("status") or "unknown")] += 1
        elif result.amount is None:
            model = item.served_model or "(no model)"
            unpriced[model, result.reason or "unknown"] += 1
        else:
            sources[_source_label(result)] += 1
            base, _, when = (result.price_version or "(none given)").partition(" @ ")
            versions[base] += 1
            if when:
                seen = version_dates.setdefault(base, (when, when))
                version_dates[base] = (min(seen[0], when), max(seen[1], when))
            currencies[result.currency] += 1

    revenue = dict(revenue or {})
    if filters is not None and filters.customer is not None:
        revenue = {k: v for k, v in revenue.items() if k == filters.customer}
    customer_rows = _customer_rows(customers, revenue)
    quality = DataQuality(
        unpriced=[(m, r, n) for (m, r), n in unpriced.most_common()],
        missing_usage=sum(no_usage.values()),
        missing_usage_by_status=dict(no_usage.most_common()),
        cost_sources=dict(sources.most_common()),
        price_versions={
            _dated(base, version_dates.get(base)): count
            for base, count in versions.most_common()
        },
        currencies=dict(currencies.most_common()),
        customers_without_revenue=sorted(
            row.customer or "(unattributed)"
            for row in customer_rows
            if revenue and row.revenue is None
        ),
    )

    return Report(
        filters=filters or Filters(),
        total=total,
        customers=customer_rows,
        features=_ranked(features.items()),
        customer_features=[
            (customer, feature, tally)
            for (customer, feature), tally in _ranked(pairs.items())
        ],
        models=[
            (req, served, tally) for (req, served), tally in _ranked(models.items())
        ],
        days=_by_day(days),
        tokens=TokenSummary(
            uncached_input=tokens["uncached_input"],
            cached_input=tokens["cached_input"],
            cache_write=tokens["cache_write"],
            output=tokens["output"],
            reasoning=tokens["reasoning"],
            cache_savings=savings,
        ),
        quality=quality,
        has_revenue=bool(revenue),
        currency=currency,
    )


def load_revenue_csv(path: str | Path) -> dict[str, Decimal]:
    """Read revenue per customer from a CSV with columns `customer,amount`.

    Amounts for the same customer are added up.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise ConfigurationError(f"revenue file {str(path)!r}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"revenue file {str(path)!r}: expected UTF-8 text, received bytes that "
            "are not UTF-8"
        ) from exc
    except csv.Error as exc:
        raise ConfigurationError(
            f"revenue file {str(path)!r}: expected CSV, received text that is not "
            f"({exc})"
        ) from exc

    revenue: dict[str, Decimal] = {}
    for line, row in enumerate(rows, start=2):
        customer = (row.get("customer") or "").strip()
        if not customer or row.get("amount") is None or None in row:
            raise ConfigurationError(
                f"revenue file {str(path)!r} line {line}: expected columns "
                "'customer,amount'"
            )
        amount = _money(row["amount"], f"revenue file {str(path)!r} line {line}")
        revenue[customer] = revenue.get(customer, _ZERO) + amount
    return revenue


def parse_revenue_pairs(pairs: Sequence[str]) -> dict[str, Decimal]:
    """Parse `customer=amount` pairs given on the command line."""
    revenue: dict[str, Decimal] = {}
    for pair in pairs:
        customer, sep, amount = pair.rpartition("=")
        if not sep or not customer.strip():
            raise ConfigurationError(
                f"--revenue {pair!r}: expected CUSTOMER=AMOUNT or a CSV file"
            )
        value = _money(amount, f"--revenue {pair!r}")
        revenue[customer.strip()] = revenue.get(customer.strip(), _ZERO) + value
    return revenue


def _customer_rows(
    customers: Mapping[str | None, Tally], revenue: Mapping[str, Decimal]
) -> list[CustomerRow]:
    rows = [
        CustomerRow(name, tally, revenue.get(name) if name else None)
        for name, tally in customers.items()
    ]
    for name, amount in revenue.items():
        if name not in customers:
            rows.append(CustomerRow(name, Tally(), amount))

    if not revenue:
        return sorted(rows, key=lambda r: (-r.tally.cost, r.customer or ""))
    # Least profitable first; customers whose revenue is unknown go last.
    known = sorted(
        (r for r in rows if r.margin is not None),
        key=lambda r: (r.margin, -r.tally.cost, r.customer or ""),
    )
    unknown = sorted(
        (r for r in rows if r.margin is None),
        key=lambda r: (-r.tally.cost, r.customer or ""),
    )
    return known + unknown


def _ranked(items: Iterable[tuple[Any, Tally]]) -> list[Any]:
    return sorted(items, key=lambda kv: (-kv[1].cost, -kv[1].events, str(kv[0])))


def _by_day(days: Mapping[date, Tally]) -> list[tuple[date, Tally]]:
    """Return the days in order: every day of a short span, else the busy days only.

    Filling a span of centuries (one event dated in year 205) would make a row for
    each of some 666,000 empty days.
    """
    if not days:
        return []
    first, last = min(days), max(days)
    span = (last - first).days + 1
    if span > _FILLED_DAYS:
        return sorted(days.items())
    return [
        (day, days.get(day, Tally()))
        for day in (first + timedelta(days=n) for n in range(span))
    ]


def _report_currency(items: Sequence[PricedEvent]) -> str:
    """Return the currency most priced events are in; usd wins a tie."""
    counts = Counter(i.cost.currency for i in items if i.cost.amount is not None)
    if not counts:
        return "usd"
    return min(counts, key=lambda name: (-counts[name], name != "usd", name))


def _in_currency(item: PricedEvent, currency: str) -> PricedEvent:
    """Return the event unpriced when its cost is in another currency.

    The report never adds amounts of two currencies, and converts none.
    """
    cost = item.cost
    if cost.amount is None or cost.currency == currency:
        return item
    reason = (
        f"cost is in {cost.currency.upper()} ({cost.source}); this report adds "
        f"{currency.upper()} only and converts nothing"
    )
    unpriced = replace(
        cost, status="unpriced", amount=None, reason=reason, components=()
    )
    return PricedEvent(item.event, unpriced)


def _cache_savings(
    event: Mapping[str, Any], result: CostResult, engine: CostEngine
) -> Decimal:
    """Return cached tokens times the gap between the input and cached rates."""
    buckets = result.buckets
    if buckets is None or not buckets.cached_input:
        return _ZERO
    priced = result
    if result.status == "recorded":
        # The recorded cost carries no rates: look up the list rates for the event.
        priced = engine.estimate({k: v for k, v in event.items() if k != "cost"})

    if priced.currency != result.currency:
        return _ZERO  # list rates in another currency than the cost
    rates = {item.bucket: item.rate_per_mtok for item in priced.components}
    full, cached = rates.get("uncached_input"), rates.get("cached_input")
    if full is None or cached is None:
        return _ZERO
    return Decimal(buckets.cached_input) * (full - cached) / _PER


def _source_label(result: CostResult) -> str:
    if result.status == "recorded":
        return f"{result.source} (recorded)"
    return f"{result.source} (at report time)"


def _dated(base: str, span: tuple[str, str] | None) -> str:
    """Name a price source with the span of dates whose prices were used."""
    if span is None:
        return base
    first, last = span
    return f"{base} @ {first}" if first == last else f"{base} @ {first}..{last}"


# An amount: digits with a point for decimals, and commas only between thousands
# ("1,234.50"). "12,50" is refused rather than read as 1250.
_AMOUNT = re.compile(r"-?\$?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?")


def _money(text: str, where: str) -> Decimal:
    cleaned = text.strip()
    if not _AMOUNT.fullmatch(cleaned):
        expected = "an amount such as 1234.50 or 1,234.50"
        raise ConfigurationError(f"{where}: expected {expected}, received {text!r}")
    return Decimal(cleaned.replace(",", "").replace("$", ""))


def _label(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
