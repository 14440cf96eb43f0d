"""Attribution scopes: nesting, isolation between tasks and threads, clean exits."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from traket._errors import InvalidEventError
from traket._scope import attribute, carry_attribution, current_scope, explicit


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
