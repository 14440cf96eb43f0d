"""The client: the explicit API of 0.1.0 over one batch sender, and the default client.

`Margins` validates and builds events on the caller's thread and hands them to a
`BatchSender`, which delivers them in the background. Instrumentation reaches the
same sender through `Margins.record_observed`, so every path is batched, retried and
flushed at exit the same way.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from . import _scope
from ._errors import ConfigurationError, InvalidEventError, describe
from ._event import Event, build_event
from ._observe import (
    checked_attribution,
    observe_error,
    observe_response,
    observed_event,
)
from ._sender import BatchSender, DeliveryFailure, DeliveryStats
from ._transport import CallableTransport, HttpTransport, Transport

DEFAULT_ENDPOINT = "https://traket.ai/api/v1/usage/events"
MAX_BATCH_EVENTS = 100

T = TypeVar("T")
LegacyTransport = Callable[[str, Mapping[str, str], bytes], Mapping[str, Any]]

logger = logging.getLogger(__name__)


def _positive(name: str, value: int | float | None, fallback: int) -> int | float:
    if value is None:
        return fallback
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(
            f"{name}: expected a positive number, received {describe(value)}"
        )
    return value


def _batch_size(value: int | float | None) -> int:
    size = _positive("batch_size", value, MAX_BATCH_EVENTS)
    if size != int(size):
        raise ConfigurationError(
            f"batch_size: expected a whole number of events, received {describe(value)}"
        )
    # A batch of more than 100 events is one the ingest refuses.
    return min(int(size), MAX_BATCH_EVENTS)


def _timeout(value: float | None) -> float | None:
    """Return a flush timeout, or raise naming what is wrong with it."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not value >= 0
        or value == math.inf
    ):
        raise ValueError(
            "timeout: expected None or a number of seconds >= 0, "
            f"received {describe(value)}"
        )
    return value


def write_key_problem(value: object) -> str | None:
    """Say what keeps `value` from being a write key, or return `None` if nothing.

    A key travels in the `Authorization` header, so it must be printable ASCII without
    spaces: a line break would inject a header, and a character outside Latin-1
    cannot be sent at all, so every request would fail later, retried for hours. The
    answer describes the key (its type, a character's kind and position), never its
    text: it is a secret.
    """
    if not isinstance(value, str):
        return f"expected a string, received {type(value).__name__}"
    if not value:
        return "expected a write key, received an empty string"
    for position, char in enumerate(value, start=1):
        if "!" <= char <= "~":
            continue
        if char in "\r\n":
            kind = "a line break"
        elif char.isspace():
            kind = "whitespace"
        elif char.isascii() or not char.isprintable():
            kind = "a control character"
        else:
            kind = "a non-ASCII character"
        return (
            "expected printable ASCII without spaces or control characters, "
            f"received a key with {kind} at position {position} of {len(value)}"
        )
    return None


def _write_key(value: str | None) -> str:
    """Return the write key given or from the environment, or raise naming it."""
    key: object = value or os.environ.get("TRAKET_WRITE_KEY")
    if not key:
        received = "an empty string" if value == "" else "nothing"
        raise ConfigurationError(
            f"write_key: expected a Traket write key, received {received} "
            "(pass write_key= or set TRAKET_WRITE_KEY)"
        )
    problem = write_key_problem(key)
    if isinstance(key, str) and problem is None:
        return key
    source = "" if value else " (from TRAKET_WRITE_KEY)"
    raise ConfigurationError(f"write_key{source}: {problem}")


def _flag(name: str, value: object) -> bool:
    """Return a boolean option; `1` or `"no"` would read as a choice nobody made."""
    if not isinstance(value, bool):
        raise ConfigurationError(
            f"{name}: expected True or False, received {describe(value)}"
        )
    return value


