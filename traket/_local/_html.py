"""Render the margins report as one self-contained HTML file that opens offline.

Tables are plain HTML; the two charts are drawn as inline SVG by a small inline
script from the report's JSON, embedded in the page. Nothing is fetched from a
network: no CDN, no fonts, no images.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from html import escape

from traket._local._render import (
    customer_cells,
    days_title,
    group_cells,
    left_out,
    money,
    percent,
    report_to_dict,
)
from traket._local._report import Report, Tally

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;
color:#1d2433;background:#fff}
h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.1rem;margin:2rem 0 .5rem}
.meta{color:#5b6478}.warn{color:#9a5b00}
table{border-collapse:collapse;margin:.25rem 0 1rem;min-width:24rem}
th,td{padding:.3rem .7rem;border-bottom:1px solid #e3e6ee;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:2rem}
.chart{border:1px solid #e3e6ee;border-radius:6px;padding:.75rem}
.chart svg text{font-size:11px;fill:#3c4458}
.bar-cost{fill:#3a6fd8}.bar-revenue{fill:#2f9e6b}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem}
"""

# Draws both charts from the JSON island. Values stay exact strings until scaled;
# the labels are the tables' own, formatted in Python (`labels` in the island).
_SCRIPT = r"""
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var data = JSON.parse(document.getElementById("traket-data").textContent);
  function el(name, attrs, text) {
    var node = document.createElementNS(NS, name);
    for (var key in attrs) { node.setAttribute(key, attrs[key]); }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  // A stored amount past a double's range must scale as the largest, not as NaN.
  function num(text) {
    var value = Number(text);
    return isFinite(value) ? value : (value > 0 ? Number.MAX_VALUE : 0);
  }
  function costByDay(host) {
    var days = data.days, w = 640, h = 240, top = 20, bottom = 40, left = 10;
    var svg = el("svg", {width: w, height: h, viewBox: "0 0 " + w + " " + h,
                         role: "img", "aria-label": "Cost by day"});
    var max = Math.max.apply(null, days.map(function (d) { return num(d.cost); })
                                       .concat([0]));
    var slot = days.length ? (w - 2 * left) / days.length : 0;
    // Days over more than one year keep their year: "08-01" would be ambiguous.
    var years = days.length > 0 &&
      days[0].day.slice(0, 4) !== days[days.length - 1].day.slice(0, 4);
    days.forEach(function (d, i) {
      var value = d.cost === null ? 0 : num(d.cost);
      var label = d.cost === null ? "not priced" : data.labels.days[i];
      var height = max > 0 ? (h - top - bottom) * (value / max) : 0;
      var x = left + i * slot, y = h - bottom - height;
      var bar = el("rect", {"class": "bar bar-cost", x: x + slot * 0.1, y: y,
                            width: Math.max(slot * 0.8, 1), height: height,
                            "data-day": d.day,
                            "data-cost": d.cost === null ? "" : d.cost});
      bar.appendChild(el("title", {}, d.day + ": " + label));
      svg.appendChild(bar);
      svg.appendChild(el("text", {"class": "value", x: x + slot / 2, y: y - 4,
                                  "text-anchor": "middle"}, label));
      svg.appendChild(el("text", {"class": "label", x: x + slot / 2, y: h - bottom + 14,
                                  "text-anchor": "middle"},
                             years ? d.day : d.day.slice(5)));
    });
    host.appendChild(svg);
  }
  function customers(host) {
    var rows = data.customers, w = 640, rowH = 34, left = 150, right = 90;
    var h = Math.max(rows.length * rowH + 10, 40);
    var svg = el("svg", {width: w, height: h, viewBox: "0 0 " + w + " " + h,
                         role: "img", "aria-label": "Customers by cost and revenue"});
    var max = 0;
    rows.forEach(function (r) {
      max = Math.max(max, num(r.cost), r.revenue === null ? 0 : num(r.revenue));
    });
    var scale = max > 0 ? (w - left - right) / max : 0;
    rows.forEach(function (r, i) {
      var y = 5 + i * rowH, name = r.customer === null ? "(unattributed)" : r.customer;
      svg.appendChild(el("text", {"class": "label", x: left - 8, y: y + 16,
                                  "text-anchor": "end"}, name));
      var shown = data.labels.customers[i];
      var series = [["cost", r.cost, 0, shown.cost]];
      if (data.hasRevenue) { series.push(["revenue", r.revenue, 14, shown.revenue]); }
      series.forEach(function (s) {
        if (s[1] === null) { return; }
        // A cost far below the largest revenue still shows as a sliver.
        var width = num(s[1]) > 0 ? Math.max(num(s[1]) * scale, 2) : 0;
        var bar = el("rect", {"class": "bar bar-" + s[0], x: left, y: y + s[2],
                              width: width, height: 12, "data-customer": name,
                              "data-series": s[0], "data-value": s[1]});
        bar.appendChild(el("title", {}, name + " " + s[0] + ": " + s[3]));
        svg.appendChild(bar);
        svg.appendChild(el("text", {"class": "value", x: left + width + 4,
                                    y: y + s[2] + 10}, s[3]));
      });
    });
    host.appendChild(svg);
  }
  [["chart-cost-by-day", costByDay], ["chart-customers", customers]].forEach(
    function (pair) {
      var host = document.getElementById(pair[0]);
      try { pair[1](host); host.setAttribute("data-rendered", "true"); }
      catch (err) { host.setAttribute("data-error", String(err)); }
    });
})();
"""


