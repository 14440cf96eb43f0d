"""Meter OpenAI traffic into a local ingest and print the margins report.

The demo is a small application with three moving parts, all on 127.0.0.1:

* the local Traket ingest (SQLite), which the SDK delivers events to;
* a replay server that answers like the OpenAI API from recorded responses;
* the real `openai` client, instrumented with one line.

It makes one call per recording (sync and async, streaming and not, errors
included) inside a few customer and feature scopes, flushes, and prints the report.
With `OPENAI_API_KEY` set and no `--recordings`, it calls the real OpenAI API
instead of replaying.

    python -m examples.demo
    python -m examples.demo --recordings ../shared/fixtures/openai
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import secrets
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openai
from rich.console import Console

import traket
from examples.replay import Recording, ReplayServer, load_recordings
from traket._local import _render, _report
from traket._local._report import Report
from traket._local._server import IngestServer
from traket._local._store import EventStore

DEFAULT_RECORDINGS = Path(__file__).resolve().parent / "recordings"

# Made-up customers and features. Call number i is made for CUSTOMERS[i % 4] in
# FEATURES[i % 3], so every customer uses several features and the other way round.
CUSTOMERS = ["acme-corp", "globex", "initech", "umbrella-health"]
FEATURES = ["support-chat", "doc-search", "ticket-triage"]

# The request made for a recording whose request body was not recorded.
FALLBACK_REQUESTS: dict[str, dict[str, Any]] = {
    "responses.create": {"model": "gpt-4.1-mini", "input": "Hello"},
    "chat.completions.create": {
        "model": "gpt-4.1-mini",
        "messages": [{"role": "user", "content": "Hello"}],
    },
    "embeddings.create": {"model": "text-embedding-3-small", "input": "Hello"},
}

TOKEN_KEYS = (
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
)


@dataclass
class Totals:
    """Token counts added up over calls or events, in the one usage shape."""

    calls: int = 0
    with_usage: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_KEYS, 0))

    def add(self, usage: Mapping[str, Any] | None) -> None:
        self.calls += 1
        if not usage:
            return

        self.with_usage += 1
        for key in TOKEN_KEYS:
            self.tokens[key] += int(usage.get(key) or 0)

    def describe(self) -> str:
        t = self.tokens
        return (
            f"input {t['input_tokens']:,} (cached {t['cached_tokens']:,}), "
            f"output {t['output_tokens']:,} (reasoning {t['reasoning_tokens']:,}), "
            f"total {t['total_tokens']:,} tokens"
        )


@dataclass(frozen=True)
class Call:
    """One call of the application: which method, with what, in which scope."""

    label: str
    operation: str
    kwargs: dict[str, Any]
    customer: str
    feature: str
    azure_api_version: str | None = None

    @property
    def stream(self) -> bool:
        return bool(self.kwargs.get("stream"))


# -- building calls from recordings ------------------------------------------------


def operation_of(recording: Recording) -> str:
    """Return the SDK method a recording answers, e.g. `chat.completions.create`."""
    expected = recording.expected or {}
    if expected.get("operation"):
        return str(expected["operation"])

    path = urlsplit(recording.path).path
    for suffix, operation in (
        ("/responses", "responses.create"),
        ("/chat/completions", "chat.completions.create"),
        ("/embeddings", "embeddings.create"),
    ):
        if path.endswith(suffix):
            return operation
    raise ValueError(f"{recording.name}: no OpenAI operation for path {path!r}")


def azure_deployment(recording: Recording) -> tuple[str, str] | None:
    """Return (deployment, api_version) for an Azure OpenAI recording, else None."""
    parts = urlsplit(recording.path)
    segments = parts.path.strip("/").split("/")
    if segments[:2] != ["openai", "deployments"] or len(segments) < 3:
        return None

    api_version = parse_qs(parts.query).get("api-version", ["2024-10-21"])[0]
    return segments[2], api_version


def call_for(recording: Recording, customer: str, feature: str) -> Call:
    """Build the application's call from what the recording's request carried."""
    operation = operation_of(recording)
    body = recording.request_body
    kwargs = dict(body) if isinstance(body, Mapping) else {}
    if not kwargs:
        kwargs = dict(FALLBACK_REQUESTS[operation])

    azure = azure_deployment(recording)
    if azure is not None:
        kwargs["model"] = azure[0]  # Azure routes by deployment name

    return Call(
        label=recording.name,
        operation=operation,
        kwargs=kwargs,
        customer=customer,
        feature=feature,
        azure_api_version=None if azure is None else azure[1],
    )


def split_known(
    method: Callable[..., Any], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """Pass parameters this openai version knows as such, the rest in `extra_body`.

    Recordings come from many openai releases; a parameter newer than the installed
    client still reaches the server, byte for byte, instead of failing the call.
    """
    try:
        parameters = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return dict(kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(kwargs)

    known = {k: v for k, v in kwargs.items() if k in parameters}
    extra = {k: v for k, v in kwargs.items() if k not in parameters}
    if extra:
        known["extra_body"] = extra
    return known


def resolve(client: Any, operation: str) -> Callable[..., Any]:
    """Return `client.chat.completions.create` for `chat.completions.create`."""
    target = client
    for name in operation.split("."):
        target = getattr(target, name)
    return target  # type: ignore[no-any-return]


# -- making the calls --------------------------------------------------------------


class Clients:
    """The application's OpenAI clients, created once and reused like a real app.

    `stand_in` says the server at `base_url` plays api.openai.com (the replay
    server), so that its events name `openai` as the provider, not its host.
    """

    def __init__(
        self,
        base_url: str,
        azure_endpoint: str | None,
        api_key: str,
        *,
        stand_in: bool = False,
    ) -> None:
        self._base_url = base_url
        self._azure_endpoint = azure_endpoint
        self._api_key = api_key
        self._stand_in = stand_in
        self._cache: dict[tuple[str | None, bool], Any] = {}

    def for_call(self, call: Call, *, use_async: bool) -> Any:
        key = (call.azure_api_version, use_async)
        if key not in self._cache:
            self._cache[key] = self._create(call.azure_api_version, use_async)
        return self._cache[key]

    def _create(self, azure_api_version: str | None, use_async: bool) -> Any:
        client: Any
        if azure_api_version is None:
            cls = openai.AsyncOpenAI if use_async else openai.OpenAI
            client = cls(base_url=self._base_url, api_key=self._api_key, max_retries=0)
        else:
            azure_cls = openai.AsyncAzureOpenAI if use_async else openai.AzureOpenAI
            client = azure_cls(
                azure_endpoint=self._azure_endpoint or self._base_url,
                api_key=self._api_key,
                api_version=azure_api_version,
                max_retries=0,
            )

        # The one line that meters a client. A server on 127.0.0.1 would be taken
        # for another OpenAI-compatible host; the replay server plays OpenAI's.
        attrs = {"environment": "demo"}
        if self._stand_in and azure_api_version is None:
            attrs["provider"] = "openai"
        traket.instrument(client, attrs)
        return client

    async def aclose(self) -> None:
        """Close the async clients inside the event loop that used them."""
        for (_, is_async), client in list(self._cache.items()):
            if is_async:
                await client.close()


def supported(client: Any, operation: str) -> bool:
    try:
        resolve(client, operation)
    except AttributeError:
        return False
    return True


def describe_result(result: Any) -> str:
    """A short line about what the application got back: model and usage."""
    model = getattr(result, "model", None) or "-"
    usage = getattr(result, "usage", None)
    if usage is None:
        return f"ok     {model}  (no usage reported)"

    inp = getattr(usage, "input_tokens", None)
    if inp is None:
        inp = getattr(usage, "prompt_tokens", 0)
    out = getattr(usage, "output_tokens", None)
    if out is None:
        out = getattr(usage, "completion_tokens", 0) or 0
    return f"ok     {model}  in={inp} out={out}"


def last_usage_carrier(item: Any, previous: Any) -> Any:
    """Keep the stream item that tells the model and usage (chat chunk or event)."""
    response = getattr(item, "response", None)
    if response is not None and getattr(response, "usage", None) is not None:
        return response
    if getattr(item, "usage", None) is not None:
        return item
    if previous is None and getattr(item, "model", None):
        return item
    return previous


def describe_error(error: openai.APIError) -> str:
    status = getattr(error, "status_code", None) or "-"
    code = getattr(error, "code", None)
    detail = f"{status} {code}" if code and str(code) != str(status) else str(status)
    return f"error  {detail} ({type(error).__name__}, caught by the app)"


Arm = Callable[[Call], None]


def run_sync(call: Call, clients: Clients, arm: Arm) -> str:
    client = clients.for_call(call, use_async=False)
    method = resolve(client, call.operation)
    arm(call)
    try:
        result = method(**split_known(method, call.kwargs))
        if not call.stream:
            return describe_result(result)

        carrier = None
        for item in result:  # read to the end, as an application would
            carrier = last_usage_carrier(item, carrier)
        return describe_result(carrier)
    except openai.APIError as error:
        return describe_error(error)


async def run_async(call: Call, clients: Clients, arm: Arm) -> str:
    client = clients.for_call(call, use_async=True)
    method = resolve(client, call.operation)
    arm(call)
    try:
        result = await method(**split_known(method, call.kwargs))
        if not call.stream:
            return describe_result(result)

        carrier = None
        async for item in result:
            carrier = last_usage_carrier(item, carrier)
        return describe_result(carrier)
    except openai.APIError as error:
        return describe_error(error)


def show(mode: str, call: Call, outcome: str) -> None:
    kind = call.operation + (" (stream)" if call.stream else "")
    who = f"{call.customer}/{call.feature}"
    print(f"  {mode:<5} {who:<30} {kind:<34} {outcome}")


def by_customer(calls: Iterable[Call]) -> Iterator[tuple[str, list[Call]]]:
    """Yield (customer, calls) for each customer, in order of first use."""
    grouped: dict[str, list[Call]] = {}
    for call in calls:
        grouped.setdefault(call.customer, []).append(call)
    yield from grouped.items()


def make_calls(calls: list[Call], clients: Clients, arm: Arm) -> None:
    """Make every call, four with the sync clients, then four with async ones, ...

    Calls run in a scope per customer, and inside it a scope per feature: nested
    scopes merge, so each event carries both. `arm` runs just before each request,
    so that a replay server knows what to answer.
    """
    print(f"  {'mode':<5} {'customer/feature':<30} {'call':<34} outcome")
    sync_calls = [call for i, call in enumerate(calls) if i // 4 % 2 == 0]
    async_calls = [call for i, call in enumerate(calls) if i // 4 % 2 == 1]

    for customer, members in by_customer(sync_calls):
        with traket.attribute(customer=customer):
            for call in members:
                with traket.attribute(feature=call.feature):
                    show("sync", call, run_sync(call, clients, arm))

    async def run_async_calls() -> None:
        for customer, members in by_customer(async_calls):
            async with traket.attribute(customer=customer):
                for call in members:
                    async with traket.attribute(feature=call.feature):
                        show("async", call, await run_async(call, clients, arm))
        await clients.aclose()

    asyncio.run(run_async_calls())


# -- the two ways to run -----------------------------------------------------------


def replay(recordings_dir: Path) -> Totals:
    """Replay every recording once through the real client; return their usage."""
    recordings = sorted(load_recordings(recordings_dir), key=lambda r: r.name)
    if not recordings:
        raise SystemExit(f"error: no recordings in {recordings_dir}")

    with ReplayServer() as server:
        print(f"replay server  {server.base_url}  ({len(recordings)} recordings)")
        print()
        clients = Clients(
            server.base_url,
            server.azure_endpoint,
            "sk-demo-not-a-key",
            stand_in=True,
        )

        expected = Totals()
        calls: list[Call] = []
        answers: dict[str, Recording] = {}
        for index, recording in enumerate(recordings):
            customer = CUSTOMERS[index % len(CUSTOMERS)]
            feature = FEATURES[index % len(FEATURES)]
            call = call_for(recording, customer, feature)
            if not supported(clients.for_call(call, use_async=False), call.operation):
                print(
                    f"  skip  {recording.name}: openai {openai.__version__} "
                    f"has no {call.operation}"
                )
                continue

            calls.append(call)
            answers[call.label] = recording
            expected.add((recording.expected or {}).get("usage"))

        make_calls(
            calls, clients, lambda call: server.respond_with(answers[call.label])
        )

    return expected


def live(api_key: str) -> None:
    """Make a few real calls against the OpenAI API (or `OPENAI_BASE_URL`)."""
    base_url = os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
    clients = Clients(base_url, None, api_key)
    chat = [
        {"role": "user", "content": "Reply with one short sentence about invoices."}
    ]
    requests: list[tuple[str, dict[str, Any]]] = [
        ("responses.create", {"model": "gpt-4.1-nano", "input": "Name a colour."}),
        ("chat.completions.create", {"model": "gpt-4.1-nano", "messages": chat}),
        (
            "chat.completions.create",
            {"model": "gpt-4.1-nano", "messages": chat, "stream": True},
        ),
        ("embeddings.create", {"model": "text-embedding-3-small", "input": "refunds"}),
        (
            "responses.create",
            {"model": "gpt-4.1-nano", "input": "Count to five.", "stream": True},
        ),
        ("chat.completions.create", {"model": "no-such-model", "messages": chat}),
    ]
    print("live: calling the OpenAI API (OPENAI_API_KEY is set)")
    print()

    calls = []
    for index, (operation, kwargs) in enumerate(requests):
        customer = CUSTOMERS[index % len(CUSTOMERS)]
        feature = FEATURES[index % len(FEATURES)]
        call = Call(f"live-{index}", operation, kwargs, customer, feature)
        if not supported(clients.for_call(call, use_async=False), operation):
            print(
                f"  skip  {operation}: openai {openai.__version__} has no {operation}"
            )
            continue
        calls.append(call)
    make_calls(calls, clients, lambda call: None)


# -- report ------------------------------------------------------------------------


def build_report(db_path: Path) -> Report:
    """Build the margins report from what the local ingest stored."""
    with EventStore(db_path) as store:
        return _report.build_report(store.events())


def report_totals(report: Report) -> Totals:
    """The report's token totals, in the same shape as the recordings' usage."""
    tokens = report.tokens
    totals = Totals(calls=report.total.events)
    totals.with_usage = report.total.events - report.quality.missing_usage
    totals.tokens = {
        "input_tokens": tokens.input_total,
        "cached_tokens": tokens.cached_input,
        "output_tokens": tokens.output,
        "reasoning_tokens": tokens.reasoning,
        "total_tokens": tokens.total,
    }
    return totals


# -- main --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.demo",
        description="Meter OpenAI calls into a local ingest and print the report.",
    )
    parser.add_argument(
        "--recordings",
        type=Path,
        help="replay the recordings in DIR (default: examples/recordings, or the real "
        "OpenAI API when OPENAI_API_KEY is set)",
        metavar="DIR",
    )
    parser.add_argument(
        "--db",
        type=Path,
        help="SQLite file for the local ingest (default: a new temporary file)",
        metavar="PATH",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )

    api_key = os.environ.get("OPENAI_API_KEY")
    use_live = args.recordings is None and bool(api_key)
    recordings_dir = args.recordings or DEFAULT_RECORDINGS
    if not use_live and not recordings_dir.is_dir():
        print(f"error: no such directory: {recordings_dir}", file=sys.stderr)
        return 2

    db_path = args.db or Path(tempfile.mkdtemp(prefix="traket-demo-")) / "events.db"
    write_key = "tk_demo_" + secrets.token_hex(12)

    with (
        EventStore(db_path) as store,
        IngestServer(store, host="127.0.0.1", port=0, write_key=write_key) as ingest,
    ):
        print(f"local ingest   {ingest.url}  (db {db_path})")

        traket.configure(write_key=write_key, endpoint=ingest.url)

        expected: Totals | None = None
        if use_live:
            live(api_key or "")
        else:
            expected = replay(recordings_dir)
        delivered = traket.flush(timeout=15.0)

    report = build_report(db_path)
    print()
    # A wide table when printed to a file or a pipe; the terminal's width otherwise.
    _render.render_table(report, Console(width=None if sys.stdout.isatty() else 120))

    metered = report_totals(report)
    print(f"Report:   {metered.calls} events; {metered.describe()}.")
    if expected is None:
        return 0 if delivered else 1

    print(
        f"Replayed: {expected.calls} recordings ({expected.with_usage} with usage); "
        f"{expected.describe()}."
    )
    if not delivered:
        print("error: events were still undelivered after 15 s", file=sys.stderr)
        return 1
    if (metered.calls, metered.tokens) != (expected.calls, expected.tokens):
        print("error: the report differs from the recordings", file=sys.stderr)
        return 1
    print("The report's totals equal the sum of the recordings' usage.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
