"""Proxies that meter streams and raw responses while staying the SDK's own types.

Each proxy is a `wrapt.ObjectProxy`: `isinstance(proxy, openai.Stream)` holds,
every attribute (`.response`, `._iterator`, ...) is the wrapped object's, and
only the methods that mark the end of a call are overridden. A proxy holds no
generator of its own, so nothing of ours is suspended across a `yield` and no
context variable is set while the application runs.

Every way a stream can end reaches `Call.end` or `Call.fail`, which record once:
the last chunk (`StopIteration`), an exception from the stream, `close()`,
leaving a `with` block, and garbage collection of the proxy. The `stream()`
helpers close the HTTP response themselves, past the proxy they read from, so
their `close` is patched too (`close_helper`, `aclose_helper`).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import wrapt

if TYPE_CHECKING:
    from ._calls import Call

    _Proxy = wrapt.ObjectProxy[Any]
else:
    _Proxy = wrapt.ObjectProxy  # generic only in wrapt 2's type hints


class MeteredStream(_Proxy):
    """A metered `openai.Stream`."""

    def __init__(self, stream: Any, call: Call) -> None:
        super().__init__(stream)
        self._self_call = call
        self._self_next: Callable[[], Any] = stream.__next__
        self._self_observe: Callable[[Any], bool] = call.observer()

    def __iter__(self) -> MeteredStream:
        return self

    def __next__(self) -> Any:
        observe = self._self_observe
        while True:
            try:
                item = self._self_next()
            except StopIteration:
                self._self_call.end(None)
                raise
            except BaseException as error:
                self._self_call.fail(error)
                raise
            try:
                hidden = observe(item)
            except Exception as error:
                observe = self._self_observe = self._self_call.observe_failed(error)
                hidden = False
            if not hidden:
                return item

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_call.end("cancelled")

    def __enter__(self) -> MeteredStream:
        self.__wrapped__.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            return self.__wrapped__.__exit__(exc_type, exc, tb)
        finally:
            self._self_call.end("cancelled")

    def __del__(self) -> None:
        self._self_call.end("cancelled")


class AsyncMeteredStream(_Proxy):
    """A metered `openai.AsyncStream`."""

    def __init__(self, stream: Any, call: Call) -> None:
        super().__init__(stream)
        self._self_call = call
        self._self_observe: Callable[[Any], bool] = call.observer()

    def __aiter__(self) -> AsyncMeteredStream:
        return self

    async def __anext__(self) -> Any:
        observe = self._self_observe
        while True:
            try:
                item = await self.__wrapped__.__anext__()
            except StopAsyncIteration:
                self._self_call.end(None)
                raise
            except BaseException as error:
                self._self_call.fail(error)
                raise
            try:
                hidden = observe(item)
            except Exception as error:
                observe = self._self_observe = self._self_call.observe_failed(error)
                hidden = False
            if not hidden:
                return item

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_call.end("cancelled")

    async def __aenter__(self) -> AsyncMeteredStream:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            return await self.__wrapped__.__aexit__(exc_type, exc, tb)
        finally:
            self._self_call.end("cancelled")

    def __del__(self) -> None:
        self._self_call.end("cancelled")


class _ParsedStreams:
    """Wrap the stream a raw response parses into, once, and return it again."""

    def __init__(self) -> None:
        self.parsed: Any = None
        self.proxy: Any = None

    def wrap(self, result: Any, call: Call) -> Any:
        if self.proxy is not None and result is self.parsed:
            return self.proxy
        proxy = call.wrap_stream(result)
        if proxy is not result:
            self.parsed, self.proxy = result, proxy
        return proxy


class MeteredRawResponse(_Proxy):
    """A metered raw response (`with_raw_response`, `with_streaming_response`).

    `parse()` is watched: a stream comes back metered, a parsed body is read. A
    response closed or dropped without `parse()` is recorded from its JSON body
    when it was read, else with its usage unknown.
    """

    def __init__(self, response: Any, call: Call) -> None:
        super().__init__(response)
        self._self_call = call
        self._self_streams = _ParsedStreams()

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        result = self.__wrapped__.parse(*args, **kwargs)
        return self._self_call.parsed(result, self._self_streams)

    def close(self) -> Any:
        try:
            return self.__wrapped__.close()
        finally:
            self._self_call.unparsed(self.__wrapped__, self._self_streams)

    def __del__(self) -> None:
        self._self_call.unparsed(self.__wrapped__, self._self_streams)


class AsyncMeteredRawResponse(_Proxy):
    """A metered `AsyncAPIResponse` (`with_streaming_response` of async clients)."""

    def __init__(self, response: Any, call: Call) -> None:
        super().__init__(response)
        self._self_call = call
        self._self_streams = _ParsedStreams()

    async def parse(self, *args: Any, **kwargs: Any) -> Any:
        result = await self.__wrapped__.parse(*args, **kwargs)
        return self._self_call.parsed(result, self._self_streams)

    async def close(self) -> Any:
        try:
            return await self.__wrapped__.close()
        finally:
            self._self_call.unparsed(self.__wrapped__, self._self_streams)

    def __del__(self) -> None:
        self._self_call.unparsed(self.__wrapped__, self._self_streams)


def close_helper(
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Patch of a `stream()` helper's `close`: end the metered stream it reads."""
    try:
        return wrapped(*args, **kwargs)
    finally:
        _end_helper(instance)


async def aclose_helper(
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Patch of an async `stream()` helper's `close`: end the metered stream."""
    try:
        return await wrapped(*args, **kwargs)
    finally:
        _end_helper(instance)


def _end_helper(helper: Any) -> None:
    """End the call of the metered stream under `helper`; a finished one stays."""
    raw = getattr(helper, "_raw_stream", None)
    if isinstance(raw, MeteredStream | AsyncMeteredStream):
        raw._self_call.end("cancelled")
