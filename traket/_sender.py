"""Deliver events in batches from a bounded queue, off the caller's thread.

`BatchSender.submit` only appends to an in-memory queue: it never does network I/O and
never waits for a lock that a sending thread holds across I/O. Worker threads, started
on the first submit, take batches of up to `batch_size` events when one fills or when
the oldest queued event has waited `flush_interval`, and send them through a
`Transport`.

Every event is in exactly one place: the queue, the retry list (waiting out a
backoff), in flight, or settled as delivered or dropped with a reason. `stats()` reads
the counters under one lock, so `enqueued == delivered + dropped + pending` at every
moment.

Waits are bounded: `flush(timeout)` and `shutdown(timeout)` send on the calling thread
too (a dead or frozen worker cannot stall them) and cap each request's timeout and
each backoff at what is left of their deadline. At interpreter exit a hook delivers
within `exit_timeout` on the main thread, which needs no new thread on Python 3.12+.
After `os.fork()` the child starts over with an empty queue, new locks and a new HTTP
session.
"""

from __future__ import annotations

import atexit
import contextlib
import gzip
import json
import logging
import math
import os
import threading
import time
import weakref
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ._errors import ConfigurationError
from ._retry import RetryPolicy, Verdict, classify
from ._spool import ADD_WAIT, Spool, SpoolError
from ._transport import Transport, TransportError, TransportResponse

__all__ = [
    "DROP_REASONS",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_EVENTS",
    "MAX_EVENT_BYTES",
    "BatchSender",
    "DeliveryFailure",
    "DeliveryStats",
    "DropReason",
]

logger = logging.getLogger(__name__)

# Only a NullHandler on the package logger: a drop logged at exit must not reach
# Python's last-resort handler (stderr) in an application that configured no logging.
# Idempotent, so `traket/__init__.py` may install the same guard.
_package_logger = logging.getLogger(__name__.rpartition(".")[0])
if not any(isinstance(h, logging.NullHandler) for h in _package_logger.handlers):
    _package_logger.addHandler(logging.NullHandler())

DropReason = Literal[
    "rejected",
    "unauthorized",
    "malformed",
    "too_large",
    "queue_full",
    "expired",
    "shutdown",
    "internal_error",
]
DROP_REASONS: tuple[DropReason, ...] = (
    "rejected",
    "unauthorized",
    "malformed",
    "too_large",
    "queue_full",
    "expired",
    "shutdown",
    "internal_error",
)

MAX_BATCH_EVENTS = 100
MAX_BATCH_BYTES = 1_000_000  # under the ingest's 1 MiB, with room for the envelope
MAX_EVENT_BYTES = 32 * 1024

_BODY_HEAD = b'{"events":['
# Events that wait behind a stuck or failing ingest are kept deflated with this preset
# dictionary of wire keys and common values: alone, an event then takes about a third
# of its JSON. JSON starts with "{", so the leading byte tells a packed event apart.
_PACKED = b"\x00"
_ZDICT = (
    b'"metadata":{},"units":[{"quantity":,"billableQuantity":,"unitName":"",'
    b'"unitType":"","providerRawKey":""}],"cost":{"amount":,"currency":"usd",'
    b'"source":"price_table","priceVersion":""},"customerId":"","promptType":"",'
    b'"providerRequestId":"req_","traceId":"","granularity":"request",'
    b'"attributionQuality":"explicit","attributionQuality":"scope",'
    b'{"provider":"openai","model":"gpt-4o-mini","operation":"responses.create",'
    b'"operation":"chat.completions.create","status":"success",'
    b'"externalCustomerId":"","feature":"","environment":"production",'
    b'"providerResponseId":"resp_","durationMs":,"usage":{"input_tokens":,'
    b'"input_tokens_details":{"cached_tokens":0},"output_tokens":,'
    b'"output_tokens_details":{"reasoning_tokens":0},"total_tokens":},'
    b'"idempotencyKey":"","occurredAt":"2026-12-01T00:00:00.000Z"}'
)
_BODY_TAIL = b"]}"
_DOOR_SAMPLE = 256  # dropped-at-submit events kept for on_error, per reason and report
_IDLE_WAKE = 1.0  # an idle worker still wakes this often to report drops
_STUCK_AFTER = 1.0  # every slot busy this long: the ingest is stuck, pack what waits
_WARN_EVERY = 60.0  # repeated drop warnings are folded into one per reason per minute
_DETAIL_CHARS = 300
# Reasons after which a spooled row stays on disk: the event was never refused on its
# merits, so the next process (with a fixed key, or after restart) sends it again.
_KEEP_SPOOLED: frozenset[str] = frozenset({"unauthorized", "shutdown"})
# What a spool failure costs, for the folded spool warning.
_NOT_DURABLE = "kept in memory only, not durable (%s)"
_LEFT_ON_DISK = "left on disk once settled; a later process may resend them (%s)"


@dataclass(frozen=True)
class DeliveryStats:
    """A consistent snapshot of the sender's accounting.

    `enqueued` counts every event handed to `submit` (including ones dropped at once),
    so `enqueued == delivered + dropped_total + pending` always holds. `retried`
    counts event resends, not batches. `unspooled` counts events queued in memory
    only because the spool could not be written (they are still delivered).
    """

    enqueued: int
    delivered: int
    retried: int
    pending: int
    dropped: Mapping[str, int] = field(default_factory=dict)
    unspooled: int = 0

    @property
    def dropped_total(self) -> int:
        """Return the number of events dropped for any reason."""
        return sum(self.dropped.values())


