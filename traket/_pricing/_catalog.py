"""Prices from the `genai-prices` library, resolved by exact name only."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any

from traket._pricing._names import candidates, dated_family, fine_tune_base, rule_family
from traket._pricing._rates import Rates, Unpriced

_INSTALL_HINT = "genai-prices is not installed (pip install 'traket-sdk[prices]')"
_CACHE_LIMIT = 4096
_STANDARD_TIERS = frozenset({"", "default", "auto", "standard"})

# The provider names events carry, mapped onto genai-prices' provider ids.
_PROVIDER_IDS = {"openai": "openai", "azure_openai": "azure", "azure": "azure"}


def library_version() -> str | None:
    """Return the installed genai-prices version, `None` when it is absent."""
    try:
        import genai_prices
    except ImportError:
        return None
    return str(genai_prices.__version__)


def tier_context(tier: str | None) -> dict[str, str] | None:
    """Return genai-prices' price context for a served tier; `None` for standard."""
    if tier is None or tier.lower() in _STANDARD_TIERS:
        return None
    if tier.lower() == "batch":
        return {"processing": "batch"}
    return {"service_tier": tier.lower()}


class LibraryCatalog:
    """Look models up in genai-prices: exact name, then dated family, never prefix.

    genai-prices matches names with its own rules, some of them prefixes; a model is
    accepted here only when the name is one the entry lists verbatim (or fully
    matches its anchored pattern). Fine-tuned names must meet a fine-tune entry.
    """

    def __init__(self) -> None:
        # (price data, provider, model) -> the entry found, or None; the price data's
        # identity is part of the key so a refreshed snapshot is looked up afresh.
        self._found: dict[tuple[int, str, str], tuple[Any, Any, str] | None] = {}

    def resolve(
        self,
        provider: str,
        model: str,
        at: datetime,
        tier: str | None,
        input_total: int,
    ) -> tuple[Rates, str, str, str]:
        """Return rates, the entry priced as, how it matched, and the price version.

        Raise `Unpriced` with the reason when no entry fits.
        """
        try:
            import genai_prices
            from genai_prices import data_snapshot
        except ImportError:
            raise Unpriced(_INSTALL_HINT) from None

        providers = data_snapshot.get_snapshot().providers
        owner = _provider(providers, provider)
        if owner is None:
            raise Unpriced(f"genai-prices has no prices for provider {provider!r}")

        key = (id(providers), owner.id, model.lower())
        if key not in self._found:
            if len(self._found) >= _CACHE_LIMIT:
                self._found.clear()
            searched = [owner, *_fallbacks(providers, owner)]
            self._found[key] = _find(searched, model)
        found = self._found[key]
        if found is None:
            raise Unpriced(_no_model_reason(model))
        home, entry, match = found
        priced_as = f"{home.id}/{entry.id}"

        context = tier_context(tier)
        if context is not None and not _has_variant(entry, context, at):
            raise Unpriced(
                f"no {tier!r} service-tier price for {priced_as} "
                f"on {at.date().isoformat()}"
            )
        prices = entry.get_prices(at, context)

        rates = Rates(
            input=_flat(prices.input_mtok, input_total),
            output=_flat(prices.output_mtok, input_total),
            cached_input=_flat(prices.cache_read_mtok, input_total),
            cache_write=_flat(prices.cache_write_mtok, input_total),
        )
        if rates.input is None and rates.output is None:
            raise Unpriced(f"{priced_as} has no token prices in genai-prices")
        version = f"genai-prices {genai_prices.__version__} @ {at.date().isoformat()}"
        return rates, priced_as, match, version


def _provider(providers: list[Any], name: str) -> Any:
    wanted = _PROVIDER_IDS.get(name.lower(), name.lower())
    for provider in providers:
        if provider.id == wanted:
            return provider
    return None


def _fallbacks(providers: list[Any], owner: Any) -> list[Any]:
    ids = owner.fallback_model_providers or []
    return [p for pid in ids for p in providers if p.id == pid]


def _find(searched: list[Any], model: str) -> tuple[Any, Any, str] | None:
    for candidate in candidates(model):
        for provider in searched:
            for entry in provider.models:
                if _names_exactly(entry, candidate.name):
                    return provider, entry, candidate.match
    return None


def _names_exactly(entry: Any, name: str) -> bool:
    """Return whether the entry lists `name` itself, not merely a prefix of it."""
    if not entry.is_match(name):
        return False
    if name == entry.id.lower():
        return True

    equals, prefixes, patterns = _literals(entry.match)
    if name in equals or name in prefixes:
        return True
    if any(re.fullmatch(pattern, name) for pattern in patterns):
        return True

    base = fine_tune_base(name)
    if base is None:
        return False
    # genai-prices prices fine-tunes with rules such as `ft:gpt-4o-2024-`; accept
    # one only when the family it names is the fine-tuned model's own family.
    family = dated_family(base) or base
    return any(
        p.startswith("ft:") and rule_family(p) in (base, family) for p in prefixes
    )


def _literals(clause: Any) -> tuple[set[str], set[str], list[str]]:
    equals: set[str] = set()
    prefixes: set[str] = set()
    patterns: list[str] = []
    stack = [clause]
    while stack:
        item = stack.pop()
        if hasattr(item, "or_"):
            stack.extend(item.or_)
        elif hasattr(item, "and_"):
            stack.extend(item.and_)
        elif hasattr(item, "equals"):
            equals.add(str(item.equals).lower())
        elif hasattr(item, "starts_with"):
            prefixes.add(str(item.starts_with).lower())
        elif hasattr(item, "regex"):
            patterns.append(str(item.regex))
    return equals, prefixes, patterns


def _has_variant(entry: Any, context: dict[str, str], at: datetime) -> bool:
    for variant in entry.price_variants or ():
        if variant.when != context:
            continue
        if variant.constraint is None or variant.constraint.active(at):
            return True
    return False


def _flat(price: Any, input_total: int) -> Decimal | None:
    """Return a flat rate, applying a threshold tier to every token as providers do."""
    if price is None:
        return None
    if isinstance(price, Decimal):
        return price

    rate: Decimal = price.base
    for tier in reversed(price.tiers):
        if input_total > tier.start:
            return Decimal(tier.price)
    return rate


def _no_model_reason(model: str) -> str:
    base = fine_tune_base(model.lower())
    if base is not None:
        return f"no fine-tune price for {base!r} (base-model prices do not apply)"
    return f"model {model!r} is not in genai-prices (no exact or dated-family match)"
