"""The cost engine: every classic billing mistake, each with a cost worked by hand.

Prices are OpenAI's published list prices per million tokens, as genai-prices
carries them; each test writes out the arithmetic and checks genai-prices agrees.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from traket._errors import ConfigurationError
from traket._pricing import (
    CostEngine,
    attach_estimate,
    buckets_from_usage,
    estimate_cost,
    load_price_file,
    parse_occurred_at,
)

genai_prices = pytest.importorskip("genai_prices")

VERSION = genai_prices.__version__
M = Decimal(1_000_000)


def event(
    model: str,
    input_tokens: int | None,
    cached: int = 0,
    output: int = 0,
    reasoning: int = 0,
    *,
    day: str = "2025-08-07",
    tier: str | None = None,
    provider: str = "openai",
    **extra: Any,
) -> dict[str, Any]:
    built: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "occurredAt": f"{day}T10:00:00.000Z",
        "idempotencyKey": "k",
    }
    if input_tokens is not None:
        built["usage"] = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": input_tokens + output,
        }
    if tier is not None:
        built["metadata"] = {"service_tier": tier}
    built.update(extra)
    return built


def library_total(
    model: str,
    input_tokens: int,
    cached: int,
    output: int,
    day: str,
    context: dict[str, str] | None = None,
) -> Decimal:
    """Ask genai-prices directly, for a second opinion on our arithmetic."""
    usage = genai_prices.Usage(
        input_tokens=input_tokens, cache_read_tokens=cached, output_tokens=output
    )
    result = genai_prices.calc_price(
        usage,
        model,
        provider_id="openai",
        genai_request_timestamp=datetime.fromisoformat(f"{day}T10:00:00+00:00"),
        price_context=context,
    )
    return Decimal(result.total_price)


@pytest.fixture
def engine() -> CostEngine:
    return CostEngine()


# Cached input -------------------------------------------------------------------


def test_cached_input_is_billed_once_at_the_cached_rate(engine: CostEngine) -> None:
    # gpt-4o-2024-08-06: $2.50 input, $1.25 cached input, $10 output per million.
    # 1,220 input tokens of which 1,152 cached, 100 output tokens:
    # (68 * 2.50 + 1152 * 1.25 + 100 * 10) / 1e6 = (170 + 1440 + 1000) / 1e6
    expected = (68 * Decimal("2.50") + 1152 * Decimal("1.25") + 100 * 10) / M
    assert expected == Decimal("0.00261")

    result = engine.estimate(event("gpt-4o-2024-08-06", 1220, 1152, 100))

    assert result.amount == expected
    assert library_total("gpt-4o-2024-08-06", 1220, 1152, 100, "2025-08-07") == expected
    # The two classic mistakes give other numbers.
    all_at_full_rate = (1220 * Decimal("2.50") + 100 * 10) / M
    cached_twice = all_at_full_rate + 1152 * Decimal("1.25") / M
    assert result.amount not in (all_at_full_rate, cached_twice)


def test_each_bucket_is_a_component_with_its_rate(engine: CostEngine) -> None:
    result = engine.estimate(event("gpt-4o-2024-08-06", 1220, 1152, 100))

    parts = {c.bucket: (c.tokens, c.rate_per_mtok, c.amount) for c in result.components}
    assert parts["uncached_input"] == (68, Decimal("2.5"), Decimal("0.00017"))
    assert parts["cached_input"] == (1152, Decimal("1.25"), Decimal("0.00144"))
    assert parts["output"] == (100, Decimal("10"), Decimal("0.001"))
    assert sum(c.amount for c in result.components) == result.amount


def test_cache_writes_are_their_own_bucket_never_double_counted() -> None:
    usage = {
        "input_tokens": 1000,
        "input_tokens_details": {"cached_tokens": 600, "cache_write_tokens": 300},
        "output_tokens": 50,
        "output_tokens_details": {"reasoning_tokens": 20},
    }

    buckets = buckets_from_usage(usage)

    assert buckets is not None
    assert (buckets.uncached_input, buckets.cached_input, buckets.cache_write) == (
        100,
        600,
        300,
    )
    assert buckets.input_total == 1000
    assert (buckets.output, buckets.reasoning) == (50, 20)


def test_a_model_without_a_cached_price_bills_cached_input_at_the_input_rate(
    engine: CostEngine,
) -> None:
    # gpt-4o-2024-05-13 is listed at $5 input and $15 output, with no cached rate:
    # (1220 * 5 + 100 * 15) / 1e6 = 0.0076
    result = engine.estimate(event("gpt-4o-2024-05-13", 1220, 1152, 100))

    assert result.amount == Decimal("0.0076")
    assert library_total("gpt-4o-2024-05-13", 1220, 1152, 100, "2025-08-07") == Decimal(
        "0.0076"
    )


# Reasoning ----------------------------------------------------------------------


def test_reasoning_tokens_inside_output_are_not_billed_again(
    engine: CostEngine,
) -> None:
    # o3 from 2025-06-10: $2 input, $8 output. 2,000 input; 1,500 output tokens of
    # which 1,200 reasoning: (2000 * 2 + 1500 * 8) / 1e6 = 0.016, not
    # (2000 * 2 + 2700 * 8) / 1e6 = 0.0256.
    result = engine.estimate(
        event("o3-2025-04-16", 2000, 0, 1500, 1200, day="2025-08-03")
    )

    assert result.amount == Decimal("0.016")
    assert library_total("o3-2025-04-16", 2000, 0, 1500, "2025-08-03") == Decimal(
        "0.016"
    )
    assert result.buckets is not None
    assert result.buckets.reasoning == 1200


def test_reasoning_above_output_is_inconsistent_and_unpriced(
    engine: CostEngine,
) -> None:
    result = engine.estimate(event("o3", 10, 0, 5, 9))

    assert result.status == "unpriced"
    assert result.amount is None
    assert "reasoning_tokens (9) exceed output_tokens (5)" in (result.reason or "")


def test_cached_above_input_is_inconsistent_and_unpriced(engine: CostEngine) -> None:
    result = engine.estimate(event("gpt-4o", 10, 11, 5))

    assert result.status == "unpriced"
    assert "exceed input_tokens" in (result.reason or "")


@pytest.mark.parametrize("unknown", ["input_tokens", "output_tokens"])
def test_a_count_reported_as_unknown_is_unpriced_not_billed_as_zero(
    engine: CostEngine, unknown: str
) -> None:
    usage = {"input_tokens": 1000, "output_tokens": 500, "total_tokens": 1500}
    usage[unknown] = None
    result = engine.estimate(
        {"provider": "openai", "model": "gpt-4o-2024-08-06", "usage": usage}
    )

    assert result.status == "unpriced"
    assert result.amount is None
    assert result.reason == f"partial usage: {unknown} was not reported"


def test_an_absent_output_count_is_zero_as_older_senders_mean_it(
    engine: CostEngine,
) -> None:
    usage = {"input_tokens": 1000}
    result = engine.estimate(
        {"provider": "openai", "model": "text-embedding-3-small", "usage": usage}
    )

    assert result.status != "unpriced", result.reason
    assert result.amount == Decimal("0.00002")  # $0.02 per million input tokens


# Names --------------------------------------------------------------------------


def test_a_dated_snapshot_matches_its_own_entry_before_its_family(
    engine: CostEngine,
) -> None:
    own = engine.estimate(event("gpt-4o-2024-05-13", 1_000_000, 0, 0))
    family = engine.estimate(event("gpt-4o", 1_000_000, 0, 0))

    # 1M input tokens: $5 for the 2024-05-13 snapshot, $2.50 for gpt-4o.
    assert (own.amount, own.priced_as, own.match) == (
        Decimal(5),
        "openai/gpt-4o-2024-05-13",
        "exact",
    )
    assert (family.amount, family.priced_as) == (Decimal("2.5"), "openai/gpt-4o")


def test_an_unlisted_dated_snapshot_falls_back_to_its_dated_family(
    engine: CostEngine,
) -> None:
    result = engine.estimate(event("gpt-4o-2099-01-01", 1_000_000, 0, 0))

    assert (result.amount, result.priced_as, result.match) == (
        Decimal("2.5"),
        "openai/gpt-4o",
        "family",
    )


@pytest.mark.parametrize(
    "model",
    ["gpt-5-nano-experimental", "gpt-4.5-preview-turbo", "gpt-4o-2024-08-06-custom"],
)
def test_a_name_is_never_matched_by_prefix(engine: CostEngine, model: str) -> None:
    result = engine.estimate(event(model, 1000, 0, 100))

    assert result.status == "unpriced"
    assert result.amount is None
    assert "no exact or dated-family match" in (result.reason or "")


def test_genai_prices_alone_would_have_matched_by_prefix() -> None:
    # The trap the exact rule avoids: the library prices this made-up name.
    usage = genai_prices.Usage(input_tokens=1000, output_tokens=100)
    assert genai_prices.calc_price(usage, "gpt-5-nano-experimental").total_price > 0


def test_fine_tuned_models_use_fine_tune_prices(engine: CostEngine) -> None:
    # Fine-tuned gpt-4o: $3.75 input, $15 output (base gpt-4o: $2.50 / $10).
    # (1000 * 3.75 + 100 * 15) / 1e6 = 0.00525
    tuned = engine.estimate(event("ft:gpt-4o-2024-08-06:acme::9abc", 1000, 0, 100))
    # Fine-tuned gpt-4o-mini: $0.30 input, $1.20 output.
    # (1000 * 0.30 + 100 * 1.20) / 1e6 = 0.00042
    mini = engine.estimate(event("ft:gpt-4o-mini-2024-07-18:acme:x:1", 1000, 0, 100))

    assert (tuned.amount, tuned.priced_as) == (Decimal("0.00525"), "openai/ft:gpt-4o")
    assert (mini.amount, mini.priced_as) == (
        Decimal("0.00042"),
        "openai/ft:gpt-4o-mini",
    )
    assert tuned.match == "fine_tune"


def test_a_fine_tune_without_a_fine_tune_price_is_unpriced_not_base_priced(
    engine: CostEngine,
) -> None:
    result = engine.estimate(event("ft:gpt-4.1-2025-04-14:acme::x1", 1000, 0, 100))

    assert result.status == "unpriced"
    assert "no fine-tune price" in (result.reason or "")


def test_azure_deployments_map_to_a_model_through_configuration() -> None:
    mapped = CostEngine(azure_deployments={"prod-chat": "gpt-4o-2024-08-06"})
    azure = event("prod-chat", 1220, 1152, 100, provider="azure_openai")

    assert mapped.estimate(azure).amount == Decimal("0.00261")
    unmapped = CostEngine().estimate(azure)
    assert unmapped.status == "unpriced"
    assert "prod-chat" in (unmapped.reason or "")


# Service tier -------------------------------------------------------------------

# gpt-5 per million tokens from 2026-10-12 (input / cached input / output):
# standard $1.25 / $0.125 / $10, flex $0.625 / $0.0625 / $5,
# priority $2.50 / $0.25 / $20. 1,000 input of which 500 cached, 1,000 output.
TIER_CASES = [
    (None, (500 * Decimal("1.25") + 500 * Decimal("0.125") + 1000 * 10) / M),
    ("default", (500 * Decimal("1.25") + 500 * Decimal("0.125") + 1000 * 10) / M),
    ("flex", (500 * Decimal("0.625") + 500 * Decimal("0.0625") + 1000 * 5) / M),
    ("priority", (500 * Decimal("2.5") + 500 * Decimal("0.25") + 1000 * 20) / M),
]


@pytest.mark.parametrize(("tier", "expected"), TIER_CASES)
def test_the_served_service_tier_changes_the_price(
    engine: CostEngine, tier: str | None, expected: Decimal
) -> None:
    result = engine.estimate(
        event("gpt-5-2025-08-07", 1000, 500, 1000, day="2026-11-02", tier=tier)
    )

    assert result.amount == expected
    context = {"service_tier": tier} if tier else None
    assert (
        library_total("gpt-5-2025-08-07", 1000, 500, 1000, "2026-11-02", context)
        == expected
    )
    assert result.service_tier == tier


def test_batch_is_priced_at_the_batch_rate(engine: CostEngine) -> None:
    # gpt-4o batch from 2026-10-14: $1.25 input, $5 output.
    # (1000 * 1.25 + 100 * 5) / 1e6 = 0.00175
    result = engine.estimate(
        event("gpt-4o-2024-08-06", 1000, 0, 100, day="2026-11-02", tier="batch")
    )

    assert result.amount == Decimal("0.00175")


@pytest.mark.parametrize(
    ("model", "day", "tier"),
    [
        ("gpt-4o-2024-08-06", "2026-11-02", "flex"),  # gpt-4o has no flex tier
        ("gpt-5-2025-08-07", "2025-11-02", "flex"),  # flex rate not known then
        ("gpt-5-2025-08-07", "2026-11-02", "scale"),
    ],
)
def test_a_served_tier_without_a_known_price_is_unpriced(
    engine: CostEngine, model: str, day: str, tier: str
) -> None:
    result = engine.estimate(event(model, 1000, 0, 100, day=day, tier=tier))

    assert result.status == "unpriced"
    assert f"no {tier!r} service-tier price" in (result.reason or "")


# Dates --------------------------------------------------------------------------


def test_prices_in_force_on_the_event_date_are_used(engine: CostEngine) -> None:
    # o3 cost $10 input / $40 output until 2025-06-09, then $2 / $8.
    before = engine.estimate(event("o3-2025-04-16", 1000, 0, 1000, day="2025-05-01"))
    after = engine.estimate(event("o3-2025-04-16", 1000, 0, 1000, day="2025-07-01"))

    assert before.amount == (1000 * 10 + 1000 * 40) / M == Decimal("0.05")
    assert after.amount == (1000 * 2 + 1000 * 8) / M == Decimal("0.01")
    assert before.price_version == f"genai-prices {VERSION} @ 2025-05-01"
    assert after.price_version == f"genai-prices {VERSION} @ 2025-07-01"


def test_threshold_tiers_apply_to_every_token_past_the_threshold(
    engine: CostEngine,
) -> None:
    # gpt-5.6-terra from 2026-07-30: $2 input / $12 output, and $4 / $18 for every
    # token once a request's input passes 272,000 tokens.
    # (300000 * 4 + 1000 * 18) / 1e6 = 1.218
    model = "gpt-5.6-terra-2026-08-01"
    result = engine.estimate(event(model, 300_000, 0, 1000, day="2026-08-15"))

    assert result.amount == Decimal("1.218")
    assert library_total(model, 300_000, 0, 1000, "2026-08-15") == Decimal("1.218")


# Unknown and missing ------------------------------------------------------------


def test_an_unknown_model_is_unpriced_with_a_reason_never_zero(
    engine: CostEngine,
) -> None:
    result = engine.estimate(event("my-llama-70b", 1000, 0, 100))

    assert result.status == "unpriced"
    assert result.amount is None
    assert "my-llama-70b" in (result.reason or "")
    assert result.to_wire() is None


def test_an_unknown_provider_is_unpriced(engine: CostEngine) -> None:
    result = engine.estimate(event("gpt-4o", 10, 0, 1, provider="acme-cloud"))

    assert result.status == "unpriced"
    assert "provider 'acme-cloud'" in (result.reason or "")


def test_missing_usage_is_missing_not_zero(engine: CostEngine) -> None:
    result = engine.estimate(event("gpt-4o-2024-08-06", None))

    assert result.status == "missing_usage"
    assert result.amount is None
    assert result.buckets is None


def test_zero_tokens_reported_cost_zero(engine: CostEngine) -> None:
    result = engine.estimate(event("gpt-4o-2024-08-06", 0, 0, 0))

    assert (result.status, result.amount) == ("estimate", Decimal(0))


def test_chat_completions_spelling_is_read_as_well(engine: CostEngine) -> None:
    chat = event("gpt-4o-2024-08-06", None)
    chat["usage"] = {
        "prompt_tokens": 1220,
        "prompt_tokens_details": {"cached_tokens": 1152},
        "completion_tokens": 100,
    }

    assert engine.estimate(chat).amount == Decimal("0.00261")


# Sources and the wire -----------------------------------------------------------


def test_the_callers_own_cost_always_wins(engine: CostEngine) -> None:
    own = event(
        "gpt-4o-2024-08-06",
        1220,
        1152,
        100,
        cost={"amount": 0.42, "currency": "EUR", "source": "manual_override"},
    )

    result = engine.estimate(own)

    assert (result.status, result.amount, result.source, result.currency) == (
        "recorded",
        Decimal("0.42"),
        "manual_override",
        "eur",
    )
    assert attach_estimate(own, engine=engine) is own


def test_the_callers_own_cost_wins_even_over_inconsistent_usage(
    engine: CostEngine,
) -> None:
    own = event(
        "o3",
        10,
        0,
        5,
        9,  # reasoning above output: the usage cannot be split
        cost={"amount": 0.25, "currency": "usd", "source": "manual_override"},
    )

    result = engine.estimate(own)

    assert (result.status, result.amount, result.source) == (
        "recorded",
        Decimal("0.25"),
        "manual_override",
    )


@pytest.mark.parametrize("amount", [float("nan"), float("inf"), True, "lots"])
def test_a_recorded_amount_that_is_not_money_is_not_taken(
    engine: CostEngine, amount: Any
) -> None:
    # Not a cost at all, so the event is estimated: 0.00261, as above.
    broken = event("gpt-4o-2024-08-06", 1220, 1152, 100, cost={"amount": amount})

    result = engine.estimate(broken)

    assert (result.status, result.amount) == ("estimate", Decimal("0.00261"))


def test_an_estimate_says_so_and_names_its_price_version(engine: CostEngine) -> None:
    original = event("gpt-4o-2024-08-06", 1220, 1152, 100)

    sent = attach_estimate(original, engine=engine)

    assert "cost" not in original
    assert sent["cost"]["amount"] == pytest.approx(0.00261)
    assert sent["cost"]["currency"] == "usd"
    assert sent["cost"]["source"] == "estimate"
    assert sent["cost"]["priceVersion"] == f"genai-prices {VERSION} @ 2025-08-07"
    assert sent["cost"]["metadata"]["pricedAs"] == "openai/gpt-4o"
    assert sent["cost"]["metadata"]["cachedInAmount"] == pytest.approx(0.00144)
    json.dumps(sent)


def test_the_estimate_survives_the_metadata_sanitizer(engine: CostEngine) -> None:
    from traket._event import sanitize_metadata

    sent = attach_estimate(event("gpt-4o-2024-08-06", 1220, 1152, 100), engine=engine)

    assert sanitize_metadata(sent["cost"]["metadata"]) == sent["cost"]["metadata"]


def test_attach_estimate_leaves_unpriced_events_without_cost(
    engine: CostEngine,
) -> None:
    unknown = event("my-llama-70b", 1000, 0, 100)
    no_usage = event("gpt-4o", None)

    assert attach_estimate(unknown, engine=engine) is unknown
    assert attach_estimate(no_usage, engine=engine) is no_usage


def test_attach_estimate_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = CostEngine()

    def explode(_: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(broken, "estimate", explode)
    original = event("gpt-4o", 10, 0, 1)

    assert attach_estimate(original, engine=broken) is original


def test_module_function_uses_the_default_engine() -> None:
    assert estimate_cost(event("gpt-4o-2024-08-06", 1220, 1152, 100)).amount == (
        Decimal("0.00261")
    )


# create_margins(estimate_cost=True) ---------------------------------------------


def sent_through_client(estimate: bool | None, *events: dict[str, Any]) -> list[Any]:
    """Track `events` with a real client and return what went on the wire."""
    from traket import create_margins
    from traket.testing import InMemoryTransport

    transport = InMemoryTransport()
    options: dict[str, Any] = {"write_key": "wk_test_pricing", "transport": transport}
    if estimate is not None:
        options["estimate_cost"] = estimate
    margins = create_margins(**options)
    try:
        margins.track_batch(events=list(events))
        assert margins.flush(timeout=5)
    finally:
        margins.shutdown(timeout=5)
    return sorted(transport.events, key=lambda e: e["idempotencyKey"])


def test_estimate_cost_puts_the_labelled_estimate_on_the_wire() -> None:
    # gpt-4o-2024-08-06 on 2025-08-07: (68 * 2.50 + 1152 * 1.25 + 100 * 10) / 1e6
    priced = event("gpt-4o-2024-08-06", 1220, 1152, 100, idempotencyKey="a")
    unknown = event("my-llama-70b", 1000, 0, 100, idempotencyKey="b")
    no_usage = event("gpt-4o-2024-08-06", None, idempotencyKey="c")

    wire = sent_through_client(True, priced, unknown, no_usage)

    assert wire[0]["cost"] == {
        "amount": 0.00261,
        "currency": "usd",
        "source": "estimate",
        "priceVersion": f"genai-prices {VERSION} @ 2025-08-07",
        "metadata": {
            "pricedAs": "openai/gpt-4o",  # genai-prices lists the snapshot
            "match": "exact",
            "uncachedInAmount": 0.00017,
            "cachedInAmount": 0.00144,
            "cacheWriteAmount": 0.0,
            "outAmount": 0.001,
        },
    }
    # Never $0 for what has no price: no cost at all.
    assert "cost" not in wire[1]
    assert "cost" not in wire[2]


def test_estimate_cost_keeps_the_callers_own_cost() -> None:
    own = event(
        "gpt-4o-2024-08-06",
        1220,
        1152,
        100,
        cost={"amount": 0.42, "currency": "usd", "source": "manual_override"},
    )

    (wire,) = sent_through_client(True, own)

    assert wire["cost"] == {
        "amount": 0.42,
        "currency": "usd",
        "source": "manual_override",
    }


@pytest.mark.parametrize("estimate", [None, False])
def test_no_cost_goes_on_the_wire_unless_asked(estimate: bool | None) -> None:
    (wire,) = sent_through_client(estimate, event("gpt-4o-2024-08-06", 1220, 1152, 100))

    assert "cost" not in wire


def test_pricing_imports_without_genai_prices_and_says_what_is_missing() -> None:
    code = (
        "import sys; sys.modules['genai_prices'] = None\n"
        "from traket._pricing import estimate_cost\n"
        "assert 'genai_prices' not in [m for m in sys.modules if sys.modules[m]]\n"
        "r = estimate_cost({'provider': 'openai', 'model': 'gpt-4o',"
        " 'usage': {'input_tokens': 1, 'output_tokens': 1}})\n"
        "print(r.status, r.reason)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert done.stdout.startswith("unpriced genai-prices is not installed")


# The price file -----------------------------------------------------------------

PRICE_FILE = """
[azure_deployments]
"prod-chat" = "gpt-4o-2024-08-06"

