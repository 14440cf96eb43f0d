"""The margins report on a known data set; every expected number is worked by hand.

The data set and the arithmetic behind each event's cost are in
`tests/report_dataset.py`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import report_dataset
from click.testing import CliRunner
from rich.console import Console

from traket._errors import ConfigurationError
from traket._local import cli
from traket._local._html import render_html
from traket._local._render import (
    event_rows,
    money,
    render_csv,
    render_table,
    report_to_dict,
)
from traket._local._report import (
    Filters,
    Report,
    build_report,
    load_revenue_csv,
    parse_revenue_pairs,
    price_events,
)
from traket._local._store import EventStore
from traket._pricing import CostEngine

pytest.importorskip("genai_prices")

D = Decimal


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return report_dataset.make_db(tmp_path / "traket.sqlite3")


def report_for(
    db: Path, revenue: dict[str, Decimal] | None = None, **filters: Any
) -> Report:
    chosen = Filters(**filters)
    with EventStore(db) as store:
        return build_report(
            store.events(**chosen.store_kwargs()),
            engine=CostEngine(),
            revenue=revenue,
            filters=chosen,
        )


# Numbers ------------------------------------------------------------------------


def test_total_cost_adds_every_priced_event(db: Path) -> None:
    report = report_for(db)

    # 0.00261 + 0.045 + 0.01725 + 0.5 + 0.016 + 0.00075 + 0.000525
    assert report.total.cost == D("0.582135")
    assert report.total.events == 9
    assert (report.total.priced, report.total.unpriced) == (7, 1)
    assert report.total.missing_usage == 1
    assert not report.total.complete


def test_cost_per_customer_is_ranked_by_cost(db: Path) -> None:
    report = report_for(db)

    ranked = [(row.customer, row.tally.cost) for row in report.customers]
    assert ranked == [
        ("globex", D("0.5")),  # recorded cost; my-llama unpriced
        ("acme", D("0.06486")),  # 0.00261 + 0.045 + 0.01725
        ("initech", D("0.016525")),  # 0.016 + 0.000525; one event without usage
        (None, D("0.00075")),
    ]


def test_margins_put_the_least_profitable_customer_first(db: Path) -> None:
    report = report_for(db, revenue=report_dataset.REVENUE)

    rows = [(r.customer, r.revenue, r.margin) for r in report.customers]
    assert rows == [
        ("acme", D("0.05"), D("-0.01486")),  # 0.05 - 0.06486
        ("initech", D("1"), D("0.983475")),  # 1 - 0.016525
        ("umbrella", D("5"), D("5")),  # revenue, no usage at all
        ("globex", D("10"), D("9.5")),  # 10 - 0.5
        (None, None, None),  # no revenue given: unknown, listed last
    ]
    acme = report.customers[0]
    assert acme.margin_percent == D("-29.72")  # -0.01486 / 0.05 * 100
    assert report.quality.customers_without_revenue == ["(unattributed)"]


def test_cost_per_feature_and_per_customer_and_feature(db: Path) -> None:
    report = report_for(db)

    features = {feature: tally.cost for feature, tally in report.features}
    assert features == {
        "chat": D("0.56361"),  # 0.00261 + 0.045 + 0.5 + 0.016
        "summarize": D("0.017775"),  # 0.01725 + 0.000525, my-llama unpriced
        None: D("0.00075"),
    }
    pairs = {(c, f): (t.events, t.cost) for c, f, t in report.customer_features}
    assert pairs[("acme", "chat")] == (2, D("0.04761"))
    assert pairs[("acme", "summarize")] == (1, D("0.01725"))
    assert pairs[("globex", "summarize")] == (1, D(0))
    assert pairs[("initech", "chat")] == (2, D("0.016"))


def test_a_group_with_nothing_priced_shows_no_cost_not_zero(db: Path) -> None:
    report = report_for(db)

    tally = next(
        t for c, f, t in report.customer_features if c == "globex" and f == "summarize"
    )
    assert tally.known_cost is None
    row = next(
        r
        for r in report_to_dict(report)["customerFeatures"]
        if r["customer"] == "globex" and r["feature"] == "summarize"
    )
    assert (row["cost"], row["unpricedEvents"]) == (None, 1)


def test_cost_by_model_requested_and_served(db: Path) -> None:
    report = report_for(db)

    models = {(r, s): (t.events, t.cost) for r, s, t in report.models}
    assert models == {
        ("gpt-4o-2024-08-06", "gpt-4o-2024-08-06"): (4, D("0.54761")),
        ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"): (1, D("0.01725")),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini-2024-07-18"): (2, D("0.001275")),
        ("o3-2025-04-16", "o3-2025-04-16"): (1, D("0.016")),
        ("my-llama", "my-llama"): (1, D(0)),
    }


def test_cost_by_day(db: Path) -> None:
    report = report_for(db)

    assert [(d.isoformat(), t.cost) for d, t in report.days] == [
        ("2025-08-01", D("0.50336")),  # 0.00261 + 0.5 + 0.00075
        ("2025-08-02", D("0.062775")),  # 0.045 + 0.01725 + 0.000525
        ("2025-08-03", D("0.016")),  # o3; my-llama unpriced, one without usage
    ]


def test_days_without_events_appear_with_zero(tmp_path: Path) -> None:
    two_days = [
        e for e in report_dataset.events() if e["idempotencyKey"] in ("ev1", "ev7")
    ]

    report = build_report(two_days, engine=CostEngine())

    assert [d.isoformat() for d, _ in report.days] == [
        "2025-08-01",
        "2025-08-02",
        "2025-08-03",
    ]
    assert report.days[1][1].events == 0


def test_days_years_apart_list_only_the_days_with_events() -> None:
    first = report_dataset.events()[0] | {"occurredAt": "0205-03-01T12:00:00Z"}
    last = report_dataset.events()[1] | {"occurredAt": "2026-01-01T12:00:00Z"}

    report = build_report([first, last], engine=CostEngine())
    console = Console(file=io.StringIO(), width=200, color_system=None)
    render_table(report, console)
    page = render_html(report)

    assert [d.isoformat() for d, _ in report.days] == ["0205-03-01", "2026-01-01"]
    assert not report.every_day
    assert "Cost by day (days with events only)" in console.file.getvalue()  # type: ignore[attr-defined]
    assert "Cost by day (days with events only)" in page
    assert len(report_to_dict(report)["days"]) == 2


@pytest.mark.parametrize(("span", "rows"), [(92, 92), (93, 2)])
def test_every_day_of_a_quarter_is_listed_and_longer_spans_are_not(
    span: int, rows: int
) -> None:
    last = date(2026, 1, 1) + timedelta(days=span - 1)
    events = [
        report_dataset.events()[0] | {"occurredAt": "2026-01-01T12:00:00Z"},
        report_dataset.events()[1] | {"occurredAt": f"{last.isoformat()}T12:00:00Z"},
    ]

    report = build_report(events, engine=CostEngine())

    assert len(report.days) == rows
    assert (report.days[0][0], report.days[-1][0]) == (date(2026, 1, 1), last)
    assert report.every_day == (rows == span)


def test_token_breakdown_cache_hit_rate_and_savings(db: Path) -> None:
    tokens = report_for(db).tokens

    # uncached: 68 + 10000 + 50000 + 1000 + 500 + 2000 + 1000 + 1000
    assert tokens.uncached_input == 65568
    assert tokens.cached_input == 52152  # 1152 + 50000 + 1000
    assert tokens.cache_write == 0
    assert tokens.output == 15250  # 100 + 2000 + 10000 + 100 + 50 + 1500 + 1000 + 500
    assert tokens.reasoning == 1200
    assert tokens.cache_hit_rate == D(52152) / D(117720)
    # Saved: 1152 * (2.50 - 1.25) + 50000 * (0.15 - 0.075) + 1000 * (0.15 - 0.075)
    # = 1440 + 3750 + 75 per million = 0.005265
    assert tokens.cache_savings == D("0.005265")


def test_data_quality_counts_what_the_totals_leave_out(db: Path) -> None:
    quality = report_for(db).quality
    version = f"genai-prices {__import__('genai_prices').__version__}"

    assert [(m, n) for m, _, n in quality.unpriced] == [("my-llama", 1)]
    assert "not in genai-prices" in quality.unpriced[0][1]
    assert quality.missing_usage == 1
    assert quality.missing_usage_by_status == {"error": 1}
    assert quality.cost_sources == {
        "estimate (at report time)": 5,
        "manual_override (recorded)": 1,
        "estimate (recorded)": 1,
    }
    # Price versions are grouped by source, with the span of dates priced.
    assert quality.price_versions == {
        f"{version} @ 2025-08-01..2025-08-03": 6,
        "contract-2025": 1,
    }


def test_filters_slice_by_customer_feature_and_period(db: Path) -> None:
    acme = report_for(db, revenue=report_dataset.REVENUE, customer="acme")
    chat = report_for(db, feature="chat")
    second = report_for(db, since=date(2025, 8, 2), until=date(2025, 8, 2))
    staging = report_for(db, environment="staging")
    production = report_for(db, environment="production")

    assert [(r.customer, r.margin) for r in acme.customers] == [("acme", D("-0.01486"))]
    assert chat.total.cost == D("0.56361")
    assert (second.total.events, second.total.cost) == (3, D("0.062775"))
    assert staging.total.events == 0
    assert (production.total.events, production.total.cost) == (9, D("0.582135"))


# Display ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "places", "shown"),
    [
        ("0.0000099", 4, "$0.0000099"),  # never "$0.0000" for a priced cost
        ("0.000525", 4, "$0.00053"),  # at least two significant digits
        ("0.50336", 4, "$0.5034"),
        ("1234.5", 2, "$1,234.50"),
        ("-0.01486", 2, "-$0.015"),
        ("0.01", 2, "$0.01"),  # exact at two places: no more digits
        ("0.0050", 4, "$0.0050"),
        ("0", 4, "$0.00"),  # zero tokens cost exactly zero
        ("1E-14", 4, "<$0.0000000001"),
    ],
)
def test_money_shows_small_amounts_with_significant_digits(
    amount: str, places: int, shown: str
) -> None:
    assert money(D(amount), places) == shown


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        ("1e308", "$1.000e+308"),
        ("-1e308", "-$1.000e+308"),
        ("1" + "0" * 400, "$1.000e+400"),
        ("999999999999999.4", "$999,999,999,999,999.4000"),
    ],
)
def test_money_shows_an_absurd_amount_and_never_raises(amount: str, shown: str) -> None:
    assert money(D(amount)) == shown
    assert money(D(amount), 2, "eur").endswith(" EUR")


def test_a_huge_recorded_cost_renders_in_every_format() -> None:
    event = report_dataset.events()[0] | {
        "cost": {"amount": 1e308, "currency": "usd", "source": "caller"}
    }
    customer = event["externalCustomerId"]

    report = build_report([event], engine=CostEngine(), revenue={customer: D(10)})
    console = Console(file=io.StringIO(), width=200, color_system=None)
    render_table(report, console)
    table = console.file.getvalue()  # type: ignore[attr-defined]
    page = render_html(report)
    data = report_to_dict(report)

    assert "$1.000e+308" in table
    assert "$1.000e+308" in page
    assert data["totals"]["cost"] == str(10**308)
    assert "-1.000e+309%" in table  # (10 - 1e308) / 10 * 100, to 28 digits
    assert data["customers"][0]["marginPercent"] == "-1" + "0" * 309
    assert render_csv(report, "customers").count("\n") == 2


def test_money_without_a_cost_is_a_dash_and_names_other_currencies() -> None:
    assert money(None) == "-"
    assert money(D("0.0000099"), 4, "eur") == "0.0000099 EUR"


# (22 * 0.15 + 11 * 0.60) / 1e6 = 0.0000099: a real gpt-4o-mini chat call.
TINY = report_dataset.events()[7] | {
    "idempotencyKey": "tiny",
    "externalCustomerId": "acme",
    "feature": "chat",
    "usage": {"input_tokens": 22, "output_tokens": 11},
}


def test_a_tiny_cost_is_never_printed_as_zero_in_any_output() -> None:
    report = build_report([TINY], engine=CostEngine())
    console = Console(file=io.StringIO(), width=200, color_system=None)
    render_table(report, console)
    table = console.file.getvalue()  # type: ignore[attr-defined]
    page = render_html(report)

    assert report.total.cost == D("0.0000099")
    assert "$0.0000 " not in table
    assert "$0.0000\n" not in table
    assert table.count("$0.0000099") >= 6  # header, customer, feature, pair, ...
    assert "$0.0000<" not in page
    assert '<strong id="total-cost">$0.0000099</strong>' in page
    assert '"labels":{"days":["$0.0000099"]' in page


def test_the_cli_shows_a_tiny_cost_and_its_parts_uncut(tmp_path: Path) -> None:
    db = tmp_path / "tiny.sqlite3"
    with EventStore(db) as store:
        store.insert_batch([TINY])

    table = run("events", "--db", str(db), env={"COLUMNS": "80"}).output

    # 22 * 0.15 / 1e6 = 0.0000033 input, 11 * 0.60 / 1e6 = 0.0000066 output
    for amount in ("$0.0000099", "$0.0000033", "$0.0000066"):
        assert amount in table
    assert "\u2026" not in table
    assert "$0.0000 " not in table
    # An 80-column terminal folds names but never cuts a number short.
    report = run("report", "--db", str(db), env={"COLUMNS": "80"}).output
    assert "\u2026" not in report
    assert report.count("$0.0000099") == 6  # total, customer, feature, pair, ...


def test_groups_without_usage_show_no_tokens_not_zero(db: Path) -> None:
    report = report_for(db)
    data = report_to_dict(report)
    console = Console(file=io.StringIO(), width=200, color_system=None)
    render_table(report, console)
    table = console.file.getvalue()  # type: ignore[attr-defined]

    # ev6 (initech, chat, gpt-4o) is a failed call without usage.
    pair = next(r for r in data["customerFeatures"] if r["customer"] == "initech")
    assert (pair["feature"], pair["inputTokens"]) == ("chat", 2000)  # o3 only
    model = next(r for r in data["models"] if r["servedModel"] == "gpt-4o-2024-08-06")
    assert model["inputTokens"] == 12220  # 1220 + 10000 + 1000; ev6 has none
    alone = build_report(
        [e for e in report_dataset.events() if e["idempotencyKey"] == "ev6"]
    )
    only = report_to_dict(alone)
    assert only["customers"][0]["inputTokens"] is None
    assert only["totals"]["outputTokens"] is None
    assert only["totals"]["cost"] is None
    assert "without usage" in table


def test_a_report_with_nothing_priced_shows_no_cost_not_zero() -> None:
    unknown = [
        e for e in report_dataset.events() if e["idempotencyKey"] in ("ev5", "ev6")
    ]
    report = build_report(unknown, engine=CostEngine())
    console = Console(file=io.StringIO(), width=200, color_system=None)
    render_table(report, console)
    table = console.file.getvalue()  # type: ignore[attr-defined]
    page = render_html(report)

    assert "2 events, cost -" in table
    assert "1 unpriced event, 1 event without usage" in table
    assert '<strong id="total-cost">-</strong>' in page
    assert "$0.0000" not in table
    assert "$0.0000" not in page


def test_costs_in_another_currency_are_left_out_not_added(db: Path) -> None:
    euros = report_dataset.events()[0] | {
        "idempotencyKey": "eur1",
        "cost": {"amount": 7, "currency": "eur", "source": "invoice"},
    }
    with EventStore(db) as store:
        store.insert_batch([euros])

    report = report_for(db)

    # The USD total of the data set, unchanged: 7 EUR is not added to dollars.
    assert report.total.cost == D("0.582135")
    assert report.currency == "usd"
    assert (report.total.unpriced, report.total.priced) == (2, 7)
    reasons = {model: reason for model, reason, _ in report.quality.unpriced}
    assert reasons["gpt-4o-2024-08-06"] == (
        "cost is in EUR (invoice); this report adds USD only and converts nothing"
    )


def test_a_report_in_another_currency_says_so(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[[prices]]\nmodel = "my-llama"\ncurrency = "eur"\n'
        "input_per_mtok = 1\noutput_per_mtok = 2\n"
    )
    llama = [e for e in report_dataset.events() if e["idempotencyKey"] == "ev5"]

    report = build_report(llama, engine=CostEngine(price_file=prices))
    console = Console(file=io.StringIO(), width=200, color_system=None)
    render_table(report, console)

    # (500 * 1 + 50 * 2) / 1e6 = 0.0006 EUR
    assert (report.currency, report.total.cost) == ("eur", D("0.0006"))
    assert "cost 0.0006 EUR" in console.file.getvalue()  # type: ignore[attr-defined]
    assert "0.0006 EUR</strong>" in render_html(report)


# Revenue input ------------------------------------------------------------------


def test_revenue_from_csv_and_pairs(tmp_path: Path) -> None:
    path = tmp_path / "revenue.csv"
    path.write_text('customer,amount\nacme,10.50\nglobex,"$1,000"\nacme,0.5\n')

    assert load_revenue_csv(path) == {"acme": D("11.00"), "globex": D("1000")}
    assert parse_revenue_pairs(["acme=3", "a=b=2"]) == {"acme": D(3), "a=b": D(2)}


def test_a_revenue_file_that_is_not_utf_8_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "revenue.csv"
    path.write_bytes(b"customer,amount\nacme,12\n\xff\xfe,1\n")

    with pytest.raises(ConfigurationError, match="expected UTF-8") as caught:
        load_revenue_csv(path)

    assert isinstance(caught.value.__cause__, UnicodeDecodeError)


@pytest.mark.parametrize(
    ("text", "amount"),
    [("1,234.50", "1234.50"), ("$1,000", "1000"), ("12.5", "12.5"), ("-3", "-3")],
)
def test_revenue_amounts_take_commas_between_thousands_only(
    text: str, amount: str
) -> None:
    assert parse_revenue_pairs([f"acme={text}"]) == {"acme": D(amount)}


@pytest.mark.parametrize("bad", ["12,50", "1,2345", "1e3", "nan", "12.", "1.2.3"])
def test_an_ambiguous_revenue_amount_is_refused_not_misread(bad: str) -> None:
    with pytest.raises(ValueError, match="expected an amount") as raised:
        parse_revenue_pairs([f"acme={bad}"])
    assert repr(bad) in str(raised.value)


def test_a_revenue_csv_with_extra_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "revenue.csv"
    path.write_text("customer,amount\nglobex,$1,000\n")

    with pytest.raises(ValueError, match="line 2: expected columns"):
        load_revenue_csv(path)


@pytest.mark.parametrize("bad", ["acme", "acme=lots", "=3"])
def test_bad_revenue_pairs_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="--revenue"):
        parse_revenue_pairs([bad])


# Shapes -------------------------------------------------------------------------


def test_json_shape_keeps_money_exact(db: Path) -> None:
    data = report_to_dict(report_for(db, revenue=report_dataset.REVENUE))

    assert set(data) == {
        "generatedAt",
        "currency",
        "filters",
        "totals",
        "hasRevenue",
        "customers",
        "features",
        "customerFeatures",
        "models",
        "days",
        "tokens",
        "dataQuality",
    }
    assert data["totals"]["cost"] == "0.582135"
    assert data["customers"][0] == {
        "customer": "acme",
        "events": 3,
        "pricedEvents": 3,
        "unpricedEvents": 0,
        "missingUsageEvents": 0,
        "inputTokens": 111220,
        "outputTokens": 12100,
        "cost": "0.06486",
        "complete": True,
        "revenue": "0.05",
        "margin": "-0.01486",
        "marginPercent": "-29.72",
    }
    assert data["tokens"]["cacheSavings"] == "0.005265"
    # Ratios are not money: rounded to a few places, not a 28-digit quotient.
    assert data["tokens"]["cacheHitRate"] == "0.443017"  # 52152 / 117720
    initech = next(c for c in data["customers"] if c["customer"] == "initech")
    assert initech["marginPercent"] == "98.3475"  # 0.983475 / 1 * 100
    json.dumps(data)


def test_csv_sections(db: Path) -> None:
    report = report_for(db, revenue=report_dataset.REVENUE)

    customers = list(csv.DictReader(io.StringIO(render_csv(report, "customers"))))
    days = list(csv.DictReader(io.StringIO(render_csv(report, "days"))))
    quality = list(csv.DictReader(io.StringIO(render_csv(report, "data_quality"))))

    assert [r["customer"] for r in customers] == [
        "acme",
        "initech",
        "umbrella",
        "globex",
        "",
    ]
    assert customers[0]["margin"] == "-0.01486"
    assert customers[0]["complete"] == "true"
    assert [(r["day"], r["cost"]) for r in days] == [
        ("2025-08-01", "0.50336"),
        ("2025-08-02", "0.062775"),
        ("2025-08-03", "0.016"),
    ]
    assert {"check": "no usage reported", "detail": "error", "events": "1"} in quality


def test_event_rows_carry_ids_tokens_and_cost_components(db: Path) -> None:
    with EventStore(db) as store:
        rows = {
            row["idempotencyKey"]: row
            for row in event_rows(price_events(store.events(), CostEngine()))
        }

    first = rows["ev1"]
    assert (first["providerRequestId"], first["providerResponseId"]) == (
        "req_ev1",
        "resp_ev1",
    )
    assert (first["uncachedInputTokens"], first["cachedInputTokens"]) == (68, 1152)
    assert (first["uncachedInputCost"], first["cachedInputCost"]) == (
        "0.00017",
        "0.00144",
    )
    assert (first["outputCost"], first["cost"]) == ("0.001", "0.00261")
    # The SDK's estimate recorded on the wire keeps its components.
    assert rows["ev9"]["costSource"] == "estimate"
    assert rows["ev9"]["cachedInputCost"] == "0.000075"
    assert rows["ev5"]["costStatus"] == "unpriced"
    assert rows["ev6"]["costStatus"] == "missing_usage"
    assert rows["ev6"]["outputTokens"] is None


def test_html_is_self_contained(db: Path) -> None:
    page = render_html(report_for(db, revenue=report_dataset.REVENUE))

    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page
    assert 'id="traket-data"' in page


def test_html_escapes_names_from_events() -> None:
    hostile = report_dataset.events()[0] | {
        "externalCustomerId": "</script><script>alert(1)</script>"
    }

    page = render_html(build_report([hostile], engine=CostEngine()))

    assert "<script>alert(1)" not in page
    assert "&lt;/script&gt;" in page


# CLI ----------------------------------------------------------------------------


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli.main, list(args), env=env, catch_exceptions=False)


def test_cli_report_table(db: Path) -> None:
    result = run("report", "--db", str(db), "--revenue", "acme=0.05")

    assert result.exit_code == 0, result.output
    assert "Margin per customer" in result.output
    assert "-$0.01" in result.output
    assert "$0.5821" in result.output
    assert "my-llama" in result.output


def test_cli_report_reads_the_database_from_the_environment(db: Path) -> None:
    result = run("report", "--format", "json", env={"TRAKET_DB": str(db)})

    assert json.loads(result.output)["totals"]["cost"] == "0.582135"


def test_cli_report_json_with_revenue_csv_and_filters(db: Path, tmp_path: Path) -> None:
    revenue = tmp_path / "revenue.csv"
    revenue.write_text("customer,amount\nacme,0.05\n")

    result = run(
        "report",
        "--db",
        str(db),
        "--format",
        "json",
        "--revenue",
        str(revenue),
        "--since",
        "2025-08-02",
        "--until",
        "2025-08-02",
        "--customer",
        "acme",
    )

    data = json.loads(result.output)
    assert data["filters"]["since"] == "2025-08-02"
    # 0.05 - (0.045 + 0.01725)
    assert [(c["customer"], c["margin"]) for c in data["customers"]] == [
        ("acme", "-0.01225")
    ]


def test_cli_report_csv_and_html_to_a_file(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"

    csv_result = run("report", "--db", str(db), "--format", "csv", "--section", "days")
    html_result = run("report", "--db", str(db), "--format", "html", "-o", str(out))

    assert csv_result.output.splitlines()[0].startswith("day,events,")
    assert html_result.exit_code == 0
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_cli_report_with_a_price_file(db: Path, tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[[prices]]\nmodel = "my-llama"\ninput_per_mtok = 1\noutput_per_mtok = 2\n'
    )

    result = run("report", "--db", str(db), "--format", "json", "--prices", str(prices))

    data = json.loads(result.output)
    # my-llama now priced: (500 * 1 + 50 * 2) / 1e6 = 0.0006
    assert data["totals"]["cost"] == str(D("0.582135") + D("0.0006"))
    assert data["dataQuality"]["unpriced"] == []


def test_cli_report_reads_the_price_file_from_the_environment(
    db: Path, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[[prices]]\nmodel = "my-llama"\ninput_per_mtok = 1\noutput_per_mtok = 2\n'
    )

    result = run(
        "report",
        "--format",
        "json",
        env={"TRAKET_DB": str(db), "TRAKET_PRICES": str(prices)},
    )

    # my-llama priced from the file: (500 * 1 + 50 * 2) / 1e6 = 0.0006
    assert json.loads(result.output)["totals"]["cost"] == "0.582735"


def test_cli_report_refuses_a_missing_database(tmp_path: Path) -> None:
    result = run("report", "--db", str(tmp_path / "nope.sqlite3"))

    assert result.exit_code == 1
    assert "no database at" in result.output
    assert not (tmp_path / "nope.sqlite3").exists()


def test_cli_report_refuses_bad_revenue(db: Path) -> None:
    result = run("report", "--db", str(db), "--revenue", "acme=lots")

    assert result.exit_code == 2
    assert "expected an amount such as 1234.50 or 1,234.50, received 'lots'" in (
        result.output
    )


def test_cli_events_drill_down(db: Path) -> None:
    table = run("events", "--db", str(db), "--customer", "acme")
    data = json.loads(
        run("events", "--db", str(db), "--format", "json", "--unpriced").output
    )

    assert table.exit_code == 0
    assert "req_ev1" in table.output
    assert "ev5" not in table.output
    assert [row["idempotencyKey"] for row in data] == ["ev5", "ev6"]


def test_cli_events_by_served_or_requested_model(db: Path) -> None:
    def keys(*args: str) -> list[str]:
        found = run("events", "--db", str(db), "--format", "json", *args).output
        return [row["idempotencyKey"] for row in json.loads(found)]

    assert keys("--model", "o3-2025-04-16") == ["ev7"]
    assert keys("--model", "gpt-4o-mini") == ["ev3"]  # as requested
    assert keys("--model", "gpt-4o-mini-2024-07-18", "--customer", "acme") == ["ev3"]
    assert keys("--since", "2025-08-03", "--feature", "summarize") == ["ev5"]


def test_cli_events_limit_keeps_the_latest(db: Path) -> None:
    data = json.loads(
        run("events", "--db", str(db), "--format", "json", "--limit", "2").output
    )

    assert [row["occurredAt"][:10] for row in data] == ["2025-08-03", "2025-08-03"]


def test_cli_serve_calls_the_local_ingest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    def fake_run_server(db_path: Any, **kwargs: Any) -> None:
        calls.append((db_path, kwargs["host"], kwargs["port"], kwargs["write_key"]))
        url = "http://127.0.0.1:9999/api/v1/usage/events"
        kwargs["on_ready"](SimpleNamespace(url=url, bound_url=url, loopback=True))

    monkeypatch.setattr("traket._local._server.run_server", fake_run_server)

    default = run("serve", env={"TRAKET_DB": "", "TRAKET_WRITE_KEY": ""})
    custom = run(
        "serve",
        "--db",
        "x.db",
        "--port",
        "9000",
        "--host",
        "0.0.0.0",
        "--write-key",
        "k",
    )

    assert calls == [
        (Path("traket.sqlite3"), "127.0.0.1", 8787, "local-dev-key"),
        (Path("x.db"), "0.0.0.0", 9000, "k"),
    ]
    assert "http://127.0.0.1:9999" in default.output
    assert custom.exit_code == 0


def test_an_empty_database_gives_an_empty_report(tmp_path: Path) -> None:
    db = tmp_path / "empty.sqlite3"
    EventStore(db).close()

    table = run("report", "--db", str(db))
    html = run("report", "--db", str(db), "--format", "html")
    data = json.loads(run("report", "--db", str(db), "--format", "json").output)

    assert table.exit_code == 0
    assert "0 events" in table.output
    assert html.output.startswith("<!DOCTYPE html>")
    assert (data["totals"]["events"], data["totals"]["cost"]) == (0, "0")
    assert data["days"] == []
