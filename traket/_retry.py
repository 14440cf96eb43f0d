"""Decide what an ingest's answer means and how long to wait before trying again.

One small policy and one retry layer: the HTTP adapter underneath never retries, so
every resend is counted, bounded and visible in `DeliveryStats.retried`.
"""

from __future__ import annotations

import enum
import math
import random
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from ._errors import ConfigurationError

__all__ = ["RetryPolicy", "Verdict", "classify", "parse_retry_after"]

_DELTA_SECONDS = re.compile(r"\s*(\d{1,12})(?:\.\d+)?\s*")


class Verdict(enum.Enum):
    """What the sender does with a batch after the ingest answered."""

    DELIVERED = "delivered"
    RETRY = "retry"
    SPLIT = "split"
    REJECTED = "rejected"
    UNAUTHORIZED = "unauthorized"


def classify(status: int) -> Verdict:
    """Map an HTTP status to a verdict, as the ingest contract's answer table says.

    501 and 505 are server errors that a retry cannot cure, so they are rejections;
    every status the contract does not name is a rejection too, so nothing is retried
    blindly.
    """
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status in (401, 403):
        return Verdict.UNAUTHORIZED
    if status == 413:
        return Verdict.SPLIT
    if status in (408, 429) or (500 <= status < 600 and status not in (501, 505)):
        return Verdict.RETRY
    return Verdict.REJECTED


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Return the delay a `Retry-After` header asks for, in seconds, or `None`.

    The header is either delta-seconds or an HTTP date; a date in the past means no
    wait. Anything unparseable is ignored rather than trusted.
    """
    if not value:
        return None

    match = _DELTA_SECONDS.fullmatch(value)
    if match is not None:
        return float(match.group(1))

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None

    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@dataclass(frozen=True)
class RetryPolicy:
    """Bound how often and for how long a batch is resent.

    `initial_backoff` doubles per attempt up to `max_backoff`, with jitter so that
    many processes recovering from one outage do not resend in step. A server's
    `Retry-After` is honoured as a lower bound on the wait, capped at
    `max_retry_after` so an absurd value cannot park delivery. `max_event_age` bounds
    the total time an event is retried, counted from submit; past it the event is
    dropped with reason `expired`.
    """

    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 120.0
    max_event_age: float = 4 * 3600.0

    def __post_init__(self) -> None:
        for name in (
            "initial_backoff",
            "max_backoff",
            "max_retry_after",
            "max_event_age",
        ):
            value = getattr(self, name)
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ConfigurationError(
                    f"RetryPolicy.{name}: expected a finite number >= 0, "
                    f"received {value!r}"
                )

    def backoff(self, attempt: int, retry_after: str | None = None) -> float:
        """Return the seconds to wait before retry number `attempt` (1 for the first).

        Equal jitter keeps at least half the exponential step, so a fleet spreads out
        without any client retrying immediately.
        """
        exponent = min(max(attempt, 1) - 1, 62)
        step = min(self.max_backoff, self.initial_backoff * (2.0**exponent))
        delay = step / 2 + random.uniform(0.0, step / 2)

        asked = parse_retry_after(retry_after)
        if asked is not None:
            delay = max(delay, min(asked, self.max_retry_after))
        return delay
