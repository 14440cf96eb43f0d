"""A known data set for the report tests, with every expected number by hand.

List prices (genai-prices, which follows OpenAI's pricing page):
gpt-4o-2024-08-06       $2.50 input, $1.25 cached input, $10 output per million
gpt-4o-mini-2024-07-18  $0.15 input, $0.075 cached input, $0.60 output per million
o3-2025-04-16           $2 input, $8 output per million from 2025-06-10
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from traket._local._store import EventStore
from traket._pricing import CostEngine, attach_estimate


def _event(
    key: str,
    day: str,
    customer: str | None,
    feature: str | None,
    model: str,
    usage: tuple[int, int, int, int] | None,
    **extra: Any,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "provider": "openai",
        "model": model,
        "operation": "responses.create",
        "status": "success",
        "environment": "production",
        "idempotencyKey": key,
        "providerRequestId": f"req_{key}",
        "providerResponseId": f"resp_{key}",
        "occurredAt": f"{day}T12:00:00.000Z",
    }
    if customer:
        event["externalCustomerId"] = customer
    if feature:
        event["feature"] = feature
    if usage is not None:
        inp, cached, out, reasoning = usage
        event["usage"] = {
            "input_tokens": inp,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": inp + out,
        }
    event.update(extra)
    return event


def events() -> list[dict[str, Any]]:
    """Return the nine events of the data set."""
    attached = attach_estimate(
        _event(
            "ev9",
            "2025-08-02",
            "initech",
            "summarize",
            "gpt-4o-mini-2024-07-18",
            (2000, 1000, 500, 0),
        ),
        engine=CostEngine(),
    )
    return [
        # (68 * 2.50 + 1152 * 1.25 + 100 * 10) / 1e6 = 0.00261
        _event(
            "ev1",
            "2025-08-01",
            "acme",
            "chat",
            "gpt-4o-2024-08-06",
            (1220, 1152, 100, 0),
        ),
        # (10000 * 2.50 + 2000 * 10) / 1e6 = 0.045
        _event(
            "ev2",
            "2025-08-02",
            "acme",
            "chat",
            "gpt-4o-2024-08-06",
            (10000, 0, 2000, 0),
        ),
        # (50000 * 0.15 + 50000 * 0.075 + 10000 * 0.60) / 1e6 = 0.01725
        _event(
            "ev3",
            "2025-08-02",
            "acme",
            "summarize",
            "gpt-4o-mini-2024-07-18",
            (100000, 50000, 10000, 0),
            metadata={"requested_model": "gpt-4o-mini"},
        ),
        # The caller's own cost wins: 0.5.
        _event(
            "ev4",
            "2025-08-01",
            "globex",
            "chat",
            "gpt-4o-2024-08-06",
            (1000, 0, 100, 0),
            cost={
                "amount": 0.5,
                "currency": "usd",
                "source": "manual_override",
                "priceVersion": "contract-2025",
            },
        ),
        # Unknown model: unpriced, never $0.
        _event("ev5", "2025-08-03", "globex", "summarize", "my-llama", (500, 0, 50, 0)),
        # A failed call without usage: missing, not zero.
        _event(
            "ev6",
            "2025-08-03",
            "initech",
            "chat",
            "gpt-4o-2024-08-06",
            None,
            status="error",
        ),
        # (2000 * 2 + 1500 * 8) / 1e6 = 0.016; the 1200 reasoning tokens are inside
        # the 1500 output tokens and are not billed again.
        _event(
            "ev7",
            "2025-08-03",
            "initech",
            "chat",
            "o3-2025-04-16",
            (2000, 0, 1500, 1200),
        ),
        # (1000 * 0.15 + 1000 * 0.60) / 1e6 = 0.00075
        _event(
            "ev8",
            "2025-08-01",
            None,
            None,
            "gpt-4o-mini-2024-07-18",
            (1000, 0, 1000, 0),
        ),
        # Estimated by the SDK before sending:
        # (1000 * 0.15 + 1000 * 0.075 + 500 * 0.60) / 1e6 = 0.000525
        attached,
    ]


REVENUE = {
    "acme": Decimal("0.05"),
    "globex": Decimal("10"),
    "initech": Decimal("1"),
    "umbrella": Decimal("5"),
}


def make_db(path: Path) -> Path:
    """Write the data set into a real store at `path` and return the path."""
    with EventStore(path) as store:
        store.insert_batch(events())
    return path
