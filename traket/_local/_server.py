"""The local ingest: answers the SDK as INGEST.md says and stores events in SQLite."""

from __future__ import annotations

import errno
import hmac
import ipaddress
import json
import logging
import math
import signal
import socket
import socketserver
import sqlite3
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import urlsplit

from traket._client import write_key_problem
from traket._errors import ConfigurationError, InvalidEventError, TraketError
from traket._local._store import EventStore, InsertResult, encode_event, parse_timestamp

__all__ = [
    "INGEST_PATH",
    "MAX_BODY_BYTES",
    "MAX_EVENTS",
    "MAX_EVENT_BYTES",
    "IngestError",
    "IngestServer",
    "SetupError",
    "decode_body",
    "ingest",
    "open_store",
    "run_server",
    "validate_batch",
    "validate_event",
]

logger = logging.getLogger(__name__)

INGEST_PATH = "/api/v1/usage/events"
MAX_BODY_BYTES = 1024 * 1024
MAX_EVENT_BYTES = 32 * 1024
MAX_EVENTS = 100

# A refused body is read and thrown away up to this size, so the client sees the
# answer instead of a reset connection; anything larger closes the connection.
_DRAIN_LIMIT = 8 * MAX_BODY_BYTES

# Bounds on values no real event carries, so a broken sender cannot store numbers
# that wreck every report. Counts stop at the largest integer a JSON reader in any
# language keeps exactly; a single call costing over a billion is a bug.
_MAX_COUNT = 2**53 - 1
_MAX_COST = 1e9
_EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
_MAX_AHEAD = timedelta(days=7)
_COUNT = "a non-negative integer up to 2**53-1"

_STRING_FIELDS = (
    "model",
    "externalCustomerId",
    "customerId",
    "feature",
    "environment",
    "promptType",
    "operation",
    "status",
    "providerRequestId",
    "providerResponseId",
    "traceId",
    "attributionQuality",
    "granularity",
    "priceVersion",
)
_COST_STRING_FIELDS = ("currency", "source", "priceVersion")
_UNIT_STRING_FIELDS = ("unitName", "unitType", "providerRawKey")
_UNIT_NUMBER_FIELDS = ("quantity", "billableQuantity")


class IngestError(TraketError):
    """A request the ingest refuses: an HTTP status and the JSON body saying why."""

    def __init__(
        self,
        status: int,
        error: str,
        *,
        index: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.index = index
        self.field = field

    def body(self) -> dict[str, object]:
        """Return the JSON body: `error`, plus `index` and `field` when known."""
        body: dict[str, object] = {"error": self.error}
        if self.index is not None:
            body["index"] = self.index
        if self.field is not None:
            body["field"] = self.field
        return body


class SetupError(ConfigurationError):
    """The ingest cannot start with one of its settings: `option` names which.

    `option` is `db`, `host`, `port` or `write_key`; `problem` says what is wrong
    with it (the message without the option's name), so a command line can name
    its own flag instead.
    """

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option}: {problem}")
        self.option = option
        self.problem = problem


# --- checking a batch -------------------------------------------------------------