@dataclass(frozen=True)
class DeliveryFailure:
    """Events that will not be delivered, handed to `on_error` with the reason.

    `events` are the sanitized wire events exactly as submitted. `status` is the
    ingest's HTTP status when it answered; `detail` is a short explanation (never the
    write key).
    """

    reason: DropReason
    events: tuple[dict[str, Any], ...]
    status: int | None = None
    detail: str = ""


class _Item:
    """One queued event with what the sender needs to account for it.

    While it waits through an outage, a worker compacts it: `data` (its JSON, perhaps
    packed: read it through `_unpack`) is set and then `event` cleared, in that
    order, so a reader that finds `event` gone finds `data` set. `event_of` gives the
    event back either way.
    """

    __slots__ = ("born", "data", "event", "row", "seq", "size")

    def __init__(
        self,
        seq: int,
        event: dict[str, Any],
        size: int,
        born: float,
        data: bytes | None = None,
        row: int | None = None,
    ) -> None:
        self.seq = seq
        self.event: dict[str, Any] | None = event
        self.size = size
        self.born = born
        self.data = data
        self.row = row


def event_of(item: _Item) -> dict[str, Any]:
    """Return the wire event of `item`, decoding it when it was compacted."""
    event = item.event
    if event is None:
        decoded: dict[str, Any] = json.loads(_unpack(item.data or b"{}"))
        return decoded
    return event


def _pack(data: bytes) -> bytes:
    packer = zlib.compressobj(1, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, _ZDICT)
    return _PACKED + packer.compress(data) + packer.flush()


def _unpack(data: bytes) -> bytes:
    """Return an event's JSON, inflating it if it was packed."""
    if data[:1] != _PACKED:
        return data
    return zlib.decompressobj(-15, zdict=_ZDICT).decompress(data[1:])


class _Batch:
    """Events sent together; kept whole across retries until split by a 413."""

    __slots__ = ("attempts", "items", "ready_at", "taken_at")

    def __init__(
        self, items: list[_Item], attempts: int = 0, taken_at: float = math.inf
    ) -> None:
        self.items = items
        self.attempts = attempts
        self.ready_at = 0.0
        self.taken_at = taken_at  # when a sending thread took it

    def part(self, items: list[_Item]) -> _Batch:
        """Return a batch of some of these items, which carries on where this one is."""
        return _Batch(items, self.attempts, self.taken_at)

    @property
    def oldest(self) -> float:
        return min(item.born for item in self.items)

    @property
    def first_seq(self) -> int:
        return min(item.seq for item in self.items)


def _estimate_size(event: Mapping[str, Any]) -> int:
    """Guess an event's JSON size without serializing it; cheap enough for submit.

    Keys and strings count their length; one level of nesting (usage, cost,
    metadata) is looked into; anything deeper counts a flat amount. The exact size
    is measured on the worker.
    """
    size = 2 + 4 * len(event) + sum(map(len, event))
    for value in event.values():
        kind = type(value)
        if kind is str:
            size += len(value)
        elif kind is dict:
            size += 16 * len(value) + sum(map(len, value))
            for inner in value.values():
                if type(inner) is str:
                    size += len(inner)
        elif kind is list or kind is tuple:
            size += 96 * len(value)
        else:
            size += 12
    return size


# One encoder for every event: `json.dumps` with options builds a new one per call.
# UTF-8 as is, not \u escapes: text that is not valid Unicode (a lone surrogate)
# then fails to encode on its own event, instead of failing its batch at the ingest.
_encode = json.JSONEncoder(
    separators=(",", ":"), allow_nan=False, ensure_ascii=False
).encode


# Answers that fault the batch's content: its bad events are found by halving it.
_MALFORMED = frozenset({400, 422})


def _serialize(event: Mapping[str, Any]) -> bytes | None:
    """Return an event's JSON, or `None` when it cannot be encoded.

    Not only `TypeError` and `ValueError`: an event nested deeper than the encoder's
    recursion allows raises `RecursionError`, and a mapping of the caller's own type
    may raise anything. Such an event is malformed, never a failure of the sender.
    """
    try:
        return _encode(event).encode("utf-8")
    except Exception:
        return None


def _body(items: Iterable[_Item]) -> bytes:
    events = b",".join(_unpack(item.data or b"") for item in items)
    return _BODY_HEAD + events + _BODY_TAIL


def _rejected_indexes(body: bytes, count: int) -> dict[int, str]:
    """Read `rejected[].index` from a 2xx answer; an empty body rejects nothing.

    Raises whatever the parser raises on a body it cannot read: `ValueError` for one
    that is not JSON, `RecursionError` for one nested too deep, and so on.
    """
    document = json.loads(body) if body.strip() else None
    if not isinstance(document, dict) or not isinstance(document.get("rejected"), list):
        return {}

    found: dict[int, str] = {}
    for entry in document["rejected"]:
        if not isinstance(entry, dict):
            continue
        index = entry.get("index")
        if (
            isinstance(index, int)
            and not isinstance(index, bool)
            and 0 <= index < count
        ):
            found[index] = str(entry.get("error", ""))[:_DETAIL_CHARS]
    return found


def _detail(response: TransportResponse) -> str:
    text = response.body[:_DETAIL_CHARS].decode("utf-8", errors="replace")
    return f"HTTP {response.status}: {text}" if text else f"HTTP {response.status}"


def _cause(exc: BaseException) -> str:
    """Name a failure for a log line: a spool error's own words, else its type."""
    return str(exc) if isinstance(exc, SpoolError) else type(exc).__name__


