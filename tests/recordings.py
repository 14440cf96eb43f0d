"""Shared helpers for the instrumentation tests: recordings, clients, a capture.

The shared recordings live outside the repository, at `../shared/fixtures/openai`
from its root. When they are absent, the tests that need them are skipped with the
reason, except on CI (`CI=true`), where their absence fails the run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from examples.replay import Recording, load_recordings

ROOT = Path(__file__).resolve().parents[1]
SHARED_RECORDINGS = ROOT.parent / "shared" / "fixtures" / "openai"


def shared_recordings() -> list[Recording]:
    """Return the shared recordings; skip (or, on CI, fail) when they are absent."""
    if not SHARED_RECORDINGS.is_dir():
        reason = f"shared OpenAI recordings not found at {SHARED_RECORDINGS}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true requires them)")
        pytest.skip(reason)
    recordings = load_recordings(SHARED_RECORDINGS)
    if not recordings:
        pytest.fail(f"no recordings in {SHARED_RECORDINGS}")
    return recordings


def recording_names() -> list[str]:
    """Recording names for parametrizing; one placeholder when they are absent."""
    if not SHARED_RECORDINGS.is_dir():
        return ["<missing>"]
    return [path.stem for path in sorted(SHARED_RECORDINGS.glob("*.json"))]


def recording(name: str) -> Recording:
    """Return one shared recording by name (skips or fails as above)."""
    by_name = {r.name: r for r in shared_recordings()}
    if name not in by_name:
        pytest.fail(f"recording {name!r} not found in {SHARED_RECORDINGS}")
    return by_name[name]


class Capture:
    """An in-memory stand-in for `Margins`: keeps what instrumentation observed."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.scopes: list[dict[str, Any]] = []
        self.defaults: list[Mapping[str, Any] | None] = []

    def record_observed(
        self,
        observed: Mapping[str, Any],
        *,
        scope: Mapping[str, Any],
        defaults: Mapping[str, Any] | None,
    ) -> None:
        self.events.append(json.loads(json.dumps(dict(observed))))
        self.scopes.append(dict(scope))
        self.defaults.append(defaults)

    @property
    def one(self) -> dict[str, Any]:
        """The only event recorded; fails when there are none or several."""
        assert len(self.events) == 1, f"expected one event, got {len(self.events)}"
        return self.events[0]


def flat_usage(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Flatten wire usage to the `expected` shape of the shared recordings."""
    if usage is None:
        return None
    return {
        "input_tokens": usage.get("input_tokens"),
        "cached_tokens": (usage.get("input_tokens_details") or {}).get("cached_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "reasoning_tokens": (usage.get("output_tokens_details") or {}).get(
            "reasoning_tokens"
        ),
        "total_tokens": usage.get("total_tokens"),
    }


def assert_matches_expected(
    event: Mapping[str, Any], expected: Mapping[str, Any]
) -> None:
    """Compare an observed event with a recording's `expected` block."""
    metadata = event.get("metadata") or {}
    assert event["operation"] == expected["operation"]
    assert event["status"] == expected["status"]
    if expected.get("model"):
        assert event.get("model") == expected["model"]
    assert event.get("providerResponseId") == expected.get("provider_response_id")
    assert event.get("providerRequestId") == expected.get("provider_request_id")
    assert flat_usage(event.get("usage")) == expected.get("usage")
    if "usage" in expected and expected["usage"] is None:
        assert "usage" not in event, "unknown usage must be absent, never zeros"
    if "http_status" in expected:
        assert metadata.get("http_status") == expected["http_status"]
    if "error_code" in expected:
        assert metadata.get("error_code") == expected["error_code"]
    if "stream" in expected:
        assert metadata.get("stream") is expected["stream"]


def sse(*payloads: Mapping[str, Any] | str) -> str:
    """Build an SSE body from JSON payloads (a str payload is sent as is)."""
    lines = [
        f"data: {p if isinstance(p, str) else json.dumps(p)}\n\n" for p in payloads
    ]
    return "".join(lines)


def stream_recording(name: str, body: str) -> Recording:
    """A synthetic chat stream recording served with the given SSE body."""
    return Recording(
        name=name,
        method="POST",
        path="/v1/chat/completions",
        status=200,
        headers={"content-type": "text/event-stream", "x-request-id": "req_synthetic"},
        body=body,
    )


def json_recording(name: str, body: Mapping[str, Any], status: int = 200) -> Recording:
    """A synthetic JSON recording."""
    return Recording(
        name=name,
        method="POST",
        path="/v1/chat/completions",
        status=status,
        headers={"content-type": "application/json", "x-request-id": "req_synthetic"},
        body=json.dumps(body),
    )


def with_body(recording: Recording, body: str) -> Recording:
    return dataclasses.replace(recording, body=body)
