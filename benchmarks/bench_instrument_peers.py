"""Measure what OpenAI instrumentation adds to a call and to each streamed chunk.

Side by side, in one run, against the local replay server on 127.0.0.1:

- `bare`: the `openai` client, uninstrumented (one per venv: the baseline);
- `traket`: `traket.instrument()`, events going to an in-memory transport;
- `openllmetry`: `opentelemetry-instrumentation-openai` with an OTel SDK
  `TracerProvider`, a `BatchSpanProcessor` and an in-memory span exporter;
- `langfuse`: `langfuse.openai` with a Langfuse client whose spans go to an
  in-memory exporter and whose API host is a local sink.

Scenarios: one non-streamed `responses.create` and `chat.completions.create`;
a chat and a Responses stream of 1,000 chunks, end to end; and the same streams
with the wire taken out (pre-parsed chunks, iteration only), which resolves the
per-chunk cost below 1 µs. Times are reported on the wall clock and as CPU time
of the contender's process.

Each contender runs in its own process (they all patch the same client). The
replay server runs here, in the parent, so the clients measured share no
interpreter with it. The contenders take turns in rounds, in a rotating order,
so that a slow moment of the machine falls on all of them alike.

Run on demand, never in the test suite:

    .venv/bin/python benchmarks/bench_instrument_peers.py --install-peers  # once
    .venv/bin/python benchmarks/bench_instrument_peers.py          # a few minutes
    .venv/bin/python benchmarks/bench_instrument_peers.py --quick  # about 30 s
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from examples.replay import Recording, ReplayServer, load_recordings  # noqa: E402

WORKER = HERE / "_instrument_worker.py"
PEERS_VENV = HERE / ".venv-peers-instrument"
PEERS_REQUIREMENTS = HERE / "requirements-peers-instrument.txt"
PROJECT_PYTHON = Path(sys.executable)

# Goals from issue 3, item 7.
GOAL_CALL_PERCENT = 2.0
GOAL_CHUNK_US = 1.0

CALL_SCENARIOS = ("responses", "chat")
STREAM_SCENARIOS = ("chat_stream", "responses_stream")
MEMORY_SCENARIOS = ("chat_stream_memory", "responses_stream_memory")
LABELS = {
    "responses": "responses.create",
    "chat": "chat.completions.create",
    "chat_stream": "chat.completions.create(stream=True), end to end",
    "responses_stream": "responses.create(stream=True), end to end",
    "chat_stream_memory": "chat stream, iteration over pre-parsed chunks",
    "responses_stream_memory": "responses stream, iteration over pre-parsed events",
}
# Items before and after the repeated middle of each stream (see `_collect`).
MEMORY_SHAPE = {
    "chat_stream_memory": ("chat_stream", 1, 2),
    "responses_stream_memory": ("responses_stream", 4, 4),
}


@dataclass(frozen=True)
class Contender:
    name: str
    venv: str  # "project" or "peers": the bare client of the same venv is its base
    python: Path


@dataclass
class Samples:
    """Every timing of one contender in one scenario, and the per-round medians."""

    ns: list[int] = field(default_factory=list)
    cpu: list[int] = field(default_factory=list)
    rounds: list[float] = field(default_factory=list)
    cpu_rounds: list[float] = field(default_factory=list)
    chunks: int = 0


# -- the recordings ---------------------------------------------------------------


def _sse(events: Sequence[tuple[str | None, dict[str, Any] | str]]) -> str:
    parts = []
    for name, data in events:
        payload = data if isinstance(data, str) else json.dumps(data)
        head = f"event: {name}\n" if name else ""
        parts.append(f"{head}data: {payload}\n\n")
    return "".join(parts)


def _sse_events(body: str) -> list[tuple[str | None, dict[str, Any] | str]]:
    events: list[tuple[str | None, dict[str, Any] | str]] = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        name, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data = line[len("data: ") :]
        if data is not None:
            events.append((name, data if data == "[DONE]" else json.loads(data)))
    return events


def long_chat_stream(template: Recording, chunks: int) -> Recording:
    """Stretch a recorded chat stream to `chunks` content chunks, same format."""
    events = _sse_events(template.body)
    datas = [d for _, d in events if isinstance(d, dict)]
    first = datas[0]
    content = next(d for d in datas[1:] if d["choices"] and d["choices"][0]["delta"])
    tail = [d for d in datas if not d["choices"] or d["choices"][0]["finish_reason"]]
    body: list[tuple[str | None, dict[str, Any] | str]] = [(None, first)]
    for index in range(chunks):
        chunk = json.loads(json.dumps(content))
        chunk["choices"][0]["delta"]["content"] = f" word{index}"
        body.append((None, chunk))
    body.extend((None, d) for d in tail)
    body.append((None, "[DONE]"))
    return replace(template, name=f"{template.name}_x{chunks}", body=_sse(body))


def long_responses_stream(template: Recording, chunks: int) -> Recording:
    """Stretch a recorded Responses stream to `chunks` text deltas, same format."""
    events = _sse_events(template.body)
    delta = next(e for e in events if e[0] == "response.output_text.delta")
    head = events[: events.index(delta)]
    tail = [e for e in events if e[0] and not e[0].endswith(".delta")][len(head) :]
    body = list(head)
    for index in range(chunks):
        data = json.loads(json.dumps(delta[1]))
        data["delta"] = f" word{index}"
        body.append((delta[0], data))
    body.extend(tail)
    for number, (_, data) in enumerate(body):
        if isinstance(data, dict):
            data["sequence_number"] = number
    return replace(template, name=f"{template.name}_x{chunks}", body=_sse(body))


def recordings(chunks: int) -> dict[str, Recording]:
    by_name = {r.name: r for r in load_recordings(ROOT / "examples" / "recordings")}
    return {
        "chat_stream_short": by_name["chat_stream_include_usage_gpt4o_mini"],
        "responses_stream_short": by_name["responses_stream_gpt41_nano"],
        "responses": by_name["responses_basic_gpt41_mini"],
        "chat": by_name["chat_basic_gpt4o_mini"],
        "chat_stream": long_chat_stream(
            by_name["chat_stream_include_usage_gpt4o_mini"], chunks
        ),
        "responses_stream": long_responses_stream(
            by_name["responses_stream_gpt41_nano"], chunks
        ),
    }


class FreshIdReplayServer(ReplayServer):
    """The replay server, answering each request with a new response id.

    A real API never repeats an id; OpenLLMetry keys state by response id and
    takes another (failing) path when one repeats, so the replay must not.
    """

    _template: Recording | None = None
    _template_id = ""
    _served = 0

    def respond_with(self, recording: Recording) -> None:
        match = re.search(r'"id":\s*"([^"]+)"', recording.body)
        self._template = recording
        self._template_id = match.group(1) if match else ""
        super().respond_with(recording)

    def _app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        template = self._template
        if template is not None and self._template_id:
            self._served += 1
            fresh = f"{self._template_id[:-8]}{self._served:08x}"
            body = template.body.replace(self._template_id, fresh)
            super().respond_with(replace(template, body=body))
        return super()._app(environ, start_response)


# -- a sink for anything a peer sends to its "backend" ------------------------------


class _Sink(ThreadingHTTPServer):
    daemon_threads = True
    hits = 0


class _SinkHandler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        assert isinstance(self.server, _Sink)
        self.server.hits += 1
        body = b"{}"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


# -- the contenders' processes ------------------------------------------------------


class Worker:
    """One contender's process, driven one JSON line at a time."""

    def __init__(self, contender: Contender, config: dict[str, Any]) -> None:
        self.contender = contender
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT)
        env.setdefault("TRACELOOP_TELEMETRY", "false")
        self.process = subprocess.Popen(
            [str(contender.python), str(WORKER), contender.name, json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if not config.get("verbose") else None,
            text=True,
            cwd=str(ROOT),
            env=env,
        )
        self.versions: dict[str, str] = {}

    @property
    def key(self) -> str:
        return f"{self.contender.name}@{self.contender.venv}"

    def wait_ready(self) -> None:
        """Wait for the contender to be installed (workers start in parallel)."""
        self.versions = self._read()["versions"]

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(f"{self.contender.name} worker exited ({code})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.contender.name}: {answer['error']}")
        return answer

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, RuntimeError, ValueError):
            self.ask(op="quit")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def peers_python() -> Path | None:
    python = PEERS_VENV / "bin" / "python"
    return python if python.exists() else None


