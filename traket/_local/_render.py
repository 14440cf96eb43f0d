"""Render the margins report and the event drill-down: table, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from traket._local._report import CustomerRow, PricedEvent, Report, Tally
from traket._pricing import BUCKETS, WIRE_COMPONENT_KEYS

SECTIONS = (
    "customers",
    "features",
    "customer_features",
    "models",
    "days",
    "tokens",
    "data_quality",
)
_NONE = "(unattributed)"


_MAX_PLACES = 10
# From a quadrillion up, a number is a broken event rather than a cost: it shows in
# scientific notation instead of a row-wide run of digits.
_HUGE_EXPONENT = 15


def _rounded(value: Decimal, places: int) -> Decimal:
    """Round to `places` decimals, half up, exactly, however large `value` is.

    The default context keeps 28 digits, and rounding 1e308 to 4 decimals needs 313:
    `quantize` would raise `InvalidOperation` on a value the store holds.
    """
    with localcontext() as context:
        context.prec = max(context.prec, value.adjusted() + places + 2)
        return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def _huge(value: Decimal) -> bool:
    return value.is_finite() and value.adjusted() >= _HUGE_EXPONENT


def money(amount: Decimal | None, places: int = 4, currency: str = "usd") -> str:
    """Format money for display; rounding happens here and only here.

    `places` decimals, or more for a small amount that would lose digits, so that
    at least two significant digits show: $0.000021, never a $0.0000 that reads
    as free. Only an exact zero is shown as zero ($0.00); `None` (no cost known)
    is "-". An absurd amount (a quadrillion or more) shows as `$1.000e+308`.
    """
    if amount is None:
        return "-"
    sign = "-" if amount < 0 else ""
    if _huge(amount):
        return _labelled(sign, f"{abs(amount):.3e}", currency)

    if not amount:
        places = 2  # "$0.00" reads as exactly nothing rather than as rounded
    elif amount != _rounded(amount, places):
        places = max(places, min(_MAX_PLACES, 1 - amount.adjusted()))
    step = Decimal(1).scaleb(-places)
    rounded = _rounded(amount, places)
    prefix = ""
    if amount and not rounded:
        prefix, rounded = "<", step  # beyond _MAX_PLACES: still not zero
    return _labelled(sign + prefix, f"{abs(rounded):,f}", currency)


def _labelled(sign: str, digits: str, currency: str) -> str:
    if currency.lower() == "usd":
        return f"{sign}${digits}"
    return f"{sign}{digits} {currency.upper()}"


def percent(value: Decimal | None) -> str:
    """Format a percentage with one decimal (an absurd one in scientific notation)."""
    if value is None:
        return "-"
    if _huge(value):
        return f"{value:.3e}%"
    return f"{_rounded(value, 1)}%"


def report_to_dict(report: Report) -> dict[str, Any]:
    """Return the report as JSON-ready data; money is an exact decimal string."""
    filters = report.filters
    return {
        "generatedAt": report.generated_at.isoformat().replace("+00:00", "Z"),
        "currency": report.currency,
        "filters": {
            "since": filters.since.isoformat() if filters.since else None,
            "until": filters.until.isoformat() if filters.until else None,
            "customer": filters.customer,
            "feature": filters.feature,
            "environment": filters.environment,
        },
        "totals": _tally(report.total),
        "hasRevenue": report.has_revenue,
        "customers": [_customer(row) for row in report.customers],
        "features": [
            {"feature": feature, **_tally(tally)} for feature, tally in report.features
        ],
        "customerFeatures": [
            {"customer": customer, "feature": feature, **_tally(tally)}
            for customer, feature, tally in report.customer_features
        ],
        "models": [
            {"requestedModel": requested, "servedModel": served, **_tally(tally)}
            for requested, served, tally in report.models
        ],
        "days": [
            {"day": day.isoformat(), **_tally(tally)} for day, tally in report.days
        ],
        "tokens": _tokens(report),
        "dataQuality": _quality(report),
    }


def render_json(report: Report) -> str:
    """Return the report as indented JSON."""
    return json.dumps(report_to_dict(report), indent=2) + "\n"


def render_csv(report: Report, section: str = "customers") -> str:
    """Return one section of the report as CSV, one row per line of that section."""
    data = report_to_dict(report)
    rows: list[dict[str, Any]]
    if section == "tokens":
        rows = [data["tokens"]]
    elif section == "data_quality":
        rows = _quality_rows(data["dataQuality"])
    elif section in SECTIONS:
        key = {"customer_features": "customerFeatures"}.get(section, section)
        rows = data[key]
    else:
        raise ValueError(f"section must be one of {', '.join(SECTIONS)}: {section!r}")
    return _csv(rows)


def render_table(report: Report, console: Console) -> None:
    """Print the report as terminal tables."""
    total, cur = report.total, report.currency
    console.print(
        f"[bold]Traket margins report[/bold]  ({report.filters.describe()})\n"
        f"{_plural(total.events, 'event')}, "
        f"cost {money(total.known_cost, currency=cur)}"
        f"{_incomplete(total)}"
    )
    console.print(_customers_table(report))
    console.print(_groups_table("Cost per feature", ["feature"], report.features, cur))
    console.print(
        _groups_table(
            "Cost per customer x feature",
            ["customer", "feature"],
            [((c, f), t) for c, f, t in report.customer_features],
            cur,
        )
    )
    console.print(
        _groups_table(
            "Cost by model",
            ["requested", "served"],
            [((r, s), t) for r, s, t in report.models],
            cur,
        )
    )
    console.print(
        _groups_table(
            days_title(report),
            ["day"],
            [(d.isoformat(), t) for d, t in report.days],
            cur,
        )
    )
    console.print(_tokens_table(report))
    console.print(_quality_table(report))


def days_title(report: Report) -> str:
    """Title the cost by day, saying so when days without events are left out."""
    if report.every_day:
        return "Cost by day"
    return "Cost by day (days with events only)"


def event_rows(items: Iterable[PricedEvent]) -> list[dict[str, Any]]:
    """Return one flat row per event for the drill-down: ids, tokens, components."""
    rows: list[dict[str, Any]] = []
    for item in items:
        event, cost = item.event, item.cost
        buckets = cost.buckets
        row: dict[str, Any] = {
            "occurredAt": event.get("occurredAt"),
            "idempotencyKey": event.get("idempotencyKey"),
            "providerRequestId": event.get("providerRequestId"),
            "providerResponseId": event.get("providerResponseId"),
            "customer": item.customer,
            "feature": item.feature,
            "environment": event.get("environment"),
            "operation": event.get("operation"),
            "status": event.get("status"),
            "requestedModel": item.requested_model,
            "servedModel": item.served_model,
            "serviceTier": cost.service_tier,
            "uncachedInputTokens": buckets.uncached_input if buckets else None,
            "cachedInputTokens": buckets.cached_input if buckets else None,
            "cacheWriteTokens": buckets.cache_write if buckets else None,
            "outputTokens": buckets.output if buckets else None,
            "reasoningTokens": buckets.reasoning if buckets else None,
        }
        components = _components(cost.components, event.get("cost"))
        for bucket in BUCKETS:
            row[f"{_camel(bucket)}Cost"] = _text(components.get(bucket))
        row.update(
            {
                "cost": _text(cost.amount),
                "currency": cost.currency if cost.amount is not None else None,
                "costStatus": cost.status,
                "costSource": cost.source,
                "priceVersion": cost.price_version,
                "pricedAs": cost.priced_as,
                "reason": cost.reason,
            }
        )
        rows.append(row)
    return rows


def render_events(rows: Sequence[Mapping[str, Any]], fmt: str, console: Console) -> str:
    """Render drill-down rows as CSV or JSON text, or print them as a table."""
    if fmt == "csv":
        return _csv(rows)
    if fmt == "json":
        return json.dumps(list(rows), indent=2) + "\n"

    table = Table(title="Events", box=box.SIMPLE_HEAD, show_lines=False)
    # Every column folds, so a narrow terminal wraps a cell but never cuts one.
    for name in ("occurred", "ids", "customer / feature", "model", "tokens", "cost"):
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(
            *_plain(
                [
                    _when(row["occurredAt"]),
                    f"{row['idempotencyKey']}\nreq {row['providerRequestId'] or '-'}\n"
                    f"resp {row['providerResponseId'] or '-'}",
                    f"{row['customer'] or _NONE}\n{row['feature'] or _NONE}",
                    f"{row['servedModel'] or '-'}"
                    + (f"\n(asked {row['requestedModel']})" if _asked(row) else "")
                    + (f"\ntier {row['serviceTier']}" if row["serviceTier"] else ""),
                    _token_cell(row),
                    _cost_cell(row),
                ]
            )
        )
    console.print(table)
    return ""


def _customers_table(report: Report) -> Table:
    title = "Margin per customer (least profitable first)"
    if not report.has_revenue:
        title = "Cost per customer"
    numbers = ["events", "cost"]
    if report.has_revenue:
        numbers += ["revenue", "margin", "margin %"]
    rows = [customer_cells(report, row) for row in report.customers]
    return _terminal_table(title, ["customer"], [*numbers, "not priced"], rows)


def _terminal_table(
    title: str,
    labels: Sequence[str],
    numbers: Sequence[str],
    rows: Sequence[Sequence[str]],
) -> Table:
    """Build a table whose label columns fold and whose numbers are never cut."""
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for name in labels:
        table.add_column(name, overflow="fold")
    for index, name in enumerate(numbers, start=len(labels)):
        widest = max((len(row[index]) for row in rows), default=0)
        table.add_column(name, justify="right", min_width=widest)
    for row in rows:
        table.add_row(*_plain(row))
    return table


def customer_cells(report: Report, row: CustomerRow) -> list[str]:
    """Return one customer's display cells, as the table and the HTML show them."""
    cur = report.currency
    cells = [
        row.customer or _NONE,
        str(row.tally.events),
        money(row.tally.known_cost, currency=cur),
    ]
    if report.has_revenue:
        cells += [
            money(row.revenue, 2, cur),
            money(row.margin, 2, cur),
            percent(row.margin_percent),
        ]
    cells.append(not_priced(row.tally))
    return cells


