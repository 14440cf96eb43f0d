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
from collections.abc import Callable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, ParamSpec, TypeVar

from ._errors import InvalidEventError, describe
from ._event import canonical_key

P = ParamSpec("P")
R = TypeVar("R")

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_FRAME: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "traket_attribution", default=_EMPTY
)
_INTERCEPTED: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "traket_intercepted", default=None
)


def scope_fields(
    fields: Mapping[str, Any], *, quality: str | None = None
) -> dict[str, Any]:
    """Return attribution `fields` under their wire names, dropping None values.

    `customer` stands for `externalCustomerId`. An unknown field raises
    `InvalidEventError`, so a typo does not silently lose attribution. `quality`
    becomes `attributionQuality` when the fields name a customer.
    """
    result: dict[str, Any] = {}
    for name, value in fields.items():
        key = "externalCustomerId" if name == "customer" else canonical_key(name)
        if key is None:
            expected = "an event field such as customer, feature or environment"
            raise InvalidEventError(name, expected, "an unknown field name")
        if value is None:
            continue
        if key == "metadata" and not isinstance(value, Mapping):
            raise InvalidEventError(key, "a mapping of labels", describe(value))
        result[key] = value
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
        merged = merge_fields(_FRAME.get(), self._fields)
        self._tokens.append(_FRAME.set(MappingProxyType(merged)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        token = self._tokens.pop()
        try:
            _FRAME.reset(token)
        except ValueError:
            # Entered in another context (a generator resumed elsewhere, a task
            # switch): put back what was there before this block, never crash.
            _FRAME.set(
                token.old_value if token.old_value is not token.MISSING else _EMPTY
            )

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


def attribute(
    customer: str | None = None, feature: str | None = None, **fields: Any
) -> Attribution:
    """Attribute every call made inside the block to `customer` and `feature`.

    `customer` is the caller's own customer id (`externalCustomerId` on the wire).
    Other keyword arguments are event fields (`environment`, `prompt_type`,
    `metadata={...}`, ...). Nested blocks merge and the inner one wins; asyncio tasks
    inherit the block they were created in; use `carry_attribution` for threads.
    """
    given = {"customer": customer, "feature": feature, **fields}
    return Attribution(scope_fields(given, quality="scope"))


def explicit(fields: Mapping[str, Any]) -> Attribution:
    """Return a block for per-call attributes, which win over every scope."""
    return Attribution(scope_fields(fields, quality="explicit"))


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

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        token = _FRAME.set(frame)
        try:
            return function(*args, **kwargs)
        finally:
            _FRAME.reset(token)

    return run
