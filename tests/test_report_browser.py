"""Open the HTML report in real headless Chromium and read the charts it drew.

The charts are drawn by the page's inline script, so these tests see what a
browser renders, not what Python wrote. Needs Debian's `chromium` package; skipped
without it, except on CI (`CI=true`), where its absence fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest
import report_dataset

from traket._local._html import render_html
from traket._local._report import build_report
from traket._pricing import CostEngine

pytestmark = pytest.mark.browser

_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser() -> str:
    for name in _BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but no Chromium found: apt-get install -y chromium")
    pytest.skip("Chromium is not installed (apt-get install -y chromium)")


def rendered_dom(page: Path, tmp_path: Path) -> str:
    """Return the DOM after the page's scripts ran, as Chromium serializes it."""
    done = subprocess.run(
        [
            browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


class Charts(HTMLParser):
    """Collect each chart's attributes and its SVG bars and labels."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, dict[str, str | None]] = {}
        self.bars: dict[str, list[dict[str, str | None]]] = {}
        self.labels: dict[str, list[str]] = {}
        self._chart: str | None = None
        self._depth = 0
        self._in_text = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "div" and (found.get("id") or "").startswith("chart-"):
            self._chart = str(found["id"])
            self._depth = 0
            self.charts[self._chart] = found
            self.bars[self._chart] = []
            self.labels[self._chart] = []
        elif self._chart is not None:
            if tag == "div":
                self._depth += 1
            elif tag == "rect":
                self.bars[self._chart].append(found)
            elif tag == "text":
                self._in_text = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "text":
            self._in_text = False
        elif tag == "div" and self._chart is not None:
            if self._depth == 0:
                self._chart = None
            else:
                self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._in_text and self._chart is not None:
            self.labels[self._chart].append(data)


@pytest.fixture(scope="module")
def charts(tmp_path_factory: pytest.TempPathFactory) -> Charts:
    tmp_path = tmp_path_factory.mktemp("browser")
    report = build_report(
        report_dataset.events(), engine=CostEngine(), revenue=report_dataset.REVENUE
    )
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")

    parser = Charts()
    parser.feed(rendered_dom(page, tmp_path))
    return parser


def test_both_charts_render_without_errors(charts: Charts) -> None:
    for name in ("chart-cost-by-day", "chart-customers"):
        assert charts.charts[name].get("data-rendered") == "true", charts.charts[name]
        assert "data-error" not in charts.charts[name]


def test_cost_by_day_draws_one_bar_per_day_with_the_right_amounts(
    charts: Charts,
) -> None:
    bars = charts.bars["chart-cost-by-day"]

    assert [(b["data-day"], b["data-cost"]) for b in bars] == [
        ("2025-08-01", "0.50336"),
        ("2025-08-02", "0.062775"),
        ("2025-08-03", "0.016"),
    ]
    # Heights are proportional to cost: the tallest day fills the 180px plot.
    heights = [Decimal(str(b["height"])) for b in bars]
    assert heights[0] == 180
    for bar, height in zip(bars, heights, strict=True):
        expected = Decimal(str(bar["data-cost"])) / Decimal("0.50336") * 180
        assert abs(height - expected) < Decimal("0.01")
    assert "$0.5034" in charts.labels["chart-cost-by-day"]
    assert "$0.0628" in charts.labels["chart-cost-by-day"]


def test_customers_chart_sets_cost_against_revenue(charts: Charts) -> None:
    drawn = charts.bars["chart-customers"]
    bars = {(b["data-customer"], b["data-series"]): b for b in drawn}

    assert bars["acme", "cost"]["data-value"] == "0.06486"
    assert bars["acme", "revenue"]["data-value"] == "0.05"
    assert bars["globex", "cost"]["data-value"] == "0.5"
    assert bars["globex", "revenue"]["data-value"] == "10"
    assert bars["umbrella", "revenue"]["data-value"] == "5"
    assert ("(unattributed)", "revenue") not in bars
    # Widths share one scale: globex's $10 revenue is the widest bar.
    widest = max(bars.values(), key=lambda b: Decimal(str(b["width"])))
    assert (widest["data-customer"], widest["data-series"]) == ("globex", "revenue")
    ratio = Decimal(str(bars["globex", "cost"]["width"])) / Decimal(
        str(widest["width"])
    )
    assert abs(ratio - Decimal("0.05")) < Decimal("0.0001")  # 0.5 / 10
    assert "$10.00" in charts.labels["chart-customers"]
    # The labels are the tables' own: two significant digits for small costs
    # (0.00075 for the unattributed events), never a rounded "$0.0008" or "$0.00".
    assert "$0.00075" in charts.labels["chart-customers"]
    # ... and a cost that small next to $10 still draws a visible bar.
    tiny = bars["(unattributed)", "cost"]
    assert (tiny["data-value"], Decimal(str(tiny["width"]))) == ("0.00075", 2)
    assert "acme" in charts.labels["chart-customers"]