def install_peers() -> None:
    """Create the peers' venv and install the pinned peers into it (PyPI)."""
    subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    pip = [str(PEERS_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "-r", str(PEERS_REQUIREMENTS)], check=True)


# -- measuring ---------------------------------------------------------------------


def measure(
    workers: list[Worker],
    server: ReplayServer,
    recording: Recording,
    scenario: str,
    rounds: int,
    per_round: int,
    warmup: int,
) -> dict[str, Samples]:
    """Time `scenario` on every worker, in rounds, rotating who goes first."""
    server.respond_with(recording)
    for worker in workers:
        worker.ask(op="run", scenario=scenario, n=warmup)

    results = {worker.key: Samples() for worker in workers}
    for number in range(rounds):
        shift = number % len(workers)
        for worker in workers[shift:] + workers[:shift]:
            answer = worker.ask(op="run", scenario=scenario, n=per_round)
            samples = results[worker.key]
            samples.ns.extend(answer["ns"])
            samples.cpu.extend(answer["cpu"])
            samples.rounds.append(statistics.median(answer["ns"]))
            samples.cpu_rounds.append(statistics.median(answer["cpu"]))
            samples.chunks = answer["chunks"]
    return results


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Row:
    """One contender's numbers in one scenario, against its venv's bare client.

    `added_*` are differences of the contender's and the bare client's statistic
    (wall clock, or CPU time of the whole client process, background threads
    included). `spread_us` is half the interquartile range of the per-round
    paired differences of medians: a rough ± for `added_median_us`.
    """

    key: str
    median_us: float
    p99_us: float
    added_median_us: float
    added_p99_us: float
    added_percent: float
    spread_us: float
    cpu_median_us: float
    added_cpu_us: float
    added_cpu_percent: float
    chunks: int

    def per_chunk(self, cpu: bool = False) -> float:
        added = self.added_cpu_us if cpu else self.added_median_us
        return added / self.chunks if self.chunks else 0.0


