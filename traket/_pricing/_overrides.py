"""The user's price file: added or corrected prices, and Azure deployment names."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from traket._errors import ConfigurationError, describe
from traket._pricing._names import candidates
from traket._pricing._rates import Rates

_RATE_KEYS = (
    "input_per_mtok",
    "output_per_mtok",
    "cached_input_per_mtok",
    "cache_write_per_mtok",
)
_ENTRY_KEYS = frozenset(
    {*_RATE_KEYS, "model", "provider", "effective_from", "service_tier"}
    | {"currency", "note"}
)


@dataclass(frozen=True)
class PriceEntry:
    """One price from the file, in force from `effective_from` (or always)."""

    model: str
    rates: Rates
    provider: str | None = None
    effective_from: date | None = None
    service_tier: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class PriceFile:
    """Prices and Azure deployment names read from a TOML or JSON file."""

    source: str = "overrides"
    entries: tuple[PriceEntry, ...] = ()
    azure_deployments: Mapping[str, str] = field(default_factory=dict)

    def resolve(
        self, provider: str, model: str, at: datetime, tier: str | None
    ) -> tuple[PriceEntry, str] | None:
        """Return the entry in force for the model on `at`'s date, and how it matched.

        Names are tried exactly, then by dated family, as for the library. Among the
        entries for a name, the latest `effective_from` not after the date wins. An
        entry without `service_tier` prices standard traffic only.
        """
        day = at.date()
        served = _tier_key(tier)
        for candidate in candidates(model):
            fitting = [
                entry
                for entry in self.entries
                if entry.model == candidate.name
                and entry.provider in (None, provider.lower())
                and _tier_key(entry.service_tier) == served
                and (entry.effective_from is None or entry.effective_from <= day)
            ]
            if fitting:
                latest = max(fitting, key=lambda e: e.effective_from or date.min)
                return latest, candidate.match
        return None

    def version(self, entry: PriceEntry, at: datetime) -> str:
        """Return the price version string for an entry used on `at`'s date."""
        since = (
            f" from {entry.effective_from.isoformat()}" if entry.effective_from else ""
        )
        return f"{self.source}:{entry.model}{since} @ {at.date().isoformat()}"


def load_price_file(path: str | Path) -> PriceFile:
    """Read a price file (`.toml` or `.json`); raise `ConfigurationError` when bad."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"price file {str(path)!r}: {exc.strerror}") from exc

    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(text, parse_float=Decimal)
        else:
            raw = _toml().loads(text)
    except ValueError as exc:
        raise ConfigurationError(
            f"price file {str(path)!r} is not valid: {exc}"
        ) from exc

    return parse_price_file(raw, source=path.name)


def parse_price_file(raw: Any, *, source: str = "overrides") -> PriceFile:
    """Build a `PriceFile` from parsed TOML or JSON data."""
    if not isinstance(raw, Mapping):
        raise ConfigurationError(
            f"{source}: expected a table, received {describe(raw)}"
        )

    unknown = set(raw) - {"prices", "azure_deployments"}
    if unknown:
        raise ConfigurationError(
            f"{source}: unknown keys {sorted(unknown)}; "
            "expected 'prices' and 'azure_deployments'"
        )

    entries = raw.get("prices", [])
    if not isinstance(entries, list):
        raise ConfigurationError(
            f"{source}: 'prices' must be a list, received {describe(entries)}"
        )
    deployments = raw.get("azure_deployments", {})
    if not isinstance(deployments, Mapping) or not all(
        isinstance(v, str) for v in deployments.values()
    ):
        raise ConfigurationError(
            f"{source}: 'azure_deployments' must map deployment names to model "
            f"names, received {describe(deployments)}"
        )

    parsed = tuple(
        _entry(item, f"{source}: prices[{index}]") for index, item in enumerate(entries)
    )
    return PriceFile(source, parsed, {str(k): v for k, v in deployments.items()})


def _entry(item: Any, where: str) -> PriceEntry:
    if not isinstance(item, Mapping):
        raise ConfigurationError(
            f"{where}: expected a table, received {describe(item)}"
        )
    unknown = set(item) - _ENTRY_KEYS
    if unknown:
        raise ConfigurationError(f"{where}: unknown keys {sorted(unknown)}")

    model = item.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(
            f"{where}.model: expected a model name, received {describe(model)}"
        )
    rates = {key: _rate(item.get(key), f"{where}.{key}") for key in _RATE_KEYS}
    if rates["input_per_mtok"] is None and rates["output_per_mtok"] is None:
        raise ConfigurationError(
            f"{where}: expected input_per_mtok and/or output_per_mtok"
        )

    return PriceEntry(
        model=model.strip().lower(),
        rates=Rates(
            input=rates["input_per_mtok"],
            output=rates["output_per_mtok"],
            cached_input=rates["cached_input_per_mtok"],
            cache_write=rates["cache_write_per_mtok"],
            currency=_text(item, "currency", where) or "usd",
        ),
        provider=_lower(_text(item, "provider", where)),
        effective_from=_date(item.get("effective_from"), f"{where}.effective_from"),
        service_tier=_lower(_text(item, "service_tier", where)),
        note=_text(item, "note", where),
    )


def _rate(value: Any, where: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ConfigurationError(
            f"{where}: expected a price per million tokens, received {describe(value)}"
        )
    try:
        rate = Decimal(str(value))
    except InvalidOperation:
        raise ConfigurationError(
            f"{where}: expected a number, received {describe(value)}"
        ) from None
    if not rate.is_finite() or rate < 0:
        raise ConfigurationError(
            f"{where}: expected a price >= 0, received {describe(value)}"
        )
    return rate


def _date(value: Any, where: str) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ConfigurationError(
        f"{where}: expected a date such as 2025-06-10, received {describe(value)}"
    )


def _text(item: Mapping[str, Any], key: str, where: str) -> str | None:
    value = item.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ConfigurationError(
        f"{where}.{key}: expected text, received {describe(value)}"
    )


def _lower(value: str | None) -> str | None:
    return value.strip().lower() if value else None


def _tier_key(tier: str | None) -> str:
    tier = (tier or "").lower()
    return "" if tier in ("", "default", "auto", "standard") else tier


def _toml() -> Any:
    name = "tomllib" if sys.version_info >= (3, 11) else "tomli"
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigurationError(
            "reading a TOML price file needs Python 3.11+ or the 'tomli' package; "
            "or write the file as JSON"
        ) from None
