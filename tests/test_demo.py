"""README command 1: the demo meters every recording and its report adds up.

The demo runs as `make demo` runs it (`python -m examples.demo`), in a process of
its own. Its totals are checked against sums taken here, straight from the
recordings' files, and against what `traket report` reads from the database.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest
from pytest_httpserver import HTTPServer
from recordings import ROOT, SHARED_RECORDINGS, shared_recordings
from werkzeug import Request, Response

from examples.replay import load_recordings

OWN_RECORDINGS = ROOT / "examples" / "recordings"
TOKENS = ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens")
MATCHED = "The report's totals equal the sum of the recordings' usage."


def run_demo(*args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "examples.demo", *map(str, args)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def installed(operation: str) -> bool:
    """Whether the installed openai has `operation` (1.x before 1.66: no Responses)."""
    target: Any = openai.OpenAI(api_key="k", base_url="http://127.0.0.1:9/v1")
    for name in operation.split("."):
        target = getattr(target, name, None)
    return target is not None


def recorded_sums(directory: Path) -> dict[str, int]:
    """Add up the `expected.usage` of every recording this openai can replay.

    Read straight from the files, with no SDK code; a recording whose operation
    the installed openai lacks is skipped, as the demo skips it.
    """
    sums = dict.fromkeys(("recordings", *TOKENS), 0)
    for path in sorted(directory.glob("*.json")):
        expected = json.loads(path.read_text())["expected"]
        if not installed(expected["operation"]):
            continue
        usage = expected.get("usage") or {}
        sums["recordings"] += 1
        for key in TOKENS:
            sums[key] += usage.get(key, 0)
    return sums


def reported_sums(db: Path) -> dict[str, int]:
    """The totals `traket report --format json` shows for the demo's database."""
    command = Path(sys.executable).with_name("traket")
    result = subprocess.run(
        [str(command), "report", "--db", str(db), "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    report: dict[str, Any] = json.loads(result.stdout)
    tokens = report["tokens"]
    return {
        "recordings": report["totals"]["events"],
        "input_tokens": tokens["inputTotal"],
        "cached_tokens": tokens["cachedInput"],
        "output_tokens": tokens["output"],
        "reasoning_tokens": tokens["reasoning"],
    }


def directory(name: str) -> Path:
    if name == "own":
        return OWN_RECORDINGS
    shared_recordings()  # skips, or fails on CI, when they are absent
    return SHARED_RECORDINGS


@pytest.mark.parametrize("recordings", ["own", "shared"])
def test_the_report_equals_the_sum_of_the_recordings(
    recordings: str, tmp_path: Path
) -> None:
    source = directory(recordings)
    db = tmp_path / "events.db"
    args: list[str | Path] = ["--db", db]
    if recordings == "shared":
        args += ["--recordings", source]

    result = run_demo(*args)

    assert result.returncode == 0, result.stdout + result.stderr
    assert MATCHED in result.stdout
    expected = recorded_sums(source)
    assert expected["recordings"] > 0
    assert reported_sums(db) == expected
    assert f"Report:   {expected['recordings']} events;" in result.stdout
    assert result.stderr == ""


def test_the_demo_shows_every_kind_of_call_it_makes() -> None:
    result = run_demo()

    assert result.returncode == 0, result.stdout + result.stderr
    assert MATCHED in result.stdout
    calls = [line.split() for line in result.stdout.splitlines() if "/" in line]
    modes = {line[0] for line in calls}
    assert {"sync", "async"} <= modes
    assert any("(stream)" in line for line in calls)
    outcomes = " ".join(" ".join(line) for line in calls)
    for kind in ("responses.create", "chat.completions.create", "embeddings.create"):
        assert kind in outcomes or not installed(kind)
    errors = [
        r.expected
        for r in load_recordings(OWN_RECORDINGS)
        if r.expected and r.expected.get("status") == "error"
    ]
    assert len(errors) == 3  # 401, 429 and 500
    for error in errors:
        shown = f"error {error['http_status']} {error.get('error_code') or ''}"
        assert shown.strip() in outcomes or not installed(error["operation"])
    assert "(no usage reported)" in outcomes  # the chat stream without usage
    assert "Cost per customer" in result.stdout
    assert "Cost by model" in result.stdout


def test_recordings_given_are_replayed_even_with_an_openai_key(tmp_path: Path) -> None:
    result = run_demo(
        "--recordings",
        OWN_RECORDINGS,
        "--db",
        tmp_path / "events.db",
        OPENAI_API_KEY="sk-must-not-be-used",
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert MATCHED in result.stdout


def test_a_missing_recordings_directory_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"

    result = run_demo("--recordings", missing)

    assert result.returncode == 2
    assert str(missing) in result.stderr


def test_with_an_openai_key_and_no_recordings_it_calls_the_api(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    recordings = {r.name: r for r in load_recordings(OWN_RECORDINGS)}
    seen: list[tuple[str, str, bool]] = []

    def openai_api(request: Request) -> Response:
        body = json.loads(request.get_data())
        stream = body.get("stream") is True
        seen.append((request.path, request.headers["Authorization"], stream))
        if body["model"] == "no-such-model":
            error = {"error": {"message": "no such model", "code": "model_not_found"}}
            return Response(json.dumps(error), 404, content_type="application/json")
        name = {
            ("/v1/responses", False): "responses_basic_gpt41_mini",
            ("/v1/responses", True): "responses_stream_gpt41_nano",
            ("/v1/chat/completions", False): "chat_basic_gpt4o_mini",
            ("/v1/chat/completions", True): "chat_stream_include_usage_gpt4o_mini",
            ("/v1/embeddings", False): "embeddings_3_small",
        }[(request.path, stream)]
        recording = recordings[name]
        content_type = "text/event-stream" if stream else "application/json"
        return Response(recording.body, recording.status, content_type=content_type)

    httpserver.expect_request(re.compile("/v1/.*"), method="POST").respond_with_handler(
        openai_api
    )

    result = run_demo(
        "--db",
        tmp_path / "events.db",
        OPENAI_API_KEY="sk-live-test",
        OPENAI_BASE_URL=httpserver.url_for("/v1"),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "live: calling the OpenAI API" in result.stdout
    calls = 6 if installed("responses.create") else 4
    assert len(seen) == calls
    assert {auth for _, auth, _ in seen} == {"Bearer sk-live-test"}
    assert "error  404 model_not_found" in result.stdout
    assert reported_sums(tmp_path / "events.db")["recordings"] == calls
