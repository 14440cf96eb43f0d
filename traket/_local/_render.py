"""Render the margins report and the event drill-down: table, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
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


def money(amount: Decimal | None, places: int = 4) -> str:
    """Format money for display; rounding happens here and only here."""
    if amount is None:
        return "-"
    step = Decimal(1).scaleb(-places)
    rounded = amount.quantize(step, rounding=ROUND_HALF_UP)
    sign = "-" if rounded < 0 else ""
    return f"{sign}${abs(rounded):,}"


def percent(value: Decimal | None) -> str:
    """Format a percentage with one decimal."""
    if value is None:
        return "-"
    return f"{value.quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}%"


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
    total = report.total
    console.print(
        f"[bold]Traket margins report[/bold]  ({report.filters.describe()})\n"
        f"{total.events} events, cost {money(total.cost)} {report.currency.upper()}"
        f"{_incomplete(total)}"
    )
    console.print(_customers_table(report))
    console.print(_groups_table("Cost per feature", ["feature"], report.features))
    console.print(
        _groups_table(
            "Cost per customer x feature",
            ["customer", "feature"],
            [((c, f), t) for c, f, t in report.customer_features],
        )
    )
    console.print(
        _groups_table(
            "Cost by model",
            ["requested", "served"],
            [((r, s), t) for r, s, t in report.models],
        )
    )
    console.print(
        _groups_table(
            "Cost by day", ["day"], [(d.isoformat(), t) for d, t in report.days]
        )
    )
    console.print(_tokens_table(report))
    console.print(_quality_table(report))


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
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("customer", overflow="fold")
    table.add_column("events", justify="right")
    table.add_column("cost", justify="right")
    if report.has_revenue:
        for name in ("revenue", "margin", "margin %"):
            table.add_column(name, justify="right")
    table.add_column("not priced", justify="right")
    for row in report.customers:
        cells = [
            row.customer or _NONE,
            str(row.tally.events),
            money(row.tally.known_cost),
        ]
        if report.has_revenue:
            cells += [
                money(row.revenue, 2),
                money(row.margin, 2),
                percent(row.margin_percent),
            ]
        cells.append(not_priced(row.tally))
        table.add_row(*_plain(cells))
    return table


def _groups_table(
    title: str, keys: Sequence[str], groups: Sequence[tuple[Any, Tally]]
) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for key in keys:
        table.add_column(key, overflow="fold")
    for name in ("events", "input tok", "output tok", "cost", "not priced"):
        table.add_column(name, justify="right")
    for key, tally in groups:
        labels = key if isinstance(key, tuple) else (key,)
        table.add_row(
            *_plain(label or _NONE for label in labels),
            str(tally.events),
            f"{tally.input_tokens:,}",
            f"{tally.output_tokens:,}",
            money(tally.known_cost),
            not_priced(tally),
        )
    return table


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
    table.add_row("saved by caching", money(tokens.cache_savings))
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
    if len(quality.currencies) > 1:
        table.add_row(
            "mixed currencies",
            ", ".join(quality.currencies) + " (totals add them as-is)",
            str(sum(quality.currencies.values())),
        )
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
        "inputTokens": tally.input_tokens,
        "outputTokens": tally.output_tokens,
        "cost": _text(tally.known_cost),
        "complete": tally.complete,
    }


def _customer(row: CustomerRow) -> dict[str, Any]:
    return {
        "customer": row.customer,
        **_tally(row.tally),
        "revenue": _text(row.revenue),
        "margin": _text(row.margin),
        "marginPercent": _text(row.margin_percent),
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
        "cacheHitRate": _text(tokens.cache_hit_rate),
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


def _incomplete(tally: Tally) -> str:
    if tally.complete:
        return ""
    return (
        f"  [yellow](not included: {tally.unpriced} unpriced, "
        f"{tally.missing_usage} without usage)[/yellow]"
    )


def _asked(row: Mapping[str, Any]) -> bool:
    return bool(row["requestedModel"]) and row["requestedModel"] != row["servedModel"]


def _when(value: Any) -> str:
    if not isinstance(value, str):
        return "-"
    return value.replace("T", " ")[:19]


def _token_cell(row: Mapping[str, Any]) -> str:
    if row["outputTokens"] is None:
        return "no usage"
    return (
        f"in {row['uncachedInputTokens']:,} + cached {row['cachedInputTokens']:,}"
        f" + write {row['cacheWriteTokens']:,}\n"
        f"out {row['outputTokens']:,} (reasoning {row['reasoningTokens']:,})"
    )


def _cost_cell(row: Mapping[str, Any]) -> str:
    if row["cost"] is None:
        return f"{row['costStatus']}: {row['reason']}"
    parts = [money(Decimal(row["cost"]), 6) + f" {row['costSource']}"]
    labels = {"uncached_input": "in", "cached_input": "cached", "cache_write": "write"}
    for bucket in BUCKETS:
        value = row[f"{_camel(bucket)}Cost"]
        if value is not None and Decimal(value):
            parts.append(f"{labels.get(bucket, bucket)} {money(Decimal(value), 6)}")
    if row["priceVersion"]:
        parts.append(str(row["priceVersion"]))
    return "\n".join(parts)