class _FoldedLog:
    """Log a WARNING per key with counts, at most once per key per interval.

    `template` takes the count, then the key. Its lock is never held while logging,
    so a logging handler that submits an event (and so may cause a drop) cannot
    deadlock against it; and a handler or filter that raises is ignored, since a
    log line must never stop delivery.
    """

    def __init__(self, template: str, interval: float = _WARN_EVERY) -> None:
        self._template = template
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def note(self, key: str, count: int) -> None:
        now = time.monotonic()
        with self._lock:
            held = self._held.get(key, 0) + count
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._held[key] = held
                return
            self._held[key] = 0
            self._last[key] = now
        self._emit(held, key)

    def drain(self) -> None:
        with self._lock:
            held = {key: n for key, n in self._held.items() if n}
            self._held.clear()
        for key, count in held.items():
            self._emit(count, key)

    def _emit(self, count: int, key: str) -> None:
        with contextlib.suppress(Exception):
            logger.warning(self._template, count, key)


_senders: weakref.WeakSet[BatchSender] = weakref.WeakSet()
_exit_hook_registered = False


def _deliver_at_exit() -> None:
    """Shut every live sender down within the largest of their exit budgets.

    Runs on the main thread from `atexit`, so it needs no new thread (Python 3.12+
    refuses to start one at shutdown); the senders send on this thread as `flush`
    does.
    """
    senders = list(_senders)
    if not senders:
        return
    deadline = time.monotonic() + max(sender.exit_timeout for sender in senders)
    for sender in senders:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            sender.shutdown(min(sender.exit_timeout, remaining))
        except Exception:  # an exit hook must never print a traceback
            logger.debug("traket exit delivery failed", exc_info=True)


def _reinit_in_child() -> None:
    for sender in list(_senders):
        sender._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_in_child)