def _kind(value: object) -> str:
    """Name a JSON value's type, never its content."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        if value < 0:
            return "a negative integer"
        return "an integer" if value <= _MAX_COUNT else "an integer out of range"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "an empty string" if not value else "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _is_count(value: object) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and 0 <= value <= _MAX_COUNT
    )


def _check_count(value: object, field: str) -> None:
    if value is not None and not _is_count(value):
        raise InvalidEventError(field, _COUNT, _kind(value))


def _is_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _check_string(value: object, field: str) -> None:
    if value is not None and not isinstance(value, str):
        raise InvalidEventError(field, "a string", _kind(value))


def _check_metadata(value: object, field: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise InvalidEventError(field, "an object of scalar values", _kind(value))
    for key, item in value.items():
        scalar = item is None or isinstance(item, (str, bool, int)) or _is_number(item)
        if not scalar:
            raise InvalidEventError(
                f"{field}.{key}", "a string, number, boolean or null", _kind(item)
            )


def _check_usage(usage: object) -> None:
    if usage is None:
        return
    if not isinstance(usage, dict):
        raise InvalidEventError("usage", "an object", _kind(usage))
    for key, value in usage.items():
        if isinstance(value, dict):
            for name, count in value.items():
                _check_count(count, f"usage.{key}.{name}")
        else:
            _check_count(value, f"usage.{key}")


def _check_cost(cost: object) -> None:
    if cost is None:
        return
    if not isinstance(cost, dict):
        raise InvalidEventError("cost", "an object", _kind(cost))
    amount = cost.get("amount")
    if amount is not None and not _is_number(amount):
        raise InvalidEventError("cost.amount", "a number", _kind(amount))
    if amount is not None and abs(amount) > _MAX_COST:
        raise InvalidEventError(
            "cost.amount", "a number from -1e9 to 1e9", "a number out of range"
        )
    for name in _COST_STRING_FIELDS:
        _check_string(cost.get(name), f"cost.{name}")
    _check_metadata(cost.get("metadata"), "cost.metadata")


def _check_units(units: object) -> None:
    if units is None:
        return
    if not isinstance(units, list):
        raise InvalidEventError("units", "a list of objects", _kind(units))
    for position, unit in enumerate(units):
        field = f"units[{position}]"
        if not isinstance(unit, dict):
            raise InvalidEventError(field, "an object", _kind(unit))
        for name in _UNIT_NUMBER_FIELDS:
            value = unit.get(name)
            if value is not None and not _is_number(value):
                raise InvalidEventError(f"{field}.{name}", "a number", _kind(value))
        for name in _UNIT_STRING_FIELDS:
            _check_string(unit.get(name), f"{field}.{name}")
        _check_metadata(unit.get("metadata"), f"{field}.metadata")


def _check_occurred_at(value: object, now: datetime | None) -> None:
    """Require a parsable time from 2000-01-01 to `_MAX_AHEAD` past `now`."""
    moment = parse_timestamp(value) if isinstance(value, str) else None
    if moment is None:
        received = "a string that is not one" if isinstance(value, str) else None
        raise InvalidEventError(
            "occurredAt", "an ISO 8601 date and time", received or _kind(value)
        )

    expected = "a date and time from 2000-01-01 to 7 days ahead"
    if moment < _EARLIEST:
        raise InvalidEventError("occurredAt", expected, "a time before 2000-01-01")
    if moment > (now or datetime.now(timezone.utc)) + _MAX_AHEAD:
        raise InvalidEventError("occurredAt", expected, "a time over 7 days ahead")


def validate_event(event: object, *, now: datetime | None = None) -> None:
    """Check one wire event; raise `InvalidEventError` naming the first bad field.

    Optional fields may be absent or null. Keys the contract does not name are kept as
    they are, so a newer SDK can send more. Values no real call produces are refused
    too: a cost beyond a billion, counts past 2**53-1, a time before 2000 or over a
    week past `now` (default: the current time). Received values are described by
    their JSON type only: neither the error nor a log line built from it carries event
    content.
    """
    if not isinstance(event, dict):
        raise InvalidEventError("event", "an object", _kind(event))

    for name in ("provider", "idempotencyKey"):
        value = event.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidEventError(name, "a non-empty string", _kind(value))

    _check_occurred_at(event.get("occurredAt"), now)

    for name in _STRING_FIELDS:
        _check_string(event.get(name), name)
    _check_count(event.get("durationMs"), "durationMs")

    _check_usage(event.get("usage"))
    _check_cost(event.get("cost"))
    _check_units(event.get("units"))
    _check_metadata(event.get("metadata"), "metadata")


def validate_batch(payload: object) -> list[dict[str, Any]]:
    """Return the events of a decoded request body, or raise a 400 `IngestError`.

    One malformed event refuses the whole batch, so nothing is half stored; the error
    names the event's index and the field.
    """
    if not isinstance(payload, dict):
        raise IngestError(
            400, "the body must be a JSON object with an events list", field="events"
        )
    events = payload.get("events")
    if not isinstance(events, list):
        raise IngestError(400, "events: expected a list of events", field="events")
    if not 1 <= len(events) <= MAX_EVENTS:
        raise IngestError(
            400,
            f"events: expected 1 to {MAX_EVENTS} events, received {len(events)}",
            field="events",
        )

    now = datetime.now(timezone.utc)
    for index, event in enumerate(events):
        try:
            validate_event(event, now=now)
        except InvalidEventError as exc:
            raise IngestError(400, str(exc), index=index, field=exc.field) from exc
    return events


def _gunzip(data: bytes) -> bytes:
    """Decompress gzip members, refusing output over `MAX_BODY_BYTES` as it grows."""
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data, MAX_BODY_BYTES + 1 - len(out))
        except zlib.error as exc:
            raise IngestError(400, "the body is not valid gzip") from exc
        if len(out) > MAX_BODY_BYTES:
            raise IngestError(
                413, f"the decompressed body is over {MAX_BODY_BYTES} bytes"
            )
        if not inflater.eof:
            raise IngestError(400, "the gzip body is truncated")
        data = inflater.unused_data
    return bytes(out)


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def decode_body(body: bytes, content_encoding: str | None = None) -> object:
    """Decompress (gzip or identity) and parse a request body; raise `IngestError`."""
    if len(body) > MAX_BODY_BYTES:
        raise IngestError(413, f"the body is over {MAX_BODY_BYTES} bytes")

    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        body = _gunzip(body)
    elif encoding != "identity":
        raise IngestError(415, "Content-Encoding: expected gzip or identity")

    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise IngestError(400, "the body is not valid JSON") from exc


def ingest(
    store: EventStore, body: bytes, *, content_encoding: str | None = None
) -> InsertResult:
    """Decode, check and store one request body, or raise `IngestError` saying why not.

    This is the whole answer of the ingest minus HTTP, so a test server that misbehaves
    on purpose (stores, then drops the connection) can reuse it.
    """
    events = validate_batch(decode_body(body, content_encoding))

    texts: list[str] = []
    for index, event in enumerate(events):
        try:
            text = encode_event(event)
            size = len(text.encode("utf-8"))
        except ValueError as exc:
            # Numbers too large for a float (1e999) and lone surrogates ("\ud800")
            # parse, but cannot be stored as JSON text.
            raise IngestError(
                400,
                "the event holds a number out of range or text that is not Unicode",
                index=index,
                field="event",
            ) from exc
        if size > MAX_EVENT_BYTES:
            raise IngestError(
                413,
                f"event {index} is {size} bytes; the limit is {MAX_EVENT_BYTES}",
                index=index,
            )
        texts.append(text)

    return store._insert(events, texts)


# --- HTTP ----------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Answer one connection's requests; every answer is JSON."""

    server: _IngestHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "traket-local-ingest"
    sys_version = ""
    # Idle keep-alive connections and stalled uploads are dropped after this long.
    timeout = 30.0

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the ingest logs one DEBUG line per batch and nothing else."""

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def parse_request(self) -> bool:
        self._body_read = False
        return super().parse_request()

    def do_POST(self) -> None:
        try:
            if urlsplit(self.path).path != INGEST_PATH:
                raise IngestError(404, f"not found; POST events to {INGEST_PATH}")
            if not self.server.authorized(self.headers.get("Authorization")):
                raise IngestError(401, "missing or wrong write key")
            with self.server.request_slot() as admitted:
                if not admitted:
                    self.close_connection = True
                    raise IngestError(503, "the ingest is shutting down")
                self._take_batch()
        except IngestError as exc:
            logger.debug(
                "refused a request: %d (event index %s)", exc.status, exc.index
            )
            extra = {"Retry-After": "1"} if exc.status == 503 else {}
            self._refuse(exc.status, exc.body(), extra)

    def _take_batch(self) -> None:
        length = self._content_length()
        if length > MAX_BODY_BYTES:
            raise IngestError(413, f"the body is over {MAX_BODY_BYTES} bytes")
        self._body_read = True
        try:
            body = self.rfile.read(length)
        except OSError:  # a stalled upload timed out, or the client went away
            body = b""
        if len(body) < length:
            self.close_connection = True
            return

        encoding = self.headers.get("Content-Encoding")
        try:
            result = ingest(self.server.store, body, content_encoding=encoding)
        except IngestError:
            raise
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise IngestError(503, "the database is busy; try again") from exc
            logger.warning("the local ingest failed on a batch: %s", exc)
            raise IngestError(500, "the ingest failed to store the batch") from exc
        except Exception as exc:
            # The type only: a message could quote the event.
            name = type(exc).__name__
            logger.warning("the local ingest failed on a batch: %s", name)
            raise IngestError(500, "the ingest failed to store the batch") from exc

        logger.debug(
            "took a batch of %d events: %d accepted, %d duplicates",
            result.accepted + result.duplicates,
            result.accepted,
            result.duplicates,
        )
        answer = {"accepted": result.accepted, "duplicates": result.duplicates}
        self._reply(200, {**answer, "rejected": []}, {})

    def _content_length(self) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise IngestError(411, "send a Content-Length; chunked bodies are refused")
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0:
            raise IngestError(400, "Content-Length: expected a non-negative integer")
        return length

    def _not_post(self) -> None:
        if urlsplit(self.path).path != INGEST_PATH:
            self._refuse(404, {"error": f"not found; POST events to {INGEST_PATH}"}, {})
        else:
            error = {"error": f"method {self.command} not allowed; use POST"}
            self._refuse(405, error, {"Allow": "POST"})

    do_GET = do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _not_post

    def _refuse(
        self, status: int, payload: Mapping[str, object], headers: Mapping[str, str]
    ) -> None:
        """Read and discard an unread body, then answer.

        Closing a socket with unread data makes TCP send a reset, and the client would
        see a broken connection instead of this answer.
        """
        self._discard_body()
        self._reply(status, payload, headers)

    def _discard_body(self) -> None:
        if self._body_read:
            return
        self._body_read = True
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if chunked or not 0 <= length <= _DRAIN_LIMIT:
            self.close_connection = True
            return
        try:
            while length > 0:
                chunk = self.rfile.read(min(length, 64 * 1024))
                if not chunk:
                    break
                length -= len(chunk)
        except OSError:
            pass
        if length > 0:
            self.close_connection = True

    def _reply(
        self, status: int, payload: Mapping[str, object], headers: Mapping[str, str]
    ) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _IngestHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its store and key and can drain at stop."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], store: EventStore, key: str) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.store = store
        self._expected = f"Bearer {key}".encode()
        self._cond = threading.Condition()
        self._active = 0
        self._closing = False
        self._connections: set[socket.socket] = set()

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up in DNS, which can stall.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr; a reset client is not worth one.
        logger.debug("a connection to the local ingest failed", exc_info=False)

    def authorized(self, header: str | None) -> bool:
        """Compare an Authorization header with the expected one in constant time."""
        if header is None:
            return False
        # http.server decodes header bytes as latin-1; encoding back restores them.
        scheme, _, token = header.strip().partition(" ")
        received = f"Bearer {token.strip()}" if scheme.lower() == "bearer" else ""
        return hmac.compare_digest(received.encode("latin-1"), self._expected)

    def track(self, connection: socket.socket) -> None:
        with self._cond:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._cond:
            self._connections.discard(connection)

    @contextmanager
    def request_slot(self) -> Iterator[bool]:
        """Count a request in flight, or yield `False` once the server is closing."""
        with self._cond:
            admitted = not self._closing
            self._active += admitted
        try:
            yield admitted
        finally:
            if admitted:
                with self._cond:
                    self._active -= 1
                    self._cond.notify_all()

    def close(self, grace: float) -> None:
        """Let requests in flight finish (up to `grace` seconds), then close it all."""
        with self._cond:
            self._closing = True
            self._cond.wait_for(lambda: self._active == 0, grace)
            connections = list(self._connections)
        # Idle keep-alive connections would otherwise hold their threads until the
        # client hangs up; shutting the socket down wakes them to a clean end.
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.server_close()


class IngestServer:
    """Serve the local ingest over HTTP, storing each accepted batch in `store`.

    The socket is bound on construction, so `url` is known (also with `port=0`) before
    `start()` serves on a background thread or `serve_forever()` on the calling one.
    The store stays the caller's: `stop()` does not close it.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        write_key: str,
    ) -> None:
        _check_write_key(write_key)
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        self._httpd = _bind(host, port, store, write_key)
        self._host = host
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._serving = False
        self._stopped = False

    @property
    def address(self) -> tuple[str, int]:
        """Return the address and port the socket is bound to: `("0.0.0.0", 80)`."""
        return str(self._httpd.server_address[0]), self._httpd.server_port

    @property
    def bound_url(self) -> str:
        """Return the endpoint at the bound address, as a banner should show it.

        Bound to every interface (`0.0.0.0`, `::`), this is not an address to send
        to: `url` is.
        """
        host, port = self.address
        return f"http://{_url_host(host)}:{port}{INGEST_PATH}"

    @property
    def url(self) -> str:
        """Return the endpoint to give the SDK, e.g. `http://127.0.0.1:8787/api/...`.

        Bound to every interface, this is the loopback address of the same family,
        which reaches the ingest from this machine.
        """
        host, port = self.address
        if ipaddress.ip_address(host.partition("%")[0]).is_unspecified:
            host = "::1" if ":" in host else "127.0.0.1"
        elif self._host:
            host = self._host  # the name the caller chose, such as localhost
        return f"http://{_url_host(host)}:{port}{INGEST_PATH}"

    @property
    def loopback(self) -> bool:
        """Return whether the ingest is reachable from this machine only."""
        return _is_loopback(self.address[0])

    def __repr__(self) -> str:
        return f"IngestServer(url={self.url!r})"

    def __enter__(self) -> IngestServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _claim(self) -> None:
        if self._stopped:
            raise RuntimeError("this IngestServer is stopped; create another one")
        if self._serving:
            raise RuntimeError("this IngestServer is already serving")
        self._serving = True

    def start(self) -> None:
        """Serve on a daemon thread and return at once."""
        with self._lock:
            self._claim()
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="traket-local-ingest",
                daemon=True,
            )
            self._thread.start()

    def serve_forever(self) -> None:
        """Serve on the calling thread until `stop()` is called from another one."""
        with self._lock:
            self._claim()
        self._httpd.serve_forever(poll_interval=0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, let requests in flight finish, and close. Idempotent.

        Requests arriving meanwhile on open connections get 503 with `Retry-After`, so
        the SDK sends them again later instead of losing them.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            serving = self._serving

        # shutdown() waits for the serve loop, which must have run or be running.
        if serving:
            self._httpd.shutdown()
        self._httpd.close(grace=timeout)
        if self._thread is not None:
            self._thread.join(timeout)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _check_write_key(write_key: object) -> None:
    """Refuse a key no sender could present in an `Authorization` header."""
    problem = write_key_problem(write_key)
    if problem is not None:
        raise SetupError("write_key", problem)


def _bind(host: str, port: int, store: EventStore, key: str) -> _IngestHTTPServer:
    """Bind the HTTP server, or raise `SetupError` naming the host or the port."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise SetupError(
            "port", f"expected an integer from 0 to 65535, received {port!r}"
        )
    try:
        return _IngestHTTPServer((host, port), store, key)
    except socket.gaierror as exc:
        raise SetupError(
            "host",
            f"expected an IP address or a name this machine resolves, received "
            f"{host!r} ({exc.strerror})",
        ) from exc
    except OSError as exc:
        raise SetupError(*_bind_problem(exc, host, port)) from exc


def _bind_problem(exc: OSError, host: str, port: int) -> tuple[str, str]:
    """Name the setting a failed bind points at, and say what went wrong."""
    if exc.errno == errno.EADDRINUSE:
        return "port", f"port {port} on {host} is already in use by another program"
    if exc.errno == errno.EACCES:
        return "port", f"no permission to listen on port {port} (below 1024?)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "host", f"{host} is not an address of this machine"
    return "host", f"cannot listen on {host} port {port}: {exc.strerror or exc}"


def open_store(db_path: str | Path) -> EventStore:
    """Open the event store, or raise `SetupError` naming `db` and saying why not.

    A file that is not SQLite, a database from a newer traket, a directory that
    cannot be created: each is a bad `db` setting, not a crash.
    """
    try:
        return EventStore(db_path)
    except (sqlite3.Error, OSError, RuntimeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else None
        raise SetupError(
            "db", f"cannot use {str(db_path)!r} as the database: {reason or exc}"
        ) from exc


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while serving, when running on the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_server(
    db_path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int,
    write_key: str,
    on_ready: Callable[[IngestServer], None] | None = None,
) -> None:
    """Serve the local ingest on the calling thread until Ctrl-C or SIGTERM.

    `on_ready` is called with the server once its socket is bound, so it can show
    `bound_url` and `url` (useful with `port=0`). Bound to an address other machines
    can reach, it logs a warning that the traffic is unencrypted. At the end,
    requests in flight finish and the database is closed. A setting it cannot start
    with raises `SetupError` naming it; the key is checked before the database is
    opened.
    """
    _check_write_key(write_key)
    with open_store(db_path) as store, _sigterm_as_interrupt():
        server = IngestServer(store, host=host, port=port, write_key=write_key)
        try:
            if not server.loopback:
                logger.warning(
                    "the local ingest listens on %s over plain HTTP: the write key "
                    "and events cross the network unencrypted",
                    server.address[0],
                )
            if on_ready is not None:
                on_ready(server)
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
