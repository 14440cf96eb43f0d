"""The event builder: wire keys, validation errors that name the field, sanitizing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest

from traket._errors import InvalidEventError
from traket._event import build_event, canonical_key, sanitize_metadata
from traket._observe import checked_attribution, observed_event
from traket._scope import merge_fields


def test_snake_case_keys_become_camel_case_on_the_wire() -> None:
    event = build_event(
        {
            "provider": "openai",
            "external_customer_id": "cus_1",
            "duration_ms": 12.4,
            "prompt_type": "summary",
            "provider_request_id": "req_1",
            "provider_response_id": "resp_1",
            "customer_id": "tk_1",
            "trace_id": "t",
            "attribution_quality": "explicit",
        }
    )
    assert event["externalCustomerId"] == "cus_1"
    assert event["durationMs"] == 12
    assert event["promptType"] == "summary"
    assert event["providerRequestId"] == "req_1"
    assert event["providerResponseId"] == "resp_1"
    assert event["customerId"] == "tk_1"
    assert event["traceId"] == "t"
    assert event["attributionQuality"] == "explicit"


def test_unknown_top_level_keys_are_dropped() -> None:
    event = build_event({"provider": "openai", "prompt": "secret", "messages": [1]})
    assert "prompt" not in event
    assert "messages" not in event


def test_identity_is_set_once_and_kept_when_given() -> None:
    fresh = build_event({"provider": "openai"})
    assert len(fresh["idempotencyKey"]) == 36
    assert fresh["occurredAt"].endswith("Z")
    again = build_event(fresh)
    assert again["idempotencyKey"] == fresh["idempotencyKey"]
    assert again["occurredAt"] == fresh["occurredAt"]


def test_an_aware_datetime_is_written_in_utc_with_z() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    event = build_event({"provider": "openai", "occurred_at": moment})
    assert event["occurredAt"] == "2026-01-02T01:04:05.000Z"


def test_input_is_never_mutated() -> None:
    fields: dict[str, Any] = {"provider": "openai", "metadata": {"plan": "pro"}}
    build_event(fields)
    assert fields == {"provider": "openai", "metadata": {"plan": "pro"}}


@pytest.mark.parametrize(
    ("fields", "field", "expected"),
    [
        ({}, "provider", "a non-empty string"),
        ({"provider": ""}, "provider", "a non-empty string"),
        ({"provider": 3}, "provider", "a string"),
        ({"provider": "openai", "model": 4}, "model", "a string"),
        ({"provider": "openai", "status": "ok"}, "status", "one of success"),
        ({"provider": "openai", "durationMs": "5"}, "durationMs", "a number"),
        ({"provider": "openai", "duration_ms": -1}, "durationMs", "non-negative"),
        ({"provider": "openai", "occurredAt": "yesterday"}, "occurredAt", "ISO 8601"),
        (
            {"provider": "openai", "occurred_at": datetime(2026, 1, 1)},
            "occurredAt",
            "time zone",
        ),
        (
            {"provider": "openai", "usage": {"input_tokens": -1}},
            "usage.input_tokens",
            "a non-negative integer",
        ),
        (
            {"provider": "openai", "usage": {"input_tokens": "12"}},
            "usage.input_tokens",
            "a non-negative integer",
        ),
        (
            {
                "provider": "openai",
                "usage": {
                    "input_tokens": 1,
                    "input_tokens_details": {"cached_tokens": 1.5},
                },
            },
            "usage.input_tokens_details.cached_tokens",
            "a non-negative integer",
        ),
        ({"provider": "openai", "usage": "lots"}, "usage", "a usage mapping"),
        ({"provider": "openai", "cost": 3}, "cost", "a mapping"),
        ({"provider": "openai", "cost": {"amount": "3"}}, "cost.amount", "a number"),
        (
            {"provider": "openai", "cost": {"amount": 1, "currency": "dollars"}},
            "cost.currency",
            "three-letter",
        ),
        ({"provider": "openai", "units": {"quantity": 1}}, "units", "a list"),
        (
            {"provider": "openai", "units": [{"quantity": "x"}]},
            "units[0].quantity",
            "a number",
        ),
        ({"provider": "openai", "metadata": ["a"]}, "metadata", "a mapping"),
    ],
)
def test_malformed_fields_raise_an_error_naming_field_expectation_and_value(
    fields: dict[str, Any], field: str, expected: str
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        build_event(fields)
    assert caught.value.field == field
    assert expected in caught.value.expected
    assert field in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_error_messages_show_only_a_short_repr_of_the_value() -> None:
    with pytest.raises(InvalidEventError) as caught:
        build_event({"provider": "openai", "model": ["x" * 10_000]})
    assert len(str(caught.value)) < 200


def test_chat_usage_is_mapped_onto_the_responses_shape() -> None:
    event = build_event(
        {
            "provider": "openai",
            "usage": {
                "prompt_tokens": 1220,
                "completion_tokens": 100,
                "total_tokens": 1320,
                "prompt_tokens_details": {"cached_tokens": 1152},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        }
    )
    assert event["usage"] == {
        "input_tokens": 1220,
        "input_tokens_details": {"cached_tokens": 1152},
        "output_tokens": 100,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 1320,
    }


def test_cost_keeps_known_keys_lowercases_currency_and_accepts_decimal() -> None:
    event = build_event(
        {
            "provider": "openai",
            "cost": {
                "amount": Decimal("0.0042"),
                "currency": "USD",
                "source": "manual_override",
                "price_version": "2026-01",
                "metadata": {"plan": "pro", "api_key": "sk-x"},
                "extra": "dropped",
            },
        }
    )
    assert event["cost"] == {
        "amount": 0.0042,
        "currency": "usd",
        "source": "manual_override",
        "priceVersion": "2026-01",
        "metadata": {"plan": "pro"},
    }


def test_units_keep_their_known_keys() -> None:
    event = build_event(
        {
            "provider": "openai",
            "units": [
                {
                    "quantity": 2,
                    "unit_name": "image",
                    "unit_type": "output",
                    "billable_quantity": 2,
                    "provider_raw_key": "images",
                    "x": 1,
                }
            ],
        }
    )
    assert event["units"] == [
        {
            "quantity": 2,
            "unitName": "image",
            "unitType": "output",
            "billableQuantity": 2,
            "providerRawKey": "images",
        }
    ]


@pytest.mark.parametrize(
    "key",
    [
        "prompt",
        "user_message",
        "input_text",
        "output",
        "response_body",
        "completion",
        "content",
        "image_url",
        "file_id",
        "tool_name",
        "arguments",
        "api_key",
        "apiKey",
        "API-KEY",
        "authorization",
        "password",
        "client_secret",
        "access_token",
    ],
)
def test_sensitive_metadata_keys_are_dropped_whatever_their_value(key: str) -> None:
    assert sanitize_metadata({key: "v", "plan": "pro"}) == {"plan": "pro"}


@pytest.mark.parametrize(
    "key",
    [
        "x" * 64 + "_prompt",  # the sensitive word lies past the 64-character cut
        "a" * 55 + "_user_message",  # the cut splits it: "..._user_messag"
        " " * 10 + "b" * 60 + "_api_key",
    ],
)
def test_a_long_sensitive_key_is_dropped_before_it_is_cut(key: str) -> None:
    assert sanitize_metadata({key: "CANARY", "plan": "pro"}) == {"plan": "pro"}
    event = build_event({"provider": "openai", "metadata": {key: "CANARY"}})
    assert "CANARY" not in json.dumps(event)


def test_metadata_keeps_scalars_within_limits() -> None:
    metadata = {f"k{i}": i for i in range(30)}
    metadata.update({"nested": {"a": 1}, "items": [1]})
    kept = sanitize_metadata(metadata)
    assert kept is not None
    assert len(kept) == 24
    assert sanitize_metadata({"long": "x" * 600}) == {"long": "x" * 512}
    assert sanitize_metadata({"k" * 70: 1}) == {"k" * 64: 1}
    assert sanitize_metadata({"nan": float("nan"), "ok": True, "none": None}) == {
        "ok": True,
        "none": None,
    }


def test_empty_metadata_is_left_out_of_the_event() -> None:
    event = build_event({"provider": "openai", "metadata": {"prompt": "x"}})
    assert "metadata" not in event


def test_idempotency_keys_are_unique_and_uuid_shaped() -> None:
    import uuid

    keys = [
        build_event({"provider": "openai"})["idempotencyKey"] for _ in range(20_000)
    ]
    assert len(set(keys)) == len(keys)
    parsed = uuid.UUID(keys[0])
    assert parsed.version == 4
    assert str(parsed) == keys[0]


def test_a_forked_child_makes_keys_the_parent_never_makes() -> None:
    import os

    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send one key to the parent, then leave at once
        key = build_event({"provider": "openai"})["idempotencyKey"]
        os.write(writer, key.encode())
        os._exit(0)
    os.close(writer)
    child_key = os.read(reader, 100).decode()
    os.waitpid(pid, 0)
    parent_keys = {
        build_event({"provider": "openai"})["idempotencyKey"] for _ in range(3)
    }
    assert child_key not in parent_keys
    assert child_key[:19] != next(iter(parent_keys))[:19]


# -- events of metered calls: only the attribution is validated -----------------

_OBSERVED: dict[str, Any] = {
    "provider": "openai",
    "operation": "chat.completions.create",
    "model": "gpt-4o-mini-2024-07-18",
    "providerResponseId": "chatcmpl-1",
    "providerRequestId": "req_1",
    "status": "success",
    "durationMs": 3,
    "usage": {
        "input_tokens": 5,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 7,
    },
    "metadata": {"stream": False, "requested_model": "gpt-4o-mini"},
}

_ATTRIBUTIONS: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
    ({}, None),
    ({"externalCustomerId": "acme", "attributionQuality": "scope"}, None),
    ({"feature": "search"}, {"environment": "prod", "provider": "groq"}),
    ({"externalCustomerId": "acme"}, {"external_customer_id": "old"}),
    (
        {"metadata": {"team": "a", "prompt": "x", "requested_model": "mine"}},
        {"metadata": {"team": "b", "region": "eu", "nested": {"a": 1}}},
    ),
    ({"promptType": "summary", "trace_id": "t-1"}, {"metadata": {}}),
]


def _merged_then_built(
    observed: dict[str, Any], scope: dict[str, Any], defaults: dict[str, Any] | None
) -> dict[str, Any]:
    """What `record_observed` built before it trusted traket's own readings."""
    # Each source's keys under their wire names first, as the client has them.
    wire = {canonical_key(key) or key: value for key, value in (defaults or {}).items()}
    fields = merge_fields(wire, scope)
    if "provider" in fields:
        observed = {k: v for k, v in observed.items() if k != "provider"}
    fields = merge_fields(fields, observed)
    if "externalCustomerId" not in fields:
        fields["attributionQuality"] = "missing"
    elif "attributionQuality" not in fields:
        fields["attributionQuality"] = "default"
    return build_event(fields)


