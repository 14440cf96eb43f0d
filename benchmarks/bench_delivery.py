"""Compare traket's delivery with its peers: track() latency, throughput, memory.

Run on demand, never from the test suite:

    .venv/bin/python benchmarks/bench_delivery.py --setup-peers   # once
    .venv/bin/python benchmarks/bench_delivery.py [--quick] [--json out.json]

Contenders: the working tree's `traket` (the reference), the published
`traket-sdk` 0.1.0, `posthog`'s client and OpenTelemetry's `BatchSpanProcessor`
with its OTLP/HTTP exporter. The peers live in their own venv
(`benchmarks/.venv-peers`, git-ignored), since 0.1.0 imports as `traket` too. Each
(contender, phase) runs in a fresh subprocess (`_delivery_runner.py`) against
small asyncio ingests on 127.0.0.1 served from this process
(`_delivery_ingest.py`): one fast, one that answers each request after 50 ms, one
that never answers. The table gives each peer's figure and its ratio to traket's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _delivery_ingest import Ingests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUNNER = HERE / "_delivery_runner.py"
PEERS_VENV = HERE / ".venv-peers"
PEER_PACKAGES = (
    "traket-sdk==0.1.0",
    "posthog==7.91.1",
    "opentelemetry-sdk==1.45.2",
    "opentelemetry-exporter-otlp-proto-http==1.45.2",
)
CONTENDERS = ("traket", "traket-0.1.0", "posthog", "otel-bsp")
PHASE_TIMEOUT = 120.0


@dataclass(frozen=True)
class Budget:
    """How much each phase may do; every loop stops at a count or a deadline."""

    latency_events: int
    latency_seconds: float
    latency_rate: int
    throughput_events: int
    throughput_seconds: float
    memory_events: int


FULL = Budget(
    latency_events=20_000,
    latency_seconds=4.0,
    latency_rate=5_000,
    throughput_events=200_000,
    throughput_seconds=8.0,
    memory_events=10_000,
)
QUICK = Budget(
    latency_events=3_000,
    latency_seconds=0.6,
    latency_rate=5_000,
    throughput_events=40_000,
    throughput_seconds=1.0,
    memory_events=3_000,
)


@dataclass(frozen=True)
class Phase:
    """One subprocess run: a key for the table and the runner's spec."""

    key: str
    spec: dict[str, Any]


def phases(budget: Budget, urls: dict[str, str]) -> Iterator[Phase]:
    """Yield every measurement of one contender, in table order."""
    for ingest in ("fast", "distant"):
        for threads in (1, 8):
            yield Phase(
                f"latency/{ingest}/{threads}",
                {
                    "phase": "latency",
                    "url": urls[ingest],
                    "threads": threads,
                    "rate": budget.latency_rate,
                    "events": budget.latency_events,
                    "seconds": budget.latency_seconds,
                },
            )
    for ingest in ("fast", "distant"):
        yield Phase(
            f"throughput/{ingest}",
            {
                "phase": "throughput",
                "url": urls[ingest],
                "events": budget.throughput_events,
                "seconds": budget.throughput_seconds,
            },
        )
    yield Phase(
        "memory",
        {"phase": "memory", "url": urls["blackhole"], "events": budget.memory_events},
    )


def setup_peers(python: str) -> None:
    """Create `benchmarks/.venv-peers` and install the pinned peers from PyPI."""
    subprocess.run([python, "-m", "venv", str(PEERS_VENV)], check=True)
    pip = [str(PEERS_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, *PEER_PACKAGES], check=True)