def _half_iqr(values: Sequence[float]) -> float:
    return (quantile(values, 0.75) - quantile(values, 0.25)) / 2


def summarize(results: dict[str, Samples]) -> list[Row]:
    rows = []
    for key, samples in results.items():
        base = results["bare@" + key.split("@")[1]]
        median = statistics.median(samples.ns) / 1000
        base_median = statistics.median(base.ns) / 1000
        cpu = statistics.median(samples.cpu) / 1000
        base_cpu = statistics.median(base.cpu) / 1000
        paired = [
            (a - b) / 1000 for a, b in zip(samples.rounds, base.rounds, strict=True)
        ]
        p99, base_p99 = quantile(samples.ns, 0.99), quantile(base.ns, 0.99)
        rows.append(
            Row(
                key=key,
                median_us=median,
                p99_us=p99 / 1000,
                added_median_us=median - base_median,
                added_p99_us=(p99 - base_p99) / 1000,
                added_percent=100 * (median - base_median) / base_median,
                spread_us=_half_iqr(paired),
                cpu_median_us=cpu,
                added_cpu_us=cpu - base_cpu,
                added_cpu_percent=100 * (cpu - base_cpu) / base_cpu,
                chunks=samples.chunks,
            )
        )
    return rows


# -- reporting -------------------------------------------------------------------


def _us(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value / 1000:.2f} ms"
    return f"{value:.1f} µs"


