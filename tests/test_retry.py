"""The retry policy: which answers are retried, and how long to wait."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from traket._errors import ConfigurationError
from traket._retry import RetryPolicy, Verdict, classify, parse_retry_after


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (202, Verdict.DELIVERED),
        (400, Verdict.REJECTED),
        (422, Verdict.REJECTED),
        (401, Verdict.UNAUTHORIZED),
        (403, Verdict.UNAUTHORIZED),
        (404, Verdict.REJECTED),
        (408, Verdict.RETRY),
        (413, Verdict.SPLIT),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (501, Verdict.REJECTED),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
        (504, Verdict.RETRY),
        (505, Verdict.REJECTED),
        (599, Verdict.RETRY),
        (302, Verdict.REJECTED),
    ],
)
def test_classify_follows_the_ingest_contract(status: int, verdict: Verdict) -> None:
    assert classify(status) is verdict


def test_retry_after_in_seconds_is_read() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0


def test_retry_after_as_an_http_date_is_read_relative_to_now() -> None:
    now = time.time()
    header = formatdate(now + 30, usegmt=True)

    assert parse_retry_after(header, now=now) == pytest.approx(30, abs=1.0)


def test_retry_after_in_the_past_means_no_wait() -> None:
    now = time.time()
    assert parse_retry_after(formatdate(now - 60, usegmt=True), now=now) == 0.0


@pytest.mark.parametrize("header", [None, "", "soon", "-5", "inf", "nan", "1e9"])
def test_unreadable_retry_after_is_ignored(header: str | None) -> None:
    assert parse_retry_after(header) is None


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=8.0)

    for attempt, step in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (80, 8.0)]:
        delay = policy.backoff(attempt)
        assert step / 2 <= delay <= step


def test_backoff_is_jittered() -> None:
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=60.0)

    assert len({policy.backoff(5) for _ in range(20)}) > 1


def test_retry_after_is_a_lower_bound_on_the_wait() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, max_retry_after=60.0)

    assert policy.backoff(1, "20") == 20.0


def test_an_absurd_retry_after_is_capped() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, max_retry_after=30.0)

    assert policy.backoff(1, "99999999999") == 30.0


def test_retry_after_zero_keeps_the_normal_backoff() -> None:
    policy = RetryPolicy(initial_backoff=2.0, max_backoff=8.0)

    assert 1.0 <= policy.backoff(1, "0") <= 2.0


@pytest.mark.parametrize("field", ["initial_backoff", "max_backoff", "max_event_age"])
def test_a_negative_or_infinite_setting_is_refused(field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        RetryPolicy(**{field: -1.0})
    with pytest.raises(ConfigurationError, match=field):
        RetryPolicy(**{field: float("inf")})


@pytest.mark.parametrize(
    "field", ["initial_backoff", "max_backoff", "max_retry_after", "max_event_age"]
)
@pytest.mark.parametrize("value", [True, False])
def test_a_bool_setting_is_refused(field: str, value: bool) -> None:
    with pytest.raises(ConfigurationError, match=f"{field}.*received {value}"):
        RetryPolicy(**{field: value})
