"""Usage from every OpenAI endpoint lands in one shape; unknown is never zero."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from traket._event import build_event
from traket._pricing import buckets_from_usage
from traket._usage import normalize_openai_usage, usage_from_openai


def test_responses_usage_objects_are_read_by_attribute() -> None:
    usage = SimpleNamespace(
        input_tokens=54,
        input_tokens_details=SimpleNamespace(cached_tokens=0),
        output_tokens=164,
        output_tokens_details=SimpleNamespace(reasoning_tokens=128),
        total_tokens=218,
    )
    assert usage_from_openai(usage) == {
        "input_tokens": 54,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 164,
        "output_tokens_details": {"reasoning_tokens": 128},
        "total_tokens": 218,
    }


def test_embeddings_usage_has_input_tokens_only() -> None:
    assert usage_from_openai({"prompt_tokens": 8, "total_tokens": 8}) == {
        "input_tokens": 8,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 8,
    }


def test_cache_writes_are_kept_when_the_provider_reports_them() -> None:
    usage = usage_from_openai(
        {
            "input_tokens": 100,
            "output_tokens": 1,
            "input_tokens_details": {"cached_tokens": 10, "cache_write_tokens": 50},
        }
    )
    assert usage is not None
    assert usage["input_tokens_details"] == {
        "cached_tokens": 10,
        "cache_write_tokens": 50,
    }


def test_missing_or_unreadable_usage_is_none_never_zero() -> None:
    assert usage_from_openai(None) is None
    assert usage_from_openai({}) is None
    assert usage_from_openai({"input_tokens": None}) is None
    assert usage_from_openai(object()) is None

    class Exploding:
        @property
        def input_tokens(self) -> int:
            raise RuntimeError("boom")

    assert usage_from_openai(Exploding()) is None


def test_total_is_derived_when_absent() -> None:
    usage = usage_from_openai({"input_tokens": 3, "output_tokens": 4})
    assert usage is not None
    assert usage["total_tokens"] == 7


def test_normalize_openai_usage_keeps_the_0_1_0_keys() -> None:
    assert normalize_openai_usage(
        {
            "prompt_tokens": 1220,
            "completion_tokens": 100,
            "prompt_tokens_details": {"cached_tokens": 1152},
        }
    ) == {
        "cached_tokens": 1152,
        "input_tokens": 1220,
        "output_tokens": 100,
        "reasoning_tokens": 0,
        "total_tokens": 1320,
        "uncached_input_tokens": 68,
    }
    assert normalize_openai_usage(None)["total_tokens"] == 0


def test_wire_shaped_usage_takes_the_fast_path_and_stays_equal() -> None:
    from traket._usage import copy_wire_usage

    wire = usage_from_openai(
        {
            "prompt_tokens": 12,
            "completion_tokens": 5,
            "total_tokens": 17,
            "prompt_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 3},
        }
    )
    assert wire is not None
    copied = copy_wire_usage(wire)
    assert copied == wire
    assert copied is not wire
    assert copied["input_tokens_details"] is not wire["input_tokens_details"]
    assert copy_wire_usage({**wire, "extra": 1}) is None
    assert copy_wire_usage({**wire, "input_tokens": True}) is None
    assert copy_wire_usage({**wire, "input_tokens": -1}) is None


def test_pydantic_usage_is_read_from_fields_and_extras() -> None:
    import pydantic

    class Details(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="allow")
        cached_tokens: int | None = None

    class ChatUsage(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="allow")
        prompt_tokens: int
        completion_tokens: int
        prompt_tokens_details: Details | None = None

    usage = ChatUsage.model_validate(
        {
            "prompt_tokens": 100,
            "completion_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 40},
            "cache_creation_input_tokens": 30,
        }
    )
    assert usage_from_openai(usage) == {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 30},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 107,
    }


# -- a usage report missing one of the two main counts ------------------------------

UNKNOWN = None


@pytest.mark.parametrize(
    ("reported", "expected"),
    [
        # Nothing says how many went in or out: the total alone is known.
        ({"total_tokens": 30}, (UNKNOWN, UNKNOWN, 30)),
        # One count and no total: the other one is unknown, and so is the total.
        ({"prompt_tokens": 7}, (7, UNKNOWN, UNKNOWN)),
        ({"input_tokens": 7}, (7, UNKNOWN, UNKNOWN)),
        ({"completion_tokens": 3}, (UNKNOWN, 3, UNKNOWN)),
        ({"output_tokens": 3, "total_tokens": None}, (UNKNOWN, 3, UNKNOWN)),
        # One count and the total: the other one is their difference.
        ({"prompt_tokens": 8, "total_tokens": 8}, (8, 0, 8)),
        ({"input_tokens": 10, "total_tokens": 14}, (10, 4, 14)),
        ({"completion_tokens": 4, "total_tokens": 14}, (10, 4, 14)),
        # A total smaller than the count it includes tells nothing more.
        ({"input_tokens": 20, "total_tokens": 14}, (20, UNKNOWN, 14)),
    ],
)
def test_a_count_the_provider_did_not_report_is_unknown_never_zero(
    reported: dict[str, Any], expected: tuple[int | None, ...]
) -> None:
    usage = usage_from_openai(reported)

    assert usage is not None
    counts = (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"])
    assert counts == expected
    if usage["input_tokens"] is None:
        assert usage["input_tokens_details"] == {"cached_tokens": None}
    if usage["output_tokens"] is None:
        assert usage["output_tokens_details"] == {"reasoning_tokens": None}


def test_a_reported_detail_of_an_unknown_count_is_kept() -> None:
    usage = usage_from_openai(
        {"completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 40}}
    )

    assert usage is not None
    assert usage["input_tokens"] is None
    assert usage["input_tokens_details"] == {"cached_tokens": 40}


def test_partial_usage_maps_to_itself() -> None:
    for reported in ({"total_tokens": 30}, {"prompt_tokens": 7}, {"output_tokens": 3}):
        usage = usage_from_openai(reported)
        assert usage is not None
        assert usage_from_openai(usage) == usage


def test_partial_usage_on_a_tracked_event_stays_unknown() -> None:
    event = build_event({"provider": "compatible", "usage": {"total_tokens": 30}})

    assert event["usage"]["input_tokens"] is None
    assert event["usage"]["output_tokens"] is None
    assert event["usage"]["total_tokens"] == 30
    # The cost engine reads it as usage it cannot price, never as zero tokens.
    assert buckets_from_usage(event["usage"]) is None


def test_normalize_openai_usage_still_gives_zeros_for_unknown_counts() -> None:
    # The 0.1.0 helper returns flat ints; its callers read missing as zero.
    assert normalize_openai_usage({"total_tokens": 30}) == {
        "cached_tokens": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "reasoning_tokens": 0,
        "total_tokens": 30,
        "uncached_input_tokens": 0,
    }
    assert normalize_openai_usage({"prompt_tokens": 7})["total_tokens"] == 7
