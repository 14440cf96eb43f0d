"""Attribution scopes: who and what a call is for, carried by a context variable.

Each active `attribute(...)` block contributes one frame. A frame holds the fields
of every scope around it already merged, so reading the current attribution on the
hot path is a single context-variable lookup. Leaving a block resets exactly what
entering it changed.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import re
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, ParamSpec, TypeVar

from ._errors import InvalidEventError
from ._event import canonical_key, check_fields

P = ParamSpec("P")
R = TypeVar("R")

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_FRAME: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "traket_attribution", default=_EMPTY
)
# Per-call attributes (`margins.openai.track(call, attrs)`) in force: they stay on
# top of any scope that `call` itself opens.
_PINNED: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "traket_explicit", default=_EMPTY
)
_INTERCEPTED: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "traket_intercepted", default=None
)

# What a scope (or instrument's default_attrs) may set: fields that describe every
# call made inside it. Per-event fields (idempotencyKey, occurredAt, usage, cost,
# status, ...) would be copied onto every event, so a scope refuses them.
SCOPE_FIELDS = frozenset(
    {
        "externalCustomerId",
        "customerId",
        "feature",
        "environment",
        "promptType",
        "traceId",
        "provider",
        "metadata",
    }
)
_SCOPE_NAMES = (
    "customer, feature, environment, prompt_type, customer_id, trace_id, "
    "provider or metadata"
)


def scope_fields(
    fields: Mapping[str, Any],
    *,
    quality: str | None = None,
    allowed: frozenset[str] | None = SCOPE_FIELDS,
) -> dict[str, Any]:
    """Return attribution `fields` under their wire names, dropping None values.

    `customer` stands for `externalCustomerId`. An unknown field, one outside
    `allowed` (None allows every event field) or two spellings of one field raise
    `InvalidEventError`, so a typo does not silently lose attribution. `quality`
    becomes `attributionQuality` when the fields name a customer.
    """
    given: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for name, value in fields.items():
        key = "externalCustomerId" if name == "customer" else canonical_key(name)
        if key is None:
            expected = f"an attribution field: {_SCOPE_NAMES}"
            raise InvalidEventError(name, expected, "an unknown field name")
        if allowed is not None and key not in allowed:
            expected = f"a field shared by every call in a scope: {_SCOPE_NAMES}"
            received = "a field that belongs to one event"
            raise InvalidEventError(name, expected, received)
        if key in spelled:
            expected = f"one spelling of {key}"
            raise InvalidEventError(name, expected, f"both {spelled[key]} and {name}")
        if value is not None:
            given[key] = value
            spelled[key] = name

    # Checked here, where the caller can fix it, rather than when a call is metered.
    try:
        result = check_fields(given)
    except InvalidEventError as error:
        head = re.match(r"\w*", error.field)
        key = head.group() if head else ""
        field = spelled.get(key, key) + error.field[len(key) :]
        raise InvalidEventError(field, error.expected, error.received) from None
    if quality is not None and "externalCustomerId" in result:
        result.setdefault("attributionQuality", quality)
    return result


def merge_fields(outer: Mapping[str, Any], inner: Mapping[str, Any]) -> dict[str, Any]:
    """Return `outer` overlaid with `inner`; `metadata` is merged key by key."""
    merged = dict(outer)
    merged.update(inner)
    outer_metadata = outer.get("metadata")
    inner_metadata = inner.get("metadata")
    if outer_metadata and inner_metadata:
        merged["metadata"] = {**outer_metadata, **inner_metadata}
    return merged


def _nested_frame(fields: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return the frame inside a block of `fields`; per-call attributes stay on top."""
    merged = merge_fields(_FRAME.get(), fields)
    pinned = _PINNED.get()
    if pinned:
        merged = merge_fields(merged, pinned)
    return MappingProxyType(merged)


def current_scope() -> Mapping[str, Any]:
    """Return the merged wire-keyed attribution of every active scope (read-only)."""
    return _FRAME.get()


def note_intercepted() -> None:
    """Record that instrumentation is metering a call made inside `openai.track`."""
    counter = _INTERCEPTED.get()
    if counter is not None:
        counter[0] += 1