def _endpoint(value: str | None) -> str:
    """Return the endpoint given or from the environment, with a usable port.

    The scheme and host are checked by the transport; a port out of range would
    only fail each send, later.
    """
    endpoint = value or os.environ.get("TRAKET_ENDPOINT") or DEFAULT_ENDPOINT
    if not isinstance(endpoint, str):
        return endpoint  # the transport names the type
    try:
        port = urlsplit(endpoint).port
    except ValueError as exc:
        # "Port out of range 0-65535", "Port could not be cast ... as 'x'": the
        # port's text at most, never the rest of the URL (it may hold user info).
        received = f"a URL it cannot parse ({str(exc)[:80]})"
    else:
        if port != 0:
            return endpoint
        received = "a URL with port 0"
    source = "" if value else " (from TRAKET_ENDPOINT)"
    raise ConfigurationError(
        f"endpoint{source}: expected an http(s) URL with a port from 1 to 65535 or "
        f"none, received {received}"
    )


def _request_timeout(options: dict[str, Any]) -> None:
    """Refuse a request timeout of 0: every request would time out, then retry."""
    if "request_timeout" not in options:
        return
    value = options["request_timeout"]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(
            "request_timeout: expected a finite number of seconds > 0, "
            f"received {describe(value)}"
        )


# The BatchSender settings a caller may pass to `create_margins` as they are.
_SENDER_OPTIONS = frozenset(inspect.signature(BatchSender).parameters) - {
    "transport",
    "batch_size",
    "flush_interval",
    "on_error",
    "gzip",
    "spool_path",
}


_BATCH = 'a list of 1 to 100 events, as events=[...] or {"events": [...]}'


def _batch_events(
    input: Mapping[str, Any] | None, events: Iterable[Mapping[str, Any]] | None
) -> list[Any]:
    """Return the events of a `track_batch` call, or raise naming what is wrong."""
    if input is not None and events is not None:
        raise InvalidEventError("events", _BATCH, "both a mapping and events=")
    if events is None and input is not None:
        if not isinstance(input, Mapping):
            raise InvalidEventError("events", _BATCH, describe(input))
        events = input.get("events")
    if events is None:
        received = "nothing" if input is None else describe(None)
        raise InvalidEventError("events", _BATCH, received)
    if isinstance(events, str | bytes | Mapping) or not isinstance(events, Iterable):
        raise InvalidEventError("events", _BATCH, describe(events))

    items = list(events)
    if not 1 <= len(items) <= MAX_BATCH_EVENTS:
        raise InvalidEventError("events", _BATCH, f"{len(items)} events")
    return items