def group_cells(labels: Iterable[Any], tally: Tally, currency: str) -> list[str]:
    """Return one group's display cells: its labels, counts, tokens and cost."""
    return [
        *(str(label) if label else _NONE for label in labels),
        str(tally.events),
        token_count(tally.input_tokens if tally.tokens_known else None),
        token_count(tally.output_tokens if tally.tokens_known else None),
        money(tally.known_cost, currency=currency),
        not_priced(tally),
    ]


def token_count(count: int | None) -> str:
    """Format a token count; `None` (no usage reported) is "-", never 0."""
    return "-" if count is None else f"{count:,}"


def _groups_table(
    title: str,
    keys: Sequence[str],
    groups: Sequence[tuple[Any, Tally]],
    currency: str,
) -> Table:
    rows = [
        group_cells(key if isinstance(key, tuple) else (key,), tally, currency)
        for key, tally in groups
    ]
    numbers = ["events", "input tok", "output tok", "cost", "not priced"]
    return _terminal_table(title, keys, numbers, rows)


def _tokens_table(report: Report) -> Table:
    tokens = report.tokens
    table = Table(title="Tokens by type", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("type")
    table.add_column("tokens", justify="right")
    for label, value in (
        ("input, uncached", tokens.uncached_input),
        ("input, cached", tokens.cached_input),
        ("input, cache writes", tokens.cache_write),
        ("output (reasoning included)", tokens.output),
        ("  of which reasoning", tokens.reasoning),
        ("total", tokens.total),
    ):
        table.add_row(label, f"{value:,}")
    rate = tokens.cache_hit_rate
    table.add_row("cache hit rate", percent(rate * 100 if rate is not None else None))
    table.add_row(
        "saved by caching", money(tokens.cache_savings, currency=report.currency)
    )
    return table


def _quality_table(report: Report) -> Table:
    quality = report.quality
    table = Table(title="Data quality", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("check")
    table.add_column("detail")
    table.add_column("events", justify="right")
    for model, reason, count in quality.unpriced:
        table.add_row(*_plain(["unpriced", f"{model}: {reason}", str(count)]))
    if not quality.unpriced:
        table.add_row("unpriced", "none", "0")
    statuses = ", ".join(
        f"{s}: {n}" for s, n in quality.missing_usage_by_status.items()
    )
    table.add_row("no usage reported", statuses or "none", str(quality.missing_usage))
    for source, count in quality.cost_sources.items():
        table.add_row(*_plain(["cost source", source, str(count)]))
    for version, count in quality.price_versions.items():
        table.add_row(*_plain(["price version", version, str(count)]))
    if quality.customers_without_revenue:
        names = ", ".join(quality.customers_without_revenue)
        table.add_row(*_plain(["no revenue given", names, ""]))
    return table


def _tally(tally: Tally) -> dict[str, Any]:
    return {
        "events": tally.events,
        "pricedEvents": tally.priced,
        "unpricedEvents": tally.unpriced,
        "missingUsageEvents": tally.missing_usage,
        "inputTokens": tally.input_tokens if tally.tokens_known else None,
        "outputTokens": tally.output_tokens if tally.tokens_known else None,
        "cost": _text(tally.known_cost),
        "complete": tally.complete,
    }


def _customer(row: CustomerRow) -> dict[str, Any]:
    return {
        "customer": row.customer,
        **_tally(row.tally),
        "revenue": _text(row.revenue),
        "margin": _text(row.margin),
        "marginPercent": _ratio(row.margin_percent, 4),
    }


def _tokens(report: Report) -> dict[str, Any]:
    tokens = report.tokens
    return {
        "uncachedInput": tokens.uncached_input,
        "cachedInput": tokens.cached_input,
        "cacheWrite": tokens.cache_write,
        "inputTotal": tokens.input_total,
        "output": tokens.output,
        "reasoning": tokens.reasoning,
        "total": tokens.total,
        "cacheHitRate": _ratio(tokens.cache_hit_rate, 6),
        "cacheSavings": str(tokens.cache_savings),
    }


def _quality(report: Report) -> dict[str, Any]:
    quality = report.quality
    return {
        "unpriced": [
            {"model": model, "reason": reason, "events": count}
            for model, reason, count in quality.unpriced
        ],
        "missingUsage": quality.missing_usage,
        "missingUsageByStatus": quality.missing_usage_by_status,
        "costSources": quality.cost_sources,
        "priceVersions": quality.price_versions,
        "currencies": quality.currencies,
        "customersWithoutRevenue": quality.customers_without_revenue,
    }


def _quality_rows(quality: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = [
        {
            "check": "unpriced",
            "detail": f"{u['model']}: {u['reason']}",
            "events": u["events"],
        }
        for u in quality["unpriced"]
    ]
    rows += [
        {"check": "no usage reported", "detail": status, "events": count}
        for status, count in quality["missingUsageByStatus"].items()
    ]
    for check, key in (
        ("cost source", "costSources"),
        ("price version", "priceVersions"),
        ("currency", "currencies"),
    ):
        rows += [
            {"check": check, "detail": detail, "events": count}
            for detail, count in quality[key].items()
        ]
    rows += [
        {"check": "no revenue given", "detail": name, "events": ""}
        for name in quality["customersWithoutRevenue"]
    ]
    return rows


def _csv(rows: Sequence[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    if not rows:
        return ""
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    return out.getvalue()


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _components(components: Iterable[Any], cost: Any) -> dict[str, Decimal]:
    found = {item.bucket: item.amount for item in components}
    if found or not isinstance(cost, Mapping):
        return found
    # A cost recorded by the SDK carries its components in `cost.metadata`.
    metadata = cost.get("metadata")
    if not isinstance(metadata, Mapping):
        return {}
    for bucket in BUCKETS:
        value = metadata.get(WIRE_COMPONENT_KEYS[bucket])
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found[bucket] = Decimal(repr(value))
    return found


def _plain(values: Iterable[str]) -> list[Text]:
    """Wrap cells as plain text: names from events must not be read as markup."""
    return [Text(value) for value in values]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _ratio(value: Decimal | None, places: int) -> str | None:
    """Write a ratio (not money) to `places` decimals; a quotient has 28 digits."""
    if value is None:
        return None
    return _text(_rounded(value, places))


def _text(value: Decimal | None) -> str | None:
    """Write a decimal exactly, without exponent or trailing zeros."""
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def not_priced(tally: Tally) -> str:
    """Describe the events of a group that carry no cost."""
    parts = []
    if tally.unpriced:
        parts.append(f"{tally.unpriced} unpriced")
    if tally.missing_usage:
        parts.append(f"{tally.missing_usage} no usage")
    return ", ".join(parts) or "-"


def left_out(tally: Tally) -> str:
    """Say which events a total leaves out; empty when every event has a cost."""
    parts = []
    if tally.unpriced:
        parts.append(_plural(tally.unpriced, "unpriced event"))
    if tally.missing_usage:
        parts.append(_plural(tally.missing_usage, "event") + " without usage")
    return ", ".join(parts)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _incomplete(tally: Tally) -> str:
    if tally.complete:
        return ""
    return f"  [yellow](not included: {left_out(tally)})[/yellow]"


def _asked(row: Mapping[str, Any]) -> bool:
    return bool(row["requestedModel"]) and row["requestedModel"] != row["servedModel"]


def _when(value: Any) -> str:
    if not isinstance(value, str):
        return "-"
    return value.replace("T", "\n")[:19]


def _token_cell(row: Mapping[str, Any]) -> str:
    if row["outputTokens"] is None:
        return "no usage"
    return (
        f"in {row['uncachedInputTokens']:,} + cached {row['cachedInputTokens']:,}"
        f" + write {row['cacheWriteTokens']:,}\n"
        f"out {row['outputTokens']:,} (reasoning {row['reasoningTokens']:,})"
    )


def _exact(text: str, currency: str) -> str:
    """Show an exact decimal string as money, unrounded, for audits."""
    if currency.lower() == "usd":
        return f"-${text[1:]}" if text.startswith("-") else f"${text}"
    return f"{text} {currency.upper()}"


def _cost_cell(row: Mapping[str, Any]) -> str:
    if row["cost"] is None:
        return f"{row['costStatus']}: {row['reason']}"
    cur = str(row["currency"] or "usd")
    parts = [_exact(row["cost"], cur) + f" {row['costSource']}"]
    labels = {"uncached_input": "in", "cached_input": "cached", "cache_write": "write"}
    for bucket in BUCKETS:
        value = row[f"{_camel(bucket)}Cost"]
        if value is not None and Decimal(value):
            parts.append(f"{labels.get(bucket, bucket)} {_exact(value, cur)}")
    if row["priceVersion"]:
        parts.append(str(row["priceVersion"]))
    return "\n".join(parts)