class Attribution:
    """A block of attribution, usable with `with`, `async with` or as a decorator."""

    __slots__ = ("_fields", "_tokens")

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self._fields = MappingProxyType(dict(fields))
        self._tokens: list[contextvars.Token[Mapping[str, Any]]] = []

    @property
    def fields(self) -> Mapping[str, Any]:
        """The wire-keyed fields this block adds."""
        return self._fields

    def __repr__(self) -> str:
        return f"Attribution({dict(self._fields)!r})"

    def __enter__(self) -> Attribution:
        self._tokens.append(_FRAME.set(_nested_frame(self._fields)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _reset(self._tokens.pop())

    async def __aenter__(self) -> Attribution:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)

    def __call__(self, function: Callable[P, R]) -> Callable[P, R]:
        """Decorate `function` so that every call runs inside this block."""
        fields = self._fields
        stepper: Callable[[Any, Mapping[str, Any]], Any] | None = None
        if inspect.isgeneratorfunction(function):
            stepper = _in_frame
        elif inspect.isasyncgenfunction(function):
            stepper = _in_frame_async
        if stepper is not None:
            steps = stepper

            @functools.wraps(function)
            def run_generator(*args: Any, **kwargs: Any) -> Any:
                return steps(function(*args, **kwargs), _nested_frame(fields))

            return run_generator

        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with Attribution(fields):
                    return await function(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with Attribution(fields):
                return function(*args, **kwargs)

        return run


def _reset(
    token: contextvars.Token[Mapping[str, Any]],
    variable: contextvars.ContextVar[Mapping[str, Any]] = _FRAME,
) -> None:
    """Undo `variable.set`; from another context, put back the value it replaced."""
    try:
        variable.reset(token)
    except ValueError:
        # Entered in another context (a generator resumed elsewhere, a task
        # switch): put back what was there before this block, never crash.
        old = token.old_value
        variable.set(old if old is not token.MISSING else _EMPTY)


# A decorated generator runs each step (up to its next yield) with its own frame
# set, and puts the caller's frame back before the item reaches the caller: the
# scope is active inside the generator only, never in the code consuming it. The
# frame is carried from step to step, so a block opened inside the generator
# across a yield stays open for it alone.


def _in_frame(
    generator: Generator[Any, Any, Any], frame: Mapping[str, Any]
) -> Generator[Any, Any, Any]:
    step: Callable[[Any], Any] = generator.send
    value: Any = None
    while True:
        token = _FRAME.set(frame)
        try:
            item = step(value)
        except StopIteration as stop:
            return stop.value
        finally:
            frame = _FRAME.get()
            _reset(token)

        try:
            value = yield item
            step = generator.send
        except GeneratorExit:
            token = _FRAME.set(frame)
            try:
                generator.close()
            finally:
                _reset(token)
            raise
        except BaseException as error:
            step, value = generator.throw, error


async def _in_frame_async(
    generator: AsyncGenerator[Any, Any], frame: Mapping[str, Any]
) -> AsyncGenerator[Any, Any]:
    step: Callable[[Any], Any] = generator.asend
    value: Any = None
    while True:
        token = _FRAME.set(frame)
        try:
            item = await step(value)
        except StopAsyncIteration:
            return
        finally:
            frame = _FRAME.get()
            _reset(token)

        try:
            value = yield item
            step = generator.asend
        except GeneratorExit:
            token = _FRAME.set(frame)
            try:
                await generator.aclose()
            finally:
                _reset(token)
            raise
        except BaseException as error:
            step, value = generator.athrow, error


def attribute(
    customer: str | None = None, feature: str | None = None, **fields: Any
) -> Attribution:
    """Attribute every call made inside the block to `customer` and `feature`.

    `customer` is the caller's own customer id (`externalCustomerId` on the wire).
    Other keyword arguments are event fields (`environment`, `prompt_type`,
    `metadata={...}`, ...); an unknown name or a malformed value raises
    `InvalidEventError` here. Nested blocks merge and the inner one wins; asyncio
    tasks inherit the block they were created in; use `carry_attribution` for
    threads. As a decorator it wraps functions, coroutine functions and (async)
    generator functions, whose scope holds inside the generator only.
    """
    given = {"customer": customer, "feature": feature, **fields}
    return Attribution(scope_fields(given, quality="scope"))


class _Explicit(Attribution):
    """Per-call attributes: they win over every scope, those opened inside too."""

    __slots__ = ("_pins",)

    def __init__(self, fields: Mapping[str, Any]) -> None:
        super().__init__(fields)
        self._pins: list[contextvars.Token[Mapping[str, Any]]] = []

    def __enter__(self) -> Attribution:
        super().__enter__()
        pinned = MappingProxyType(merge_fields(_PINNED.get(), self._fields))
        self._pins.append(_PINNED.set(pinned))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _reset(self._pins.pop(), _PINNED)
        super().__exit__(exc_type, exc, traceback)


def explicit(fields: Mapping[str, Any]) -> Attribution:
    """Return a block for per-call attributes, which win over every scope.

    Any event field may be given (`operation`, `model`, ...): they describe one
    call.
    """
    return _Explicit(scope_fields(fields, quality="explicit", allowed=None))


class interception:
    """Count the calls that instrumentation meters while the block is active."""

    __slots__ = ("_counter", "_token")

    def __enter__(self) -> list[int]:
        self._counter = [0]
        self._token = _INTERCEPTED.set(self._counter)
        return self._counter

    def __exit__(self, *exc_info: object) -> None:
        try:
            _INTERCEPTED.reset(self._token)
        except ValueError:
            _INTERCEPTED.set(None)


def carry_attribution(function: Callable[P, R]) -> Callable[P, R]:
    """Return `function` bound to the caller's attribution, for another thread.

    Threads do not inherit context variables. Wrap the callable you hand to a thread
    or an executor: it then runs with the attribution active where it was wrapped.
    """
    frame = _FRAME.get()
    pinned = _PINNED.get()

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        token, pin = _FRAME.set(frame), _PINNED.set(pinned)
        try:
            return function(*args, **kwargs)
        finally:
            _PINNED.reset(pin)
            _FRAME.reset(token)

    return run