@pytest.mark.parametrize(("scope", "defaults"), _ATTRIBUTIONS)
def test_an_observed_event_equals_one_built_and_validated_whole(
    scope: dict[str, Any], defaults: dict[str, Any] | None
) -> None:
    event = observed_event(_OBSERVED, checked_attribution(scope, defaults))
    reference = _merged_then_built(_OBSERVED, scope, defaults)

    for identity in ("idempotencyKey", "occurredAt"):
        assert event.pop(identity)
        reference.pop(identity)
    assert event == reference


def test_a_customer_named_in_snake_case_defaults_counts_as_attributed() -> None:
    # Regression: the raw keys were checked before canonicalizing, so
    # `external_customer_id` in `default_attrs` was reported as "missing".
    event = observed_event(
        _OBSERVED, checked_attribution({}, {"external_customer_id": "acme"})
    )

    assert event["externalCustomerId"] == "acme"
    assert event["attributionQuality"] == "default"


def test_a_malformed_attribute_is_an_error_naming_it() -> None:
    with pytest.raises(InvalidEventError, match="durationMs"):
        checked_attribution(MappingProxyType({"duration_ms": "slow"}), None)


def test_the_checked_attribution_follows_the_scope_it_was_given() -> None:
    first = MappingProxyType({"externalCustomerId": "a"})
    second = MappingProxyType({"externalCustomerId": "b"})
    defaults = MappingProxyType({"feature": "f"})

    assert checked_attribution(first, defaults)["externalCustomerId"] == "a"
    assert checked_attribution(second, defaults)["externalCustomerId"] == "b"
    assert checked_attribution(first, None) == {"externalCustomerId": "a"}


