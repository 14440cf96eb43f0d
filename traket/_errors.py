"""The exceptions the SDK raises: one base, each also a builtin a caller would catch."""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

_MAX_REPR = 60


def describe(value: Any) -> str:
    """Describe a received value for an error message, never the whole value.

    A scalar shows a short repr and its type. Anything else shows its type (and
    length) only: a list of messages or a response object may hold user text,
    and an error message often ends up in a log.
    """
    name = type(value).__name__
    if value is None or isinstance(value, str | int | float):
        text = repr(value)
        if len(text) > _MAX_REPR:
            text = text[: _MAX_REPR - 3] + "..."
        return f"{text} ({name})"
    if isinstance(value, Sized):
        try:
            return f"{name} of length {len(value)}"
        except Exception:  # a __len__ that fails is still a value of that type
            pass
    return f"{name} object"


class TraketError(Exception):
    """Base class of every error the SDK raises."""


class ConfigurationError(TraketError, ValueError):
    """The SDK was configured with a value it cannot use."""


class InvalidEventError(TraketError, ValueError):
    """An event passed to the explicit API is malformed.

    `field` is the dotted path of the offending field (`usage.input_tokens`,
    `events[3].provider`), `expected` says what was wanted and `received` what came.
    """

    def __init__(self, field: str, expected: str, received: str) -> None:
        self.field = field
        self.expected = expected
        self.received = received
        super().__init__(
            f"event field {field!r}: expected {expected}, received {received}"
        )

    def at(self, prefix: str) -> InvalidEventError:
        """Return the same error with its field path placed under `prefix`."""
        field = f"{prefix}.{self.field}" if self.field != "event" else prefix
        return InvalidEventError(field, self.expected, self.received)
