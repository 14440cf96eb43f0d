"""Test-wide guards: no configuration leaks in from the shell, no state leaks out."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _isolated_traket(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Give every test a clean environment, default client and instrumentation."""
    for name in ("TRAKET_WRITE_KEY", "TRAKET_ENDPOINT", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    yield
    from traket import _client, _sender

    _client.swap_default(None)
    for sender in list(_sender._senders):
        sender.shutdown(timeout=1.0)
    from traket._instrument import uninstrument

    uninstrument()