def test_a_mutable_scope_is_checked_every_time() -> None:
    scope: dict[str, Any] = {"externalCustomerId": "a"}
    assert checked_attribution(scope, None)["externalCustomerId"] == "a"
    scope["externalCustomerId"] = "b"
    assert checked_attribution(scope, None)["externalCustomerId"] == "b"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"usage": {"input_tokens": 2**63, "output_tokens": 1}}, "usage.input_tokens"),
        ({"usage": {"prompt_tokens": 1, "completion_tokens": 2**53}}, "usage"),
        ({"duration_ms": 1e300}, "durationMs"),
        ({"cost": {"amount": 1e308, "currency": "usd"}}, "cost.amount"),
        ({"units": [{"quantity": 2**60}]}, "units[0].quantity"),
        ({"occurred_at": "0205-03-01T00:00:00Z"}, "occurredAt"),
        ({"occurred_at": "2999-01-01T00:00:00Z"}, "occurredAt"),
        ({"feature": json.loads('"chat\\ud83d"')}, "feature"),
        ({"external_customer_id": json.loads('"\\udc00bob"')}, "externalCustomerId"),
    ],
)
def test_values_an_ingest_would_refuse_are_refused_when_the_event_is_built(
    fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        build_event({"provider": "openai", **fields})
    assert caught.value.field.startswith(field)


def test_labels_that_are_not_unicode_are_dropped_not_sent() -> None:
    cut = json.loads('"x\\ud83d"')
    metadata = {cut: "v", "plan": cut, "ok": "é"}
    assert sanitize_metadata(metadata) == {"ok": "é"}


def test_the_edges_of_the_bounds_are_accepted() -> None:
    event = build_event(
        {
            "provider": "openai",
            "usage": {"input_tokens": 2**53 - 1, "output_tokens": 0},
            "duration_ms": 0,
            "cost": {"amount": -1e9, "currency": "usd"},
            "occurred_at": "2000-01-01T00:00:00Z",
            "feature": "résumé ✓",
        }
    )
    assert event["usage"]["input_tokens"] == 2**53 - 1
    assert event["feature"] == "résumé ✓"


def test_two_spellings_of_one_field_are_refused_not_resolved_silently() -> None:
    fields = {
        "provider": "openai",
        "externalCustomerId": "acme",
        "external_customer_id": "globex",
    }
    with pytest.raises(InvalidEventError, match="one spelling of externalCustomerId"):
        build_event(fields)