[[prices]]
model = "my-llama-70b"
input_per_mtok = 0.60
output_per_mtok = "0.80"
note = "self-hosted"

[[prices]]
model = "gpt-4o"
provider = "openai"
input_per_mtok = 2.00
cached_input_per_mtok = 1.00
output_per_mtok = 8.00
effective_from = 2025-09-01
note = "negotiated rate"

[[prices]]
model = "my-llama-70b"
input_per_mtok = 0.30
output_per_mtok = 0.40
effective_from = 2026-01-01

[[prices]]
model = "my-llama-70b"
service_tier = "priority"
input_per_mtok = 1.20
output_per_mtok = 1.60
"""


@pytest.fixture
def file_engine(tmp_path: Path) -> CostEngine:
    path = tmp_path / "prices.toml"
    path.write_text(PRICE_FILE)
    return CostEngine(price_file=path)


def test_the_price_file_adds_a_custom_model(file_engine: CostEngine) -> None:
    # (1000 * 0.60 + 500 * 0.80) / 1e6 = 0.001
    result = file_engine.estimate(event("my-llama-70b", 1000, 0, 500))

    assert result.amount == Decimal("0.001")
    assert result.price_version == "prices.toml:my-llama-70b @ 2025-08-07"
    assert result.priced_as == "prices.toml/my-llama-70b"


def test_the_price_file_follows_effective_dates(file_engine: CostEngine) -> None:
    # From 2026-01-01: (1000 * 0.30 + 500 * 0.40) / 1e6 = 0.0005
    result = file_engine.estimate(event("my-llama-70b", 1000, 0, 500, day="2026-02-01"))

    assert result.amount == Decimal("0.0005")
    assert result.price_version == (
        "prices.toml:my-llama-70b from 2026-01-01 @ 2026-02-01"
    )


def test_the_price_file_overrides_the_library_from_its_date(
    file_engine: CostEngine,
) -> None:
    # Before 2025-09-01 the library's list price; after, the negotiated one:
    # (68 * 2 + 1152 * 1 + 100 * 8) / 1e6 = 0.002088, by dated family gpt-4o.
    before = file_engine.estimate(event("gpt-4o-2024-08-06", 1220, 1152, 100))
    after = file_engine.estimate(
        event("gpt-4o-2024-08-06", 1220, 1152, 100, day="2025-10-01")
    )

    assert before.amount == Decimal("0.00261")
    assert (after.amount, after.match) == (Decimal("0.002088"), "family")


def test_the_price_file_prices_a_service_tier(file_engine: CostEngine) -> None:
    # (1000 * 1.20 + 500 * 1.60) / 1e6 = 0.002
    result = file_engine.estimate(event("my-llama-70b", 1000, 0, 500, tier="priority"))
    flex = file_engine.estimate(event("my-llama-70b", 1000, 0, 500, tier="flex"))

    assert result.amount == Decimal("0.002")
    assert flex.status == "unpriced"


def test_the_price_file_maps_azure_deployments(file_engine: CostEngine) -> None:
    result = file_engine.estimate(
        event("prod-chat", 1220, 1152, 100, provider="azure_openai")
    )

    assert result.amount == Decimal("0.00261")


def test_the_default_engine_reads_the_price_file_named_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from traket._pricing import _engine

    path = tmp_path / "prices.toml"
    path.write_text(PRICE_FILE)
    monkeypatch.setenv("TRAKET_PRICES", str(path))
    monkeypatch.setattr(_engine, "_default", None)

    # (1000 * 0.60 + 500 * 0.80) / 1e6 = 0.001, from the file
    sent = attach_estimate(event("my-llama-70b", 1000, 0, 500))

    assert sent["cost"]["amount"] == pytest.approx(0.001)
    assert sent["cost"]["priceVersion"] == "prices.toml:my-llama-70b @ 2025-08-07"


def test_the_price_file_may_be_json(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "prices": [
                    {
                        "model": "my-llama-70b",
                        "input_per_mtok": "0.6",
                        "output_per_mtok": 0.8,
                    }
                ]
            }
        )
    )

    result = CostEngine(price_file=path).estimate(event("my-llama-70b", 1000, 0, 500))

    assert result.amount == Decimal("0.001")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[prices]]\ninput_per_mtok = 1\n", "prices[0].model: expected a model name"),
        ('[[prices]]\nmodel = "m"\n', "expected input_per_mtok and/or output_per_mtok"),
        (
            '[[prices]]\nmodel = "m"\ninput_per_mtok = -1\n',
            "prices[0].input_per_mtok: expected a price >= 0",
        ),
        ('[[prices]]\nmodel = "m"\ninput = 1\n', "unknown keys ['input']"),
        ("price = 1\n", "unknown keys ['price']"),
        (
            '[[prices]]\nmodel = "m"\ninput_per_mtok = 1\neffective_from = "soon"\n',
            "prices[0].effective_from: expected a date",
        ),
        ("[[prices]\n", "is not valid"),
    ],
)
def test_a_bad_price_file_names_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)

    with pytest.raises(ConfigurationError, match=r".*") as caught:
        load_price_file(path)

    assert message in str(caught.value)


def test_money_is_decimal_and_exact(engine: CostEngine) -> None:
    result = engine.estimate(event("gpt-4o-mini-2024-07-18", 1, 0, 1))

    # (1 * 0.15 + 1 * 0.60) / 1e6 = 0.00000075, not a float approximation.
    assert isinstance(result.amount, Decimal)
    assert result.amount == Decimal("0.00000075")


def test_estimates_use_the_event_time_not_now(engine: CostEngine) -> None:
    when = datetime(2025, 5, 1, tzinfo=timezone.utc).isoformat()
    result = engine.estimate(
        {**event("o3", 1000, 0, 0), "occurredAt": when.replace("+00:00", "Z")}
    )

    assert result.amount == Decimal("0.01")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-08-07T10:00:00Z", "2025-08-07T10:00:00+00:00"),
        ("2025-08-07T10:00:00.123456789Z", "2025-08-07T10:00:00.123456+00:00"),
        ("2025-08-07 10:00:00+02:00", "2025-08-07T08:00:00+00:00"),
        ("2025-08-07T23:30:00-0130", "2025-08-08T01:00:00+00:00"),
        ("2025-13-01T00:00:00Z", None),
        ("yesterday", None),
    ],
)
def test_occurred_at_is_read_in_every_iso_spelling(
    text: str, expected: str | None
) -> None:
    parsed = parse_occurred_at(text)

    assert (parsed.isoformat() if parsed else None) == expected


def test_an_offset_that_crosses_midnight_prices_the_utc_date(
    engine: CostEngine,
) -> None:
    # 2025-06-09 23:30 at -01:00 is 2025-06-10 00:30 UTC: o3's new $2 / $8 prices.
    late = {**event("o3", 1000, 0, 0), "occurredAt": "2025-06-09T23:30:00-01:00"}

    assert engine.estimate(late).amount == Decimal("0.002")


# End to end: a recorded response that reports its service tier -----------------


@pytest.mark.fixtures
def test_a_recorded_priority_response_is_priced_at_priority_rates() -> None:
    import openai
    from recordings import recording

    from examples.replay import ReplayServer
    from traket import create_margins
    from traket._instrument import instrument, uninstrument
    from traket.testing import InMemoryTransport

    # The response reports "service_tier": "priority", gpt-5-2025-08-07, 8 input
    # and 82 output tokens (64 of them reasoning). gpt-5 priority: $2.50 input,
    # $20 output per million: (8 * 2.50 + 82 * 20) / 1e6 = 0.00166, twice the
    # standard (8 * 1.25 + 82 * 10) / 1e6 = 0.00083.
    rec = recording("chat_reasoning_gpt5_service_tier")
    transport = InMemoryTransport()
    margins = create_margins(
        write_key="wk_test_pricing", transport=transport, estimate_cost=True
    )
    with ReplayServer() as server:
        server.respond_with(rec)
        client = openai.OpenAI(
            base_url=server.base_url, api_key="test-key", max_retries=0
        )
        # The replay server is not api.openai.com: name the provider it stands for.
        instrument(client, {"provider": "openai"}, margins=margins)
        try:
            client.chat.completions.create(
                model="gpt-5", messages=[{"role": "user", "content": "hello"}]
            )
        finally:
            uninstrument(client)
    assert margins.flush(timeout=5)
    margins.shutdown(timeout=5)

    (sent,) = transport.events
    assert sent["metadata"]["service_tier"] == "priority"
    assert sent["cost"]["amount"] == pytest.approx(0.00166)
    assert sent["cost"]["metadata"]["serviceTier"] == "priority"
    assert CostEngine().estimate(sent | {"cost": None}).amount == Decimal("0.00166")