class _WarnOnce:
    """Log a warning the first time each distinct message comes up."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, message: str, *args: object) -> None:
        with self._lock:
            if message in self._seen:
                return
            self._seen.add(message)
        logger.warning(message, *args)


warn_once = _WarnOnce()


class OpenAITracker:
    """Meter one OpenAI call made through a callable (the 0.1.0 wrapper)."""

    def __init__(self, margins: Margins) -> None:
        self._margins = margins

    def track(
        self, call: Callable[[], T], attribution: Mapping[str, Any] | None = None
    ) -> T:
        """Run `call`, record one event for it, and return exactly what it returned.

        `attribution` holds per-call fields (`external_customer_id`, `feature`, ...)
        that win over every scope. `call` may be async or return an awaitable: the
        result is then an awaitable to await. The original exception, if any, is
        re-raised unchanged. When instrumentation already meters the call inside,
        it records the event, with these attributes, and this wrapper does not.
        """
        if not callable(call):
            raise TypeError(
                "call: expected a callable that makes one OpenAI call, "
                f"received {describe(call)}"
            )
        if attribution is not None and not isinstance(attribution, Mapping):
            expected = "a mapping of event fields such as feature"
            raise InvalidEventError("attribution", expected, describe(attribution))
        block = _scope.explicit(attribution or {})
        started = time.perf_counter()
        with block, _scope.interception() as intercepted:
            try:
                result = call()
            except Exception as exc:
                if not intercepted[0]:
                    self._record(observe_error(exc), block, started)
                raise
        if inspect.isawaitable(result):
            tracked = self._track_awaitable(result, block, started)
            return tracked  # type: ignore[return-value]
        if not intercepted[0]:
            self._record(observe_response(result), block, started)
        return result

    async def _track_awaitable(
        self, awaitable: Awaitable[T], block: _scope.Attribution, started: float
    ) -> T:
        with block, _scope.interception() as intercepted:
            try:
                result = await awaitable
            except Exception as exc:
                if not intercepted[0]:
                    self._record(observe_error(exc), block, started)
                raise
        if not intercepted[0]:
            self._record(observe_response(result), block, started)
        return result

    def _record(
        self, observed: dict[str, Any], block: _scope.Attribution, started: float
    ) -> None:
        scope = _scope.merge_fields(_scope.current_scope(), block.fields)
        observed.setdefault("provider", "openai")
        observed["operation"] = scope.get("operation", "responses.create")
        observed["durationMs"] = round((time.perf_counter() - started) * 1000)
        self._margins.record_observed(observed, scope=scope, defaults=None)


class Margins:
    """Meter AI usage: build events, batch them and deliver them in the background.

    `track()` never waits on the network. Events are retried with their identity
    fixed, flushed at interpreter exit, and sent again by no one after a fork.
    """

    def __init__(
        self,
        *,
        write_key: str | None = None,
        endpoint: str | None = None,
        batch_size: int | float | None = None,
        flush_interval_ms: int | float | None = None,
        transport: LegacyTransport | Transport | None = None,
        on_error: Callable[[DeliveryFailure], None] | None = None,
        estimate_cost: bool = False,
        gzip: bool = False,
        spool_path: str | os.PathLike[str] | None = None,
        allow_insecure_http: bool = False,
        **sender_options: Any,
    ) -> None:
        unknown = sorted(set(sender_options) - _SENDER_OPTIONS)
        if unknown:
            raise TypeError(
                f"create_margins() got an unexpected option {unknown[0]!r}; "
                f"delivery options are {', '.join(sorted(_SENDER_OPTIONS))}"
            )
        self.write_key = _write_key(write_key)
        if on_error is not None and not callable(on_error):
            raise ConfigurationError(
                "on_error: expected a callable taking a DeliveryFailure, "
                f"received {describe(on_error)}"
            )
        self.endpoint = _endpoint(endpoint)
        self.batch_size = _batch_size(batch_size)
        self.flush_interval_ms = _positive("flush_interval_ms", flush_interval_ms, 1000)
        self.estimate_cost = _flag("estimate_cost", estimate_cost)
        gzip = _flag("gzip", gzip)
        allow_insecure_http = _flag("allow_insecure_http", allow_insecure_http)
        _request_timeout(sender_options)
        self.openai = OpenAITracker(self)
        carrier = self._make_transport(transport, allow_insecure_http)
        self._sender = BatchSender(
            carrier,
            batch_size=self.batch_size,
            flush_interval=self.flush_interval_ms / 1000,
            on_error=on_error,
            # A 0.1.0 transport callable expects the JSON body itself.
            gzip=gzip and not isinstance(carrier, CallableTransport),
            spool_path=spool_path,
            **sender_options,
        )

    def _make_transport(
        self, transport: LegacyTransport | Transport | None, allow_insecure_http: bool
    ) -> Transport:
        if transport is None:
            return HttpTransport(
                self.endpoint, self.write_key, allow_insecure_http=allow_insecure_http
            )
        if hasattr(transport, "send"):
            return transport  # type: ignore[return-value]
        return CallableTransport(transport, self.endpoint, self.write_key)

    def __repr__(self) -> str:
        return f"Margins(endpoint={self.endpoint!r})"

    def _prepare(self, event: Mapping[str, Any]) -> Event:
        built = build_event(event)
        if self.estimate_cost and "cost" not in built:
            from ._pricing import attach_estimate

            built = attach_estimate(built)
        return built

    def track(self, event: Mapping[str, Any]) -> None:
        """Validate `event` and queue it for delivery; never waits on the network.

        Raises `InvalidEventError` naming the field when the event is malformed.
        """
        self._sender.submit(self._prepare(event))

    def capture_usage(self, event: Mapping[str, Any]) -> None:
        """Queue a usage event; the same as `track`."""
        self.track(event)

    captureUsage = capture_usage

    def track_batch(
        self,
        input: Mapping[str, Any] | None = None,
        *,
        events: Iterable[Mapping[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Validate 1 to 100 events and queue them all, or none if one is malformed.

        Takes `track_batch(events=[...])` or `track_batch({"events": [...]})`.
        Returns `{"queued": n, "dropped": n, "idempotencyKeys": [...]}`.
        """
        items = _batch_events(input, events)
        prepared = []
        for index, item in enumerate(items):
            try:
                prepared.append(self._prepare(item))
            except InvalidEventError as error:
                raise error.at(f"events[{index}]") from None
        queued = sum(self._sender.submit(event) for event in prepared)
        return {
            "queued": queued,
            "dropped": len(prepared) - queued,
            "idempotencyKeys": [event["idempotencyKey"] for event in prepared],
        }

    trackBatch = track_batch

    def record_observed(
        self,
        observed: Mapping[str, Any],
        *,
        scope: Mapping[str, Any],
        defaults: Mapping[str, Any] | None,
    ) -> None:
        """Record one metered call; merge its attribution; never raise.

        Precedence: per-call attributes and the innermost scope (already merged in
        `scope`), then outer scopes, then `defaults`. What was measured (model,
        usage, ids, duration, status) wins over attributes; a provider named by the
        caller wins over the detected one.
        """
        try:
            # Only the attribution is validated: the rest is traket's own reading.
            attribution = checked_attribution(scope, defaults)
            event = observed_event(observed, attribution)
            if self.estimate_cost and "cost" not in event:
                from ._pricing import attach_estimate

                event = attach_estimate(event)
            self._sender.submit(event)
        except Exception as error:
            warn_once(
                "traket could not record an OpenAI call (%s); the call itself was "
                "not affected",
                type(error).__name__,
            )

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything queued so far; True when done, False on timeout."""
        return self._sender.flush(_timeout(timeout))

    async def aflush(self, timeout: float | None = None) -> bool:
        """Flush without blocking the event loop (runs `flush` in a thread)."""
        return await asyncio.to_thread(self._sender.flush, _timeout(timeout))

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush, then stop the sender; later events are dropped and counted."""
        return self._sender.shutdown(_timeout(timeout))

    def stats(self) -> DeliveryStats:
        """Return delivery counts: enqueued = delivered + dropped + pending."""
        return self._sender.stats()


