"""Fixtures shared by the tests that drive the real openai client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from recordings import Capture

from examples.replay import ReplayServer
from traket._instrument import instrument


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    """A local server answering like the OpenAI API from recordings."""
    with ReplayServer() as replay:
        yield replay


@pytest.fixture
def capture() -> Capture:
    """Meter every openai client into memory for this test."""
    capture = Capture()
    instrument(margins=capture)
    return capture
