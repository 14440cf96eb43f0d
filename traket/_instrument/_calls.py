"""Meter one OpenAI request: what was asked, what came back, one event at the end.

The patches sit on the client's `request` method, which every resource method,
helper (`parse`, `stream`), raw-response wrapper and client copy goes through
once per call, retries included. A `Call` is created there and lives exactly as
long as the call: until `request` returns, or until the stream it returned ends.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from time import perf_counter
from typing import Any, NamedTuple

from .. import _client, _scope
from .._errors import ConfigurationError
from .._usage import fields_of, usage_from_openai
from . import _extract, _providers, _streams

logger = logging.getLogger("traket.instrument")


@dataclass(frozen=True)
class Config:
    """How one client (or every client) is metered."""

    default_attrs: Mapping[str, Any] | None = None
    margins: Any = None
    stream_usage: bool | None = None


class _Registry:
    """Which clients are metered: every client, or the ones named (and copies)."""

    def __init__(self) -> None:
        self.everyone: Config | None = None
        self.clients: weakref.WeakKeyDictionary[Any, Config] = (
            weakref.WeakKeyDictionary()
        )

    def config_for(self, client: Any) -> Config | None:
        if self.clients:
            try:
                config = self.clients.get(client)
            except TypeError:  # an unhashable client: only global config applies
                config = None
            if config is not None:
                return config
        return self.everyone


registry = _Registry()

# The call being made in this context. Set while `request` runs (never across a
# yield to the application): a nested `request`, or a helper that calls another
# patched method, sees it and passes through, so one call is metered once.
_CURRENT: ContextVar[Call | None] = ContextVar("traket_openai_call", default=None)


class _Warnings:
    """Log our own failures: the first of each kind as a warning, then at DEBUG."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, what: str, error: BaseException | None = None) -> None:
        kind = what if error is None else f"{what}: {type(error).__name__}"
        with self._lock:
            first = kind not in self._seen
            self._seen.add(kind)
        # Only the exception's type is logged: its message may quote user data.
        level = logging.WARNING if first else logging.DEBUG
        logger.log(level, "traket could not meter an OpenAI call (%s)", kind)


warn = _Warnings()


class _Types(NamedTuple):
    streams: tuple[type, type]
    stream: type
    async_stream: type
    legacy: type
    response: type
    async_response: type


@functools.cache
def _openai_types() -> _Types:
    from openai import AsyncStream, Stream
    from openai._legacy_response import LegacyAPIResponse
    from openai._response import APIResponse, AsyncAPIResponse

    return _Types(
        (Stream, AsyncStream),
        Stream,
        AsyncStream,
        LegacyAPIResponse,
        APIResponse,
        AsyncAPIResponse,
    )


def _raw_header() -> str:
    try:
        from openai._constants import RAW_RESPONSE_HEADER
    except ImportError:
        return "X-Stainless-Raw-Response"
    return RAW_RESPONSE_HEADER


def _default_margins() -> Any:
    try:
        return _client.get_client()
    except ConfigurationError:
        warn("no Traket write key; set TRAKET_WRITE_KEY or call traket.configure()")
        return None


