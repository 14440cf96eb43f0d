"""Attribution scopes: nesting, isolation between tasks and threads, clean exits."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

import traket
from examples.replay import ReplayServer, load_recordings
from traket._errors import InvalidEventError
from traket._scope import attribute, carry_attribution, current_scope, explicit
from traket.testing import InMemoryTransport


def test_no_scope_means_no_attribution() -> None:
    assert dict(current_scope()) == {}


def test_a_scope_names_customer_and_feature_by_their_wire_keys() -> None:
    with attribute(customer="acme", feature="search", environment="prod"):
        assert dict(current_scope()) == {
            "externalCustomerId": "acme",
            "feature": "search",
            "environment": "prod",
            "attributionQuality": "scope",
        }
    assert dict(current_scope()) == {}


def test_nested_scopes_merge_and_the_inner_one_wins() -> None:
    with attribute(customer="acme", feature="search", metadata={"plan": "pro", "a": 1}):
        with attribute(feature="summaries", prompt_type="short", metadata={"a": 2}):
            scope = current_scope()
            assert scope["externalCustomerId"] == "acme"
            assert scope["feature"] == "summaries"
            assert scope["promptType"] == "short"
            assert scope["metadata"] == {"plan": "pro", "a": 2}
        assert current_scope()["feature"] == "search"


def test_none_leaves_the_outer_value_in_place() -> None:
    with attribute(customer="acme"), attribute(customer=None, feature="f"):
        assert current_scope()["externalCustomerId"] == "acme"


def test_explicit_attributes_are_marked_explicit_and_win() -> None:
    with attribute(customer="acme"), explicit({"external_customer_id": "globex"}):
        assert current_scope()["externalCustomerId"] == "globex"
        assert current_scope()["attributionQuality"] == "explicit"


def test_a_scope_inside_explicit_attributes_does_not_override_them() -> None:
    with explicit({"external_customer_id": "globex", "feature": "billing"}):
        with attribute(customer="acme", environment="prod"):
            scope = current_scope()
            assert scope["externalCustomerId"] == "globex"
            assert scope["attributionQuality"] == "explicit"
            assert scope["feature"] == "billing"
            assert scope["environment"] == "prod"

        @attribute(customer="initech")
        def decorated() -> Any:
            return current_scope()["externalCustomerId"]

        assert decorated() == "globex"
    with attribute(customer="acme"):
        assert current_scope()["externalCustomerId"] == "acme"


def test_a_scope_inside_explicit_attributes_still_names_what_they_leave_out() -> None:
    with explicit({"feature": "billing"}), attribute(customer="acme"):
        assert current_scope()["externalCustomerId"] == "acme"
        assert current_scope()["attributionQuality"] == "scope"
        assert current_scope()["feature"] == "billing"


@pytest.mark.parametrize(
    "field",
    [
        "idempotency_key",
        "occurred_at",
        "status",
        "usage",
        "cost",
        "units",
        "duration_ms",
        "provider_request_id",
        "attribution_quality",
        "model",
    ],
)
def test_a_scope_refuses_fields_that_belong_to_one_event(field: str) -> None:
    with pytest.raises(InvalidEventError, match=field) as raised:
        attribute(customer="acme", **{field: "x"})
    assert "every call" in str(raised.value)
    assert dict(current_scope()) == {}


def test_two_spellings_of_one_field_are_an_error_naming_both() -> None:
    with pytest.raises(InvalidEventError, match="customer and external_customer_id"):
        attribute(customer="a", external_customer_id="b")  # type: ignore[arg-type]
    with pytest.raises(InvalidEventError, match="prompt_type and promptType"):
        attribute(prompt_type="a", promptType="b")


def test_an_unknown_field_is_an_error_naming_it() -> None:
    with pytest.raises(InvalidEventError, match="custmer"):
        attribute(custmer="acme")  # type: ignore[call-arg]


def test_a_scope_is_reset_when_its_block_raises() -> None:
    with pytest.raises(RuntimeError), attribute(customer="acme"):
        raise RuntimeError("boom")
    assert dict(current_scope()) == {}


def test_a_scope_works_as_a_decorator_for_sync_and_async_functions() -> None:
    @attribute(customer="acme")
    def sync() -> str:
        return str(current_scope()["externalCustomerId"])

    @attribute(customer="globex")
    async def not_sync() -> str:
        return str(current_scope()["externalCustomerId"])

    assert sync() == "acme"
    assert asyncio.run(not_sync()) == "globex"
    assert dict(current_scope()) == {}


async def test_async_with_and_tasks_inherit_the_scope_without_leaking() -> None:
    async def customer_seen() -> object:
        await asyncio.sleep(0)
        return current_scope().get("externalCustomerId")

    async def in_scope(name: str) -> object:
        async with attribute(customer=name):
            return await asyncio.create_task(customer_seen())

    results = await asyncio.gather(*(in_scope(f"c{i}") for i in range(20)))
    assert results == [f"c{i}" for i in range(20)]
    assert dict(current_scope()) == {}


def test_threads_do_not_inherit_unless_carried() -> None:
    seen: list[object] = []
    with attribute(customer="acme"):
        plain = threading.Thread(
            target=lambda: seen.append(current_scope().get("externalCustomerId"))
        )
        plain.start()
        plain.join()
        with ThreadPoolExecutor(4) as pool:
            carried = carry_attribution(
                lambda: current_scope().get("externalCustomerId")
            )
            results = list(pool.map(lambda _: carried(), range(8)))
    assert seen == [None]
    assert results == ["acme"] * 8


def test_leaving_a_block_from_another_context_does_not_crash() -> None:
    import contextvars

    block = attribute(customer="acme")
    contextvars.copy_context().run(block.__enter__)
    block.__exit__(None, None, None)
    assert dict(current_scope()) == {}


@pytest.mark.parametrize(
    ("fields", "field", "received"),
    [
        ({"customer": 5}, "customer", "5 (int)"),
        ({"feature": ["a"]}, "feature", "list"),
        ({"external_customer_id": 5}, "external_customer_id", "5 (int)"),
        ({"environment": b"prod"}, "environment", "bytes"),
        ({"metadata": "plan=pro"}, "metadata", "'plan=pro' (str)"),
        ({"trace_id": 7}, "trace_id", "7 (int)"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_field_as_spelled(
    fields: dict[str, object], field: str, received: str
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        attribute(**fields)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert received in caught.value.received
    assert caught.value.expected in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "field", "received"),
    [
        ({"status": "fine"}, "status", "'fine' (str)"),
        ({"usage": {"input_tokens": -1}}, "usage.input_tokens", "-1 (int)"),
    ],
)
def test_a_bad_per_call_value_is_an_error_naming_the_field(
    fields: dict[str, object], field: str, received: str
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        explicit(fields)
    assert caught.value.field == field
    assert received in caught.value.received
    assert caught.value.expected in str(caught.value)


def test_sensitive_metadata_keys_are_dropped_when_the_scope_is_made() -> None:
    with attribute(customer="acme", metadata={"prompt": "secret", "plan": "pro"}):
        assert current_scope()["metadata"] == {"plan": "pro"}


def test_a_decorated_generator_runs_in_the_scope_and_keeps_it_inside() -> None:
    @attribute(customer="acme", feature="stream")
    def chunks() -> Iterator[object]:
        yield current_scope().get("externalCustomerId")
        with attribute(feature="inner"):
            yield current_scope().get("feature")
            yield current_scope().get("feature")
        yield current_scope().get("feature")

    seen_outside: list[object] = []
    seen_inside: list[object] = []
    for item in chunks():
        seen_inside.append(item)
        seen_outside.append(current_scope().get("externalCustomerId"))
    assert seen_inside == ["acme", "inner", "inner", "stream"]
    assert seen_outside == [None] * 4

    with attribute(customer="outer", environment="prod"):
        generator = chunks()
    assert next(generator) == "acme"
    assert dict(current_scope()) == {}


def test_a_decorated_generator_passes_send_throw_and_return_through() -> None:
    @attribute(customer="acme")
    def echo() -> Generator[object, object, str]:
        received = yield "ready"
        try:
            yield received
        except KeyError:
            yield current_scope().get("externalCustomerId")
        return "done"

    generator = echo()
    assert next(generator) == "ready"
    assert generator.send("ping") == "ping"
    assert generator.throw(KeyError("k")) == "acme"
    with pytest.raises(StopIteration) as stopped:
        next(generator)
    assert stopped.value.value == "done"


async def test_a_decorated_async_generator_runs_in_the_scope_and_keeps_it_inside() -> (
    None
):
    @attribute(customer="acme", feature="stream")
    async def chunks() -> AsyncIterator[object]:
        yield current_scope().get("externalCustomerId")
        await asyncio.sleep(0)
        async with attribute(feature="inner"):
            yield current_scope().get("feature")
        yield current_scope().get("feature")

    seen_inside: list[object] = []
    seen_outside: list[object] = []
    async for item in chunks():
        seen_inside.append(item)
        seen_outside.append(current_scope().get("externalCustomerId"))
    assert seen_inside == ["acme", "inner", "stream"]
    assert seen_outside == [None] * 3


async def test_a_decorated_async_generator_passes_asend_athrow_and_aclose() -> None:
    closed: list[bool] = []

    @attribute(customer="acme")
    async def echo() -> AsyncGenerator[object, object]:
        try:
            received = yield "ready"
            try:
                yield received
            except KeyError:
                yield current_scope().get("externalCustomerId")
            yield "more"
        finally:
            closed.append(True)

    generator = echo()
    assert await generator.asend(None) == "ready"
    assert await generator.asend("ping") == "ping"
    assert await generator.athrow(KeyError("k")) == "acme"
    await generator.aclose()
    assert closed == [True]
    assert dict(current_scope()) == {}


def test_a_decorated_function_keeps_its_name_and_signature() -> None:
    @attribute(feature="f")
    def handler(order_id: int) -> int:
        """Handle one order."""
        return order_id

    assert handler.__name__ == "handler"
    assert handler.__doc__ == "Handle one order."
    assert handler(7) == 7


# -- through the real openai client: precedence and attributionQuality -------------

OWN_RECORDINGS = Path(__file__).resolve().parent.parent / "examples" / "recordings"


@pytest.fixture(scope="module")
def replay() -> Iterator[ReplayServer]:
    (chat,) = [
        r for r in load_recordings(OWN_RECORDINGS) if r.name == "chat_basic_gpt4o_mini"
    ]
    with ReplayServer() as server:
        server.respond_with(chat)
        yield server


def _metered(replay: ReplayServer, **defaults: Any) -> tuple[Any, InMemoryTransport]:
    transport = InMemoryTransport()
    margins = traket.create_margins(write_key="wk_scope_test", transport=transport)
    client = openai.OpenAI(base_url=replay.base_url, api_key="k", max_retries=0)
    traket.instrument(client, defaults or None, margins=margins)
    return (client, margins), transport


def _chat(client: Any) -> Any:
    return client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )


def test_explicit_beats_inner_beats_outer_beats_default_attrs(
    replay: ReplayServer,
) -> None:
    (client, margins), transport = _metered(
        replay,
        feature="default-feature",
        environment="default-env",
        prompt_type="default-prompt",
        metadata={"a": "default", "b": "default", "c": "default", "d": "default"},
    )
    outer = traket.attribute(
        customer="outer-customer",
        feature="outer-feature",
        environment="outer-env",
        metadata={"a": "outer", "b": "outer", "c": "outer"},
    )
    inner = traket.attribute(
        feature="inner-feature", metadata={"a": "inner", "b": "inner"}
    )
    with outer, inner:
        margins.openai.track(
            lambda: _chat(client),
            {
                "external_customer_id": "explicit-customer",
                "metadata": {"a": "explicit"},
            },
        )
        _chat(client)
    with outer:
        _chat(client)
    _chat(client)
    assert margins.flush(timeout=5)

    explicit, inner_only, outer_only, no_scope = transport.events
    assert explicit["externalCustomerId"] == "explicit-customer"
    assert explicit["attributionQuality"] == "explicit"
    assert explicit["feature"] == "inner-feature"
    assert explicit["environment"] == "outer-env"
    assert explicit["promptType"] == "default-prompt"
    labels = {k: explicit["metadata"][k] for k in "abcd"}
    assert labels == {"a": "explicit", "b": "inner", "c": "outer", "d": "default"}

    assert inner_only["externalCustomerId"] == "outer-customer"
    assert inner_only["attributionQuality"] == "scope"
    assert inner_only["feature"] == "inner-feature"
    assert outer_only["feature"] == "outer-feature"
    assert outer_only["attributionQuality"] == "scope"
    assert "externalCustomerId" not in no_scope
    assert no_scope["feature"] == "default-feature"
    assert no_scope["attributionQuality"] == "missing"
    assert {e["model"] for e in transport.events} == {"gpt-4o-mini-2024-07-18"}


def test_per_call_attributes_win_over_a_scope_the_call_opens(
    replay: ReplayServer,
) -> None:
    (client, margins), transport = _metered(replay)

    def handler() -> Any:
        with traket.attribute(customer="scope-customer", feature="scope-feature"):
            return _chat(client)

    margins.openai.track(handler, {"external_customer_id": "explicit-customer"})
    assert margins.flush(timeout=5)
    (event,) = transport.events
    assert event["externalCustomerId"] == "explicit-customer"
    assert event["attributionQuality"] == "explicit"
    assert event["feature"] == "scope-feature"


def test_a_customer_from_default_attrs_is_marked_default(replay: ReplayServer) -> None:
    (client, margins), transport = _metered(replay, external_customer_id="tenant-1")
    _chat(client)
    with traket.attribute(customer="acme"):
        _chat(client)
    assert margins.flush(timeout=5)
    default, scoped = transport.events
    assert (default["externalCustomerId"], default["attributionQuality"]) == (
        "tenant-1",
        "default",
    )
    assert (scoped["externalCustomerId"], scoped["attributionQuality"]) == (
        "acme",
        "scope",
    )


def test_default_attrs_take_the_names_attribute_takes(replay: ReplayServer) -> None:
    with pytest.raises(InvalidEventError, match="custmer"):
        traket.instrument(default_attrs={"custmer": "tenant-1"})
    (client, margins), transport = _metered(replay, customer="tenant-1")
    _chat(client)
    assert margins.flush(timeout=5)
    assert transport.events[0]["externalCustomerId"] == "tenant-1"


def test_the_scope_where_a_task_is_created_attributes_its_calls(
    replay: ReplayServer,
) -> None:
    transport = InMemoryTransport()
    margins = traket.create_margins(write_key="wk_scope_test", transport=transport)
    client = openai.AsyncOpenAI(base_url=replay.base_url, api_key="k", max_retries=0)
    traket.instrument(client, margins=margins)

    async def handle(customer: str) -> None:
        async with traket.attribute(customer=customer):
            await asyncio.gather(
                *(
                    asyncio.create_task(
                        client.chat.completions.create(
                            model="gpt-4o-mini",
                            messages=[{"role": "user", "content": "hi"}],
                        )
                    )
                    for _ in range(3)
                )
            )

    async def main() -> None:
        await asyncio.gather(handle("acme"), handle("globex"))
        await client.close()

    asyncio.run(main())
    assert margins.flush(timeout=5)
    customers = sorted(e["externalCustomerId"] for e in transport.events)
    assert customers == ["acme"] * 3 + ["globex"] * 3


def test_carry_attribution_attributes_calls_made_in_an_executor(
    replay: ReplayServer,
) -> None:
    (client, margins), transport = _metered(replay)
    with ThreadPoolExecutor(2) as pool:
        with traket.attribute(customer="acme", feature="batch"):
            carried = pool.submit(carry_attribution(_chat), client)
            bare = pool.submit(_chat, client)
        carried.result()
        bare.result()
    assert margins.flush(timeout=5)
    by_quality = {e["attributionQuality"]: e for e in transport.events}
    assert by_quality["scope"]["externalCustomerId"] == "acme"
    assert by_quality["scope"]["feature"] == "batch"
    assert "externalCustomerId" not in by_quality["missing"]
