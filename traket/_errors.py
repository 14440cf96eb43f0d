"""The exceptions the SDK raises: one base, each also a builtin a caller would catch."""

from __future__ import annotations

from typing import Any

_MAX_REPR = 60


def describe(value: Any) -> str:
    """Describe a received value by type and a short repr, never the whole value."""
    text = repr(value)
    if len(text) > _MAX_REPR:
        text = text[: _MAX_REPR - 3] + "..."
    return f"{text} ({type(value).__name__})"


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