def _child_env(contender: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["OTEL_SDK_DISABLED"] = "false"
    if contender == "traket":
        env["PYTHONPATH"] = str(ROOT)  # the working tree, installed or not
    return env


def run_phase(python: str, contender: str, phase: Phase) -> dict[str, Any]:
    """Run one phase in a fresh interpreter and return its JSON result."""
    spec = {**phase.spec, "contender": contender}
    try:
        done = subprocess.run(
            [python, str(RUNNER), json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=PHASE_TIMEOUT,
            env=_child_env(contender),
            cwd=HERE,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {PHASE_TIMEOUT:.0f} s"}

    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-3:]
        return {"error": f"exit {done.returncode}: {' | '.join(tail)}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _check_module(contender: str, result: dict[str, Any]) -> None:
    """Fail loudly if a contender imported the wrong `traket`."""
    module = result.get("module", "")
    ours = module.startswith(str(ROOT / "traket"))
    if contender == "traket" and not ours:
        raise SystemExit(f"traket run imported {module}, not the working tree")
    if contender == "traket-0.1.0" and (ours or "site-packages" not in module):
        raise SystemExit(f"traket 0.1.0 run imported {module}")


# -- the table ------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the table: where its figure comes from and how to judge it."""

    label: str
    key: str
    field: str
    unit: str
    goal: float | None = None
    higher_is_better: bool = False


ROWS = [
    *(
        Row(
            f"track() {q}, {ingest} ingest, {threads} thr",
            f"latency/{ingest}/{threads}",
            f"{q}_us",
            "us",
            goal,
        )
        for ingest in ("fast", "distant")
        for threads in (1, 8)
        for q, goal in (("p50", 5.0), ("p99", 30.0), ("p999", None))
    ),
    Row("delivered/s, loopback", "throughput/fast", "events_per_s", "/s", 50_000, True),
    Row("  track() calls/s", "throughput/fast", "track_per_s", "/s"),
    Row("  undelivered of tracked", "throughput/fast", "undelivered", ""),
    Row(
        "delivered/s, 50 ms ingest",
        "throughput/distant",
        "events_per_s",
        "/s",
        10_000,
        True,
    ),
    Row("  track() calls/s", "throughput/distant", "track_per_s", "/s"),
    Row("  undelivered of tracked", "throughput/distant", "undelivered", ""),
    Row("bytes per queued event", "memory", "bytes_per_event", "B", 700),
    Row("  right after the burst", "memory", "bytes_per_event_at_once", "B"),
]


def _number(value: float, unit: str) -> str:
    if unit == "us":
        if value >= 1000:
            return f"{value / 1000:.1f} ms"
        return f"{value:.1f} us" if value < 100 else f"{value:.0f} us"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "B":
        return f"{value:,.0f} B"
    return f"{value:,.0f}"


Results = dict[str, dict[str, Any]]  # phase key -> the runner's result


def _value(results: Results, row: Row) -> float | None:
    value = results.get(row.key, {}).get(row.field)
    return float(value) if isinstance(value, (int, float)) else None


def _cell(results: Results, reference: Results | None, row: Row) -> str:
    if "error" in results.get(row.key, {}):
        return "error"
    value = _value(results, row)
    if value is None:
        return "-"
    text = _number(value, row.unit)
    base = _value(reference, row) if reference is not None else None
    if row.unit and base:
        ratio = value / base
        text += f" ({ratio:.0f}x)" if ratio >= 10 else f" ({ratio:.2g}x)"
    return text


def _verdict(reference: Results, row: Row) -> str:
    value = _value(reference, row)
    if row.goal is None or value is None:
        return ""
    met = value >= row.goal if row.higher_is_better else value < row.goal
    return "met" if met else "MISSED"


def _goal(row: Row) -> str:
    if row.goal is None:
        return ""
    sign = ">=" if row.higher_is_better else "<"
    return f"{sign} {_number(row.goal, row.unit)}"


def render(all_results: dict[str, Results]) -> str:
    """Return the comparison table; peers' cells carry their ratio to traket."""
    names = [name for name in CONTENDERS if name in all_results]
    reference = all_results.get("traket", {})

    header = ["metric", "goal", *names, "traket vs goal"]
    rows = [header]
    for row in ROWS:
        cells = [
            _cell(all_results[name], None if name == "traket" else reference, row)
            for name in names
        ]
        rows.append([row.label, _goal(row), *cells, _verdict(reference, row)])

    widths = [max(len(line[i]) for line in rows) for i in range(len(header))]
    rendered = []
    for index, line in enumerate(rows):
        rendered.append(
            "  ".join(
                cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i])
                for i, cell in enumerate(line)
            ).rstrip()
        )
        if index == 0:
            rendered.append("  ".join("-" * width for width in widths))
    return "\n".join(rendered)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~30 s run")
    parser.add_argument(
        "--only",
        default=",".join(CONTENDERS),
        help=f"comma-separated contenders (default: {','.join(CONTENDERS)})",
    )
    parser.add_argument(
        "--peers-python",
        default=str(PEERS_VENV / "bin" / "python"),
        help="interpreter of a venv holding the peers (default: %(default)s)",
    )
    parser.add_argument(
        "--setup-peers",
        action="store_true",
        help="create benchmarks/.venv-peers and pip install the peers first",
    )
    parser.add_argument("--json", type=Path, help="also write raw results here")
    args = parser.parse_args(argv)

    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(CONTENDERS))
    if unknown:
        parser.error(f"--only: unknown contender(s) {', '.join(unknown)}")
    if args.setup_peers:
        setup_peers(sys.executable)
    peers_wanted = any(name != "traket" for name in chosen)
    if peers_wanted and not Path(args.peers_python).exists():
        parser.error(
            f"no peers venv at {args.peers_python}; run with --setup-peers, or: "
            f"python -m venv {PEERS_VENV} && {PEERS_VENV}/bin/pip install "
            + " ".join(PEER_PACKAGES)
        )

    budget = QUICK if args.quick else FULL
    ingests = Ingests(distant_delay=0.05).start()
    all_results: dict[str, Results] = {name: {} for name in chosen}
    started = time.monotonic()
    try:
        # Phase by phase, every contender in turn: a change in the machine's load
        # then falls on all of them rather than on whoever ran last.
        for phase in phases(budget, ingests.urls()):
            for name in chosen:
                python = sys.executable if name == "traket" else args.peers_python
                began = time.monotonic()
                result = run_phase(python, name, phase)
                if "module" in result:
                    _check_module(name, result)
                all_results[name][phase.key] = result
                _progress(
                    f"{phase.key:20s} {name:13s} {time.monotonic() - began:5.1f} s"
                    + (f"  {result['error']}" if "error" in result else "")
                )
    finally:
        ingests.stop()

    print(render(all_results))
    print(_footnote(budget, time.monotonic() - started))
    if args.json:
        args.json.write_text(json.dumps(all_results, indent=2) + "\n")
    return 0


def _footnote(budget: Budget, seconds: float) -> str:
    return (
        f"\nlatency: {budget.latency_rate:,} events/s paced across the threads, up to "
        f"{budget.latency_events:,} calls or {budget.latency_seconds:g} s; "
        f"throughput: one thread tracking as fast as it can, up to "
        f"{budget.throughput_events:,} events or {budget.throughput_seconds:g} s, "
        f"then flush; memory: tracemalloc growth over {budget.memory_events:,} "
        "events queued behind an ingest that never answers, 3 s after the burst "
        "(and right after it). Peers show "
        "(value / traket's). Every queue bound at 20,000 events. "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {seconds:.0f} s."
    )


if __name__ == "__main__":
    raise SystemExit(main())