def report(scenario: str, rows: list[Row], n: int, counts: dict[str, int]) -> list[str]:
    stream = rows[0].chunks > 0
    title = LABELS[scenario]
    seen = {row.key: row.chunks for row in rows}
    if len(set(seen.values())) > 1:
        title += f" (WARNING: contenders saw different streams: {seen})"
    if stream:
        title += f": {rows[0].chunks} items seen by the app, {n} streams each"
    else:
        title += f": {n} calls each"
    head = (
        "| contender | wall median | wall p99 | added median | added p99 "
        "| added % | CPU median | added CPU | added CPU % |"
    )
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    if stream:
        head += " per chunk (wall) | per chunk (CPU) |"
        rule += "---:|---:|"
    head += " recorded |"
    rule += "---:|"
    lines = [f"\n### {title}\n", head, rule]
    for row in rows:
        bare = row.key.startswith("bare@")
        cells = [
            row.key,
            _us(row.median_us),
            _us(row.p99_us),
            "-" if bare else f"{_us(row.added_median_us)} ± {_us(row.spread_us)}",
            "-" if bare else _us(row.added_p99_us),
            "-" if bare else f"{row.added_percent:+.2f}%",
            _us(row.cpu_median_us),
            "-" if bare else _us(row.added_cpu_us),
            "-" if bare else f"{row.added_cpu_percent:+.2f}%",
        ]
        if stream:
            cells.append("-" if bare else f"{row.per_chunk():+.3f} µs")
            cells.append("-" if bare else f"{row.per_chunk(cpu=True):+.3f} µs")
        cells.append(str(counts.get(row.key, 0)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ratio(traket: float, peer: float) -> str:
    if peer <= 0:
        return "peer's overhead within noise"
    if traket <= 0:
        return "traket's overhead within noise (below the bare client)"
    return f"adds {peer / traket:.1f}x traket's overhead"


def verdicts(all_rows: dict[str, list[Row]]) -> tuple[list[str], list[str]]:
    """Return the ratio and goal lines, and the scenarios where traket missed.

    Non-streamed calls are judged on the median added time (wall and CPU);
    streams on the added time per chunk.
    """
    lines = ["\n### Ratios and goals\n"]
    missed = []
    for scenario, rows in all_rows.items():
        by_key = {r.key: r for r in rows}
        traket = by_key.get("traket@project")
        if traket is None:
            continue
        stream = traket.chunks > 0
        verdict = []
        ok_all = True
        for cpu in (False, True):
            clock = "CPU" if cpu else "wall"
            if stream:
                value = traket.per_chunk(cpu)
                ok = value < GOAL_CHUNK_US
                text = f"{clock} {value:+.3f} µs/chunk"
            else:
                value = traket.added_cpu_us if cpu else traket.added_median_us
                percent = traket.added_cpu_percent if cpu else traket.added_percent
                ok = percent < GOAL_CALL_PERCENT
                text = f"{clock} {_us(value)} ({percent:+.2f}%)"
            peers = []
            for peer in ("openllmetry@peers", "langfuse@peers"):
                row = by_key.get(peer)
                if row is None:
                    continue
                if stream:
                    theirs = row.per_chunk(cpu)
                else:
                    theirs = row.added_cpu_us if cpu else row.added_median_us
                ok = ok and value < theirs
                peers.append(f"{peer.split('@')[0]} {_ratio(value, theirs)}")
            ok_all = ok_all and ok
            mark = "met" if ok else "MISSED"
            verdict.append(f"  - {text}: {mark}; " + "; ".join(peers))
        goal = f"< {GOAL_CHUNK_US} µs/chunk" if stream else f"< {GOAL_CALL_PERCENT}%"
        lines.append(f"- {LABELS[scenario]} (goal {goal}, and below both peers)")
        lines += verdict
        if not ok_all:
            missed.append(scenario)
    return lines, missed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer calls, about 30 s on an idle box"
    )
    parser.add_argument("--calls", type=int, help="calls per contender (2000; 150)")
    parser.add_argument("--streams", type=int, help="streams per contender (40; 4)")
    parser.add_argument("--chunks", type=int, help="chunks per stream (1000; 400)")
    parser.add_argument(
        "--repeat", type=int, help="memory streams: chunks x this (10; 5)"
    )
    parser.add_argument("--rounds", type=int, help="turns per contender (20; 4)")
    names = [*CALL_SCENARIOS, *STREAM_SCENARIOS, *MEMORY_SCENARIOS]
    parser.add_argument("--only", nargs="+", choices=names)
    parser.add_argument("--no-peers", action="store_true", help="bare and traket")
    parser.add_argument(
        "--profile", action="store_true", help="profile traket even if goals are met"
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--install-peers", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="show workers' stderr")
    return parser


def _contenders(no_peers: bool) -> list[Contender]:
    contenders = [
        Contender("bare", "project", PROJECT_PYTHON),
        Contender("traket", "project", PROJECT_PYTHON),
    ]
    peers = None if no_peers else peers_python()
    if peers is None and not no_peers:
        print("no peers venv: run with --install-peers first; measuring traket only")
    if peers is not None:
        contenders += [
            Contender("bare", "peers", peers),
            Contender("openllmetry", "peers", peers),
            Contender("langfuse", "peers", peers),
        ]
    return contenders


def _run_scenario(
    scenario: str,
    workers: list[Worker],
    server: ReplayServer,
    records: dict[str, Recording],
    args: argparse.Namespace,
    size: tuple[int, int, int],
) -> list[Row]:
    calls, streams, rounds = size
    per_round = max(1, (calls if scenario in CALL_SCENARIOS else streams) // rounds)
    recording = records.get(scenario)
    if scenario in MEMORY_SCENARIOS:
        source, head, tail = MEMORY_SHAPE[scenario]
        server.respond_with(records[source])
        for worker in workers:
            worker.ask(
                op="collect",
                scenario=scenario,
                head=head,
                tail=tail,
                repeat=args.repeat,
            )
        recording = records[source.replace("_stream", "_stream_short")]
    assert recording is not None

    before = {w.key: w.ask(op="count")["recorded"] for w in workers}
    warmup = max(2, per_round // 2)
    results = measure(workers, server, recording, scenario, rounds, per_round, warmup)
    after = {w.key: w.ask(op="count")["recorded"] for w in workers}

    rows = summarize(results)
    counts = {key: after[key] - before[key] for key in after}
    table = report(scenario, rows, per_round * rounds, counts)
    print("\n".join(table), flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.install_peers:
        install_peers()
        return 0

    calls = args.calls or (150 if args.quick else 2000)
    streams = args.streams or (4 if args.quick else 40)
    rounds = args.rounds or (4 if args.quick else 20)
    chunks = args.chunks or (400 if args.quick else 1000)
    args.repeat = args.repeat or (5 if args.quick else 10)
    scenarios = args.only or [*CALL_SCENARIOS, *STREAM_SCENARIOS, *MEMORY_SCENARIOS]
    started = time.perf_counter()
    contenders = _contenders(args.no_peers)
    records = recordings(chunks)

    sink = _Sink(("127.0.0.1", 0), _SinkHandler)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    print(
        f"python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; "
        f"{rounds} rounds per scenario, contenders rotating\n"
    )
    all_rows: dict[str, list[Row]] = {}
    workers: list[Worker] = []
    with FreshIdReplayServer() as server:
        config = {
            "base_url": server.base_url,
            "sink_url": f"http://127.0.0.1:{sink.server_port}",
            "verbose": args.verbose,
        }
        try:
            workers = [Worker(c, config) for c in contenders]
            for worker in workers:
                worker.wait_ready()
                versions = ", ".join(f"{k} {v}" for k, v in worker.versions.items())
                print(f"- {worker.key}: {versions}", flush=True)
            for scenario in scenarios:
                all_rows[scenario] = _run_scenario(
                    scenario, workers, server, records, args, (calls, streams, rounds)
                )

            ratio_lines, missed = verdicts(all_rows)
            print("\n".join(ratio_lines), flush=True)
            traket = next((w for w in workers if w.key == "traket@project"), None)
            if traket is not None and (args.profile or (missed and not args.quick)):
                _profile(traket, server, records, missed or scenarios)
        finally:
            for worker in workers:
                worker.close()
            sink.shutdown()

    print(f"\nrequests that reached the sink (Langfuse's API host): {sink.hits}")
    print(f"took {time.perf_counter() - started:.0f} s")
    if args.json:
        payload = {s: [r.__dict__ for r in rows] for s, rows in all_rows.items()}
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return 0


def _profile(
    traket: Worker,
    server: ReplayServer,
    records: dict[str, Recording],
    scenarios: Sequence[str],
) -> None:
    """Print a cProfile of the traket worker for each scenario."""
    for scenario in scenarios:
        source = MEMORY_SHAPE.get(scenario, (scenario, 0, 0))[0]
        server.respond_with(records[source])
        n = 300 if scenario in CALL_SCENARIOS else 5
        text = traket.ask(op="profile", scenario=scenario, n=n, limit=25)["text"]
        print(f"\n### cProfile of traket, {LABELS[scenario]}, {n}x\n")
        print("```\n" + text.strip() + "\n```", flush=True)


if __name__ == "__main__":
    sys.exit(main())