class Call:
    """The state of one metered call, from `request` to the event."""

    __slots__ = (
        "_chat",
        "_reported",
        "_responses",
        "_usage",
        "config",
        "done",
        "fields",
        "injected",
        "meta",
        "scope",
        "started",
    )

    def __init__(self, client: Any, config: Config, operation: str, options: Any):
        self.scope = _scope.current_scope()
        self.started = perf_counter()
        self.config = config
        self.done = False
        self.injected = False
        # How the provider said the call ended (a Responses API status, a stream's
        # error event), once it said so; None until then, and for chat.
        self._reported: str | None = None
        self._usage: Any = None
        self._chat = operation == "chat.completions.create"
        self._responses = operation == "responses.create"

        model, stream = _extract.requested(options)
        self.fields: dict[str, Any] = {
            "provider": _providers.provider_of(client),
            "operation": operation,
        }
        self.meta: dict[str, Any] = {"stream": stream}
        if model:
            self.meta["requested_model"] = model

    # -- before the request -------------------------------------------------

    def arguments(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Ask a chat stream for its usage, on a copy of the request options."""
        if not (self._chat and self.meta["stream"]):
            return args, kwargs
        wanted = self.config.stream_usage
        if wanted is None:
            wanted = _providers.accepts_stream_usage(self.fields["provider"])
        if not wanted:
            return args, kwargs

        in_args = len(args) > 1
        options: Any = args[1] if in_args else kwargs.get("options")
        body = options.json_data
        headers = getattr(options, "headers", None)
        if isinstance(headers, Mapping) and headers.get(_raw_header()):
            return args, kwargs  # the caller reads the raw bytes: show them all
        current = body.get("stream_options")
        if current is None:
            stream_options: dict[str, Any] = {"include_usage": True}
        elif isinstance(current, Mapping) and "include_usage" not in current:
            stream_options = {**current, "include_usage": True}
        else:
            return args, kwargs

        from openai._compat import model_copy

        options = model_copy(options)
        options.json_data = {**body, "stream_options": stream_options}
        self.injected = True
        if in_args:
            return (args[0], options, *args[2:]), kwargs
        return args, {**kwargs, "options": options}

    # -- the HTTP exchange ----------------------------------------------------

    def read_http(self, response: Any) -> None:
        """Copy the HTTP status, request id and Azure deployment of a response."""
        if response is None:
            return
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            self.meta["http_status"] = status
        headers = getattr(response, "headers", None)
        if headers is not None:
            request_id = _extract.text(headers.get("x-request-id"))
            if request_id:
                self.fields["providerRequestId"] = request_id
        if self.fields["provider"] == "azure_openai":
            try:
                path = response.request.url.path
            except Exception:  # a response built without its request
                return
            deployment = _providers.azure_deployment(path)
            if deployment:
                self.meta["azure_deployment"] = deployment

    def finish(self, result: Any) -> Any:
        """Meter what `request` returned and return it (or its metering proxy)."""
        try:
            types = _openai_types()
            if isinstance(result, types.streams):
                return self.wrap_stream(result)
            if isinstance(result, types.legacy):
                if getattr(result, "_stream", False):
                    return _streams.MeteredRawResponse(result, self)
                http_response = getattr(result, "http_response", None)
                self._read(_extract.read_json_body(http_response))
                self.end(None)
                return result
            if isinstance(result, types.response):
                return _streams.MeteredRawResponse(result, self)
            if isinstance(result, types.async_response):
                return _streams.AsyncMeteredRawResponse(result, self)
            self._read(result)
            self.end(None)
        except Exception as error:
            self.done = True
            warn("reading the response", error)
        return result

    def fail(self, error: BaseException) -> None:
        """Record a call (or a stream) that ended with an exception."""
        if self.done:
            return
        try:
            self.read_http(getattr(error, "response", None))
            _extract.read_error(error, self.fields, self.meta)
        except Exception as failure:
            warn("reading the error", failure)
        self._record(self.fields.get("status", "error"))

    def end(self, status: str | None) -> None:
        """Record the call: `None` when it completed, else e.g. `cancelled`.

        A stream left after the provider said how it ended (a Responses stream's
        last response, an error event) ended as the provider said, not unfinished.
        """
        if self.done:
            return
        reported = self._reported
        if status is None or (status == "cancelled" and reported is not None):
            status = reported or "success"
        elif status == "cancelled":
            self.meta["finish_state"] = "unfinished"
        self._record(status)

    def _read(self, result: Any) -> None:
        """Read a parsed response (or its JSON body) and the outcome it reports."""
        self._report(
            _extract.read_result(
                result, self.fields, self.meta, responses=self._responses
            )
        )

    def _report(self, status: str | None) -> None:
        # The last outcome reported wins, except over an error already reported.
        if status is not None and self._reported != "error":
            self._reported = status

    # -- streams ------------------------------------------------------------------

    def wrap_stream(self, stream: Any) -> Any:
        types = _openai_types()
        if isinstance(stream, types.stream):
            return _streams.MeteredStream(stream, self)
        if isinstance(stream, types.async_stream):
            return _streams.AsyncMeteredStream(stream, self)
        return stream

    def observer(self) -> Callable[[Any], bool]:
        """Return the per-item observer; it tells whether to hide the item."""
        return self._observe_chunk if self._chat else self._observe_event

    def observe_failed(self, error: Exception) -> Callable[[Any], bool]:
        """Note that observing an item failed; return the observer to go on with.

        The stream goes on unobserved: its event is recorded when it ends, with
        what was seen before and its usage unknown, and one warning is logged. A
        usage-only chunk traket asked for is still hidden.
        """
        warn("reading a stream", error)
        self._usage = None
        self.fields.pop("usage", None)
        self.meta["observed"] = "partial"
        return _hide_usage_only if self.injected else _show_all

    def _observe_chunk(self, chunk: Any) -> bool:
        if "model" not in self.fields:
            model = _extract.text(getattr(chunk, "model", None))
            if model:
                self.fields["model"] = model
                response_id = _extract.text(getattr(chunk, "id", None))
                if response_id:
                    self.fields["providerResponseId"] = response_id
                tier = _extract.text(getattr(chunk, "service_tier", None))
                if tier:
                    self.meta["service_tier"] = tier
        usage = getattr(chunk, "usage", None)
        if usage is None:
            return False
        self._usage = usage  # the last usage reported wins
        # Hide the usage-only chunk we asked for; the app did not ask for it.
        return self.injected and not getattr(chunk, "choices", None)

    def _observe_event(self, event: Any) -> bool:
        # A text delta has no `response`: read the fields, not the attribute,
        # which pydantic answers by raising (slow) when it is missing.
        values = getattr(event, "__dict__", None)
        if type(values) is not dict or getattr(event, "__pydantic_extra__", None):
            values = fields_of(event)
        response = values.get("response")
        if response is not None:
            self._report(
                _extract.read_result(response, self.fields, self.meta, responses=True)
            )
        elif values.get("type") == "error":
            self._report("error")
            code = values.get("code")
            if isinstance(code, str):
                self.meta["error_code"] = code
        return False

    # -- raw responses ------------------------------------------------------------

    def parsed(self, result: Any, streams: Any) -> Any:
        """Meter what a raw response's `parse()` returned; return it (or a proxy)."""
        try:
            types = _openai_types()
            if isinstance(result, types.streams):
                return streams.wrap(result, self)
            if not self.done:
                self._read(result)
                self.end(None)
        except Exception as error:
            warn("reading a raw response", error)
        return result

    def unparsed(self, response: Any, streams: Any) -> None:
        """Record a raw response closed or dropped without a metered `parse()`."""
        if self.done or streams.proxy is not None:
            return
        try:
            body = _extract.read_json_body(response.http_response)
            if body is not None:
                self._read(body)
        except Exception as error:
            warn("reading a raw response", error)
        self.end(None)

    # -- the event ----------------------------------------------------------------

    def _record(self, status: str) -> None:
        self.done = True
        try:
            fields = self.fields
            fields["status"] = status
            fields["durationMs"] = int((perf_counter() - self.started) * 1000)
            if "model" not in fields and "requested_model" in self.meta:
                fields["model"] = self.meta["requested_model"]
            if self._usage is not None:
                usage = usage_from_openai(self._usage)
                if usage is not None:
                    fields["usage"] = usage
            fields["metadata"] = self.meta

            margins = self.config.margins or _default_margins()
            if margins is not None:
                margins.record_observed(
                    fields, scope=self.scope, defaults=self.config.default_attrs
                )
        except Exception as error:
            warn("recording the event", error)
        finally:
            self._usage = None


def _show_all(item: Any) -> bool:
    return False


def _hide_usage_only(chunk: Any) -> bool:
    try:
        return chunk.usage is not None and not chunk.choices
    except Exception:  # not a chat chunk after all: show it
        return False


# -- the wrappers the patches install -------------------------------------------


def _start(client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
    config = registry.config_for(client)
    if config is None:
        return None
    options = args[1] if len(args) > 1 else kwargs.get("options")
    operation = _extract.operation_of(options)
    if operation is None:
        return None
    _scope.note_intercepted()
    return Call(client, config, operation, options)


def _prepare(
    client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Call | None, tuple[Any, ...], dict[str, Any]]:
    if _CURRENT.get() is not None:
        return None, args, kwargs
    try:
        call = _start(client, args, kwargs)
        if call is not None:
            args, kwargs = call.arguments(args, kwargs)
    except Exception as error:
        warn("preparing the call", error)
        return None, args, kwargs
    return call, args, kwargs


def request(
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Wrap `SyncAPIClient.request`."""
    call, args, kwargs = _prepare(instance, args, kwargs)
    if call is None:
        return wrapped(*args, **kwargs)

    token = _CURRENT.set(call)
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as error:
        call.fail(error)
        raise
    finally:
        _CURRENT.reset(token)
    return call.finish(result)


def async_request(
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Wrap `AsyncAPIClient.request` (returns a coroutine, like the original)."""
    call, args, kwargs = _prepare(instance, args, kwargs)
    if call is None:
        return wrapped(*args, **kwargs)
    return _metered_async(call, wrapped, args, kwargs)


async def _metered_async(
    call: Call,
    wrapped: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    token = _CURRENT.set(call)
    try:
        result = await wrapped(*args, **kwargs)
    except BaseException as error:
        call.fail(error)
        raise
    finally:
        _CURRENT.reset(token)
    return call.finish(result)


def process_response(
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Wrap `_process_response` (sync and async): read the HTTP status and ids."""
    call = _CURRENT.get()
    if call is not None:
        try:
            call.read_http(kwargs.get("response"))
        except Exception as error:
            warn("reading the HTTP response", error)
    return wrapped(*args, **kwargs)


def copy_client(
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Wrap `copy` / `with_options`: a copy of a metered client is metered."""
    result = wrapped(*args, **kwargs)
    try:
        config = registry.clients.get(instance)
        if config is not None:
            registry.clients[result] = config
    except TypeError:  # unhashable clients are metered only globally
        pass
    return result