class BatchSender:
    """Queue events and deliver them in batches, with bounded retries and waits.

    `when_full` decides what `submit` does when the queue is at `max_queue_events` or
    `max_queue_bytes`: `"drop_newest"` drops the new event (counted as `queue_full`),
    `"block"` waits up to `block_timeout` for room, then drops it. Up to
    `max_in_flight` requests run at once, each with `request_timeout`. With
    `spool_path`, events are written to SQLite before `submit` returns and recovered
    by the next process; when the spool cannot be written within a short wait, the
    event is queued in memory only (counted as `unspooled`) rather than refused.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        batch_size: int = MAX_BATCH_EVENTS,
        flush_interval: float = 0.5,
        max_queue_events: int = 20_000,
        max_queue_bytes: int = 32 * 1024 * 1024,
        when_full: Literal["drop_newest", "block"] = "drop_newest",
        block_timeout: float = 0.1,
        retry: RetryPolicy | None = None,
        on_error: Callable[[DeliveryFailure], object] | None = None,
        request_timeout: float = 10.0,
        max_in_flight: int = 8,
        gzip: bool = False,
        exit_timeout: float = 2.0,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        max_event_bytes: int = MAX_EVENT_BYTES,
        spool_path: str | os.PathLike[str] | None = None,
    ) -> None:
        _check_int("batch_size", batch_size, 1, MAX_BATCH_EVENTS)
        _check_int("max_queue_events", max_queue_events, 1)
        _check_int("max_queue_bytes", max_queue_bytes, 1)
        _check_int("max_in_flight", max_in_flight, 1, 64)
        _check_int("max_batch_bytes", max_batch_bytes, 64)
        _check_int("max_event_bytes", max_event_bytes, 16)
        for name, number in (
            ("flush_interval", flush_interval),
            ("block_timeout", block_timeout),
            ("request_timeout", request_timeout),
            ("exit_timeout", exit_timeout),
        ):
            _check_seconds(name, number)
        if when_full not in ("drop_newest", "block"):
            raise ConfigurationError(
                f"when_full: expected 'drop_newest' or 'block', received {when_full!r}"
            )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(
                f"retry: expected a traket.RetryPolicy, received {type(retry).__name__}"
            )
        if on_error is not None and not callable(on_error):
            raise ConfigurationError(
                "on_error: expected a callable taking a DeliveryFailure, "
                f"received {type(on_error).__name__}"
            )

        self._transport = transport
        self._batch_size = batch_size
        self._flush_interval = float(flush_interval)
        self._max_events = max_queue_events
        self._max_bytes = max_queue_bytes
        self._block = when_full == "block"
        self._block_timeout = float(block_timeout)
        self._retry = retry if retry is not None else RetryPolicy()
        self._on_error = on_error
        self._request_timeout = float(request_timeout)
        self._max_in_flight = max_in_flight
        self._gzip = gzip
        self.exit_timeout = float(exit_timeout)
        self._max_batch_bytes = max_batch_bytes
        self._max_event_bytes = max_event_bytes
        self._spool = (
            Spool(spool_path, max_events=max_queue_events) if spool_path else None
        )
        self._closed = False
        self._init_state()

        global _exit_hook_registered
        _senders.add(self)
        if not _exit_hook_registered:
            _exit_hook_registered = True
            atexit.register(_deliver_at_exit)

        if self._spool is not None:
            self._recover()

    def __repr__(self) -> str:
        return f"BatchSender(transport={self._transport!r}, pending={self._pending})"

    def _init_state(self) -> None:
        """Create every lock, queue and counter; called again in a child after fork."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # workers and flushers wait here
        self._space = threading.Condition(self._lock)  # blocked submitters wait here
        self._queue: deque[_Item] = deque()
        self._queued_bytes = 0
        self._parked: list[_Batch] = []
        self._inflight: set[_Batch] = set()
        self._seq = 0
        self._compact_mark = 0  # queued items below this seq were compacted
        self._pack_mark = 0  # and below this one, packed
        self._pending = 0
        self._delivered = 0
        self._retried = 0
        self._dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self._door: dict[DropReason, list[dict[str, Any]]] = {}
        self._door_counts: dict[DropReason, int] = {}
        self._unspooled = 0
        self._spool_notes: dict[str, int] = {}  # spool failures seen by submit
        self._flushers = 0
        self._stopping = False
        self._started = False
        self._workers: list[threading.Thread] = []
        self._idle = 0
        self._warned_unauthorized = False
        self._warned_unreadable = False
        self._drop_log = _FoldedLog("traket dropped %d event(s): %s")
        self._spool_log = _FoldedLog("traket spool: %d event(s) %s")
        self._callback_log = _FoldedLog(
            "traket on_error callback raised %d time(s): %s; delivery goes on"
        )

    # -- the caller's side ---------------------------------------------------------

    def submit(self, event: dict[str, Any]) -> bool:
        """Queue one wire event for delivery; return `False` if it was dropped.

        Never does network I/O. A dropped event is counted and later handed to
        `on_error` from a sending thread, so `submit` itself never logs or calls back.
        """
        if self._pid != os.getpid():
            self._after_fork()
        if not self._started:
            self._start()

        if self._spool is not None:
            return self._submit_spooled(event)

        size = _estimate_size(event)
        born = time.monotonic()
        with self._lock:
            if not self._has_room(size) and not self._wait_for_room(size):
                self._drop_at_door(event, "shutdown" if self._closed else "queue_full")
                return False
            more = self._append(_Item(self._seq, event, size, born))
        if more:
            self._spawn_worker()
        return True

    def _submit_spooled(self, event: dict[str, Any]) -> bool:
        data = _serialize(event)
        if data is None or len(data) > self._max_event_bytes:
            with self._lock:
                self._drop_at_door(event, "malformed" if data is None else "too_large")
            return False

        take, row, failure = self._spool_add(data)
        born = time.monotonic()
        more = None
        with self._lock:
            if take and (self._has_room(len(data)) or self._wait_for_room(len(data))):
                item = _Item(self._seq, event, len(data), born, data, row)
                more = self._append(item)
                if failure is not None:
                    self._unspooled += 1
                    self._spool_notes_add(_NOT_DURABLE % failure)
            else:
                self._drop_at_door(event, "shutdown" if self._closed else "queue_full")
        if more is not None:
            if more:
                self._spawn_worker()  # takes the lock itself: never under it
            return True
        if row is not None:
            self._unspool_refused(row)
        return False

    def _spool_add(self, data: bytes) -> tuple[bool, int | None, str | None]:
        """Write an event to the spool; return whether to queue it, its row, a failure.

        A spool that cannot be written (a file another connection locked, a full
        disk) costs neither the event nor the caller's time: after at most the
        spool's short wait the event is queued in memory only. A full spool refuses
        it, as a full queue does.
        """
        assert self._spool is not None
        if self._closed:
            return False, None, None
        try:
            row = self._spool.add(data, wait=ADD_WAIT)
        except Exception as exc:
            return True, None, _cause(exc)
        return row is not None, row, None

    def _unspool_refused(self, row: int) -> None:
        """Delete the row of an event the queue refused, on the caller's thread."""
        assert self._spool is not None
        try:
            self._spool.remove([row], wait=ADD_WAIT)
        except Exception as exc:
            with self._lock:
                self._spool_notes_add(_LEFT_ON_DISK % _cause(exc))

    def _spool_notes_add(self, note: str) -> None:
        """Keep a spool failure for a sending thread to log; under the lock."""
        self._spool_notes[note] = self._spool_notes.get(note, 0) + 1

    def _has_room(self, size: int) -> bool:
        if self._closed:
            return False
        if not self._queue:
            return True
        return (
            len(self._queue) < self._max_events
            and self._queued_bytes + size <= self._max_bytes
        )

    def _wait_for_room(self, size: int) -> bool:
        """Wait (lock released) for room when `when_full="block"`; under the lock."""
        if not self._block or self._closed:
            return False
        return self._space.wait_for(lambda: self._has_room(size), self._block_timeout)

    def _append(self, item: _Item) -> bool:
        """Queue `item`; under the lock. True when a worker should be added.

        Every full batch wakes a worker. A backlog of two batches with no idle
        worker (all of them waiting on a slow ingest) asks for one more, which
        sends in parallel or, in an outage, compacts the waiting events. There is
        one worker more than `max_in_flight`, so that even with every request stuck
        on an ingest that does not answer, one is free to compact.
        """
        self._seq += 1
        self._pending += 1
        self._queue.append(item)
        self._queued_bytes += item.size
        queued = len(self._queue)
        if queued != 1 and queued % self._batch_size:
            return False
        self._wake.notify()
        return (
            queued >= 2 * self._batch_size
            and self._idle == 0
            and len(self._workers) <= self._max_in_flight
        )

    def _drop_at_door(self, event: dict[str, Any], reason: DropReason) -> None:
        """Count an event refused by submit; under the lock, so no logging here."""
        self._seq += 1
        self._dropped[reason] += 1
        self._door_counts[reason] = self._door_counts.get(reason, 0) + 1
        sample = self._door.setdefault(reason, [])
        if len(sample) < _DOOR_SAMPLE:
            sample.append(event)

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything submitted before this call; `False` if `timeout` passed.

        The calling thread sends batches itself alongside the workers, so a worker
        that died or was frozen (serverless) cannot stall it. Request timeouts and
        backoff waits are capped at what remains of `timeout`; undelivered events stay
        queued.
        """
        if self._pid != os.getpid():
            self._after_fork()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)

        with self._lock:
            target = self._seq
            self._flushers += 1
            self._wake.notify_all()

        def settled() -> bool:
            return self._oldest_unsettled() >= target

        try:
            while True:
                batch = self._next_batch(deadline, settled)
                if batch is None:
                    break
                self._process(batch, deadline)
                self._report_door_drops()
        finally:
            with self._lock:
                self._flushers -= 1
                done = settled()
            self._report_door_drops()
        return done

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush within `timeout`, stop the workers and drop what is left (`shutdown`).

        With a spool, what is left stays on disk for the next process instead. Returns
        whether everything was delivered or dropped for another reason before the
        deadline. Later submits are dropped with reason `shutdown`.
        """
        if self._pid != os.getpid():
            self._after_fork()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        delivered_all = self.flush(timeout)

        with self._lock:
            self._closed = True
            self._stopping = True
            leftover = list(self._queue)
            for batch in self._parked:
                leftover.extend(batch.items)
            self._queue.clear()
            self._queued_bytes = 0
            self._parked.clear()
            idle = not self._inflight
            if self._spool is None:
                self._dropped["shutdown"] += len(leftover)
                self._pending -= len(leftover)
            self._wake.notify_all()
            self._space.notify_all()

        for worker in list(self._workers):
            if worker is threading.current_thread():
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            worker.join(None if remaining is None else max(0.0, remaining))

        if leftover and self._spool is None:
            self._report("shutdown", leftover, None, "not delivered before shutdown")
        self._report_door_drops()
        for log in (self._drop_log, self._spool_log, self._callback_log):
            log.drain()
        _senders.discard(self)
        if idle:
            try:
                self._transport.close()
            except Exception:
                logger.debug("traket transport close failed", exc_info=True)
        return delivered_all

    def stats(self) -> DeliveryStats:
        """Return a consistent snapshot of the counters."""
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            return DeliveryStats(
                enqueued=self._seq,
                delivered=self._delivered,
                retried=self._retried,
                pending=self._pending,
                dropped=dict(self._dropped),
                unspooled=self._unspooled,
            )

    # -- threads, fork and recovery ------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        self._spawn_worker()

    def _spawn_worker(self) -> None:
        thread = threading.Thread(
            target=self._worker_loop, name="traket-sender", daemon=True
        )
        with self._lock:
            if self._stopping or len(self._workers) > self._max_in_flight:
                return
            self._workers.append(thread)
        try:
            thread.start()
        except RuntimeError:
            # The interpreter is shutting down (3.12+ refuses new threads) or out of
            # threads; flush() and the exit hook send on their own thread instead.
            with self._lock:
                self._workers.remove(thread)

    def _after_fork(self) -> None:
        """Start over in a child: the parent's events, locks and sockets stay its own.

        Replacing the locks (rather than releasing them) is what keeps a lock that
        another parent thread held at fork time from deadlocking the child.
        """
        self._init_state()
        try:
            self._transport.reset()
        except Exception:
            logger.debug("traket transport reset after fork failed", exc_info=True)
        if self._spool is not None:
            self._spool.reopen()

    def _recover(self) -> None:
        """Queue the events a previous process left in the spool."""
        assert self._spool is not None
        rows = self._spool.load()
        if not rows:
            return
        born = time.monotonic()
        with self._lock:
            for row, data in rows:
                try:
                    event = json.loads(data)
                except Exception:  # sent as stored; reported as {} if dropped
                    event = {}
                self._append(_Item(self._seq, event, len(data), born, data, row))
        logger.debug("traket recovered %d spooled event(s)", len(rows))
        self._start()

    # -- the sending side -----------------------------------------------------------

    def _worker_loop(self) -> None:
        """Take batches and send them until the sender stops.

        `_process` settles a batch whatever goes wrong; an exception still reaching
        this loop is a bug of ours, logged while the loop goes on, since a dead
        worker would leave delivery to `flush` alone.
        If the thread ends anyway, it leaves the list so the next submit starts one.
        """
        try:
            while True:
                batch = self._next_batch(None, None)
                if batch is None:
                    if self._stopping:
                        return
                    self._compact()
                else:
                    # Hand the backlog to another worker before this one may block
                    # on the ingest: once the producers have stopped, no submit
                    # will ask for one.
                    if self._wants_worker():
                        self._spawn_worker()
                    try:
                        self._process(batch, None)
                    except Exception:
                        logger.debug("traket sender failed on a batch", exc_info=True)
                self._report_door_drops()
        finally:
            with self._lock:
                current = threading.current_thread()
                if current in self._workers:
                    self._workers.remove(current)
                if not self._workers and not self._stopping:
                    self._started = False

    def _wants_worker(self) -> bool:
        with self._lock:
            return (
                len(self._queue) >= self._batch_size
                and self._idle == 0
                and len(self._workers) <= self._max_in_flight
            )

    def _next_batch(
        self, deadline: float | None, until: Callable[[], bool] | None
    ) -> _Batch | None:
        """Wait for work and take it, or return `None`.

        A worker (`until is None`) gets `None` when it should stop, report drops or
        compact; it takes a batch only while fewer than `max_in_flight` are in
        flight. A flusher takes one regardless (a stuck worker must not stall it)
        and gets `None` once `until()` holds or its deadline has passed.
        """
        worker = until is None
        with self._lock:
            while True:
                if worker and self._stopping:
                    return None
                if until is not None and until():
                    return None
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return None
                slot = not worker or len(self._inflight) < self._max_in_flight
                batch = self._take_ready(now) if slot else None
                if batch is not None:
                    batch.taken_at = now
                    self._inflight.add(batch)
                    return batch

                # With every slot taken, wait for a settle to free one.
                wait = self._time_to_work(now) if slot else _IDLE_WAKE
                if deadline is not None:
                    wait = min(wait, deadline - now)
                if worker:
                    if self._door_counts or self._spool_notes:
                        return None
                    if self._backlog_to_compact():
                        return None
                    self._idle += 1
                    try:
                        self._wake.wait(wait)
                    finally:
                        self._idle -= 1
                else:
                    self._wake.wait(wait)

    def _take_ready(self, now: float) -> _Batch | None:
        """Pop a batch that is due: a parked retry first, else queued events; locked."""
        if self._parked:
            # A batch waiting out a backoff means the ingest asked for a pause: new
            # batches wait too, so an outage costs one probe per backoff, not a storm.
            due = min(self._parked, key=lambda batch: batch.ready_at)
            if due.ready_at > now:
                return None
            self._parked.remove(due)
            return due

        if not self._queue:
            return None
        urgent = self._flushers > 0 or self._stopping
        full = len(self._queue) >= self._batch_size
        if not (urgent or full or now - self._queue[0].born >= self._flush_interval):
            return None

        items = [
            self._queue.popleft()
            for _ in range(min(self._batch_size, len(self._queue)))
        ]
        self._queued_bytes -= sum(item.size for item in items)
        if self._block:
            self._space.notify(len(items))
        return _Batch(items)

    def _backlog_to_compact(self) -> bool:
        """Tell whether two batches' worth of queued events wait uncompacted; locked.

        Behind a failing or stuck ingest, events compacted to JSON only count as
        uncompacted until they are packed.
        """
        if not self._queue:
            return False
        mark = self._compact_mark
        if self._pack_mark < mark and self._stuck():
            mark = self._pack_mark
        first = max(mark, self._queue[0].seq)
        return self._queue[-1].seq - first + 1 >= 2 * self._batch_size

    def _stuck(self) -> bool:
        """Tell whether a batch waits out a backoff or every slot is held up; locked."""
        if self._parked:
            return True
        if len(self._inflight) < self._max_in_flight:
            return False
        newest = max(batch.taken_at for batch in self._inflight)
        return time.monotonic() - newest >= _STUCK_AFTER

    def _compact(self) -> None:
        """Swap waiting events for their JSON bytes, which take a third the memory.

        Behind an ingest that is failing (a batch waits out a backoff) or stuck (every
        request slot taken for a second), the JSON is packed too, to a third again.
        Runs on a worker with no batch to send, without the lock: only `data` and
        `event` of each item change, in the order `_Item` documents, and every
        reader of `data` unpacks it.
        """
        with self._lock:
            stuck = self._stuck()
            mark = self._pack_mark if stuck else self._compact_mark
            items = [item for item in self._queue if item.seq >= mark]
            if items:
                self._compact_mark = max(self._compact_mark, items[-1].seq + 1)
                if stuck:
                    self._pack_mark = items[-1].seq + 1
        for item in items:
            data = item.data
            if data is None:
                event = item.event
                if event is None:
                    continue  # compacted since the list was made
                data = _serialize(event)
                if data is None:
                    continue  # left whole; the send path drops it as malformed
                item.data = data
            if stuck and data[:1] != _PACKED:
                item.data = _pack(data)
            item.event = None

    def _time_to_work(self, now: float) -> float:
        wait = _IDLE_WAKE
        if self._parked:
            wait = min(wait, min(batch.ready_at for batch in self._parked) - now)
        elif self._queue:
            wait = min(wait, self._queue[0].born + self._flush_interval - now)
        return max(wait, 0.0005)

    def _oldest_unsettled(self) -> int:
        """Return the lowest sequence number not yet delivered or dropped; locked."""
        oldest = self._seq
        if self._queue:
            oldest = self._queue[0].seq
        for batch in self._parked:
            oldest = min(oldest, batch.first_seq)
        for batch in self._inflight:
            oldest = min(oldest, batch.first_seq)
        return oldest

    def _process(self, batch: _Batch, deadline: float | None) -> None:
        """Send a taken batch (and the parts it splits into) until settled or parked.

        Never raises. An unexpected error (a bug of ours, a retry policy or transport
        that raises) drops what this thread still holds as `internal_error`, so every
        event is accounted for and no flush waits for it.
        """
        work = [batch]
        current: _Batch | None = None
        try:
            work = self._prepare(batch)
            while work:
                current = work.pop()
                if deadline is not None and time.monotonic() >= deadline:
                    for rest in [current, *work]:
                        self._park(rest, time.monotonic())
                    return
                work.extend(self._attempt(current, deadline))
                current = None
        except Exception as exc:
            held = work if current is None else [current, *work]
            self._abandon(held, exc)

    def _abandon(self, batches: list[_Batch], exc: Exception) -> None:
        """Drop `batches` still in flight after an unexpected error; never raises.

        A batch in flight belongs to the thread that took it, and `_settle` takes it
        out of flight, so the ones found there are exactly those not yet counted.
        """
        with self._lock:
            stranded = [batch for batch in batches if batch in self._inflight]
        name = type(exc).__name__
        detail = f"traket failed while sending ({name}); the events were not sent"
        for batch in stranded:
            self._settle(batch, [], [("internal_error", batch.items, detail)])
        with contextlib.suppress(Exception):
            logger.debug("traket failed on a batch: %s", name, exc_info=exc)

    def _prepare(self, batch: _Batch) -> list[_Batch]:
        """Serialize, drop what cannot be sent, cut the rest by `max_batch_bytes`."""
        malformed: list[_Item] = []
        too_large: list[tuple[_Item, int]] = []
        sendable: list[tuple[_Item, int]] = []
        for item in batch.items:
            data = item.data
            if data is None:
                event = item.event
                if event is None:  # compacted since `data` was read
                    data = item.data or b""
                else:
                    data = _serialize(event)
                    if data is None:
                        malformed.append(item)
                        continue
                    item.data = data
            if data[:1] == _PACKED:
                data = item.data = _unpack(data)
            length = len(data)
            if length > self._max_event_bytes:
                too_large.append((item, length))
            else:
                sendable.append((item, length))

        envelope = len(_BODY_HEAD) + len(_BODY_TAIL)
        parts: list[_Batch] = []
        current: list[_Item] = []
        size = envelope
        for item, length in sendable:
            if current and size + length + 1 > self._max_batch_bytes:
                parts.append(batch.part(current))
                current, size = [], envelope
            current.append(item)
            size += length + 1
        if current:
            parts.append(batch.part(current))

        drops: list[tuple[DropReason, list[_Item], str]] = []
        if malformed:
            drops.append(("malformed", malformed, "not serializable as JSON"))
        if too_large:
            sizes = ", ".join(str(length) for _, length in too_large[:5])
            detail = f"event over {self._max_event_bytes} bytes: {sizes}"
            drops.append(("too_large", [item for item, _ in too_large], detail))
        self._settle(batch, [], drops, replace=parts)
        parts.reverse()  # popped from the end: send in submit order
        return parts

    def _attempt(self, batch: _Batch, deadline: float | None) -> list[_Batch]:
        """Send a batch once; settle it, park it for a retry, or return its halves."""
        now = time.monotonic()
        timeout = self._request_timeout
        if deadline is not None:
            timeout = min(timeout, deadline - now)
        if batch.attempts and now - batch.oldest > self._retry.max_event_age:
            self._settle(batch, [], [("expired", batch.items, "retried too long")])
            return []

        payload = _body(batch.items)
        size = len(payload)
        if self._gzip:
            payload = gzip.compress(payload, compresslevel=6, mtime=0)

        try:
            response = self._transport.send(
                payload, gzipped=self._gzip, timeout=timeout
            )
        except TransportError as exc:
            logger.debug(
                "traket batch of %d event(s) not sent: %s", len(batch.items), exc
            )
            self._retry_later(batch, None)
            return []
        except Exception as exc:
            logger.debug(
                "traket transport raised %s", type(exc).__name__, exc_info=True
            )
            self._retry_later(batch, None)
            return []

        verdict = classify(response.status)
        logger.debug(
            "traket sent %d event(s) in %d bytes: HTTP %d",
            len(batch.items),
            size,
            response.status,
        )
        if verdict is Verdict.DELIVERED:
            self._delivered_batch(batch, response)
        elif verdict is Verdict.RETRY:
            self._retry_later(batch, response.headers.get("Retry-After"))
        elif verdict is Verdict.SPLIT:
            return self._split(batch, response, "too_large")
        elif verdict is Verdict.UNAUTHORIZED:
            self._unauthorized(batch, response)
        elif response.status in _MALFORMED and len(batch.items) > 1:
            # One bad event must not take the others down: halve the batch until
            # the ingest names no fault, or a single event is left to drop.
            return self._split(batch, response, "malformed")
        else:
            self._settle(
                batch,
                [],
                [("malformed", batch.items, _detail(response))],
                status=response.status,
            )
        return []

    def _delivered_batch(self, batch: _Batch, response: TransportResponse) -> None:
        """Settle a batch the ingest took: every event but those it lists `rejected`.

        A 2xx means the ingest took the batch whatever its body says, so a body that
        cannot be read (not JSON, nested too deep to parse) rejects nothing.
        """
        try:
            rejected = _rejected_indexes(response.body, len(batch.items))
        except Exception as exc:
            self._settle(batch, batch.items, [])
            self._unreadable_answer(response.status, len(batch.items), exc)
            return
        if not rejected:
            self._settle(batch, batch.items, [])
            return
        refused = [batch.items[index] for index in sorted(rejected)]
        taken = [
            item for index, item in enumerate(batch.items) if index not in rejected
        ]
        detail = "; ".join(error for error in rejected.values() if error)[
            :_DETAIL_CHARS
        ]
        self._settle(
            batch, taken, [("rejected", refused, detail)], status=response.status
        )

    def _unreadable_answer(self, status: int, count: int, exc: Exception) -> None:
        """Say once, at WARNING, that a 2xx body could not be read; then at DEBUG."""
        with self._lock:
            first = not self._warned_unreadable
            self._warned_unreadable = True
        with contextlib.suppress(Exception):
            logger.log(
                logging.WARNING if first else logging.DEBUG,
                "traket could not read the ingest's HTTP %d answer (%s); its %d "
                "event(s) count as delivered",
                status,
                type(exc).__name__,
                count,
            )

    def _split(
        self, batch: _Batch, response: TransportResponse, reason: DropReason
    ) -> list[_Batch]:
        """Resend `batch` as two halves; a single event is dropped for `reason`."""
        if len(batch.items) == 1:
            if reason == "too_large":
                size = len(_unpack(batch.items[0].data or b""))
                detail = f"event of {size} bytes refused"
            else:
                detail = _detail(response)
            self._settle(
                batch, [], [(reason, batch.items, detail)], status=response.status
            )
            return []
        middle = len(batch.items) // 2
        halves = [
            batch.part(batch.items[:middle]),
            batch.part(batch.items[middle:]),
        ]
        self._settle(batch, [], [], replace=halves)
        return [halves[1], halves[0]]

    def _unauthorized(self, batch: _Batch, response: TransportResponse) -> None:
        loud = False
        with self._lock:
            if not self._warned_unauthorized:
                self._warned_unauthorized = loud = True
        if loud:
            logger.error(
                "traket ingest refused the write key (HTTP %d); events are dropped "
                "until the key is fixed (check TRAKET_WRITE_KEY)",
                response.status,
            )
        self._settle(
            batch,
            [],
            [("unauthorized", batch.items, f"HTTP {response.status}")],
            status=response.status,
            quiet=True,
        )

    def _retry_later(self, batch: _Batch, retry_after: str | None) -> None:
        batch.attempts += 1
        delay = self._retry.backoff(batch.attempts, retry_after)
        now = time.monotonic()
        if now + delay - batch.oldest > self._retry.max_event_age:
            self._settle(batch, [], [("expired", batch.items, "retried too long")])
            return
        with self._lock:
            self._retried += len(batch.items)
        self._park(batch, now + delay)

    def _park(self, batch: _Batch, ready_at: float) -> None:
        """Move a batch from in flight to the retry list, due at `ready_at`."""
        with self._lock:
            if self._stopping:
                stopped = True
            else:
                stopped = False
                self._inflight.discard(batch)
                batch.ready_at = ready_at
                self._parked.append(batch)
                self._wake.notify()
        if stopped:
            self._settle(batch, [], [("shutdown", batch.items, "sender shut down")])

    def _settle(
        self,
        batch: _Batch,
        delivered: list[_Item],
        drops: list[tuple[DropReason, list[_Item], str]],
        *,
        status: int | None = None,
        replace: list[_Batch] | None = None,
        quiet: bool = False,
    ) -> None:
        """Account for a batch's events and replace it in flight by `replace`, if any.

        Spool rows go first, outside the lock, so a crash between the two resends (the
        ingest de-duplicates) rather than loses. Callbacks and logs run before the
        counts change, so a flush that returns has seen its drops reported, and never
        under the lock. Never raises: `_abandon` relies on a batch leaving flight only
        once its events are counted.
        """
        self._forget_rows(delivered, drops)
        for reason, items, detail in drops:
            self._report(reason, items, status, detail, quiet=quiet)

        dropped = sum(len(items) for _, items, _ in drops)
        with self._lock:
            self._inflight.discard(batch)
            if replace:
                self._inflight.update(replace)
            self._delivered += len(delivered)
            self._pending -= len(delivered) + dropped
            for reason, items, _ in drops:
                self._dropped[reason] += len(items)
            if delivered or dropped:
                self._wake.notify_all()

    def _forget_rows(
        self, delivered: list[_Item], drops: list[tuple[DropReason, list[_Item], str]]
    ) -> None:
        """Delete the spool rows of settled events; if that fails, they stay on disk.

        A row left behind is sent again by a later process and counted once by the
        ingest, so the failure is logged and the events are settled all the same.
        """
        if self._spool is None:
            return
        rows = [item.row for item in delivered if item.row is not None]
        for reason, items, _ in drops:
            if reason not in _KEEP_SPOOLED:
                rows.extend(item.row for item in items if item.row is not None)
        if not rows:
            return
        try:
            self._spool.remove(rows)
        except Exception as exc:
            self._spool_log.note(_LEFT_ON_DISK % _cause(exc), len(rows))

    def _report(
        self,
        reason: DropReason,
        items: list[_Item],
        status: int | None,
        detail: str,
        *,
        quiet: bool = False,
    ) -> None:
        if not quiet:
            self._drop_log.note(reason, len(items))
        if self._on_error is None:
            return
        try:
            events = tuple(event_of(item) for item in items)
        except Exception:  # a compacted event that no longer decodes
            events = ()
        self._call_on_error(DeliveryFailure(reason, events, status, detail))

    def _call_on_error(self, failure: DeliveryFailure) -> None:
        if self._on_error is None:
            return
        try:
            self._on_error(failure)
        except Exception as exc:
            self._callback_log.note(type(exc).__name__, 1)

    def _report_door_drops(self) -> None:
        """Log and call back for what `submit` refused or could not spool.

        On a sending thread: `submit` itself never logs or calls back.
        """
        with self._lock:
            if not self._door_counts and not self._spool_notes:
                return
            counts, self._door_counts = self._door_counts, {}
            samples, self._door = self._door, {}
            notes, self._spool_notes = self._spool_notes, {}
        for note, count in notes.items():
            self._spool_log.note(note, count)
        for reason, count in counts.items():
            self._drop_log.note(reason, count)
            events = tuple(samples.get(reason, ()))
            detail = f"{count} event(s) refused by submit"
            if count > len(events):
                detail += f"; the first {len(events)} are attached"
            self._call_on_error(DeliveryFailure(reason, events, None, detail))


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f">= {low}" if high is None else f"from {low} to {high}"
        raise ConfigurationError(f"{name}: expected an int {bound}, received {value!r}")


def _check_seconds(name: str, value: object) -> None:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigurationError(
            f"{name}: expected a finite number of seconds >= 0, received {value!r}"
        )
