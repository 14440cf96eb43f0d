"""The cost-by-day chart in a real browser, for days years apart and absurd costs.

Uses the headless Chromium helpers of `test_report_browser.py`; skipped without it.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import report_dataset
from test_report_browser import Charts, rendered_dom

from traket._local._html import render_html
from traket._local._report import build_report
from traket._pricing import CostEngine

pytestmark = pytest.mark.browser


def drawn(tmp_path: Path, events: list[dict[str, object]]) -> Charts:
    report = build_report(events, engine=CostEngine(), revenue={"acme": Decimal(10)})
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    parser = Charts()
    parser.feed(rendered_dom(page, tmp_path))
    return parser


def test_days_years_apart_draw_one_bar_each_labelled_with_the_year(
    tmp_path: Path,
) -> None:
    events = [
        report_dataset.events()[0] | {"occurredAt": "0205-03-01T12:00:00Z"},
        report_dataset.events()[1] | {"occurredAt": "2026-01-01T12:00:00Z"},
    ]

    charts = drawn(tmp_path, events)

    assert charts.charts["chart-cost-by-day"].get("data-rendered") == "true"
    days = [bar["data-day"] for bar in charts.bars["chart-cost-by-day"]]
    assert days == ["0205-03-01", "2026-01-01"]
    assert "0205-03-01" in charts.labels["chart-cost-by-day"]


def test_an_absurd_cost_still_draws_both_charts_to_scale(tmp_path: Path) -> None:
    huge = {"amount": 1e308, "currency": "usd", "source": "caller"}
    events = [
        report_dataset.events()[0] | {"cost": huge},
        report_dataset.events()[1] | {"cost": huge},  # sums past a double's range
    ]

    charts = drawn(tmp_path, events)

    for name in ("chart-cost-by-day", "chart-customers"):
        assert charts.charts[name].get("data-rendered") == "true", charts.charts[name]
        for bar in charts.bars[name]:
            size = bar.get("height") if name == "chart-cost-by-day" else bar["width"]
            assert size not in (None, "NaN", "Infinity"), bar
