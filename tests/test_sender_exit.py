"""Delivery at interpreter exit, in real subprocesses: bounded, silent, thread-free."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from ingest_fakes import (
    WRITE_KEY,
    FakeIngest,
    _http_server,
    ingest,
    senders,
    silent_endpoint,
    status,
)

__all__ = ["_http_server", "ingest", "senders", "silent_endpoint"]

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = f"""
import sys, threading, uuid
from traket._retry import RetryPolicy
from traket._sender import BatchSender
from traket._transport import HttpTransport

url, budget, count = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
sender = BatchSender(
    HttpTransport(url, {WRITE_KEY!r}),
    flush_interval=3600,
    exit_timeout=budget,
    request_timeout=5,
    retry=RetryPolicy(initial_backoff=0.05, max_backoff=0.2),
)
def event(i):
    return {{"provider": "openai", "idempotencyKey": str(uuid.uuid4()), "n": i}}
"""


def _run(
    body: str, url: str, budget: float, count: int
) -> tuple[subprocess.CompletedProcess[str], float]:
    script = PRELUDE + textwrap.dedent(body)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script, url, str(budget), str(count)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    return done, time.monotonic() - started


def test_events_tracked_just_before_exit_are_delivered_without_a_flush(
    ingest: FakeIngest,
) -> None:
    done, _ = _run(
        "for i in range(count):\n    sender.submit(event(i))\n", ingest.url, 3.0, 250
    )

    assert done.returncode == 0
    assert done.stderr == ""
    assert len(ingest.store.events) == 250


def test_exit_with_the_ingest_down_ends_within_the_budget_and_prints_nothing(
    silent_endpoint: str,
) -> None:
    budget = 1.0
    baseline, startup = _run("", silent_endpoint, budget, 0)

    done, elapsed = _run(
        "for i in range(count):\n    sender.submit(event(i))\n",
        silent_endpoint,
        budget,
        500,
    )

    assert baseline.returncode == done.returncode == 0
    assert done.stderr == ""
    assert elapsed < startup + budget + 1.0


def test_exit_with_the_ingest_refusing_connections_ends_within_the_budget() -> None:
    budget = 1.0
    done, elapsed = _run(
        "for i in range(count):\n    sender.submit(event(i))\n",
        "http://127.0.0.1:9/events",
        budget,
        50,
    )

    assert done.returncode == 0
    assert done.stderr == ""
    assert elapsed < budget + 3.0


def test_exit_delivery_needs_no_new_thread(ingest: FakeIngest) -> None:
    # Python 3.12+ refuses to start threads once shutdown begins; refuse them here too,
    # from an exit hook that runs before the sender's, and submit from that hook.
    body = """
    import atexit

    def late_events():
        def refuse(self):
            raise RuntimeError("can't create new thread at interpreter shutdown")
        threading.Thread.start = refuse
        for i in range(count):
            sender.submit(event(i))

    atexit.register(late_events)
    """
    done, _ = _run(body, ingest.url, 3.0, 120)

    assert done.returncode == 0
    assert done.stderr == ""
    assert len(ingest.store.events) == 120


def test_exit_retries_within_the_budget(ingest: FakeIngest) -> None:
    ingest.then(status(503), status(503))

    done, _ = _run(
        "for i in range(count):\n    sender.submit(event(i))\n", ingest.url, 3.0, 30
    )

    assert done.returncode == 0
    assert done.stderr == ""
    assert len(ingest.store.events) == 30