def render_html(report: Report) -> str:
    """Return the report as a single HTML document with inline CSS, data and script."""
    cur = report.currency
    island = report_to_dict(report)
    island["labels"] = {
        "days": [money(tally.known_cost, currency=cur) for _, tally in report.days],
        "customers": [
            {
                "cost": money(row.tally.known_cost, currency=cur),
                "revenue": money(row.revenue, 2, cur),
            }
            for row in report.customers
        ],
    }
    data = json.dumps(island, separators=(",", ":"))
    # Keep `</script>` and line separators inside the JSON from ending the island.
    data = data.replace("<", "\\u003c").replace("\u2028", "\\u2028")
    total = report.total
    unpriced = ""
    if not total.complete:
        unpriced = f' <span class="warn">Not included: {left_out(total)}.</span>'

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>Traket margins report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Traket margins report</h1>",
        f'<p class="meta">{escape(report.filters.describe())} &middot; generated '
        f"{escape(report.generated_at.isoformat())} &middot; {total.events} events"
        f' &middot; cost <strong id="total-cost">'
        f"{escape(money(total.known_cost, currency=cur))}</strong>.{unpriced}</p>",
        '<div class="charts">',
        '<figure class="chart"><figcaption>Cost over time, by day'
        + ("" if report.every_day else " (days with events only)")
        + "</figcaption>",
        '<div id="chart-cost-by-day"></div></figure>',
        '<figure class="chart"><figcaption>Customers by cost'
        + (" against revenue" if report.has_revenue else "")
        + '</figcaption><div class="legend"><span class="bar-cost" '
        'style="background:#3a6fd8"></span>cost'
        + (
            '<span style="background:#2f9e6b"></span>revenue'
            if report.has_revenue
            else ""
        )
        + '</div><div id="chart-customers"></div></figure>',
        "</div>",
        "<noscript>The charts need JavaScript; the tables below do not.</noscript>",
        _customers(report),
        _groups("Cost per feature", ["feature"], report.features, cur),
        _groups(
            "Cost per customer &times; feature",
            ["customer", "feature"],
            [((c, f), t) for c, f, t in report.customer_features],
            cur,
        ),
        _groups(
            "Cost by model",
            ["requested", "served"],
            [((r, s), t) for r, s, t in report.models],
            cur,
        ),
        _groups(
            escape(days_title(report)),
            ["day"],
            [(d.isoformat(), t) for d, t in report.days],
            cur,
        ),
        _tokens(report),
        _quality(report),
        f'<script type="application/json" id="traket-data">{data}</script>',
        f"<script>{_SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _table(
    title: str, headers: Sequence[str], rows: Iterable[Sequence[str]], table_id: str
) -> str:
    head = "".join(
        f'<th class="n">{h[1:]}</th>' if h.startswith("#") else f"<th>{h}</th>"
        for h in headers
    )
    numeric = [h.startswith("#") for h in headers]
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{escape(c)}</td>' if n else f"<td>{escape(c)}</td>"
            for c, n in zip(row, numeric, strict=True)
        )
        + "</tr>"
        for row in rows
    )
    return (
        f'<h2>{title}</h2><table id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _customers(report: Report) -> str:
    headers = ["customer", "#events", "#cost"]
    if report.has_revenue:
        headers += ["#revenue", "#margin", "#margin %"]
    headers.append("#not priced")
    rows = [customer_cells(report, row) for row in report.customers]
    title = (
        "Margin per customer, least profitable first"
        if report.has_revenue
        else "Cost per customer"
    )
    return _table(title, headers, rows, "customers")


def _groups(
    title: str,
    keys: Sequence[str],
    groups: Sequence[tuple[object, Tally]],
    currency: str,
) -> str:
    headers = [
        *keys,
        "#events",
        "#input tokens",
        "#output tokens",
        "#cost",
        "#not priced",
    ]
    rows = [
        group_cells(key if isinstance(key, tuple) else (key,), tally, currency)
        for key, tally in groups
    ]
    table_id = "by-" + "-".join(keys)
    return _table(title, headers, rows, table_id)


def _tokens(report: Report) -> str:
    tokens = report.tokens
    rate = tokens.cache_hit_rate
    rows = [
        ["input, uncached", f"{tokens.uncached_input:,}"],
        ["input, cached", f"{tokens.cached_input:,}"],
        ["input, cache writes", f"{tokens.cache_write:,}"],
        ["output (reasoning included)", f"{tokens.output:,}"],
        ["of which reasoning", f"{tokens.reasoning:,}"],
        ["total", f"{tokens.total:,}"],
        ["cache hit rate", percent(rate * 100 if rate is not None else None)],
        ["saved by caching", money(tokens.cache_savings, currency=report.currency)],
    ]
    return _table("Tokens by type", ["type", "#value"], rows, "tokens")


def _quality(report: Report) -> str:
    quality = report.quality
    rows = [
        ["unpriced", f"{model}: {reason}", str(count)]
        for model, reason, count in quality.unpriced
    ] or [["unpriced", "none", "0"]]
    statuses = ", ".join(
        f"{s}: {n}" for s, n in quality.missing_usage_by_status.items()
    )
    rows.append(["no usage reported", statuses or "none", str(quality.missing_usage)])
    rows += [["cost source", s, str(n)] for s, n in quality.cost_sources.items()]
    rows += [["price version", v, str(n)] for v, n in quality.price_versions.items()]
    if quality.customers_without_revenue:
        rows.append(
            ["no revenue given", ", ".join(quality.customers_without_revenue), ""]
        )
    return _table("Data quality", ["check", "detail", "#events"], rows, "quality")