def create_margins(**options: Any) -> Margins:
    """Create a client; `write_key` and `endpoint` fall back to the environment."""
    return Margins(**options)


createMargins = create_margins

_default_lock = threading.Lock()
_default_client: Margins | None = None


def configure(**options: Any) -> Margins:
    """Create the default client used by instrumentation and `traket.flush`.

    Takes the options of `create_margins`. A previous default client is flushed
    and shut down.
    """
    client = Margins(**options)
    previous = swap_default(client)
    if previous is not None:
        previous.shutdown(timeout=2.0)
    return client


def swap_default(client: Margins | None) -> Margins | None:
    """Make `client` the default client and return the one it replaces."""
    global _default_client
    with _default_lock:
        previous, _default_client = _default_client, client
    return previous


def get_client() -> Margins:
    """Return the default client, creating it from the environment on first use."""
    global _default_client
    with _default_lock:
        if _default_client is None:
            _default_client = Margins()
        return _default_client


def _current_client() -> Margins | None:
    with _default_lock:
        return _default_client


def flush(timeout: float | None = None) -> bool:
    """Flush the default client, if there is one.

    True when every event queued before the call was delivered or dropped (see
    `Margins.stats()` for which); False when `timeout` passed first.
    """
    timeout = _timeout(timeout)
    client = _current_client()
    return True if client is None else client.flush(timeout)


async def aflush(timeout: float | None = None) -> bool:
    """Flush the default client without blocking the event loop."""
    timeout = _timeout(timeout)
    client = _current_client()
    return True if client is None else await client.aflush(timeout)
